//! A live writer: every command that would back up or restore is refused while another
//! process holds the database for writing, and no writer gets in while a backup runs.

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;
use std::time::Duration;

use crate::support::cases::{ensure, scaled, Tally};
use crate::support::runs::{one_line, start};
use crate::support::{self, hold, request, write_into_wal, Project};

use ducksafe::failpoint;
use ducksafe::protocol::{Decision, ErrorCode, Response, Status};

use super::names;

fn locked_error(r: &Response, pid: u32) -> Result<(), String> {
    ensure(r.exit_code == 75 && r.status == Status::Error, || {
        format!("expected exit 75, got {r:?}")
    })?;
    let e = &r.errors[0];
    ensure(e.code == ErrorCode::DatabaseLocked && e.retryable, || {
        format!("expected a retryable database_locked, got {e:?}")
    })?;
    ensure(e.message.contains(&format!("PID {pid}")), || {
        format!("the message does not name PID {pid}: {}", e.message)
    })
}

#[test]
fn live_writer_is_refused() {
    let mut t = Tally::new("live_writer_is_refused");
    for rep in 0..scaled(2) {
        refused_while_a_writer_holds_it(&mut t, rep % 2 == 1);
    }
    // No backup directory yet: still nothing under a backup name.
    t.case("first run ever, refused", || {
        let p = Project::new("");
        let holder = hold(&p.db());
        let (r, _) = p.pre_run();
        locked_error(&r, holder.pid())?;
        let entries = names(&p.backups());
        ensure(
            entries
                .iter()
                .all(|n| n == ducksafe::engine::lock::DIR_LOCK_NAME),
            || format!("the backup directory holds {entries:?}"),
        )
    });
    writer_cannot_start_during_a_backup(&mut t);
    t.finish();
}

/// No file of the project changed since `before` ([`support::every_byte`]), taken just before
/// the case `what`. A refused real run has taken the directory lock (`takes_lock`: its PID is
/// written there) and changed nothing else; a dry run and a validate do not even take the lock.
fn nothing_written(
    p: &Project,
    what: &str,
    takes_lock: bool,
    before: BTreeMap<String, String>,
) -> Result<(), String> {
    let now = support::every_byte(p.dir.path());
    let (now_, before) = if takes_lock {
        (
            support::but_the_lock(now.clone()),
            support::but_the_lock(before),
        )
    } else {
        (now.clone(), before)
    };
    ensure(now_ == before, || format!("{what} changed files: {now:?}"))
}

/// Every command that would back up or restore, while another process holds the database for
/// writing: `database_locked`, the writer's PID, exit 75, and not a file changed (but the PID in
/// the directory lock, by a real run).
fn refused_while_a_writer_holds_it(t: &mut Tally, with_wal: bool) {
    {
        let p = Project::new("");
        let (r, code) = p.pre_run();
        assert_eq!(code, 0, "{r:?}");
        if with_wal {
            write_into_wal(&p.db(), "DELETE FROM employees WHERE job_level = 1;");
        }
        let holder = hold(&p.db());
        let pid = holder.pid();
        let wal = if with_wal { "with WAL" } else { "no WAL" };
        let post_run = format!(
            r#","backup_id":"{}","run":{{"outcome":"failure"}},"on_failure":"restore""#,
            r.backup.as_ref().unwrap().id
        );
        let hooks: [(&str, String, Decision, bool); 3] = [
            (
                "pre_run",
                request("pre_run", &p.config(), ""),
                Decision::Abort,
                true,
            ),
            (
                "pre_run dry_run",
                request("pre_run", &p.config(), r#","dry_run":true"#),
                Decision::Abort,
                false,
            ),
            (
                "post_run restore",
                request("post_run", &p.config(), &post_run),
                Decision::RestoreFailed,
                true,
            ),
        ];
        for (what, req, decision, takes_lock) in hooks {
            t.case(format!("{wal}: hook {what}"), || {
                let before = support::every_byte(p.dir.path());
                let (r, _) = p.hook(&req);
                locked_error(&r, pid)?;
                ensure(r.decision == decision, || {
                    format!("decision {:?}", r.decision)
                })?;
                nothing_written(&p, what, takes_lock, before)
            });
        }
        for args in [
            &["pre-run"][..],
            &["post-run", "--exit-code", "1", "--on-failure", "restore"],
        ] {
            t.case(format!("{wal}: ducksafe {}", args[0]), || {
                let before = support::every_byte(p.dir.path());
                let out = p.run(args);
                let r = one_line(&out.stdout, out.status)?;
                locked_error(&r, pid)?;
                nothing_written(&p, args[0], true, before)
            });
        }
        for args in [&["backup"][..], &["restore"]] {
            t.case(format!("{wal}: ducksafe {}", args[0]), || {
                let before = support::every_byte(p.dir.path());
                let out = p.run(args);
                ensure(out.status.code() == Some(75), || {
                    format!("exit {:?}", out.status.code())
                })?;
                let err = String::from_utf8_lossy(&out.stderr);
                ensure(err.contains(&format!("PID {pid}")), || err.to_string())?;
                nothing_written(&p, args[0], true, before)
            });
        }
        t.case(format!("{wal}: hook validate warns"), || {
            let before = support::every_byte(p.dir.path());
            let (r, code) = p.hook(&request("validate", &p.config(), ""));
            ensure(code == 0 && r.decision == Decision::Valid, || {
                format!("{r:?}")
            })?;
            ensure(
                r.warnings.iter().any(|w| w.contains(&format!("PID {pid}"))),
                || format!("no warning names the writer: {:?}", r.warnings),
            )?;
            nothing_written(&p, "validate", false, before)
        });
        drop(holder);
        t.case(
            format!("{wal}: once the writer is gone, the backup succeeds"),
            || {
                let (r, code) = p.pre_run();
                ensure(code == 0, || format!("{r:?}"))
            },
        );
    }
}

/// While a backup holds the database (paused at each step from the lock to the publication), a
/// DuckDB writer cannot open it; once the backup is gone, it can.
fn writer_cannot_start_during_a_backup(t: &mut Tally) {
    for wal in [false, true] {
        let p = Project::new("");
        if wal {
            write_into_wal(&p.db(), "DELETE FROM employees WHERE job_level = 2;");
        }
        // The writer that opens the database at the end of each case folds its WAL in when it
        // closes: put the files back before the next case.
        let files: Vec<(PathBuf, Vec<u8>)> = std::iter::once(p.db())
            .chain(ducksafe::duck::wal_paths(&p.db()))
            .filter(|f| f.exists())
            .map(|f| {
                let bytes = fs::read(&f).unwrap();
                (f, bytes)
            })
            .collect();
        // From the lock through the manifest's publication.
        for point in failpoint::BACKUP
            .iter()
            .take_while(|p| **p != "publish.sidecar")
        {
            if *point == "snapshot.folded" && !wal {
                continue;
            }
            let label = format!(
                "{}: a writer opening the database while the backup is paused at `{point}`",
                if wal { "with WAL" } else { "no WAL" }
            );
            t.case(label, || {
                let mut c = p.cmd(&["hook"]);
                c.env("DUCKSAFE_FAILPOINT", format!("{point}:sleep=120000"));
                let mut run = start(c, Some(request("pre_run", &p.config(), "").as_bytes()));
                let reached = run.wait_for_line("sleeping", Duration::from_secs(60));
                let during = duckdb::Connection::open(p.db());
                let refused = during.is_err();
                drop(during);
                let _ = run.child.kill();
                run.finish(None);
                ensure(reached, || format!("never reached `{point}`"))?;
                ensure(refused, || {
                    "a DuckDB writer opened the database during the backup".into()
                })?;
                let after = duckdb::Connection::open(p.db()).map_err(|e| e.to_string())?;
                drop(after);
                for w in ducksafe::duck::wal_paths(&p.db()) {
                    let _ = fs::remove_file(w);
                }
                for (f, bytes) in &files {
                    fs::write(f, bytes).unwrap();
                }
                Ok(())
            });
        }
    }
}
