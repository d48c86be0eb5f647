//! `hooks/ducksafe-dbt` around the real dbt (dbt-duckdb) and around a stand-in that records its
//! arguments: which subcommands are protected, how a run is judged, interruptions.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::support::{assert_exit, assert_ok, fingerprints, hold, sha256};

use ducksafe::protocol::{Decision, ErrorCode, Outcome, Response};

use super::{
    command, is_running, job_command, python_with_duckdb, repo, rows, run, saved, send_signal,
    text, tool, Job,
};

/// A copy of examples/dbt_workforce in a temp dir (without what earlier local runs left).
fn dbt_project() -> tempfile::TempDir {
    fn copy(from: &Path, to: &Path) {
        fs::create_dir_all(to).unwrap();
        for e in fs::read_dir(from).unwrap() {
            let e = e.unwrap();
            let name = e.file_name();
            let n = name.to_string_lossy();
            if ["target", "logs", "backups", "dbt_packages"].contains(&n.as_ref())
                || n.contains(".duckdb")
            {
                continue;
            }
            if e.file_type().unwrap().is_dir() {
                copy(&e.path(), &to.join(&name));
            } else {
                fs::copy(e.path(), to.join(&name)).unwrap();
            }
        }
    }
    let dir = tempfile::tempdir().unwrap();
    copy(&repo().join("examples/dbt_workforce"), dir.path());
    dir
}

fn dbt_wrapper(dir: &Path, args: &[&str]) -> Output {
    run(command(&repo().join("hooks/ducksafe-dbt"), dir)
        .current_dir(dir)
        .args(args))
}

/// The first `dbt build` of a fresh copy: no database yet, so the wrapper runs dbt as is and
/// dbt-duckdb creates workforce.duckdb.
fn first_build(dir: &Path) -> PathBuf {
    let out = dbt_wrapper(dir, &["build", "--profiles-dir", "."]);
    assert!(out.status.success());
    assert!(text(&out.stderr).contains("does not exist yet: nothing to back up"));
    let db = dir.join("workforce.duckdb");
    assert!(db.exists());
    assert!(
        !dir.join("backups").exists(),
        "nothing to back up, nothing written"
    );
    db
}

#[test]
fn dbt_build_through_the_wrapper_leaves_a_verified_backup_and_the_runs_changes() {
    need!(tool("dbt"));
    let dir = dbt_project();
    let db = first_build(dir.path());
    let before = fingerprints(&db);
    let out = dbt_wrapper(
        dir.path(),
        &[
            "build",
            "--vars",
            "{simulation_year: 2026}",
            "--ducksafe-state-dir",
            "st",
        ],
    );
    assert_ok(&out);
    let st = dir.path().join("st");
    let pre = saved(&st, "pre_run").unwrap();
    assert_eq!(pre.decision, Decision::Proceed);
    let backup = pre.backup.unwrap();
    assert!(backup.verified && backup.verification.len() == 6);
    assert_eq!(fingerprints(Path::new(&backup.path)), before);
    assert_eq!(saved(&st, "post_run").unwrap().decision, Decision::Kept);
    let after = fingerprints(&db);
    assert_eq!(
        rows(&after, "fct_yearly_events"),
        2 * rows(&before, "fct_yearly_events"),
        "2026 was added to 2025"
    );
    assert!(text(&out.stderr).contains("node(s) succeeded: the run succeeded"));
}

fn dbt_wrapper_env(dir: &Path, args: &[&str], env: &[(&str, &Path)]) -> Output {
    let mut c = command(&repo().join("hooks/ducksafe-dbt"), dir);
    c.current_dir(dir).args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    run(&mut c)
}

/// A python model that kills dbt once the models before it have committed, as an
/// out-of-memory kill would: no checkpoint, so their changes stay in the WAL.
const CRASH_MODEL: &str = "import os\n\n\ndef model(dbt, session):\n    dbt.config(materialized=\"table\")\n    snapshot = dbt.ref(\"fct_workforce_snapshot\")\n    os._exit(3)\n    return snapshot\n";

#[test]
fn dbt_run_that_dies_after_changes_is_rolled_back_and_the_restored_file_opens_in_python() {
    need!(tool("dbt"));
    let python = need!(python_with_duckdb());
    let dir = dbt_project();
    let db = first_build(dir.path());
    fs::write(dir.path().join("models/marts/zz_crash.py"), CRASH_MODEL).unwrap();
    let out = dbt_wrapper(
        dir.path(),
        &[
            "--ducksafe-on-failure",
            "restore",
            "build",
            "--profiles-dir",
            ".",
            "--target",
            "dev",
            "--vars",
            "{simulation_year: 2027}",
            "--ducksafe-state-dir",
            "st",
        ],
    );
    assert_exit(&out, 3); // dbt's own exit code
    assert!(text(&out.stderr).contains("run_results.json is from an earlier invocation"));
    let st = dir.path().join("st");
    let backup = saved(&st, "pre_run").unwrap().backup.unwrap();
    let expected = fingerprints(Path::new(&backup.path));
    let post = saved(&st, "post_run").unwrap();
    assert_eq!(post.decision, Decision::Restored);
    let restore = post.restore.unwrap();
    assert_eq!(
        fingerprints(&db),
        expected,
        "the database equals its backup"
    );
    assert!(!dir.path().join("workforce.duckdb.wal").exists());
    let wal = Path::new(&restore.quarantine).join("workforce.duckdb.wal");
    assert!(
        restore
            .quarantined_files
            .contains(&wal.display().to_string()),
        "{restore:?}"
    );
    let crashed = fingerprints(&Path::new(&restore.quarantine).join("workforce.duckdb"));
    assert!(
        rows(&crashed, "fct_yearly_events") > rows(&expected, "fct_yearly_events"),
        "the crashed run had committed its 2027 events"
    );

    // The file ducksafe put back opens in Python's DuckDB (the version dbt-duckdb uses), for
    // writing, and holds no trace of the crashed run.
    let out = run(command(&python, dir.path()).arg("-c").arg(
            "import duckdb, sys\nc = duckdb.connect(sys.argv[1])\nprint(duckdb.__version__, *c.execute('select count(*) filter (where simulation_year = 2027), count(*) from fct_yearly_events').fetchone())\nc.close()",
        ).arg(&db));
    assert!(out.status.success());
    assert_eq!(
        text(&out.stdout).trim(),
        format!("2.0.0 0 {}", rows(&expected, "fct_yearly_events"))
    );
}

#[test]
fn dbt_failed_model_is_judged_from_run_results_and_rolled_back_by_the_configuration() {
    need!(tool("dbt"));
    let dir = dbt_project();
    let db = first_build(dir.path());
    // The profile from $DBT_PROFILES_DIR; the database and RESTORE_ON_FAILURE from config.yaml.
    let out = dbt_wrapper_env(
        dir.path(),
        &[
            "build",
            "--ducksafe-config",
            "config.yaml",
            "--vars",
            "{simulation_year: 2027, fail_simulation: true}",
            "--ducksafe-state-dir",
            "st",
        ],
        &[("DBT_PROFILES_DIR", dir.path())],
    );
    assert_exit(&out, 1);
    assert!(
        text(&out.stderr).contains("1 node(s) failed: model.dbt_workforce.fct_yearly_events"),
        "judged from run_results.json"
    );
    let st = dir.path().join("st");
    let pre = saved(&st, "pre_run").unwrap();
    assert_eq!(
        pre.paths["config"],
        dir.path().join("config.yaml").display().to_string()
    );
    let backup = pre.backup.unwrap();
    assert_eq!(saved(&st, "post_run").unwrap().decision, Decision::Restored);
    assert_eq!(fingerprints(&db), fingerprints(Path::new(&backup.path)));
}

#[test]
fn dbt_is_not_started_while_a_writer_holds_the_database() {
    need!(tool("dbt"));
    let dir = dbt_project();
    let db = first_build(dir.path());
    let results = dir.path().join("target/run_results.json");
    let results_before = fs::read(&results).unwrap();
    let before = sha256(&db);
    let holder = hold(&db);
    let out = dbt_wrapper(dir.path(), &["run", "--ducksafe-state-dir", "st"]);
    drop(holder);
    assert_exit(&out, 75);
    assert!(text(&out.stderr).contains("dbt was not started"));
    let st = dir.path().join("st");
    let pre = saved(&st, "pre_run").unwrap();
    assert_eq!(pre.decision, Decision::Abort);
    assert_eq!(pre.errors[0].code, ErrorCode::DatabaseLocked);
    assert!(pre.errors[0].retryable);
    assert!(saved(&st, "post_run").is_none());
    assert_eq!(
        fs::read(&results).unwrap(),
        results_before,
        "dbt did not run"
    );
    assert_eq!(sha256(&db), before);
    let backups = dir.path().join("backups");
    let published = fs::read_dir(&backups).map_or(0, |rd| {
        rd.filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().ends_with(".duckdb"))
            .count()
    });
    assert_eq!(published, 0, "no backup was published");
}

/// A stand-in for dbt: records its arguments; with FAKE_DBT_STATUS writes a fresh
/// run_results.json with one node of that status (for `dbt $FAKE_DBT_WHICH`, default the first
/// argument); dies of FAKE_DBT_SIGNAL, else exits FAKE_DBT_EXIT.
const FAKE_DBT: &str = r#"#!/bin/sh
printf '%s\n' "$@" > "$FAKE_DBT_ARGS"
if [ -n "${FAKE_DBT_STATUS:-}" ]; then
  mkdir -p target
  printf '{"metadata":{"invocation_id":"fake-%s","generated_at":"%s"},"args":{"which":"%s"},"results":[{"unique_id":"model.dbt_workforce.x","status":"%s"}]}\n' \
    "$$" "$(date -u +%Y-%m-%dT%H:%M:%S.000000Z)" "${FAKE_DBT_WHICH:-$1}" "$FAKE_DBT_STATUS" > target/run_results.json
fi
[ -z "${FAKE_DBT_SIGNAL:-}" ] || kill -s "$FAKE_DBT_SIGNAL" $$
exit "${FAKE_DBT_EXIT:-0}"
"#;

/// A dbt project copy with a bundled-engine database and the fake dbt.
struct FakeDbt {
    dir: tempfile::TempDir,
}

impl FakeDbt {
    fn new() -> FakeDbt {
        let dir = dbt_project();
        ducksafe::demo::create_sized(&dir.path().join("workforce.duckdb"), 50, 200).unwrap();
        let fake = dir.path().join("fake-dbt");
        fs::write(&fake, FAKE_DBT).unwrap();
        fs::set_permissions(&fake, fs::Permissions::from_mode(0o755)).unwrap();
        FakeDbt { dir }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Runs the wrapper; returns its output and the arguments dbt was given ("" if not run).
    fn run(&self, args: &[&str], env: &[(&str, &str)]) -> (Output, String) {
        let d = self.dir.path();
        let args_file = self.path("dbt-args");
        let mut c = command(&repo().join("hooks/ducksafe-dbt"), d);
        c.current_dir(d)
            .args(args)
            .env("DBT", self.path("fake-dbt"))
            .env("FAKE_DBT_ARGS", &args_file);
        for (k, v) in env {
            c.env(k, v);
        }
        let out = run(&mut c);
        let seen = fs::read_to_string(&args_file).unwrap_or_default();
        let _ = fs::remove_file(&args_file);
        (out, seen)
    }

    fn saved(&self, name: &str) -> Response {
        saved(&self.path("st"), name).unwrap()
    }
}

/// Subcommands that can write without building models are protected too, and judged by dbt's
/// exit code: `run-operation` (a macro may run any SQL), `clone`, `test --store-failures`;
/// a plain `test` writes nothing and passes through.
#[test]
fn dbt_wrapper_protects_run_operation_clone_and_stored_test_failures() {
    need!(tool("dbt")); // its Python (with dbt's own command line) runs the wrapper
    let f = FakeDbt::new();
    for (args, exit, decision) in [
        (&["run-operation", "wipe"][..], "0", Decision::Kept),
        (&["clone"][..], "0", Decision::Kept),
        (&["test", "--store-failures"][..], "0", Decision::Kept),
        (&["run-operation", "wipe"][..], "1", Decision::Restored),
    ] {
        let _ = fs::remove_dir_all(f.path("st"));
        let mut all: Vec<&str> = args.to_vec();
        all.extend([
            "--ducksafe-on-failure",
            "restore",
            "--ducksafe-state-dir",
            "st",
        ]);
        let (out, seen) = f.run(&all, &[("FAKE_DBT_EXIT", exit)]);
        assert!(!seen.is_empty(), "{args:?}: dbt was not started");
        assert_eq!(f.saved("pre_run").decision, Decision::Proceed, "{args:?}");
        assert_eq!(
            f.saved("post_run").decision,
            decision,
            "{args:?} exit {exit}: {}",
            text(&out.stderr)
        );
    }
    let _ = fs::remove_dir_all(f.path("st"));
    let (_, seen) = f.run(&["test", "--ducksafe-state-dir", "st"], &[]);
    assert!(!seen.is_empty());
    assert!(
        !f.path("st/pre_run.json").exists(),
        "a plain test needs no backup"
    );
}

/// A profile path the wrapper cannot work out (Jinja other than `env_var`) is refused even with
/// `--ducksafe-config`: its DB_PATH could name another file than the one dbt writes.
#[test]
fn dbt_wrapper_refuses_a_profile_path_it_cannot_resolve_even_with_a_configuration() {
    need!(tool("dbt")); // its Python (with PyYAML) runs the wrapper
    let f = FakeDbt::new();
    let profiles = f.path("profiles.yml");
    let jinja = fs::read_to_string(&profiles).unwrap().replace(
        "{{ env_var('DBT_WORKFORCE_DB', 'workforce.duckdb') }}",
        "{{ 'prod' if target.name == 'dev' else 'x' }}.duckdb",
    );
    fs::write(&profiles, jinja).unwrap();
    let (out, seen) = f.run(
        &[
            "--ducksafe-config",
            "config.yaml",
            "build",
            "--profiles-dir",
            ".",
        ],
        &[],
    );
    assert_exit(&out, 2);
    assert!(seen.is_empty(), "dbt was started");
    assert!(
        !f.path("backups").exists(),
        "a backup of another file was taken"
    );
}

#[test]
fn dbt_wrapper_judges_the_run_by_exit_code_and_this_invocations_run_results() {
    need!(tool("dbt")); // its Python (with PyYAML) runs the wrapper
    let f = FakeDbt::new();

    // dbt says 0 but wrote no run_results.json of its own: a failure, rolled back.
    let (out, seen) = f.run(
        &[
            "--ducksafe-on-failure=restore",
            "run",
            "--vars",
            "{simulation_year: 2030}",
            "--full-refresh",
            "--ducksafe-state-dir",
            "st",
        ],
        &[],
    );
    assert_eq!(
        seen, "run\n--vars\n{simulation_year: 2030}\n--full-refresh\n",
        "every other argument untouched"
    );
    assert_exit(&out, 1);
    assert!(text(&out.stderr).contains("run_results.json is missing"));
    assert_eq!(f.saved("post_run").decision, Decision::Restored);

    // Fresh results, one node failed, exit 0 anyway: a failure; kept as asked.
    let (out, _) = f.run(
        &[
            "build",
            "--ducksafe-on-failure",
            "keep",
            "--ducksafe-state-dir",
            "st",
        ],
        &[("FAKE_DBT_STATUS", "error")],
    );
    assert_exit(&out, 1);
    assert!(text(&out.stderr).contains("1 node(s) failed: model.dbt_workforce.x"));
    assert_eq!(f.saved("post_run").decision, Decision::Kept);

    // Fresh, successful results and exit 0: success.
    let (out, _) = f.run(
        &["seed", "--ducksafe-state-dir", "st"],
        &[("FAKE_DBT_STATUS", "success")],
    );
    assert_ok(&out);
    assert_eq!(f.saved("post_run").decision, Decision::Kept);

    // ...but results of another command are not this run's. (`json` is an option's value, not
    // the subcommand: the backup is taken for `snapshot`.)
    let (out, seen) = f.run(
        &[
            "--ducksafe-state-dir",
            "st",
            "--log-format",
            "json",
            "snapshot",
        ],
        &[("FAKE_DBT_STATUS", "success"), ("FAKE_DBT_WHICH", "run")],
    );
    assert_eq!(seen, "--log-format\njson\nsnapshot\n");
    assert_exit(&out, 1);
    assert!(text(&out.stderr).contains("is from `dbt run`, not `dbt snapshot`"));
    assert_eq!(f.saved("pre_run").decision, Decision::Proceed);

    // dbt's exit code wins when it is not 0.
    let (out, _) = f.run(&["run"], &[("FAKE_DBT_EXIT", "2")]);
    assert_exit(&out, 2);
}

#[test]
fn dbt_wrapper_finds_the_targets_database_and_passes_other_commands_through() {
    need!(tool("dbt")); // its Python (with PyYAML) runs the wrapper
    let f = FakeDbt::new();

    // Not a writing command: dbt runs as is, no backup.
    let (out, seen) = f.run(
        &[
            "test",
            "--select",
            "stg_census",
            "--ducksafe-state-dir",
            "st",
        ],
        &[],
    );
    assert_ok(&out);
    assert_eq!(seen, "test\n--select\nstg_census\n");
    assert!(!f.path("backups").exists());

    // The selected target: `ci` writes a file that does not exist yet, so no backup.
    let (out, seen) = f.run(&["run", "-t", "ci"], &[]);
    assert_ok(&out);
    assert_eq!(seen, "run\n-t\nci\n");
    assert!(text(&out.stderr).contains("ci_workforce.duckdb` does not exist yet"));
    assert!(!f.path("backups").exists());

    // env_var() in the profile's path.
    fs::copy(f.path("workforce.duckdb"), f.path("other.duckdb")).unwrap();
    let (out, _) = f.run(
        &["run", "--ducksafe-state-dir", "st"],
        &[
            ("DBT_WORKFORCE_DB", "other.duckdb"),
            ("FAKE_DBT_STATUS", "success"),
        ],
    );
    assert_ok(&out);
    assert_eq!(
        f.saved("pre_run").paths["db_path"],
        f.path("other.duckdb").display().to_string()
    );

    // A configuration that protects another file than the target writes: refused.
    fs::write(
        f.path("config.other.yaml"),
        "DB_PATH: other.duckdb\nLOG_LEVEL: INFO\n",
    )
    .unwrap();
    let (out, seen) = f.run(&["--ducksafe-config", "config.other.yaml", "run"], &[]);
    assert_exit(&out, 2);
    assert!(seen.is_empty(), "dbt did not run");
    assert!(text(&out.stderr).contains("protects"));

    // A profile that is not there: refused, with the path in the message.
    let (out, _) = f.run(&["run", "--profile", "nope"], &[]);
    assert_exit(&out, 2);
    assert!(text(&out.stderr).contains("has no profile `nope`"));

    // Bad usage of the wrapper itself.
    let (out, seen) = f.run(&["run", "--ducksafe-on-failure", "maybe"], &[]);
    assert_exit(&out, 64);
    assert!(seen.is_empty());
}

/// A python model that marks its PID, then waits for the test to release it (bounded): a slow
/// model, after the models before it have committed.
const BLOCK_MODEL: &str = r#"import os
import time


def model(dbt, session):
    dbt.config(materialized="table")
    snapshot = dbt.ref("fct_workforce_snapshot")
    marker = os.environ["DUCKSAFE_TEST_MARKER"]
    with open(marker + ".tmp", "w") as f:
        f.write(str(os.getpid()))
    os.replace(marker + ".tmp", marker)
    for _ in range(3000):  # the safety bound; the test releases it long before
        if os.path.exists(marker + ".release"):
            break
        time.sleep(0.1)
    return snapshot
"#;

/// A dbt project with the blocking model, built once; the wrapper's command for a build of
/// 2027 that blocks in it.
fn blocking_dbt(dir: &Path, program: &Path, args: &[&str], session: bool) -> Option<Command> {
    fs::write(dir.join("models/marts/zz_block.py"), BLOCK_MODEL).unwrap();
    let mut c = job_command(program, dir, session)?;
    c.args(args)
        .args([
            "--ducksafe-on-failure",
            "restore",
            "build",
            "--profiles-dir",
            ".",
        ])
        .args([
            "--vars",
            "{simulation_year: 2027}",
            "--ducksafe-state-dir",
            "st",
        ])
        .env("DUCKSAFE_TEST_MARKER", dir.join("blocked"));
    Some(c)
}

/// After an interrupted dbt: dbt is gone, post_run restored the pre-run backup, the run is
/// reported as failed, and the wrapper's own stack never shows.
fn dbt_interrupted(dir: &Path, db: &Path, dbt_pid: u32, out: &Output) {
    assert!(!is_running(dbt_pid), "dbt did not outlive the wrapper");
    let stderr = text(&out.stderr);
    assert!(
        !stderr.contains("hooks/ducksafe-dbt\", line"),
        "no traceback of the wrapper"
    );
    assert!(stderr.contains("interrupted by SIG"), "{stderr}");
    let st = dir.join("st");
    let backup = saved(&st, "pre_run").unwrap().backup.unwrap();
    let expected = fingerprints(Path::new(&backup.path));
    let post = saved(&st, "post_run").expect("post_run.json");
    assert_eq!(post.decision, Decision::Restored, "{post:?}");
    assert_eq!(post.run.unwrap().outcome, Outcome::Failure);
    assert_eq!(fingerprints(db), expected, "the database equals its backup");
    assert!(!dir.join("workforce.duckdb.wal").exists());
    let crashed =
        fingerprints(&Path::new(&post.restore.unwrap().quarantine).join("workforce.duckdb"));
    assert_ne!(crashed, expected, "the interrupted run had written");
}

#[test]
fn dbt_wrapper_restores_a_build_interrupted_by_ctrl_c() {
    need!(tool("dbt"));
    let dir = dbt_project();
    let db = first_build(dir.path());
    let wrapper = repo().join("hooks/ducksafe-dbt");
    let mut c = need!(blocking_dbt(dir.path(), &wrapper, &[], true));
    let mut job = Job::start(&mut c, dir.path());
    let dbt_pid = job.wait_for(&dir.path().join("blocked"));
    job.assert_session_leader();
    send_signal("INT", &format!("-{}", job.pid()));
    // dbt waits for its running model before it stops; the model ends when released.
    fs::write(dir.path().join("blocked.release"), "").unwrap();
    let out = job.finish();
    assert_eq!(
        out.status.signal(),
        Some(2),
        "ended by SIGINT, as a shell expects"
    );
    dbt_interrupted(dir.path(), &db, dbt_pid, &out);
}

#[test]
fn dbt_wrapper_under_timeout_restores_then_exits_124() {
    need!(tool("dbt"));
    let timeout = need!(tool("timeout"));
    let dir = dbt_project();
    let db = first_build(dir.path());
    let wrapper = repo().join("hooks/ducksafe-dbt");
    let args = ["600", wrapper.to_str().unwrap()];
    let mut c = need!(blocking_dbt(dir.path(), &timeout, &args, false));
    let mut job = Job::start(&mut c, dir.path());
    let dbt_pid = job.wait_for(&dir.path().join("blocked"));
    // SIGALRM is timeout's own timer: it acts now exactly as when the 600 s are up (SIGTERM to
    // its process group, exit 124).
    send_signal("ALRM", &job.pid().to_string());
    let out = job.finish();
    assert_exit(&out, 124);
    dbt_interrupted(dir.path(), &db, dbt_pid, &out);
    assert!(text(&out.stderr).contains("interrupted by SIGTERM"));
}

#[test]
fn dbt_wrapper_passes_sigterm_on_to_dbt() {
    need!(tool("dbt"));
    let dir = dbt_project();
    let db = first_build(dir.path());
    let wrapper = repo().join("hooks/ducksafe-dbt");
    let mut c = need!(blocking_dbt(dir.path(), &wrapper, &[], false));
    let mut job = Job::start(&mut c, dir.path());
    let dbt_pid = job.wait_for(&dir.path().join("blocked"));
    send_signal("TERM", &job.pid().to_string()); // the wrapper alone, not its group
    let out = job.finish();
    assert_eq!(out.status.signal(), Some(15));
    dbt_interrupted(dir.path(), &db, dbt_pid, &out);
}

#[test]
fn dbt_wrapper_judges_a_run_told_not_to_write_run_results_by_its_exit_code() {
    need!(tool("dbt"));
    let dir = dbt_project();
    let db = first_build(dir.path());
    let before = fingerprints(&db);
    let st = dir.path().join("st");
    // The run_results.json in target/ is the first build's: stale, yet the run is good.
    let out = dbt_wrapper(
        dir.path(),
        &[
            "--ducksafe-on-failure",
            "restore",
            "build",
            "--no-write-json",
        ]
        .into_iter()
        .chain([
            "--vars",
            "{simulation_year: 2026}",
            "--ducksafe-state-dir",
            "st",
        ])
        .collect::<Vec<_>>(),
    );
    assert_ok(&out); // a good run, not restored
    assert!(text(&out.stderr).contains("(--no-write-json): judged by its exit code alone"));
    assert_eq!(saved(&st, "post_run").unwrap().decision, Decision::Kept);
    let after_2026 = fingerprints(&db);
    assert_eq!(
        rows(&after_2026, "fct_yearly_events"),
        2 * rows(&before, "fct_yearly_events"),
        "2026 was added to 2025"
    );

    // DBT_WRITE_JSON=false, and the run fails: restored.
    let mut c = command(&repo().join("hooks/ducksafe-dbt"), dir.path());
    c.current_dir(dir.path())
        .env("DBT_WRITE_JSON", "false")
        .args([
            "--ducksafe-on-failure",
            "restore",
            "run",
            "--ducksafe-state-dir",
            "st",
        ])
        .args(["--vars", "{simulation_year: 2027, fail_simulation: true}"]);
    let out = run(&mut c);
    assert_exit(&out, 1); // dbt's exit code
    assert!(text(&out.stderr).contains("(DBT_WRITE_JSON=false): judged by its exit code alone"));
    assert_eq!(saved(&st, "post_run").unwrap().decision, Decision::Restored);
    assert_eq!(fingerprints(&db), after_2026);
}

#[test]
fn dbt_wrapper_protects_retry_and_finds_build_after_indirect_selection() {
    need!(tool("dbt"));
    let dir = dbt_project();
    let db = first_build(dir.path());
    let st = dir.path().join("st");
    // `eager` is --indirect-selection's value; `build` is the subcommand: backed up.
    let out = dbt_wrapper(
        dir.path(),
        &[
            "--indirect-selection",
            "eager",
            "build",
            "--ducksafe-state-dir",
            "st",
        ],
    );
    assert_ok(&out);
    assert_eq!(saved(&st, "pre_run").unwrap().decision, Decision::Proceed);
    assert_eq!(saved(&st, "post_run").unwrap().decision, Decision::Kept);

    // A failed build, kept; then `dbt retry` gets its own backup and, failing again, is rolled
    // back to it.
    let out = dbt_wrapper(
        dir.path(),
        &[
            "--ducksafe-on-failure",
            "keep",
            "build",
            "--ducksafe-state-dir",
            "st",
        ]
        .into_iter()
        .chain(["--vars", "{simulation_year: 2027, fail_simulation: true}"])
        .collect::<Vec<_>>(),
    );
    assert_exit(&out, 1);
    assert_eq!(saved(&st, "post_run").unwrap().decision, Decision::Kept);
    let out = dbt_wrapper(
        dir.path(),
        &[
            "--ducksafe-on-failure",
            "restore",
            "retry",
            "--ducksafe-state-dir",
            "st",
        ],
    );
    assert_exit(&out, 1);
    assert!(
        text(&out.stderr).contains("node(s) failed"),
        "judged from retry's results"
    );
    let pre = saved(&st, "pre_run").unwrap();
    assert_eq!(pre.decision, Decision::Proceed, "retry was backed up");
    assert!(pre.request_id.starts_with("dbt-retry-"));
    let post = saved(&st, "post_run").unwrap();
    assert_eq!(post.decision, Decision::Restored);
    assert_eq!(
        fingerprints(&db),
        fingerprints(Path::new(&pre.backup.unwrap().path))
    );
}

#[test]
fn dbt_wrapper_refuses_a_subcommand_it_cannot_tell_and_says_137_for_a_kill() {
    need!(tool("dbt")); // its Python (with dbt's own command line) runs the wrapper
    let f = FakeDbt::new();
    for args in [&["frobnicate", "build"][..], &["--frobnicate", "build"]] {
        let (out, seen) = f.run(args, &[]);
        assert_eq!(out.status.code(), Some(64), "{args:?}");
        assert!(seen.is_empty(), "dbt was not started");
        assert!(text(&out.stderr).contains("cannot tell which dbt subcommand"));
    }
    let (out, seen) = f.run(&["--version"], &[]);
    assert_eq!((out.status.code(), seen.as_str()), (Some(0), "--version\n"));
    let (out, seen) = f.run(
        &[
            "--indirect-selection",
            "eager",
            "build",
            "--ducksafe-state-dir",
            "st",
        ],
        &[("FAKE_DBT_STATUS", "success"), ("FAKE_DBT_WHICH", "build")],
    );
    assert_ok(&out);
    assert_eq!(seen, "--indirect-selection\neager\nbuild\n");
    assert_eq!(f.saved("pre_run").decision, Decision::Proceed);
    // `dbt -- build` builds (dbt takes the word after `--` as the subcommand): protected too,
    // and a word after `--` that is no subcommand is refused, never run unprotected.
    let (out, seen) = f.run(
        &["--", "build", "--ducksafe-state-dir", "st2"],
        &[("FAKE_DBT_STATUS", "success"), ("FAKE_DBT_WHICH", "build")],
    );
    assert_ok(&out);
    assert_eq!(seen, "--\nbuild\n");
    assert!(
        text(&out.stderr).contains("created and verified"),
        "`-- build` ran without a backup: {}",
        text(&out.stderr)
    );
    let (out, seen) = f.run(&["--", "frobnicate"], &[]);
    assert_exit(&out, 64);
    assert!(seen.is_empty(), "dbt was not started");

    // dbt killed (SIGKILL, as the OOM killer does): 128 + 9, as shells say.
    let (out, _) = f.run(
        &[
            "--ducksafe-on-failure",
            "restore",
            "run",
            "--ducksafe-state-dir",
            "st",
        ],
        &[("FAKE_DBT_SIGNAL", "KILL")],
    );
    assert_exit(&out, 137);
    let post = f.saved("post_run");
    assert_eq!(post.decision, Decision::Restored);
    assert_eq!(post.run.unwrap().exit_code, Some(137));
}
