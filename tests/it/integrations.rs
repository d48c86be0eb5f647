//! The callers in `hooks/` and `examples/`, each driven by the real program: `just`, `make`,
//! `python3` (the orchestrator example) and `dbt` (dbt-duckdb) run the real binary on real
//! DuckDB files. For each caller: a successful run leaves a verified backup and the run's
//! changes; a run that dies after committing changes ends with the database equal to its
//! pre-run backup, the WAL it left in quarantine and a non-zero exit; a database held by another
//! writer stops the run before it starts, with the retryable code.
//!
//! The tools come from `bash .ci/setup-integrations.sh` ($DUCKSAFE_TOOLS/bin, default
//! ~/.cache/ducksafe-tools/bin), else PATH. A missing tool fails the test under CI (env `CI`
//! set) and skips it, with a message, elsewhere.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::support::{self, fingerprints, hold, sha256, Project};
use ducksafe::duck::Fingerprint;
use ducksafe::protocol::{Decision, ErrorCode, Outcome, Response};

// --- finding the tools -----------------------------------------------------------------------

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn ducksafe_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_ducksafe"))
}

fn tools_dir() -> PathBuf {
    std::env::var_os("DUCKSAFE_TOOLS").map_or_else(
        || {
            let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
            Path::new(&home).join(".cache/ducksafe-tools")
        },
        PathBuf::from,
    )
}

fn search_path() -> Vec<PathBuf> {
    let mut dirs = vec![tools_dir().join("bin")];
    dirs.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    ));
    dirs
}

fn is_executable(p: &Path) -> bool {
    fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// What a test does when a tool is missing: fail under CI, else say so and skip.
fn missing<T>(what: &str) -> Option<T> {
    let tools = tools_dir();
    support::skip(
        what,
        &format!(
            "`{what}` is not in {}/bin or PATH: run `bash .ci/setup-integrations.sh`",
            tools.display()
        ),
    );
    None
}

/// `name` from $DUCKSAFE_TOOLS/bin, else PATH.
fn tool(name: &str) -> Option<PathBuf> {
    search_path()
        .into_iter()
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
        .or_else(|| missing(name))
}

/// A Python that can `import duckdb` (the examples' workload needs it).
fn python_with_duckdb() -> Option<PathBuf> {
    search_path()
        .into_iter()
        .map(|d| d.join("python3"))
        .filter(|p| is_executable(p))
        .find(|p| {
            Command::new(p)
                .args(["-c", "import duckdb"])
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .or_else(|| missing("python3 with the duckdb package"))
}

macro_rules! need {
    ($e:expr) => {
        match $e {
            Some(v) => v,
            None => return,
        }
    };
}

// --- running them --------------------------------------------------------------------------

/// A command with a clean environment: the ducksafe under test as $DUCKSAFE and first on PATH,
/// then the tools, then PATH; HOME in `home`; no DUCKSAFE_* or DBT_* settings from outside.
fn command(program: &Path, home: &Path) -> Command {
    let mut path = vec![ducksafe_bin().parent().unwrap().to_path_buf()];
    path.extend(search_path());
    let mut c = Command::new(program);
    c.env_clear()
        .env("PATH", std::env::join_paths(path).unwrap())
        .env("HOME", home)
        .env("DUCKSAFE", ducksafe_bin())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PYTHONUTF8", "1")
        .env("DBT_SEND_ANONYMOUS_USAGE_STATS", "false")
        .env("DBT_VERSION_CHECK", "false")
        .env("NO_COLOR", "1");
    c
}

fn run(c: &mut Command) -> Output {
    let out = c.output().unwrap();
    eprintln!(
        "$ {:?}\n--- exit {:?}\n--- stdout\n{}--- stderr\n{}",
        c,
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A response a wrapper saved in its state directory, if it saved one.
fn saved(dir: &Path, name: &str) -> Option<Response> {
    let path = dir.join(format!("{name}.json"));
    let s = fs::read_to_string(&path).ok()?;
    assert_eq!(s.lines().count(), 1, "{}: one JSON line", path.display());
    Some(serde_json::from_str(&s).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
}

fn rows(fps: &[(String, Fingerprint)], table: &str) -> u64 {
    fps.iter()
        .find(|(t, _)| t.rsplit('.').next() == Some(table))
        .map_or_else(|| panic!("no table `{table}` in {fps:?}"), |(_, f)| f.rows)
}

// --- the three scenarios every caller goes through --------------------------------------------

/// How a caller is started on a project: years to simulate, a year to die in, restore asked.
struct Run<'a> {
    years: &'a [&'a str],
    fail_in_year: Option<&'a str>,
}

/// Two simulated years that both succeed.
const SUCCEEDS: Run = Run {
    years: &["2025", "2026"],
    fail_in_year: None,
};
/// Two simulated years, the second of which fails.
const FAILS_IN_2026: Run = Run {
    years: &["2025", "2026"],
    fail_in_year: Some("2026"),
};

/// Where the caller leaves pre_run.json / post_run.json, relative to the project.
const STATE_DIR: &str = "logs/ducksafe";

/// The state directory of make's `simulate` target: one folder per target.
fn make_state(p: &Project) -> PathBuf {
    state(p).join("simulate")
}

fn state(p: &Project) -> PathBuf {
    p.path(STATE_DIR)
}

/// Success: exit 0, a verified backup equal to the database before the run, post_run `kept`,
/// and the run's changes in the database.
fn succeeds(p: &Project, st: &Path, out: &Output) {
    let before_rows = 1500; // Project::new's events
    assert_eq!(out.status.code(), Some(0), "the run succeeds");
    let pre = saved(st, "pre_run").expect("pre_run.json");
    assert_eq!(pre.decision, Decision::Proceed);
    let backup = pre.backup.expect("a backup");
    assert!(backup.verified);
    assert_eq!(
        backup.verification,
        [
            "size",
            "sha256",
            "block_checksums",
            "open",
            "row_counts",
            "fingerprints"
        ]
    );
    let in_backup = fingerprints(Path::new(&backup.path));
    assert_eq!(rows(&in_backup, "fct_yearly_events"), before_rows);
    let verify = p.run(&["verify", &backup.id]);
    assert!(verify.status.success(), "{}", text(&verify.stdout));

    let post = saved(st, "post_run").expect("post_run.json");
    assert_eq!(post.decision, Decision::Kept);
    let after = fingerprints(&p.db());
    assert!(
        rows(&after, "fct_yearly_events") > before_rows,
        "the run's events are in the database"
    );
    assert_ne!(after, in_backup, "the run changed the database");
    assert!(!p.path("simulation.duckdb.wal").exists());
    assert!(text(&out.stdout).contains("simulate: year 2026"));
}

/// A run that committed changes and died: non-zero exit, database equal to the pre-run backup,
/// its WAL (with the run's committed changes) in quarantine and none beside the database.
fn rolled_back(p: &Project, st: &Path, out: &Output, exit: i32) {
    assert_eq!(out.status.code(), Some(exit), "the failed run's exit code");
    assert!(
        text(&out.stdout).contains("dying without closing the database"),
        "the run died after committing"
    );
    let pre = saved(st, "pre_run").expect("pre_run.json");
    let backup = pre.backup.expect("a backup");
    let expected = fingerprints(Path::new(&backup.path));

    let post = saved(st, "post_run").expect("post_run.json");
    assert_eq!(post.decision, Decision::Restored, "{post:?}");
    let restore = post.restore.expect("restore details");
    assert_eq!(restore.backup_id, backup.id);
    support::assert_restored(p, &expected);
    let wal = restore
        .quarantined_files
        .iter()
        .map(PathBuf::from)
        .find(|f| f.file_name().is_some_and(|n| n == "simulation.duckdb.wal"))
        .expect("the WAL was quarantined");
    assert!(wal.exists() && fs::metadata(&wal).unwrap().len() > 0);
    let crashed = fingerprints(&Path::new(&restore.quarantine).join("simulation.duckdb"));
    assert!(
        rows(&crashed, "fct_yearly_events") > rows(&expected, "fct_yearly_events"),
        "the quarantined database and WAL hold the failed run's committed changes"
    );
}

/// A writer holds the database: the hook answers 75 / `database_locked` before anything runs.
fn blocked(p: &Project, st: &Path, out: &Output, exit: i32, before: &str) {
    assert_eq!(out.status.code(), Some(exit));
    let pre = saved(st, "pre_run").expect("pre_run.json");
    assert_eq!(pre.decision, Decision::Abort);
    assert_eq!(pre.exit_code, 75);
    assert_eq!(pre.errors[0].code, ErrorCode::DatabaseLocked);
    assert!(pre.errors[0].retryable);
    assert!(
        saved(st, "post_run").is_none(),
        "no post_run: the run never started"
    );
    assert!(
        !text(&out.stdout).contains("simulate:"),
        "the workload never started"
    );
    assert!(p.backup_files().is_empty(), "no backup was published");
    assert_eq!(sha256(&p.db()), before);
}

fn locked_run(p: &Project, start: impl FnOnce() -> Output) -> (Output, String) {
    let before = sha256(&p.db());
    let holder = hold(&p.db());
    let out = start();
    drop(holder);
    (out, before)
}

// --- just ------------------------------------------------------------------------------------

fn just_cmd(just: &Path, python: &Path, p: &Project, r: &Run, restore: bool) -> Command {
    let mut c = command(just, p.dir.path());
    c.arg("--justfile")
        .arg(repo().join("examples/justfile"))
        .arg("--working-directory")
        .arg(p.dir.path())
        .arg("simulate")
        .args(r.years)
        .env("PYTHON", python);
    if let Some(y) = r.fail_in_year {
        c.env("FAIL_IN_YEAR", y);
    }
    if restore {
        c.env("DUCKSAFE_ON_FAILURE", "restore");
    }
    c
}

#[test]
fn just_success_leaves_a_verified_backup_and_the_runs_changes() {
    let just = need!(tool("just"));
    let python = need!(python_with_duckdb());
    let p = Project::new("");
    let r = SUCCEEDS;
    let out = run(&mut just_cmd(&just, &python, &p, &r, false));
    succeeds(&p, &state(&p), &out);
}

#[test]
fn just_failed_run_is_rolled_back_and_its_wal_quarantined() {
    let just = need!(tool("just"));
    let python = need!(python_with_duckdb());
    let p = Project::new("");
    let r = FAILS_IN_2026;
    let out = run(&mut just_cmd(&just, &python, &p, &r, true));
    // just exits with the recipe's exit code: the workload's own.
    rolled_back(&p, &state(&p), &out, 1);
    assert!(text(&out.stderr).contains("recipe `simulate` failed"));
}

#[test]
fn just_is_stopped_before_the_run_while_a_writer_holds_the_database() {
    let just = need!(tool("just"));
    let python = need!(python_with_duckdb());
    let p = Project::new("");
    let r = SUCCEEDS;
    let (out, before) = locked_run(&p, || run(&mut just_cmd(&just, &python, &p, &r, true)));
    // The wrapper exits with the hook's code and just passes it on.
    blocked(&p, &state(&p), &out, 75, &before);
}

// --- make ------------------------------------------------------------------------------------

fn make_cmd(make: &Path, python: &Path, p: &Project, r: &Run, restore: bool) -> Command {
    let mut c = command(make, p.dir.path());
    c.arg("--no-print-directory")
        .arg("-f")
        .arg(repo().join("examples/Makefile"))
        .arg("-C")
        .arg(p.dir.path())
        .arg("simulate")
        .arg(format!("YEARS={}", r.years.join(" ")))
        .arg(format!("PYTHON={}", python.display()));
    if let Some(y) = r.fail_in_year {
        c.arg(format!("FAIL_IN_YEAR={y}"));
    }
    if restore {
        c.arg("DUCKSAFE_ON_FAILURE=restore");
    }
    c
}

#[test]
fn make_success_leaves_a_verified_backup_and_the_runs_changes() {
    let make = need!(tool("make"));
    let python = need!(python_with_duckdb());
    let p = Project::new("");
    let r = SUCCEEDS;
    let out = run(&mut make_cmd(&make, &python, &p, &r, false));
    succeeds(&p, &make_state(&p), &out);
}

#[test]
fn make_failed_run_is_rolled_back_and_its_wal_quarantined() {
    let make = need!(tool("make"));
    let python = need!(python_with_duckdb());
    // Restore asked by the configuration this time, not by the caller.
    let p = Project::new("RESTORE_ON_FAILURE: true\n");
    let r = FAILS_IN_2026;
    let out = run(&mut make_cmd(&make, &python, &p, &r, false));
    // make turns every failed recipe into its own exit 2 and names the recipe's code.
    rolled_back(&p, &make_state(&p), &out, 2);
    assert!(text(&out.stderr).contains("Error 1"), "the workload's code");
}

#[test]
fn make_is_stopped_before_the_run_while_a_writer_holds_the_database() {
    let make = need!(tool("make"));
    let python = need!(python_with_duckdb());
    let p = Project::new("");
    let r = SUCCEEDS;
    let (out, before) = locked_run(&p, || run(&mut make_cmd(&make, &python, &p, &r, true)));
    blocked(&p, &make_state(&p), &out, 2, &before);
    assert!(
        text(&out.stderr).contains("Error 75"),
        "the hook's code, through make"
    );
}

// --- the Python orchestrator -----------------------------------------------------------------

fn orchestrator_cmd(python: &Path, p: &Project, r: &Run, restore: bool) -> Command {
    let mut c = command(python, p.dir.path());
    c.current_dir(p.dir.path())
        .arg(repo().join("examples/orchestrator/run_simulation.py"))
        .args([
            "--config",
            "config.yaml",
            "--state-dir",
            STATE_DIR,
            "--years",
        ])
        .args(r.years);
    if let Some(y) = r.fail_in_year {
        c.args(["--fail-in-year", y]);
    }
    if restore {
        c.args(["--on-failure", "restore"]);
    }
    c
}

#[test]
fn orchestrator_success_leaves_a_verified_backup_and_the_runs_changes() {
    let python = need!(python_with_duckdb());
    let p = Project::new("");
    let r = SUCCEEDS;
    let out = run(&mut orchestrator_cmd(&python, &p, &r, false));
    succeeds(&p, &state(&p), &out);
    assert!(text(&out.stdout).contains("simulation complete for 2 year(s)"));
}

#[test]
fn orchestrator_failed_year_is_rolled_back_and_its_wal_quarantined() {
    let python = need!(python_with_duckdb());
    let p = Project::new("");
    let r = Run {
        years: &["2025", "2026", "2027"],
        fail_in_year: Some("2026"),
    };
    let out = run(&mut orchestrator_cmd(&python, &p, &r, true));
    rolled_back(&p, &state(&p), &out, 1);
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("year 2026 failed with exit code 1"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("year 2027"),
        "the run stops at the failed year"
    );
}

#[test]
fn orchestrator_is_stopped_before_the_run_while_a_writer_holds_the_database() {
    let python = need!(python_with_duckdb());
    let p = Project::new("");
    let r = SUCCEEDS;
    let (out, before) = locked_run(&p, || run(&mut orchestrator_cmd(&python, &p, &r, true)));
    blocked(&p, &state(&p), &out, 75, &before);
    assert!(
        text(&out.stderr).contains("busy (database_locked)"),
        "DucksafeBusy was raised and caught"
    );
}

/// The module alone (standard library only): typed answers, typed errors with their codes.
#[test]
fn python_module_returns_dataclasses_and_raises_typed_errors() {
    let python = need!(tool("python3"));
    let p = Project::new("");
    let script = r#"
import json, sys
sys.path.insert(0, sys.argv[1])
import ducksafe_hook as d
out = {}
try:
    d.validate({"DB_PATH": "simulation.duckdb", "LOG_LEVEL": "LOUD", "BACKUP_KEEP_LAST": 0})
except d.DucksafeError as e:
    out["invalid"] = [type(e).__name__, list(e.codes), e.exit_code, e.retryable,
                      [x.path for x in e.response.errors]]
pre = d.pre_run("config.yaml", request_id="py-1")
out["pre"] = [type(pre).__name__, pre.decision, pre.backup_id, pre.backup.verified,
              list(pre.backup.verification), pre.request_id]
try:
    with d.protected_run("config.yaml", on_failure="restore") as run:
        raise RuntimeError("the simulation broke")
except RuntimeError:
    out["protected"] = [run.post.decision, run.post.restore.backup_id == run.backup_id]
try:
    d.pre_run("config.yaml", binary="/nonexistent/ducksafe")
except d.HookUnavailable as e:
    out["unavailable"] = [e.exit_code, list(e.codes)]
print(json.dumps(out))
"#;
    let out = run(command(&python, p.dir.path())
        .current_dir(p.dir.path())
        .args(["-c", script])
        .arg(repo().join("hooks")));
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["invalid"],
        serde_json::json!([
            "DucksafeError",
            ["config_invalid", "config_invalid"],
            78,
            false,
            ["/BACKUP_KEEP_LAST", "/LOG_LEVEL"]
        ])
    );
    assert_eq!(v["pre"][0], "Response");
    assert_eq!(v["pre"][1], "proceed");
    assert_eq!(v["pre"][3], true);
    assert_eq!(v["pre"][5], "py-1");
    assert_eq!(v["protected"], serde_json::json!(["restored", true]));
    assert_eq!(v["unavailable"], serde_json::json!([127, []]));

    // DucksafeBusy is the retryable kind, with the code.
    let holder = hold(&p.db());
    let out = run(command(&python, p.dir.path())
        .current_dir(p.dir.path())
        .args(["-c", "import sys; sys.path.insert(0, sys.argv[1]); import ducksafe_hook as d\ntry:\n    d.pre_run('config.yaml')\nexcept d.DucksafeBusy as e:\n    print(e.codes[0], e.exit_code, e.retryable, isinstance(e, d.DucksafeError))"])
        .arg(repo().join("hooks")));
    drop(holder);
    assert_eq!(text(&out.stdout).trim(), "database_locked 75 True True");
}

// --- dbt -------------------------------------------------------------------------------------

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
    assert_eq!(out.status.code(), Some(0));
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
    assert_eq!(out.status.code(), Some(3), "dbt's own exit code");
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
    assert_eq!(out.status.code(), Some(1));
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
    assert_eq!(out.status.code(), Some(75));
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
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
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
    assert_eq!(out.status.code(), Some(1));
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
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("1 node(s) failed: model.dbt_workforce.x"));
    assert_eq!(f.saved("post_run").decision, Decision::Kept);

    // Fresh, successful results and exit 0: success.
    let (out, _) = f.run(
        &["seed", "--ducksafe-state-dir", "st"],
        &[("FAKE_DBT_STATUS", "success")],
    );
    assert_eq!(out.status.code(), Some(0));
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
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("is from `dbt run`, not `dbt snapshot`"));
    assert_eq!(f.saved("pre_run").decision, Decision::Proceed);

    // dbt's exit code wins when it is not 0.
    let (out, _) = f.run(&["run"], &[("FAKE_DBT_EXIT", "2")]);
    assert_eq!(out.status.code(), Some(2));
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
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(seen, "test\n--select\nstg_census\n");
    assert!(!f.path("backups").exists());

    // The selected target: `ci` writes a file that does not exist yet, so no backup.
    let (out, seen) = f.run(&["run", "-t", "ci"], &[]);
    assert_eq!(out.status.code(), Some(0));
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
    assert_eq!(out.status.code(), Some(0));
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
    assert_eq!(out.status.code(), Some(2));
    assert!(seen.is_empty(), "dbt did not run");
    assert!(text(&out.stderr).contains("protects"));

    // A profile that is not there: refused, with the path in the message.
    let (out, _) = f.run(&["run", "--profile", "nope"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("has no profile `nope`"));

    // Bad usage of the wrapper itself.
    let (out, seen) = f.run(&["run", "--ducksafe-on-failure", "maybe"], &[]);
    assert_eq!(out.status.code(), Some(64));
    assert!(seen.is_empty());
}

// --- interruptions, odd flags and odd exits --------------------------------------------------
//
// A caller interrupted as an operator interrupts it: a terminal's Ctrl-C or hangup (the signal
// goes to the whole process group of a job started in its own session), `timeout` (SIGTERM to
// its process group), a signal to the wrapper alone. Each workload commits a change, writes a
// marker file and then waits; the test acts when the marker appears, never after a delay.

/// A caller started in the background, its output going to files (dbt's log would fill a pipe).
struct Job {
    child: std::process::Child,
    out: PathBuf,
    err: PathBuf,
}

/// How long a job may take at most: a bound against a broken wrapper hanging the suite, not a
/// moment the tests rely on.
const JOB_BOUND: Duration = Duration::from_secs(300);

impl Job {
    fn start(c: &mut Command, logs: &Path) -> Job {
        let out = logs.join("job.stdout");
        let err = logs.join("job.stderr");
        let child = c
            .stdin(Stdio::null())
            .stdout(fs::File::create(&out).unwrap())
            .stderr(fs::File::create(&err).unwrap())
            .spawn()
            .unwrap();
        eprintln!("$ {c:?} (PID {})", child.id());
        Job { child, out, err }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn logs(&self) -> String {
        format!(
            "--- stdout\n{}--- stderr\n{}",
            fs::read_to_string(&self.out).unwrap_or_default(),
            fs::read_to_string(&self.err).unwrap_or_default()
        )
    }

    /// Waits until the workload has written `marker`; returns its content (a PID).
    fn wait_for(&mut self, marker: &Path) -> u32 {
        let deadline = Instant::now() + JOB_BOUND;
        loop {
            if let Ok(s) = fs::read_to_string(marker) {
                return s.trim().parse().unwrap();
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "the job ended ({status}) before `{}` appeared\n{}",
                    marker.display(),
                    self.logs()
                );
            }
            assert!(Instant::now() < deadline, "no marker\n{}", self.logs());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The job leads its own session and process group (it was started through `setsid`).
    fn assert_session_leader(&self) {
        let stat = fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap();
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .unwrap()
            .1
            .split_whitespace()
            .collect();
        let (pgrp, session) = (fields[2], fields[3]);
        assert_eq!(
            (pgrp, session),
            (&*self.pid().to_string(), &*self.pid().to_string())
        );
    }

    fn finish(mut self) -> Output {
        let deadline = Instant::now() + JOB_BOUND;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("the job did not end\n{}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        eprintln!("--- {status}\n{}", self.logs());
        Output {
            status,
            stdout: fs::read(&self.out).unwrap(),
            stderr: fs::read(&self.err).unwrap(),
        }
    }
}

/// `kill -s SIG -- TARGET`: a PID, or `-PGID` for a whole process group.
fn send_signal(sig: &str, target: &str) {
    let kill = tool("kill").expect("kill");
    let status = Command::new(kill)
        .args(["-s", sig, "--", target])
        .status()
        .unwrap();
    assert!(status.success(), "kill -s {sig} -- {target}");
}

/// A program run through `env --default-signal`, so that it starts with every signal at its
/// default action whatever the test runner ignores, then through `setsid` when `session`: its
/// own session and process group, as a terminal starts a job (setsid execs without forking:
/// the PID stays the job's).
fn job_command(program: &Path, home: &Path, session: bool) -> Option<Command> {
    let env = tool("env")?;
    let mut c = command(&env, home);
    c.arg("--default-signal");
    if session {
        c.arg(tool("setsid")?);
    }
    c.arg(program).current_dir(home);
    Some(c)
}

fn is_running(pid: u32) -> bool {
    // A zombie is over: it only waits for its parent.
    fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
    })
}

fn signal_number(sig: &str) -> i32 {
    match sig {
        "HUP" => 1,
        "INT" => 2,
        "QUIT" => 3,
        "TERM" => 15,
        _ => panic!("{sig}"),
    }
}

/// A workload that commits a change (left in the WAL), writes its PID to a marker file and
/// waits, as a long simulation year does.
const HOLD_PY: &str = r#"import os, sys, time
import duckdb
db, marker = sys.argv[1], sys.argv[2]
con = duckdb.connect(db)
con.execute("PRAGMA disable_checkpoint_on_shutdown")
con.execute("SET checkpoint_threshold = '10GB'")
con.execute("UPDATE employees SET current_compensation = current_compensation * 2")
with open(marker + ".tmp", "w") as f:
    f.write(str(os.getpid()))
os.replace(marker + ".tmp", marker)
for _ in range(3000):  # the safety bound; the test signals long before
    time.sleep(0.1)
print("hold: never interrupted")
"#;

/// ducksafe-run started in its own session, the whole group signalled once the workload has
/// committed: the run is a failed run, restored as asked, and the wrapper ends by the signal.
fn ducksafe_run_interrupted_by(sig: &str) {
    let python = need!(python_with_duckdb());
    let p = Project::new("");
    fs::write(p.path("hold.py"), HOLD_PY).unwrap();
    let mut c = need!(job_command(
        &repo().join("hooks/ducksafe-run"),
        p.dir.path(),
        true
    ));
    c.args(["--config", "config.yaml", "--on-failure", "restore"])
        .args(["--state-dir", STATE_DIR, "--"])
        .arg(&python)
        .args(["hold.py", "simulation.duckdb", "started"]);
    let mut job = Job::start(&mut c, p.dir.path());
    let workload = job.wait_for(&p.path("started"));
    job.assert_session_leader();
    send_signal(sig, &format!("-{}", job.pid()));
    let out = job.finish();

    let n = signal_number(sig);
    if sig == "QUIT" {
        assert_eq!(out.status.code(), Some(131), "128 + SIGQUIT, no core dump");
    } else {
        assert_eq!(out.status.signal(), Some(n), "ended by the same signal");
    }
    assert!(!is_running(workload));
    assert!(text(&out.stderr).contains(&format!("interrupted by SIG{sig}")));
    let pre = saved(&state(&p), "pre_run").expect("pre_run.json");
    let expected = fingerprints(Path::new(&pre.backup.expect("a backup").path));
    let post = saved(&state(&p), "post_run").expect("post_run.json");
    assert_eq!(post.decision, Decision::Restored, "{post:?}");
    let run = post.run.expect("the run, repeated");
    assert_eq!(run.outcome, Outcome::Failure);
    assert_eq!(
        run.exit_code,
        Some(128 + n),
        "the workload died of the signal"
    );
    support::assert_restored(&p, &expected);
}

#[test]
fn ducksafe_run_restores_a_run_interrupted_by_ctrl_c() {
    ducksafe_run_interrupted_by("INT");
}

#[test]
fn ducksafe_run_restores_a_run_whose_terminal_hung_up() {
    ducksafe_run_interrupted_by("HUP");
}

#[test]
fn ducksafe_run_restores_a_run_interrupted_by_sigterm() {
    ducksafe_run_interrupted_by("TERM");
}

#[test]
fn ducksafe_run_restores_a_run_interrupted_by_sigquit() {
    ducksafe_run_interrupted_by("QUIT");
}

#[test]
fn ducksafe_run_prints_backslashes_as_they_are() {
    let p = Project::new("");
    let out = run(command(&repo().join("hooks/ducksafe-run"), p.dir.path())
        .current_dir(p.dir.path())
        .args(["--config", "config.yaml", "--request-id", r"job\new", "--"])
        .args(["printf", r"%s\n", r"C:\cache\x"]));
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(text(&out.stdout), "C:\\cache\\x\n", "the command's output");
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(r"running: printf %s\n C:\cache\x"),
        "{stderr}"
    );
    for (name, decision) in [("pre_run", Decision::Proceed), ("post_run", Decision::Kept)] {
        let prefix = format!("ducksafe-run: {name}: ");
        let line = stderr
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("no {name} line"));
        let r: Response = serde_json::from_str(line).unwrap();
        assert_eq!(r.request_id, r"job\new");
        assert_eq!(r.decision, decision);
    }
}

/// A shell builtin as the command (`exec`, `exit`) cannot replace or end the wrapper: the
/// command runs as a program of its own, so post_run still runs and restores; a name the
/// wrapper uses for a function of its own (`keep`) is still looked up as a program.
#[test]
fn ducksafe_run_keeps_its_promise_when_the_command_starts_with_a_builtin() {
    let python = need!(tool("python3"));
    let p = Project::new("RESTORE_ON_FAILURE: true\n");
    let before = fingerprints(&p.db());
    let script = p.path("work.sh");
    fs::write(
        &script,
        format!(
            "#!/bin/sh\n{} -c \"import duckdb; c=duckdb.connect('simulation.duckdb'); c.execute('CREATE TABLE the_run AS SELECT 1 AS x'); c.close()\" || exit 9\nexit 3\n",
            python.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    for builtin in ["exec", "exit"] {
        let out = run(command(&repo().join("hooks/ducksafe-run"), p.dir.path())
            .current_dir(p.dir.path())
            .args([
                "--config",
                "config.yaml",
                "--state-dir",
                builtin,
                "--",
                builtin,
            ])
            .arg(&script));
        let post = p.path(&format!("{builtin}/post_run.json"));
        assert!(
            post.exists(),
            "{builtin}: post_run never ran: {}",
            text(&out.stderr)
        );
        assert_eq!(
            fingerprints(&p.db()),
            before,
            "{builtin}: the run was not restored"
        );
    }
}

/// A child that waits for a go-file: let go and reaped however the test ends, so that a
/// failing test leaves no process waiting.
struct LetGo(std::process::Child, std::path::PathBuf);

impl Drop for LetGo {
    fn drop(&mut self) {
        let _ = fs::write(&self.1, b"");
        let _ = self.0.wait();
    }
}

/// Guarded runs of one database take turns: while one runs (between its pre_run and its
/// post_run), another guarded run is refused as busy (75) and its command never starts, so the
/// first run's restore can never erase the second's work, and rotation keeps the first run's
/// backup however many backups come meanwhile. A run whose wrapper is gone no longer counts.
#[test]
fn guarded_runs_of_one_database_take_turns() {
    let p = Project::new("RESTORE_ON_FAILURE: true\nBACKUP_KEEP_LAST: 1\n");
    let before = fingerprints(&p.db());
    let wrapper = repo().join("hooks/ducksafe-run");
    let marker = p.path("first.started");
    let go = p.path("first.go");
    // The first run: changes nothing itself, waits for the test, then fails.
    let first = command(&wrapper, p.dir.path())
        .current_dir(p.dir.path())
        .args([
            "--config",
            "config.yaml",
            "--state-dir",
            "first",
            "--",
            "sh",
            "-c",
        ])
        .arg(format!(
            "touch {m}; while [ ! -e {g} ]; do sleep 0.05; done; exit 1",
            m = marker.display(),
            g = go.display()
        ))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut first = LetGo(first, go.clone());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while !marker.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the first run never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let first_backup = saved_response(&p.path("first/pre_run.json"))
        .backup
        .unwrap()
        .id;
    // The second run, meanwhile: busy, its command not started.
    let second_marker = p.path("second.ran");
    let second = || {
        run(command(&wrapper, p.dir.path())
            .current_dir(p.dir.path())
            .args([
                "--config",
                "config.yaml",
                "--state-dir",
                "second",
                "--",
                "touch",
            ])
            .arg(&second_marker))
    };
    let out = second();
    assert_eq!(out.status.code(), Some(75), "{}", text(&out.stderr));
    assert!(
        !second_marker.exists(),
        "the second command ran during the first run"
    );
    // An operator's backup meanwhile rotates (BACKUP_KEEP_LAST: 1) but keeps the run's backup.
    let out = p.run(&["backup"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(p.backups().join(format!("{first_backup}.duckdb")).exists());
    // The first run fails: restored from its own backup.
    fs::write(&go, b"").unwrap();
    assert_eq!(first.0.wait().unwrap().code(), Some(1));
    assert_eq!(
        saved_response(&p.path("first/post_run.json")).decision,
        Decision::Restored
    );
    assert_eq!(fingerprints(&p.db()), before);
    // Its turn is over: the next guarded run starts.
    let out = second();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(second_marker.exists());
}

fn saved_response(path: &Path) -> Response {
    serde_json::from_str(fs::read_to_string(path).unwrap().trim()).unwrap()
}

/// 75 from the command and 75 from the hook: the state directory tells them apart.
#[test]
fn ducksafe_run_tells_the_commands_exit_code_from_the_hooks() {
    let p = Project::new("");
    let wrapper = repo().join("hooks/ducksafe-run");
    let guarded = |cmd: &str| {
        run(command(&wrapper, p.dir.path())
            .current_dir(p.dir.path())
            .args(["--config", "config.yaml", "--state-dir", STATE_DIR, "--"])
            .args(["sh", "-c", cmd]))
    };
    let out = guarded("exit 75");
    assert_eq!(out.status.code(), Some(75));
    assert_eq!(
        saved(&state(&p), "pre_run").unwrap().decision,
        Decision::Proceed
    );
    let post = saved(&state(&p), "post_run").expect("the command ran: post_run.json");
    let run = post.run.expect("the run, repeated");
    assert_eq!((run.outcome, run.exit_code), (Outcome::Failure, Some(75)));

    let holder = hold(&p.db());
    let out = guarded("exit 0");
    drop(holder);
    assert_eq!(out.status.code(), Some(75));
    let pre = saved(&state(&p), "pre_run").unwrap();
    assert_eq!(pre.decision, Decision::Abort);
    assert!(pre.errors[0].retryable);
    assert!(
        saved(&state(&p), "post_run").is_none(),
        "the hook refused: no post_run.json"
    );
}

/// Two guarded targets at once under `make -j2`, each waiting for the other to have started:
/// each target's folder holds its own pre_run and post_run.
#[test]
fn make_j2_keeps_each_targets_responses_apart() {
    let make = need!(tool("make"));
    let p = Project::new("");
    fs::copy(p.db(), p.path("other.duckdb")).unwrap();
    fs::write(
        p.path("other.yaml"),
        "DB_PATH: other.duckdb\nBACKUP_DIR: other-backups\nLOG_LEVEL: INFO\nBACKUP_MIN_FREE_BYTES: 0\n",
    )
    .unwrap();
    // Each recipe marks its start, then waits (bounded) for the other's mark: both commands
    // are running at the same time, or the recipe fails with 99.
    let makefile = format!(
        "include {}\n\
         first: DUCKSAFE_CONFIG = config.yaml\n\
         second: DUCKSAFE_CONFIG = other.yaml\n\
         second: DUCKSAFE_ON_FAILURE = restore\n\
         first: ; $(DUCKSAFE_GUARD) sh -c 'touch first.started; n=0; while [ ! -e second.started ] && [ $$n -lt 3000 ]; do sleep 0.1; n=$$((n+1)); done; [ -e second.started ] || exit 99'\n\
         second: ; $(DUCKSAFE_GUARD) sh -c 'touch second.started; n=0; while [ ! -e first.started ] && [ $$n -lt 3000 ]; do sleep 0.1; n=$$((n+1)); done; [ -e first.started ] || exit 99; exit 3'\n",
        repo().join("hooks/ducksafe.mk").display()
    );
    fs::write(p.path("Makefile"), makefile).unwrap();
    let out = run(command(&make, p.dir.path())
        .current_dir(p.dir.path())
        .args(["--no-print-directory", "-j2", "-k", "first", "second"]));
    assert_eq!(out.status.code(), Some(2), "`second` failed");
    for (target, db, decision, code) in [
        ("first", "simulation.duckdb", Decision::Kept, 0),
        ("second", "other.duckdb", Decision::Restored, 3),
    ] {
        let st = state(&p).join(target);
        let pre = saved(&st, "pre_run").unwrap_or_else(|| panic!("{target}: pre_run.json"));
        let post = saved(&st, "post_run").unwrap_or_else(|| panic!("{target}: post_run.json"));
        assert_eq!(pre.request_id, post.request_id, "{target}: one run");
        assert_eq!(pre.paths["db_path"], p.path(db).display().to_string());
        assert_eq!(post.paths["db_path"], p.path(db).display().to_string());
        assert_eq!(post.decision, decision, "{target}");
        assert_eq!(post.run.unwrap().exit_code, Some(code), "{target}");
    }
    assert!(!state(&p).join("pre_run.json").exists());
}

/// Runs a Python script with hooks/ on its path (argv[1]) in the project folder; returns the
/// JSON it prints.
fn python_json(python: &Path, p: &Project, script: &str) -> serde_json::Value {
    let out = run(command(python, p.dir.path())
        .current_dir(p.dir.path())
        .args(["-c", script])
        .arg(repo().join("hooks")));
    assert!(out.status.success());
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `sys.exit()` in a protected block succeeds, by Python's rules; other codes fail with their
/// code; the block's committed work is kept or restored accordingly.
#[test]
fn python_protected_run_follows_pythons_exit_rules() {
    let python = need!(python_with_duckdb());
    let p = Project::new("");
    let script = r#"
import json, sys
sys.path.insert(0, sys.argv[1])
import duckdb
import ducksafe_hook as d

def total(path):
    con = duckdb.connect(path, read_only=True)
    v = con.execute("select sum(current_compensation) from employees").fetchone()[0]
    con.close()
    return float(v)

def ctrl_c():
    raise KeyboardInterrupt

out = {}
for name, leave in [
    ("sys.exit()", lambda: sys.exit()),
    ("sys.exit(0)", lambda: sys.exit(0)),
    ("sys.exit(3)", lambda: sys.exit(3)),
    ("sys.exit(256)", lambda: sys.exit(256)),
    ("sys.exit(-1)", lambda: sys.exit(-1)),
    ("sys.exit('message')", lambda: sys.exit("stopped: bad input")),
    ("Ctrl-C", ctrl_c),
]:
    try:
        with d.protected_run("config.yaml", on_failure="restore") as run:
            con = duckdb.connect("simulation.duckdb")
            con.execute("UPDATE employees SET current_compensation = current_compensation + 1")
            con.close()
            leave()
    except BaseException as e:
        changed = total("simulation.duckdb") != total(run.pre.backup.path)
        out[name] = [type(e).__name__, run.post.decision, run.post.run.outcome,
                     run.post.run.exit_code, changed]
print(json.dumps(out))
"#;
    let v = python_json(&python, &p, script);
    let expect = serde_json::json!({
        "sys.exit()": ["SystemExit", "kept", "success", 0, true],
        "sys.exit(0)": ["SystemExit", "kept", "success", 0, true],
        "sys.exit(3)": ["SystemExit", "restored", "failure", 3, false],
        // The process's status is the low 8 bits: 256 exits 0, -1 exits 255.
        "sys.exit(256)": ["SystemExit", "kept", "success", 0, true],
        "sys.exit(-1)": ["SystemExit", "restored", "failure", 255, false],
        "sys.exit('message')": ["SystemExit", "restored", "failure", 1, false],
        "Ctrl-C": ["KeyboardInterrupt", "restored", "failure", 130, false],
    });
    assert_eq!(v, expect);
}

/// A block that fails with its own connection still open (a traceback keeps it alive): the
/// restore cannot happen, and that is said as what it is, never as "busy, retry unchanged".
#[test]
fn python_protected_run_says_when_the_block_itself_holds_the_database() {
    let python = need!(python_with_duckdb());
    let p = Project::new("");
    let script = r#"
import json, sys
sys.path.insert(0, sys.argv[1])
import duckdb
import ducksafe_hook as d

out = {}
try:
    with d.protected_run("config.yaml", on_failure="restore") as run:
        con = duckdb.connect("simulation.duckdb")
        con.execute("UPDATE employees SET current_compensation = current_compensation + 1")
        raise ValueError("the run failed")
except d.DucksafeBusy as e:
    out = {"raised": "DucksafeBusy", "message": str(e)}
except d.DucksafeError as e:
    out = {"raised": "DucksafeError", "message": str(e)}
print(json.dumps(out))
"#;
    let v = python_json(&python, &p, script);
    assert_eq!(v["raised"], "DucksafeError", "{v}");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("open in this very process"),
        "{v}"
    );
}

/// SIGTERM or SIGHUP during a protected block (a `timeout`, a closed terminal): the block ends,
/// post_run restores, and the process then ends by that signal, as it would have.
#[test]
fn python_protected_run_restores_a_block_stopped_by_sigterm_or_sighup() {
    let python = need!(python_with_duckdb());
    for sig in [libc::SIGTERM, libc::SIGHUP] {
        let p = Project::new("");
        let before = fingerprints(&p.db());
        let script = r#"
import json, sys, time
sys.path.insert(0, sys.argv[1])
import duckdb
import ducksafe_hook as d
with d.protected_run("config.yaml", on_failure="restore") as run:
    con = duckdb.connect("simulation.duckdb")
    con.execute("UPDATE employees SET current_compensation = current_compensation + 1")
    con.close()
    open("started", "w").close()
    time.sleep(600)
"#;
        let mut child = command(&python, p.dir.path())
            .current_dir(p.dir.path())
            .args(["-c", script])
            .arg(repo().join("hooks"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        while !p.path("started").exists() {
            assert!(
                std::time::Instant::now() < deadline,
                "the block never started"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        // SAFETY: kill(2) on our own child.
        #[allow(unsafe_code)]
        let rc = unsafe { libc::kill(i32::try_from(child.id()).unwrap(), sig) };
        assert_eq!(rc, 0);
        let status = child.wait().unwrap();
        assert_eq!(status.signal(), Some(sig), "ends by the signal: {status:?}");
        assert_eq!(fingerprints(&p.db()), before, "signal {sig}: not restored");
        assert_eq!(
            support::dir_names(&p.backups().join("quarantine")).len(),
            1,
            "signal {sig}: the block's database went to quarantine"
        );
    }
}

/// A timeout is its own error (not "cannot run"), and a restore it cut short is completed by
/// the next `ducksafe restore`, as the docs say.
#[test]
fn python_timeout_is_a_hook_timeout_and_the_next_restore_completes_the_cut_one() {
    let python = need!(python_with_duckdb());
    let p = Project::new("");
    let script = r#"
import json, os, sys
sys.path.insert(0, sys.argv[1])
import duckdb
import ducksafe_hook as d
pre = d.pre_run("config.yaml")
con = duckdb.connect("simulation.duckdb")
con.execute("UPDATE employees SET current_compensation = current_compensation + 1")
con.close()
# ducksafe stops for good inside the restore, after its journal is written: the timeout fires.
env = dict(os.environ, DUCKSAFE_FAILPOINT="restore.intent:sleep=600000")
try:
    d.post_run(pre.backup_id, exit_code=1, on_failure="restore", config="config.yaml",
               env=env, timeout=2)
    out = ["answered"]
except d.HookTimeout as e:
    out = [type(e).__name__, e.exit_code, isinstance(e, d.HookUnavailable),
           isinstance(e, d.DucksafeError), e.response is None, "runbook" in str(e)]
print(json.dumps({"timeout": out, "backup_id": pre.backup_id, "backup": pre.backup.path}))
"#;
    let v = python_json(&python, &p, script);
    assert_eq!(
        v["timeout"],
        serde_json::json!(["HookTimeout", 124, false, true, true, true])
    );
    let expected = fingerprints(Path::new(v["backup"].as_str().unwrap()));
    assert_ne!(
        fingerprints(&p.db()),
        expected,
        "the cut restore did not switch"
    );
    let out = p.run(&["restore", v["backup_id"].as_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    support::assert_restored(&p, &expected);
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
    assert_eq!(out.status.code(), Some(124));
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
    assert_eq!(out.status.code(), Some(0), "a good run, not restored");
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
    assert_eq!(out.status.code(), Some(1), "dbt's exit code");
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
    assert_eq!(out.status.code(), Some(0));
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
    assert_eq!(out.status.code(), Some(1));
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
    assert_eq!(out.status.code(), Some(1));
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
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(seen, "--indirect-selection\neager\nbuild\n");
    assert_eq!(f.saved("pre_run").decision, Decision::Proceed);
    // `dbt -- build` builds (dbt takes the word after `--` as the subcommand): protected too,
    // and a word after `--` that is no subcommand is refused, never run unprotected.
    let (out, seen) = f.run(
        &["--", "build", "--ducksafe-state-dir", "st2"],
        &[("FAKE_DBT_STATUS", "success"), ("FAKE_DBT_WHICH", "build")],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(seen, "--\nbuild\n");
    assert!(
        text(&out.stderr).contains("created and verified"),
        "`-- build` ran without a backup: {}",
        text(&out.stderr)
    );
    let (out, seen) = f.run(&["--", "frobnicate"], &[]);
    assert_eq!(out.status.code(), Some(64));
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
    assert_eq!(out.status.code(), Some(137));
    let post = f.saved("post_run");
    assert_eq!(post.decision, Decision::Restored);
    assert_eq!(post.run.unwrap().exit_code, Some(137));
}

// --- the CI workflow -------------------------------------------------------------------------

fn workflow() -> serde_json::Value {
    let path = repo().join("examples/ci/github-actions.yml");
    let text = fs::read_to_string(&path).unwrap();
    ducksafe::config::parse_text(&text, &path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The steps of a job, by their `id` (or `name`), and the run scripts in it.
fn step<'a>(wf: &'a serde_json::Value, job: &str, id: &str) -> &'a serde_json::Value {
    wf["jobs"][job]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == id || s["name"] == id)
        .unwrap_or_else(|| panic!("job `{job}` has no step `{id}`"))
}

/// Words of one shell line, quotes removed; good enough for the commands a workflow names.
fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut quote = None;
    let mut any = false;
    for c in line.chars() {
        match quote {
            Some(q) if c == q => quote = None,
            None if c == '\'' || c == '"' => {
                quote = Some(c);
                any = true;
            }
            None if c.is_whitespace() => {
                if any || !cur.is_empty() {
                    words.push(std::mem::take(&mut cur));
                }
                any = false;
            }
            _ => cur.push(c),
        }
    }
    if any || !cur.is_empty() {
        words.push(cur);
    }
    words
}

/// The logical lines of a run script: continuations joined, heredoc bodies left out.
fn script_lines(script: &str) -> Vec<String> {
    let mut lines = Vec::new();
    let mut heredoc_end: Option<String> = None;
    let mut pending = String::new();
    for raw in script.lines() {
        if let Some(end) = &heredoc_end {
            if raw.trim() == end {
                heredoc_end = None;
            }
            continue;
        }
        if let Some(body) = raw.strip_suffix('\\') {
            pending.push_str(body);
            continue;
        }
        let line = std::mem::take(&mut pending) + raw;
        if let Some(i) = line.find("<<") {
            let end = line[i + 2..]
                .trim()
                .trim_matches(|c| c == '\'' || c == '"' || c == '-');
            heredoc_end = Some(end.to_owned());
        }
        lines.push(line);
    }
    lines
}

const REPO_DIRS: [&str; 5] = ["hooks/", "examples/", ".ci/", "docs/", "schemas/"];

/// Every `steps.ID` and `needs.JOB.outputs.KEY` in a job names something that exists.
fn check_expressions(
    name: &str,
    job: &serde_json::Value,
    jobs: &serde_json::Map<String, serde_json::Value>,
) {
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    let ids: Vec<&str> = job["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["id"].as_str())
        .collect();
    let needs: Vec<&str> = match &job["needs"] {
        serde_json::Value::String(s) => vec![s.as_str()],
        serde_json::Value::Array(a) => a.iter().map(|v| v.as_str().unwrap()).collect(),
        _ => vec![],
    };
    let job_text = job.to_string();
    for part in job_text.split("steps.").skip(1) {
        let id = ident(part);
        assert!(ids.contains(&id.as_str()), "{name}: unknown step `{id}`");
    }
    for part in job_text.split("needs.").skip(1) {
        let mut it = part.split('.');
        let (other, outputs, key) = (
            it.next().unwrap(),
            it.next().unwrap(),
            ident(it.next().unwrap()),
        );
        assert!(
            needs.contains(&other) && outputs == "outputs",
            "{name}: needs.{other}"
        );
        assert!(
            jobs[other]["outputs"].get(&key).is_some(),
            "{name}: needs.{other}.outputs.{key}"
        );
    }
}

/// Checks one `run:` script: repository paths exist, and every ducksafe it runs comes from this
/// job (release build or downloaded artifact) and accepts its subcommand and flags. Returns the
/// number of ducksafe calls.
fn check_script(name: &str, script: &str, steps: &[serde_json::Value]) -> usize {
    assert!(
        !script.contains("${{"),
        "{name}: expressions go through env, not into scripts"
    );
    let downloads: Vec<&str> = steps
        .iter()
        .filter(|s| {
            s["uses"]
                .as_str()
                .is_some_and(|u| u.contains("download-artifact"))
        })
        .filter_map(|s| s["with"]["path"].as_str())
        .collect();
    let builds_release = steps.iter().any(|s| {
        s["run"]
            .as_str()
            .is_some_and(|r| r.contains("cargo build") && r.contains("--release"))
    });
    let mut calls = 0;
    for line in script_lines(script) {
        let words = shell_words(&line);
        for w in &words {
            if REPO_DIRS.iter().any(|d| w.starts_with(d)) {
                assert!(
                    repo().join(w).exists(),
                    "{name}: `{w}` is not in the repository"
                );
            }
        }
        let Some(first) = words.first() else { continue };
        if Path::new(first).file_name().is_none_or(|f| f != "ducksafe") {
            continue;
        }
        let built = first.starts_with("target/release/") && builds_release;
        let downloaded = downloads
            .iter()
            .any(|d| Path::new(first).parent() == Some(Path::new(d)));
        assert!(
            built || downloaded,
            "{name}: where does `{first}` come from?"
        );
        // The real binary accepts the subcommand and flags as written; a shell variable stands
        // in as `0`, a valid value for every flag.
        let args: Vec<String> = words[1..]
            .iter()
            .take_while(|w| !["<", ">", "|", "||", "&&", ";"].contains(&w.as_str()))
            .map(|w| {
                if w.contains('$') {
                    "0".to_owned()
                } else {
                    w.clone()
                }
            })
            .collect();
        let out = support::bin().args(&args).arg("--help").output().unwrap();
        assert!(
            out.status.success(),
            "{name}: `ducksafe {}` is refused: {}",
            args.join(" "),
            text(&out.stderr)
        );
        calls += 1;
    }
    calls
}

#[test]
fn ci_workflow_parses_and_every_command_it_runs_exists() {
    let wf = workflow();
    assert!(wf["name"].is_string() && wf.get("on").is_some());
    let jobs = wf["jobs"].as_object().expect("jobs");
    let known_actions = [
        "actions/checkout@v4",
        "actions/cache@v4",
        "actions/upload-artifact@v4",
        "actions/download-artifact@v4",
    ];
    let mut ducksafe_calls = 0;
    for (name, job) in jobs {
        assert!(job.get("runs-on").is_some(), "{name}: runs-on");
        check_expressions(name, job, jobs);
        let steps = job["steps"].as_array().expect("steps");
        for s in steps {
            assert!(
                s.get("uses").is_some() != s.get("run").is_some(),
                "{name}: a step uses an action or runs a script: {s}"
            );
            if let Some(script) = s["run"].as_str() {
                ducksafe_calls += check_script(name, script, steps);
                continue;
            }
            let uses = s["uses"].as_str().unwrap();
            assert!(
                known_actions.contains(&uses),
                "{name}: unexpected action `{uses}`"
            );
            if uses.contains("upload-artifact")
                && s["with"]["name"]
                    .as_str()
                    .is_some_and(|n| n.ends_with("-response"))
            {
                assert_eq!(
                    s["if"], "always()",
                    "{name}: responses are uploaded also after a failure"
                );
            }
        }
    }
    assert_eq!(ducksafe_calls, 2, "pre-run and post-run");
    // The gate: the simulation job needs the backup job and runs only on a verified backup.
    assert_eq!(
        wf["jobs"]["simulate"]["if"],
        "needs.backup.outputs.verified == 'true'"
    );
    assert!(step(&wf, "backup", "build ducksafe")["run"]
        .as_str()
        .unwrap()
        .contains("--locked"));
    assert!(repo().join("Cargo.lock").exists());
}

/// The workflow's own scripts, run as a runner would (bash -eo pipefail) in a workspace laid
/// out like the checkout, against a real simulation folder.
#[test]
fn ci_workflow_steps_run_for_real() {
    let python = need!(python_with_duckdb());
    let bash = need!(tool("bash"));
    let wf = workflow();
    let p = Project::new("RESTORE_ON_FAILURE: true\n");
    let ws = tempfile::tempdir().unwrap();
    for d in ["examples", "hooks"] {
        std::os::unix::fs::symlink(repo().join(d), ws.path().join(d)).unwrap();
    }
    for d in ["target/release", "bin"] {
        fs::create_dir_all(ws.path().join(d)).unwrap();
        std::os::unix::fs::symlink(ducksafe_bin(), ws.path().join(d).join("ducksafe")).unwrap();
    }
    let github_output = ws.path().join("github_output");
    for key in ["SIM_DIR", "DUCKSAFE_CONFIG", "PYTHON", "REQUEST_ID"] {
        assert!(wf["env"].get(key).is_some(), "the workflow sets {key}");
    }
    let script = |job: &str, id: &str, env: &[(&str, &str)]| {
        let mut c = command(&bash, ws.path());
        c.current_dir(ws.path())
            .args(["--noprofile", "--norc", "-eo", "pipefail", "-c"])
            .arg(step(&wf, job, id)["run"].as_str().unwrap())
            .env("SIM_DIR", p.dir.path())
            .env("DUCKSAFE_CONFIG", p.config())
            .env("PYTHON", &python)
            .env("REQUEST_ID", "gh-1-1")
            .env("GITHUB_OUTPUT", &github_output);
        for (k, v) in env {
            c.env(k, v);
        }
        run(&mut c)
    };
    let outputs = || -> std::collections::BTreeMap<String, String> {
        let s = fs::read_to_string(&github_output).unwrap_or_default();
        let _ = fs::remove_file(&github_output);
        s.lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    };

    // A writer holds the database: the backup job fails with 75 and the gate stays closed.
    let holder = hold(&p.db());
    let out = script("backup", "pre_run", &[]);
    drop(holder);
    assert_eq!(out.status.code(), Some(75));
    assert_eq!(outputs()["verified"], "false");

    // The backup job: a verified backup, its id handed to the next job.
    let out = script("backup", "pre_run", &[]);
    assert!(out.status.success());
    let o = outputs();
    assert_eq!(o["verified"], "true");
    let pre = saved(ws.path(), "pre_run").unwrap();
    assert_eq!(o["backup_id"], pre.backup.as_ref().unwrap().id);
    assert_eq!(pre.request_id, "gh-1-1");
    let before = fingerprints(&p.db());

    // The simulation job: the workload, then post_run with its exit code.
    for key in ["BACKUP_ID", "YEARS"] {
        assert!(
            wf["jobs"]["simulate"]["env"].get(key).is_some(),
            "the job sets {key}"
        );
    }
    let out = script(
        "simulate",
        "run the simulation, then post_run",
        &[("BACKUP_ID", &o["backup_id"]), ("YEARS", "2025 2026")],
    );
    assert!(out.status.success());
    assert!(text(&out.stdout).contains("simulate: year 2026"));
    let post = saved(ws.path(), "post_run").unwrap();
    assert_eq!(post.decision, Decision::Kept);
    assert_ne!(fingerprints(&p.db()), before, "the run's changes are kept");
}
