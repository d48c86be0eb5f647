//! What an outside attack on the build found, each kept fixed: the real binary, as an operator
//! or a caller would run it, one case per finding.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Output;

use crate::support::mount::{mounted, Mount};
use crate::support::{
    self, assert_exit, assert_ok, bin, but_the_lock, request, stderr, with_closed_stdout, Project,
};
use ducksafe::duck::{Db, Limits};
use ducksafe::protocol::{ErrorCode, Response};

/// A project with one backup; returns its id.
fn backed_up() -> (Project, String) {
    let p = Project::new("");
    assert_ok(&p.run(&["backup"]));
    let id = p.backup_files()[0].trim_end_matches(".duckdb").to_owned();
    (p, id)
}

/// Flips bytes in the middle of a backup file: it no longer matches its manifest.
fn damage(path: &Path) {
    use std::io::{Seek, SeekFrom, Write};
    let len = fs::metadata(path).unwrap().len();
    let mut f = fs::OpenOptions::new().write(true).open(path).unwrap();
    f.seek(SeekFrom::Start(len / 2)).unwrap();
    f.write_all(b"XXXX").unwrap();
}

// 1. A closed stdout never turns a failure into a success.
#[test]
fn a_failed_command_keeps_its_exit_code_when_stdout_is_closed() {
    let (p, id) = backed_up();
    // A success whose reader has gone ends quietly with 0.
    let out = with_closed_stdout(p.cmd(&["list"]));
    let said = assert_ok(&out);
    assert!(!said.contains("error"), "{said}");

    damage(&p.backups().join(format!("{id}.duckdb")));
    let out = with_closed_stdout(p.cmd(&["verify", "--all"]));
    assert_exit(&out, 74);
    assert!(
        stderr(&out).contains("verification failed"),
        "the failure is still said: {}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains("stdout"), "{}", stderr(&out));

    let out = with_closed_stdout(p.cmd(&["--json", "restore", &id]));
    assert_exit(&out, 74);

    let mut c = p.cmd(&["--json", "backup"]);
    c.env("DUCKSAFE_BACKUP_MIN_FREE_BYTES", "999999999999999");
    let out = with_closed_stdout(c);
    assert_exit(&out, 73);

    // The hook's answer line is no exception: a refused pre-run, and the same refusal through
    // `ducksafe hook`, keep their exit code.
    let mut c = p.cmd(&["pre-run"]);
    c.env("DUCKSAFE_BACKUP_MIN_FREE_BYTES", "999999999999999");
    assert_exit(&with_closed_stdout(c), 73);
    fs::write(p.path("request.json"), request("pre_run", &p.config(), "")).unwrap();
    let mut c = bin();
    c.current_dir(p.dir.path())
        .arg("hook")
        .env("DUCKSAFE_BACKUP_MIN_FREE_BYTES", "999999999999999")
        .stdin(fs::File::open(p.path("request.json")).unwrap());
    assert_exit(&with_closed_stdout(c), 73);
}

/// The uid commands run as in the cases about another user: `nobody`.
const NOBODY: u32 = 65534;

/// The ducksafe binary, copied where another user can run it (the build's own is under a
/// private home), for the cases run as `nobody`. `None` when this is not root.
fn binary_for_others(case: &str) -> Option<(tempfile::TempDir, PathBuf)> {
    if ducksafe::files::euid() != 0 {
        support::skip(case, "not root: cannot run a command as another user");
        return None;
    }
    let t = tempfile::tempdir().unwrap();
    fs::set_permissions(t.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let to = t.path().join("ducksafe");
    fs::copy(env!("CARGO_BIN_EXE_ducksafe"), &to).unwrap();
    Some((t, to))
}

/// The project belongs to `nobody` (its folder, database and configuration), as the attack's
/// did.
fn give_to_nobody(p: &Project) {
    for path in [p.dir.path().to_path_buf(), p.db(), p.config()] {
        if path.exists() {
            std::os::unix::fs::chown(&path, Some(NOBODY), Some(NOBODY)).unwrap();
        }
    }
}

/// Runs `ducksafe ARGS` in the project (`--config` its file), as `uid` with the binary `exe`
/// when given, `input` on stdin.
fn ducksafe_in(p: &Project, who: Option<(&Path, u32)>, args: &[&str], input: &str) -> Output {
    let mut c = match who {
        Some((exe, uid)) => {
            let mut c = support::command(exe);
            c.uid(uid).gid(uid).env_remove("DUCKSAFE_CONFIG");
            c
        }
        None => bin(),
    };
    c.current_dir(p.dir.path());
    if args.first() != Some(&"hook") {
        c.arg("--config").arg(p.config());
    }
    c.args(args);
    support::pipe(c, input.as_bytes())
}

/// `validate`, `backup --dry-run` and a pre_run dry run refuse a `BACKUP_DIR` that the real
/// backup cannot create, with the real backup's code, writing nothing; the real backup fails
/// so.
fn dry_runs_refuse_like_the_backup(p: &Project, backup_dir: &str, who: Option<(&Path, u32)>) {
    let set = format!("BACKUP_DIR={backup_dir}");
    let before = support::every_byte(p.dir.path());
    let real = ducksafe_in(p, who, &["--set", &set, "backup"], "");
    assert_exit(&real, 74);
    assert_eq!(support::every_byte(p.dir.path()), before);
    for args in [
        vec!["--set", &set, "validate"],
        vec!["--set", &set, "backup", "--dry-run"],
    ] {
        let out = ducksafe_in(p, who, &args, "");
        assert_eq!(out.status.code(), Some(74), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("cannot create backup directory"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
    let request = format!(
        r#"{{"protocol_version":1,"event":"pre_run","dry_run":true,"config":{{"path":{:?}}},"set":{{"BACKUP_DIR":{backup_dir:?}}}}}"#,
        p.config().display().to_string()
    );
    let out = ducksafe_in(p, who, &["hook"], &request);
    let r = support::one_response(&out);
    assert_eq!(r.errors[0].code, ErrorCode::IoError, "{r:?}");
    assert_eq!(support::every_byte(p.dir.path()), before, "nothing written");
}

// 2. A BACKUP_DIR the backup cannot create is refused by its dry runs and `validate` too.
#[test]
fn dry_runs_refuse_a_backup_dir_under_a_file() {
    let p = Project::new("");
    dry_runs_refuse_like_the_backup(&p, "config.yaml/backups", None);
    dry_runs_refuse_like_the_backup(&p, "config.yaml/deep/backups", None);
}

#[test]
fn dry_runs_refuse_a_backup_dir_under_a_folder_this_user_cannot_write() {
    let case = "dry_runs_refuse_a_backup_dir_under_a_folder_this_user_cannot_write";
    let Some((_t, exe)) = binary_for_others(case) else {
        return;
    };
    let p = Project::new("");
    fs::create_dir(p.path("rootonly")).unwrap();
    fs::set_permissions(p.path("rootonly"), fs::Permissions::from_mode(0o755)).unwrap();
    give_to_nobody(&p);
    dry_runs_refuse_like_the_backup(&p, "rootonly/backups", Some((&exe, NOBODY)));
    dry_runs_refuse_like_the_backup(&p, "rootonly/deep/backups", Some((&exe, NOBODY)));
}

#[test]
fn dry_runs_refuse_a_backup_dir_on_a_read_only_filesystem() {
    let p = Project::new("");
    fs::create_dir(p.path("ro")).unwrap();
    let case = "dry_runs_refuse_a_backup_dir_on_a_read_only_filesystem";
    let Some(_ro) = mounted(case, Mount::read_only(&p.path("ro"))) else {
        return;
    };
    dry_runs_refuse_like_the_backup(&p, "ro/backups", None);
}

// 3. A BACKUP_DIR whose parents are missing too is created by the backup: its dry runs measure
//    free space where it will be created, and approve it.
#[test]
fn dry_runs_approve_a_backup_dir_with_missing_parents() {
    let p = Project::new("");
    let set = "BACKUP_DIR=nonexist/deep/backups";
    let before = support::every_byte(p.dir.path());
    let out = p.run(&["--set", set, "backup", "--dry-run"]);
    assert_ok(&out);
    let request = format!(
        r#"{{"protocol_version":1,"event":"pre_run","dry_run":true,"config":{{"path":{:?}}},"set":{{"BACKUP_DIR":"nonexist/deep/backups"}}}}"#,
        p.config().display().to_string()
    );
    let (r, code) = p.hook(&request);
    assert_eq!(code, 0, "{r:?}");
    let space = r.space.unwrap();
    let fs_free = ducksafe::files::fs_space(p.dir.path())
        .unwrap()
        .available_bytes;
    assert!(space.available_bytes > 0 && space.available_bytes.abs_diff(fs_free) < 1 << 30);
    assert_ok(&p.run(&["--set", set, "validate"]));
    assert_eq!(support::every_byte(p.dir.path()), before, "nothing written");
    assert_ok(&p.run(&["--set", set, "backup"]));
    assert!(p.path("nonexist/deep/backups/latest.duckdb").exists());
}

/// Commits a change to the database, so that it is no longer its backup.
fn change(db: &Path) {
    let d = Db::open_read_write(db, &Limits::default()).unwrap();
    d.execute_batch("CREATE TABLE changed AS SELECT 1 AS x")
        .unwrap();
    d.close().unwrap();
}

/// The post_run dry run that would restore `latest`.
fn post_run_dry_run(p: &Project) -> (Response, i32) {
    p.hook(&format!(
        r#"{{"protocol_version":1,"event":"post_run","dry_run":true,"run":{{"outcome":"failure"}},"on_failure":"restore","config":{{"path":{:?}}}}}"#,
        p.config().display().to_string()
    ))
}

// 4. A restore that could not stage its copy is refused by its dry runs too, and by the
//    restore before it copies a byte.
#[test]
fn restore_dry_runs_refuse_when_the_staged_copy_cannot_fit() {
    let p = Project::new("");
    let bytes = fs::metadata(p.db()).unwrap().len();
    fs::create_dir(p.path("fs")).unwrap();
    let case = "restore_dry_runs_refuse_when_the_staged_copy_cannot_fit";
    let Some(_fs) = mounted(
        case,
        Mount::tmpfs(&p.path("fs"), 2 * bytes + (4 << 20), 0o755),
    ) else {
        return;
    };
    fs::copy(p.db(), p.path("fs/simulation.duckdb")).unwrap();
    p.write_config("DB_PATH: fs/simulation.duckdb\nLOG_LEVEL: INFO\nBACKUP_MIN_FREE_BYTES: 0\n");
    assert_ok(&p.run(&["backup"]));
    change(&p.path("fs/simulation.duckdb"));
    // Less room left than the backup's size.
    let free = ducksafe::files::fs_space(&p.path("fs"))
        .unwrap()
        .available_bytes;
    let filler = vec![0u8; usize::try_from(free - bytes / 2).unwrap()];
    let _ = fs::write(p.path("fs/filler"), filler);
    let before = support::every_byte(p.dir.path());

    let dry = p.run(&["restore", "--dry-run"]);
    let said = assert_exit(&dry, 73);
    assert!(said.contains("not enough free space in"), "{said}");
    let (r, code) = post_run_dry_run(&p);
    assert_eq!(code, 73, "{r:?}");
    assert_eq!(r.errors[0].code, ErrorCode::InsufficientSpace);
    assert_eq!(support::every_byte(p.dir.path()), before, "nothing written");
    let real = p.run(&["restore"]);
    assert_exit(&real, 73);
    assert_eq!(
        but_the_lock(support::every_byte(p.dir.path())),
        but_the_lock(before),
        "nothing changed"
    );
}

#[test]
fn restore_dry_runs_refuse_when_the_database_folder_cannot_be_written() {
    let case = "restore_dry_runs_refuse_when_the_database_folder_cannot_be_written";
    let Some((_t, exe)) = binary_for_others(case) else {
        return;
    };
    let p = Project::new("");
    // The database belongs to `nobody`, its folder to root (0755).
    fs::create_dir(p.path("db")).unwrap();
    fs::set_permissions(p.path("db"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::rename(p.db(), p.path("db/simulation.duckdb")).unwrap();
    p.write_config("DB_PATH: db/simulation.duckdb\nLOG_LEVEL: INFO\nBACKUP_MIN_FREE_BYTES: 0\n");
    give_to_nobody(&p);
    std::os::unix::fs::chown(p.path("db/simulation.duckdb"), Some(NOBODY), Some(NOBODY)).unwrap();
    let as_nobody = Some((exe.as_path(), NOBODY));
    assert_ok(&ducksafe_in(&p, as_nobody, &["backup"], ""));
    change(&p.path("db/simulation.duckdb"));
    let before = support::every_byte(p.dir.path());

    let dry = ducksafe_in(&p, as_nobody, &["restore", "--dry-run"], "");
    let said = assert_exit(&dry, 74);
    assert!(said.contains("Permission denied"), "{said}");
    let request = format!(
        r#"{{"protocol_version":1,"event":"post_run","dry_run":true,"run":{{"outcome":"failure"}},"on_failure":"restore","config":{{"path":{:?}}}}}"#,
        p.config().display().to_string()
    );
    let r = support::one_response(&ducksafe_in(&p, as_nobody, &["hook"], &request));
    assert_eq!(r.errors[0].code, ErrorCode::IoError, "{r:?}");
    assert_eq!(support::every_byte(p.dir.path()), before, "nothing written");
    let real = ducksafe_in(&p, as_nobody, &["restore"], "");
    assert_exit(&real, 74);
    assert_eq!(
        but_the_lock(support::every_byte(p.dir.path())),
        but_the_lock(before),
        "nothing changed"
    );
}

// 6. `prune`, `delete` and `adopt` dry runs write nothing, not even the directory lock.
#[test]
fn prune_delete_and_adopt_dry_runs_leave_the_lock_file_alone() {
    let (p, first) = backed_up();
    assert_ok(&p.run(&["backup"]));
    let lock = p.backups().join(".ducksafe.lock");
    // The PID in the lock file is another process's: a dry run that took the lock for real
    // would write its own.
    fs::write(&lock, "1\n").unwrap();
    let before = support::every_byte(p.dir.path());
    for args in [
        vec!["prune", "--dry-run"],
        vec!["delete", &first, "--dry-run"],
        vec!["adopt", "--dry-run"],
    ] {
        assert_ok(&p.run(&args));
        assert_eq!(support::every_byte(p.dir.path()), before, "{args:?} wrote");
    }
    fs::remove_file(&lock).unwrap();
    for args in [
        vec!["prune", "--dry-run"],
        vec!["delete", &first, "--dry-run"],
        vec!["adopt", "--dry-run"],
    ] {
        assert_ok(&p.run(&args));
        assert!(!lock.exists(), "{args:?} created the lock file");
    }
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

// 7. A restore onto a database that already is the backup moves nothing: its dry runs say so
//    instead of announcing a quarantine move.
#[test]
fn restore_dry_runs_say_a_restore_would_move_nothing() {
    let (p, _) = backed_up();
    let dry = p.run(&["restore", "--dry-run"]);
    assert_ok(&dry);
    assert!(
        stdout(&dry).contains("the restore would move nothing")
            && !stdout(&dry).contains("would move `"),
        "{}",
        stdout(&dry)
    );
    let dry = p.run(&["--json", "restore", "--dry-run"]);
    assert_ok(&dry);
    let planned: serde_json::Value = serde_json::from_slice(&dry.stdout).unwrap();
    assert_eq!(planned["unchanged"], true, "{planned}");
    assert_eq!(planned["moves"], serde_json::json!([]), "{planned}");
    let (r, code) = post_run_dry_run(&p);
    assert_eq!(code, 0, "{r:?}");
    assert!(r.reason.contains("the restore would move nothing"), "{r:?}");
    // As the restore itself does.
    let real = p.run(&["restore"]);
    assert_ok(&real);
    assert!(
        stdout(&real).contains("nothing was moved"),
        "{}",
        stdout(&real)
    );
    // A database that differs is still planned with its moves.
    change(&p.db());
    let dry = p.run(&["restore", "--dry-run"]);
    assert!(stdout(&dry).contains("would move `"), "{}", stdout(&dry));
}

// 8. A BACKUP_DIR that is a symlink is refused, never followed: ducksafe's folders are checked
//    and kept private as what they are.
#[test]
fn a_symlinked_backup_dir_is_refused_with_the_folder_to_use_instead() {
    let p = Project::new("");
    fs::create_dir(p.path("realbk")).unwrap();
    fs::set_permissions(p.path("realbk"), fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink("realbk", p.backups()).unwrap();
    let before = support::every_byte(p.dir.path());
    for args in [
        vec!["backup"],
        vec!["backup", "--dry-run"],
        vec!["validate"],
        vec!["list"],
    ] {
        let out = p.run(&args);
        assert_eq!(out.status.code(), Some(73), "{args:?}: {}", stderr(&out));
        let said = stderr(&out);
        assert!(
            said.contains("is unsafe: it is a symlink (to `realbk`)")
                && said.contains(&format!(
                    "set `BACKUP_DIR` to the folder itself (the link points to `{}`)",
                    p.path("realbk").display()
                )),
            "{args:?}: {said}"
        );
    }
    let (r, code) = p.pre_run();
    assert_eq!(code, 73, "{r:?}");
    assert_eq!(r.errors[0].code, ErrorCode::BackupDirUnsafe);
    assert_eq!(r.errors[0].path.as_deref(), Some("/BACKUP_DIR"));
    assert_eq!(support::every_byte(p.dir.path()), before, "nothing written");
    // Pointed at the folder itself, it is tightened and used.
    p.write_config("DB_PATH: simulation.duckdb\nLOG_LEVEL: INFO\nBACKUP_MIN_FREE_BYTES: 0\nBACKUP_DIR: realbk\n");
    assert_ok(&p.run(&["backup"]));
    let mode = fs::metadata(p.path("realbk")).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
}

// 9. A folder of ducksafe's left open to others is said by `restore` (and its dry run) and
//    `adopt` too, text and `--json`, as by every other response.
#[test]
fn restore_and_adopt_say_a_folder_left_open() {
    let (p, _) = backed_up();
    fs::set_permissions(p.backups(), fs::Permissions::from_mode(0o755)).unwrap();
    let open = format!(
        "`{}` is 0755, open to group and others",
        p.backups().display()
    );
    change(&p.db());
    for args in [
        vec!["restore", "--dry-run"],
        vec!["adopt", "--dry-run"],
        vec!["adopt"],
        vec!["restore"],
    ] {
        let out = p.run(&args);
        assert_ok(&out);
        assert!(stderr(&out).contains(&open), "{args:?}: {}", stderr(&out));
    }
    change(&p.db());
    for args in [
        vec!["--json", "restore", "--dry-run"],
        vec!["--json", "adopt", "--dry-run"],
        vec!["--json", "restore"],
    ] {
        let out = p.run(&args);
        assert_ok(&out);
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let said = report["warnings"].as_array().is_some_and(|w| {
            w.iter()
                .any(|w| w.as_str().is_some_and(|w| w.contains(&open)))
        });
        assert!(said, "{args:?}: {report}");
    }
    // Restores never change the folder's mode; the next backup does.
    let mode = fs::metadata(p.backups()).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o755);
}

// 10. A backup refused after it tightened the backup directory says that it did.
#[test]
fn a_refused_backup_says_it_tightened_the_folder() {
    let (p, _) = backed_up();
    let _writer = support::hold(&p.db());
    let tightened = format!("tightened `{}` from 0755 to 0700", p.backups().display());
    let loosen = || fs::set_permissions(p.backups(), fs::Permissions::from_mode(0o755)).unwrap();
    let mode = || fs::metadata(p.backups()).unwrap().permissions().mode() & 0o777;

    loosen();
    let out = p.run(&["backup"]);
    assert_exit(&out, 75);
    assert_eq!(mode(), 0o700);
    assert!(stderr(&out).contains(&tightened), "{}", stderr(&out));

    loosen();
    let out = p.run(&["--json", "backup"]);
    assert_exit(&out, 75);
    let r: Response = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r.errors[0].code, ErrorCode::DatabaseLocked);
    assert!(r.warnings.iter().any(|w| w.contains(&tightened)), "{r:?}");

    loosen();
    let (r, code) = p.pre_run();
    assert_eq!(code, 75, "{r:?}");
    assert!(r.warnings.iter().any(|w| w.contains(&tightened)), "{r:?}");
    assert_eq!(mode(), 0o700);
}

// 11. An empty `DUCKSAFE_CONFIG` is an invalid value, not a path to the working directory.
#[test]
fn an_empty_ducksafe_config_is_refused_naming_the_variable() {
    let (p, _) = backed_up();
    for args in [vec!["validate"], vec!["list"]] {
        let out = bin()
            .current_dir(p.dir.path())
            .env("DUCKSAFE_CONFIG", "")
            .args(&args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(78), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("`DUCKSAFE_CONFIG` is set but empty"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
    let (r, code) = p.hook_env(
        r#"{"protocol_version":1,"event":"validate"}"#,
        &[("DUCKSAFE_CONFIG", "")],
    );
    assert_eq!(code, 78, "{r:?}");
    assert_eq!(r.errors[0].code, ErrorCode::ConfigInvalid);
    assert!(r.reason.contains("$DUCKSAFE_CONFIG"), "{r:?}");
}

// 11. In text, an invalid configuration's problems are closed by a line that names it.
#[test]
fn an_invalid_configuration_is_named_in_text() {
    let p = Project::new("");
    let named = |out: &Output, source: &str, problems: &str| {
        let said = assert_exit(out, 78);
        assert!(
            said.trim_end().ends_with(&format!(
                "ducksafe: error: configuration `{source}` is invalid: {problems}"
            )),
            "{said}"
        );
    };
    // A folder given as the configuration file.
    let folder = p.dir.path().display().to_string();
    for args in [vec!["validate"], vec!["--json", "validate"], vec!["list"]] {
        let out = bin()
            .current_dir(p.dir.path())
            .args(["--config", &folder])
            .args(&args)
            .output()
            .unwrap();
        named(&out, &folder, "1 problem");
    }
    p.write_config("DB_PATH: simulation.duckdb\nLOG_LEVEL: INFO\nBACKUP_KEEP_LAST: 0\nFOO: 1\n");
    let config = p.config().display().to_string();
    named(&p.run(&["validate"]), &config, "2 problems");
    named(&p.run(&["backup"]), &config, "2 problems");
}

// 12. On a read-only filesystem no chmod works: no advice starts with one.
#[test]
fn read_only_media_get_no_bare_chmod_advice() {
    let (p, _) = backed_up();
    fs::set_permissions(p.backups(), fs::Permissions::from_mode(0o755)).unwrap();
    let case = "read_only_media_get_no_bare_chmod_advice";
    let Some(ro) = mounted(case, Mount::read_only(&p.backups())) else {
        return;
    };
    // The standing warning about the folder left open.
    let out = p.run(&["list"]);
    assert_ok(&out);
    assert!(
        stderr(&out).contains("cannot make it 0700 (it is on a read-only filesystem)")
            && stderr(&out)
                .contains("no chmod works on a read-only filesystem: remount it read-write"),
        "{}",
        stderr(&out)
    );
    // validate refuses it as the backup does: a read-only filesystem, no permission problem.
    let out = p.run(&["--json", "validate"]);
    let r = support::one_response(&out);
    assert_eq!(r.errors[0].code, ErrorCode::BackupFailed, "{r:?}");
    let hint = r.errors[0].hint.clone().unwrap();
    assert!(hint.contains("no chmod fixes this"), "{hint}");
    let (r, _) = p.pre_run();
    assert_eq!(r.errors[0].code, ErrorCode::BackupFailed, "{r:?}");
    // A folder refused as unsafe there: the hint does not start with a chmod either.
    drop(ro);
    fs::set_permissions(p.backups(), fs::Permissions::from_mode(0o777)).unwrap();
    let Some(_ro) = mounted(case, Mount::read_only(&p.backups())) else {
        return;
    };
    let (r, code) = p.pre_run();
    assert_eq!(code, 73, "{r:?}");
    assert_eq!(r.errors[0].code, ErrorCode::BackupDirUnsafe, "{r:?}");
    let hint = r.errors[0].hint.clone().unwrap();
    assert!(
        hint.contains("on a read-only filesystem, where no chmod works: remount it read-write"),
        "{hint}"
    );
}

// 13. `delete` of the backup `latest` names is a refusal with its own way out, not a usage
//     error pointing at `--help`; the warning about a future-dated backup gives that way out.
#[test]
fn deleting_the_latest_backup_is_refused_with_the_way_out() {
    let p = Project::new("");
    let out = p
        .cmd(&["--json", "backup"])
        .env("DUCKSAFE_NOW", "2099-01-01T00:00:00Z")
        .output()
        .unwrap();
    assert_ok(&out);
    let future = serde_json::from_slice::<Response>(&out.stdout)
        .unwrap()
        .backup
        .unwrap()
        .id;
    let out = p.run(&["list"]);
    assert!(
        stderr(&out).contains(&format!(
            "take a new backup (`ducksafe backup`, so that `latest` names that one), then delete it with `ducksafe delete {future}`"
        )),
        "{}",
        stderr(&out)
    );
    let out = p.run(&["delete", &future]);
    let said = assert_exit(&out, 64);
    assert!(
        said.contains(&format!(
            "cannot delete backup `{future}`: it is the one `latest.duckdb` names"
        )) && said.contains("hint: take a new backup first (`ducksafe backup`)")
            && !said.contains("--help"),
        "{said}"
    );
    assert!(p.backups().join(format!("{future}.duckdb")).exists());
    // The way out works.
    assert_ok(&p.run(&["backup"]));
    assert_ok(&p.run(&["delete", &future]));
    assert!(!p.backups().join(format!("{future}.duckdb")).exists());
}

// 14. `--json restore --dry-run` fails with the full response a post_run dry run answers, as
//     every other operation's `--json` failure.
#[test]
fn a_failed_restore_dry_run_prints_a_full_response() {
    let (p, _) = backed_up();
    let out = p.run(&["--json", "restore", "--dry-run", "nosuch_20250101_000000"]);
    assert_exit(&out, 66);
    let r: Response = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("not a full response ({e}): {}", stdout(&out));
    });
    assert_eq!(r.protocol_version, 1);
    assert_eq!(r.event.as_deref(), Some("post_run"));
    assert_eq!(r.decision, ducksafe::protocol::Decision::Skipped);
    assert_eq!(r.exit_code, 66);
    assert_eq!(r.errors[0].code, ErrorCode::BackupNotFound);
    assert_eq!(
        r.paths.get("db_path").map(String::as_str),
        Some(p.db().to_str().unwrap())
    );
    // As the hook's own dry run answers.
    let (hook, _) = p.hook(&format!(
        r#"{{"protocol_version":1,"event":"post_run","dry_run":true,"backup_id":"nosuch_20250101_000000","run":{{"outcome":"failure"}},"on_failure":"restore","config":{{"path":{:?}}}}}"#,
        p.config().display().to_string()
    ));
    assert_eq!((hook.decision, hook.status), (r.decision, r.status));
    assert_eq!(hook.errors[0].code, r.errors[0].code);
}

// A key given twice in the configuration file is refused, not silently the last value.
#[test]
fn a_configuration_key_given_twice_is_refused() {
    let p = Project::new("");
    p.write_config("DB_PATH: elsewhere.duckdb\nLOG_LEVEL: INFO\nDB_PATH: simulation.duckdb\n");
    let out = p.run(&["--json", "validate"]);
    let r = support::one_response(&out);
    assert_eq!(r.exit_code, 78, "{r:?}");
    assert_eq!(r.errors[0].code, ErrorCode::ConfigInvalid);
    assert_eq!(r.errors[0].path.as_deref(), Some("/DB_PATH"));
    assert!(r.errors[0].message.contains("given twice"), "{r:?}");
}

/// A backup killed while it publishes leaves a temporary file and a manifest without its backup.
/// Until the next backup removes and names them, the operator commands leave them (one that
/// fails above all), and `verify --all` reports no damage for them, only a warning: nothing
/// there is a backup, and nothing is broken.
#[test]
fn what_a_killed_publication_left_is_for_the_next_backup_alone() {
    let (p, _) = backed_up();
    support::abort_at(p.cmd(&["backup"]), "publish.sidecar");
    let leftovers = || -> Vec<String> {
        support::dir_names(&p.backups())
            .into_iter()
            .filter(|n| {
                n.starts_with(".ducksafe-tmp-")
                    || (n.ends_with(".manifest.json")
                        && !p
                            .backups()
                            .join(n.replace(".manifest.json", ".duckdb"))
                            .exists())
            })
            .collect()
    };
    let left = leftovers();
    assert_eq!(left.len(), 2, "a temporary file and a manifest: {left:?}");
    for args in [
        &["pin", "no-such-backup"][..],
        &["prune"],
        &["delete", "no-such-backup"],
    ] {
        let _ = p.run(args);
        assert_eq!(
            leftovers(),
            left,
            "`{}` removed what it was not asked to",
            args.join(" ")
        );
    }
    let out = p.run(&["verify", "--all"]);
    let said = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(0), "{said}");
    assert!(
        said.contains("interrupted while it was being published"),
        "{said}"
    );
    let out = p.run(&["backup"]);
    assert_ok(&out);
    let said = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(leftovers().is_empty(), "{:?}", leftovers());
    for name in &left {
        assert!(
            said.contains(&format!("removed `{name}`, left by an interrupted run")),
            "{name} not named: {said}"
        );
    }
}

/// The protocol line that cannot be written (a full disk under `ducksafe pre-run >
/// pre_run.json`) fails the answer, as it fails every report: a caller never reads an empty
/// file as a success.
#[test]
fn a_protocol_line_that_cannot_be_written_is_no_success() {
    let p = Project::new("");
    let full = fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let out = p.cmd(&["pre-run"]).stdout(full).output().unwrap();
    assert_eq!(out.status.code(), Some(73), "{out:?}");
    let request = format!(
        r#"{{"protocol_version":1,"event":"validate","config":{{"path":"{}"}}}}"#,
        p.config().display()
    );
    let full = fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let mut c = bin();
    c.arg("hook")
        .stdin(std::process::Stdio::piped())
        .stdout(full);
    let mut child = c.spawn().unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), request.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(73), "{out:?}");
}
