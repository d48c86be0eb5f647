//! Low-level file work, and the only module that calls `libc` directly.
//!
//! Everything here is mechanism, not policy: atomic publication of a file (temporary name →
//! `fsync` → `rename` → `fsync` of the directory), opens that never follow a symlink, private
//! creation modes, open-file-description (OFD) locks, free space, and a streaming copy that hashes
//! what it reads.
//!
//! Invariants kept here:
//! - A file created by this module is created with `O_EXCL | O_NOFOLLOW` and mode `0600`: it is
//!   never a pre-existing file or a planted symlink, and never readable by others.
//! - A rename that publishes a file is followed by an `fsync` of the directory that holds it, so
//!   a published name survives a power loss.
//! - Locks are OFD locks (`F_OFD_SETLK`). Unlike classic POSIX `fcntl` locks they belong to the
//!   open file description, so closing some other descriptor of the same file in this process
//!   (as DuckDB and `std::fs` both do) never drops them; they conflict with DuckDB's own `fcntl`
//!   locks, and the kernel releases them when the process dies.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use sha2::{Digest, Sha256};

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

/// Creates a private directory (`0700`) and its missing parents' last component only.
pub fn create_private_dir(path: &Path) -> io::Result<()> {
    fs::DirBuilder::new().mode(PRIVATE_DIR_MODE).create(path)
}

/// `fsync` of a directory, so that renames and unlinks inside it are durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    let d = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(dir)?;
    d.sync_all()
}

/// Renames `from` to `to`, replacing `to` atomically if it exists, then syncs `to`'s directory.
pub fn rename_durable(from: &Path, to: &Path) -> io::Result<()> {
    fs::rename(from, to)?;
    sync_dir(parent_of(to))
}

/// Renames `from` to `to` but fails with `AlreadyExists` instead of replacing an existing `to`
/// (`renameat2(RENAME_NOREPLACE)`), then syncs `to`'s directory. A published backup can never be
/// overwritten by a later one.
pub fn rename_noreplace_durable(from: &Path, to: &Path) -> io::Result<()> {
    rename_noreplace(from, to)?;
    sync_dir(parent_of(to))
}

/// `renameat2(RENAME_NOREPLACE)` alone: the caller syncs the directory.
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
    let tmp = temp_sibling(path, "write");
    let result = (|| {
        let mut f = create_private(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        rename_durable(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Points the symlink `link` at `target` (stored as given, so a relative target stays relative),
/// atomically: a temporary link is created and renamed over `link`.
pub fn symlink_atomic(target: &Path, link: &Path) -> io::Result<()> {
    let tmp = temp_sibling(link, "link");
    std::os::unix::fs::symlink(target, &tmp)?;
    if let Err(e) = rename_durable(&tmp, link) {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(())
}

/// A name beside `path` that ducksafe's leftover cleanup recognizes (`.ducksafe-tmp-…`).
pub fn temp_sibling(path: &Path, what: &str) -> std::path::PathBuf {
    let name = path
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
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

/// Length and SHA-256 of what a reader gave.
#[derive(Debug, Clone, Copy)]
pub struct Copied {
    pub bytes: u64,
    pub sha256: [u8; 32],
}

/// How the bytes got from the source to the copy.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum CopyMethod {
    /// `FICLONE`: the copy shares the source's blocks until either changes (same filesystem).
    Reflink,
    /// `copy_file_range`: the kernel copied the bytes.
    KernelCopy,
    /// `read`/`write` through a buffer.
    ReadWrite,
}

/// Result of [`copy_verified`].
#[derive(Debug, Clone, Copy)]
pub struct VerifiedCopy {
    /// Bytes read from the source, and bytes read back from the destination.
    pub bytes: u64,
    pub read_back_bytes: u64,
    /// SHA-256 of the destination's bytes, read back from the file after they were written.
    pub sha256: [u8; 32],
    /// XXH3-128 of the bytes as read from the source, and as read back from the destination:
    /// equal values prove the destination holds the source's bytes.
    pub source_xxh3: u128,
    pub read_back_xxh3: u128,
    pub method: CopyMethod,
}

impl VerifiedCopy {
    /// True when the destination was read back whole and equal to what the source gave.
    pub fn identical(&self) -> bool {
        self.bytes == self.read_back_bytes && self.source_xxh3 == self.read_back_xxh3
    }
}

/// Writeback is started every this many bytes during a copy, so the final `fsync` has little
/// left to do.
const WRITEBACK_STEP: u64 = 16 << 20;

/// Copies `src` into the new file `dst` (open for writing at `dst_path`), then `fsync`s it, and
/// proves the result, in one pass over the source:
/// - the copy loop reads each chunk once, hashes it with XXH3-128 (tens of GB/s) and writes it,
///   asking the kernel to start writeback as it goes (`sync_file_range`);
/// - a second thread reads every written range back from `dst_path` through a descriptor of
///   its own and hashes it with SHA-256 and XXH3-128, concurrently with the copy and the
///   `fsync`, so SHA-256 (the slowest step) overlaps the I/O instead of adding to it.
///
/// The SHA-256 is therefore that of the file as written, and the two XXH3 values tie it to the
/// source's bytes. Memory stays at two buffers whatever the size.
///
/// `meanwhile` runs on this thread once every byte is written, while another thread `fsync`s.
pub fn copy_verified(
    src: &File,
    dst: &mut File,
    dst_path: &Path,
    meanwhile: impl FnOnce(),
) -> io::Result<VerifiedCopy> {
    use std::os::unix::fs::FileExt;
    use std::sync::mpsc;
    use xxhash_rust::xxh3::Xxh3;

    let reader = open_read_nofollow(dst_path)?;
    let (tx, rx) = mpsc::channel::<(u64, usize)>();
    std::thread::scope(|scope| {
        let back = scope.spawn(move || -> io::Result<(u64, [u8; 32], u128)> {
            let mut buf = vec![0u8; BUF_SIZE];
            let mut sha = Sha256::new();
            let mut xxh = Xxh3::new();
            let mut total = 0u64;
            for (offset, len) in rx {
                let mut done = 0usize;
                while done < len {
                    let n = (len - done).min(BUF_SIZE);
                    let chunk = &mut buf[..n];
                    reader.read_exact_at(chunk, offset + done as u64)?;
                    sha.update(&*chunk);
                    xxh.update(chunk);
                    done += n;
                }
                total += len as u64;
            }
            Ok((total, sha.finalize().into(), xxh.digest128()))
        });

        let copied = copy_loop(src, dst, &tx);
        drop(tx);
        let synced = match copied {
            Ok(c) => {
                let dst = &*dst;
                let sync = scope.spawn(move || dst.sync_all());
                meanwhile();
                sync.join()
                    .map_err(|_| io::Error::other("the fsync thread panicked"))
                    .and_then(|r| r)
                    .map(|()| c)
            }
            Err(e) => Err(e),
        };
        let back = back
            .join()
            .map_err(|_| io::Error::other("the read-back thread panicked"))?;
        let (bytes, source_xxh3, method) = synced?;
        let (read_back_bytes, sha256, read_back_xxh3) = back?;
        Ok(VerifiedCopy {
            bytes,
            read_back_bytes,
            sha256,
            source_xxh3,
            read_back_xxh3,
            method,
        })
    })
}

/// The copy itself: kernel copy (or read/write) in steps, each written range announced to the
/// read-back thread, writeback started as it goes; then the source's bytes hashed with XXH3.
fn copy_loop(
    src: &File,
    dst: &File,
    tx: &std::sync::mpsc::Sender<(u64, usize)>,
) -> io::Result<(u64, u128, CopyMethod)> {
    use std::os::unix::fs::FileExt;
    use xxhash_rust::xxh3::Xxh3;
    let mut offset = 0u64;
    let mut flushed = 0u64;
    // A filesystem with reflinks (XFS, Btrfs) clones the file: no data is copied, blocks are
    // shared until either file changes. Else the kernel copies page cache to page cache (no
    // trip through user space); a filesystem that cannot falls back to read/write.
    let mut method = CopyMethod::KernelCopy;
    if clone_file(src, dst).is_ok() {
        method = CopyMethod::Reflink;
        offset = dst.metadata()?.len();
        let mut at = 0u64;
        while at < offset {
            let n = usize::try_from((offset - at).min(WRITEBACK_STEP)).unwrap_or(BUF_SIZE);
            let _ = tx.send((at, n));
            at += n as u64;
        }
    }
    let mut buf = Vec::new();
    while method != CopyMethod::Reflink {
        let kernel = method == CopyMethod::KernelCopy;
        let n = if kernel {
            match kernel_copy(src, dst, offset) {
                Ok(n) => n,
                Err(_) if offset == 0 => {
                    method = CopyMethod::ReadWrite;
                    continue;
                }
                Err(e) => return Err(e),
            }
        } else {
            if buf.is_empty() {
                buf = vec![0u8; BUF_SIZE];
            }
            let n = match src.read_at(&mut buf, offset) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            dst.write_all_at(&buf[..n], offset)?;
            n
        };
        if n == 0 {
            break;
        }
        let _ = tx.send((offset, n));
        offset += n as u64;
        if offset - flushed >= WRITEBACK_STEP {
            start_writeback(dst, flushed, offset - flushed);
            flushed = offset;
        }
    }
    // The source's own bytes, hashed from the locked descriptor (page cache: the copy
    // just read them), to tie the read-back to the source.
    let mut xxh = Xxh3::new();
    let mut buf = vec![0u8; BUF_SIZE];
    let mut at = 0u64;
    while at < offset {
        let want = usize::try_from((offset - at).min(BUF_SIZE as u64)).unwrap_or(BUF_SIZE);
        let n = src.read_at(&mut buf[..want], at)?;
        if n == 0 {
            break;
        }
        xxh.update(&buf[..n]);
        at += n as u64;
    }
    Ok((offset, xxh.digest128(), method))
}

/// `ioctl(FICLONE)`: makes `dst` share all of `src`'s blocks (reflink).
fn clone_file(src: &File, dst: &File) -> io::Result<()> {
    // SAFETY: valid descriptors; FICLONE takes the source descriptor as its argument.
    let rc = unsafe { libc::ioctl(dst.as_raw_fd(), libc::FICLONE, src.as_raw_fd()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// One `copy_file_range` step of up to 8 MiB from `offset` (same offset in both files).
fn kernel_copy(src: &File, dst: &File, offset: u64) -> io::Result<usize> {
    let mut off_in = i64::try_from(offset).map_err(io::Error::other)?;
    let mut off_out = off_in;
    // SAFETY: valid descriptors; the offsets are valid pointers to local integers.
    let n = unsafe {
        libc::copy_file_range(
            src.as_raw_fd(),
            &raw mut off_in,
            dst.as_raw_fd(),
            &raw mut off_out,
            8 << 20,
            0,
        )
    };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

/// Asks the kernel to start writing a range back to disk, without waiting (a hint: errors are
/// reported by the `fsync` that follows).
fn start_writeback(f: &File, offset: u64, len: u64) {
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
        return;
    };
    // SAFETY: a valid descriptor and plain integers; the call only schedules I/O.
    unsafe {
        libc::sync_file_range(f.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE);
    }
}

/// SHA-256 and length of everything readable from `f`.
pub fn hash_reader(f: &mut impl Read) -> io::Result<Copied> {
    let mut buf = vec![0u8; BUF_SIZE];
    let mut hasher = Sha256::new();
    let mut bytes = 0u64;
    loop {
        let n = match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        bytes += n as u64;
    }
    Ok(Copied {
        bytes,
        sha256: hasher.finalize().into(),
    })
}

/// SHA-256 of a file, opened without following a symlink.
pub fn hash_file(path: &Path) -> io::Result<Copied> {
    hash_reader(&mut open_read_nofollow(path)?)
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
    let fl = flock_struct(kind);
    // SAFETY: the descriptor is valid for the life of `file`; `fl` is a valid flock.
    let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &raw const fl) };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EAGAIN | libc::EACCES) => Err(LockError::Conflict {
            pid: lock_holder(file, kind),
        }),
        _ => Err(LockError::Io(err)),
    }
}

/// The PID holding a lock that conflicts with `kind` on `file`, if the kernel reports one.
#[allow(clippy::cast_possible_truncation)] // F_UNLCK is small
pub fn lock_holder(file: &File, kind: LockKind) -> Option<i32> {
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

/// The effective user id of this process.
pub fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
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

fn cstring(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streaming_hash_equals_one_shot_hash() {
        let dir = tempfile::tempdir().unwrap();
        for len in [
            0usize,
            1,
            BUF_SIZE - 1,
            BUF_SIZE,
            BUF_SIZE + 1,
            3 * BUF_SIZE + 17,
        ] {
            #[allow(clippy::cast_possible_truncation)]
            let data: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            let src = dir.path().join(format!("src{len}"));
            fs::write(&src, &data).unwrap();
            let hashed = hash_reader(&mut File::open(&src).unwrap()).unwrap();
            let expected: [u8; 32] = Sha256::digest(&data).into();
            assert_eq!(hashed.sha256, expected);
            assert_eq!(hashed.bytes, len as u64);
            assert_eq!(hash_file(&src).unwrap().sha256, expected);
        }
    }

    #[test]
    fn verified_copy_reads_back_what_it_wrote() {
        let dir = tempfile::tempdir().unwrap();
        for len in [0usize, 1, BUF_SIZE + 3, 40 << 20] {
            #[allow(clippy::cast_possible_truncation)]
            let data: Vec<u8> = (0..len).map(|i| (i * 7 % 253) as u8).collect();
            let src = dir.path().join(format!("s{len}"));
            fs::write(&src, &data).unwrap();
            let dst = dir.path().join(format!("d{len}"));
            let mut out = create_private(&dst).unwrap();
            let c = copy_verified(&File::open(&src).unwrap(), &mut out, &dst, || {}).unwrap();
            assert!(c.identical());
            assert_eq!(c.bytes, len as u64);
            let expected: [u8; 32] = Sha256::digest(&data).into();
            assert_eq!(c.sha256, expected);
            assert_eq!(fs::read(&dst).unwrap(), data);
        }
    }

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
        let err = rename_noreplace_durable(&a, &b).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&b).unwrap(), b"old");
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
