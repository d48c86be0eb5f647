//! `ducksafe restore --table NAME [--table NAME…] [BACKUP]`: puts some tables back from a backup
//! into the live database, in one transaction, after an undo backup (see
//! [`crate::engine::table_restore`]). `--json` prints the typed report ([`table_restore::Outcome`]).

use std::io::{self, Write};

use super::Global;
use crate::cli::RestoreArgs;
use crate::engine::table_restore::{self, Method, Outcome, Request};
use crate::output::{self, Failure, Report};

impl Report for Outcome {
    fn text(&self, out: &mut dyn Write) -> io::Result<()> {
        let db = self.database.display();
        let n = self.tables.len();
        let tables = if n == 1 { "table" } else { "tables" };
        if self.dry_run {
            writeln!(
                out,
                "dry run: would restore {n} {tables} of `{db}` from backup `{}`, in one transaction; every other table would stay as it is",
                self.backup_id
            )?;
        } else {
            writeln!(
                out,
                "restored {n} {tables} of `{db}` from backup `{}` in {} ms, in one transaction; every other table is as it was",
                self.backup_id, self.duration_ms
            )?;
        }
        for t in &self.tables {
            let how = match t.method {
                Method::ReplaceRows => "rows replaced",
                Method::ChangedRows => "changed rows replaced (other tables reference it)",
                Method::Recreate => "recreated with the backup's definition, rows put back",
            };
            let check = match t.fingerprint_matches {
                Some(true) => format!(
                    "fingerprint equals the backup's (from its {})",
                    t.fingerprint_source
                ),
                Some(false) => "fingerprint DIFFERS from the backup's".into(),
                None => format!(
                    "would be checked against the backup's fingerprint (from its {})",
                    t.fingerprint_source
                ),
            };
            writeln!(
                out,
                "  {}: {} rows (was {}); {how}; {check}",
                t.table, t.rows_after, t.rows_before
            )?;
        }
        match &self.undo {
            Some(u) => {
                writeln!(
                    out,
                    "  undo backup `{}` taken before (verified{}): the database as it was just before",
                    u.backup_id,
                    if u.pinned { ", pinned" } else { "" }
                )?;
                writeln!(out, "  to undo: {}", u.command)?;
                if u.pinned {
                    writeln!(
                        out,
                        "  when you no longer need it: ducksafe unpin {}",
                        u.backup_id
                    )?;
                }
            }
            None => writeln!(
                out,
                "  would first take a verified, pinned backup of the database (the undo); nothing was written"
            )?,
        }
        Ok(())
    }

    fn warnings(&self) -> &[String] {
        &self.warnings
    }
}

pub fn run(g: &Global, a: &RestoreArgs) -> i32 {
    g.show_progress();
    let outcome = (|| {
        let settings = g.settings()?;
        let req = Request {
            selector: &a.backup,
            tables: &a.tables,
            replace_schema: a.replace_schema,
            expect_sha256: a.expect_sha256.as_deref(),
            dry_run: a.dry_run,
        };
        table_restore::run(&settings, &req, crate::clock::now())
    })();
    output::finish(
        g.json,
        outcome.map_err(|f| Failure {
            warnings: f.notes.into(),
            ..f.error.into()
        }),
    )
}
