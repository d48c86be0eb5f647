//! Running the binary the way the reliability scenarios need: started with its stderr read
//! line by line, paused at a failpoint until the test lets it go ([`paused`]), killed at a
//! failpoint or at a random moment ([`run_killed`]), and its one JSON line parsed with a reason
//! when it is not one ([`one_line`]).

use std::fmt::Display;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::support::cases::ensure;

use ducksafe::config::{self, Settings, Source};
use ducksafe::protocol::Response;

/// The validated configuration of a project, loaded in-process (no environment overrides).
pub fn settings_of(config: &Path) -> Settings {
    config::load(&Source::File(config.to_path_buf()), &|_| None).unwrap()
}

/// How a run is ended early.
#[derive(Debug, Clone)]
pub enum Kill {
    /// `DUCKSAFE_FAILPOINT=<point>`: the process aborts there.
    Abort(&'static str),
    /// `DUCKSAFE_FAILPOINT=<point>:sleep=…`, then SIGKILL from the test once it sleeps there.
    SleepThenSigkill(&'static str),
    /// SIGKILL after this long, wherever the process is.
    SigkillAfter(Duration),
}

impl Display for Kill {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Kill::Abort(p) => write!(f, "abort at `{p}`"),
            Kill::SleepThenSigkill(p) => write!(f, "SIGKILL while paused at `{p}`"),
            Kill::SigkillAfter(d) => write!(f, "SIGKILL after {} µs", d.as_micros()),
        }
    }
}

/// What happened to a run that was meant to be killed.
pub struct Killed {
    /// The process died of the kill (abort or SIGKILL) rather than finishing.
    pub died: bool,
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

/// A spawned child whose stderr lines arrive on a channel and whose stdout is collected.
pub struct Running {
    pub child: Child,
    pub lines: mpsc::Receiver<String>,
    stderr: Option<std::thread::JoinHandle<String>>,
    stdout: Option<std::thread::JoinHandle<Vec<u8>>>,
    /// The file that lets a run [`paused`] at a failpoint go on.
    go: Option<PathBuf>,
}

pub fn start(mut cmd: Command, stdin: Option<&[u8]>) -> Running {
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    if let Some(input) = stdin {
        let mut s = child.stdin.take().unwrap();
        let _ = s.write_all(input);
    }
    let (tx, lines) = mpsc::channel();
    let err = child.stderr.take().unwrap();
    let stderr = std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(err).lines() {
            let Ok(line) = line else { break };
            all.push_str(&line);
            all.push('\n');
            let _ = tx.send(line);
        }
        all
    });
    let mut out = child.stdout.take().unwrap();
    let stdout = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    Running {
        child,
        lines,
        stderr: Some(stderr),
        stdout: Some(stdout),
        go: None,
    }
}

/// Starts `cmd` (with `stdin`, if any) with `DUCKSAFE_FAILPOINT=<point>:wait=<go>` and waits until
/// it is paused at `point`: it stays there, however long the test takes, until
/// [`Running::release`] (or the drop of the run) creates `go`. The test acts at exactly that
/// moment, whatever the load on the machine. An error (with the run's stderr) when the run
/// ended before it got there.
pub fn paused(
    mut cmd: Command,
    stdin: Option<&[u8]>,
    point: &str,
    go: &Path,
) -> Result<Running, String> {
    let _ = std::fs::remove_file(go);
    let _ = std::fs::remove_file(format!("{}.reached", go.display()));
    cmd.env(
        "DUCKSAFE_FAILPOINT",
        format!("{point}:wait={}", go.display()),
    );
    let mut run = start(cmd, stdin);
    run.go = Some(go.to_path_buf());
    // Waits until the failpoint says it waits, or the run ends (its stderr closes); the bound
    // only keeps a broken run from hanging the suite.
    if run.wait_for_line(
        &format!("failpoint `{point}`: waiting"),
        Duration::from_secs(300),
    ) {
        Ok(run)
    } else {
        let out = run.release();
        Err(format!(
            "the run never reached `{point}` (exit {:?}): {}",
            out.status.code(),
            out.stderr
        ))
    }
}

impl Running {
    /// Waits until a stderr line contains `needle`; false when the process ended first.
    pub fn wait_for_line(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if l.contains(needle) => return true,
                Ok(_) => {}
                Err(_) => return false,
            }
        }
    }
    pub fn finish(mut self, killed_by: Option<i32>) -> Killed {
        let status = self.child.wait().unwrap();
        Killed {
            died: killed_by.is_some() && status.signal() == killed_by,
            status,
            stdout: self.stdout.take().unwrap().join().unwrap(),
            stderr: self.stderr.take().unwrap().join().unwrap(),
        }
    }

    /// Lets a run [`paused`] at a failpoint go on, and waits for it to end.
    pub fn release(mut self) -> Killed {
        if let Some(go) = self.go.take() {
            std::fs::write(go, b"").unwrap();
        }
        self.finish(None)
    }
}

/// However the test ends (a failed assertion included), a paused run is let go and reaped: no
/// process stays waiting at its failpoint.
impl Drop for Running {
    fn drop(&mut self) {
        if let Some(go) = self.go.take() {
            let _ = std::fs::write(go, b"");
            let _ = self.child.wait();
        }
    }
}

pub const SIGABRT: i32 = 6;

pub const SIGKILL: i32 = 9;

/// Runs `cmd` (with `stdin`, if any) and ends it as `kill` says.
pub fn run_killed(mut cmd: Command, stdin: Option<&[u8]>, kill: &Kill) -> Killed {
    match kill {
        Kill::Abort(point) => {
            cmd.env("DUCKSAFE_FAILPOINT", point);
            start(cmd, stdin).finish(Some(SIGABRT))
        }
        Kill::SleepThenSigkill(point) => {
            cmd.env("DUCKSAFE_FAILPOINT", format!("{point}:sleep=120000"));
            let mut r = start(cmd, stdin);
            let reached = r.wait_for_line(
                &format!("failpoint `{point}`: sleeping"),
                Duration::from_secs(60),
            );
            if reached {
                let _ = r.child.kill();
            }
            r.finish(reached.then_some(SIGKILL))
        }
        Kill::SigkillAfter(d) => {
            let mut r = start(cmd, stdin);
            std::thread::sleep(*d);
            let running = r.child.try_wait().unwrap().is_none();
            if running {
                let _ = r.child.kill();
            }
            r.finish(running.then_some(SIGKILL))
        }
    }
}

/// A kill at a failpoint proves it happened there before its aftermath is judged: the process
/// died of the kill, and its last words name the failpoint. Without this, a failpoint moved or
/// renamed in the code would turn its crash cases into ordinary successful runs. (A SIGKILL at a
/// random moment may come after the run ended; that case is judged as a finished run.)
pub fn killed_where_meant(kill: &Kill, out: &Killed) -> Result<(), String> {
    let point = match kill {
        Kill::Abort(p) | Kill::SleepThenSigkill(p) => *p,
        Kill::SigkillAfter(_) => return Ok(()),
    };
    ensure(out.died, || {
        format!(
            "{kill}: the process was not killed there (exit {:?}); stderr: {}",
            out.status.code(),
            out.stderr
        )
    })?;
    ensure(out.stderr.contains(&format!("failpoint `{point}`")), || {
        format!("{kill}: stderr does not show the failpoint: {}", out.stderr)
    })
}

/// Parses the one JSON line a hook must print; an error says what was wrong.
pub fn one_line(stdout: &[u8], status: ExitStatus) -> Result<Response, String> {
    let text = std::str::from_utf8(stdout).map_err(|e| format!("stdout is not UTF-8: {e}"))?;
    ensure(
        text.ends_with('\n') && text.matches('\n').count() == 1,
        || {
            format!(
                "expected exactly one line on stdout, got {} bytes: {:?}",
                text.len(),
                text.chars().take(300).collect::<String>()
            )
        },
    )?;
    let r: Response = serde_json::from_str(text.trim_end())
        .map_err(|e| format!("the line is not a protocol response: {e}"))?;
    ensure(status.code() == Some(r.exit_code), || {
        format!(
            "exit status {status} but the response says exit_code {}",
            r.exit_code
        )
    })?;
    Ok(r)
}
