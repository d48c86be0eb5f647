//! Guarded runs of one database take turns whatever backup directory a caller uses: a second
//! configuration, `DUCKSAFE_BACKUP_DIR` or `--set BACKUP_DIR=…`, a symlinked folder or another
//! relative path to the same file. The lease is the database's (beside it), its check and its
//! record one step under its lock, a stale one ignored, and rotation keeps the backup a live
//! one names in its own directory only.
//!
//! Every moment is made by sequencing: a run is a shell of its own (its pre_run's caller) that
//! waits on its stdin between its pre_run and its post_run, and a pre_run is paused at a
//! failpoint until the test lets it go.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};

use crate::support::mount::{mounted, Mount};
use crate::support::runs::paused;
use crate::support::{self, assert_exit, fingerprints, one_response, Project};

use ducksafe::engine::lease;
use ducksafe::protocol::{Decision, ErrorCode, Response};

/// `ducksafe ARGS` in the project folder, with none of the test's own `DUCKSAFE_*` settings.
fn ds(p: &Project, args: &[&str]) -> Command {
    let mut c = support::bin();
    c.current_dir(p.dir.path()).args(args);
    c
}

/// `ducksafe ARGS` answered: the one JSON line and the exit code.
fn answer(p: &Project, args: &[&str], env: &[(&str, &str)]) -> (Response, i32) {
    let mut c = ds(p, args);
    c.envs(env.iter().copied());
    let out: Output = c.output().unwrap();
    (one_response(&out), out.status.code().unwrap_or(-1))
}

/// A guarded run in progress: a shell of its own (the caller a lease names) that ran
/// `ducksafe ARGS pre-run` and waits on its stdin for the run's exit code, which it then reports
/// with `ducksafe ARGS post-run --on-failure restore`. Let go (exit 0) if the test ends first.
struct Run {
    child: Child,
    stdin: Option<ChildStdin>,
    post: PathBuf,
    pub pre: Response,
}

/// The shell of a [`Run`]: `$1` the binary, the rest ducksafe's global arguments.
const RUN_SH: &str = r#"ds=$1; shift
"$ds" "$@" pre-run > "$RUN_NAME.pre.json"
echo ready
read code
"$ds" "$@" post-run --on-failure restore --exit-code "$code" > "$RUN_NAME.post.json"
"#;

impl Run {
    fn start(p: &Project, name: &str, args: &[&str], env: &[(&str, &str)]) -> Run {
        let mut c = support::command("sh");
        c.current_dir(p.dir.path())
            .env_remove("DUCKSAFE_CONFIG")
            .env_remove("DUCKSAFE_FAILPOINT")
            .env_remove("DUCKSAFE_NOW")
            .env_remove("DUCKSAFE_DB_PATH")
            .env("RUN_NAME", name)
            .envs(env.iter().copied())
            .args(["-c", RUN_SH, "sh", env!("CARGO_BIN_EXE_ducksafe")])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = c.spawn().unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready", "the run's shell ended early");
        let pre: Response =
            serde_json::from_slice(&fs::read(p.path(&format!("{name}.pre.json"))).unwrap())
                .unwrap();
        assert_eq!(pre.decision, Decision::Proceed, "{pre:?}");
        Run {
            stdin: child.stdin.take(),
            child,
            post: p.path(&format!("{name}.post.json")),
            pre,
        }
    }

    fn backup_id(&self) -> String {
        self.pre.backup.as_ref().unwrap().id.clone()
    }

    /// The run ends with `code`: its post_run's answer.
    fn end(mut self, code: i32) -> Response {
        let mut stdin = self.stdin.take().unwrap();
        writeln!(stdin, "{code}").unwrap();
        drop(stdin);
        assert!(self.child.wait().unwrap().success());
        serde_json::from_slice(&fs::read(&self.post).unwrap()).unwrap()
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        if let Some(mut stdin) = self.stdin.take() {
            let _ = writeln!(stdin, "0");
            drop(stdin);
            let _ = self.child.wait();
        }
    }
}

/// A configuration file `name` of the database `db` with the backup directory `backups`.
fn config(p: &Project, name: &str, db: &str, backups: &str) -> String {
    let path = p.path(name);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(
        &path,
        format!(
            "DB_PATH: {db}\nLOG_LEVEL: INFO\nBACKUP_MIN_FREE_BYTES: 0\nBACKUP_DIR: {backups}\n"
        ),
    )
    .unwrap();
    path.display().to_string()
}

/// The ways one database is reached through a second backup directory: (what, ducksafe's
/// global arguments, environment), made in `p`.
type Other = (&'static str, Vec<String>, Vec<(&'static str, String)>);

fn other_ways(p: &Project) -> Vec<Other> {
    let db = p.db().display().to_string();
    let elsewhere = |n: &str| p.path(n).display().to_string();
    std::os::unix::fs::symlink(p.dir.path(), p.path("link")).unwrap();
    let link_db = format!("{}/simulation.duckdb", elsewhere("link"));
    let own = p.config().display().to_string();
    vec![
        (
            "a second configuration file",
            vec!["--config".into(), config(p, "b.yaml", &db, "backups-b")],
            Vec::new(),
        ),
        (
            "DUCKSAFE_BACKUP_DIR",
            vec!["--config".into(), own.clone()],
            vec![("DUCKSAFE_BACKUP_DIR", elsewhere("backups-env"))],
        ),
        (
            "--set BACKUP_DIR",
            vec![
                "--config".into(),
                own,
                "--set".into(),
                format!("BACKUP_DIR={}", elsewhere("backups-set")),
            ],
            Vec::new(),
        ),
        (
            "a symlinked folder",
            vec![
                "--config".into(),
                config(p, "c/link.yaml", &link_db, "backups-link"),
            ],
            Vec::new(),
        ),
        (
            "another relative path",
            vec![
                "--config".into(),
                config(p, "d/rel.yaml", "../d/../simulation.duckdb", "backups-rel"),
            ],
            Vec::new(),
        ),
    ]
}

/// The attack: two guarded runs of one database through two backup directories overlapped,
/// and the first run's failure-restore erased the second's work. Now, while the first run is in
/// progress, the second's pre_run, an operator's restore and a post_run restore through the
/// other directory are refused (`lock_busy`), and the database is untouched; once the first
/// run's post_run has restored and ended it, the second proceeds. Both ways round.
#[test]
fn runs_through_two_backup_directories_of_one_database_take_turns() {
    let p = Project::new("");
    let own: Vec<String> = vec!["--config".into(), p.config().display().to_string()];
    for (what, other, env) in other_ways(&p) {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        for (first, first_env, second, second_env) in [
            (&own, &[][..], &other, &env[..]),
            (&other, &env[..], &own, &[][..]),
        ] {
            let args = |a: &[String], more: &[&'static str]| -> Vec<String> {
                a.iter()
                    .cloned()
                    .chain(more.iter().map(|s| (*s).into()))
                    .collect()
            };
            let run = |a: Vec<String>, e: &[(&str, &str)]| {
                let a: Vec<&str> = a.iter().map(String::as_str).collect();
                answer(&p, &a, e)
            };
            let before = fingerprints(&p.db());
            let first_args: Vec<&str> = first.iter().map(String::as_str).collect();
            let running = Run::start(&p, "first", &first_args, first_env);
            let id = running.backup_id();
            let recorded = fs::read_to_string(lease::path_of(&p.db())).unwrap();
            assert!(recorded.contains(&id), "{what}: {recorded}");

            let (r, code) = run(args(second, &["pre-run"]), second_env);
            assert_eq!(code, 75, "{what}: the second pre_run: {r:?}");
            assert_eq!(r.errors[0].code, ErrorCode::LockBusy, "{what}");
            assert!(r.errors[0].message.contains(&id), "{what}: {r:?}");
            let restore = args(second, &["--json", "restore", "latest"]);
            let restore: Vec<&str> = restore.iter().map(String::as_str).collect();
            let out = ds(&p, &restore)
                .envs(second_env.iter().copied())
                .output()
                .unwrap();
            assert_exit(&out, 75);
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            assert_eq!(v["errors"][0]["code"], "lock_busy", "{what}: {v}");
            let (r, code) = run(
                args(
                    second,
                    &["post-run", "--exit-code", "1", "--on-failure", "restore"],
                ),
                second_env,
            );
            assert_eq!(code, 75, "{what}: another caller's post_run restore: {r:?}");
            assert_eq!(
                fingerprints(&p.db()),
                before,
                "{what}: the database changed"
            );

            let post = running.end(1);
            assert_eq!(post.decision, Decision::Restored, "{what}: {post:?}");
            assert!(
                !lease::path_of(&p.db()).exists(),
                "{what}: the post_run left its lease"
            );
            let (r, code) = run(args(second, &["pre-run"]), second_env);
            assert_eq!(code, 0, "{what}: after the first run's post_run: {r:?}");
            let (r, code) = run(args(second, &["post-run", "--exit-code", "0"]), second_env);
            assert_eq!(code, 0, "{what}: {r:?}");
            assert_eq!(r.decision, Decision::Kept, "{what}: {r:?}");
            assert!(!lease::path_of(&p.db()).exists(), "{what}");
        }
    }
}

/// The check and the record are one step per database: a pre_run paused after it found no run
/// in progress, before its backup is recorded, holds the database's turn, and a pre_run through
/// another backup directory meanwhile is refused (`lock_busy`) instead of going on beside it.
#[test]
fn a_pre_run_holds_the_databases_turn_from_its_check_to_its_record() {
    let p = Project::new("");
    let b = config(&p, "b.yaml", "simulation.duckdb", "backups-b");
    let mut first = ds(
        &p,
        &["--config", &p.config().display().to_string(), "pre-run"],
    );
    first.stdout(Stdio::piped());
    let first = paused(first, None, "backup.locked", &p.path("go")).unwrap();
    let (r, code) = answer(&p, &["--config", &b, "pre-run"], &[]);
    assert_eq!(code, 75, "{r:?}");
    assert_eq!(r.errors[0].code, ErrorCode::LockBusy, "{r:?}");
    assert!(
        r.errors[0]
            .message
            .contains("another ducksafe is starting, restoring or ending a guarded run"),
        "{r:?}"
    );
    assert!(!p.path("backups-b").join("latest.duckdb").exists());
    let out = first.release();
    assert!(out.status.success(), "{}", out.stderr);
    let recorded = fs::read_to_string(lease::path_of(&p.db())).unwrap();
    assert!(recorded.contains("\"backup_dir\""), "{recorded}");
}

/// A lease beside the database counts only while its process lives (PID and start time), and
/// whichever backup directory it names: PID 1 with its real start time refuses a pre_run; the
/// same PID with another start time (a reused PID) and a PID that is gone do not, and the run
/// recorded then replaces them. A stale lease an earlier version left in the backup directory
/// is removed when a run is recorded.
#[test]
fn a_stale_lease_beside_the_database_is_ignored() {
    let p = Project::new("");
    let gone = {
        let mut c = support::command("true").spawn().unwrap();
        let pid = c.id();
        c.wait().unwrap();
        pid
    };
    let start_of_1 = ducksafe::files::process_start(1).unwrap();
    let other_dir = p.path("backups-other");
    fs::create_dir(&other_dir).unwrap();
    for (pid, start, live) in [
        (1, start_of_1, true),
        (1, start_of_1 + 1, false),
        (gone, 12_345, false),
    ] {
        fs::write(
            lease::path_of(&p.db()),
            format!(
                r#"{{"pid":{pid},"start":{start},"backup_id":"x","backup_dir":{},"since":"2026-12-01T00:00:00Z"}}"#,
                support::jstr(&other_dir)
            ),
        )
        .unwrap();
        fs::create_dir_all(p.backups()).unwrap();
        fs::write(
            p.backups().join(lease::NAME),
            format!(r#"{{"pid":{gone},"start":1,"backup_id":"y","since":"2026-12-01T00:00:00Z"}}"#),
        )
        .unwrap();
        let (r, code) = p.pre_run();
        if live {
            assert_eq!(code, 75, "a live run's lease: {r:?}");
            assert_eq!(r.errors[0].code, ErrorCode::LockBusy);
            assert!(r.errors[0].message.contains("PID 1"), "{:?}", r.errors);
            assert!(
                r.errors[0]
                    .message
                    .contains(&other_dir.display().to_string()),
                "{:?}",
                r.errors
            );
        } else {
            assert_eq!(code, 0, "a lease of pid {pid}, start {start}: {r:?}");
            let recorded = fs::read_to_string(lease::path_of(&p.db())).unwrap();
            assert!(recorded.contains(&r.backup.unwrap().id), "{recorded}");
            assert!(!p.backups().join(lease::NAME).exists());
        }
    }
}

/// Rotation and `delete` keep the backup a live lease names in its own backup directory, and
/// only there: the same id in another backup directory of the database (one clock for both) is
/// rotated as any other. Once the run's post_run has ended it, its backup goes too.
#[test]
fn rotation_keeps_the_running_runs_backup_in_its_own_directory_only() {
    let p = Project::new("BACKUP_KEEP_LAST: 1\n");
    let own = p.config().display().to_string();
    let b = config(&p, "b.yaml", "simulation.duckdb", "backups-b");
    fs::write(
        &b,
        fs::read_to_string(&b).unwrap() + "BACKUP_KEEP_LAST: 1\n",
    )
    .unwrap();
    let at = |t: &str| [("DUCKSAFE_NOW", t.to_owned())];
    let t0 = "2026-03-01T10:00:00Z";
    let env0 = at(t0);
    let env0: Vec<(&str, &str)> = env0.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let running = Run::start(&p, "first", &["--config", &own], &env0);
    let id = running.backup_id();
    let backup = |dir: &str| p.path(dir).join(format!("{id}.duckdb"));
    let op = |config: &str, args: &[&str], t: &str| {
        let mut c = ds(&p, &["--config", config]);
        c.args(args).env("DUCKSAFE_NOW", t);
        c.output().unwrap()
    };
    // The same id in the other directory: not the run's.
    assert!(op(&b, &["backup"], t0).status.success());
    assert!(backup("backups-b").exists());
    assert!(op(&b, &["backup"], "2026-03-01T11:00:00Z").status.success());
    assert!(
        !backup("backups-b").exists(),
        "rotated in the other directory"
    );
    // In the run's own directory it stays, however many backups come, and `delete` refuses it.
    for t in ["2026-03-01T11:00:00Z", "2026-03-01T12:00:00Z"] {
        let out = op(&own, &["backup"], t);
        assert!(out.status.success(), "{}", support::stderr(&out));
        assert!(
            backup("backups").exists(),
            "the running run's backup was rotated"
        );
    }
    let out = op(&own, &["delete", &id], "2026-03-01T12:00:00Z");
    assert_exit(&out, 64);
    assert!(support::stderr(&out).contains("guarded run in progress"));
    // Its post_run ends it: the next rotation takes it.
    assert_eq!(running.end(0).decision, Decision::Kept);
    assert!(op(&own, &["backup"], "2026-03-01T13:00:00Z")
        .status
        .success());
    assert!(!backup("backups").exists(), "kept after its run ended");
}

/// A database on read-only media cannot hold a file beside it, and no run can change it: its
/// pre_run proceeds as before, silently, with the run recorded in the backup directory, where
/// a second caller through that directory finds it and the run's post_run ends it.
#[test]
fn a_database_on_read_only_media_keeps_its_lease_in_the_backup_directory() {
    let p = Project::new("");
    fs::create_dir(p.path("ro")).unwrap();
    fs::rename(p.db(), p.path("ro/simulation.duckdb")).unwrap();
    let cfg = config(&p, "ro.yaml", "ro/simulation.duckdb", "backups");
    let case = "a_database_on_read_only_media_keeps_its_lease_in_the_backup_directory";
    let Some(_ro) = mounted(case, Mount::read_only(&p.path("ro"))) else {
        return;
    };
    let running = Run::start(&p, "first", &["--config", &cfg], &[]);
    assert!(
        running.pre.warnings.is_empty(),
        "{:?}",
        running.pre.warnings
    );
    let in_dir = p.backups().join(lease::NAME);
    assert!(in_dir.exists());
    assert!(!lease::path_of(&p.path("ro/simulation.duckdb")).exists());
    let (r, code) = answer(&p, &["--config", &cfg, "pre-run"], &[]);
    assert_eq!(code, 75, "{r:?}");
    assert_eq!(r.errors[0].code, ErrorCode::LockBusy, "{r:?}");
    assert_eq!(running.end(0).decision, Decision::Kept);
    assert!(!in_dir.exists(), "the post_run left the lease");
}

/// Where the lease of a database is: beside it, named after it, hidden.
#[test]
fn the_lease_is_beside_the_database() {
    assert_eq!(
        lease::path_of(Path::new("/srv/sim/simulation.duckdb")),
        Path::new("/srv/sim/.simulation.duckdb.ducksafe-run")
    );
}

/// A post_run that names no backup (`ducksafe post-run --exit-code 1` in a recipe) restores the
/// backup its run's pre_run took, as the run's record says, not `latest`: an operator's backup
/// taken during the run holds the run's half-done work.
#[test]
fn a_post_run_naming_no_backup_restores_the_runs_own_backup() {
    let p = Project::new("RESTORE_ON_FAILURE: true\n");
    let (r, code) = p.pre_run();
    assert_eq!(code, 0, "{r:?}");
    let taken = r.backup.unwrap();
    write_rows(&p.db(), 1);
    let out = p.run(&["backup"]);
    support::assert_ok(&out);
    write_rows(&p.db(), 2);
    let out = p.run(&["post-run", "--exit-code", "1"]);
    let r = one_response(&out);
    assert_eq!(
        (out.status.code(), r.decision),
        (Some(0), Decision::Restored),
        "{r:?}"
    );
    assert_eq!(
        support::sha256(&p.db()),
        taken.sha256,
        "the run's own backup is back"
    );
    assert!(
        r.warnings.iter().any(|w| w.contains(&format!(
            "restoring `{}`, the backup the run's pre_run took",
            taken.id
        ))),
        "{:?}",
        r.warnings
    );
}

/// A pre_run that answers `abort` after its backup was published (a panic in the conversion
/// or the rotation) records no run: nothing is left to block the next run or a restore.
#[test]
fn a_pre_run_that_aborts_after_publishing_records_no_run() {
    let p = Project::new("");
    let (r, code) = p.pre_run_env(&[("DUCKSAFE_FAILPOINT", "rotation.done:panic")]);
    assert_eq!((code, r.decision), (70, Decision::Abort), "{r:?}");
    assert!(p.backup_files().len() == 1, "the backup was published");
    let beside = lease::path_of(&p.db());
    let recorded = fs::read(&beside).unwrap_or_default();
    assert!(
        recorded.is_empty(),
        "{}",
        String::from_utf8_lossy(&recorded)
    );
    assert!(!p.backups().join(".ducksafe-run.json").exists());
}

/// Rows a run writes (checkpointed): the database differs from every earlier state.
fn write_rows(db: &Path, run: i32) {
    let d = ducksafe::duck::Db::open_read_write(db, &ducksafe::duck::Limits::default()).unwrap();
    d.execute_batch(&format!(
        "UPDATE employees SET current_compensation = current_compensation + {run};"
    ))
    .unwrap();
    d.close().unwrap();
}
