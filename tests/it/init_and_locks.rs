//! `ducksafe init`, and the two locks a backup holds: one ducksafe per backup directory, and
//! no writer on the database while it is copied.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use crate::support::runs::{paused, Running};
use crate::support::{self, bin, Project};
use ducksafe::duck::{Db, DuckError, Limits};
use ducksafe::protocol::{ErrorCode, Response};

#[test]
fn init_writes_the_quick_start_layout_once() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join(".gitignore"), "target/").unwrap();
    for _ in 0..2 {
        let out = bin().current_dir(dir.path()).arg("init").output().unwrap();
        support::assert_ok(&out);
    }
    let gi = fs::read_to_string(dir.path().join(".gitignore")).unwrap();
    assert_eq!(gi, "target/\nbackups/\n", "added once, on its own line");
    let mode = fs::metadata(dir.path().join("backups"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700);
    assert!(dir.path().join("logs").is_dir());
    let cfg = fs::read_to_string(dir.path().join("config.yaml")).unwrap();
    assert!(cfg.contains("DB_PATH: simulation.duckdb"));
    assert!(cfg.contains("BACKUP_RETENTION_DAYS: 7"));
    assert!(
        !dir.path().join("simulation.duckdb").exists(),
        "no database without --demo"
    );
}

/// `init` keeps ducksafe's own folder rules: a `backups` that is a symlink is refused, and the
/// folder it points to keeps its mode; a `.gitignore` that is a symlink is not appended through.
#[test]
fn init_follows_no_symlink() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("elsewhere");
    fs::create_dir(&target).unwrap();
    fs::set_permissions(&target, fs::Permissions::from_mode(0o755)).unwrap();
    let project = dir.path().join("project");
    fs::create_dir(&project).unwrap();
    std::os::unix::fs::symlink(&target, project.join("backups")).unwrap();
    let out = bin()
        .arg("init")
        .arg("--dir")
        .arg(&project)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(73), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("symlink"),
        "{out:?}"
    );
    assert_eq!(
        fs::metadata(&target).unwrap().permissions().mode() & 0o777,
        0o755
    );

    fs::remove_file(project.join("backups")).unwrap();
    let outside = dir.path().join("outside.txt");
    fs::write(&outside, "mine\n").unwrap();
    std::os::unix::fs::symlink(&outside, project.join(".gitignore")).unwrap();
    let out = bin()
        .arg("init")
        .arg("--dir")
        .arg(&project)
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(fs::read_to_string(&outside).unwrap(), "mine\n");
}

fn init_demo(dir: &std::path::Path) {
    let out = bin()
        .current_dir(dir)
        .args(["init", "--demo"])
        .output()
        .unwrap();
    support::assert_ok(&out);
}

#[test]
fn init_demo_creates_a_simulation_shaped_database_and_never_overwrites_one() {
    let dir = tempfile::tempdir().unwrap();
    init_demo(dir.path());
    let db = dir.path().join("simulation.duckdb");
    let d = Db::open_read_only(&db, &Limits::default()).unwrap();
    let counts: Vec<(String, u64)> = d
        .tables()
        .unwrap()
        .iter()
        .map(|t| (t.name.clone(), d.row_count(t).unwrap()))
        .collect();
    d.close().unwrap();
    assert!(counts.contains(&("employees".into(), 9_016)), "{counts:?}");
    assert!(
        counts.contains(&("fct_yearly_events".into(), 42_331)),
        "{counts:?}"
    );
    let before = support::sha256(&db);
    init_demo(dir.path());
    assert_eq!(support::sha256(&db), before);
    // And the demo is ready for the hook as written.
    let out = bin()
        .current_dir(dir.path())
        .arg("pre-run")
        .output()
        .unwrap();
    let r: Response = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r.exit_code, 0, "{r:?}");
}

/// A `ducksafe pre-run` paused at `point` until [`finish`] lets it go on ([`paused`]).
fn paused_backup(p: &Project, point: &str) -> Running {
    paused(p.cmd(&["pre-run"]), None, point, &p.path("go")).unwrap()
}

/// Lets a paused backup go on and returns its answer.
fn finish(run: Running) -> Response {
    serde_json::from_slice(&run.release().stdout).unwrap()
}

#[test]
fn no_writer_can_open_the_database_while_a_backup_runs() {
    let p = Project::new("");
    let backup = paused_backup(&p, "snapshot.copied");
    match Db::open_read_write(&p.db(), &Limits::default()) {
        Err(DuckError::Locked { .. }) => {}
        Err(e) => panic!("expected a lock conflict, got {e}"),
        Ok(_) => panic!("a writer opened the database during the backup"),
    }
    // Readers are still welcome.
    Db::open_read_only(&p.db(), &Limits::default())
        .unwrap()
        .close()
        .unwrap();
    let r = finish(backup);
    assert_eq!(r.exit_code, 0, "{r:?}");
}

/// prune, pin and restore take the same directory lock as a backup: while one runs, each is
/// refused with 75 and changes nothing.
#[test]
fn prune_pin_and_restore_wait_for_a_running_backup() {
    let p = Project::new("");
    let (r, code) = p.pre_run();
    assert_eq!(code, 0, "{r:?}");
    let id = r.backup.unwrap().id;
    let manifest = p.backups().join(format!("{id}.manifest.json"));
    let before = (fs::read(&manifest).unwrap(), support::sha256(&p.db()));
    let backup = paused_backup(&p, "snapshot.copied");
    for args in [vec!["prune"], vec!["pin", &id], vec!["restore", &id]] {
        let out = p.run(&args);
        assert_eq!(out.status.code(), Some(75), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!("PID {}", backup.child.id())),
            "{args:?}: {err}"
        );
    }
    assert_eq!(
        (fs::read(&manifest).unwrap(), support::sha256(&p.db())),
        before
    );
    let r = finish(backup);
    assert_eq!(r.exit_code, 0, "{r:?}");
}

#[test]
fn a_second_ducksafe_on_the_same_backup_directory_gets_lock_busy() {
    let p = Project::new("");
    let backup = paused_backup(&p, "snapshot.copied");
    let (r, code) = p.pre_run();
    assert_eq!(code, 75, "{r:?}");
    assert_eq!(r.errors[0].code, ErrorCode::LockBusy);
    assert!(r.errors[0].retryable);
    assert!(
        r.errors[0]
            .message
            .contains(&format!("PID {}", backup.child.id())),
        "{}",
        r.errors[0].message
    );
    let first = finish(backup);
    assert_eq!(first.exit_code, 0);
    assert_eq!(p.backup_files().len(), 1);
}
