//! Everything ducksafe writes goes through here: each command's report, as text for people or as
//! JSON with `--json` ([`finish`]); the hook's one protocol line ([`protocol_line`]); warnings,
//! errors and logs for people on stderr.
//!
//! stdout carries data only: a report, or the protocol line. A closed stdout (`ducksafe list |
//! head -1`) is not an error of its own, as in ripgrep and fd: whoever closed the pipe has read
//! all it wanted. A command that succeeded ends quietly with exit 0; one that failed keeps its
//! exit code (a failed `verify --all | head` is still a failure), and still says why on stderr.
//! Nothing prints JSON unless asked, except the protocol line, which the hook, `pre-run` and
//! `post-run` always answer.

use std::io::{self, Write};
use std::path::Path;

use serde::Serialize;

use crate::audit;
use crate::engine::journal::Pending;
use crate::error::Error;
use crate::protocol::{ErrorCode, ErrorEntry, Response};

/// `12.3 MiB` for people.
pub use crate::error::human_bytes as size;

/// A command's report: serialisable for `--json`, readable as text.
pub trait Report: Serialize {
    /// The report for people, on stdout.
    fn text(&self, out: &mut dyn Write) -> io::Result<()>;

    /// Remarks for people, said on stderr after the text (`--json` carries them inside, when
    /// the report has them).
    fn warnings(&self) -> &[String] {
        &[]
    }

    /// The problems a complete report ends with (a backup that failed verification, an
    /// invalid configuration), with the exit code they give: said on stderr after the text.
    fn failure(&self) -> Option<(Vec<ErrorEntry>, i32)> {
        None
    }

    /// The line said after the failure's problems, when they need one: which configuration
    /// they are in (see [`print_error`]).
    fn failure_summary(&self) -> Option<String> {
        None
    }

    /// What the audit log records of the command (see [`crate::audit`]): by default that it
    /// did its job; a report that knows a decision or a backup says so.
    fn audit(&self) -> audit::Facts {
        audit::Facts {
            ok: self.failure().is_none(),
            ..audit::Facts::default()
        }
    }
}

/// A command stopped by an error, with what it has to say besides.
#[derive(Debug)]
pub struct Failure {
    pub error: Error,
    /// The full response of an operation that has one (`backup`, `restore`): what `--json`
    /// prints instead of the bare error.
    pub response: Option<Box<Response>>,
    /// Remarks said on stderr after the error.
    pub warnings: Box<[String]>,
    /// Text said first on stdout, in text mode: what the command had found before it stopped
    /// (an interrupted restore, listed first).
    pub preface: Box<[u8]>,
}

impl From<Error> for Failure {
    fn from(error: Error) -> Self {
        Failure {
            error,
            response: None,
            warnings: Box::default(),
            preface: Box::default(),
        }
    }
}

/// Ends a command: writes its report (text, or JSON with `--json`) or its failure, and returns
/// the exit code. A command that changes something ends here: its audit line is written last,
/// with the exit code (a log it cannot write is said on stderr and changes nothing).
pub fn finish<R: Report>(json: bool, outcome: Result<R, Failure>) -> i32 {
    match outcome {
        Ok(report) => {
            let (written, code) = write_report(json, &report);
            let code = ended(written, code);
            audited(&report.audit(), code)
        }
        Err(failure) => fail(json, failure),
    }
}

/// Ends a command that stopped on an error (see [`finish`]).
pub fn fail(json: bool, failure: impl Into<Failure>) -> i32 {
    let failure = failure.into();
    let code = ended(write_failure(json, &failure), failure.error.exit_code());
    let facts = failure.response.as_deref().map_or_else(
        || audit::Facts::failed(&failure.error),
        audit::Facts::from_response,
    );
    audited(&facts, code)
}

/// Writes the call's audit line (when it is one the log records) and returns `code` as it was.
fn audited(facts: &audit::Facts, code: i32) -> i32 {
    if let Some(w) = audit::end(facts, code) {
        print_warnings(&[w]);
    }
    code
}

/// The exit code once stdout was written: the command's own `code`, whatever became of stdout.
/// A closed stdout ends quietly (the reader read all it wanted; a failure was said on stderr
/// anyway); another write error is said, and fails a command that had succeeded.
fn ended(written: io::Result<()>, code: i32) -> i32 {
    match written {
        Ok(()) => code,
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => code,
        Err(e) => {
            let err = Error::io("write", Path::new("stdout"), e);
            print_error(&err);
            if code == 0 {
                err.exit_code()
            } else {
                code
            }
        }
    }
}

/// Writes a report and says its warnings and failure: what stdout took, and the exit code.
fn write_report<R: Report>(json: bool, report: &R) -> (io::Result<()>, i32) {
    let written = {
        let mut out = io::stdout().lock();
        if json {
            write_json_pretty(&mut out, report)
        } else {
            report.text(&mut out).and_then(|()| out.flush())
        }
    };
    if !json {
        print_warnings(report.warnings());
    }
    // The failure is said, and decides the exit code, whatever became of stdout.
    let code = match report.failure() {
        Some((entries, code)) => {
            if !json {
                print_problems(&entries, report.failure_summary().as_deref());
            }
            code
        }
        None => 0,
    };
    (written, code)
}

fn write_failure(json: bool, f: &Failure) -> io::Result<()> {
    let mut out = io::stdout().lock();
    let written = if json {
        match &f.response {
            Some(r) => write_json_pretty(&mut out, r),
            None => write_json_pretty(
                &mut out,
                &serde_json::json!({
                    "status": "error",
                    "errors": f.error.entries(),
                    "exit_code": f.error.exit_code(),
                }),
            ),
        }
    } else {
        out.write_all(&f.preface).and_then(|()| out.flush())
    };
    drop(out);
    // The error is said whatever became of stdout.
    print_error(&f.error);
    print_warnings(&f.warnings);
    written
}

fn write_json_pretty(out: &mut dyn Write, v: &impl Serialize) -> io::Result<()> {
    serde_json::to_writer_pretty(&mut *out, v)?;
    writeln!(out)?;
    out.flush()
}

/// Writes the protocol response as one line on stdout and returns its exit code, by the rule
/// of every report ([`ended`]): a caller that closed its end of the pipe does not turn a
/// finished backup into a failure, but a line that could not be written (a full disk under
/// `> pre_run.json`) fails an answer that was a success.
///
/// Every hook call ends here: its audit line is written first, and a log that cannot be written
/// becomes one more warning in the response (never another status or exit code).
pub fn protocol_line(response: &Response) -> i32 {
    let mut response = std::borrow::Cow::Borrowed(response);
    if let Some(w) = audit::end(&audit::Facts::from_response(&response), response.exit_code) {
        print_warnings(std::slice::from_ref(&w));
        response.to_mut().warnings.push(w);
    }
    let line = serde_json::to_string(&*response).unwrap_or_else(|_| "{}".to_owned());
    let written = {
        let mut out = io::stdout().lock();
        writeln!(out, "{line}").and_then(|()| out.flush())
    };
    ended(written, response.exit_code)
}

/// Says a failure for people on stderr: `ducksafe: error: …` then `hint: …` lines. The
/// problems of an invalid configuration point into it (`at /KEY`) without saying which file or
/// variable it is: a closing line names it, and counts them.
pub fn print_error(err: &Error) {
    let summary = matches!(err, Error::ConfigInvalid { .. }).then(|| err.to_string());
    print_problems(&err.entries(), summary.as_deref());
}

/// Says a response's errors for people on stderr, as [`print_error`] does: an invalid
/// configuration's closed by its `reason`, which names it.
pub fn print_response_errors(r: &Response) {
    let summary = r
        .errors
        .first()
        .is_some_and(|e| e.code == ErrorCode::ConfigInvalid)
        .then_some(r.reason.as_str());
    print_problems(&r.errors, summary);
}

/// The entries, then `summary` (if any) as a closing error line.
fn print_problems(entries: &[ErrorEntry], summary: Option<&str>) {
    print_entries(entries);
    if let Some(s) = summary {
        let _ = writeln!(io::stderr().lock(), "ducksafe: error: {s}");
    }
}

/// Says protocol error entries for people on stderr.
pub fn print_entries(entries: &[ErrorEntry]) {
    let mut err = io::stderr().lock();
    for e in entries {
        let _ = match &e.path {
            Some(p) if !p.is_empty() => writeln!(err, "ducksafe: error: {} (at `{p}`)", e.message),
            _ => writeln!(err, "ducksafe: error: {}", e.message),
        };
        if let Some(h) = &e.hint {
            let _ = writeln!(err, "  hint: {h}");
        }
    }
}

/// Says warnings for people on stderr.
pub fn print_warnings(warnings: &[String]) {
    let mut err = io::stderr().lock();
    for w in warnings {
        let _ = writeln!(err, "ducksafe: warning: {w}");
    }
}

/// Interrupted restores for people: what, where, and the ways out.
pub fn pending_text(out: &mut dyn Write, pending: &[Pending]) -> io::Result<()> {
    for p in pending {
        writeln!(
            out,
            "UNFINISHED RESTORE of backup `{}`, started {} (journal `{}`):",
            p.backup_id,
            p.started_at.format("%Y-%m-%d %H:%M:%S UTC"),
            p.journal.display()
        )?;
        writeln!(out, "  {}", p.state)?;
        writeln!(out, "  to finish it:  {}", p.finish)?;
        writeln!(
            out,
            "  or to undo it instead (with nothing using the database):"
        )?;
        for l in &p.undo {
            writeln!(out, "    {l}")?;
        }
    }
    Ok(())
}

/// Starts the log on stderr, never stdout (stdout carries data and the hook's JSON line).
pub fn start_logging(level: tracing::Level) {
    let _ = tracing_subscriber::fmt()
        .with_writer(|| crate::progress::Suspending)
        .with_ansi(colour())
        .with_max_level(level)
        .with_target(false)
        .without_time()
        .try_init();
    crate::timing::phase("request read, configuration loaded, logging started");
}

/// Whether the log may colour its levels: stderr is a terminal and `NO_COLOR` is unset or empty
/// (<https://no-color.org>).
fn colour() -> bool {
    io::IsTerminal::is_terminal(&io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}
