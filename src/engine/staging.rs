//! The staged copy of a restore: the backup copied beside the database under a temporary
//! name, fsynced and read back, before anything of the database moves.
//!
//! Invariants:
//! - A staged copy is named `.ducksafe-tmp-restore-<tag>-<pid>-<backup id>.duckdb`, where the
//!   tag is derived from the database's file name ([`prefix`]): two databases in one folder
//!   have different tags, so a cleanup never looks at another database's copies.
//! - The process that stages a copy holds an OFD read lock on it for as long as it works on it;
//!   a cleanup ([`sweep`]) removes a copy only when it can take a write lock on it, that is,
//!   when that process is gone. DuckDB's read-only open of the copy is still let in.
//! - A staged copy is trusted only when its read-back is the backup's bytes and their SHA-256
//!   the manifest's ([`check_sha256`]); it is removed on every failure path (its guard's drop).

use std::fs;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::verify;
use crate::error::{Error, Result};
use crate::files;

/// The beginning of the names of this database's staged restore copies in its folder:
/// `.ducksafe-tmp-restore-<tag>-`.
pub fn prefix(db: &Path) -> String {
    let name = db
        .file_name()
        .map_or(&b""[..], std::ffi::OsStr::as_encoded_bytes);
    let tag = files::hex(&Sha256::digest(name));
    format!("{}restore-{}-", files::TEMP_PREFIX, &tag[..16])
}

/// Where this process stages backup `backup_id` for the database `db`.
pub fn path_for(db: &Path, backup_id: &str) -> PathBuf {
    files::parent_of(db).join(format!(
        "{}{}-{backup_id}.duckdb",
        prefix(db),
        std::process::id(),
    ))
}

/// The refusal of a backup whose bytes are not the manifest's: `got` is their SHA-256.
pub fn check_sha256(backup: &Path, got: &str, manifest_sha256: &str) -> Result<()> {
    if got == manifest_sha256 {
        return Ok(());
    }
    Err(Error::VerificationFailed {
        path: backup.to_path_buf(),
        why: format!("its SHA-256 is {got}, the manifest says {manifest_sha256}"),
    })
}

/// Reads the backup file at `backup` (`bytes` long, as its manifest says) whole and checks its
/// SHA-256 against the manifest's: a dry run's proof, without a staged copy.
pub fn check_in_place(backup: &Path, bytes: u64, manifest_sha256: &str) -> Result<()> {
    let _shown = crate::progress::step("checking the backup", Some(bytes));
    let hashed = files::hash_file(backup).map_err(|e| Error::VerificationFailed {
        path: backup.to_path_buf(),
        why: format!("cannot read it: {e}"),
    })?;
    check_sha256(backup, &files::hex(&hashed.sha256), manifest_sha256)
}

/// The staged copy; removed on drop unless kept. It holds the lock the module documentation
/// describes.
pub struct Staged<'a> {
    path: &'a Path,
    keep: std::cell::Cell<bool>,
    lock: fs::File,
}

impl<'a> Staged<'a> {
    /// Copies `backup` (whose manifest says `bytes` and `sha256`) to `staged`, fsyncs and reads
    /// it back.
    pub fn create(backup: &Path, staged: &'a Path, bytes: u64, sha256: &str) -> Result<Staged<'a>> {
        let from =
            files::open_read_nofollow(backup).map_err(|e| Error::io("read backup", backup, e))?;
        let _shown = crate::progress::step("staging the backup", Some(bytes));
        Self::fill(staged, |to| {
            let copied = files::copy_verified(&from, to, || {})
                .map_err(|e| Error::io("stage the restore at", staged, e))?;
            // The staged copy, not the backup, is what the disk gave back wrong.
            verify::read_back(&copied, staged, bytes, &|got| Error::VerificationFailed {
                path: backup.to_path_buf(),
                why: format!(
                    "it is {got} bytes, the manifest says {bytes} (truncated or overwritten)"
                ),
            })?;
            check_sha256(backup, &files::hex(&copied.sha256), sha256)
        })
    }

    /// Creates `staged`, locks it, and lets `fill` write it: a copy of a backup
    /// ([`Staged::create`]), or a packed backup rebuilt from the block store (fsynced, its
    /// read-back SHA-256 compared with the manifest's by `fill`).
    pub fn fill(
        staged: &'a Path,
        fill: impl FnOnce(&fs::File) -> Result<()>,
    ) -> Result<Staged<'a>> {
        let to = files::create_private(staged)
            .map_err(|e| Error::io("stage the restore at", staged, e))?;
        let lock = to
            .try_clone()
            .map_err(|e| Error::io("stage the restore at", staged, e))?;
        let guard = Staged {
            path: staged,
            keep: std::cell::Cell::new(false),
            lock,
        };
        files::try_lock(&guard.lock, files::LockKind::Read).map_err(|e| {
            Error::io(
                "lock the staged copy",
                staged,
                match e {
                    files::LockError::Io(e) => e,
                    files::LockError::Conflict { .. } => {
                        std::io::Error::other("another process locked it")
                    }
                },
            )
        })?;
        fill(&to)?;
        Ok(guard)
    }

    /// The copy is handed to the journal: no longer removed on drop.
    pub fn keep(&self) {
        self.keep.set(true);
    }
}

impl Drop for Staged<'_> {
    fn drop(&mut self) {
        if !self.keep.get() {
            let _ = fs::remove_file(self.path);
        }
    }
}

/// This database's staged copies that no process works on any more (left by a restore that
/// crashed before its journal was written): removed, unless `dry_run`. Returns one line per
/// copy removed (or that would be).
pub fn sweep(db: &Path, dry_run: bool) -> Vec<String> {
    let prefix = prefix(db);
    let Ok(rd) = fs::read_dir(files::parent_of(db)) else {
        return Vec::new();
    };
    let mut done = Vec::new();
    for e in rd.filter_map(std::result::Result::ok) {
        let path = e.path();
        if !files::file_name(&path).starts_with(&prefix) || !abandoned(&path) {
            continue;
        }
        if dry_run {
            done.push(format!("would remove the leftover `{}`", path.display()));
        } else if fs::remove_file(&path).is_ok() {
            done.push(format!("removed the leftover `{}`", path.display()));
        }
    }
    done
}

/// Whether a staged copy is abandoned: no live process holds its lock. A symlink under a staged
/// name was never made by ducksafe: it is unlinked, never followed.
fn abandoned(path: &Path) -> bool {
    use std::os::unix::fs::OpenOptionsExt;
    match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => true,
        Ok(m) if m.file_type().is_file() => fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(path)
            .is_ok_and(|f| files::try_lock(&f, files::LockKind::Write).is_ok()),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staged_prefixes_differ_between_databases_of_one_folder() {
        let a = prefix(Path::new("/d/simulation.duckdb"));
        let b = prefix(Path::new("/d/x.simulation.duckdb"));
        assert_ne!(a, b);
        assert!(!a.starts_with(&b) && !b.starts_with(&a));
        assert_eq!(a, prefix(Path::new("/elsewhere/simulation.duckdb")));
        assert!(a.starts_with(".ducksafe-tmp-restore-"));
    }
}
