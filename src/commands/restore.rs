//! `ducksafe restore [latest|ID|PATH]`: puts a verified backup back in place of the database.
//! The replaced database and its WAL files go to a quarantine folder; the output says where, and
//! how to undo.

use super::Global;
use crate::cli::RestoreArgs;
use crate::engine::restore;
use crate::protocol::Decision;
use crate::report::{self, Ctx};

pub fn run(g: &Global, a: &RestoreArgs) -> i32 {
    let settings = match super::load_settings(g) {
        Ok(s) => s,
        Err(e) => return super::fail(g, &e),
    };
    let mut ctx = Ctx::new(super::hook::generated_id(), Some("post_run"));
    ctx.set_paths(&settings);
    let now = crate::clock::now();
    if a.dry_run {
        return dry_run(g, &settings, &a.backup, a.expect_sha256.as_deref(), now);
    }
    match restore::run(&settings, &a.backup, a.expect_sha256.as_deref(), now) {
        Ok((manifest, outcome, notes)) => {
            ctx.warnings.extend(notes);
            let r = report::restore_done(&ctx, &settings, &manifest, &outcome);
            if g.json {
                report::print_json_pretty(&r);
                return 0;
            }
            if outcome.unchanged {
                println!(
                    "`{}` already was backup `{}` byte for byte ({}), with no WAL beside it: nothing was moved",
                    settings.db_path.display(),
                    manifest.id,
                    outcome.checks.join(", ")
                );
                report::print_warnings(&r.warnings);
                return 0;
            }
            println!(
                "restored `{}` from backup `{}` in {} ms ({})",
                settings.db_path.display(),
                manifest.id,
                outcome.duration_ms,
                outcome.checks.join(", ")
            );
            if let Some(j) = &outcome.finished_journal {
                println!(
                    "  by finishing its interrupted restore (journal `{}`); it was not restored a second time",
                    j.display()
                );
            }
            if outcome.quarantined.is_empty() {
                println!("  nothing was replaced: the database did not exist");
            } else {
                println!(
                    "  the replaced files are in `{}`:",
                    outcome.plan.quarantine.display()
                );
                for q in &outcome.quarantined {
                    println!("    {}", q.display());
                }
                println!("  to undo this restore (with nothing using the database):");
                for c in outcome.plan.undo_commands(&outcome.quarantined) {
                    println!("    {c}");
                }
            }
            report::print_warnings(&r.warnings);
            0
        }
        Err(e) => {
            ctx.warnings = report::pending_warnings(&settings);
            super::fail_with_response(g, &ctx, Decision::RestoreFailed, &e)
        }
    }
}

/// `restore --dry-run`: what the restore would do, an interrupted restore it would finish first
/// included; nothing moves.
fn dry_run(
    g: &Global,
    settings: &crate::config::Settings,
    selector: &str,
    expect_sha256: Option<&str>,
    now: chrono::DateTime<chrono::Utc>,
) -> i32 {
    // An interrupted restore is finished first by the real restore: say so first.
    let pending = crate::engine::journal::pending(settings);
    let planned = restore::dry_run(settings, selector, expect_sha256, now);
    match planned {
        Ok(p) => {
            // Finishing the interrupted restore of the same backup is the whole restore.
            let finishing = pending.iter().find(|q| q.backup_id == p.backup_id);
            if g.json {
                report::print_json_pretty(&serde_json::json!({
                    "dry_run": true,
                    "unfinished_restores": &pending,
                    "backup_id": p.backup_id,
                    "database": p.database,
                    "restores_again": finishing.is_none(),
                    "quarantine": p.quarantine,
                    "moves": if finishing.is_none() { p.moves.clone() } else { Vec::new() },
                }));
            } else {
                report::print_pending(&pending);
                for q in &pending {
                    println!(
                        "dry run: would first finish the interrupted restore of `{}` (journal `{}`)",
                        q.backup_id,
                        q.journal.display()
                    );
                }
                if let Some(q) = finishing {
                    println!(
                        "dry run: that puts backup `{}` in place over `{}`; it would not be restored a second time",
                        q.backup_id,
                        p.database.display()
                    );
                } else {
                    println!(
                        "dry run: would restore `{}` over `{}`",
                        p.backup_id,
                        p.database.display()
                    );
                    for (from, to) in &p.moves {
                        println!("  would move `{}` → `{}`", from.display(), to.display());
                    }
                }
            }
            0
        }
        Err(e) => {
            if !g.json {
                report::print_pending(&pending);
            }
            super::fail(g, &e)
        }
    }
}
