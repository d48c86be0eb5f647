//! `ducksafe backup`: one consistent, verified backup now, then rotation. `--json` prints the
//! same response a `pre_run` hook gets.

use super::Global;
use crate::cli::BackupArgs;
use crate::engine::backup;
use crate::protocol::Decision;
use crate::report::{self, size, Ctx};

#[allow(clippy::many_single_char_names)]
pub fn run(g: &Global, a: &BackupArgs) -> i32 {
    let settings = match super::load_settings(g) {
        Ok(s) => s,
        Err(e) => return super::fail(g, &e),
    };
    let mut ctx = Ctx::new(super::hook::generated_id(), Some("pre_run"));
    ctx.set_paths(&settings);
    let now = crate::clock::now();
    if a.dry_run {
        return match backup::dry_run(&settings, now, false) {
            Ok(d) => {
                let mut r = report::backup_planned(&ctx, &d);
                report::surface_pending(&mut r, &settings);
                if g.json {
                    report::print_json_pretty(&r);
                } else {
                    println!(
                        "dry run: would create backup `{}`; nothing was written",
                        d.would_create
                    );
                    println!(
                        "  space: {} available, {} required",
                        size(d.space.available_bytes),
                        size(d.space.required_bytes)
                    );
                    for del in &d.rotation.deleted {
                        println!("  would delete `{}`: {}", del.id, del.reason);
                    }
                    report::print_warnings(&report::pending_warnings(&settings));
                    report::print_warnings(&d.warnings);
                }
                0
            }
            Err(e) => {
                ctx.warnings = report::pending_warnings(&settings);
                super::fail_with_response(g, &ctx, Decision::Abort, &e)
            }
        };
    }
    match backup::run(&settings, now, None, false) {
        Ok(o) => {
            let r = report::backup_done(&ctx, &settings, &o);
            if g.json {
                report::print_json_pretty(&r);
                return 0;
            }
            let m = &o.manifest;
            println!(
                "backed up `{}` → `{}`",
                settings.db_path.display(),
                o.path.display()
            );
            println!(
                "  {}, sha256 {}, verified ({}): {}",
                size(m.bytes),
                &m.sha256[..16],
                m.verification.level,
                m.verification.checks.join(", ")
            );
            let rows = m
                .total_rows()
                .map_or_else(|| "rows not counted".to_owned(), |n| format!("{n} rows"));
            println!(
                "  {} tables, {rows}; WAL folded in: {}",
                m.tables.len(),
                if m.source.wal_folded {
                    "yes"
                } else {
                    "no (byte-exact copy)"
                }
            );
            if m.source.copy_method == Some(crate::files::CopyMethod::Reflink) {
                println!(
                    "  reflinked: shares blocks with the database until either changes (same disk: copy the backups elsewhere to survive a disk failure)"
                );
            }
            for d in &o.rotation.deleted {
                println!("  deleted `{}`: {}", d.id, d.reason);
            }
            println!(
                "  {} backups kept, using {}; {} free",
                o.rotation.kept.len(),
                size(o.space.backups_bytes),
                size(o.space.available_bytes)
            );
            if let Some(rb) = &r.rollback {
                println!("  to roll back: {}", rb.command.join(" "));
            }
            report::print_warnings(&r.warnings);
            0
        }
        Err(e) => {
            // An interrupted restore the backup could not finish is why it failed, or worse.
            ctx.warnings = report::pending_warnings(&settings);
            super::fail_with_response(g, &ctx, Decision::Abort, &e)
        }
    }
}
