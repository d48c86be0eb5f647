//! Low-level file work, and the only module that calls `libc` directly.
//!
//! Everything here is mechanism, not policy: atomic publication of a file (temporary name →
//! `fsync` → `rename` → `fsync` of the directory), opens that never follow a symlink, private
//! creation modes, open-file-description (OFD) locks, free space, a streaming copy that hashes
//! what it reads, and a log that concurrent processes append whole lines to (`append.rs`).
//!
//! Invariants kept here:
//! - A file created by this module is created with `O_EXCL | O_NOFOLLOW` and mode `0600`: it is
//!   never a pre-existing file or a planted symlink, and never readable by others. The one file
//!   opened to append to whatever is there (the audit log) is opened `O_NOFOLLOW`, created
//!   `0600` and tightened to it; the one file published readable by others
//!   ([`write_atomic_mode`], a metrics file) is still written privately, then opened up, then
//!   renamed into place.
//! - A rename that publishes a file is followed by an `fsync` of the directory that holds it, so
//!   a published name survives a power loss. Several renames in one directory may share that
//!   `fsync` ([`Staged`], [`symlink_swap`]: the caller syncs once after the last): the
//!   directory's `fsync` makes every rename before it durable.
//! - One list of system folders ([`is_system_folder`], [`is_shared_system_folder`]): never a
//!   home for ducksafe's private files, never `chmod`-ed.
//! - Locks are OFD locks (`F_OFD_SETLK`). Unlike classic POSIX `fcntl` locks they belong to the
//!   open file description, so closing some other descriptor of the same file in this process
//!   (as DuckDB and `std::fs` both do) never drops them; they conflict with DuckDB's own `fcntl`
//!   locks, and the kernel releases them when the process dies.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

mod append;
mod copy;
pub use append::{append_line, rotated_name, Appended};
pub use copy::{
    copy_verified, copy_verified_inspecting, hash_file, hash_file_inspecting, start_writeback,
    Copied, CopyMethod, VerifiedCopy,
};

/// Size of the buffer used for streaming copies and hashes. Large enough to amortize syscalls,
/// small enough that memory stays flat whatever the database size.
pub const BUF_SIZE: usize = 1 << 20;

/// Mode of every file ducksafe creates: owner read/write only (the data is compensation data).
pub const PRIVATE_FILE_MODE: u32 = 0o600;
/// Mode of every directory ducksafe creates.
pub const PRIVATE_DIR_MODE: u32 = 0o700;

/// Opens an existing file for reading without following a symlink in the last component.
pub fn open_read_nofollow(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

/// Opens an existing regular file for reading, never following a symlink and never waiting
/// on a FIFO (or a device) planted at its name: `O_NONBLOCK` makes the open return at once,
/// and anything but a regular file is refused. For files others may have made, such as the
/// audit log: a FIFO there would otherwise hang the reader while it holds its locks.
pub fn open_read_regular(path: &Path) -> io::Result<File> {
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(path)?;
    only_regular(f, path)
}

/// `f`, opened with `O_NONBLOCK`, when it is a regular file (back in blocking mode); an error
/// naming `path` otherwise.
pub fn only_regular(f: File, path: &Path) -> io::Result<File> {
    let meta = f.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::other(format!(
            "`{}` is not a regular file (a FIFO, device or folder at its name): move it away",
            path.display()
        )));
    }
    // SAFETY: fcntl on a descriptor this `File` owns; no pointer is passed.
    let flags = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_GETFL) };
    if flags < 0
        || unsafe { libc::fcntl(f.as_raw_fd(), libc::F_SETFL, flags & !libc::O_NONBLOCK) } < 0
    {
        return Err(io::Error::last_os_error());
    }
    Ok(f)
}

/// Opens an existing file for reading, following symlinks (used for the source database, which
/// an operator may legitimately reach through a link).
pub fn open_read(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
}

/// Creates a new private file (`0600`). Fails if anything, including a symlink, has the name.
pub fn create_private(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .read(true)
        .create_new(true)
        .mode(PRIVATE_FILE_MODE)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

/// Creates a private directory (`0700`; the last component only), durably: its parent is
/// fsynced before this returns, so that what is put in it (a restore's journal and the replaced
/// database, a backup) is not orphaned by a power cut that loses the folder's own name.
pub fn create_private_dir(path: &Path) -> io::Result<()> {
    fs::DirBuilder::new().mode(PRIVATE_DIR_MODE).create(path)?;
    sync_dir(parent_of(path))
}

/// `fsync` of a directory, so that renames and unlinks inside it are durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    let d = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(dir)?;
    let started = std::time::Instant::now();
    let synced = d.sync_all();
    crate::timing::took(&format!("fsync of folder `{}`", dir.display()), started);
    synced
}

/// Renames `from` to `to`, replacing `to` atomically if it exists, then syncs `to`'s directory.
pub fn rename_durable(from: &Path, to: &Path) -> io::Result<()> {
    fs::rename(from, to)?;
    sync_dir(parent_of(to))
}

/// Renames `from` to `to` but fails with `AlreadyExists` instead of replacing an existing `to`
/// (`renameat2(RENAME_NOREPLACE)`): a published backup can never be overwritten by a later
/// one. The caller syncs the directory.
pub fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    let f = cstring(from)?;
    let t = cstring(to)?;
    // SAFETY: both pointers are valid NUL-terminated strings that outlive the call.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            f.as_ptr(),
            libc::AT_FDCWD,
            t.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Writes `bytes` to `path` atomically and durably: a private temporary file beside it, `fsync`,
/// rename over `path`, `fsync` of the directory. Readers see the old content or the new, never a
/// mix; a symlink planted at `path` is replaced, never followed.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    stage(path, bytes)?.put()?;
    sync_dir(parent_of(path))
}

/// [`write_atomic`] for a file that another user must read (the node_exporter textfile
/// collector reads a `.prom` file as its own user): the temporary file is made `mode` before it
/// is renamed over `path`, so the name never holds a file of another mode, nor half a file.
pub fn write_atomic_mode(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let staged = stage(path, bytes)?;
    fs::set_permissions(&staged.tmp, fs::Permissions::from_mode(mode))?;
    staged.put()?;
    sync_dir(parent_of(path))
}

/// New content for a file, written under a temporary name beside it and fsynced: [`Staged::put`]
/// renames it over the file, and the caller then syncs the directory (once for several puts).
/// Dropped without being put, the temporary file is removed. Several files are staged at once
/// (on threads of their own) so that their fsyncs share the filesystem's journal commits: three
/// small files took 2.8 ms staged together against 10.4 ms one after the other (medians of 15
/// on this machine's disk).
#[derive(Debug)]
pub struct Staged {
    tmp: std::path::PathBuf,
    path: std::path::PathBuf,
    put: bool,
}

/// Writes `bytes` to a private temporary file beside `path` and fsyncs it (see [`Staged`]).
pub fn stage(path: &Path, bytes: &[u8]) -> io::Result<Staged> {
    let mut staged = Staged {
        tmp: temp_sibling(path, "write"),
        path: path.to_path_buf(),
        put: false,
    };
    let mut f = match create_private(&staged.tmp) {
        Ok(f) => f,
        Err(e) => {
            // Nothing was created under the name: nothing to remove.
            staged.put = true;
            return Err(e);
        }
    };
    f.write_all(bytes)?;
    let started = std::time::Instant::now();
    f.sync_all()?;
    crate::timing::took(&format!("fsync of `{}`", path.display()), started);
    Ok(staged)
}

/// [`stage`] of `value` as pretty JSON with one trailing newline.
pub fn stage_json(path: &Path, value: &impl serde::Serialize) -> io::Result<Staged> {
    let mut bytes = serde_json::to_vec_pretty(value).map_err(io::Error::other)?;
    bytes.push(b'\n');
    stage(path, &bytes)
}

impl Staged {
    /// Renames the staged file over its destination, atomically (a planted symlink there is
    /// replaced, never followed). Durable once the caller has synced the directory.
    pub fn put(mut self) -> io::Result<()> {
        fs::rename(&self.tmp, &self.path)?;
        self.put = true;
        Ok(())
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.put {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// Writes `value` as pretty JSON, one trailing newline, with [`write_atomic`]. A value that does
/// not serialize is an error, never an empty file.
pub fn write_json_atomic(path: &Path, value: &impl serde::Serialize) -> io::Result<()> {
    stage_json(path, value)?.put()?;
    sync_dir(parent_of(path))
}

/// Points the symlink `link` at `target` (stored as given, so a relative target stays relative),
/// atomically and durably: [`symlink_swap`], then an `fsync` of the directory.
pub fn symlink_atomic(target: &Path, link: &Path) -> io::Result<()> {
    symlink_swap(target, link)?;
    sync_dir(parent_of(link))
}

/// Points the symlink `link` at `target` atomically: a temporary link is created and renamed
/// over `link`. Durable once the caller has synced the directory.
pub fn symlink_swap(target: &Path, link: &Path) -> io::Result<()> {
    let tmp = temp_sibling(link, "link");
    std::os::unix::fs::symlink(target, &tmp)?;
    if let Err(e) = fs::rename(&tmp, link) {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(())
}

/// A name beside `path` that ducksafe's leftover cleanup recognizes (`.ducksafe-tmp-…`).
pub fn temp_sibling(path: &Path, what: &str) -> std::path::PathBuf {
    let name = file_name(path);
    parent_of(path).join(format!(
        "{TEMP_PREFIX}{what}-{}-{}-{name}",
        std::process::id(),
        unique_suffix()
    ))
}

/// Prefix of every temporary name ducksafe creates; nothing else ever starts with it.
pub const TEMP_PREFIX: &str = ".ducksafe-tmp-";

fn unique_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{nanos:08x}{:x}", COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// The directory holding `path` (`.` for a bare name).
pub fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// The last component of `path` as text (empty for `/` or `..`): the one way ducksafe names a
/// file after another one.
pub fn file_name(path: &Path) -> String {
    path.file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
}

/// Lower-case hex of a digest.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Kind of an OFD lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockKind {
    /// Shared: blocks writers (DuckDB read-write opens), lets readers in.
    Read,
    /// Exclusive: blocks every DuckDB open and every other ducksafe.
    Write,
}

/// Why a lock could not be taken.
#[derive(Debug)]
pub enum LockError {
    /// Someone holds a conflicting lock; `pid` is theirs when the kernel knows it (classic POSIX
    /// locks, as DuckDB takes them), `None` for another OFD lock.
    Conflict {
        pid: Option<i32>,
    },
    Io(io::Error),
}

#[allow(clippy::cast_possible_truncation)] // the F_* and SEEK_* constants are small
fn flock_struct(kind: LockKind) -> libc::flock {
    // SAFETY: `flock` is a plain C struct for which all-zero bytes are a valid value.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = match kind {
        LockKind::Read => libc::F_RDLCK,
        LockKind::Write => libc::F_WRLCK,
    } as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = 0;
    fl.l_len = 0; // whole file, however it grows
    fl.l_pid = 0; // required to be 0 for OFD locks
    fl
}

/// Takes an OFD lock on the whole of `file` without waiting. The lock lasts as long as `file`
/// (its open file description) stays open.
pub fn try_lock(file: &File, kind: LockKind) -> Result<(), LockError> {
    // The whole file (a length of 0 runs to its end, however it grows), naming the holder.
    match lock_range(file, kind, 0, 0, false) {
        Err(LockError::Conflict { .. }) => Err(LockError::Conflict {
            pid: lock_holder(file, kind),
        }),
        other => other,
    }
}

/// Takes an OFD lock on `len` bytes of `file` from `start` (a lock on a range of a lock file
/// stands for one kind of ownership); with `wait`, blocks until it is free (for short critical
/// sections only).
#[allow(clippy::cast_possible_wrap)] // lock ranges are a few bytes from the start
pub fn lock_range(
    file: &File,
    kind: LockKind,
    start: u64,
    len: u64,
    wait: bool,
) -> Result<(), LockError> {
    let mut fl = flock_struct(kind);
    fl.l_start = start as libc::off_t;
    fl.l_len = len as libc::off_t;
    let cmd = if wait {
        libc::F_OFD_SETLKW
    } else {
        libc::F_OFD_SETLK
    };
    loop {
        // SAFETY: the descriptor is valid for the life of `file`; `fl` is a valid flock.
        let rc = unsafe { libc::fcntl(file.as_raw_fd(), cmd, &raw const fl) };
        if rc == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINTR) if wait => {}
            Some(libc::EAGAIN | libc::EACCES) => return Err(LockError::Conflict { pid: None }),
            _ => return Err(LockError::Io(err)),
        }
    }
}

/// Takes an exclusive `flock` on `file` (a directory, say) without waiting: `Ok(true)` taken,
/// `Ok(false)` held by someone else. It lasts as long as the open file description.
pub fn try_flock_exclusive(file: &File) -> io::Result<bool> {
    try_flock(file, libc::LOCK_EX)
}

/// [`try_flock_exclusive`], shared: other shared holders are let in, an exclusive one is not.
pub fn try_flock_shared(file: &File) -> io::Result<bool> {
    try_flock(file, libc::LOCK_SH)
}

fn try_flock(file: &File, kind: libc::c_int) -> io::Result<bool> {
    // SAFETY: a valid descriptor owned by `file`.
    let rc = unsafe { libc::flock(file.as_raw_fd(), kind | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(true);
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(err)
    }
}

/// The PID holding a lock that conflicts with `kind` on `file`, if the kernel reports one.
#[allow(clippy::cast_possible_truncation)] // F_UNLCK is small
fn lock_holder(file: &File, kind: LockKind) -> Option<i32> {
    let mut fl = flock_struct(kind);
    // SAFETY: as in `try_lock`; F_OFD_GETLK writes into `fl`.
    let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_GETLK, &raw mut fl) };
    if rc != 0 || fl.l_type == libc::F_UNLCK as libc::c_short || fl.l_pid <= 0 {
        return None;
    }
    Some(fl.l_pid)
}

/// Free and total space of the filesystem holding `path`, in bytes, as an unprivileged process
/// sees it (`f_bavail`).
#[derive(Debug, Clone, Copy, serde::Serialize, schemars::JsonSchema)]
pub struct FsSpace {
    pub available_bytes: u64,
    pub total_bytes: u64,
}

#[allow(clippy::useless_conversion)] // the field types differ between libc targets
pub fn fs_space(path: &Path) -> io::Result<FsSpace> {
    let c = cstring(path)?;
    // SAFETY: zeroed statvfs is valid; `c` is a valid C string; statvfs fills the struct.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statvfs(c.as_ptr(), &raw mut st) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let frsize = u64::from(st.f_frsize);
    Ok(FsSpace {
        available_bytes: u64::from(st.f_bavail).saturating_mul(frsize),
        total_bytes: u64::from(st.f_blocks).saturating_mul(frsize),
    })
}

/// The process that started this one (a wrapper, a make recipe's shell, an orchestrator).
pub fn parent_pid() -> i32 {
    // SAFETY: getppid has no preconditions and cannot fail.
    unsafe { libc::getppid() }
}

/// This process.
pub fn own_pid() -> i32 {
    i32::try_from(std::process::id()).unwrap_or(i32::MAX)
}

/// When a process started, in clock ticks since boot (`/proc/PID/stat`, field 22): with the
/// PID, it names one process, even after the PID is reused. `None` when it is gone.
pub fn process_start(pid: i32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count after it.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// The effective user id of this process.
pub fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Folders the system itself lives in or all users share: never ducksafe's own folder, even
/// for root, who owns them and passes every permission check, and never one to `chmod`. The one
/// list: [`is_system_folder`] refuses them, [`is_shared_system_folder`] adds any folder directly
/// under `/` and any sticky one.
const SYSTEM_FOLDERS: [&str; 26] = [
    "/",
    "/bin",
    "/boot",
    "/dev",
    "/dev/shm",
    "/etc",
    "/home",
    "/lib",
    "/lib64",
    "/media",
    "/mnt",
    "/opt",
    "/private/tmp",
    "/proc",
    "/run",
    "/run/user",
    "/sbin",
    "/sys",
    "/tmp",
    "/usr",
    "/usr/local",
    "/usr/share",
    "/var",
    "/var/cache",
    "/var/lib",
    "/var/tmp",
];

/// Whether `dir` is one of the [`SYSTEM_FOLDERS`]: never ducksafe's own folder.
pub fn is_system_folder(dir: &Path) -> bool {
    let dir = crate::config::normalize(dir);
    SYSTEM_FOLDERS.iter().any(|s| dir == Path::new(s))
}

/// Why the directory `dir` is not a safe home for private data, if it is not.
pub fn unsafe_folder_reason(dir: &Path, meta: &fs::Metadata) -> Option<String> {
    if is_system_folder(dir) {
        return Some(
            "it is a system folder: ducksafe keeps its private files only in a folder of its own"
                .to_owned(),
        );
    }
    unsafe_dir_reason(meta)
}

/// Why a directory is not a safe home for private data, if it is not.
pub fn unsafe_dir_reason(meta: &fs::Metadata) -> Option<String> {
    let mode = meta.permissions().mode();
    if !meta.is_dir() {
        return Some("it is not a directory".to_owned());
    }
    if mode & 0o002 != 0 && mode & 0o1000 == 0 {
        return Some(format!(
            "it is world-writable (mode {:04o}): anyone could plant or swap files in it",
            mode & 0o7777
        ));
    }
    if mode & 0o002 != 0 {
        return Some(format!(
            "it is world-writable (mode {:04o}, sticky): other users could create files in it",
            mode & 0o7777
        ));
    }
    let me = euid();
    if meta.uid() != me && me != 0 {
        return Some(format!(
            "it is owned by uid {}, not by this user (uid {me})",
            meta.uid()
        ));
    }
    if meta.uid() != me && me == 0 {
        return Some(format!(
            "it is owned by uid {}, and ducksafe runs as root: another user controls its content",
            meta.uid()
        ));
    }
    None
}

/// Whether `dir` is a folder the system or other users share: one of the [`SYSTEM_FOLDERS`],
/// any folder directly under `/`, or any folder with the sticky bit. Never one to make private
/// or to keep ducksafe's files in directly.
pub fn is_shared_system_folder(dir: &Path) -> bool {
    let dir = crate::config::normalize(dir);
    let top_level = dir.has_root() && dir.components().count() <= 2;
    let sticky = fs::metadata(&dir).is_ok_and(|m| m.permissions().mode() & 0o1000 != 0);
    top_level || sticky || is_system_folder(&dir)
}

/// The device of a path (to tell whether a rename can cross from one to the other).
pub fn device_of(path: &Path) -> Option<u64> {
    fs::metadata(path).ok().map(|m| m.dev())
}

/// The permission bits of a file or directory (`0o755`).
pub fn mode_of(meta: &fs::Metadata) -> u32 {
    meta.permissions().mode() & 0o7777
}

/// Sets the permission bits of the directory `dir` without following a symlink in its last
/// component (`O_NOFOLLOW | O_DIRECTORY`, then `fchmod`), and checks that they took: some
/// filesystems accept a `chmod` and keep their own modes.
pub fn set_dir_mode(dir: &Path, mode: u32) -> io::Result<()> {
    let d = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(dir)?;
    d.set_permissions(fs::Permissions::from_mode(mode))?;
    let now = mode_of(&d.metadata()?);
    if now == mode {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "the filesystem kept mode {now:04o}"
        )))
    }
}

/// Whether this process may write in `dir` (`access(W_OK)`, which root fails only on a
/// read-only filesystem), with why not (`EROFS` for a read-only filesystem). Creates nothing.
pub fn access_write(dir: &Path) -> io::Result<()> {
    let c = cstring(dir)?;
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call.
    if unsafe { libc::access(c.as_ptr(), libc::W_OK) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Whether the filesystem holding `path` is mounted read-only.
pub fn is_read_only_fs(path: &Path) -> bool {
    let Ok(c) = cstring(path) else { return false };
    // SAFETY: zeroed statvfs is valid; `c` is a valid C string; statvfs fills the struct.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statvfs(c.as_ptr(), &raw mut st) };
    rc == 0 && st.f_flag & libc::ST_RDONLY != 0
}

fn cstring(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_private_refuses_symlinks_and_existing_files() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        fs::write(&target, b"keep").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(create_private(&link).is_err());
        assert!(create_private(&target).is_err());
        assert_eq!(fs::read(&target).unwrap(), b"keep");
        let new = dir.path().join("new");
        create_private(&new).unwrap();
        assert_eq!(
            fs::metadata(&new).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    #[test]
    fn rename_noreplace_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        fs::write(&a, b"new").unwrap();
        fs::write(&b, b"old").unwrap();
        let err = rename_noreplace(&a, &b).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&b).unwrap(), b"old");
    }

    #[test]
    fn a_staged_file_is_in_place_only_once_put_and_leaves_nothing_when_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let names = || {
            let mut n: Vec<String> = fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            n.sort();
            n
        };
        let a = dir.path().join("a.json");
        let b = dir.path().join("b.json");
        fs::write(&a, b"old").unwrap();
        let (sa, sb) = (stage(&a, b"new").unwrap(), stage(&b, b"b").unwrap());
        // Staged: under temporary names only, the old content still in place.
        assert_eq!(fs::read(&a).unwrap(), b"old");
        assert!(!b.exists());
        assert_eq!(names().len(), 3);
        assert!(
            names()
                .iter()
                .filter(|n| n.starts_with(TEMP_PREFIX))
                .count()
                == 2
        );
        sa.put().unwrap();
        drop(sb);
        sync_dir(dir.path()).unwrap();
        assert_eq!(fs::read(&a).unwrap(), b"new");
        assert_eq!(names(), ["a.json"], "the dropped one left nothing");
        assert_eq!(
            fs::metadata(&a).unwrap().permissions().mode() & 0o777,
            PRIVATE_FILE_MODE
        );
    }

    #[test]
    fn write_atomic_replaces_a_planted_symlink_instead_of_following_it() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside");
        fs::write(&outside, b"victim").unwrap();
        let name = dir.path().join("manifest.json");
        std::os::unix::fs::symlink(&outside, &name).unwrap();
        write_atomic(&name, b"{}").unwrap();
        assert_eq!(fs::read(&outside).unwrap(), b"victim");
        assert!(!fs::symlink_metadata(&name)
            .unwrap()
            .file_type()
            .is_symlink());
    }

    #[test]
    fn ofd_write_lock_conflicts_between_descriptions_in_one_process() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("lock");
        fs::write(&p, b"").unwrap();
        let a = File::open(&p).unwrap();
        let b = OpenOptions::new().read(true).write(true).open(&p).unwrap();
        try_lock(&a, LockKind::Read).unwrap();
        // A second read lock is fine, a write lock is not.
        try_lock(&File::open(&p).unwrap(), LockKind::Read).unwrap();
        assert!(matches!(
            try_lock(&b, LockKind::Write),
            Err(LockError::Conflict { .. })
        ));
        // Closing another descriptor of the same file does not drop an OFD lock.
        drop(File::open(&p).unwrap());
        assert!(matches!(
            try_lock(&b, LockKind::Write),
            Err(LockError::Conflict { .. })
        ));
        drop(a);
        try_lock(&b, LockKind::Write).unwrap();
    }
}
