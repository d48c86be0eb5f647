//! `ducksafe prune [--dry-run]`: applies the retention rules now and prints every decision
//! with the rule behind it.

use serde::Serialize;

use super::Global;
use crate::cli::PruneArgs;
use crate::engine::retention;
use crate::engine::store::Store;
use crate::report;

#[derive(Debug, Serialize)]
struct PruneReport {
    dry_run: bool,
    plan: retention::Plan,
    deleted: Vec<String>,
}

pub fn run(g: &Global, a: &PruneArgs) -> i32 {
    let result = (|| {
        let settings = super::load_settings(g)?;
        super::warn_pending(&settings);
        let store = Store::open(&settings.backup_dir, false)?;
        let _lock = store.lock_only()?;
        let owner = crate::engine::identity::check(store.dir(), &settings)?;
        let store = store.owned_by(owner);
        if !a.dry_run {
            // This database's directory: sweep what an interrupted run left.
            store.clean_leftovers(false)?;
        }
        let inv = store.inventory()?;
        let now = crate::clock::now();
        let plan = retention::plan(
            &store.candidates(&inv, None)?,
            now,
            retention::policy(&settings),
        );
        let mut warnings = plan.warnings.clone();
        warnings.extend(store.inventory_warnings(&inv, now));
        let deleted = if a.dry_run {
            Vec::new()
        } else {
            store
                .rotate(&plan, &mut warnings)
                .deleted
                .into_iter()
                .map(|d| d.id)
                .collect()
        };
        Ok::<_, crate::error::Error>((
            PruneReport {
                dry_run: a.dry_run,
                plan,
                deleted,
            },
            warnings,
        ))
    })();
    match result {
        Ok((r, warnings)) => {
            if g.json {
                report::print_json_pretty(&r);
            } else {
                for d in &r.plan.decisions {
                    let verb = match (d.keep, r.dry_run) {
                        (true, _) => "keep  ",
                        (false, true) => "would delete",
                        (false, false) if r.deleted.contains(&d.id) => "delete",
                        (false, false) => "FAILED to delete",
                    };
                    println!("{verb} {:<36} {}", d.id, d.reason.describe());
                }
                if r.plan.decisions.is_empty() {
                    println!("no backups to prune");
                }
                report::print_warnings(&warnings);
            }
            0
        }
        Err(e) => super::fail(g, &e),
    }
}
