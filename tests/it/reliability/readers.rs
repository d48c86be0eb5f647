//! Operator commands beside a running backup (issue 20): readers wait for a publication or a
//! rotation and report no false problem.

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::support::cases::{ensure, scaled, Tally};
use crate::support::runs::{paused, Running};
use crate::support::{self, bin, Project};

use ducksafe::engine::store::LATEST;
use ducksafe::protocol::ErrorCode;
use serde_json::Value;

use super::backup_ids::{backup_now, pre_run_now};
use super::{backup_ids, every_backup_is_complete, source_state};

/// A backup at `now` paused at `point` until it is released ([`paused`]).
fn paused_backup(p: &Project, point: &str, now: &str) -> Result<Running, String> {
    let mut c = p.cmd(&["backup"]);
    c.env("DUCKSAFE_NOW", now);
    paused(c, None, point, &p.path(&format!("go-{point}")))
}

/// Lets a paused backup go on; its exit code.
fn finish(run: Running) -> i32 {
    run.release().status.code().unwrap_or(-1)
}

/// Starts `ducksafe ARGS` and waits until its stderr says it is waiting for the publication
/// section; returns the child with stderr drained on a thread.
fn start_reader_waiting(
    p: &Project,
    args: &[&str],
) -> Result<(Child, mpsc::Receiver<String>), String> {
    let mut child = p
        .cmd(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(l) if l.contains("waiting for it to finish") => return Ok((child, rx)),
            Ok(_) => {}
            Err(mpsc::RecvTimeoutError::Timeout) if Instant::now() < deadline => {}
            Err(e) => return Err(format!("the reader never waited: {e}")),
        }
    }
}

#[test]
fn readers_beside_a_running_backup() {
    let mut t = Tally::new("readers_beside_a_running_backup");
    readers_wait_for_a_publication(&mut t);
    readers_beside_rotating_backups(&mut t);
    lock_file_deleted_while_held(&mut t);
    clock_stepped_back(&mut t);
    t.finish();
}

fn readers_wait_for_a_publication(t: &mut Tally) {
    // A reader that arrives while a backup is half-published (manifest written, file not yet
    // renamed) or half-deleted waits for it, then reports the truth: no false alarm.
    for point in ["publish.manifest", "publish.sidecar"] {
        for args in [&["verify", "--all"][..], &["list", "--json"][..]] {
            let p = Project::new("BACKUP_KEEP_LAST: 1\nVERIFY_LEVEL: quick\n");
            backup_now(&p, "2026-12-01T10:00:00Z");
            t.case(
                format!("`{}` while a backup is paused at {point}", args.join(" ")),
                || {
                    let backup = paused_backup(&p, point, "2026-12-01T10:00:01Z")?;
                    let (reader, _) = start_reader_waiting(&p, args)?;
                    let code = finish(backup);
                    ensure(code == 0, || format!("the backup failed: exit {code}"))?;
                    let out = reader.wait_with_output().map_err(|e| e.to_string())?;
                    let stdout = String::from_utf8_lossy(&out.stdout);
                    ensure(out.status.success(), || {
                        format!(
                            "`{}` exit {:?}: {stdout}",
                            args.join(" "),
                            out.status.code()
                        )
                    })?;
                    ensure(
                        !stdout.contains("PROBLEM") && !stdout.contains("FAILED"),
                        || stdout.to_string(),
                    )
                },
            );
        }
    }
    // Rotation deletes inside the same section: a verify --all that starts while the old backup
    // is being deleted waits, then sees only whole backups.
    {
        let p = Project::new("BACKUP_KEEP_LAST: 1\nVERIFY_LEVEL: quick\n");
        backup_now(&p, "2026-12-01T10:00:00Z");
        t.case("`verify --all` during rotation", || {
            let backup = paused_backup(&p, "rotation.deleting", "2026-12-01T10:00:01Z")?;
            let out = p.run(&["verify", "--all"]);
            let code = finish(backup);
            ensure(code == 0, || format!("the backup failed: exit {code}"))?;
            ensure(out.status.success(), || {
                String::from_utf8_lossy(&out.stdout).to_string()
            })
        });
    }
}

fn readers_beside_rotating_backups(t: &mut Tally) {
    // Many rounds of readers beside backups that rotate: no false report (not a timed test:
    // whatever the interleaving, every round must be clean).
    {
        let p = Project::new("BACKUP_KEEP_LAST: 1\nVERIFY_LEVEL: quick\n");
        backup_now(&p, "2026-12-01T10:00:00Z");
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = {
            let stop = stop.clone();
            let cfg = p.config();
            let dir = p.dir.path().to_path_buf();
            std::thread::spawn(move || {
                let mut runs = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let out = bin()
                        .current_dir(&dir)
                        .args(["--config", cfg.to_str().unwrap(), "backup"])
                        .output()
                        .unwrap();
                    support::assert_ok(&out);
                    runs += 1;
                }
                runs
            })
        };
        let rounds = scaled(150);
        for i in 0..rounds {
            let args: &[&str] = if i % 5 == 0 {
                &["verify", "--all"]
            } else {
                &["list", "--json"]
            };
            t.case(
                format!("round {i}: `{}` beside backups", args.join(" ")),
                || {
                    let out = p.run(args);
                    let stdout = String::from_utf8_lossy(&out.stdout);
                    ensure(out.status.success(), || {
                        format!(
                            "exit {:?}: {stdout} {}",
                            out.status.code(),
                            String::from_utf8_lossy(&out.stderr)
                        )
                    })?;
                    ensure(
                        !stdout.contains("PROBLEM") && !stdout.contains("FAILED"),
                        || stdout.to_string(),
                    )?;
                    if args[0] == "list" {
                        let v: Value = serde_json::from_str(&stdout).map_err(|e| e.to_string())?;
                        ensure(v["unmanaged"].as_array().is_some_and(Vec::is_empty), || {
                            format!("list saw half a backup: {}", v["unmanaged"])
                        })?;
                    }
                    Ok(())
                },
            );
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let runs = writer.join().unwrap();
        t.detail("backups made beside the readers", runs);
    }
}

fn lock_file_deleted_while_held(t: &mut Tally) {
    // A lock file deleted while a backup holds it: a second backup is still refused, and the
    // first completes with its backup intact.
    {
        let p = Project::new("BACKUP_KEEP_LAST: 2\nVERIFY_LEVEL: quick\n");
        backup_now(&p, "2026-12-01T10:00:00Z");
        t.case("the lock file deleted while held", || {
            let backup = paused_backup(&p, "snapshot.copied", "2026-12-01T10:00:01Z")?;
            fs::remove_file(p.backups().join(ducksafe::engine::lock::DIR_LOCK_NAME))
                .map_err(|e| e.to_string())?;
            let (r, code) = p.pre_run();
            ensure(
                code == 75 && r.errors[0].code == ErrorCode::LockBusy,
                || format!("a second run got in: exit {code} {:?}", r.errors),
            )?;
            let code = finish(backup);
            ensure(code == 0, || {
                format!("the first backup failed: exit {code}")
            })?;
            every_backup_is_complete(&p.backups()).map(drop)
        });
    }
}

fn clock_stepped_back(t: &mut Tally) {
    // The clock stepped back: prune keeps what latest names and the last backup made, and says
    // which backup is dated in the future.
    {
        let p = Project::new("BACKUP_KEEP_LAST: 1\nVERIFY_LEVEL: quick\n");
        t.case("prune after the clock stepped back", || {
            let future = pre_run_now(&p, "2027-06-01T00:00:00Z")?.backup.unwrap().id;
            pre_run_now(&p, "2026-12-01T00:00:00Z")?;
            let last = pre_run_now(&p, "2026-12-01T00:01:00Z")?.backup.unwrap().id;
            let out = p
                .cmd(&["prune"])
                .env("DUCKSAFE_NOW", "2026-12-01T00:02:00Z")
                .output()
                .map_err(|e| e.to_string())?;
            let stderr = String::from_utf8_lossy(&out.stderr);
            ensure(out.status.success(), || stderr.to_string())?;
            ensure(p.backups().join(format!("{last}.duckdb")).exists(), || {
                format!("prune deleted `{last}`, the one latest names")
            })?;
            ensure(
                fs::read_link(p.backups().join(LATEST)).map_err(|e| e.to_string())?
                    == Path::new(&format!("{last}.duckdb")),
                || "latest moved".into(),
            )?;
            ensure(
                stderr.contains(&format!("`{future}` is dated 2027-06-01"))
                    && stderr.contains(&format!("ducksafe delete {future}")),
                || format!("no warning about the future-dated backup: {stderr}"),
            )?;
            // The warned command works, and leaves the real latest.
            let out = p.run(&["delete", &future]);
            ensure(out.status.success(), || {
                String::from_utf8_lossy(&out.stderr).to_string()
            })?;
            ensure(backup_ids(&p.backups()) == vec![last.clone()], || {
                format!("{:?}", backup_ids(&p.backups()))
            })
        });
        t.case(
            "a dangling latest is reported and never silently replaced",
            || {
                let p = Project::new("BACKUP_KEEP_LAST: 3\nVERIFY_LEVEL: quick\n");
                let old = pre_run_now(&p, "2026-12-01T00:00:00Z")?.backup.unwrap().id;
                let newest = pre_run_now(&p, "2026-12-01T00:01:00Z")?.backup.unwrap().id;
                for ext in [".duckdb", ".duckdb.sha256", ".manifest.json"] {
                    fs::remove_file(p.backups().join(format!("{newest}{ext}")))
                        .map_err(|e| e.to_string())?;
                }
                let out = p.run(&["list"]);
                ensure(
                    String::from_utf8_lossy(&out.stderr).contains("points to"),
                    || "list did not report the dangling latest".into(),
                )?;
                let before = source_state(&p.db());
                let out = p.run(&["restore"]);
                ensure(out.status.code() == Some(66), || {
                    format!(
                        "restore latest exit {:?}: {}",
                        out.status.code(),
                        String::from_utf8_lossy(&out.stderr)
                    )
                })?;
                ensure(source_state(&p.db()) == before, || {
                    format!("restored `{old}` in place of the dangling latest")
                })
            },
        );
    }
}
