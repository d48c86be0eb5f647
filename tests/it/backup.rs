//! The pre-run hook and `ducksafe backup`, end to end: the real binary on real DuckDB files.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use crate::support::{
    self, assert_exit, assert_ok, fingerprints, hold, sha256, write_into_wal, Project,
};
use ducksafe::engine::manifest::Manifest;
use ducksafe::protocol::{Decision, ErrorCode, Status};

#[test]
fn pre_run_proceeds_with_a_verified_backup_and_rollback_instructions() {
    let p = Project::new("");
    let before = sha256(&p.db());
    let (r, code) = p.pre_run();
    assert_eq!(code, 0, "{r:?}");
    assert_eq!(r.status, Status::Ok);
    assert_eq!(r.decision, Decision::Proceed);
    let b = r.backup.expect("backup in the response");
    assert!(b.verified);
    assert_eq!(
        b.verification,
        vec![
            "size",
            "sha256",
            "block_checksums",
            "open",
            "row_counts",
            "fingerprints"
        ]
    );
    assert!(b.id.starts_with("simulation_"));
    let path = std::path::Path::new(&b.path);
    assert_eq!(sha256(path), b.sha256);
    assert_eq!(fs::metadata(path).unwrap().len(), b.bytes);
    // A byte-exact copy of an idle database, and the source is untouched.
    assert_eq!(b.sha256, before);
    assert_eq!(sha256(&p.db()), before);
    assert_eq!(fingerprints(path), fingerprints(&p.db()));

    let rb = r.rollback.expect("rollback instructions");
    assert_eq!(rb.backup_id, b.id);
    assert_eq!(rb.command[1..3], ["restore".to_owned(), b.id.clone()]);
    assert_eq!(rb.request["event"], "post_run");
    assert_eq!(rb.request["backup_id"], b.id.as_str());
    assert!(
        rb.manual
            .iter()
            .any(|s| s.contains("\"$DB.wal\" \"$DB.wal.checkpoint\" \"$DB.wal.recovery\"")),
        "manual steps move the WAL aside: {:?}",
        rb.manual
    );

    // Manifest and sha256sum sidecar beside the backup.
    let m = Manifest::read(&p.backups().join(format!("{}.manifest.json", b.id))).unwrap();
    assert_eq!(m.sha256, b.sha256);
    assert_eq!(m.tables.len(), 3);
    assert_eq!(m.tables[0].rows, Some(300));
    assert_eq!(m.tables[2].rows, Some(1500));
    assert_eq!(m.total_rows(), Some(300 + 1500 + m.tables[1].rows.unwrap()));
    assert!(m.storage_version >= 64);
    assert!(m.duckdb_version.starts_with('v'));
    let side = fs::read_to_string(p.backups().join(format!("{}.duckdb.sha256", b.id))).unwrap();
    assert_eq!(side, format!("{}  {}.duckdb\n", b.sha256, b.id));
    let ok = support::command("sha256sum")
        .args(["-c", &format!("{}.duckdb.sha256", b.id)])
        .current_dir(p.backups())
        .output()
        .unwrap();
    assert!(ok.status.success(), "sha256sum -c accepts the sidecar");

    // latest.duckdb is a relative symlink to it, so the seed's `cp` recovery keeps working.
    let target = fs::read_link(p.backups().join("latest.duckdb")).unwrap();
    assert_eq!(target.to_str().unwrap(), format!("{}.duckdb", b.id));
}

#[test]
fn committed_rows_that_live_only_in_the_wal_are_in_the_backup() {
    let p = Project::new("");
    write_into_wal(
        &p.db(),
        "CREATE TABLE late_hires AS SELECT range AS id FROM range(1000); \
         INSERT INTO employees SELECT * FROM employees LIMIT 25;",
    );
    let wal = p.path("simulation.duckdb.wal");
    let wal_before = fs::read(&wal).unwrap();
    let main_before = sha256(&p.db());
    let expected = fingerprints(&p.db()); // a read-only open replays the WAL in memory

    let (r, code) = p.pre_run();
    assert_eq!(code, 0, "{r:?}");
    let b = r.backup.unwrap();
    let backup = std::path::Path::new(&b.path);
    assert_eq!(
        fingerprints(backup),
        expected,
        "the backup holds what the WAL held"
    );
    assert!(expected
        .iter()
        .any(|(t, f)| t == "main.late_hires" && f.rows == 1000));
    // One self-contained file: no WAL beside the backup.
    assert!(!p.backups().join(format!("{}.duckdb.wal", b.id)).exists());
    let m = Manifest::read(&p.backups().join(format!("{}.manifest.json", b.id))).unwrap();
    assert!(m.source.wal_folded);
    assert_eq!(m.source.wal_bytes, wal_before.len() as u64);
    // The source was only read: its main file and its WAL are byte for byte what they were.
    assert_eq!(sha256(&p.db()), main_before);
    assert_eq!(fs::read(&wal).unwrap(), wal_before);
}

#[test]
fn a_database_held_by_a_writer_is_refused_with_its_pid_and_nothing_is_written() {
    let p = Project::new("");
    let holder = hold(&p.db());
    let (r, code) = p.pre_run();
    assert_eq!(code, 75);
    assert_eq!(r.decision, Decision::Abort);
    assert_eq!(r.errors[0].code, ErrorCode::DatabaseLocked);
    assert!(r.errors[0].retryable);
    assert!(
        r.errors[0]
            .message
            .contains(&format!("PID {}", holder.pid())),
        "{}",
        r.errors[0].message
    );
    assert!(p.backup_files().is_empty());
    drop(holder);
    let (r, code) = p.pre_run();
    assert_eq!(code, 0, "succeeds once the writer is gone: {r:?}");
}

#[test]
fn eight_runs_with_keep_last_three_leave_three_private_backups_and_latest_on_the_newest() {
    let p = Project::new("BACKUP_KEEP_LAST: 3\n");
    let mut ids = Vec::new();
    for i in 0..8 {
        let now = format!("2025-08-18T14:{:02}:00Z", 10 + i);
        let (r, code) = p.pre_run_env(&[("DUCKSAFE_NOW", &now)]);
        assert_eq!(code, 0, "{r:?}");
        let rot = r.rotation.unwrap();
        if i >= 3 {
            assert_eq!(rot.deleted.len(), 1, "run {i}: {rot:?}");
            assert!(rot.deleted[0].reason.contains("BACKUP_KEEP_LAST=3"));
        }
        ids.push(r.backup.unwrap().id);
    }
    assert_eq!(ids[0], "simulation_20250818_141000");
    let files = p.backup_files();
    assert_eq!(files.len(), 3, "{files:?}");
    let newest = ids.last().unwrap();
    assert_eq!(
        fs::read_link(p.backups().join("latest.duckdb")).unwrap(),
        std::path::PathBuf::from(format!("{newest}.duckdb"))
    );
    let dir_mode = fs::metadata(p.backups()).unwrap().permissions().mode() & 0o777;
    assert_eq!(dir_mode, 0o700);
    for e in p.backup_dir_entries() {
        let path = p.backups().join(&e);
        let meta = fs::symlink_metadata(&path).unwrap();
        if meta.is_file() {
            assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{e}");
        }
    }
    // Only the three newest remain, with their manifests and sidecars.
    for id in &ids[5..] {
        assert!(p.backups().join(format!("{id}.manifest.json")).exists());
        assert!(p.backups().join(format!("{id}.duckdb.sha256")).exists());
    }
    for id in &ids[..5] {
        assert!(!p.backups().join(format!("{id}.manifest.json")).exists());
    }
}

#[test]
fn two_backups_in_one_second_get_distinct_names() {
    let p = Project::new("");
    let env = [("DUCKSAFE_NOW", "2025-08-18T14:30:22Z")];
    let (a, _) = p.pre_run_env(&env);
    let (b, _) = p.pre_run_env(&env);
    assert_eq!(a.backup.unwrap().id, "simulation_20250818_143022");
    assert_eq!(b.backup.unwrap().id, "simulation_20250818_143022_2");
}

#[test]
fn a_backup_killed_midway_leaves_no_file_under_a_backup_name_and_the_next_run_cleans_up() {
    let p = Project::new("");
    for point in [
        "snapshot.copied",
        "snapshot.synced",
        "backup.verified",
        "publish.manifest",
        "publish.sidecar",
    ] {
        support::abort_at(p.cmd(&["pre-run"]), point);
        assert!(
            p.backup_files().is_empty(),
            "{point}: {:?}",
            p.backup_dir_entries()
        );
        assert!(!p.backups().join("latest.duckdb").exists());
    }
    let leftovers: Vec<String> = p
        .backup_dir_entries()
        .into_iter()
        .filter(|n| {
            n.starts_with(".ducksafe-tmp-")
                || n.ends_with(".manifest.json")
                || n.ends_with(".sha256")
        })
        .collect();
    assert!(!leftovers.is_empty(), "the kills left something to clean");
    let (r, code) = p.pre_run();
    assert_eq!(code, 0, "{r:?}");
    assert!(
        r.warnings.iter().any(|w| w.contains("interrupted run")),
        "{:?}",
        r.warnings
    );
    let entries = p.backup_dir_entries();
    assert!(
        entries.iter().all(|n| !n.starts_with(".ducksafe-tmp-")),
        "{entries:?}"
    );
    assert_eq!(p.backup_files().len(), 1);
    assert_eq!(
        entries
            .iter()
            .filter(|n| n.ends_with(".manifest.json"))
            .count(),
        1,
        "{entries:?}"
    );
}

#[test]
fn a_backup_killed_after_publication_still_leaves_a_verified_backup() {
    let p = Project::new("");
    support::abort_at(p.cmd(&["pre-run"]), "publish.renamed");
    assert_eq!(p.backup_files().len(), 1);
    let out = p.run(&["verify", "--all"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let (r, code) = p.pre_run();
    assert_eq!(code, 0, "{r:?}");
    assert_eq!(p.backup_files().len(), 2);
}

#[test]
fn not_enough_space_is_refused_before_writing() {
    let p = Project::new("");
    p.write_config("DB_PATH: simulation.duckdb\nLOG_LEVEL: INFO\nBACKUP_MIN_FREE_BYTES: 18446744073709551615\n");
    let (r, code) = p.pre_run();
    assert_eq!(code, 73);
    assert_eq!(r.errors[0].code, ErrorCode::InsufficientSpace);
    assert!(p.backup_files().is_empty());
    assert!(p
        .backup_dir_entries()
        .iter()
        .all(|n| !n.starts_with(".ducksafe-tmp-")));
}

#[test]
fn a_mistyped_db_path_is_reported_and_never_created() {
    let p = Project::new("");
    p.write_config("DB_PATH: simulaton.duckdb\nLOG_LEVEL: INFO\n");
    let (r, code) = p.pre_run();
    assert_eq!(code, 66);
    assert_eq!(r.errors[0].code, ErrorCode::DatabaseNotFound);
    assert!(!p.path("simulaton.duckdb").exists());
    assert!(!p.path("simulaton.duckdb.wal").exists());
}

#[test]
fn a_file_that_is_not_a_duckdb_database_is_refused() {
    let p = Project::new("");
    fs::write(p.path("notes.duckdb"), vec![b'x'; 20_000]).unwrap();
    p.write_config("DB_PATH: notes.duckdb\nLOG_LEVEL: INFO\n");
    let (r, code) = p.pre_run();
    assert_eq!(code, 74);
    assert_eq!(r.errors[0].code, ErrorCode::DatabaseInvalid);
}

#[test]
fn a_world_writable_backup_dir_is_refused() {
    let p = Project::new("");
    fs::create_dir(p.backups()).unwrap();
    fs::set_permissions(p.backups(), fs::Permissions::from_mode(0o777)).unwrap();
    let (r, code) = p.pre_run();
    assert_eq!(code, 73);
    assert_eq!(r.errors[0].code, ErrorCode::BackupDirUnsafe);
    assert!(p.backup_files().is_empty());
}

#[test]
fn dry_run_writes_nothing() {
    let p = Project::new("");
    let (r, code) = p.hook(&format!(
        r#"{{"protocol_version":1,"event":"pre_run","dry_run":true,"config":{{"path":"{}"}}}}"#,
        p.config().display()
    ));
    assert_eq!(code, 0, "{r:?}");
    assert_eq!(r.decision, Decision::Proceed);
    assert!(r.reason.contains("dry run"));
    assert!(r.backup.is_none());
    assert!(
        !p.backups().exists(),
        "the backup directory was not even created"
    );
}

/// Every dry run (backup, restore, prune, delete, pre_run, post_run with a restore asked for)
/// changes nothing: not the database, not its WAL, not one file of the backup directory, not
/// even leftovers of an interrupted run. Each has something to do: a WAL to fold or to move
/// aside, a backup beyond `BACKUP_KEEP_LAST` to rotate away (the real prune then deletes it).
#[test]
fn every_dry_run_changes_nothing() {
    let p = Project::new("BACKUP_KEEP_LAST: 2\n");
    let (r, code) = p.pre_run();
    assert_eq!(code, 0, "{r:?}");
    let id = r.backup.unwrap().id; // not `latest` after the next: `delete` would take it
    let (r, code) = p.pre_run();
    assert_eq!(code, 0, "{r:?}");
    // From now on one backup is one too many: a backup's rotation and prune would delete one.
    p.write_config("DB_PATH: simulation.duckdb\nLOG_LEVEL: INFO\nBACKUP_MIN_FREE_BYTES: 0\nBACKUP_KEEP_LAST: 1\n");
    write_into_wal(&p.db(), "CREATE TABLE the_run AS SELECT 1 AS x;");
    fs::write(
        p.backups().join(".ducksafe-tmp-backup-1-x.duckdb"),
        b"leftover",
    )
    .unwrap();
    let before = support::every_byte(p.dir.path());
    let cfg = p.config().display().to_string();
    for args in [
        vec!["backup", "--dry-run"],
        vec!["restore", "--dry-run"],
        vec!["prune", "--dry-run"],
        vec!["delete", &id, "--dry-run"],
        vec!["pre-run", "--dry-run"],
        vec![
            "post-run",
            "--exit-code",
            "1",
            "--on-failure",
            "restore",
            "--dry-run",
        ],
    ] {
        let out = p.run(&args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            support::every_byte(p.dir.path()),
            before,
            "{args:?} changed files"
        );
    }
    for req in [
        format!(
            r#"{{"protocol_version":1,"event":"pre_run","dry_run":true,"config":{{"path":"{cfg}"}}}}"#
        ),
        format!(
            r#"{{"protocol_version":1,"event":"post_run","dry_run":true,"config":{{"path":"{cfg}"}},"run":{{"outcome":"failure"}},"on_failure":"restore"}}"#
        ),
    ] {
        let (r, code) = p.hook(&req);
        assert_eq!(code, 0, "{r:?}");
        assert_eq!(
            support::every_byte(p.dir.path()),
            before,
            "{req} changed files"
        );
    }
    // The dry runs had work to skip: the real prune deletes a backup.
    let out = p.run(&["prune"]);
    support::assert_ok(&out);
    assert_eq!(p.backup_files().len(), 1, "{:?}", p.backup_dir_entries());
    assert_ne!(support::every_byte(p.dir.path()), before);
}

#[test]
fn human_backup_command_prints_a_summary_and_json_on_request() {
    let p = Project::new("");
    let out = p.run(&["backup"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("backed up"), "{text}");
    assert!(text.contains("to roll back:"), "{text}");
    let out = p.run(&["backup", "--json"]);
    assert_ok(&out);
    let r: ducksafe::protocol::Response = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r.decision, Decision::Proceed);
    assert_eq!(r.exit_code, 0);
}

#[test]
fn a_copy_that_fails_verification_is_never_published() {
    let p = Project::new("");
    let (first, code) = p.pre_run();
    assert_eq!(code, 0);
    let first = first.backup.unwrap().id;
    // Damage a data block of the database itself: the copy is byte-exact, so the full scan
    // must fail and nothing of this run may appear under a backup name.
    let mut bytes = fs::read(p.db()).unwrap();
    bytes[12_288 + 100] ^= 0xff;
    fs::write(p.db(), &bytes).unwrap();
    let (r, code) = p.pre_run();
    assert_eq!(code, 74, "{r:?}");
    assert_eq!(r.decision, Decision::Abort);
    assert_eq!(p.backup_files(), vec![format!("{first}.duckdb")]);
    assert!(p
        .backup_dir_entries()
        .iter()
        .all(|n| !n.starts_with(".ducksafe-tmp-")));
    assert_eq!(
        fs::read_link(p.backups().join("latest.duckdb")).unwrap(),
        std::path::PathBuf::from(format!("{first}.duckdb"))
    );
}

/// Each `VERIFY_LEVEL` records exactly the checks its table in docs/configuration.md names,
/// with and without a WAL to fold, and the backup holds the source's content either way.
#[test]
fn each_verify_level_records_its_checks_and_keeps_the_content() {
    let levels: [(&str, &[&str]); 3] = [
        ("quick", &["size", "sha256", "block_checksums", "open"]),
        (
            "standard",
            &["size", "sha256", "block_checksums", "open", "row_counts"],
        ),
        (
            "full",
            &[
                "size",
                "sha256",
                "block_checksums",
                "open",
                "row_counts",
                "fingerprints",
            ],
        ),
    ];
    for (level, checks) in levels {
        for with_wal in [false, true] {
            let p = Project::new(&format!("VERIFY_LEVEL: {level}\n"));
            if with_wal {
                write_into_wal(
                    &p.db(),
                    "INSERT INTO employees SELECT * FROM employees LIMIT 7;",
                );
            }
            let expected = fingerprints(&p.db());
            let (r, code) = p.pre_run();
            assert_eq!(code, 0, "{level}, WAL {with_wal}: {r:?}");
            let b = r.backup.unwrap();
            assert_eq!(b.verification, *checks, "{level}, WAL {with_wal}");
            assert_eq!(fingerprints(std::path::Path::new(&b.path)), expected);
            let m = Manifest::read(&p.backups().join(format!("{}.manifest.json", b.id))).unwrap();
            assert_eq!(m.source.wal_folded, with_wal);
            let counted = m.tables.iter().all(|t| t.rows.is_some());
            let fingerprinted = m.tables.iter().all(|t| t.fingerprint.is_some());
            assert_eq!(counted, level != "quick", "{level}: row counts");
            assert_eq!(fingerprinted, level == "full", "{level}: fingerprints");
        }
    }
}

/// A regular file at `latest.duckdb` (a seed-style copy) is left alone, with a warning, and
/// a bare `restore` still finds the newest backup.
#[test]
fn a_regular_file_named_latest_is_left_alone() {
    let p = Project::new("");
    let (r, _) = p.pre_run();
    let first = r.backup.unwrap();
    let latest = p.backups().join("latest.duckdb");
    fs::remove_file(&latest).unwrap();
    fs::write(&latest, b"an operator's own copy").unwrap();
    let (r, code) = p.pre_run();
    assert_eq!(code, 0, "{r:?}");
    assert!(
        r.warnings.iter().any(|w| w.contains("not a symlink")),
        "{:?}",
        r.warnings
    );
    assert_eq!(fs::read(&latest).unwrap(), b"an operator's own copy");
    let newest = r.backup.unwrap();
    assert_ne!(newest.id, first.id);
    let expected = fingerprints(std::path::Path::new(&newest.path));
    write_into_wal(&p.db(), "DELETE FROM employees;");
    let out = p.run(&["restore"]);
    support::assert_ok(&out);
    support::assert_restored(&p, &expected);
}

/// A reader alone (a notebook, a read-only DuckDB shell) lets a backup in but not a restore:
/// replacing a file someone is reading would pull it from under them.
#[test]
fn a_reader_lets_a_backup_in_and_keeps_a_restore_out() {
    let p = Project::new("");
    let (r, code) = p.pre_run();
    assert_eq!(code, 0, "{r:?}");
    let id = r.backup.unwrap().id;
    let before = sha256(&p.db());
    let reader = support::hold_reader(&p.db());
    let (r, code) = p.pre_run();
    assert_eq!(code, 0, "a backup beside a reader: {r:?}");
    let out = p.run(&["restore", &id]);
    assert_exit(&out, 75);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("PID {}", reader.pid())), "{err}");
    assert_eq!(sha256(&p.db()), before, "the database changed");
    drop(reader);
    let out = p.run(&["restore", &id]);
    support::assert_ok(&out);
}

/// Quarantine folders hold the databases restores replaced: private (0700, files 0600 as they
/// were), and never deleted by rotation or prune however many backups come after.
#[test]
fn quarantine_folders_are_private_and_outlive_rotation_and_prune() {
    let p = Project::new("BACKUP_KEEP_LAST: 1\n");
    let (r, _) = p.pre_run();
    let id = r.backup.unwrap().id;
    write_into_wal(&p.db(), "CREATE TABLE the_run AS SELECT 1 AS x;");
    let out = p.run(&["restore", &id]);
    support::assert_ok(&out);
    let q = p.backups().join("quarantine");
    let folders = support::dir_names(&q);
    assert_eq!(folders.len(), 1, "{folders:?}");
    let folder = q.join(&folders[0]);
    let before: Vec<(String, String)> = support::dir_names(&folder)
        .into_iter()
        .map(|n| (n.clone(), sha256(&folder.join(&n))))
        .collect();
    assert!(
        before.iter().any(|(n, _)| n == "simulation.duckdb.wal"),
        "{before:?}"
    );
    for dir in [&q, &folder] {
        let mode = fs::metadata(dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{}", dir.display());
    }
    for _ in 0..3 {
        let (r, code) = p.pre_run();
        assert_eq!(code, 0, "{r:?}");
    }
    let out = p.run(&["prune"]);
    assert!(out.status.success());
    let after: Vec<(String, String)> = support::dir_names(&folder)
        .into_iter()
        .map(|n| (n.clone(), sha256(&folder.join(&n))))
        .collect();
    assert_eq!(after, before, "rotation or prune touched the quarantine");
}

/// `init` writes `config.yaml` private to its user (0600): it names the database's path.
#[test]
fn init_writes_a_private_config() {
    let dir = tempfile::tempdir().unwrap();
    let out = support::bin()
        .current_dir(dir.path())
        .args(["init", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    support::assert_ok(&out);
    let mode = fs::metadata(dir.path().join("config.yaml"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    let mode = fs::metadata(dir.path().join("backups"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o700);
}

/// A backup file moved away by hand leaves its manifest and checksum file behind: no dry run and
/// no other command than a backup sweeps them (a backup removes them, saying so, as the runbook
/// documents), so moving the file back in the meantime makes it whole again.
#[test]
fn a_manifest_whose_file_was_moved_away_is_never_swept() {
    let p = Project::new("BACKUP_KEEP_LAST: 10\n");
    let mut ids = Vec::new();
    for minute in 0..3 {
        let now = format!("2026-12-01T10:0{minute}:00Z");
        let (r, code) = p.pre_run_env(&[("DUCKSAFE_NOW", &now)]);
        assert_eq!(code, 0, "{r:?}");
        ids.push(r.backup.unwrap().id);
    }
    let moved = &ids[1];
    let file = p.backups().join(format!("{moved}.duckdb"));
    let aside = p.path("aside.duckdb");
    fs::rename(&file, &aside).unwrap();
    for args in [
        vec!["prune", "--dry-run"],
        vec!["prune"],
        vec!["pin", ids[0].as_str()],
        vec!["backup", "--dry-run"],
        vec!["restore", "--dry-run"],
    ] {
        let out = p.run(&args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        for ext in [".manifest.json", ".duckdb.sha256"] {
            assert!(
                p.backups().join(format!("{moved}{ext}")).exists(),
                "{args:?} swept {moved}{ext}"
            );
        }
    }
    let out = p.run(&["verify", "--all"]);
    assert_exit(&out, 74); // verify --all reports the missing file
    fs::rename(&aside, &file).unwrap();
    let out = p.run(&["verify", moved]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// Issue 10: the seed's Quick Start runs `mkdir -p backups` before ducksafe ever sees the
/// folder, so it is `0755`. The backup makes it `0700`, as it makes the folders it creates,
/// and says so once; a reading command changes no mode.
#[test]
fn a_backup_dir_made_by_hand_is_tightened_with_a_note() {
    let p = Project::new("");
    fs::create_dir(p.backups()).unwrap();
    fs::set_permissions(p.backups(), fs::Permissions::from_mode(0o755)).unwrap();
    let mode = || fs::metadata(p.backups()).unwrap().permissions().mode() & 0o7777;
    let out = p.run(&["--json", "list"]);
    assert!(out.status.success());
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        listed["warnings"][0]
            .as_str()
            .is_some_and(|w| w.contains("is 0755") && w.contains("the next backup makes it 0700")),
        "{listed}"
    );
    assert_eq!(mode(), 0o755, "list changes no mode");
    let (r, code) = p.pre_run();
    assert_eq!(code, 0, "{r:?}");
    assert_eq!(mode(), 0o700);
    let note = format!(
        "tightened `{}` from 0755 to 0700: it holds compensation data",
        p.backups().display()
    );
    assert!(r.warnings.contains(&note), "{:?}", r.warnings);
    let (r, _) = p.pre_run();
    assert!(
        !r.warnings.iter().any(|w| w.contains("0755")),
        "said once: {:?}",
        r.warnings
    );
}

/// The quarantine root holds the databases restores moved aside: one made by hand open to
/// others is said by `list` (changing nothing) and tightened by the next backup, with its note,
/// as the backup directory is.
#[test]
fn a_quarantine_folder_made_by_hand_is_tightened_by_the_next_backup() {
    let p = Project::new("");
    let quarantine = p.backups().join("quarantine");
    fs::create_dir_all(&quarantine).unwrap();
    fs::set_permissions(p.backups(), fs::Permissions::from_mode(0o700)).unwrap();
    fs::set_permissions(&quarantine, fs::Permissions::from_mode(0o755)).unwrap();
    let mode = || fs::metadata(&quarantine).unwrap().permissions().mode() & 0o7777;
    let out = p.run(&["--json", "list"]);
    assert!(out.status.success(), "{out:?}");
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let quarantine_said = |w: &serde_json::Value| {
        w.as_str()
            .is_some_and(|w| w.contains(&quarantine.display().to_string()) && w.contains("is 0755"))
    };
    assert!(
        listed["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .any(quarantine_said),
        "{listed}"
    );
    assert_eq!(mode(), 0o755, "list changes no mode");
    let (r, code) = p.pre_run();
    assert_eq!(code, 0, "{r:?}");
    assert_eq!(mode(), 0o700);
    let note = format!(
        "tightened `{}` from 0755 to 0700: it holds compensation data",
        quarantine.display()
    );
    assert_eq!(
        r.warnings.iter().filter(|w| **w == note).count(),
        1,
        "said once: {:?}",
        r.warnings
    );
}

/// How many times the hook's `DEBUG` log says a line starting with `what`.
fn log_lines(log: &str, what: &str) -> usize {
    log.lines()
        .filter(|l| {
            l.trim_start()
                .strip_prefix("DEBUG ")
                .is_some_and(|l| l.starts_with(what))
        })
        .count()
}

#[test]
fn a_backup_starts_duckdb_once_and_reads_source_and_copy_through_it() {
    for level in ["quick", "standard", "full"] {
        let p = Project::new(&format!("VERIFY_LEVEL: {level}\n"));
        p.write_config(&format!(
            "DB_PATH: simulation.duckdb\nLOG_LEVEL: DEBUG\nBACKUP_MIN_FREE_BYTES: 0\nVERIFY_LEVEL: {level}\n"
        ));
        let mut c = support::bin();
        c.current_dir(p.dir.path()).arg("hook");
        let out = support::pipe(c, support::request("pre_run", &p.config(), "").as_bytes());
        let r = support::one_response(&out);
        assert_eq!(r.status, Status::Ok, "{r:?}");
        let log = support::stderr(&out);
        assert_eq!(
            log_lines(&log, "DuckDB started (in memory)"),
            1,
            "{level}: {log}"
        );
        assert_eq!(log_lines(&log, "DuckDB open"), 0, "{level}: {log}");
        // The copy is attached at every level; the source too when it is scanned.
        assert_eq!(
            log_lines(&log, "DuckDB attach"),
            if level == "quick" { 1 } else { 2 },
            "{level}: {log}"
        );
        assert_eq!(
            log_lines(&log, "DuckDB detach"),
            log_lines(&log, "DuckDB attach"),
            "{level}: {log}"
        );
        // One scan per table, of the source (the copy is byte-identical).
        let scans = if level == "full" { 3 } else { 0 };
        assert_eq!(log_lines(&log, "scan of "), scans, "{level}: {log}");
    }
    // A WAL to fold: the fold opens the private copy read-write, and the comparison of the
    // folded copy with the source still reads both through the one instance.
    let p = Project::new("");
    p.write_config("DB_PATH: simulation.duckdb\nLOG_LEVEL: DEBUG\nBACKUP_MIN_FREE_BYTES: 0\n");
    write_into_wal(
        &p.db(),
        "INSERT INTO employees SELECT * FROM employees LIMIT 5",
    );
    let mut c = support::bin();
    c.current_dir(p.dir.path()).arg("hook");
    let out = support::pipe(c, support::request("pre_run", &p.config(), "").as_bytes());
    assert_eq!(support::one_response(&out).status, Status::Ok);
    let log = support::stderr(&out);
    assert_eq!(log_lines(&log, "DuckDB started (in memory)"), 1, "{log}");
    assert_eq!(
        log_lines(&log, "DuckDB open"),
        1,
        "the fold's read-write open: {log}"
    );
    assert_eq!(log_lines(&log, "DuckDB attach"), 2, "{log}");
    assert_eq!(log_lines(&log, "DuckDB detach"), 2, "{log}");
}
