//! The guarded run in progress on a database. Between a pre_run's backup and its post_run the
//! workload writes the database; a second guarded run started meanwhile would back up the first
//! one's half-written state, and the first run's restore would then erase the second's work. So
//! guarded runs of one database take turns: a pre_run records the run it guards (the process
//! that called it: a wrapper, a recipe's shell, an orchestrator) in a **lease**, and the
//! post_run of that run releases it.
//!
//! The lease belongs to the database, not to a backup directory: it is `.<file>.ducksafe-run`
//! beside the database ([`path_of`], `0600`), the folder that already holds a restore's staged
//! copy and marker. Whatever configuration, `BACKUP_DIR` override or path (a symlinked folder,
//! another relative path) a caller reaches the database through, it finds the same file, so
//! runs through two backup directories of one database take turns too. "The same database" is
//! [`super::database`]'s one rule, the same resolved path (its folder resolved, its file name
//! kept): a hard link under another name is another database to ducksafe, with a lease of its
//! own. The lease names the backup and the backup directory (resolved) it was taken into.
//!
//! Invariants:
//! - A pre_run takes its turn ([`Turn::take`]) under an OFD write lock on the lease file, held
//!   from the check through the record (and a restore holds it for its whole length): two
//!   ducksafe processes can never both find no run in progress and go on, whichever backup
//!   directories they use. The lock is taken without waiting: a conflict is `lock_busy`.
//! - The lease file is written in place and removed only by the holder of that lock; a process
//!   that locked it checks that the file it locked is still the one at the path, else locks
//!   again (as [`super::lock`] does for the directory lock). A file that no run needs (left
//!   empty by a refused pre_run, stale) is removed by the holder when it lets go.
//! - Recorded only once the backup is published, and fsynced with its folder.
//! - A lease whose process is gone is stale and ignored: the PID and the process's start time
//!   name it together, so a reused PID never keeps a lease alive, and a killed wrapper never
//!   blocks the next run for good.
//! - Rotation and `delete` in a backup directory never remove the backup a live lease names in
//!   that directory ([`in_use`]): the run may still need it. A backup of the same id in another
//!   directory is not that run's.
//! - A `.ducksafe-run.json` in the backup directory ([`NAME`]: written by earlier versions, or
//!   by this one when the database's folder cannot hold a file: read-only media) counts as well
//!   for runs through that directory, read and written under the directory lock. The post_run
//!   of its run releases it; a run recorded beside the database replaces it.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::lock;
use crate::error::{Error, Result};
use crate::files::{self, LockError, LockKind};

/// Name of the lease in a backup directory: where earlier versions kept it, and where this one
/// keeps it when the database's folder is read-only.
pub const NAME: &str = ".ducksafe-run.json";

/// A lease is a few hundred bytes: anything much larger is not one.
const MAX_BYTES: u64 = 64 << 10;

/// The lease of the database `db`: `.<file>.ducksafe-run` beside it.
pub fn path_of(db: &Path) -> PathBuf {
    files::parent_of(db).join(format!(".{}.ducksafe-run", files::file_name(db)))
}

/// One guarded run in progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub pid: i32,
    /// The process's start time (clock ticks since boot), telling a reused PID apart.
    pub start: Option<u64>,
    pub backup_id: String,
    /// The backup directory `backup_id` is in, resolved. Absent in a lease in a backup
    /// directory written by earlier versions: that directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_dir: Option<PathBuf>,
    /// The database the run writes, resolved (for people reading the file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<PathBuf>,
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

    /// Whether its backup is in the backup directory `dir`.
    fn names_dir(&self, dir: &Path) -> bool {
        self.backup_dir
            .as_deref()
            .is_some_and(|d| d == dir || d == resolved_dir(dir))
    }

    fn refusal(self) -> Error {
        Error::RunInProgress {
            dir: self.backup_dir.unwrap_or_default(),
            pid: self.pid,
            backup_id: self.backup_id,
            since: self.since,
        }
    }
}

/// A backup directory as a lease names it: resolved through symlinks and `..` when it exists.
fn resolved_dir(dir: &Path) -> PathBuf {
    fs::canonicalize(dir).unwrap_or_else(|_| crate::config::normalize(dir))
}

/// A lease read from `f`: `None` when it is empty, oversized or does not parse (a write that
/// never finished: its pre_run never answered, so no run follows it).
fn parse(f: impl Read) -> Option<Lease> {
    serde_json::from_reader(f.take(MAX_BYTES)).ok()
}

/// The lease beside the database, live or not.
fn read_beside(db: &Path) -> Option<Lease> {
    parse(files::open_read_nofollow(&path_of(db)).ok()?)
}

/// The lease in the backup directory `dir` ([`NAME`]), live or not; one written by an earlier
/// version names that directory.
fn read_in_dir(dir: &Path) -> Option<Lease> {
    let mut lease = parse(files::open_read_nofollow(&dir.join(NAME)).ok()?)?;
    if lease.backup_dir.is_none() {
        lease.backup_dir = Some(resolved_dir(dir));
    }
    Some(lease)
}

/// The backup the last guarded run of `db` through `dir` took, as its record says (live, or
/// left by a run whose post_run has not come yet: a recipe whose lines run in separate
/// shells): what a post_run that names no backup restores.
pub fn recorded_backup(db: &Path, dir: &Path) -> Option<String> {
    [read_beside(db), read_in_dir(dir)]
        .into_iter()
        .flatten()
        .find(|l| l.names_dir(dir))
        .map(|l| l.backup_id)
}

/// The live leases that concern a run of `db` through `dir`: the database's, and the one in
/// the directory. Call with the directory lock held (the directory's lease is read under it).
fn live(db: &Path, dir: &Path) -> impl Iterator<Item = Lease> {
    [read_beside(db), read_in_dir(dir)]
        .into_iter()
        .flatten()
        .filter(Lease::alive)
}

/// Refuses, writing nothing, a new guarded run of `db` (through the backup directory `dir`)
/// while another one's process is still at work on the database: a dry run's check. The
/// caller's own earlier lease (a pre_run again without a post_run) is no obstacle.
pub fn check(db: &Path, dir: &Path) -> Result<()> {
    match live(db, dir).find(|l| !l.is_callers()) {
        Some(l) => Err(l.refusal()),
        None => Ok(()),
    }
}

/// The live leases whose backups are in `dir` (the database's, the directory's own: two only
/// while a run an earlier version recorded is still in progress): those backups are not to be
/// rotated or deleted. `db` is the database when the caller knows it; without it, only the
/// directory's own lease is read. Call with the directory lock held.
pub fn in_use(db: Option<&Path>, dir: &Path) -> Vec<Lease> {
    [db.and_then(read_beside), read_in_dir(dir)]
        .into_iter()
        .flatten()
        .filter(|l| l.names_dir(dir) && l.alive())
        .collect()
}

/// Whether opening a file in a folder failed because nothing can be written there: a read-only
/// filesystem, or a folder this user may not write in.
fn cannot_write_there(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EROFS | libc::EACCES | libc::EPERM)
    )
}

/// A guarded run's turn on a database: the lease file locked (see the module documentation).
/// Taken by a pre_run from its check through its record, and by a restore for its whole
/// length; released on drop.
#[derive(Debug)]
pub struct Turn {
    /// The locked lease file; `None` when the database's folder cannot hold it (see
    /// [`Turn::note`]): the lease is then kept in the backup directory, under its lock.
    file: Option<File>,
    db: PathBuf,
    dir: PathBuf,
    recorded: bool,
    /// Set by [`Turn::commit`]: the pre_run that recorded the run answers `proceed`.
    committed: bool,
    /// Why the lease is kept in the backup directory, when it is and that matters.
    pub note: Option<String>,
}

impl Turn {
    /// Takes the turn of `db` for a run through the backup directory `dir`, whose lock the
    /// caller holds: locks the database's lease file (created when missing) without waiting,
    /// then refuses while another run's lease is live, beside the database or in `dir`.
    /// `lock_busy` either way.
    pub fn take(db: &Path, dir: &Path) -> Result<Turn> {
        let path = path_of(db);
        let mut turn = Turn {
            file: None,
            db: db.to_path_buf(),
            dir: dir.to_path_buf(),
            recorded: false,
            committed: false,
            note: None,
        };
        let file = match lock_lease(&path, true) {
            Ok(Some(file)) => file,
            Ok(None) => {
                return Err(Error::RunTurnBusy {
                    database: db.to_path_buf(),
                    lease: path,
                })
            }
            Err(e) if cannot_write_there(&e) => {
                // Nothing can be written beside the database: the directory's lease, under the
                // directory's lock, is the record (as in earlier versions). On read-only media
                // no run can change the database either: nothing to say.
                if e.raw_os_error() != Some(libc::EROFS) {
                    turn.note = Some(format!(
                        "the run that follows is recorded in `{}` only: `{}` cannot be written ({e}), so a guarded run of this database through another backup directory will not wait for it",
                        dir.join(NAME).display(),
                        path.display()
                    ));
                }
                check(db, dir)?;
                return Ok(turn);
            }
            Err(e) => return Err(Error::io("lock the guarded run's lease", &path, e)),
        };
        turn.file = Some(file);
        // Refused here, the turn's drop removes a lease file it created.
        check(db, dir)?;
        Ok(turn)
    }

    /// Records the run that the backup `backup_id` (published in the turn's backup directory)
    /// guards: the calling process's. Beside the database, in the locked file, fsynced with its
    /// folder; an older lease in the backup directory is then superseded and removed.
    pub fn record(&mut self, backup_id: &str, request_id: Option<&str>) -> Result<()> {
        let pid = files::parent_pid();
        let lease = Lease {
            pid,
            start: files::process_start(pid),
            backup_id: backup_id.to_owned(),
            backup_dir: Some(resolved_dir(&self.dir)),
            database: Some(super::database::resolve(&self.db)),
            request_id: request_id.map(str::to_owned),
            since: Utc::now(),
        };
        let mut bytes = serde_json::to_vec_pretty(&lease).map_err(|e| {
            Error::Internal(format!("the guarded run's lease did not serialize: {e}"))
        })?;
        bytes.push(b'\n');
        let Some(file) = &mut self.file else {
            let p = self.dir.join(NAME);
            return files::write_atomic(&p, &bytes)
                .map_err(|e| Error::io("record the run in", &p, e));
        };
        let path = path_of(&self.db);
        (|| {
            file.set_len(0)?;
            file.seek(SeekFrom::Start(0))?;
            file.write_all(&bytes)?;
            file.sync_all()?;
            files::sync_dir(files::parent_of(&path))
        })()
        .map_err(|e| Error::io("record the run in", &path, e))?;
        self.recorded = true;
        // Checked before the record: stale, or the caller's own earlier run's.
        let old = self.dir.join(NAME);
        if fs::remove_file(&old).is_ok() {
            let _ = files::sync_dir(&self.dir);
        }
        Ok(())
    }
}

impl Turn {
    /// The pre_run that recorded the run is answering `proceed`: the record stays.
    pub fn commit(mut self) {
        self.committed = true;
    }
}

impl Drop for Turn {
    /// A lease file that records no run in progress (created for this turn and left empty, a
    /// stale one, a record that failed half-way) is removed while it is still locked; so is a
    /// record whose pre_run failed after it (a panic in the conversion or the rotation: it
    /// answers `abort`, and no run follows).
    fn drop(&mut self) {
        if self.recorded && !self.committed {
            let path = match &self.file {
                Some(_) => path_of(&self.db),
                // Kept in the backup directory, whose lock the backup still holds.
                None => self.dir.join(NAME),
            };
            if fs::remove_file(&path).is_ok() {
                let _ = files::sync_dir(files::parent_of(&path));
            }
            return;
        }
        let Some(file) = &self.file else { return };
        if self.recorded {
            return;
        }
        let needed = file
            .try_clone()
            .ok()
            .and_then(|mut f| f.seek(SeekFrom::Start(0)).ok().and(parse(f)))
            .is_some_and(|l| l.alive());
        let path = path_of(&self.db);
        if !needed && fs::remove_file(&path).is_ok() {
            let _ = files::sync_dir(files::parent_of(&path));
        }
    }
}

/// Opens (creating it when missing and `create`, `0600`) the lease file and takes its lock
/// without waiting: `Ok(None)` while another process holds it. A file removed (or replaced)
/// while another process held it would let two in at once: after locking, the locked file must
/// be the one at the path, else it is locked again.
fn lock_lease(path: &Path, create: bool) -> std::io::Result<Option<File>> {
    for _ in 0..5 {
        let file = open_lease(path, create)?;
        match files::lock_range(&file, LockKind::Write, 0, 0, false) {
            Ok(()) if !lock::still_at(&file, path) => {}
            Ok(()) => return Ok(Some(file)),
            Err(LockError::Conflict { .. }) => return Ok(None),
            Err(LockError::Io(e)) => return Err(e),
        }
    }
    Ok(None)
}

/// Opens the lease file for reading and writing without following a symlink; anything but a
/// regular file under its name is refused, never used.
fn open_lease(path: &Path, create: bool) -> std::io::Result<File> {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(create)
        .truncate(false)
        .mode(files::PRIVATE_FILE_MODE)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)?;
    if f.metadata()?.is_file() {
        Ok(f)
    } else {
        Err(std::io::Error::other("it is not a regular file"))
    }
}

/// Ends the run a post_run reports on: a lease goes when it names `backup_id` in the backup
/// directory `dir`, or the calling process. Both places are looked at: beside the database
/// `db`, under the lease file's lock, and in `dir`, under the directory's lock. Best effort: a
/// lease left behind (busy, read-only media) goes stale with its process.
pub fn release(db: &Path, dir: &Path, backup_id: Option<&str>) {
    let ends =
        |l: &Lease| (backup_id == Some(l.backup_id.as_str()) && l.names_dir(dir)) || l.is_callers();
    let path = path_of(db);
    // Any other ducksafe that finds this run's lease live holds the lock only for a moment:
    // a few tries. No lease file: nothing to release there.
    for _ in 0..20 {
        match lock_lease(&path, false) {
            Ok(Some(_locked)) => {
                if read_beside(db).is_some_and(|l| ends(&l)) && fs::remove_file(&path).is_ok() {
                    let _ = files::sync_dir(files::parent_of(&path));
                }
                break;
            }
            Ok(None) => std::thread::sleep(std::time::Duration::from_millis(50)),
            Err(_) => break,
        }
    }
    // The directory's own lease, under the directory lock, as every read that decides and every
    // write of it: no pre_run can record a new one between this read and the removal.
    let Ok(_lock) = lock::DirLock::acquire(dir) else {
        return;
    };
    if read_in_dir(dir).is_some_and(|l| ends(&l)) && fs::remove_file(dir.join(NAME)).is_ok() {
        let _ = files::sync_dir(dir);
    }
}
