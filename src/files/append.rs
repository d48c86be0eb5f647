//! Appending whole lines to a log shared by concurrent processes, and rotating it by size.
//!
//! Invariants:
//! - A line is appended with ONE `write` on an `O_APPEND` descriptor: on Linux the offset
//!   update and the write of one call are atomic for a regular file, so lines of concurrent
//!   writers never interleave. A short write (a full disk) is an error, never a silent half
//!   line.
//! - The log is created `0600`, never through a symlink planted at its name; one found open to
//!   others is tightened back to `0600`.
//! - Rotation renames (`log` → `log.1` → … → `log.KEEP`, the oldest dropped); it never
//!   truncates. It happens under an exclusive `flock` of a lock file beside the log, taken
//!   without waiting, and only when the file at the log's name is still the one found too big:
//!   two processes that both see a full log rotate it once. A writer that finds the lock taken
//!   appends to the file it has open (the other process is rotating it), so a line is never
//!   lost to a rotation and no writer ever waits on another.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::{try_flock_exclusive, PRIVATE_FILE_MODE};

/// What [`append_line`] did besides appending.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Appended {
    /// The log was rotated before the line was written.
    pub rotated: bool,
}

/// `log.N`: the `n`-th rotated file of `log` (`ducksafe.jsonl.1` is the newest).
pub fn rotated_name(log: &Path, n: u32) -> PathBuf {
    let mut name = log.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

/// The lock file that serializes rotations of `log`: `.NAME.rotate-lock` beside it.
fn rotation_lock(log: &Path) -> PathBuf {
    let name = log
        .file_name()
        .map_or_else(|| "log".into(), |n| n.to_string_lossy().into_owned());
    super::parent_of(log).join(format!(".{name}.rotate-lock"))
}

/// Opens `log` for appending, creating it `0600` (never following a symlink at its name), and
/// tightens an existing one open to others.
///
/// `O_NONBLOCK`: a FIFO planted at the name would otherwise block the open (with no reader)
/// or the write (with a full pipe) while the caller holds its locks; it is refused instead.
fn open_append(log: &Path) -> io::Result<File> {
    let f = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(PRIVATE_FILE_MODE)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(log)
        .map_err(|e| not_regular_on_enxio(e, log))?;
    let f = super::only_regular(f, log)?;
    let meta = f.metadata()?;
    if meta.mode() & 0o077 != 0 {
        f.set_permissions(fs::Permissions::from_mode(PRIVATE_FILE_MODE))?;
    }
    Ok(f)
}

/// A FIFO without a reader answers a non-blocking open for writing with `ENXIO`: say what it is.
fn not_regular_on_enxio(e: io::Error, path: &Path) -> io::Error {
    if e.raw_os_error() == Some(libc::ENXIO) {
        io::Error::other(format!(
            "`{}` is not a regular file (a FIFO at its name?): move it away",
            path.display()
        ))
    } else {
        e
    }
}

/// Appends `line` (which ends with a newline) to `log` in one `write`, first rotating the log
/// when the line would take it past `max_bytes` (keeping `keep` rotated files). See the module
/// documentation for what concurrent writers can rely on.
pub fn append_line(log: &Path, line: &[u8], max_bytes: u64, keep: u32) -> io::Result<Appended> {
    let mut f = open_append(log)?;
    let mut appended = Appended::default();
    let len = f.metadata()?.len();
    if len > 0 && len.saturating_add(line.len() as u64) > max_bytes {
        if let Some(rotated) = rotate(log, &f, line.len() as u64, max_bytes, keep)? {
            f = rotated;
            appended.rotated = true;
        }
    }
    // A full disk is found before the line is cut short by it, where the filesystem says so
    // (a line cut short would sit in the log until a reader skips it).
    if super::fs_space(super::parent_of(log)).is_ok_and(|s| s.available_bytes < line.len() as u64) {
        return Err(io::Error::new(
            io::ErrorKind::StorageFull,
            format!("no space left on the filesystem of `{}`", log.display()),
        ));
    }
    let n = f.write(line)?;
    if n != line.len() {
        // Close the part that was written, if there is room now, so the next line starts on a
        // line of its own; readers skip the part.
        let _ = f.write(b"\n");
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            format!(
                "short write: {n} of {} bytes reached `{}` (is the disk full?)",
                line.len(),
                log.display()
            ),
        ));
    }
    Ok(appended)
}

/// Rotates `log` if this process may (the lock is free) and should (the file at the name is
/// still `open`, still too full). Returns the new log, opened, when it rotated.
fn rotate(
    log: &Path,
    open: &File,
    adding: u64,
    max_bytes: u64,
    keep: u32,
) -> io::Result<Option<File>> {
    let lock_path = rotation_lock(log);
    let lock = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(PRIVATE_FILE_MODE)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(&lock_path)
        .map_err(|e| not_regular_on_enxio(e, &lock_path))?;
    let lock = super::only_regular(lock, &lock_path)?;
    if !try_flock_exclusive(&lock)? {
        // Another process is rotating: the line goes to the file this one has open.
        return Ok(None);
    }
    // Under the lock: the name may already hold a fresh log (someone rotated since `open` was
    // opened). Then rotate nothing: write to the fresh one.
    let ours = open.metadata()?;
    let at_name = fs::symlink_metadata(log)?;
    if at_name.ino() != ours.ino() || at_name.dev() != ours.dev() {
        return open_append(log).map(Some);
    }
    if ours.len().saturating_add(adding) <= max_bytes {
        return Ok(None);
    }
    for n in (1..keep.max(1)).rev() {
        match fs::rename(rotated_name(log, n), rotated_name(log, n + 1)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    fs::rename(log, rotated_name(log, 1))?;
    let fresh = open_append(log)?;
    drop(lock);
    Ok(Some(fresh))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_stay_whole_across_rotations_and_the_oldest_go() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("a.jsonl");
        let line = b"0123456789012345678901234567890123456789\n"; // 41 bytes
        let mut rotations = 0;
        for _ in 0..40 {
            if append_line(&log, line, 100, 3).unwrap().rotated {
                rotations += 1;
            }
        }
        // Two lines fit in 100 bytes: a rotation every second line after the first two.
        assert_eq!(rotations, 19);
        for f in [log.clone(), rotated_name(&log, 1), rotated_name(&log, 3)] {
            let text = fs::read(&f).unwrap();
            assert_eq!(text.len() % line.len(), 0, "{}", f.display());
            assert!(text.chunks(line.len()).all(|c| c == line));
        }
        assert!(!rotated_name(&log, 4).exists());
        let mode = fs::metadata(&log).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn a_fifo_at_the_log_name_is_refused_without_waiting() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("a.jsonl");
        let made = std::process::Command::new("mkfifo")
            .arg(&log)
            .status()
            .unwrap();
        assert!(made.success());
        // Without O_NONBLOCK the open waits for a reader forever: the test would hang.
        let e = append_line(&log, b"x\n", 1000, 3).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
        // Nor does a reader hang on it.
        let e = super::super::open_read_regular(&log).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
    }

    #[test]
    fn a_symlink_at_the_log_name_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("elsewhere");
        fs::write(&target, b"").unwrap();
        let log = dir.path().join("a.jsonl");
        std::os::unix::fs::symlink(&target, &log).unwrap();
        assert!(append_line(&log, b"x\n", 1000, 3).is_err());
        assert_eq!(fs::read(&target).unwrap(), b"");
    }
}
