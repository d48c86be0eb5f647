//! The audit log: one JSON line in `LOG_DIR/ducksafe.jsonl` for every command that changes
//! something (`backup`, `restore`, `prune`, `pin`, `unpin`, `delete`, `adopt`) and for every
//! hook call (`hook`, `pre-run`, `post-run`, `validate`), whatever its decision. `ducksafe
//! status` reads it back for the last hook run.
//!
//! One call, one line: [`begin`] names the call (the command line's dispatch, for the commands
//! above only), [`located`] says where its configuration puts the log once that is known, and
//! [`end`], called from the one place each call ends ([`crate::output`]), writes the line. `end`
//! takes the call, so a second `end` writes nothing.
//!
//! Invariants:
//! - The log never decides an outcome: a log that cannot be written (a full disk, a folder that
//!   is not writable) is a warning returned to the caller, never an error or another exit code.
//! - Only facts go in: codes, ids, numbers, and paths passed through [`redact_text`]. Never a
//!   message, a reason or a configuration value: no credential can reach the log.
//! - Appends are whole lines (see [`crate::files::append_line`]); the file is `0600` in a
//!   folder created `0700`.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use crate::config::{redact_text, Settings};
use crate::error::Error;
use crate::protocol::{generated_request_id, Response, Status};

/// The log's file name in `LOG_DIR`.
pub const LOG_FILE: &str = "ducksafe.jsonl";
/// How many rotated files (`ducksafe.jsonl.1` … `.5`) are kept beside the current one.
pub const KEEP_ROTATED: u32 = 5;

/// One line of the log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// When the call ended, RFC 3339 UTC.
    pub time: String,
    /// The hook's `request_id` (as the response echoed it), else one generated for the call.
    pub request_id: String,
    /// The subcommand: `backup`, `restore`, `prune`, `pin`, `unpin`, `delete`, `adopt`,
    /// `hook`, `pre-run`, `post-run`, `validate`.
    pub command: String,
    /// The hook event (`pre_run`, `post_run`, `validate`); absent for the other commands and
    /// for a request that could not be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    /// `ok` or `error`: did the call do its job.
    pub status: String,
    /// The hook's decision (`proceed`, `abort`, `kept`, `restored`, `restore_failed`,
    /// `skipped`, `valid`, `invalid`), or what the command did (`pinned`, `deleted`…).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<String>,
    pub dry_run: bool,
    /// The backup made, restored, pinned or deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_id: Option<String>,
    /// That backup's size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    /// The database, when the configuration could be read (absolute).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    pub duration_ms: u64,
    pub exit_code: i32,
    /// The error codes of the response (`database_locked`, `insufficient_space`…).
    pub errors: Vec<String>,
    pub version: String,
    pub pid: u32,
}

/// What a call ended with, as its report or response says it.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    pub request_id: Option<String>,
    pub event: Option<String>,
    pub ok: bool,
    pub decision: Option<String>,
    pub backup_id: Option<String>,
    pub bytes: Option<u64>,
    pub errors: Vec<String>,
}

impl Facts {
    /// A command that did its job, with what it says it did.
    pub fn done(decision: &str, backup_id: Option<&str>, bytes: Option<u64>) -> Facts {
        Facts {
            ok: true,
            decision: Some(decision.to_owned()),
            backup_id: backup_id.map(str::to_owned),
            bytes,
            ..Facts::default()
        }
    }

    /// A command stopped by `error`.
    pub fn failed(error: &Error) -> Facts {
        Facts {
            errors: vec![error.code().as_str().to_owned()],
            ..Facts::default()
        }
    }

    /// What a hook response (or a command that answers with one) says.
    pub fn from_response(r: &Response) -> Facts {
        let backup = r.backup.as_ref();
        Facts {
            request_id: Some(r.request_id.clone()),
            event: r.event.clone(),
            ok: r.status == Status::Ok,
            decision: serde_json::to_value(r.decision)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned)),
            backup_id: backup
                .map(|b| b.id.clone())
                .or_else(|| r.restore.as_ref().map(|x| x.backup_id.clone())),
            bytes: backup.map(|b| b.bytes),
            errors: r
                .errors
                .iter()
                .map(|e| e.code.as_str().to_owned())
                .collect(),
        }
    }
}

/// The call being made, between [`begin`] and [`end`].
#[derive(Debug)]
struct Call {
    command: &'static str,
    started: Instant,
    dry_run: bool,
    /// `LOG_DIR`, once the configuration was read.
    log_dir: Option<PathBuf>,
    max_bytes: u64,
    database: Option<PathBuf>,
    /// Where the log is when the configuration could not be read: `logs` beside the
    /// configuration file (or `$DUCKSAFE_LOG_DIR`), used only when that folder exists.
    fallback: Option<PathBuf>,
}

static CALL: Mutex<Option<Call>> = Mutex::new(None);

fn with_call(f: impl FnOnce(&mut Call)) {
    if let Ok(mut guard) = CALL.lock() {
        if let Some(call) = guard.as_mut() {
            f(call);
        }
    }
}

/// Starts the audit of this process's call: `command` is the subcommand.
pub fn begin(command: &'static str, dry_run: bool) {
    if let Ok(mut guard) = CALL.lock() {
        *guard = Some(Call {
            command,
            started: Instant::now(),
            dry_run,
            log_dir: None,
            max_bytes: 10 * 1024 * 1024,
            database: None,
            // Before any configuration is known (a request that cannot be read): the
            // working directory's `logs`, or `$DUCKSAFE_LOG_DIR`, when it exists.
            fallback: Some(PathBuf::from(
                std::env::var("DUCKSAFE_LOG_DIR")
                    .ok()
                    .filter(|d| !d.is_empty())
                    .unwrap_or_else(|| "logs".to_owned()),
            )),
        });
    }
}

/// The call's configuration is read: the log goes to its `LOG_DIR`.
pub fn located(settings: &Settings) {
    with_call(|c| {
        c.log_dir = Some(settings.log_dir.clone());
        c.max_bytes = settings.config.log_max_bytes;
        c.database = Some(settings.db_path.clone());
    });
}

/// A hook request's own `dry_run` (the command line's is given to [`begin`]).
pub fn dry_run(dry_run: bool) {
    with_call(|c| c.dry_run |= dry_run);
}

/// Where the log would be if the configuration at hand cannot be read (see [`Call`]).
pub fn fallback(dir: PathBuf) {
    with_call(|c| c.fallback = Some(dir));
}

/// Ends the call: appends its line. Returns a warning when the line could not be written
/// (nothing else changes: not the outcome, not the exit code). Without a [`begin`] (a command
/// that changes nothing), or for the second time, does nothing.
pub fn end(facts: &Facts, exit_code: i32) -> Option<String> {
    let call = CALL.lock().ok()?.take()?;
    let dir = match (&call.log_dir, &call.fallback) {
        (Some(dir), _) => dir.clone(),
        // The configuration was not read: log only into a folder that is already there.
        (None, Some(dir)) if dir.is_dir() => dir.clone(),
        _ => {
            tracing::debug!("no audit line: the configuration names no log folder");
            return None;
        }
    };
    let record = Record {
        time: crate::clock::now().to_rfc3339_opts(SecondsFormat::Millis, true),
        request_id: redact_text(
            &facts
                .request_id
                .clone()
                .unwrap_or_else(generated_request_id),
        ),
        command: call.command.to_owned(),
        event: facts.event.clone(),
        status: if facts.ok { "ok" } else { "error" }.to_owned(),
        decision: facts.decision.clone(),
        dry_run: call.dry_run,
        backup_id: facts.backup_id.clone(),
        bytes: facts.bytes,
        database: call
            .database
            .as_ref()
            .map(|p| redact_text(&p.display().to_string())),
        duration_ms: u64::try_from(call.started.elapsed().as_millis()).unwrap_or(u64::MAX),
        exit_code,
        errors: facts.errors.clone(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        pid: std::process::id(),
    };
    let mut line = serde_json::to_vec(&record).ok()?;
    line.push(b'\n');
    let log = dir.join(LOG_FILE);
    let written = ensure_dir(&dir, call.log_dir.is_some())
        .and_then(|()| crate::files::append_line(&log, &line, call.max_bytes, KEEP_ROTATED));
    match written {
        Ok(a) => {
            if a.rotated {
                tracing::debug!("rotated `{}`", log.display());
            }
            None
        }
        Err(e) => Some(format!(
            "could not append to the audit log `{}`: {e}; the {} itself was not affected (check `LOG_DIR` and the free space there)",
            log.display(),
            call.command
        )),
    }
}

/// Creates the log folder (`0700`, parents too) when `create`, else requires it. A folder of
/// this user's that is open to others (the seed's `mkdir -p backups logs` makes it `0755`) is
/// made `0700`: the log names databases, backups and runs. A system folder is never changed,
/// nor one of another user (the file in it is `0600` anyway).
fn ensure_dir(dir: &Path, create: bool) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    if create && !dir.is_dir() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(crate::files::PRIVATE_DIR_MODE)
            .create(dir)?;
        // Like every folder ducksafe makes, durable once made (its name synced in its parent).
        crate::files::sync_dir(crate::files::parent_of(dir))?;
    }
    if let Ok(meta) = std::fs::symlink_metadata(dir) {
        if meta.is_dir()
            && meta.mode() & 0o077 != 0
            && meta.uid() == crate::files::euid()
            && !crate::files::is_system_folder(dir)
            && !crate::files::is_shared_system_folder(dir)
        {
            crate::files::set_dir_mode(dir, crate::files::PRIVATE_DIR_MODE)?;
        }
    }
    Ok(())
}

/// The most recent lines of the log in `dir`, oldest first: the current file's last `budget`
/// bytes, and the newest rotated file's when the current one holds fewer than `want` lines.
/// Lines that do not parse (a line cut short by a full disk) are skipped. A missing log is
/// empty; one that cannot be read is an error.
pub fn recent(dir: &Path, want: usize) -> std::io::Result<Vec<Record>> {
    const BUDGET: u64 = 1 << 20;
    let log = dir.join(LOG_FILE);
    let mut records = tail(&log, BUDGET)?;
    if records.len() < want {
        let mut older = tail(&crate::files::rotated_name(&log, 1), BUDGET)?;
        older.extend(records);
        records = older;
    }
    Ok(records)
}

/// The whole lines in the last `budget` bytes of `path` that parse as records.
fn tail(path: &Path, budget: u64) -> std::io::Result<Vec<Record>> {
    use std::io::{Read, Seek, SeekFrom};
    // Never waits on a FIFO planted at the name: status would hang.
    let mut f = match crate::files::open_read_regular(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let len = f.metadata()?.len();
    let start = len.saturating_sub(budget);
    f.seek(SeekFrom::Start(start))?;
    let mut bytes = Vec::new();
    f.take(budget).read_to_end(&mut bytes)?;
    let text = String::from_utf8_lossy(&bytes);
    let mut lines: Vec<&str> = text.split('\n').collect();
    if start > 0 && !lines.is_empty() {
        lines.remove(0); // begins mid-line
    }
    Ok(lines
        .into_iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect())
}

/// When a record's call ended.
pub fn time_of(r: &Record) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(&r.time)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_torn_line_is_skipped_and_the_rest_read() {
        let dir = tempfile::tempdir().unwrap();
        let r = Record {
            time: "2026-01-01T00:00:00.000Z".into(),
            request_id: "r".into(),
            command: "hook".into(),
            event: Some("pre_run".into()),
            status: "ok".into(),
            decision: Some("proceed".into()),
            dry_run: false,
            backup_id: None,
            bytes: None,
            database: None,
            duration_ms: 1,
            exit_code: 0,
            errors: vec![],
            version: "0".into(),
            pid: 1,
        };
        let line = serde_json::to_string(&r).unwrap();
        let text = format!("{line}\n{{\"time\": \"2026-\n{line}\n");
        std::fs::write(dir.path().join(LOG_FILE), text).unwrap();
        assert_eq!(recent(dir.path(), 1).unwrap(), vec![r.clone(), r]);
        assert!(recent(&dir.path().join("none"), 1).unwrap().is_empty());
    }
}
