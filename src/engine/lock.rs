//! Locks: one ducksafe at a time per backup directory, and no writer on the database while it is
//! copied or replaced.
//!
//! Invariants:
//! - Every lock is an OFD lock (see [`crate::files`]): the kernel drops it when the process dies,
//!   so a killed run never leaves a stale lock behind, and nothing else this process does with
//!   the same files can release it early.
//! - [`SourceLock`] is a shared lock on the database file: DuckDB writers (which need an
//!   exclusive lock) cannot open it, DuckDB readers and ducksafe's own read-only opens can.
//! - [`DatabaseLock`] is an exclusive lock: nobody, not even a reader, has the database open.
//! - Taking a lock never waits: a conflict is answered at once with a retryable error.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::files::{self, LockError, LockKind};

/// Name of the lock file in the backup directory.
pub const DIR_LOCK_NAME: &str = ".ducksafe.lock";

/// Exclusive ownership of a backup directory for the life of the value.
#[derive(Debug)]
pub struct DirLock {
    _file: File,
}

impl DirLock {
    /// Takes the backup directory's lock or fails at once with `lock_busy`.
    pub fn acquire(dir: &Path) -> Result<DirLock> {
        let path = dir.join(DIR_LOCK_NAME);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(files::PRIVATE_FILE_MODE)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path)
            .map_err(|e| Error::io("open lock file", &path, e))?;
        match files::try_lock(&file, LockKind::Write) {
            Ok(()) => {
                // Record our PID so that a refused peer can name us (OFD locks carry no PID).
                let _ = file.set_len(0);
                let _ = file.seek(SeekFrom::Start(0));
                let _ = writeln!(file, "{}", std::process::id());
                Ok(DirLock { _file: file })
            }
            Err(LockError::Conflict { .. }) => {
                let mut s = String::new();
                let _ = file.read_to_string(&mut s);
                Err(Error::LockBusy {
                    dir: dir.to_path_buf(),
                    pid: s.trim().parse().ok(),
                })
            }
            Err(LockError::Io(e)) => Err(Error::io("lock", &path, e)),
        }
    }
}

impl DirLock {
    /// The backup directory's lock for a restore, which only reads the directory. On a
    /// read-only directory (a write-protected disk, a snapshot mount) the lock file cannot be
    /// opened for writing: a shared lock on it, opened read-only, still keeps out a ducksafe
    /// that writes there through another mount of the same files; without a lock file nobody
    /// has ever locked the directory, and nobody can write it. `None` then. The restore locks
    /// the database itself exclusively either way.
    pub fn acquire_for_restore(dir: &Path) -> Result<Option<DirLock>> {
        match DirLock::acquire(dir) {
            Ok(lock) => Ok(Some(lock)),
            Err(Error::Io { source, .. })
                if matches!(source.raw_os_error(), Some(libc::EROFS | libc::EACCES)) =>
            {
                let path = dir.join(DIR_LOCK_NAME);
                let mut file = match files::open_read_nofollow(&path) {
                    Ok(f) => f,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                    Err(e) => return Err(Error::io("open lock file", &path, e)),
                };
                match files::try_lock(&file, LockKind::Read) {
                    Ok(()) => Ok(Some(DirLock { _file: file })),
                    Err(LockError::Conflict { .. }) => {
                        let mut s = String::new();
                        let _ = file.read_to_string(&mut s);
                        Err(Error::LockBusy {
                            dir: dir.to_path_buf(),
                            pid: s.trim().parse().ok(),
                        })
                    }
                    Err(LockError::Io(e)) => Err(Error::io("lock", &path, e)),
                }
            }
            Err(e) => Err(e),
        }
    }
}

/// A shared lock on the source database: no writer can start while it is held.
#[derive(Debug)]
pub struct SourceLock {
    pub file: File,
    pub path: PathBuf,
}

impl SourceLock {
    /// Opens the database file and takes a shared lock, or fails with `database_locked` naming
    /// the process that holds it for writing.
    pub fn acquire(path: &Path) -> Result<SourceLock> {
        let file = files::open_read(path).map_err(|e| not_found_or_io(path, e))?;
        lock_or_locked(&file, path, LockKind::Read)?;
        Ok(SourceLock {
            file,
            path: path.to_path_buf(),
        })
    }
}

/// An exclusive lock on the database: nobody else has it open (restore).
#[derive(Debug)]
pub struct DatabaseLock {
    pub file: File,
}

impl DatabaseLock {
    pub fn acquire(path: &Path) -> Result<DatabaseLock> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(path)
            .map_err(|e| not_found_or_io(path, e))?;
        lock_or_locked(&file, path, LockKind::Write)?;
        Ok(DatabaseLock { file })
    }

    /// The lock when the database exists; `None` when there is none to lock (a restore may
    /// put back a database that was deleted).
    pub fn acquire_if_present(path: &Path) -> Result<Option<DatabaseLock>> {
        if std::fs::symlink_metadata(path).is_err() {
            return Ok(None);
        }
        Self::acquire(path).map(Some)
    }
}

fn not_found_or_io(path: &Path, e: std::io::Error) -> Error {
    if e.kind() == std::io::ErrorKind::NotFound {
        Error::DatabaseNotFound {
            path: path.to_path_buf(),
        }
    } else {
        Error::io("open database", path, e)
    }
}

fn lock_or_locked(file: &File, path: &Path, kind: LockKind) -> Result<()> {
    match files::try_lock(file, kind) {
        Ok(()) => Ok(()),
        Err(LockError::Conflict { pid }) => Err(Error::DatabaseLocked {
            path: path.to_path_buf(),
            pid,
            holder: pid.and_then(process_name),
        }),
        Err(LockError::Io(e)) => Err(Error::io("lock database", path, e)),
    }
}

/// The executable of a process, for messages (`/usr/bin/python3.11`).
fn process_name(pid: i32) -> Option<String> {
    std::fs::read_link(format!("/proc/{pid}/exe"))
        .ok()
        .map(|p| p.display().to_string())
        .or_else(|| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .ok()
                .map(|s| s.trim().to_owned())
        })
}
