//! Crash anywhere: a backup and a restore killed at every failpoint (by an abort, and by a
//! SIGKILL while paused there) and at random moments; the aftermath, then the next command.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::cases::{ensure, scaled, soak_factor, Rng, Tally};
use crate::support::runs::{killed_where_meant, one_line, run_killed, start, Kill};
use crate::support::{fingerprints, request, sha256, write_into_wal, Project};

use ducksafe::duck::{Db, Limits};
use ducksafe::engine::journal::INTENT;
use ducksafe::engine::store::Store;
use ducksafe::failpoint;
use ducksafe::protocol::Decision;
use serde_json::Value;

use super::{
    backup_ids, every_backup_is_complete, latest_is_verified, leftovers, names, source_state,
    SourceState,
};

const CRASH_KEEP_LAST: usize = 2;

/// A project for the crash scenarios: a database of a few MB (so that the copy and the scans take
/// long enough for random kills to land in them), `BACKUP_KEEP_LAST: 2`, two backups already
/// there so that every run rotates. With `wal`, committed rows stay in the WAL for good.
fn crash_project(wal: bool) -> Project {
    let p = Project::new(&format!("BACKUP_KEEP_LAST: {CRASH_KEEP_LAST}\n"));
    fs::remove_file(p.db()).unwrap();
    ducksafe::demo::create_sized(&p.db(), 3000, 60_000).unwrap();
    if wal {
        write_into_wal(
            &p.db(),
            "CREATE TABLE late_rows AS SELECT range AS id, hash(range) AS h FROM range(20000); \
             UPDATE employees SET job_level = job_level + 1 WHERE job_level < 3;",
        );
    }
    for _ in 0..CRASH_KEEP_LAST {
        let (r, code) = p.pre_run();
        assert_eq!(code, 0, "{r:?}");
    }
    p
}

/// Where a killed backup stopped, judged from what it left.
fn backup_phase(dir: &Path, before: &[String], latest_before: Option<&str>) -> &'static str {
    let ids = backup_ids(dir);
    let new: Vec<&String> = ids.iter().filter(|i| !before.contains(i)).collect();
    let latest = Store::open(dir, false).ok().and_then(|s| s.latest_id());
    if let Some(new) = new.first() {
        if latest.as_deref() != Some(new.as_str()) {
            "published, latest not yet moved"
        } else if ids.len() > CRASH_KEEP_LAST {
            "latest moved, rotation not finished"
        } else {
            "after rotation, before answering"
        }
    } else if ids.len() < before.len() {
        "rotation (an old backup already deleted)"
    } else if latest.as_deref() != latest_before {
        "latest moved without a new backup (impossible)"
    } else if !leftovers(dir)
        .iter()
        .all(|n| n.starts_with(ducksafe::files::TEMP_PREFIX))
    {
        "publishing (manifest or checksum written, backup not renamed)"
    } else if !leftovers(dir).is_empty() {
        "copying, folding or verifying (temporary file only)"
    } else {
        "before the copy (nothing written)"
    }
}

/// The promises after a killed backup, then after the next (normal) run.
fn check_killed_backup(
    p: &Project,
    kill: &Kill,
    source: &SourceState,
    phases: &mut BTreeMap<String, u64>,
) -> Result<(), String> {
    let dir = p.backups();
    let before = backup_ids(&dir);
    let latest_before = Store::open(&dir, false).unwrap().latest_id();
    let out = run_killed(
        p.cmd(&["hook"]),
        Some(request("pre_run", &p.config(), "").as_bytes()),
        kill,
    );
    killed_where_meant(kill, &out)?;
    let phase = if out.died {
        backup_phase(&dir, &before, latest_before.as_deref())
    } else {
        "not killed: the run had finished"
    };
    *phases.entry(phase.to_owned()).or_default() += 1;
    if !out.died {
        // A kill that came too late is no crash; the run must then have succeeded.
        let r = one_line(&out.stdout, out.status)?;
        ensure(r.exit_code == 0, || format!("the run failed: {r:?}"))?;
    }
    // No partial file under a backup name; latest resolves to a verified backup.
    every_backup_is_complete(&dir).map_err(|e| format!("after the kill: {e}"))?;
    latest_is_verified(&dir).map_err(|e| format!("after the kill: {e}"))?;
    ensure(source_state(&p.db()) == *source, || {
        "after the kill: the source database or its WAL changed".into()
    })?;
    let left = leftovers(&dir);

    // The next run succeeds without manual cleanup and removes the leftovers.
    let (r, code) = p.pre_run();
    ensure(code == 0 && r.decision == Decision::Proceed, || {
        format!("the next run failed ({kill} left {left:?}): {r:?}")
    })?;
    let new = r.backup.as_ref().map(|b| b.id.clone()).unwrap_or_default();
    ensure(leftovers(&dir).is_empty(), || {
        format!(
            "the next run left {:?} (the kill left {left:?})",
            leftovers(&dir)
        )
    })?;
    let ids = every_backup_is_complete(&dir)?;
    ensure(ids.len() == CRASH_KEEP_LAST, || {
        format!("{} backups after the next run: {ids:?}", ids.len())
    })?;
    let latest = latest_is_verified(&dir)?;
    ensure(latest == new, || {
        format!("latest is `{latest}`, the next run made `{new}`")
    })?;
    ensure(source_state(&p.db()) == *source, || {
        "the source database or its WAL changed".into()
    })
}

/// How long a normal run of `cmd` takes, from spawn to exit, the median of three.
fn median_run(mut make: impl FnMut() -> Command, stdin: Option<&[u8]>) -> Duration {
    let mut v: Vec<Duration> = (0..3)
        .map(|_| {
            let t = Instant::now();
            let r = start(make(), stdin).finish(None);
            assert!(r.status.success(), "{}", r.stderr);
            t.elapsed()
        })
        .collect();
    v.sort();
    v[1]
}

#[test]
fn crash_anywhere_during_backup() {
    let mut t = Tally::new("crash_anywhere_during_backup");
    let mut rng = Rng::for_scenario("crash_anywhere_during_backup");
    let mut phases: BTreeMap<String, u64> = BTreeMap::new();
    let mut killed_at_points = 0;
    for wal in [false, true] {
        let p = crash_project(wal);
        let source = source_state(&p.db());
        let label = if wal { "with WAL" } else { "no WAL" };
        // Every failpoint, by abort and by SIGKILL while paused there.
        for _ in 0..soak_factor() {
            for point in failpoint::BACKUP {
                if *point == "snapshot.folded" && !wal {
                    continue; // only reached when there is a WAL to fold
                }
                for kill in [Kill::Abort(point), Kill::SleepThenSigkill(point)] {
                    let ok = t.case(format!("{label}, {kill}"), || {
                        check_killed_backup(&p, &kill, &source, &mut phases)
                    });
                    killed_at_points += u64::from(ok);
                }
            }
        }
        // SIGKILL at random moments over the whole run.
        let duration = median_run(
            || p.cmd(&["hook"]),
            Some(request("pre_run", &p.config(), "").as_bytes()),
        );
        let limit = u64::try_from(duration.as_micros()).unwrap() * 11 / 10;
        for _ in 0..scaled(12) {
            let kill = Kill::SigkillAfter(Duration::from_micros(rng.below(limit)));
            t.case(format!("{label}, {kill}"), || {
                check_killed_backup(&p, &kill, &source, &mut phases)
            });
        }
    }
    t.detail("kills_at_failpoints", killed_at_points);
    t.detail(
        "where_the_kills_landed",
        serde_json::to_value(&phases).unwrap(),
    );
    t.finish();
}

/// The state of the database path right after a killed restore.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DbState {
    /// The database and its WAL as they were before the restore.
    Old,
    /// The backup's bytes, with no WAL beside them.
    Restored,
    /// The old main file without its WAL, with a journal in state `prepared` that the next
    /// ducksafe command completes (the documented window of a restore over a WAL).
    Interrupted,
}

/// Journals in the quarantine folders, by state.
pub(super) fn journals(p: &Project) -> Vec<(PathBuf, String)> {
    let mut v = Vec::new();
    for root in [
        p.backups().join("quarantine"),
        p.dir.path().join(".ducksafe-quarantine"),
    ] {
        for n in names(&root) {
            let path = root.join(&n).join(INTENT);
            if let Ok(bytes) = fs::read(&path) {
                let v2: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                v.push((
                    root.join(&n),
                    v2["state"].as_str().unwrap_or("unreadable").to_owned(),
                ));
            }
        }
    }
    v
}

/// Whether the old database is still somewhere: in place, or whole in one quarantine folder
/// (main file and every WAL file).
fn old_database_kept(p: &Project, old: &SourceState) -> bool {
    if source_state(&p.db()) == *old {
        return true;
    }
    journals(p).iter().any(|(q, _)| {
        let main = q.join("simulation.duckdb");
        main.exists()
            && sha256(&main) == old.main
            && old.wals.iter().all(|(w, h)| {
                let name = Path::new(w).file_name().unwrap();
                let moved = q.join(name);
                moved.exists() && sha256(&moved) == *h
            })
    })
}

fn classify_db(p: &Project, old: &SourceState, backup_sha: &str) -> Result<DbState, String> {
    let now = source_state(&p.db());
    let prepared = journals(p).iter().any(|(_, s)| s == "prepared");
    if now == *old {
        Ok(DbState::Old)
    } else if now.main == backup_sha && now.wals.is_empty() {
        Ok(DbState::Restored)
    } else if prepared && now.main == old.main && now.wals.is_empty() {
        Ok(DbState::Interrupted)
    } else {
        Err(format!(
            "the database is neither the old one nor the restored one (main {}, old {}, backup {backup_sha}; WAL files {:?}; journal prepared: {prepared})",
            now.main, old.main, now.wals
        ))
    }
}

/// Makes the database differ from the backup: a checkpointed change and, with `wal`, a further
/// change left in the WAL, as a crashed run leaves it.
pub(super) fn change_database(db: &Path, wal: bool, k: u64) {
    let sql = format!(
        "UPDATE employees SET current_compensation = current_compensation + {}; \
         DELETE FROM fct_yearly_events WHERE simulation_year = {};",
        k % 1000 + 1,
        2021 + k % 5
    );
    // Checkpointed first, so that the main file differs from the backup too.
    let d = Db::open_read_write(db, &Limits::default()).unwrap();
    d.execute_batch(&sql).unwrap();
    d.close().unwrap();
    if wal {
        write_into_wal(
            db,
            &format!("{sql} UPDATE employees SET job_level = job_level + 1;"),
        );
    }
}

struct RestoreCase<'a> {
    p: &'a Project,
    id: &'a str,
    backup_sha: &'a str,
    backup_fp: &'a [(String, ducksafe::duck::Fingerprint)],
    wal: bool,
    k: u64,
    next_is_pre_run: bool,
}

/// One killed restore: the database is the old one or the restored one (or, over a WAL, the
/// journaled window), nothing of the old one is lost, and the next command finishes the job.
fn check_killed_restore(
    c: &RestoreCase<'_>,
    kill: &Kill,
    states: &mut BTreeMap<String, u64>,
) -> Result<(), String> {
    let p = c.p;
    change_database(&p.db(), c.wal, c.k);
    let old = source_state(&p.db());
    let old_fp = fingerprints(&p.db());
    let out = run_killed(p.cmd(&["restore", c.id]), None, kill);
    killed_where_meant(kill, &out)?;
    let state = classify_db(p, &old, c.backup_sha)?;
    let label = if out.died {
        match state {
            DbState::Old => "the old database".to_owned(),
            DbState::Restored => "the restored database".to_owned(),
            DbState::Interrupted => {
                "old main file without its WAL, journal `prepared` (completed by the next command)"
                    .to_owned()
            }
        }
    } else {
        "not killed: the restore had finished".into()
    };
    *states.entry(label).or_default() += 1;
    if !out.died {
        ensure(out.status.success(), || {
            format!("the restore failed: {}", out.stderr)
        })?;
    }
    ensure(c.wal || state != DbState::Interrupted, || {
        "without a WAL the database must be the old one or the restored one".into()
    })?;
    ensure(old_database_kept(p, &old), || {
        "the old database (main file and WAL) is neither in place nor in quarantine".into()
    })?;
    match state {
        DbState::Old => ensure(fingerprints(&p.db()) == old_fp, || {
            "the old database does not open with its content".into()
        })?,
        DbState::Restored => ensure(fingerprints(&p.db()) == c.backup_fp, || {
            "the restored database does not open with the backup's content".into()
        })?,
        DbState::Interrupted => {}
    }
    let prepared = journals(p).iter().any(|(_, s)| s == "prepared");

    // The next ducksafe command that touches the database finishes an interrupted restore.
    if c.next_is_pre_run {
        let (r, code) = p.pre_run();
        ensure(code == 0, || format!("the next pre_run failed: {r:?}"))?;
        let expect_restored = prepared || state == DbState::Restored;
        let fp = fingerprints(&p.db());
        if expect_restored {
            ensure(fp == c.backup_fp, || {
                "after the next pre_run the database is not the restored one".into()
            })?;
            ensure(source_state(&p.db()).wals.is_empty(), || {
                "a WAL beside the restored database".into()
            })?;
        } else {
            ensure(fp == old_fp, || {
                "the next pre_run changed the old database".into()
            })?;
        }
    } else {
        let out = p.run(&["restore", c.id]);
        ensure(out.status.success(), || {
            format!(
                "the next restore failed: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        })?;
        ensure(fingerprints(&p.db()) == c.backup_fp, || {
            "after the next restore the database is not the backup".into()
        })?;
        ensure(source_state(&p.db()).wals.is_empty(), || {
            "a WAL beside the restored database".into()
        })?;
    }
    ensure(journals(p).iter().all(|(_, s)| s == "done"), || {
        format!("journals left unfinished: {:?}", journals(p))
    })?;
    let temps: Vec<String> = names(p.dir.path())
        .into_iter()
        .filter(|n| n.starts_with(ducksafe::files::TEMP_PREFIX))
        .collect();
    ensure(temps.is_empty(), || {
        format!("leftovers beside the database: {temps:?}")
    })?;
    ensure(old_database_kept(p, &old), || {
        "the old database is lost after the next command".into()
    })
}

#[test]
fn crash_anywhere_during_restore() {
    let mut t = Tally::new("crash_anywhere_during_restore");
    let mut rng = Rng::for_scenario("crash_anywhere_during_restore");
    let mut states: BTreeMap<String, u64> = BTreeMap::new();
    let project = Project::new("BACKUP_KEEP_LAST: 50\n");
    let (answer, code) = project.pre_run();
    assert_eq!(code, 0, "{answer:?}");
    let taken = answer.backup.unwrap();
    let backup_fp = fingerprints(Path::new(&taken.path));
    let mut number = 0;
    let mut case = |t: &mut Tally, wal: bool, kill: Kill, states: &mut BTreeMap<String, u64>| {
        number += 1;
        let c = RestoreCase {
            p: &project,
            id: &taken.id,
            backup_sha: &taken.sha256,
            backup_fp: &backup_fp,
            wal,
            k: number,
            next_is_pre_run: number % 2 == 0,
        };
        let label = format!(
            "{}, {kill}, then {}",
            if wal { "with WAL" } else { "no WAL" },
            if c.next_is_pre_run {
                "pre_run"
            } else {
                "restore"
            }
        );
        t.case(label, || check_killed_restore(&c, &kill, states));
    };
    for _ in 0..soak_factor() {
        for wal in [false, true] {
            for point in failpoint::RESTORE {
                case(&mut t, wal, Kill::Abort(point), &mut states);
                case(&mut t, wal, Kill::SleepThenSigkill(point), &mut states);
            }
        }
    }
    let duration = median_run(|| project.cmd(&["restore", &taken.id]), None);
    let limit = u64::try_from(duration.as_micros()).unwrap() * 11 / 10;
    for i in 0..scaled(14) {
        let kill = Kill::SigkillAfter(Duration::from_micros(rng.below(limit)));
        case(&mut t, i % 2 == 1, kill, &mut states);
    }
    t.detail(
        "database_state_right_after_the_kill",
        serde_json::to_value(&states).unwrap(),
    );
    t.finish();
}
