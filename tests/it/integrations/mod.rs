//! The callers in `hooks/` and `examples/`, each driven by the real program: `just`, `make`,
//! `python3` (the orchestrator example) and `dbt` (dbt-duckdb) run the real binary on real
//! DuckDB files, a module per caller (`runners`: just, make and the orchestrator, one table).
//! For each caller: a successful run leaves a verified backup and the run's changes; a run that
//! dies after committing changes ends with the database equal to its pre-run backup, the WAL it
//! left in quarantine and a non-zero exit; a database held by another writer stops the run
//! before it starts, with the retryable code. This file finds the tools and runs them.
//!
//! The tools come from `bash .ci/setup-integrations.sh` ($DUCKSAFE_TOOLS/bin, default
//! ~/.cache/ducksafe-tools/bin; maturin and mypy from $DUCKSAFE_PYTOOLS/bin, see `wheel`), else
//! PATH. A missing tool fails the test under CI
//! ([`support::in_ci`]) and skips it, with a message ([`support::skip`]), elsewhere.

/// The value, or (after [`missing`] said why) the end of the test.
macro_rules! need {
    ($e:expr) => {
        match $e {
            Some(v) => v,
            None => return,
        }
    };
}

mod ci_workflow;
mod dbt;
mod ducksafe_run;
mod prometheus;
mod python;
mod runners;
mod wheel;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::support::{self, Project};

use ducksafe::duck::Fingerprint;
use ducksafe::protocol::Response;

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
            support::command(p)
                .args(["-c", "import duckdb"])
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .or_else(|| missing("python3 with the duckdb package"))
}

/// A command with a clean environment: the ducksafe under test as $DUCKSAFE and first on PATH,
/// then the tools, then PATH; HOME in `home`; no DUCKSAFE_* or DBT_* settings from outside.
fn command(program: &Path, home: &Path) -> Command {
    let mut path = vec![ducksafe_bin().parent().unwrap().to_path_buf()];
    path.extend(search_path());
    let mut c = support::command(program);
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

/// Where the caller leaves pre_run.json / post_run.json, relative to the project.
const STATE_DIR: &str = "logs/ducksafe";

fn state(p: &Project) -> PathBuf {
    p.path(STATE_DIR)
}

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
    let status = support::command(kill)
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

fn saved_response(path: &Path) -> Response {
    serde_json::from_str(fs::read_to_string(path).unwrap().trim()).unwrap()
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
