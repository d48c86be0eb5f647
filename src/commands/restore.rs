//! `ducksafe restore [latest|ID|PATH]`: puts a verified backup back in place of the database
//! (with `--table`, only some tables: [`table`]).
//! The replaced database and its WAL files go to a quarantine folder; the output says where, and
//! how to undo.

mod table;

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::Global;
use crate::cli::RestoreArgs;
use crate::config::Settings;
use crate::engine::journal::Pending;
use crate::engine::manifest::Manifest;
use crate::engine::restore;
use crate::hook::response::{self, Ctx};
use crate::output::{self, Failure, Report};
use crate::protocol::{generated_request_id, Decision, Response};

/// A restore done: the post_run response, and for people what moved where.
#[derive(Serialize)]
#[serde(transparent)]
struct Restored<'a> {
    response: Response,
    #[serde(skip)]
    db_path: &'a Path,
    #[serde(skip)]
    manifest: &'a Manifest,
    #[serde(skip)]
    outcome: &'a restore::Outcome,
}

impl Report for Restored<'_> {
    fn text(&self, out: &mut dyn Write) -> io::Result<()> {
        let (db, m, o) = (self.db_path.display(), self.manifest, self.outcome);
        if o.unchanged {
            return writeln!(
                out,
                "`{db}` already was backup `{}` byte for byte ({}), with no WAL beside it: nothing was moved",
                m.id,
                o.checks.join(", ")
            );
        }
        writeln!(
            out,
            "restored `{db}` from backup `{}` in {} ms ({})",
            m.id,
            o.duration_ms,
            o.checks.join(", ")
        )?;
        if let Some(j) = &o.finished_journal {
            writeln!(
                out,
                "  by finishing its interrupted restore (journal `{}`); it was not restored a second time",
                j.display()
            )?;
        }
        if o.quarantined.is_empty() {
            writeln!(out, "  nothing was replaced: the database did not exist")?;
        } else {
            writeln!(
                out,
                "  the replaced files are in `{}`:",
                o.plan.quarantine.display()
            )?;
            for q in &o.quarantined {
                writeln!(out, "    {}", q.display())?;
            }
            writeln!(
                out,
                "  to undo this restore (with nothing using the database):"
            )?;
            for c in o.plan.undo_commands(&o.quarantined) {
                writeln!(out, "    {c}")?;
            }
        }
        Ok(())
    }

    fn warnings(&self) -> &[String] {
        &self.response.warnings
    }

    fn audit(&self) -> crate::audit::Facts {
        crate::audit::Facts::from_response(&self.response)
    }
}

/// `restore --dry-run`: what the restore would do, an interrupted restore it would finish first
/// included. Fields in alphabetical order, as the JSON has always listed them.
#[derive(Serialize)]
struct Planned {
    backup_id: String,
    database: PathBuf,
    dry_run: bool,
    moves: Vec<(PathBuf, PathBuf)>,
    quarantine: PathBuf,
    /// False when finishing the interrupted restore of the same backup is the whole restore.
    restores_again: bool,
    /// The database already is the backup, byte for byte, with no WAL beside it: the restore
    /// would move nothing (and `moves` is empty).
    unchanged: bool,
    unfinished_restores: Vec<Pending>,
    /// What every response says besides the interrupted restores (listed above): a restore
    /// marker in trouble, ducksafe's folders left open to others.
    warnings: Vec<String>,
}

impl Report for Planned {
    fn text(&self, out: &mut dyn Write) -> io::Result<()> {
        output::pending_text(out, &self.unfinished_restores)?;
        for q in &self.unfinished_restores {
            writeln!(
                out,
                "dry run: would first finish the interrupted restore of `{}` (journal `{}`)",
                q.backup_id,
                q.journal.display()
            )?;
        }
        if !self.restores_again {
            return writeln!(
                out,
                "dry run: that puts backup `{}` in place over `{}`; it would not be restored a second time",
                self.backup_id,
                self.database.display()
            );
        }
        if self.unchanged {
            return writeln!(
                out,
                "dry run: `{}` already is backup `{}` byte for byte, with no WAL beside it: the restore would move nothing",
                self.database.display(),
                self.backup_id
            );
        }
        writeln!(
            out,
            "dry run: would restore `{}` over `{}`",
            self.backup_id,
            self.database.display()
        )?;
        for (from, to) in &self.moves {
            writeln!(
                out,
                "  would move `{}` → `{}`",
                from.display(),
                to.display()
            )?;
        }
        Ok(())
    }

    fn warnings(&self) -> &[String] {
        &self.warnings
    }

    fn audit(&self) -> crate::audit::Facts {
        crate::audit::Facts::done("planned", Some(&self.backup_id), None)
    }
}

pub fn run(g: &Global, a: &RestoreArgs) -> i32 {
    if !a.tables.is_empty() {
        return table::run(g, a);
    }
    g.show_progress();
    let settings = match g.settings() {
        Ok(s) => s,
        Err(e) => return output::fail(g.json, e),
    };
    // From the remote: downloaded, proven and published as a local backup first; the restore
    // below is then the local one, with its staging, verification and quarantine.
    let selector = if a.remote {
        match super::remote::fetch_for_restore(&settings, &a.backup, false) {
            Ok(id) => id,
            Err(e) => return output::fail(g.json, e),
        }
    } else {
        a.backup.clone()
    };
    let a = &RestoreArgs {
        backup: selector,
        dry_run: a.dry_run,
        expect_sha256: a.expect_sha256.clone(),
        remote: false,
        tables: Vec::new(),
        replace_schema: false,
    };
    if a.dry_run {
        let planned = dry_run(&settings, &a.backup, a.expect_sha256.as_deref());
        return output::finish(g.json, planned);
    }
    let mut ctx = Ctx::new(generated_request_id(), Some("post_run"));
    ctx.set_paths(&settings);
    let now = crate::clock::now();
    match restore::run(&settings, &a.backup, a.expect_sha256.as_deref(), now) {
        Ok((manifest, outcome, notes)) => {
            ctx.warnings.extend(notes);
            let mut response = response::restore_done(&ctx, &settings, &manifest, &outcome);
            // As the hook's post_run answers: what every response says, first.
            response::surface_pending(&mut response, &settings);
            let restored = Restored {
                response,
                db_path: &settings.db_path,
                manifest: &manifest,
                outcome: &outcome,
            };
            output::finish(g.json, Ok(restored))
        }
        Err(error) => {
            ctx.warnings = crate::engine::standing_warnings(&settings);
            let failure = Failure {
                response: Some(Box::new(ctx.fail(Decision::RestoreFailed, &error))),
                warnings: ctx.warnings.into(),
                ..error.into()
            };
            output::fail(g.json, failure)
        }
    }
}

/// Plans the restore, nothing moved. An interrupted restore is finished first by the real
/// restore: it is said first.
fn dry_run(
    settings: &Settings,
    selector: &str,
    expect_sha256: Option<&str>,
) -> Result<Planned, Failure> {
    let pending = crate::engine::journal::pending(settings);
    match restore::dry_run(settings, selector, expect_sha256, crate::clock::now()) {
        Ok(o) => {
            let p = o.plan;
            // Finishing the interrupted restore of the same backup is the whole restore.
            let restores_again = !pending.iter().any(|q| q.backup_id == p.backup_id);
            Ok(Planned {
                backup_id: p.backup_id,
                database: p.database,
                dry_run: true,
                moves: if restores_again && !o.unchanged {
                    p.moves
                } else {
                    Vec::new()
                },
                quarantine: p.quarantine,
                restores_again,
                unchanged: o.unchanged,
                unfinished_restores: pending,
                warnings: crate::engine::standing_remarks(settings),
            })
        }
        Err(error) => {
            let mut preface = Vec::new();
            let _ = output::pending_text(&mut preface, &pending);
            // `--json` prints the response a post_run dry run answers, as every operation's
            // failure does: `skipped`, with the standing warnings.
            let mut ctx = Ctx::new(generated_request_id(), Some("post_run"));
            ctx.set_paths(settings);
            ctx.warnings = crate::engine::standing_warnings(settings);
            Err(Failure {
                response: Some(Box::new(ctx.fail(Decision::Skipped, &error))),
                // In text, the interrupted restores are the preface: the rest is said after.
                warnings: crate::engine::standing_remarks(settings).into(),
                preface: preface.into(),
                ..error.into()
            })
        }
    }
}
