#![allow(clippy::unwrap_used)]
//! Restore, rollback and the operator commands, end to end on real DuckDB files.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use common::{fingerprints, hold, sha256, write_into_wal, Project};
use ducksafe::duck::{Db, Limits};
use ducksafe::protocol::{Decision, ErrorCode};

#[test]
#[ignore = "helper process for the lock tests, started by common::hold"]
fn hold_database_child() {
    common::hold_database_child();
}

fn backup(p: &Project) -> (String, PathBuf) {
    let (r, code) = p.pre_run();
    assert_eq!(code, 0, "{r:?}");
    let b = r.backup.unwrap();
    (b.id, PathBuf::from(b.path))
}

fn post_run_failure(p: &Project, id: &str) -> (ducksafe::protocol::Response, i32) {
    p.hook(&format!(
        r#"{{"protocol_version":1,"event":"post_run","backup_id":"{id}","run":{{"outcome":"failure","exit_code":3}},"on_failure":"restore","config":{{"path":"{}"}}}}"#,
        p.config().display()
    ))
}

fn change_rows(db: &Path) {
    let d = Db::open_read_write(db, &Limits::default()).unwrap();
    d.execute_batch("UPDATE employees SET current_compensation = current_compensation * 2; DELETE FROM fct_yearly_events WHERE simulation_year = 2023;")
        .unwrap();
    d.close().unwrap();
}

#[test]
fn the_wal_trap_a_crashed_runs_wal_is_quarantined_not_replayed() {
    let p = Project::new("");
    let (id, backup_path) = backup(&p);
    let expected = fingerprints(&backup_path);
    // The "simulation" changes rows and dies, leaving its WAL behind.
    write_into_wal(
        &p.db(),
        "UPDATE employees SET current_compensation = 1; DELETE FROM fct_yearly_events;",
    );
    let stale_wal = fs::read(p.path("simulation.duckdb.wal")).unwrap();
    assert_ne!(
        fingerprints(&p.db()),
        expected,
        "the run changed the database"
    );

    let (r, code) = post_run_failure(&p, &id);
    assert_eq!(code, 0, "{r:?}");
    assert_eq!(r.decision, Decision::Restored);
    let restore = r.restore.unwrap();
    common::assert_restored(&p, &expected);
    let quarantined_wal = Path::new(&restore.quarantine).join("simulation.duckdb.wal");
    assert_eq!(
        fs::read(&quarantined_wal).unwrap(),
        stale_wal,
        "the stale WAL is kept in quarantine"
    );
    assert!(Path::new(&restore.quarantine)
        .join("simulation.duckdb")
        .exists());
    assert!(!restore.undo.is_empty());
    // And it stays restored: reopening does not bring the crashed run back.
    assert_eq!(fingerprints(&p.db()), expected);
}

#[test]
fn round_trip_backup_change_restore() {
    let p = Project::new("");
    let (id, backup_path) = backup(&p);
    let expected = fingerprints(&backup_path);
    change_rows(&p.db());
    assert_ne!(fingerprints(&p.db()), expected);
    let out = p.run(&["restore", &id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("to undo this restore"), "{text}");
    assert_eq!(fingerprints(&p.db()), expected);
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&fs::metadata(p.db()).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn restore_latest_by_default_and_undo_puts_the_old_database_back() {
    let p = Project::new("");
    let (_, backup_path) = backup(&p);
    change_rows(&p.db());
    let changed = fingerprints(&p.db());
    let out = p.run(&["restore", "--json"]);
    assert!(out.status.success());
    let r: ducksafe::protocol::Response = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(fingerprints(&p.db()), fingerprints(&backup_path));
    let undo = r.restore.unwrap().undo.join(" && ");
    let st = std::process::Command::new("sh")
        .args(["-c", &undo])
        .status()
        .unwrap();
    assert!(st.success());
    assert_eq!(
        fingerprints(&p.db()),
        changed,
        "undo brings back the replaced database"
    );
}

#[test]
fn restore_while_another_process_holds_the_database_is_refused_and_nothing_moves() {
    let p = Project::new("");
    let (id, _) = backup(&p);
    change_rows(&p.db());
    let before = sha256(&p.db());
    let holder = hold(&p.db());
    let (r, code) = post_run_failure(&p, &id);
    assert_eq!(code, 75, "{r:?}");
    assert_eq!(r.decision, Decision::RestoreFailed);
    assert_eq!(r.errors[0].code, ErrorCode::DatabaseLocked);
    assert!(r.errors[0]
        .message
        .contains(&format!("PID {}", holder.pid())));
    drop(holder);
    assert_eq!(sha256(&p.db()), before);
    assert!(
        !p.backups().join("quarantine").exists(),
        "nothing was quarantined"
    );
}

#[test]
fn a_corrupted_backup_fails_verify_and_is_refused_by_restore() {
    let p = Project::new("");
    let (id, backup_path) = backup(&p);
    change_rows(&p.db());
    let before = sha256(&p.db());
    // Flip every bit of one byte in the first data block.
    let mut bytes = fs::read(&backup_path).unwrap();
    bytes[12_288 + 100] ^= 0xff;
    fs::write(&backup_path, &bytes).unwrap();

    let out = p.run(&["verify", &id]);
    assert_eq!(out.status.code(), Some(74));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("FAILED") && text.contains(&id), "{text}");

    let out = p.run(&["restore", &id]);
    assert_eq!(out.status.code(), Some(74));
    assert_eq!(sha256(&p.db()), before, "the database is untouched");
    assert!(!p.backups().join("quarantine").exists());
}

#[test]
fn verify_all_reports_truncation_and_orphans() {
    let p = Project::new("");
    let (id, backup_path) = backup(&p);
    let out = p.run(&["verify", "--all"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let f = fs::OpenOptions::new()
        .write(true)
        .open(&backup_path)
        .unwrap();
    f.set_len(20_000).unwrap();
    fs::write(
        p.backups().join("simulation_20200101_000000.duckdb"),
        b"not ours",
    )
    .unwrap();
    let out = p.run(&["--json", "verify", "--all"]);
    assert_eq!(out.status.code(), Some(74));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], false);
    assert_eq!(v["backups"][0]["id"], id.as_str());
    assert!(v["backups"][0]["error"]
        .as_str()
        .unwrap()
        .contains("truncated"));
    assert_eq!(
        v["problems"][0]["file"],
        "simulation_20200101_000000.duckdb"
    );
}

#[test]
fn a_restore_killed_midway_is_completed_by_the_next_command() {
    let p = Project::new("");
    let (id, backup_path) = backup(&p);
    let expected = fingerprints(&backup_path);
    write_into_wal(&p.db(), "DELETE FROM employees;");
    for point in ["restore.intent", "restore.quarantined"] {
        let mut c = p.cmd(&["restore", &id]);
        c.env("DUCKSAFE_FAILPOINT", point);
        assert_eq!(c.output().unwrap().status.code(), None, "{point} aborted");
        // Either the old database with its WAL, or (after the kill) a journal that the next
        // command completes; never the old main file alone presented as restored.
        let out = p.run(&["restore", &id]);
        assert!(
            out.status.success(),
            "{point}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(fingerprints(&p.db()), expected, "{point}");
        assert!(!p.path("simulation.duckdb.wal").exists());
        write_into_wal(&p.db(), "DELETE FROM employees;");
    }
    let leftovers: Vec<_> = fs::read_dir(p.dir.path())
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(".ducksafe-tmp-")
        })
        .collect();
    assert!(leftovers.is_empty());
}

#[test]
fn list_shows_backups_and_totals() {
    let p = Project::new("");
    let out = p.run(&["list"]);
    assert!(
        out.status.success(),
        "listing before the first backup is not an error"
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("no backups yet"));
    let (id, _) = backup(&p);
    let out = p.run(&["list"]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains(&id) && text.contains("latest"), "{text}");
    let out = p.run(&["--json", "list"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["backups"][0]["id"], id.as_str());
    assert_eq!(v["backups"][0]["tables"], 3);
    assert!(v["total_bytes"].as_u64().unwrap() > 0);
}

/// A manifest written before `copy_method` was recorded still counts as a backup (listed,
/// verified, restorable); a manifest that does not parse is named with the reason.
#[test]
fn older_manifests_are_read_and_a_broken_one_is_explained() {
    let p = Project::new("");
    let (old, _) = backup(&p);
    let (broken, _) = backup(&p);
    let old_manifest = p.backups().join(format!("{old}.manifest.json"));
    let mut m: serde_json::Value =
        serde_json::from_slice(&fs::read(&old_manifest).unwrap()).unwrap();
    m["source"].as_object_mut().unwrap().remove("copy_method");
    fs::write(&old_manifest, serde_json::to_vec_pretty(&m).unwrap()).unwrap();
    fs::write(
        p.backups().join(format!("{broken}.manifest.json")),
        b"{\"format\": 1,",
    )
    .unwrap();

    let out = p.run(&["list"]);
    let text = String::from_utf8(out.stdout).unwrap();
    let row = text
        .lines()
        .find(|l| l.starts_with(&old))
        .unwrap_or_default();
    assert!(
        row.contains("full"),
        "the older backup is listed as verified: {text}"
    );
    let note = text
        .lines()
        .find(|l| l.starts_with("note:") && l.contains(&broken))
        .unwrap_or_default();
    assert!(note.contains("does not parse"), "{text}");
    let out = p.run(&["--json", "list"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["unmanaged"][0]["file"],
        format!("{broken}.manifest.json").as_str()
    );
    let out = p.run(&["verify", &old]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn pinned_backups_survive_prune_and_do_not_count() {
    let p = Project::new("BACKUP_KEEP_LAST: 1\n");
    let mut ids = Vec::new();
    for i in 0..3 {
        let now = format!("2025-08-18T14:0{i}:00Z");
        let (r, _) = p.hook_env(
            &format!(
                r#"{{"protocol_version":1,"event":"pre_run","config":{{"path":"{}"}}}}"#,
                p.config().display()
            ),
            &[("DUCKSAFE_NOW", &now)],
        );
        ids.push(r.backup.unwrap().id);
        if i == 0 {
            assert!(p.run(&["pin", &ids[0]]).status.success());
        }
    }
    // keep_last 1: the pinned first one and the newest survive.
    let files = p.backup_files();
    assert_eq!(
        files,
        vec![format!("{}.duckdb", ids[0]), format!("{}.duckdb", ids[2])]
    );
    assert!(p.run(&["unpin", &ids[0]]).status.success());
    let out = p.run(&["prune", "--dry-run"]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("would delete") && text.contains(&ids[0]),
        "{text}"
    );
    assert_eq!(p.backup_files().len(), 2, "dry run deletes nothing");
    assert!(p.run(&["prune"]).status.success());
    assert_eq!(p.backup_files(), vec![format!("{}.duckdb", ids[2])]);
}

/// `BACKUP_RETENTION_DAYS` and `BACKUP_MAX_TOTAL_BYTES` delete old backups through the real
/// configuration, but never the pinned one nor the newest verified one, however old or large.
#[test]
fn age_and_size_limits_never_delete_the_pinned_or_the_newest_backup() {
    let p = Project::new("BACKUP_RETENTION_DAYS: 7\n");
    let ids: Vec<String> = (1..=3)
        .map(|day| {
            let now = format!("2025-08-0{day}T12:00:00Z");
            let (r, code) = p.hook_env(
                &format!(
                    r#"{{"protocol_version":1,"event":"pre_run","config":{{"path":"{}"}}}}"#,
                    p.config().display()
                ),
                &[("DUCKSAFE_NOW", &now)],
            );
            assert_eq!(code, 0, "{r:?}");
            r.backup.unwrap().id
        })
        .collect();
    assert!(p.run(&["pin", &ids[0]]).status.success());
    // Two months later every backup is too old: the pinned first and the newest stay.
    let later = [("DUCKSAFE_NOW", "2025-09-30T00:00:00Z")];
    let out = p.cmd(&["prune"]).envs(later).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let survivors = vec![format!("{}.duckdb", ids[0]), format!("{}.duckdb", ids[2])];
    assert_eq!(p.backup_files(), survivors);
    // A byte budget no backup fits in: still the same two, and the output says so.
    let out = p
        .cmd(&["prune"])
        .envs(later)
        .env("DUCKSAFE_BACKUP_MAX_TOTAL_BYTES", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("still use"), "{said}");
    assert_eq!(p.backup_files(), survivors);
}

/// A restore puts back a database that was deleted: nothing to quarantine, the backup's
/// content, mode 0600.
#[test]
fn a_deleted_database_is_restored() {
    let p = Project::new("");
    let (id, backup_path) = backup(&p);
    let expected = fingerprints(&backup_path);
    fs::remove_file(p.db()).unwrap();
    let out = p.run(&["restore", &id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    common::assert_restored(&p, &expected);
    assert_eq!(
        fs::metadata(p.db()).unwrap().permissions().mode() & 0o777,
        0o600
    );
}

/// A WAL that appears after a restore was killed (something opened the database between the
/// crash and the recovery) is quarantined beside the first one, as `.late1`, not deleted and
/// not left beside the restored database.
#[test]
fn a_wal_that_appears_after_a_killed_restore_is_quarantined_too() {
    let p = Project::new("");
    let (id, backup_path) = backup(&p);
    let expected = fingerprints(&backup_path);
    write_into_wal(&p.db(), "DELETE FROM employees;");
    let original_wal = fs::read(p.path("simulation.duckdb.wal")).unwrap();
    let mut c = p.cmd(&["restore", &id]);
    c.env("DUCKSAFE_FAILPOINT", "restore.quarantined");
    assert_eq!(c.output().unwrap().status.code(), None, "aborted");
    fs::write(p.path("simulation.duckdb.wal"), b"late").unwrap();
    let out = p.run(&["restore", &id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    common::assert_restored(&p, &expected);
    let quarantine = p.backups().join("quarantine");
    let folders: Vec<_> = fs::read_dir(&quarantine)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|d| d.join("simulation.duckdb.wal").exists())
        .collect();
    assert_eq!(folders.len(), 1, "{folders:?}");
    let q = &folders[0];
    assert_eq!(
        fs::read(q.join("simulation.duckdb.wal")).unwrap(),
        original_wal
    );
    assert_eq!(
        fs::read(q.join("simulation.duckdb.wal.late1")).unwrap(),
        b"late"
    );
}

/// Files ducksafe did not make, and backups whose manifest is broken, are never rotated away,
/// however many backups come after them.
#[test]
fn files_ducksafe_did_not_make_are_never_rotated() {
    let p = Project::new("BACKUP_KEEP_LAST: 1\n");
    let (broken, broken_path) = backup(&p);
    fs::write(p.backups().join(format!("{broken}.manifest.json")), b"{").unwrap();
    let foreign = p.backups().join("simulation_20200101_000000.duckdb");
    fs::copy(p.db(), &foreign).unwrap();
    let before = (sha256(&foreign), sha256(&broken_path));
    for _ in 0..4 {
        backup(&p);
    }
    assert!(p.run(&["prune"]).status.success());
    assert_eq!((sha256(&foreign), sha256(&broken_path)), before);
}

#[test]
fn the_seeds_cp_recovery_works_when_the_wal_is_moved_aside_first() {
    let p = Project::new("");
    let (_, backup_path) = backup(&p);
    write_into_wal(&p.db(), "DELETE FROM employees;");
    // The documented manual procedure, as printed in the rollback instructions.
    let (r, _) = p.pre_run();
    let manual = r.rollback.unwrap().manual;
    let script: Vec<&str> = manual
        .iter()
        .filter(|l| !l.starts_with('#'))
        .map(String::as_str)
        .collect();
    let st = std::process::Command::new("sh")
        .args(["-c", &script.join(" && ")])
        .status()
        .unwrap();
    assert!(st.success());
    assert!(!p.path("simulation.duckdb.wal").exists());
    // The second backup (taken with the WAL folded in) is what `manual` restores.
    let latest = fs::canonicalize(p.backups().join("latest.duckdb")).unwrap();
    assert_eq!(fingerprints(&p.db()), fingerprints(&latest));
    assert_ne!(fingerprints(&p.db()), fingerprints(&backup_path));
}

#[test]
fn a_backup_directory_is_never_shared_between_databases() {
    let p = Project::new("");
    let (id, _) = backup(&p);
    fs::copy(p.db(), p.path("other.duckdb")).unwrap();
    fs::write(
        p.path("other.yaml"),
        "DB_PATH: other.duckdb\nLOG_LEVEL: INFO\nBACKUP_MIN_FREE_BYTES: 0\n",
    )
    .unwrap();
    let out = common::bin()
        .current_dir(p.dir.path())
        .args(["--config", "other.yaml", "pre-run"])
        .output()
        .unwrap();
    let r = common::one_response(&out);
    assert_eq!(r.exit_code, 73, "{r:?}");
    assert_eq!(r.errors[0].code, ErrorCode::BackupDirUnsafe);
    assert!(
        r.errors[0].message.contains("simulation.duckdb"),
        "{}",
        r.errors[0].message
    );
    // Restoring the other database from simulation's backup is refused, nothing moves.
    let before = sha256(&p.path("other.duckdb"));
    let out = common::bin()
        .current_dir(p.dir.path())
        .args(["--config", "other.yaml", "restore", &id])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(73));
    assert!(String::from_utf8_lossy(&out.stderr).contains("belongs to the database"));
    assert_eq!(sha256(&p.path("other.duckdb")), before);
}

#[test]
fn the_backup_just_made_is_kept_when_the_clock_went_back() {
    let p = Project::new("BACKUP_KEEP_LAST: 1\n");
    let req = format!(
        r#"{{"protocol_version":1,"event":"pre_run","config":{{"path":"{}"}}}}"#,
        p.config().display()
    );
    let (_, code) = p.hook_env(&req, &[("DUCKSAFE_NOW", "2026-01-02T00:00:00Z")]);
    assert_eq!(code, 0);
    let (r, code) = p.hook_env(&req, &[("DUCKSAFE_NOW", "2026-01-01T00:00:00Z")]);
    assert_eq!(code, 0, "{r:?}");
    let id = r.backup.unwrap().id;
    assert!(
        p.backups().join(format!("{id}.duckdb")).exists(),
        "the new backup survives rotation"
    );
    assert!(
        r.warnings.iter().any(|w| w.contains("clock")),
        "{:?}",
        r.warnings
    );
}

/// A restore interrupted after its WAL files went to quarantine, whose staged copy then
/// vanished, cannot be completed: the next command rolls it back to the exact previous state
/// (the WAL files come back beside the untouched main file) and says so.
#[test]
fn an_interrupted_restore_whose_staged_copy_vanished_is_rolled_back_exactly() {
    let p = Project::new("");
    let (id, _) = backup(&p);
    // The main file must differ from the backup (a checkpointed change), and a WAL follow.
    change_rows(&p.db());
    write_into_wal(&p.db(), "DELETE FROM employees;");
    let main = sha256(&p.db());
    let wal = fs::read(p.path("simulation.duckdb.wal")).unwrap();
    let mut c = p.cmd(&["restore", &id]);
    c.env("DUCKSAFE_FAILPOINT", "restore.quarantined");
    assert_eq!(c.output().unwrap().status.code(), None);
    assert!(!p.path("simulation.duckdb.wal").exists());
    for e in fs::read_dir(p.dir.path()).unwrap().filter_map(Result::ok) {
        if e.file_name()
            .to_string_lossy()
            .starts_with(".ducksafe-tmp-restore-")
        {
            fs::remove_file(e.path()).unwrap();
        }
    }
    let (r, code) = p.pre_run();
    assert_eq!(code, 0, "{r:?}");
    assert!(
        r.warnings.iter().any(|w| w.contains("rolled back")),
        "{:?}",
        r.warnings
    );
    assert_eq!(sha256(&p.db()), main);
    assert_eq!(fs::read(p.path("simulation.duckdb.wal")).unwrap(), wal);
}
