//! The wheel (`pyproject.toml`: maturin, `bindings = "bin"`): built by the real maturin from the
//! DuckDB this `cargo test` already compiled, installed into a fresh virtual environment, and
//! used there as a user would: the orchestrator example and a `guarded_run` whose body raises,
//! with no ducksafe on PATH and no `$DUCKSAFE_BIN`, so that only the installed binary can answer.
//!
//! maturin and mypy come from `bash .ci/setup-integrations.sh` ($DUCKSAFE_PYTOOLS/bin, default
//! ~/.cache/ducksafe-pytools/bin), else PATH; missing, the test fails under CI and skips
//! elsewhere.

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{self, fingerprints, sha256, Project};

use super::{ducksafe_bin, python_with_duckdb, repo, run, saved, search_path, send_signal, text};

fn pytools_dir() -> PathBuf {
    std::env::var_os("DUCKSAFE_PYTOOLS").map_or_else(
        || {
            let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
            Path::new(&home).join(".cache/ducksafe-pytools")
        },
        PathBuf::from,
    )
}

/// maturin or mypy: from $DUCKSAFE_PYTOOLS/bin, else the tools and PATH; else (said why) None.
pub(super) fn py_tool(name: &str) -> Option<PathBuf> {
    let found = std::iter::once(pytools_dir().join("bin"))
        .chain(search_path())
        .map(|d| d.join(name))
        .find(|p| super::is_executable(p));
    if found.is_none() {
        support::skip(
            name,
            &format!(
                "`{name}` is not in {}/bin or PATH: run `bash .ci/setup-integrations.sh`",
                pytools_dir().display()
            ),
        );
    }
    found
}

/// The target directory and profile that built the binary under test.
fn target_of(bin: &Path) -> (PathBuf, &'static str) {
    let profile_dir = bin.parent().unwrap();
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => "dev",
        Some("release") => "release",
        other => panic!("the binary under test is in {other:?}, not debug/ or release/"),
    };
    (profile_dir.parent().unwrap().to_path_buf(), profile)
}

/// How long the wheel build may take: packing a binary that is already built takes seconds;
/// this bound only stops a build that went wrong in an unexpected way.
const BUILD_BOUND: Duration = Duration::from_secs(600);

/// `maturin build` into `out`, from what this `cargo test` compiled: the same profile, and the
/// target directory of the binary under test as cargo's *build* directory
/// (`CARGO_BUILD_BUILD_DIR`: dependencies, DuckDB, fingerprints), all Fresh. Its *target*
/// directory (where cargo puts the finished binary, a hard link to the same file) is a folder
/// of its own under `out`: while it writes the wheel, maturin moves the binary out of
/// `TARGET/debug/` into `TARGET/maturin/` and back (measured: `target/debug/ducksafe` missing
/// for seconds), which in the shared folder would pull the binary from under the tests running
/// meanwhile. The build must compile nothing: the first `Compiling` line stops it (its whole
/// process group: maturin, cargo, rustc, the C++ compiler) and fails the test, long before
/// DuckDB would be compiled a second time. Returns the wheel and the seconds the build took.
pub(super) fn build_wheel(maturin: &Path, out: &Path) -> (PathBuf, f64) {
    let (target_dir, profile) = target_of(&ducksafe_bin());
    let log = out.join("maturin.log");
    let mut c = support::command(maturin);
    c.current_dir(repo())
        .args(["build", "--locked", "--profile", profile, "--out"])
        .arg(out)
        .env("CARGO_BUILD_BUILD_DIR", &target_dir)
        .env("CARGO_TARGET_DIR", out.join("target"))
        .env("CARGO_TERM_COLOR", "never")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .stdin(Stdio::null())
        .stdout(fs::File::create(out.join("maturin.stdout")).unwrap())
        .stderr(fs::File::create(&log).unwrap())
        .process_group(0);
    // What cargo sets for this test process (`CARGO_PKG_NAME=ducksafe`…) is not the outer
    // build's environment: ring's build script declares `rerun-if-env-changed` on
    // `CARGO_PKG_*` and `CARGO_MANIFEST_*`, so inherited they would make maturin rebuild it.
    for (var, _) in std::env::vars_os() {
        let name = var.to_string_lossy();
        if name.starts_with("CARGO_PKG_")
            || name.starts_with("CARGO_MANIFEST_")
            || [
                "CARGO_CRATE_NAME",
                "CARGO_PRIMARY_PACKAGE",
                "CARGO_TARGET_TMPDIR",
            ]
            .contains(&name.as_ref())
        {
            c.env_remove(&var);
        }
    }
    eprintln!("$ {c:?}");
    let started = Instant::now();
    let mut child = c.spawn().unwrap();
    let status = loop {
        let so_far = fs::read_to_string(&log).unwrap_or_default();
        if let Some(line) = so_far
            .lines()
            .find(|l| l.trim_start().starts_with("Compiling "))
        {
            send_signal("KILL", &format!("-{}", child.id()));
            let _ = child.wait();
            panic!(
                "`maturin build` started compiling (`{}`): the wheel must pack the binary this \
                 `cargo test` built, with the same profile and build directory `{}` (see the \
                 bitflags note in Cargo.toml: the tests and `cargo build` must resolve the same \
                 features)\n{so_far}",
                line.trim(),
                target_dir.display()
            );
        }
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < BUILD_BOUND,
            "maturin build: no end\n{so_far}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let secs = started.elapsed().as_secs_f64();
    let so_far = fs::read_to_string(&log).unwrap_or_default();
    eprintln!("--- maturin build: {status} in {secs:.1} s\n{so_far}");
    assert!(status.success(), "maturin build failed");
    assert!(
        ducksafe_bin().exists(),
        "the binary under test is where it was"
    );
    let wheels: Vec<PathBuf> = fs::read_dir(out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "whl"))
        .collect();
    assert_eq!(wheels.len(), 1, "one wheel: {wheels:?}");
    (wheels.into_iter().next().unwrap(), secs)
}

/// The duckdb the tools pin (the engine ducksafe bundles), for the workload in the new venv.
fn duckdb_requirement() -> String {
    let reqs = fs::read_to_string(repo().join(".ci/integrations-requirements.txt")).unwrap();
    reqs.lines()
        .find(|l| l.starts_with("duckdb=="))
        .expect("duckdb is pinned")
        .to_owned()
}

/// A command in the fresh venv as a user runs it: nothing of ducksafe's on PATH, no
/// DUCKSAFE_BIN / DUCKSAFE, no PYTHONPATH; the venv's bin first, as `activate` does.
fn in_venv(venv: &Path, program: &str, home: &Path) -> Command {
    let mut c = support::command(venv.join("bin").join(program));
    c.env_clear()
        .env(
            "PATH",
            format!(
                "{}:/usr/local/bin:/usr/bin:/bin",
                venv.join("bin").display()
            ),
        )
        .env("HOME", home)
        .env("VIRTUAL_ENV", venv)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PYTHONUTF8", "1")
        .current_dir(home);
    c
}

/// The body of the guarded run: commit a change, close the connection, fail.
const GUARDED: &str = r#"
import json
import duckdb
import ducksafe

try:
    # config.yaml says RESTORE_ON_FAILURE: true; on_failure is left to it.
    with ducksafe.guarded_run(config="config.yaml", request_id="wheel-1") as run:
        with duckdb.connect("simulation.duckdb") as con:
            con.execute("UPDATE employees SET current_compensation = current_compensation + 1")
        raise RuntimeError("the simulation broke")
except RuntimeError as e:
    assert run.post is not None and run.post.restore is not None
    print(json.dumps({
        "raised": str(e),
        "decision": run.post.decision,
        "exit_code": run.exit_code,
        "backup": run.backup.path,
        "sha256": run.backup.sha256,
        "quarantine": run.post.restore.quarantine,
        "binary": ducksafe.find_binary(),
        "module": ducksafe.__file__,
        "version": ducksafe.__version__,
    }))
"#;

/// A user's code, type-checked against the installed wheel (py.typed).
const TYPED: &str = r#"
import subprocess

import ducksafe


def nightly(config: str) -> str:
    with ducksafe.guarded_run(config=config) as run:
        run.exit_code = subprocess.run(["true"], check=False).returncode
    assert run.post is not None
    latest: ducksafe.BackupInfo | None = ducksafe.list_backups(config).latest
    try:
        ducksafe.validate(config)
    except ducksafe.DucksafeBusy as e:
        code: str | None = e.code
        return f"busy {code} {e.retryable} {e.exit_code}"
    return run.post.decision + (latest.id if latest else "")
"#;

/// A fresh venv at `venv` with the wheel and the duckdb the workload needs; returns the seconds
/// `pip install` took.
fn install(python: &Path, wheel: &Path, venv: &Path) -> f64 {
    let out = run(support::command(python).args(["-m", "venv"]).arg(venv));
    assert!(out.status.success());
    let installed = Instant::now();
    let out = run(support::command(venv.join("bin/python"))
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-input",
            "--disable-pip-version-check",
        ])
        .arg(wheel)
        .arg(duckdb_requirement()));
    assert!(out.status.success(), "pip install");
    installed.elapsed().as_secs_f64()
}

/// The orchestrator example with the installed package (no PYTHONPATH): a success, then a year
/// that fails after committing, rolled back.
fn orchestrator_in(venv: &Path) {
    let p = Project::new("RESTORE_ON_FAILURE: true\n");
    let orchestrate = |years: &[&str], fail: Option<&str>| {
        let mut c = in_venv(venv, "python", p.dir.path());
        c.arg(repo().join("examples/orchestrator/run_simulation.py"))
            .args(["--config", "config.yaml", "--state-dir", "logs/ducksafe"])
            .arg("--years")
            .args(years);
        if let Some(y) = fail {
            c.args(["--fail-in-year", y]);
        }
        run(&mut c)
    };
    let out = orchestrate(&["2025"], None);
    assert!(out.status.success());
    assert!(text(&out.stdout).contains("simulation complete for 1 year(s)"));
    let out = orchestrate(&["2026", "2027"], Some("2027"));
    assert_eq!(out.status.code(), Some(1), "the failed year's exit code");
    assert!(text(&out.stdout).contains("rolled back to"));
    let pre = saved(&p.path("logs/ducksafe"), "pre_run").expect("pre_run.json");
    let backup = pre.backup.expect("a verified backup");
    assert_eq!(
        fingerprints(&p.db()),
        fingerprints(Path::new(&backup.path)),
        "the orchestrator's failed run: the database equals its pre-run backup"
    );
    assert_eq!(sha256(&p.db()), backup.sha256, "byte for byte");
}

/// guarded_run whose body raises after committing a change: restored, then re-raised; the
/// package and the binary are the installed ones.
fn guarded_run_in(venv: &Path) {
    let p = Project::new("RESTORE_ON_FAILURE: true\n");
    let venv_bin = venv.join("bin/ducksafe");
    let script = p.path("guarded.py");
    fs::write(&script, GUARDED).unwrap();
    let out = run(in_venv(venv, "python", p.dir.path()).arg(&script));
    assert!(
        out.status.success(),
        "the script caught the re-raised error"
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["raised"], "the simulation broke");
    assert_eq!(v["decision"], "restored");
    assert_eq!(v["exit_code"], 1);
    assert_eq!(
        v["binary"].as_str(),
        venv_bin.to_str(),
        "the installed binary"
    );
    assert!(
        Path::new(v["module"].as_str().unwrap()).starts_with(venv),
        "the installed package: {}",
        v["module"]
    );
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    let backup = Path::new(v["backup"].as_str().unwrap());
    let restored = fingerprints(&p.db());
    assert_eq!(
        restored,
        fingerprints(backup),
        "the database equals its backup"
    );
    assert_eq!(
        sha256(&p.db()),
        v["sha256"].as_str().unwrap(),
        "byte for byte"
    );
    let replaced = Path::new(v["quarantine"].as_str().unwrap()).join("simulation.duckdb");
    assert_ne!(
        fingerprints(&replaced),
        restored,
        "the body's change was made, and is what went to quarantine"
    );
}

#[test]
fn wheel_packs_the_tested_binary_and_guards_runs_from_a_fresh_venv() {
    let Some(maturin) = py_tool("maturin") else {
        return;
    };
    let Some(mypy) = py_tool("mypy") else { return };
    let python = need!(python_with_duckdb());
    let started = Instant::now();
    let work = tempfile::tempdir().unwrap();

    // 1. The wheel, from what this `cargo test` compiled: it compiles nothing, and the binary
    //    it carries is byte for byte the one every other test ran.
    let (wheel, build_secs) = build_wheel(&maturin, work.path());
    let name = wheel.file_name().unwrap().to_string_lossy().into_owned();
    let version = env!("CARGO_PKG_VERSION");
    assert!(
        name.starts_with(&format!("ducksafe-{version}-py3-none-")),
        "{name}: the version is Cargo.toml's"
    );

    // 2. A fresh venv: the wheel, and the duckdb the workload needs.
    let venv = work.path().join("venv");
    let install_secs = install(&python, &wheel, &venv);
    let venv_bin = venv.join("bin/ducksafe");
    assert_eq!(
        sha256(&venv_bin),
        sha256(&ducksafe_bin()),
        "the installed binary is the tested one"
    );
    let out = run(in_venv(&venv, "ducksafe", work.path()).arg("--version"));
    assert!(out.status.success());
    assert!(text(&out.stdout).contains(version), "on the venv's PATH");

    // 3. The orchestrator example, then a guarded_run whose body raises.
    orchestrator_in(&venv);
    guarded_run_in(&venv);

    // 4. The unit tests against the installed package (and its installed binary lookup), and
    //    its types as a user's mypy sees them (py.typed).
    let out = run(in_venv(&venv, "python", work.path())
        .env("DUCKSAFE_TEST_INSTALLED", "1")
        .args(["-m", "unittest", "discover", "-s"])
        .arg(repo().join("tests/python")));
    assert!(out.status.success(), "unit tests against the wheel");
    let typed = work.path().join("typed.py");
    fs::write(&typed, TYPED).unwrap();
    let out = run(support::command(&mypy)
        .current_dir(work.path())
        .args(["--strict", "--no-incremental", "--python-executable"])
        .arg(venv.join("bin/python"))
        .arg(&typed));
    assert!(
        out.status.success(),
        "mypy --strict on a user's script, with the installed wheel's types"
    );

    eprintln!(
        "wheel: built in {build_secs:.1} s, installed with duckdb in {install_secs:.1} s, \
         whole test {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
