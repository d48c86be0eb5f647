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
//! - Taking a lock never waits: a conflict is answered at once with a retryable error. The one
//!   exception is the [`Section`], held only for the instants in which a backup appears in or
//!   disappears from the directory.
//! - The lock file has two locks, on two bytes: byte 0 is the directory's owner ([`DirLock`],
//!   one ducksafe that writes at a time), byte 1 the publication section ([`Section`]): the
//!   writer holds it exclusively while a backup's manifest, sidecar and file appear or go, and
//!   readers (`list`, `verify`) hold it shared while they read the inventory, so they never see
//!   half a backup and take nothing in flight for damage.
//! - The directory's owner also holds a `flock` on the backup directory itself: a lock file
//!   deleted while held (the docs say never to) cannot let a second run in, since a directory
//!   that holds backups cannot be deleted. Where a filesystem has no `flock` (some network
//!   filesystems), the lock file alone decides; a lock file found replaced after locking is
//!   locked again.
//! - On read-only media (a write-protected disk, a snapshot mount) the directory's `flock` is the
//!   lock: nothing can write there, so restores, `list` and `verify` need no lock file.
//! - A dry run's lock ([`DirLock::acquire_without_writing`]) is refused by a ducksafe at work
//!   and keeps one out, like the real one, but creates and writes nothing.

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::files::{self, LockError, LockKind};

/// Name of the lock file in the backup directory.
pub const DIR_LOCK_NAME: &str = ".ducksafe.lock";

/// Exclusive ownership of a backup directory for the life of the value.
#[derive(Debug)]
pub struct DirLock {
    _dir: Option<File>,
    _file: Option<File>,
}

/// Byte of the lock file that stands for the directory's owner.
const OWNER_BYTE: u64 = 0;
/// Byte of the lock file that stands for the publication section.
const SECTION_BYTE: u64 = 1;

fn open_lock_file(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(files::PRIVATE_FILE_MODE)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

/// True while `file` is still the file at `path` (not deleted or replaced since it was opened).
pub fn still_at(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::symlink_metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// `flock` on the directory itself: `Ok(Some)` held, `Ok(None)` not supported here,
/// `Err(())` held by someone else.
fn lock_directory(dir: &Path) -> Result<Option<File>, ()> {
    let Ok(d) = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(dir)
    else {
        return Ok(None);
    };
    match files::try_flock_exclusive(&d) {
        Ok(true) => Ok(Some(d)),
        Ok(false) => Err(()),
        // No `flock` here (some network filesystems): the lock file alone decides.
        Err(_) => Ok(None),
    }
}

fn busy(dir: &Path) -> Error {
    let pid = std::fs::read_to_string(dir.join(DIR_LOCK_NAME))
        .ok()
        .and_then(|s| s.trim().parse().ok());
    Error::LockBusy {
        dir: dir.to_path_buf(),
        pid,
    }
}

impl DirLock {
    /// Takes the backup directory's lock or fails at once with `lock_busy`.
    pub fn acquire(dir: &Path) -> Result<DirLock> {
        let held_dir = lock_directory(dir).map_err(|()| busy(dir))?;
        let path = dir.join(DIR_LOCK_NAME);
        // A lock file deleted (or replaced) while another run held it would let two runs in at
        // once: after locking, the locked file must be the one at the path, else lock again.
        for _ in 0..5 {
            let mut file = match open_lock_file(&path) {
                Ok(f) => f,
                // Read-only media: the directory's own lock is the lock.
                Err(e) if e.raw_os_error() == Some(libc::EROFS) && held_dir.is_some() => {
                    return Ok(DirLock {
                        _dir: held_dir,
                        _file: None,
                    });
                }
                Err(e) => return Err(Error::io("open lock file", &path, e)),
            };
            match files::lock_range(&file, LockKind::Write, OWNER_BYTE, 1, false) {
                Ok(()) if !still_at(&file, &path) => {
                    tracing::warn!(
                        "`{}` was deleted or replaced while locked; locking the new one",
                        path.display()
                    );
                }
                Ok(()) => {
                    // Record our PID so that a refused peer can name us (OFD locks carry no PID).
                    let _ = file.set_len(0);
                    let _ = file.seek(SeekFrom::Start(0));
                    let _ = writeln!(file, "{}", std::process::id());
                    return Ok(DirLock {
                        _dir: held_dir,
                        _file: Some(file),
                    });
                }
                Err(LockError::Conflict { .. }) => return Err(busy(dir)),
                Err(LockError::Io(e)) => return Err(Error::io("lock", &path, e)),
            }
        }
        Err(Error::LockBusy {
            dir: dir.to_path_buf(),
            pid: None,
        })
    }
}

/// The publication section (see the module's documentation); released on drop.
#[derive(Debug)]
pub struct Section {
    _file: File,
}

impl Section {
    /// For a writer that holds the [`DirLock`]: waits for readers that are reading the
    /// inventory (a few milliseconds), then keeps them out until dropped.
    pub fn exclusive(dir: &Path) -> Result<Section> {
        let path = dir.join(DIR_LOCK_NAME);
        loop {
            let file = open_lock_file(&path).map_err(|e| Error::io("open lock file", &path, e))?;
            match files::lock_range(&file, LockKind::Write, SECTION_BYTE, 1, true) {
                Ok(()) if still_at(&file, &path) => return Ok(Section { _file: file }),
                // Replaced meanwhile (or interrupted): lock the file that is there now.
                Ok(()) | Err(LockError::Conflict { .. }) => {}
                Err(LockError::Io(e)) => return Err(Error::io("lock", &path, e)),
            }
        }
    }

    /// For a reader: waits while a backup is being published or deleted. `None` when there is
    /// no lock file to lock (no ducksafe ever wrote here) or it cannot be opened (read-only
    /// media): then no writer can be at work either.
    pub fn shared(dir: &Path) -> Option<Section> {
        let path = dir.join(DIR_LOCK_NAME);
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path)
            .ok()?;
        if files::lock_range(&file, LockKind::Read, SECTION_BYTE, 1, false).is_err() {
            tracing::info!(
                "a backup is being published or deleted in `{}`: waiting for it to finish",
                dir.display()
            );
            files::lock_range(&file, LockKind::Read, SECTION_BYTE, 1, true).ok()?;
        }
        Some(Section { _file: file })
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
                Ok(read_lock_owner(dir)?.map(|file| DirLock {
                    _dir: None,
                    _file: Some(file),
                }))
            }
            Err(e) => Err(e),
        }
    }

    /// The backup directory's lock for a dry run: like [`DirLock::acquire`], it is refused with
    /// `lock_busy` while another ducksafe works there and keeps one that would write out while
    /// held, but it creates and writes nothing: a shared `flock` on the directory and, when the
    /// lock file exists, a shared lock on its owner's byte (see
    /// [`DirLock::acquire_for_restore`]). `None` when this filesystem has neither.
    pub fn acquire_without_writing(dir: &Path) -> Result<Option<DirLock>> {
        let held_dir = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(dir)
            .ok()
            .map(|d| match files::try_flock_shared(&d) {
                Ok(true) => Ok(Some(d)),
                Ok(false) => Err(busy(dir)),
                // No `flock` here: the lock file alone decides.
                Err(_) => Ok(None),
            })
            .transpose()?
            .flatten();
        let file = read_lock_owner(dir)?;
        Ok((held_dir.is_some() || file.is_some()).then_some(DirLock {
            _dir: held_dir,
            _file: file,
        }))
    }
}

/// A shared lock on the owner's byte of the lock file, opened read-only: keeps out a ducksafe
/// that writes (it needs that byte exclusively) without writing anything. `None` without a lock
/// file: nobody has ever locked the directory. Only the owner's byte: a shared lock on the
/// whole file would also cover the publication section and hold a writer's section meanwhile.
fn read_lock_owner(dir: &Path) -> Result<Option<File>> {
    let path = dir.join(DIR_LOCK_NAME);
    let file = match files::open_read_nofollow(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("open lock file", &path, e)),
    };
    match files::lock_range(&file, LockKind::Read, OWNER_BYTE, 1, false) {
        Ok(()) => Ok(Some(file)),
        Err(LockError::Conflict { .. }) => Err(busy(dir)),
        Err(LockError::Io(e)) => Err(Error::io("lock", &path, e)),
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
