//! The guarded run in progress on a database. Between a pre_run's backup and its post_run the
//! workload writes the database; a second guarded run started meanwhile would back up the first
//! one's half-written state, and the first run's restore would then erase the second's work. So
//! guarded runs of one database take turns: a pre_run records the run it guards (the process
//! that called it: a wrapper, a recipe's shell, an orchestrator) in `.ducksafe-run.json` in the
//! backup directory, and the post_run of that run releases it.
//!
//! Invariants:
//! - Read and written under the directory lock; recorded only once the backup is published.
//! - A lease whose process is gone is stale and ignored: the PID and the process's start time
//!   name it together, so a reused PID never keeps a lease alive, and a killed wrapper never
//!   blocks the next run for good.
//! - Rotation never deletes the backup a live lease names: the run may still need it.

use std::fs;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::files;

/// Name of the lease in the backup directory.
pub const NAME: &str = ".ducksafe-run.json";

/// One guarded run in progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub pid: i32,
    /// The process's start time (clock ticks since boot), telling a reused PID apart.
    pub start: Option<u64>,
    pub backup_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    pub since: DateTime<Utc>,
}

impl Lease {
    /// Whether the process that holds it is still the one that took it.
    fn alive(&self) -> bool {
        match (files::process_start(self.pid), self.start) {
            (Some(now), Some(then)) => now == then,
            (Some(_), None) => true,
            (None, _) => false,
        }
    }

    /// Whether the calling process is the one whose run this is: the process that started this
    /// one (a wrapper calling the binary), or this process itself (a program calling the engine
    /// in-process after it ran the binary's pre_run).
    fn is_callers(&self) -> bool {
        [files::parent_pid(), files::own_pid()]
            .into_iter()
            .any(|pid| self.pid == pid && self.start == files::process_start(pid))
    }
}

/// Where the record of a guarded run lives in the backup directory `dir`.
pub fn path(dir: &Path) -> PathBuf {
    dir.join(NAME)
}

/// The lease of a run still in progress, if any (a stale or unreadable one is none).
pub fn live(dir: &Path) -> Option<Lease> {
    read(dir).filter(Lease::alive)
}

/// The recorded lease, live or not (an unreadable one is none).
fn read(dir: &Path) -> Option<Lease> {
    let f = files::open_read_nofollow(&path(dir)).ok()?;
    serde_json::from_reader(std::io::Read::take(f, 64 << 10)).ok()
}

/// Refuses a new guarded run while another one's process is still at work on the database.
/// The caller's own earlier lease (a pre_run again without a post_run) is no obstacle.
pub fn check(dir: &Path) -> Result<()> {
    match live(dir) {
        Some(l) if !l.is_callers() => Err(Error::RunInProgress {
            dir: dir.to_path_buf(),
            pid: l.pid,
            backup_id: l.backup_id,
            since: l.since,
        }),
        _ => Ok(()),
    }
}

/// Records the run that the backup `backup_id` guards: the calling process's.
pub fn record(dir: &Path, backup_id: &str, request_id: Option<&str>) -> Result<()> {
    let p = path(dir);
    stage(dir, backup_id, request_id)?
        .put()
        .and_then(|()| files::sync_dir(dir))
        .map_err(|e| Error::io("record the run in", &p, e))
}

/// [`record`]'s file written under a temporary name and fsynced, for the caller to put in
/// place and sync the directory ([`files::Staged`]).
pub fn stage(dir: &Path, backup_id: &str, request_id: Option<&str>) -> Result<files::Staged> {
    let pid = files::parent_pid();
    let lease = Lease {
        pid,
        start: files::process_start(pid),
        backup_id: backup_id.to_owned(),
        request_id: request_id.map(str::to_owned),
        since: Utc::now(),
    };
    let p = path(dir);
    files::stage_json(&p, &lease).map_err(|e| Error::io("record the run in", &p, e))
}

/// Ends the run a post_run reports on: the lease goes when it names `backup_id` or the calling
/// process. Best effort: a lease left behind goes stale with its process.
pub fn release(dir: &Path, backup_id: Option<&str>) {
    // Under the directory lock, as every read that decides and every write: no pre_run can
    // record a new lease between this read and the removal. Busy (or read-only media): the
    // lease stays, and goes stale with its process.
    let Ok(_lock) = super::lock::DirLock::acquire(dir) else {
        return;
    };
    let Some(lease) = read(dir) else { return };
    if (backup_id == Some(lease.backup_id.as_str()) || lease.is_callers())
        && fs::remove_file(path(dir)).is_ok()
    {
        let _ = files::sync_dir(dir);
    }
}
