//! The verified copy, and file hashing.
//!
//! [`copy_verified`] copies one file into a new one and proves the result in a single pass over
//! the source, with the work split so that two cores are both busy:
//! - this thread copies in 1 MiB steps (a reflink, or the kernel's `copy_file_range`, or
//!   read/write), asks the kernel to start writeback every 16 MiB, and, right after each step,
//!   compares the source's bytes with the copy's bytes byte for byte, while both are still in
//!   the CPU's cache;
//! - a second thread computes the copy's SHA-256 over the same bytes, window by window, behind
//!   the copy; it is the slowest step (one core at about 1.8 GB/s with SHA extensions), so the
//!   copy, the comparison and the writeback all happen under it.
//!
//! The copy's bytes are seen through a read-only mapping of the destination in 4 MiB windows,
//! on local filesystems; after a reflink, on any other filesystem, or where mapping fails, they
//! are read into memory instead. A window is mapped once: the pages the comparison faulted in
//! are the ones the hash reads, with no copy into user space.
//!
//! Invariants:
//! - The SHA-256 is that of the destination's bytes as the page cache holds them after they
//!   were written, never of the source; the byte comparison ties them to the source's bytes
//!   read under the caller's lock. Nothing is reported identical unless every byte compared
//!   equal and the hash covered as many bytes as were copied.
//! - Memory stays bounded whatever the file size: one 1 MiB buffer, and at most
//!   [`WINDOWS_IN_FLIGHT`] + 2 windows mapped (the copy waits for the hash when it is that far
//!   ahead).
//! - Only the destination is mapped, never the source: a source truncated behind the lock's
//!   back makes a read fail with an error instead of killing the process. The destination is a
//!   private file this process just created, on a local filesystem. (A local disk that cannot
//!   re-read a page of it the kernel already evicted would still kill the process with
//!   `SIGBUS`: no answer is a failed backup to every caller, and the next run removes the
//!   temporary file.)
#![allow(unsafe_code)]

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::ptr::NonNull;
use std::sync::mpsc;

use sha2::{Digest, Sha256};

use super::{open_read_nofollow, BUF_SIZE};

/// One step of the copy: copied, then compared while it is still in the CPU's cache.
const STEP: usize = BUF_SIZE;
/// The destination is seen through windows of this size (a multiple of every page size).
const WINDOW: usize = 4 << 20;
/// Windows handed to the hashing thread and not yet hashed, at most.
const WINDOWS_IN_FLIGHT: usize = 2;
/// Writeback is started every this many bytes during a copy, so the final `fsync` has little
/// left to do.
const WRITEBACK_STEP: u64 = 16 << 20;

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
    /// Bytes copied from the source (up to the first difference, if there is one).
    pub bytes: u64,
    /// Bytes of the destination the SHA-256 covers.
    pub read_back_bytes: u64,
    /// SHA-256 of the destination's bytes, read back after they were written.
    pub sha256: [u8; 32],
    /// Offset of the first byte where the destination differs from the source.
    pub first_difference: Option<u64>,
    pub method: CopyMethod,
}

impl VerifiedCopy {
    /// True when every byte of the destination was compared equal to the source's and hashed.
    pub fn identical(&self) -> bool {
        self.first_difference.is_none() && self.bytes == self.read_back_bytes
    }
}

/// Copies `src` into the new, empty file `dst` (open for reading and writing), `fsync`s it and
/// proves the result (see the module's documentation).
///
/// `meanwhile` runs on this thread once every byte is copied and compared, while another thread
/// `fsync`s. A copy found different from its source returns at once, neither synced nor
/// `meanwhile` run, with [`VerifiedCopy::first_difference`] set.
pub fn copy_verified(src: &File, dst: &File, meanwhile: impl FnOnce()) -> io::Result<VerifiedCopy> {
    copy_with(src, dst, Ways::ALL, &mut |_| {}, meanwhile)
}

/// [`copy_verified`], handing `inspect` every byte of the source in order, each piece right
/// after it was copied and proven equal in the copy (while it is still in the CPU's cache).
pub fn copy_verified_inspecting(
    src: &File,
    dst: &File,
    inspect: &mut dyn FnMut(&[u8]),
    meanwhile: impl FnOnce(),
) -> io::Result<VerifiedCopy> {
    copy_with(src, dst, Ways::ALL, inspect, meanwhile)
}

/// Which of the fast ways a copy may use (tests force the fallbacks).
#[derive(Debug, Clone, Copy)]
struct Ways {
    reflink: bool,
    kernel_copy: bool,
    map: bool,
    /// Tests: flips the copy's byte at this offset once it is written, as a failing disk would.
    #[cfg(test)]
    corrupt_at: Option<u64>,
}

impl Ways {
    const ALL: Ways = Ways {
        reflink: true,
        kernel_copy: true,
        map: true,
        #[cfg(test)]
        corrupt_at: None,
    };
}

fn copy_with(
    src: &File,
    dst: &File,
    ways: Ways,
    inspect: &mut dyn FnMut(&[u8]),
    meanwhile: impl FnOnce(),
) -> io::Result<VerifiedCopy> {
    let (to_hash, windows) = mpsc::sync_channel::<Window>(WINDOWS_IN_FLIGHT);
    std::thread::scope(|scope| {
        let hasher = scope.spawn(move || {
            let started = std::time::Instant::now();
            let mut sha = Sha256::new();
            let mut bytes = 0u64;
            for window in windows {
                sha.update(window.bytes());
                bytes += window.bytes().len() as u64;
            }
            crate::timing::took("SHA-256 of the copy", started);
            (bytes, <[u8; 32]>::from(sha.finalize()))
        });
        let started = std::time::Instant::now();
        let copied = copy_and_compare(src, dst, ways, inspect, &to_hash);
        drop(to_hash);
        crate::timing::took("copy and byte comparison", started);
        let synced = match copied {
            Ok(c) if c.first_difference.is_none() => {
                let sync = scope.spawn(move || {
                    let started = std::time::Instant::now();
                    let synced = dst.sync_all();
                    crate::timing::took("fsync of the copy", started);
                    synced
                });
                meanwhile();
                sync.join()
                    .map_err(|_| io::Error::other("the fsync thread panicked"))
                    .and_then(|r| r)
                    .map(|()| c)
            }
            other => other,
        };
        let (read_back_bytes, sha256) = hasher
            .join()
            .map_err(|_| io::Error::other("the hashing thread panicked"))?;
        let c = synced?;
        Ok(VerifiedCopy {
            bytes: c.bytes,
            read_back_bytes,
            sha256,
            first_difference: c.first_difference,
            method: c.method,
        })
    })
}

/// What the copy loop did.
#[derive(Debug, Clone, Copy)]
struct Progress {
    bytes: u64,
    first_difference: Option<u64>,
    method: CopyMethod,
}

/// The copy loop: each step copied, then compared with the source's bytes; each full window
/// handed to the hashing thread.
fn copy_and_compare(
    src: &File,
    dst: &File,
    ways: Ways,
    inspect: &mut dyn FnMut(&[u8]),
    hasher: &mpsc::SyncSender<Window>,
) -> io::Result<Progress> {
    // A filesystem with reflinks (XFS, Btrfs) clones the file: no data is copied, blocks are
    // shared until either file changes. Else the kernel copies page cache to page cache (no
    // trip through user space); a filesystem that cannot falls back to read/write.
    let mut method = CopyMethod::KernelCopy;
    let mut cloned_len = 0u64;
    if ways.reflink && clone_file(src, dst).is_ok() {
        method = CopyMethod::Reflink;
        cloned_len = dst.metadata()?.len();
    } else if !ways.kernel_copy {
        method = CopyMethod::ReadWrite;
    }
    // Mapping is for local filesystems, where a page just written stays readable; after a
    // reflink the copy's pages come from disk, and on a network filesystem over the network,
    // where a read error through a mapping would kill the process instead of failing a call.
    let mut map = ways.map && method != CopyMethod::Reflink && is_local_filesystem(dst);
    let mut source = vec![0u8; STEP];
    let mut offset = 0u64;
    let mut flushed = 0u64;
    let mut window: Option<Window> = None;
    loop {
        let win = match &mut window {
            Some(w) => w,
            None => window.insert(Window::open(dst, offset, &mut map)),
        };
        let want = STEP.min(win.room());
        let buf = &mut source[..want];
        // Copy one step; `buf` ends up holding the source's bytes of it.
        let n = match method {
            CopyMethod::Reflink => {
                let n = usize::try_from((cloned_len - offset).min(want as u64)).unwrap_or(want);
                src.read_exact_at(&mut buf[..n], offset)?;
                n
            }
            CopyMethod::KernelCopy => match kernel_copy(src, dst, offset, want) {
                Ok(n) => {
                    src.read_exact_at(&mut buf[..n], offset)?;
                    n
                }
                Err(_) if offset == 0 => {
                    method = CopyMethod::ReadWrite;
                    continue;
                }
                Err(e) => return Err(e),
            },
            CopyMethod::ReadWrite => {
                let n = read_some_at(src, buf, offset)?;
                dst.write_all_at(&buf[..n], offset)?;
                n
            }
        };
        if n == 0 {
            break;
        }
        #[cfg(test)]
        if let Some(at) = ways
            .corrupt_at
            .filter(|at| (offset..offset + n as u64).contains(at))
        {
            let mut byte = [0u8];
            dst.read_exact_at(&mut byte, at)?;
            dst.write_all_at(&[!byte[0]], at)?;
        }
        let copy = win.extend(dst, n)?;
        if let Some(i) = first_difference(&buf[..n], copy) {
            // `bytes` stays what was proven equal; the caller reports the difference.
            return Ok(Progress {
                bytes: offset,
                first_difference: Some(offset + i as u64),
                method,
            });
        }
        inspect(&buf[..n]);
        offset += n as u64;
        crate::progress::advance(n as u64);
        if win.room() == 0 {
            send(hasher, window.take())?;
        }
        if offset - flushed >= WRITEBACK_STEP {
            start_writeback(dst, flushed, offset - flushed);
            flushed = offset;
        }
    }
    send(hasher, window.take().filter(|w| !w.bytes().is_empty()))?;
    Ok(Progress {
        bytes: offset,
        first_difference: None,
        method,
    })
}

fn send(hasher: &mpsc::SyncSender<Window>, window: Option<Window>) -> io::Result<()> {
    match window {
        Some(w) => hasher
            .send(w)
            .map_err(|_| io::Error::other("the hashing thread stopped")),
        None => Ok(()),
    }
}

/// Offset of the first byte where `a` and `b` differ (they have the same length).
fn first_difference(a: &[u8], b: &[u8]) -> Option<usize> {
    if a == b {
        return None;
    }
    Some(
        a.iter()
            .zip(b)
            .position(|(x, y)| x != y)
            .unwrap_or(a.len().min(b.len())),
    )
}

/// One read of up to `buf.len()` bytes at `offset` (0 at the end of the file).
fn read_some_at(f: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    loop {
        match f.read_at(buf, offset) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            other => return other,
        }
    }
}

/// Up to [`WINDOW`] bytes of the destination from a window-aligned offset, as the page cache
/// holds them: mapped read-only, or read into memory where mapping fails.
struct Window {
    offset: u64,
    filled: usize,
    view: View,
}

enum View {
    Mapped(NonNull<u8>),
    Read(Vec<u8>),
}

// SAFETY: a `Window` owns its mapping (unmapped once, on drop) and only ever reads through it.
unsafe impl Send for Window {}

impl Window {
    /// A window at `offset`. When `map` is true it tries a mapping, and clears `map` if the
    /// file cannot be mapped, so later windows read instead.
    fn open(file: &File, offset: u64, map: &mut bool) -> Window {
        let mapped = if *map {
            map_read_only(file, offset)
        } else {
            None
        };
        *map = mapped.is_some();
        Window {
            offset,
            filled: 0,
            view: mapped.map_or_else(|| View::Read(vec![0u8; WINDOW]), View::Mapped),
        }
    }

    fn room(&self) -> usize {
        WINDOW - self.filled
    }

    /// Takes in the next `n` bytes of the file (already written) and returns them.
    fn extend(&mut self, file: &File, n: usize) -> io::Result<&[u8]> {
        let (from, to) = (self.filled, self.filled + n);
        if let View::Read(buf) = &mut self.view {
            file.read_exact_at(&mut buf[from..to], self.offset + from as u64)?;
        }
        self.filled = to;
        Ok(&self.bytes()[from..to])
    }

    /// The bytes taken in so far.
    fn bytes(&self) -> &[u8] {
        match &self.view {
            // SAFETY: the mapping is WINDOW bytes long and `filled` of them are within the
            // file (they were written before they were taken in); it lives as long as `self`.
            View::Mapped(p) => unsafe { std::slice::from_raw_parts(p.as_ptr(), self.filled) },
            View::Read(buf) => &buf[..self.filled],
        }
    }
}

impl Drop for Window {
    fn drop(&mut self) {
        if let View::Mapped(p) = self.view {
            // SAFETY: exactly the mapping `map_read_only` made.
            unsafe {
                libc::munmap(p.as_ptr().cast(), WINDOW);
            }
        }
    }
}

/// True for the local filesystems whose pages may be read through a mapping.
fn is_local_filesystem(f: &File) -> bool {
    // Magic numbers from `linux/magic.h` (and ZFS's own).
    const LOCAL: [i64; 8] = [
        0xEF53,      // ext2, ext3, ext4
        0x794C_7630, // overlayfs (containers), over one of these
        0x5846_5342, // XFS
        0x9123_683E, // Btrfs
        0x0102_1994, // tmpfs
        0xF2F5_2010, // F2FS
        0x2FC1_2FC1, // ZFS
        0xCA45_1A4E, // bcachefs
    ];
    let mut st = std::mem::MaybeUninit::<libc::statfs>::uninit();
    // SAFETY: a valid descriptor and a pointer to a properly sized, writable struct.
    if unsafe { libc::fstatfs(f.as_raw_fd(), st.as_mut_ptr()) } != 0 {
        return false;
    }
    // SAFETY: fstatfs succeeded, so it filled the struct.
    let kind = unsafe { st.assume_init() }.f_type;
    #[allow(clippy::useless_conversion)] // f_type's width differs between libc targets
    LOCAL.contains(&i64::from(kind))
}

/// A shared read-only mapping of `WINDOW` bytes of `file` from `offset`; `None` if the file
/// cannot be mapped.
fn map_read_only(file: &File, offset: u64) -> Option<NonNull<u8>> {
    let offset = libc::off_t::try_from(offset).ok()?;
    // SAFETY: a fresh mapping chosen by the kernel; nothing else refers to that address range.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            WINDOW,
            libc::PROT_READ,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            offset,
        )
    };
    if p == libc::MAP_FAILED {
        return None;
    }
    NonNull::new(p.cast())
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

/// One `copy_file_range` step of up to `len` bytes from `offset` (same offset in both files).
fn kernel_copy(src: &File, dst: &File, offset: u64, len: usize) -> io::Result<usize> {
    let mut off_in = i64::try_from(offset).map_err(io::Error::other)?;
    let mut off_out = off_in;
    // SAFETY: valid descriptors; the offsets are valid pointers to local integers.
    let n = unsafe {
        libc::copy_file_range(
            src.as_raw_fd(),
            &raw mut off_in,
            dst.as_raw_fd(),
            &raw mut off_out,
            len,
            0,
        )
    };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

/// Asks the kernel to start writing a range back to disk, without waiting (a hint: errors are
/// reported by the `fsync` that follows).
pub fn start_writeback(f: &File, offset: u64, len: u64) {
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
        return;
    };
    // SAFETY: a valid descriptor and plain integers; the call only schedules I/O.
    unsafe {
        libc::sync_file_range(f.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE);
    }
}

/// SHA-256 and length of everything readable from `f`.
fn hash_reader(f: &mut impl Read) -> io::Result<Copied> {
    hash_reader_inspecting(f, &mut |_| {})
}

/// [`hash_reader`], handing `inspect` every byte read, in order.
fn hash_reader_inspecting(f: &mut impl Read, inspect: &mut dyn FnMut(&[u8])) -> io::Result<Copied> {
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
        inspect(&buf[..n]);
        bytes += n as u64;
        crate::progress::advance(n as u64);
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

/// [`hash_file`], handing `inspect` every byte read, in order (one read of the file for both).
pub fn hash_file_inspecting(path: &Path, inspect: &mut dyn FnMut(&[u8])) -> io::Result<Copied> {
    hash_reader_inspecting(&mut open_read_nofollow(path)?, inspect)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

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

    fn way(kernel_copy: bool, map: bool) -> Ways {
        Ways {
            reflink: false,
            kernel_copy,
            map,
            corrupt_at: None,
        }
    }

    /// Every way of copying (kernel copy or read/write, mapped or read back) gives the same
    /// file and the same SHA-256, for sizes around the step and the window.
    #[test]
    fn verified_copy_reads_back_what_it_wrote() {
        let dir = tempfile::tempdir().unwrap();
        let ways = [
            Ways::ALL,
            way(true, true),
            way(false, true),
            way(true, false),
            way(false, false),
        ];
        let sizes = [
            0usize,
            1,
            STEP + 3,
            WINDOW - 1,
            WINDOW,
            WINDOW + 1,
            3 * WINDOW + STEP / 2,
        ];
        for len in sizes {
            #[allow(clippy::cast_possible_truncation)]
            let data: Vec<u8> = (0..len).map(|i| (i * 7 % 253) as u8).collect();
            let src = dir.path().join(format!("s{len}"));
            fs::write(&src, &data).unwrap();
            let expected: [u8; 32] = Sha256::digest(&data).into();
            for (k, w) in ways.iter().enumerate() {
                let dst = dir.path().join(format!("d{len}-{k}"));
                let out = super::super::create_private(&dst).unwrap();
                let mut ran = false;
                let mut seen = Vec::new();
                let c = copy_with(
                    &File::open(&src).unwrap(),
                    &out,
                    *w,
                    &mut |piece| seen.extend_from_slice(piece),
                    || ran = true,
                )
                .unwrap();
                assert!(c.identical(), "{len} bytes, {w:?}");
                assert!(seen == data, "{len} bytes, {w:?}: inspect saw other bytes");
                assert!(ran);
                assert_eq!((c.bytes, c.read_back_bytes), (len as u64, len as u64));
                assert_eq!(c.sha256, expected, "{len} bytes, {w:?}");
                assert_eq!(fs::read(&dst).unwrap(), data);
                let methods: &[CopyMethod] = match (w.reflink, w.kernel_copy) {
                    // A reflink where the filesystem has them (XFS, Btrfs), else the kernel's.
                    (true, _) => &[CopyMethod::Reflink, CopyMethod::KernelCopy],
                    (false, true) => &[CopyMethod::KernelCopy],
                    (false, false) => &[CopyMethod::ReadWrite],
                };
                assert!(methods.contains(&c.method), "{len} bytes, {w:?}: {c:?}");
            }
        }
    }

    /// A byte that the disk gives back wrong is caught exactly where it is, in any window, by
    /// every way of reading the copy; nothing is reported identical, synced or checked further.
    #[test]
    fn a_copy_that_differs_is_caught_at_its_first_wrong_byte() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        let len = 3 * WINDOW + STEP / 2;
        fs::write(&src, vec![7u8; len]).unwrap();
        let offsets = [
            0,
            1,
            WINDOW as u64 - 1,
            2 * WINDOW as u64 + 12_345,
            len as u64 - 1,
        ];
        for at in offsets {
            for (kernel_copy, map) in [(true, true), (true, false), (false, true), (false, false)] {
                let dst = dir.path().join(format!("d{at}-{kernel_copy}-{map}"));
                let out = super::super::create_private(&dst).unwrap();
                let corrupt = Ways {
                    corrupt_at: Some(at),
                    ..way(kernel_copy, map)
                };
                let mut ran = false;
                let c = copy_with(
                    &File::open(&src).unwrap(),
                    &out,
                    corrupt,
                    &mut |_| {},
                    || ran = true,
                )
                .unwrap();
                assert!(!c.identical(), "byte {at}, {corrupt:?}");
                assert_eq!(c.first_difference, Some(at), "{corrupt:?}");
                assert!(c.bytes <= at, "only bytes proven equal are counted");
                assert!(
                    !ran,
                    "a copy that differs is neither synced nor checked further"
                );
            }
        }
        assert_eq!(first_difference(b"abcd", b"abXd"), Some(2));
        assert_eq!(first_difference(b"abcd", b"abcd"), None);
    }
}
