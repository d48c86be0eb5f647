//! Restore, rollback and the operator commands, end to end on real DuckDB files.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::support::mount::{mounted, Mount};
use crate::support::{
    self, assert_exit, assert_ok, every_byte, fingerprints, hold, sha256, write_into_wal, Project,
};
use ducksafe::duck::{Db, Limits};
use ducksafe::protocol::{Decision, ErrorCode};

/// A backup taken by the pre_run hook, whose run then ended (its post_run: the run was good),
/// so that restores from other processes (the runbook's commands through `sh`) are not refused
/// as overlapping a guarded run still in progress.
fn backup(p: &Project) -> (String, PathBuf) {
    let (r, code) = p.pre_run();
    assert_eq!(code, 0, "{r:?}");
    let b = r.backup.unwrap();
    let (r, code) = p.hook(&format!(
        r#"{{"protocol_version":1,"event":"post_run","backup_id":"{}","run":{{"outcome":"success"}},"config":{{"path":"{}"}}}}"#,
        b.id,
        p.config().display()
    ));
    assert_eq!(
        (code, r.decision),
        (0, ducksafe::protocol::Decision::Kept),
        "{r:?}"
    );
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
    support::assert_restored(&p, &expected);
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
    support::assert_ok(&out);
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
    let st = support::command("sh").args(["-c", &undo]).status().unwrap();
    assert!(st.success());
    assert_eq!(
        fingerprints(&p.db()),
        changed,
        "undo brings back the replaced database"
    );
}

/// A backup named by its path, as the seed's recovery names the link (`backups/latest.duckdb`)
/// or as a shell completes a file name; a path outside the backup directory is refused.
#[test]
fn restore_takes_the_path_of_a_backup_or_of_the_latest_link() {
    let p = Project::new("");
    let (older, older_path) = backup(&p);
    change_rows(&p.db());
    let (_, newest_path) = backup(&p);
    assert_ne!(fingerprints(&older_path), fingerprints(&newest_path));
    let restored = |selector: &str, expected: &Path| {
        change_rows(&p.db());
        let out = p.run(&["restore", selector]);
        assert_ok(&out);
        assert_eq!(fingerprints(&p.db()), fingerprints(expected), "{selector}");
    };
    restored("backups/latest.duckdb", &newest_path);
    restored(&format!("backups/{older}.duckdb"), &older_path);
    restored(
        &p.backups().join("latest.duckdb").display().to_string(),
        &newest_path,
    );
    restored(&format!("./backups/{older}.manifest.json"), &older_path);
    let elsewhere = tempfile::tempdir().unwrap();
    fs::copy(&newest_path, elsewhere.path().join("latest.duckdb")).unwrap();
    let before = sha256(&p.db());
    let out = p.run(&[
        "restore",
        &elsewhere.path().join("latest.duckdb").display().to_string(),
    ]);
    assert_exit(&out, 66);
    assert_eq!(sha256(&p.db()), before, "nothing restored");
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
    assert_exit(&out, 74);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("FAILED") && text.contains(&id), "{text}");

    let out = p.run(&["restore", &id]);
    assert_exit(&out, 74);
    assert_eq!(sha256(&p.db()), before, "the database is untouched");
    assert!(!p.backups().join("quarantine").exists());
}

#[test]
fn verify_all_reports_truncation_and_orphans() {
    let p = Project::new("");
    let (id, backup_path) = backup(&p);
    let out = p.run(&["verify", "--all"]);
    assert_ok(&out);
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
    assert_exit(&out, 74);
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
        support::abort_at(p.cmd(&["restore", &id]), point);
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
    support::assert_ok(&out);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains(&id) && text.contains("latest"), "{text}");
    let out = p.run(&["--json", "list"]);
    support::assert_ok(&out);
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
    support::assert_ok(&out);
}

#[test]
fn pinned_backups_survive_prune_and_do_not_count() {
    let p = Project::new("BACKUP_KEEP_LAST: 1\n");
    let mut ids = Vec::new();
    for i in 0..3 {
        let now = format!("2025-08-18T14:0{i}:00Z");
        let (r, _) = p.pre_run_env(&[("DUCKSAFE_NOW", &now)]);
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
            let (r, code) = p.pre_run_env(&[("DUCKSAFE_NOW", &now)]);
            assert_eq!(code, 0, "{r:?}");
            r.backup.unwrap().id
        })
        .collect();
    assert!(p.run(&["pin", &ids[0]]).status.success());
    // Two months later every backup is too old: the pinned first and the newest stay.
    let later = [("DUCKSAFE_NOW", "2025-09-30T00:00:00Z")];
    let out = p.cmd(&["prune"]).envs(later).output().unwrap();
    support::assert_ok(&out);
    let survivors = vec![format!("{}.duckdb", ids[0]), format!("{}.duckdb", ids[2])];
    assert_eq!(p.backup_files(), survivors);
    // A byte budget no backup fits in: still the same two, and the output says so.
    let out = p
        .cmd(&["prune"])
        .envs(later)
        .env("DUCKSAFE_BACKUP_MAX_TOTAL_BYTES", "1")
        .output()
        .unwrap();
    support::assert_ok(&out);
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
    support::assert_ok(&out);
    support::assert_restored(&p, &expected);
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
    support::abort_at(p.cmd(&["restore", &id]), "restore.quarantined");
    fs::write(p.path("simulation.duckdb.wal"), b"late").unwrap();
    let out = p.run(&["restore", &id]);
    support::assert_ok(&out);
    support::assert_restored(&p, &expected);
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
    // The documented manual procedure, as printed in the rollback instructions, pasted whole.
    let (r, _) = p.pre_run();
    let out = run_sh(&p, &r.rollback.unwrap().manual.join("\n"));
    assert!(out.status.success(), "{}", said(&out));
    assert!(said(&out).contains("restored "), "{}", said(&out));
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
    let out = support::bin()
        .current_dir(p.dir.path())
        .args(["--config", "other.yaml", "pre-run"])
        .output()
        .unwrap();
    let r = support::one_response(&out);
    assert_eq!(r.exit_code, 73, "{r:?}");
    assert_eq!(r.errors[0].code, ErrorCode::BackupDirUnsafe);
    assert!(
        r.errors[0].message.contains("simulation.duckdb"),
        "{}",
        r.errors[0].message
    );
    // Restoring the other database from simulation's backup is refused, nothing moves.
    let before = sha256(&p.path("other.duckdb"));
    let out = support::bin()
        .current_dir(p.dir.path())
        .args(["--config", "other.yaml", "restore", &id])
        .output()
        .unwrap();
    assert_exit(&out, 73);
    assert!(String::from_utf8_lossy(&out.stderr).contains("belongs to the database"));
    assert_eq!(sha256(&p.path("other.duckdb")), before);
}

#[test]
fn the_backup_just_made_is_kept_when_the_clock_went_back() {
    let p = Project::new("BACKUP_KEEP_LAST: 1\n");
    let (_, code) = p.pre_run_env(&[("DUCKSAFE_NOW", "2026-01-02T00:00:00Z")]);
    assert_eq!(code, 0);
    let (r, code) = p.pre_run_env(&[("DUCKSAFE_NOW", "2026-01-01T00:00:00Z")]);
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
    support::abort_at(p.cmd(&["restore", &id]), "restore.quarantined");
    assert!(!p.path("simulation.duckdb.wal").exists());
    remove_staged_copies(&p);
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

// ---------------------------------------------------------------------------------------------
// The runbook, driven from the document itself (issue 19): its shell blocks are extracted from
// docs/runbook.md, pointed at a temporary project and run through `sh` in the situations they
// are written for, so that the runbook cannot drift from the binary.
// ---------------------------------------------------------------------------------------------

/// stdout and stderr of a run, for messages and searches.
pub(crate) fn said(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs `script` with `sh` in the project folder, with `ducksafe` on the PATH (the binary under
/// test) and no `DUCKSAFE_*` variable inherited.
pub(crate) fn run_sh(p: &Project, script: &str) -> std::process::Output {
    let bin_dir = p.path(".test-bin");
    if !bin_dir.exists() {
        fs::create_dir(&bin_dir).unwrap();
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_ducksafe"), bin_dir.join("ducksafe"))
            .unwrap();
    }
    support::command("sh")
        .arg("-c")
        .arg(script)
        .current_dir(p.dir.path())
        .env(
            "PATH",
            format!(
                "{}:{}",
                bin_dir.display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .env_remove("DUCKSAFE_CONFIG")
        .env_remove("DUCKSAFE_FAILPOINT")
        .env_remove("DUCKSAFE_NOW")
        .env_remove("DUCKSAFE_DB_PATH")
        .output()
        .unwrap()
}

fn runbook() -> String {
    fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/runbook.md")).unwrap()
}

/// The `n`th ```sh block of the runbook's section `heading` (up to the next heading of the same
/// or a higher level), without its indentation.
pub(crate) fn runbook_block(heading: &str, n: usize) -> String {
    let text = runbook();
    let level = heading.chars().take_while(|c| *c == '#').count();
    let mut lines = text.lines();
    assert!(
        lines.any(|l| l.trim_end() == heading),
        "no heading {heading:?} in docs/runbook.md"
    );
    let mut blocks: Vec<Vec<String>> = Vec::new();
    let mut open: Option<(usize, Vec<String>)> = None;
    for line in lines {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        match &mut open {
            None => {
                let hashes = line.chars().take_while(|c| *c == '#').count();
                if hashes > 0 && hashes <= level && line[hashes..].starts_with(' ') {
                    break;
                }
                if trimmed == "```sh" {
                    open = Some((indent, Vec::new()));
                }
            }
            Some((_, body)) if trimmed == "```" => {
                blocks.push(std::mem::take(body));
                open = None;
            }
            Some((indent, body)) => {
                body.push(line.get(*indent..).unwrap_or(line.trim_start()).to_owned());
            }
        }
    }
    blocks
        .get(n)
        .unwrap_or_else(|| panic!("{heading:?} has no sh block number {n}: {blocks:?}"))
        .join("\n")
}

/// The runbook's example values replaced by the project's.
pub(crate) fn localize(block: &str, p: &Project, id: &str) -> String {
    block
        .replace("/srv/sim/config.yaml", &p.config().display().to_string())
        .replace("/srv/sim/simulation.duckdb", &p.db().display().to_string())
        .replace("/srv/sim/backups", &p.backups().display().to_string())
        .replace("/srv/sim", &p.dir.path().display().to_string())
        .replace("simulation_20250818_143022", id)
}

/// The bytes of the database and of its WAL: what "nothing was installed" compares.
fn db_files(p: &Project) -> (String, Option<Vec<u8>>) {
    (
        sha256(&p.db()),
        fs::read(p.path("simulation.duckdb.wal")).ok(),
    )
}

/// A crashed run after a backup: a checkpointed change, then committed rows left in the WAL.
/// Returns the backup's id and path, and the database's files as the crash left them.
fn crashed(p: &Project) -> (String, PathBuf, (String, Option<Vec<u8>>)) {
    let (id, path) = backup(p);
    change_rows(&p.db());
    write_into_wal(&p.db(), "DELETE FROM employees;");
    let state = db_files(p);
    assert!(state.1.is_some());
    (id, path, state)
}

fn flip_a_byte(path: &Path) {
    let mut bytes = fs::read(path).unwrap();
    bytes[12_288 + 100] ^= 0xff;
    fs::write(path, &bytes).unwrap();
}

/// The journals in both quarantine locations, with their state.
fn journal_states(p: &Project) -> Vec<String> {
    let mut v = Vec::new();
    for root in [
        p.backups().join("quarantine"),
        p.path(".ducksafe-quarantine"),
    ] {
        for n in support::dir_names(&root) {
            if let Ok(b) = fs::read(root.join(&n).join("restore.json")) {
                let j: serde_json::Value = serde_json::from_slice(&b).unwrap();
                v.push(j["state"].as_str().unwrap().to_owned());
            }
        }
    }
    v
}

/// The hand restore, as the runbook gives it and as every pre_run prints it, over a crashed
/// run's WAL: the backup is in place, the crashed WAL is not beside it, and the replaced files
/// are in the `_manual` folder.
#[test]
fn runbook_restore_by_hand_installs_the_backup_and_moves_the_crashed_wal_aside() {
    let p = Project::new("");
    let (id, backup_path, before) = crashed(&p);
    let block = localize(
        &runbook_block("## Restore by hand (ducksafe unavailable)", 0),
        &p,
        &id,
    );
    let out = run_sh(&p, &block);
    assert!(out.status.success(), "{}", said(&out));
    assert!(said(&out).contains("restored "), "{}", said(&out));
    support::assert_restored(&p, &fingerprints(&backup_path));
    let q = support::dir_names(&p.backups().join("quarantine"));
    assert_eq!(q.len(), 1, "{q:?}");
    assert!(q[0].starts_with(&format!("{id}_manual_")), "{q:?}");
    let q = p.backups().join("quarantine").join(&q[0]);
    assert_eq!(sha256(&q.join("simulation.duckdb")), before.0);
    assert_eq!(fs::read(q.join("simulation.duckdb.wal")).ok(), before.1);
}

/// Issue 19, 1a: one byte flipped in the backup. `sha256sum -c` says FAILED and nothing after it
/// runs, in the runbook's block and in `rollback.manual` alike.
#[test]
fn the_manual_restore_stops_at_a_corrupt_backup() {
    let p = Project::new("");
    let (r, code) = p.pre_run();
    assert_eq!(code, 0, "{r:?}");
    let manual = r.rollback.unwrap().manual.join("\n");
    let id = r.backup.unwrap().id;
    change_rows(&p.db());
    write_into_wal(&p.db(), "DELETE FROM employees;");
    let before = db_files(&p);
    flip_a_byte(&p.backups().join(format!("{id}.duckdb")));
    let block = localize(
        &runbook_block("## Restore by hand (ducksafe unavailable)", 0),
        &p,
        &id,
    );
    for (name, script) in [("runbook", block), ("rollback.manual", manual)] {
        let out = run_sh(&p, &script);
        let text = said(&out);
        assert!(!out.status.success(), "{name}: {text}");
        assert!(
            text.contains("FAILED") && text.contains("STOPPED"),
            "{name}: {text}"
        );
        assert_eq!(db_files(&p), before, "{name}: nothing was installed");
        assert!(!p.path("simulation.duckdb.restoring").exists(), "{name}");
    }
}

/// Issue 19, 1b: the backup folder is read-only and a crashed run's WAL is beside the database.
/// The quarantine folder cannot be made: the block stops there, the database and its WAL are
/// as they were. The runbook's read-only alternative (`Q=` on the database's filesystem) then
/// restores.
#[test]
fn the_manual_restore_stops_at_a_read_only_backup_folder() {
    let p = Project::new("");
    let (r, code) = p.pre_run();
    assert_eq!(code, 0, "{r:?}");
    let manual = r.rollback.unwrap().manual.join("\n");
    let id = r.backup.unwrap().id;
    let backup_path = p.backups().join(format!("{id}.duckdb"));
    change_rows(&p.db());
    write_into_wal(&p.db(), "DELETE FROM employees;");
    let before = db_files(&p);
    let block = localize(
        &runbook_block("## Restore by hand (ducksafe unavailable)", 0),
        &p,
        &id,
    );
    let Some(_ro) = mounted("read-only backup folder", Mount::read_only(&p.backups())) else {
        return;
    };
    for (name, script) in [("runbook", &block), ("rollback.manual", &manual)] {
        let out = run_sh(&p, script);
        let text = said(&out);
        assert!(!out.status.success(), "{name}: {text}");
        assert!(
            text.contains("Read-only file system") && text.contains("STOPPED"),
            "{name}: {text}"
        );
        assert_eq!(db_files(&p), before, "{name}: nothing was installed");
    }
    // The alternative the runbook gives on the `Q=` line.
    let q_line = block
        .lines()
        .find(|l| l.starts_with("Q="))
        .expect("a Q= line");
    let alternative = q_line
        .split_once("# backup folder read-only? ")
        .expect("the read-only alternative in a comment on the Q= line")
        .1;
    let out = run_sh(&p, &block.replace(q_line, alternative));
    assert!(out.status.success(), "{}", said(&out));
    support::assert_restored(&p, &fingerprints(&backup_path));
    let q = support::dir_names(&p.path(".ducksafe-quarantine"));
    assert_eq!(q.len(), 1, "{q:?}");
    let q = p.path(".ducksafe-quarantine").join(&q[0]);
    assert_eq!(sha256(&q.join("simulation.duckdb")), before.0);
    assert_eq!(fs::read(q.join("simulation.duckdb.wal")).ok(), before.1);
}

/// The runbook's drill of an interrupted restore, at every restore failpoint: the abort, then
/// `ducksafe list` names the unfinished restore (once the journal exists), then the restore of
/// the same id finishes it, once, with undo lines that bring back the crashed database. The
/// moving-the-backup-directory check prints the block while it is unfinished, nothing after.
#[test]
fn runbook_interrupted_restore_drill_at_every_restore_failpoint() {
    let drill = runbook_block("## Drills: failpoints", 0);
    let check = runbook_block("### Moving the backup directory", 0);
    assert!(check.contains("ducksafe list"), "{check}");
    for point in [
        "restore.staged",
        "restore.intent",
        "restore.quarantined",
        "restore.renamed",
    ] {
        let p = Project::new("");
        let (id, backup_path, before) = crashed(&p);
        let steps: Vec<String> = localize(&drill, &p, &id)
            .replace("restore.quarantined", point)
            .lines()
            .map(str::to_owned)
            .collect();
        assert_eq!(steps.len(), 3, "{drill}");
        // The drill's first step aborts the restore there (and only there).
        let out = run_sh(&p, &steps[0]);
        assert!(
            !out.status.success() && said(&out).contains(&format!("failpoint `{point}`: aborting")),
            "{point}: {}",
            said(&out)
        );
        let journaled = point != "restore.staged";
        let listed = run_sh(&p, &steps[1]);
        let text = said(&listed);
        assert!(listed.status.success(), "{point}: {text}");
        assert_eq!(
            text.contains("UNFINISHED RESTORE"),
            journaled,
            "{point}: {text}"
        );
        let pending = run_sh(&p, &localize(&check, &p, &id));
        assert_eq!(
            String::from_utf8_lossy(&pending.stdout).contains("UNFINISHED RESTORE"),
            journaled,
            "{point}"
        );
        if journaled {
            assert!(
                text.contains(&format!("ducksafe restore {id}")) && text.contains("mv "),
                "{point}: the block names the finish command and the undo lines: {text}"
            );
            // validate and the dry run say it too, first.
            let v = p.run(&["validate"]);
            assert!(
                String::from_utf8_lossy(&v.stderr).contains("UNFINISHED RESTORE"),
                "{point}"
            );
            for args in [
                &["verify"][..],
                &["prune", "--dry-run"],
                &["pin", &id],
                &["delete", "--dry-run", &id],
            ] {
                let o = p.run(args);
                assert!(
                    String::from_utf8_lossy(&o.stderr)
                        .starts_with("ducksafe: warning: UNFINISHED RESTORE"),
                    "{point}: {args:?}: {}",
                    said(&o)
                );
            }
            let dry = p.run(&["restore", "--dry-run"]);
            let dry_text = said(&dry);
            assert!(
                dry_text.contains(&format!(
                    "would first finish the interrupted restore of `{id}`"
                )),
                "{point}: {dry_text}"
            );
        }
        let out = p.run(&["--json", "restore", &id]);
        assert!(out.status.success(), "{point}: {}", said(&out));
        let r: ducksafe::protocol::Response = serde_json::from_slice(&out.stdout).unwrap();
        support::assert_restored(&p, &fingerprints(&backup_path));
        let states = journal_states(&p);
        assert!(
            !states.is_empty() && states.iter().all(|s| s == "done"),
            "{point}: {states:?}"
        );
        let folders = support::dir_names(&p.backups().join("quarantine"));
        assert_eq!(
            folders.len(),
            1,
            "{point}: restored once, not twice: {folders:?}"
        );
        let pending = run_sh(&p, &localize(&check, &p, &id));
        assert!(pending.stdout.is_empty(), "{point}: {}", said(&pending));
        // The undo lines name the files that hold the crashed state.
        let undo = r.restore.unwrap().undo.join(" && ");
        let out = run_sh(&p, &undo);
        assert!(out.status.success(), "{point}: {undo}: {}", said(&out));
        assert_eq!(
            db_files(&p),
            before,
            "{point}: undo brings back the crashed run"
        );
    }
}

/// An interrupted restore undone instead of finished, with the lines `list --json` gives: the
/// database and its WAL are exactly as before the restore, and no later command finishes it.
#[test]
fn an_interrupted_restore_can_be_undone_with_the_listed_lines() {
    for point in ["restore.intent", "restore.quarantined", "restore.renamed"] {
        let p = Project::new("");
        let (id, _, before) = crashed(&p);
        support::abort_at(p.cmd(&["restore", &id]), point);
        let out = p.run(&["--json", "list"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let pending = &v["unfinished_restores"][0];
        assert_eq!(pending["backup_id"], id.as_str(), "{point}: {v}");
        let undo: Vec<&str> = pending["undo"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l.as_str().unwrap())
            .collect();
        let out = run_sh(&p, &undo.join(" && "));
        assert!(out.status.success(), "{point}: {undo:?}: {}", said(&out));
        assert_eq!(db_files(&p), before, "{point}");
        let out = p.run(&["list"]);
        assert!(!said(&out).contains("UNFINISHED"), "{point}");
        let (r, code) = p.pre_run();
        assert_eq!(code, 0, "{point}: {r:?}");
        assert!(
            r.warnings
                .iter()
                .all(|w| !w.contains("interrupted restore")),
            "{point}: {:?}",
            r.warnings
        );
        assert_eq!(
            db_files(&p).0,
            before.0,
            "{point}: the undone restore is not finished later"
        );
    }
}

/// The runbook's undo procedures: the printed lines, and the one-liner that rebuilds them from
/// the journal, give the same commands, and running them brings back the replaced database.
#[test]
fn runbook_undo_lines_and_the_journal_one_liner_agree() {
    let p = Project::new("");
    let (id, _, before) = crashed(&p);
    let out = p.run(&["--json", "restore", &id]);
    assert!(out.status.success(), "{}", said(&out));
    let r: ducksafe::protocol::Response = serde_json::from_slice(&out.stdout).unwrap();
    let restore = r.restore.unwrap();
    let folder = Path::new(&restore.quarantine)
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let block = localize(&runbook_block("## Undo a restore", 1), &p, &id)
        .replace("simulation_20250818_150511_restore", &folder);
    let out = run_sh(&p, &block);
    assert!(out.status.success(), "{}", said(&out));
    let rebuilt: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("mv -f"))
        .map(str::to_owned)
        .collect();
    assert_eq!(rebuilt, restore.undo);
    assert!(
        restore.undo[0].ends_with("simulation.duckdb"),
        "the database first: {:?}",
        restore.undo
    );
    let out = run_sh(&p, &rebuilt.join("\n"));
    assert!(out.status.success(), "{}", said(&out));
    assert_eq!(db_files(&p), before);
}

/// Issue 19, 3: the staged copy of an interrupted restore is deleted by hand. Whether the
/// database's main file happens to equal the backup or not, the next command decides by the
/// files' identities (the database was not switched), not by bytes: it rolls the restore back
/// to the exact previous state and says so, with the journal's path.
#[test]
fn an_interrupted_restore_that_lost_its_staged_copy_is_rolled_back_whatever_its_bytes() {
    for checkpointed_change in [true, false] {
        let p = Project::new("");
        let (id, _) = backup(&p);
        if checkpointed_change {
            change_rows(&p.db());
        }
        write_into_wal(&p.db(), "DELETE FROM employees;");
        let before = db_files(&p);
        support::abort_at(p.cmd(&["restore", &id]), "restore.quarantined");
        remove_staged_copies(&p);
        let listed = p.run(&["list"]);
        assert!(
            said(&listed).contains("its staged copy is gone"),
            "{}",
            said(&listed)
        );
        let (r, code) = p.pre_run();
        assert_eq!(code, 0, "{checkpointed_change}: {r:?}");
        assert!(
            r.warnings
                .iter()
                .any(|w| w.contains("rolled back") && w.contains("restore.json")),
            "{checkpointed_change}: {:?}",
            r.warnings
        );
        assert_eq!(db_files(&p), before, "{checkpointed_change}");
        assert_eq!(journal_states(&p), ["rolled_back"], "{checkpointed_change}");
    }
}

/// Deletes the staged copy an interrupted restore left beside the database, as an operator
/// cleaning up by hand would; there must be exactly one, or the case proves nothing.
fn remove_staged_copies(p: &Project) {
    let staged: Vec<String> = support::dir_names(p.dir.path())
        .into_iter()
        .filter(|n| n.starts_with(".ducksafe-tmp-restore-"))
        .collect();
    assert_eq!(staged.len(), 1, "one staged copy to lose: {staged:?}");
    fs::remove_file(p.path(&staged[0])).unwrap();
}

/// Issue 19, 4: a restore onto a full disk is `insufficient_space` (73) with the staging path,
/// as the runbook's "Restore failed" table says, and changes nothing.
#[test]
fn a_restore_onto_a_full_disk_is_refused_as_the_runbook_says() {
    let root = tempfile::tempdir().unwrap();
    let Some(_fs) = mounted(
        "restore onto a full disk",
        Mount::tmpfs(root.path(), 64 << 20, 0o700),
    ) else {
        return;
    };
    let dir = tempfile::tempdir_in(root.path()).unwrap();
    ducksafe::demo::create_sized(&dir.path().join("simulation.duckdb"), 300, 1500).unwrap();
    let p = Project { dir };
    p.write_config("DB_PATH: simulation.duckdb\nLOG_LEVEL: INFO\nBACKUP_MIN_FREE_BYTES: 0\n");
    let (id, _, before) = crashed(&p);
    let db_bytes = fs::metadata(p.db()).unwrap().len();
    let free = ducksafe::files::fs_space(p.dir.path())
        .unwrap()
        .available_bytes;
    let filler = vec![0u8; usize::try_from(free - db_bytes / 2).unwrap()];
    fs::write(p.path("filler"), filler).unwrap();
    let out = p.run(&["--json", "restore", &id]);
    assert_exit(&out, 73);
    let r: ducksafe::protocol::Response = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r.errors[0].code, ErrorCode::InsufficientSpace);
    assert!(
        r.errors[0]
            .message
            .starts_with("cannot stage the restore at"),
        "{}",
        r.errors[0].message
    );
    assert_eq!(db_files(&p), before);
    assert!(journal_states(&p).is_empty());
    assert!(
        runbook().contains("| `insufficient_space` (73), message ``cannot stage the restore at")
    );
    assert!(runbook().contains("**plus one database size free**"));
}

/// Issue 19, 4: a read-only backup filesystem is no permission problem: `backup_failed` with a
/// remount hint, not `backup_dir_unsafe` with a chmod hint.
#[test]
fn a_read_only_backup_filesystem_is_named_as_such() {
    let p = Project::new("");
    backup(&p);
    let Some(_ro) = mounted(
        "read-only backup filesystem",
        Mount::read_only(&p.backups()),
    ) else {
        return;
    };
    let (r, code) = p.pre_run();
    assert_eq!(code, 73, "{r:?}");
    assert_eq!(r.errors[0].code, ErrorCode::BackupFailed, "{r:?}");
    assert!(
        r.errors[0].message.contains("read-only filesystem"),
        "{r:?}"
    );
    let hint = r.errors[0].hint.clone().unwrap();
    assert!(
        hint.contains("remount") && hint.contains("no chmod"),
        "{hint}"
    );
    assert!(runbook().contains("is on a read-only filesystem: no backup can be written there"));
}

/// Issue 19, 4: what the runbook promises of three messages.
#[test]
fn messages_say_what_happened() {
    // A lost database: the hint points at `ducksafe restore`.
    let p = Project::new("");
    let (id, _) = backup(&p);
    let kept = p.path("kept.duckdb");
    fs::rename(p.db(), &kept).unwrap();
    let (r, code) = p.pre_run();
    assert_eq!(code, 66, "{r:?}");
    assert!(
        r.errors[0]
            .hint
            .as_deref()
            .unwrap()
            .contains("`ducksafe restore`"),
        "{r:?}"
    );
    fs::rename(&kept, p.db()).unwrap();
    // A backup deleted by hand: its orphaned manifest is not "left by an interrupted run".
    fs::remove_file(p.backups().join(format!("{id}.duckdb"))).unwrap();
    let (r, code) = p.pre_run();
    assert_eq!(code, 0, "{r:?}");
    let note = r
        .warnings
        .iter()
        .find(|w| w.contains(&format!("{id}.manifest.json")))
        .unwrap_or_else(|| panic!("{:?}", r.warnings));
    assert!(
        note.contains("deleted by hand") && !note.contains("interrupted"),
        "{note}"
    );
    // Somebody has the database open: not said to be "a run still writing".
    let holder = hold(&p.db());
    let out = p.run(&["restore"]);
    assert_exit(&out, 75);
    let text = said(&out);
    assert!(
        !text.contains("still writing") && text.contains("has the database open"),
        "{text}"
    );
    drop(holder);
}

/// The runbook documents every failpoint its drills can use.
#[test]
fn the_runbook_documents_every_failpoint() {
    let text = runbook();
    assert!(text.contains("DUCKSAFE_FAILPOINT"));
    for point in ducksafe::failpoint::ALL {
        assert!(
            text.contains(&format!("| `{point}` |")),
            "failpoint `{point}` is missing from the runbook's drill table"
        );
    }
}

/// The runbook's two restore commands, as written, over a crashed run: the output is the
/// documented one (what, from which backup, where the replaced files went, how to undo).
#[test]
fn runbook_restore_commands_work_as_written() {
    for heading in ["## Restore the latest backup", "## Restore a given backup"] {
        let p = Project::new("");
        let (id, backup_path, _) = crashed(&p);
        let out = run_sh(&p, &localize(&runbook_block(heading, 0), &p, &id));
        let text = said(&out);
        assert!(out.status.success(), "{heading}: {text}");
        assert!(
            text.contains(&format!(
                "restored `{}` from backup `{id}`",
                p.db().display()
            )) && text.contains("the replaced files are in")
                && text.contains("to undo this restore"),
            "{heading}: {text}"
        );
        support::assert_restored(&p, &fingerprints(&backup_path));
    }
}

/// An interrupted restore whose journal sits where this configuration does not look (another
/// `QUARANTINE_DIR` then, a project moved since) is found through the marker beside the
/// database: backups, restores and `adopt` refuse and change nothing, so the staged copy it
/// still needs is never swept and the database without its WAL is never backed up. With the
/// configuration it started with, it completes, and everything goes on.
#[test]
fn an_interrupted_restore_is_found_from_beside_the_database() {
    let p = Project::new("");
    let (r, code) = p.pre_run();
    assert_eq!(code, 0, "{r:?}");
    let id = r.backup.unwrap().id;
    write_into_wal(&p.db(), "CREATE TABLE crashed_run AS SELECT 1 AS x;");
    let q1 = p.path("q1");
    let mut c = p.cmd(&["restore", &id]);
    c.env("DUCKSAFE_QUARANTINE_DIR", &q1);
    support::abort_at(c, "restore.quarantined");
    let staged: Vec<String> = support::dir_names(p.dir.path())
        .into_iter()
        .filter(|n| n.starts_with(".ducksafe-tmp-restore-"))
        .collect();
    assert_eq!(staged.len(), 1, "{staged:?}");
    let backups_before = support::dir_names(&p.backups());
    // Reported first by list and validate, with the way to finish it.
    let out = p.run(&["list"]);
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("UNFINISHED RESTORE")
            && text.contains(&format!("QUARANTINE_DIR={}", q1.display())),
        "{text}"
    );
    let out = p.run(&["validate", "--json"]);
    let r = support::one_response(&out);
    assert!(
        r.reason.contains("unfinished") || r.warnings.iter().any(|w| w.contains("UNFINISHED")),
        "{r:?}"
    );
    let (r, code) = p.pre_run();
    assert_eq!(code, 74, "{r:?}");
    assert!(
        r.errors[0].message.contains("unfinished restore"),
        "{:?}",
        r.errors
    );
    assert_eq!(
        support::dir_names(&p.backups()),
        backups_before,
        "a backup was taken"
    );
    assert!(
        p.dir.path().join(&staged[0]).exists(),
        "the staged copy was swept"
    );
    let out = p.run(&["restore", &id]);
    assert_exit(&out, 74);
    // With the configuration it started with, the restore completes.
    let out = p
        .cmd(&["restore", &id])
        .env("DUCKSAFE_QUARANTINE_DIR", &q1)
        .output()
        .unwrap();
    support::assert_ok(&out);
    assert!(!p.path("simulation.duckdb.wal").exists());
    assert!(
        !p.path(".simulation.duckdb.ducksafe-restore").exists(),
        "the marker stays"
    );
    let (r, code) = p.pre_run();
    assert_eq!(code, 0, "{r:?}");
}

/// A restore interrupted after its last step (the backup renamed into place, the journal still
/// open), then a run that used the database: the next command closes the journal and keeps the
/// later run's work (the restore was done; what came after is not undone), and says so.
#[test]
fn a_restore_cut_after_its_switch_is_closed_and_later_work_kept() {
    let p = Project::new("");
    let (r, code) = p.pre_run();
    assert_eq!(code, 0, "{r:?}");
    let id = r.backup.unwrap().id;
    write_into_wal(&p.db(), "CREATE TABLE crashed_run AS SELECT 1 AS x;");
    support::abort_at(p.cmd(&["restore", &id]), "restore.renamed");
    // A later run uses the restored database.
    let d = Db::open_read_write(&p.db(), &Limits::default()).unwrap();
    d.execute_batch("CREATE TABLE later_run AS SELECT 2 AS y; CHECKPOINT;")
        .unwrap();
    d.close().unwrap();
    let out = p.run(&["list"]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(text.contains("was put in place"), "{text}");
    let (r, code) = p.pre_run();
    assert_eq!(code, 0, "the next run was blocked: {r:?}");
    let tables: Vec<String> = fingerprints(&p.db()).into_iter().map(|(t, _)| t).collect();
    assert!(tables.iter().any(|t| t == "main.later_run"), "{tables:?}");
    assert!(
        !tables.iter().any(|t| t == "main.crashed_run"),
        "{tables:?}"
    );
    let (r, code) = p.pre_run();
    assert_eq!(code, 0, "{r:?}");
    assert!(
        !r.warnings.iter().any(|w| w.contains("UNFINISHED")),
        "the journal stayed open: {:?}",
        r.warnings
    );
}

/// A restore journal deleted by hand while its marker stays: `list` and `validate` say so first,
/// every backup refuses with the way out, and the way out (the WAL back beside the database,
/// the marker removed) works.
#[test]
fn a_lost_journal_is_said_first_with_its_way_out() {
    let p = Project::new("");
    let (id, _) = backup(&p);
    write_into_wal(&p.db(), "CREATE TABLE crashed_run AS SELECT 1 AS x;");
    support::abort_at(p.cmd(&["restore", &id]), "restore.quarantined");
    let q = p.backups().join("quarantine");
    let folder = q.join(&support::dir_names(&q)[0]);
    fs::remove_file(folder.join("restore.json")).unwrap();
    let out = p.run(&["list"]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(text.contains("UNFINISHED RESTORE recorded in"), "{text}");
    let r = support::one_response(&p.run(&["validate", "--json"]));
    assert!(r.warnings.iter().any(|w| w.contains("UNFINISHED")), "{r:?}");
    let (r, code) = p.pre_run();
    assert_eq!(code, 74, "{r:?}");
    let marker = p.path(".simulation.duckdb.ducksafe-restore");
    assert!(
        r.errors[0]
            .message
            .contains(&format!("rm {}", marker.display())),
        "{:?}",
        r.errors
    );
    // The way out, as the message gives it.
    fs::rename(
        folder.join("simulation.duckdb.wal"),
        p.path("simulation.duckdb.wal"),
    )
    .unwrap();
    fs::remove_file(&marker).unwrap();
    let (r, code) = p.pre_run();
    assert_eq!(code, 0, "{r:?}");
}

/// The error code of a failed `--json` command.
fn error_code(out: &std::process::Output) -> String {
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", said(out)));
    v["errors"][0]["code"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// A guarded run in progress, recorded by a process that is neither the caller nor its parent
/// (PID 1 lives as long as the machine).
fn lease_of_another_run(p: &Project) {
    fs::write(
        p.backups().join(ducksafe::engine::lease::NAME),
        format!(
            r#"{{"pid":1,"start":{},"backup_id":"x","since":"2026-01-01T00:00:00Z"}}"#,
            ducksafe::files::process_start(1).unwrap()
        ),
    )
    .unwrap();
}

/// The owner file of the backup directory, rewritten to name another database.
fn owned_by_another_database(p: &Project) {
    let owner = p.backups().join(ducksafe::engine::identity::OWNER_FILE);
    let mut v: serde_json::Value = serde_json::from_slice(&fs::read(&owner).unwrap()).unwrap();
    v["database"] = serde_json::json!(p.path("other/simulation.duckdb"));
    fs::write(&owner, serde_json::to_vec(&v).unwrap()).unwrap();
}

/// What a refusal case leaves held while both runs are made (a lock, a holder process).
type Held = Option<Box<dyn std::any::Any>>;
/// Prepares a project whose backup `id` exists: the arguments a restore gets, what stays held.
type Setup = fn(&Project, &str) -> (Vec<String>, Held);
/// (what, the error code expected, the setup).
type Refusal = (&'static str, &'static str, Setup);
/// Runs the command under test on a project with the setup's arguments, for real or as a dry
/// run: its exit code and the first error's code.
type Answer = dyn Fn(&Project, &[String], bool) -> (i32, String);

/// The refusals a backup and a restore share.
fn refusals_of_both() -> Vec<Refusal> {
    vec![
        ("a symlinked DB_PATH", "database_invalid", |p, _| {
            fs::rename(p.db(), p.path("real.duckdb")).unwrap();
            std::os::unix::fs::symlink("real.duckdb", p.db()).unwrap();
            (Vec::new(), None)
        }),
        (
            "another database's backup directory",
            "backup_dir_unsafe",
            |p, _| {
                owned_by_another_database(p);
                (Vec::new(), None)
            },
        ),
        (
            "a quarantine folder open to everyone",
            "backup_dir_unsafe",
            |p, _| {
                let q = p.backups().join("quarantine");
                fs::create_dir(&q).unwrap();
                fs::set_permissions(&q, fs::Permissions::from_mode(0o777)).unwrap();
                (Vec::new(), None)
            },
        ),
        (
            "another ducksafe at work in the directory",
            "lock_busy",
            |p, _| {
                let lock = ducksafe::engine::lock::DirLock::acquire(&p.backups()).unwrap();
                (Vec::new(), Some(Box::new(lock)))
            },
        ),
        ("a guarded run in progress", "lock_busy", |p, _| {
            lease_of_another_run(p);
            (Vec::new(), None)
        }),
        (
            "an interrupted restore that cannot be rolled back",
            "restore_failed",
            |p, id| {
                write_into_wal(&p.db(), "DELETE FROM employees;");
                let mut c = p.cmd(&["restore", id]);
                c.env("DUCKSAFE_FAILPOINT", "restore.quarantined");
                assert_eq!(c.output().unwrap().status.code(), None);
                remove_staged_copies(p);
                // A WAL appeared beside the database since: its quarantined namesake cannot go back.
                write_into_wal(&p.db(), "DELETE FROM fct_yearly_events;");
                (Vec::new(), None)
            },
        ),
        (
            "a restore recorded in a journal that is gone",
            "restore_failed",
            |p, _| {
                fs::write(
                    p.path(".simulation.duckdb.ducksafe-restore"),
                    br#"{"journal":"/nonexistent/q/restore.json"}"#,
                )
                .unwrap();
                (Vec::new(), None)
            },
        ),
    ]
}

/// Runs every case twice on a fresh project with one backup, the dry run first: `run(p, args,
/// dry)` answers the exit code and the first error's code. Both must refuse with `code`, and
/// the dry run must leave every byte as it was.
fn same_refusals(cases: Vec<Refusal>, run: &Answer) {
    for (what, code, setup) in cases {
        let p = Project::new("");
        let (id, _) = backup(&p);
        change_rows(&p.db());
        let (args, held) = setup(&p, &id);
        let before = every_byte(p.dir.path());
        let dry = run(&p, &args, true);
        assert_eq!(
            every_byte(p.dir.path()),
            before,
            "{what}: the dry run changed files"
        );
        let real = run(&p, &args, false);
        drop(held);
        assert_eq!(real.1, code, "{what}: the real run answered {real:?}");
        assert_eq!(dry, real, "{what}: the dry run answered otherwise");
    }
}

/// Issue 10: `restore --dry-run` is the restore itself with nothing written, so every refusal
/// of the restore is a refusal of its dry run, with the same code, and the dry run changes not
/// one byte, the directory lock included.
#[test]
fn every_refusal_of_a_restore_is_a_refusal_of_its_dry_run() {
    let mut cases = refusals_of_both();
    cases.extend::<Vec<Refusal>>(vec![
        (
            "a reader has the database open",
            "database_locked",
            |p, _| (Vec::new(), Some(Box::new(support::hold_reader(&p.db())))),
        ),
        (
            "a backup other than the one expected",
            "restore_failed",
            |_, id| {
                let args = [id, "--expect-sha256", &"0".repeat(64)];
                (args.map(str::to_owned).to_vec(), None)
            },
        ),
        ("a truncated backup", "verification_failed", |p, id| {
            let f = fs::OpenOptions::new()
                .write(true)
                .open(p.backups().join(format!("{id}.duckdb")))
                .unwrap();
            f.set_len(20_000).unwrap();
            (Vec::new(), None)
        }),
        (
            "a damaged backup of the right size",
            "verification_failed",
            |p, id| {
                flip_a_byte(&p.backups().join(format!("{id}.duckdb")));
                (Vec::new(), None)
            },
        ),
        // A byte that DuckDB's open does not read: only its SHA-256 tells.
        (
            "a backup with one wrong byte in its last block",
            "verification_failed",
            |p, id| {
                let path = p.backups().join(format!("{id}.duckdb"));
                let mut bytes = fs::read(&path).unwrap();
                let at = bytes.len() - 100;
                bytes[at] ^= 0xff;
                fs::write(&path, &bytes).unwrap();
                (Vec::new(), None)
            },
        ),
        ("an unknown backup", "backup_not_found", |_, _| {
            (vec!["nope".into()], None)
        }),
        ("`latest` naming no backup", "backup_not_found", |p, _| {
            fs::remove_file(p.backups().join("latest.duckdb")).unwrap();
            std::os::unix::fs::symlink("gone.duckdb", p.backups().join("latest.duckdb")).unwrap();
            (Vec::new(), None)
        }),
        ("no backup directory", "backup_not_found", |p, _| {
            fs::remove_dir_all(p.backups()).unwrap();
            (Vec::new(), None)
        }),
    ]);
    same_refusals(cases, &|p, args, dry| {
        let mut a = vec!["--json", "restore"];
        a.extend(args.iter().map(String::as_str));
        if dry {
            a.push("--dry-run");
        }
        let out = p.run(&a);
        (out.status.code().unwrap_or(-1), error_code(&out))
    });
}

/// Issue 10: a pre_run dry run is the backup's own path with nothing written (see
/// `engine::backup`), so every refusal of the backup is a refusal of its dry run, with the same
/// code, and the dry run changes not one byte.
#[test]
fn every_refusal_of_a_backup_is_a_refusal_of_its_dry_run() {
    let mut cases = refusals_of_both();
    cases.extend::<Vec<Refusal>>(vec![
        ("no database", "database_not_found", |p, _| {
            fs::remove_file(p.db()).unwrap();
            (Vec::new(), None)
        }),
        ("a file that is no database", "database_invalid", |p, _| {
            fs::write(p.db(), vec![b'x'; 20_000]).unwrap();
            (Vec::new(), None)
        }),
        ("a backup directory open to everyone", "backup_dir_unsafe", |p, _| {
            fs::set_permissions(p.backups(), fs::Permissions::from_mode(0o777)).unwrap();
            (Vec::new(), None)
        }),
        ("a writer has the database open", "database_locked", |p, _| {
            (Vec::new(), Some(Box::new(hold(&p.db()))))
        }),
        ("a damaged database", "database_damaged", |p, _| {
            flip_a_byte(&p.db());
            (Vec::new(), None)
        }),
        ("not enough free space", "insufficient_space", |p, _| {
            p.write_config(
                "DB_PATH: simulation.duckdb\nLOG_LEVEL: INFO\nBACKUP_MIN_FREE_BYTES: 1000000000000000000\n",
            );
            (Vec::new(), None)
        }),
    ]);
    same_refusals(cases, &|p, _, dry| {
        let (r, exit) = p.hook(&format!(
            r#"{{"protocol_version":1,"event":"pre_run","dry_run":{dry},"config":{{"path":"{}"}}}}"#,
            p.config().display()
        ));
        let code = r
            .errors
            .first()
            .map(|e| serde_json::to_value(e.code).unwrap())
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        (exit, code)
    });
}

/// Issue 10: a backup directory open to others that ducksafe may not tighten (here: on a
/// read-only filesystem) is said in every response, with the command that fixes it, and is
/// left as it is.
#[test]
fn a_backup_dir_that_cannot_be_tightened_is_said_in_every_response() {
    let p = Project::new("");
    let (id, _) = backup(&p);
    fs::set_permissions(p.backups(), fs::Permissions::from_mode(0o755)).unwrap();
    let Some(_ro) = mounted(
        "read-only backup filesystem",
        Mount::read_only(&p.backups()),
    ) else {
        return;
    };
    let said_it = |warnings: &[String]| {
        warnings.iter().any(|w| {
            w.contains(&format!("`{}` is 0755", p.backups().display()))
                && w.contains("cannot make it 0700 (it is on a read-only filesystem)")
                && w.contains("chmod 700")
        })
    };
    let config = p.config().display().to_string();
    for (event, extra) in [
        ("validate", String::new()),
        ("pre_run", String::new()),
        (
            "post_run",
            format!(r#","backup_id":"{id}","run":{{"outcome":"failure"}},"on_failure":"restore""#),
        ),
    ] {
        let (r, _) = p.hook(&format!(
            r#"{{"protocol_version":1,"event":"{event}","config":{{"path":"{config}"}}{extra}}}"#
        ));
        assert!(said_it(&r.warnings), "{event}: {r:?}");
    }
    let out = p.run(&["--json", "list"]);
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let warnings: Vec<String> = serde_json::from_value(listed["warnings"].clone()).unwrap();
    assert!(said_it(&warnings), "list: {listed}");
    let mode = fs::metadata(p.backups()).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o755);
}
