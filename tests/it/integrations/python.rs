//! The Python package `ducksafe` (hooks/python/ducksafe) from the checkout: its unit tests
//! against a fake binary (tests/python), `mypy --strict`, and, through `hooks/ducksafe_hook.py`
//! (the single-file module it grew from, now a layer over it, kept for code written against
//! it), the real binary: typed answers and errors, `protected_run` (= `guarded_run`) under
//! Python's exit rules and signals, and a hook timeout. The installed wheel: `wheel`.

use std::os::unix::process::ExitStatusExt;
use std::path::Path;

use crate::support::{self, fingerprints, hold, Project};

use super::{command, job_command, python_json, python_with_duckdb, repo, run, text, tool};

/// The package's unit tests (tests/python/test_api.py): the protocol's edge cases against a
/// fake binary (non-JSON stdout, two lines, an exit code without JSON, a signal, busy, every
/// error class), the binary lookup and guarded_run's outcomes. Standard library only.
#[test]
fn python_package_unit_tests_with_a_fake_binary() {
    let python = need!(tool("python3"));
    let out = run(command(&python, &std::env::temp_dir())
        .current_dir(repo())
        .args(["-m", "unittest", "discover", "-v", "-s", "tests/python"]));
    let err = text(&out.stderr);
    assert!(out.status.success(), "the unit tests failed");
    let ran: usize = err
        .lines()
        .find_map(|l| {
            l.strip_prefix("Ran ")?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .expect("unittest's `Ran N tests`");
    assert!(ran >= 39, "all of them ran: {ran}");
    assert!(!err.contains("skipped"), "none skipped");
}

/// `mypy --strict` (pinned, .ci/python-requirements.txt) on what pyproject.toml's [tool.mypy]
/// names: the package, the legacy module, the unit tests and the orchestrator example.
#[test]
fn python_package_is_mypy_strict_clean() {
    let Some(mypy) = super::wheel::py_tool("mypy") else {
        return;
    };
    let out = run(support::command(mypy).current_dir(repo()).args([
        "--no-incremental",
        "--config-file",
        "pyproject.toml",
    ]));
    assert!(out.status.success(), "mypy --strict");
    assert!(text(&out.stdout).contains("Success: no issues found"));
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
            "ConfigError",
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
        // `env --default-signal`: SIGTERM and SIGHUP at their default in the block's process
        // even when the tests run under nohup, since the package leaves an ignored signal
        // ignored.
        let mut child = need!(job_command(&python, p.dir.path(), false))
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
/// the next `ducksafe restore`, as the docs say. The timeout is the module's own
/// (`subprocess.run`'s `TimeoutExpired`), counted from the moment ducksafe waits at
/// `restore.intent` (its journal written): that moment is ducksafe's, whatever the load.
#[test]
fn python_timeout_is_a_hook_timeout_and_the_next_restore_completes_the_cut_one() {
    let python = need!(python_with_duckdb());
    let p = Project::new("");
    let script = r#"
import json, os, subprocess, sys, time
sys.path.insert(0, sys.argv[1])
import duckdb
import ducksafe_hook as d
pre = d.pre_run("config.yaml")
con = duckdb.connect("simulation.duckdb")
con.execute("UPDATE employees SET current_compensation = current_compensation + 1")
con.close()
# ducksafe stops inside the restore, after its journal is written, until it is killed.
go = os.path.abspath("go-restore")
env = dict(os.environ, DUCKSAFE_FAILPOINT="restore.intent:wait=" + go)

def run_timed_from_the_failpoint(argv, *, input, timeout, check, **kw):
    # subprocess.run, its timeout counted from the moment ducksafe is at its failpoint.
    p = subprocess.Popen(argv, stdin=subprocess.PIPE, **kw)
    p.stdin.write(input)
    p.stdin.close()
    p.stdin = None
    for _ in range(60000):  # the bound only stops a broken run from hanging the test
        if os.path.exists(go + ".reached") or p.poll() is not None:
            break
        time.sleep(0.005)
    try:
        out, _ = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
        raise
    return subprocess.CompletedProcess(argv, p.returncode, out, None)

subprocess.run = run_timed_from_the_failpoint
try:
    d.post_run(pre.backup_id, exit_code=1, on_failure="restore", config="config.yaml",
               env=env, timeout=2)
    out = ["answered"]
except d.HookTimeout as e:
    out = [type(e).__name__, e.exit_code, isinstance(e, d.HookUnavailable),
           isinstance(e, d.DucksafeError), e.response is None, "runbook" in str(e)]
print(json.dumps({"timeout": out, "backup_id": pre.backup_id, "backup": pre.backup.path,
                  "reached": os.path.exists(go + ".reached")}))
"#;
    let v = python_json(&python, &p, script);
    assert_eq!(
        v["timeout"],
        serde_json::json!(["HookTimeout", 124, false, true, true, true])
    );
    assert_eq!(v["reached"], true, "ducksafe was cut at `restore.intent`");
    let expected = fingerprints(Path::new(v["backup"].as_str().unwrap()));
    assert_ne!(
        fingerprints(&p.db()),
        expected,
        "the cut restore did not switch"
    );
    // Cut after its journal: an unfinished restore, which the next restore completes.
    let listed = p.run(&["list"]);
    assert!(
        text(&listed.stdout).contains("UNFINISHED RESTORE"),
        "{}",
        text(&listed.stdout)
    );
    let out = p.run(&["restore", v["backup_id"].as_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    support::assert_restored(&p, &expected);
}
