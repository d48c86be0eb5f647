//! `ducksafe backup`: one consistent, verified backup now, then rotation. `--json` prints the
//! same response a `pre_run` hook gets.

use std::io::{self, Write};
use std::path::Path;

use serde::Serialize;

use super::Global;
use crate::cli::BackupArgs;
use crate::engine::backup;
use crate::hook::response::{self, Ctx};
use crate::output::{self, size, Failure, Report};
use crate::protocol::{generated_request_id, Response};

/// A backup taken: the pre_run response, and for people what the backup holds.
#[derive(Serialize)]
#[serde(transparent)]
struct BackedUp<'a> {
    response: Response,
    #[serde(skip)]
    db_path: &'a Path,
    #[serde(skip)]
    outcome: &'a backup::Outcome,
}

impl Report for BackedUp<'_> {
    fn text(&self, out: &mut dyn Write) -> io::Result<()> {
        let o = self.outcome;
        let m = &o.manifest;
        writeln!(
            out,
            "backed up `{}` → `{}`",
            self.db_path.display(),
            o.path.display()
        )?;
        writeln!(
            out,
            "  {}, sha256 {}, verified ({}): {}",
            size(m.bytes),
            &m.sha256[..16],
            m.verification.level,
            m.verification.checks.join(", ")
        )?;
        let rows = m
            .total_rows()
            .map_or_else(|| "rows not counted".to_owned(), |n| format!("{n} rows"));
        writeln!(
            out,
            "  {} tables, {rows}; WAL folded in: {}",
            m.tables.len(),
            if m.source.wal_folded {
                "yes"
            } else {
                "no (byte-exact copy)"
            }
        )?;
        if m.source.copy_method == Some(crate::files::CopyMethod::Reflink) {
            writeln!(
                out,
                "  reflinked: shares blocks with the database until either changes (same disk: copy the backups elsewhere to survive a disk failure)"
            )?;
        }
        for d in &o.rotation.deleted {
            writeln!(out, "  deleted `{}`: {}", d.id, d.reason)?;
        }
        writeln!(
            out,
            "  {} backups kept, using {}; {} free",
            o.rotation.kept.len(),
            size(o.space.backups_bytes),
            size(o.space.available_bytes)
        )?;
        if let Some(rb) = &self.response.rollback {
            writeln!(out, "  to roll back: {}", rb.command.join(" "))?;
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

/// A backup planned (`--dry-run`): the pre_run dry-run response, and the plan for people.
#[derive(Serialize)]
#[serde(transparent)]
struct Planned<'a> {
    response: Response,
    #[serde(skip)]
    plan: &'a backup::DryRun,
}

impl Report for Planned<'_> {
    fn text(&self, out: &mut dyn Write) -> io::Result<()> {
        let d = self.plan;
        writeln!(
            out,
            "dry run: would create backup `{}`; nothing was written",
            d.would_create
        )?;
        writeln!(
            out,
            "  space: {} available, {} required",
            size(d.space.available_bytes),
            size(d.space.required_bytes)
        )?;
        for del in &d.rotation.deleted {
            writeln!(out, "  would delete `{}`: {}", del.id, del.reason)?;
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

pub fn run(g: &Global, a: &BackupArgs) -> i32 {
    g.show_progress();
    let settings = match g.settings() {
        Ok(s) => s,
        Err(e) => return output::fail(g.json, e),
    };
    let mut ctx = Ctx::new(generated_request_id(), Some("pre_run"));
    ctx.set_paths(&settings);
    let now = crate::clock::now();
    // An interrupted restore the backup could not finish is why it failed, or worse; then
    // what the backup had said and changed before it failed.
    let failed = |mut ctx: Ctx, refused: backup::Refused| {
        ctx.warnings = crate::engine::standing_warnings(&settings);
        let response = response::backup_refused(&ctx, &refused);
        Failure {
            warnings: response.warnings.clone().into(),
            response: Some(Box::new(response)),
            ..refused.error.into()
        }
    };
    if a.dry_run {
        return match backup::dry_run(&settings, now, false) {
            Ok(plan) => {
                let mut response = response::backup_planned(&ctx, &plan);
                response::surface_pending(&mut response, &settings);
                let planned = Planned {
                    response,
                    plan: &plan,
                };
                output::finish(g.json, Ok(planned))
            }
            Err(e) => output::fail(g.json, failed(ctx, e.into())),
        };
    }
    match backup::run(&settings, now, None, false) {
        Ok(outcome) => {
            let backed_up = BackedUp {
                response: response::backup_done(&ctx, &settings, &outcome),
                db_path: &settings.db_path,
                outcome: &outcome,
            };
            output::finish(g.json, Ok(backed_up))
        }
        Err(e) => output::fail(g.json, failed(ctx, e)),
    }
}
