//! `ducksafe prune [--dry-run]`: applies the retention rules now and prints every decision
//! with the rule behind it.

use std::io::{self, Write};

use serde::Serialize;

use super::{Access, Global};
use crate::cli::PruneArgs;
use crate::engine::retention;
use crate::output::{self, Report};

#[derive(Debug, Serialize)]
struct PruneReport {
    dry_run: bool,
    plan: retention::Plan,
    deleted: Vec<String>,
    /// Said on stderr in text mode; not part of the JSON report.
    #[serde(skip)]
    warnings: Vec<String>,
}

impl Report for PruneReport {
    fn text(&self, out: &mut dyn Write) -> io::Result<()> {
        for d in &self.plan.decisions {
            let verb = match (d.keep, self.dry_run) {
                (true, _) => "keep  ",
                (false, true) => "would delete",
                (false, false) if self.deleted.contains(&d.id) => "delete",
                (false, false) => "FAILED to delete",
            };
            writeln!(out, "{verb} {:<36} {}", d.id, d.reason.describe())?;
        }
        if self.plan.decisions.is_empty() {
            writeln!(out, "no backups to prune")?;
        }
        Ok(())
    }

    fn warnings(&self) -> &[String] {
        &self.warnings
    }

    fn audit(&self) -> crate::audit::Facts {
        crate::audit::Facts::done(if self.dry_run { "planned" } else { "pruned" }, None, None)
    }
}

pub fn run(g: &Global, a: &PruneArgs) -> i32 {
    let pruned = (|| {
        let settings = g.settings()?;
        super::warn_pending(&settings);
        let opened = super::open_store(&settings, Access::Change { dry_run: a.dry_run })?;
        let store = &opened.store;
        let inv = store.inventory()?;
        let now = crate::clock::now();
        let policy = retention::policy(&settings);
        let mut rotated = Vec::new();
        let (plan, deleted) = if a.dry_run {
            let plan = retention::plan(&store.candidates(&inv, None)?, now, policy);
            (plan, Vec::new())
        } else {
            let (plan, report) = store.apply_retention(&inv, None, now, policy, &mut rotated)?;
            (plan, report.deleted.into_iter().map(|d| d.id).collect())
        };
        let mut warnings = plan.warnings.clone();
        warnings.extend(store.inventory_warnings(&inv, now));
        warnings.extend(rotated);
        Ok::<_, crate::error::Error>(PruneReport {
            dry_run: a.dry_run,
            plan,
            deleted,
            warnings,
        })
    })();
    output::finish(g.json, pruned.map_err(Into::into))
}
