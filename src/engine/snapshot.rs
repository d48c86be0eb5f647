//! The consistent copy: one self-contained file in the backup directory, under a temporary name,
//! that holds everything committed in the source database, its WAL included.
//!
//! How it stays consistent: the caller holds a [`SourceLock`] (a shared OFD lock on the database
//! file) for the whole copy, so no DuckDB writer can open the database and change it; the copy
//! reads the locked descriptor itself, never a path that could have been swapped meanwhile.
//!
//! How the WAL gets in: when `<db>.wal` (or `.wal.checkpoint` / `.wal.recovery`) exists, those
//! files are copied beside the temporary copy under its name, then DuckDB opens that private
//! copy read-write and checkpoints it, which folds the WAL into the file and deletes it. The
//! source database and its WAL are only ever read.
//!
//! Invariants:
//! - The temporary file is `0600`, created with `O_EXCL | O_NOFOLLOW`, and removed (with any WAL
//!   beside it) on every failure path, by [`TempBackup`]'s `Drop`.
//! - When nothing had to be folded, the backup's bytes as read back from disk are the source's
//!   bytes read under the lock (equal length, compared byte for byte), and their SHA-256 is computed from
//!   the read-back: a byte-exact copy.

use std::fs;
use std::path::{Path, PathBuf};

use std::os::unix::fs::FileExt;

use super::blockstore::blockmap::{self, BlockMap, Chunker};
use super::integrity::{self, Checker, Readable};
use super::lock::SourceLock;
use crate::duck::{self, Db, DuckError, Limits};
use crate::error::{Error, Result};
use crate::files;
use crate::progress;

/// A temporary backup file, deleted on drop unless it was published.
#[derive(Debug)]
pub struct TempBackup {
    path: PathBuf,
    armed: bool,
}

impl TempBackup {
    pub fn path(&self) -> &Path {
        &self.path
    }
    /// The file was renamed into place; nothing to clean up.
    pub fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for TempBackup {
    fn drop(&mut self) {
        if self.armed {
            let _ = fs::remove_file(&self.path);
            for wal in duck::wal_paths(&self.path) {
                let _ = fs::remove_file(wal);
            }
        }
    }
}

/// The copy, written, fsynced and read back.
#[derive(Debug)]
pub struct Snapshot {
    pub temp: TempBackup,
    /// Size and SHA-256 of the backup as read back from disk.
    pub bytes: u64,
    pub sha256: [u8; 32],
    /// Size and SHA-256 of the source's main file as read under the lock (the SHA-256 of the
    /// first copy, read back and proven identical to the source's bytes).
    pub source_bytes: u64,
    pub source_sha256: [u8; 32],
    /// Total size of the WAL files folded in (0: none, the backup is a byte-exact copy).
    pub wal_bytes: u64,
    pub wal_folded: bool,
    pub copy_method: files::CopyMethod,
    /// Headers and blocks whose DuckDB checksum was checked during the copy (`None`: the
    /// database is encrypted, so they could not be).
    pub blocks_checked: Option<u64>,
    /// The backup's block map, from the same read as its SHA-256, when one was asked for and
    /// the database can go into the block store.
    pub blocks: Option<BlockMap>,
    pub warnings: Vec<String>,
}

/// The WAL files present beside `db`, with their sizes.
pub fn present_wals(db: &Path) -> Vec<(PathBuf, u64)> {
    duck::wal_paths(db)
        .into_iter()
        .filter_map(|p| match fs::metadata(&p) {
            Ok(m) if m.is_file() => Some((p, m.len())),
            _ => None,
        })
        .collect()
}

/// Copies the locked source into `temp_path`, folds its WAL in when there is one, fsyncs, and
/// reads the result back.
///
/// `verify(temp, wal_folded)` checks the copy's content. For a byte-exact copy it runs while the
/// copy is fsynced and read back (the bytes it reads are the page cache's, the ones `fsync`
/// writes), so DuckDB's scan overlaps the I/O; after a WAL fold it runs on the folded file.
/// Nothing is trusted until both the content check and the durable read-back have passed.
///
/// With `want_blocks` (`BACKUP_STORAGE` other than `full`), the backup's block map is computed
/// from the same read: the copy's own for a byte-exact copy, the folded file's read-back after
/// a WAL fold. A database the block store does not take gets none, and a warning.
pub fn take<V>(
    source: &SourceLock,
    wals: &[(PathBuf, u64)],
    temp_path: PathBuf,
    limits: &Limits,
    want_blocks: bool,
    verify: impl FnOnce(&Path, bool) -> Result<V>,
) -> Result<(Snapshot, V)> {
    let src_path = &source.path;
    let expected = source
        .file
        .metadata()
        .map_err(|e| Error::io("stat", src_path, e))?
        .len();
    let wal_bytes: u64 = wals.iter().map(|(_, n)| n).sum();

    let out = files::create_private(&temp_path)
        .map_err(|e| Error::io("create temporary backup", &temp_path, e))?;
    let temp = TempBackup {
        path: temp_path,
        armed: true,
    };
    let wal_folded = !wals.is_empty();
    let mut warnings = Vec::new();
    let refuse = |d: integrity::Damage| damaged(&d, src_path, limits);
    let mut checker = checker_for(source, expected, limits, &mut warnings)?;
    let mut chunker = if want_blocks && !wal_folded {
        chunker_for(checker.as_ref(), &mut warnings)
    } else {
        None
    };
    // Copy, fsync and read back in one pass (see `files::copy_verified`); for a byte-exact
    // copy, the content check runs meanwhile.
    let temp_path = temp.path().to_path_buf();
    let mut verify = Some(verify);
    let mut early = None;
    let mut first_piece = true;
    let mut inspect = |piece: &[u8]| {
        if let Some(c) = checker.as_mut() {
            c.feed(piece);
        }
        if let Some(c) = chunker.as_mut() {
            c.feed(piece);
        }
        if std::mem::take(&mut first_piece) {
            // Midway through the copy (after its first step): tests fill the disk here.
            crate::failpoint::hit("snapshot.copying");
        }
    };
    let shown = progress::step(&format!("copying {}", name_of(src_path)), Some(expected));
    let copied = files::copy_verified_inspecting(&source.file, &out, &mut inspect, || {
        if !wal_folded {
            let _checking = progress::step("checking the copy", None);
            early = verify.take().map(|f| f(&temp_path, false));
        }
    })
    .map_err(|e| Error::io("copy database to", temp.path(), e))?;
    drop(shown);
    judge(&copied, expected, src_path, temp.path())?;
    let blocks_checked = match checker {
        Some(c) => Some(c.finish().map_err(refuse)?),
        None => None,
    };
    crate::failpoint::hit("snapshot.copied");

    let mut blocks = chunker.map(Chunker::finish);
    let (bytes, sha256) = if wal_folded {
        let folding = progress::step("folding the WAL into the copy", None);
        fold_wal(wals, src_path, temp.path(), limits)?;
        drop(folding);
        crate::failpoint::hit("snapshot.folded");
        out.sync_all()
            .map_err(|e| Error::io("fsync", temp.path(), e))?;
        // The checkpoint rewrote the file: hash it as it now is on disk, and check DuckDB's
        // checksums of every block the folded file uses in the same read. A WAL can point at
        // blocks the source's header does not count or lists as free (rows DuckDB wrote
        // straight to the file before the crash): damage there shows up only here.
        let (back, folded, map) = hash_and_check(temp.path(), want_blocks, &mut warnings)?;
        blocks = map;
        if let Err(d) = folded {
            return Err(Error::DatabaseDamaged {
                path: src_path.clone(),
                why: format!(
                    "a block its WAL points to is damaged: in the copy with the WAL folded in, {d}"
                ),
                restore: None,
            });
        }
        (back.bytes, back.sha256)
    } else {
        (copied.read_back_bytes, copied.sha256)
    };
    drop(out);
    crate::failpoint::hit("snapshot.synced");
    let verified = match (early, verify) {
        (Some(v), _) => v?,
        (None, Some(f)) => {
            let _checking = progress::step("checking the copy", None);
            f(temp.path(), wal_folded)?
        }
        (None, None) => return Err(Error::Internal("the copy was never verified".into())),
    };
    let snap = Snapshot {
        temp,
        bytes,
        sha256,
        source_bytes: copied.bytes,
        source_sha256: copied.sha256,
        wal_bytes,
        wal_folded,
        copy_method: copied.method,
        blocks_checked,
        blocks,
        warnings,
    };
    Ok((snap, verified))
}

/// DuckDB's block checksums are checked on the source's bytes as they pass (see `integrity`):
/// a damaged database is refused at every verification level. `None` when the database is
/// encrypted and its blocks cannot be checked (said in `warnings`).
fn checker_for(
    source: &SourceLock,
    len: u64,
    limits: &Limits,
    warnings: &mut Vec<String>,
) -> Result<Option<Checker>> {
    match integrity::Layout::read(len, &|at, buf| source.file.read_exact_at(buf, at)) {
        Ok(Ok(Readable::Layout(layout))) => Ok(Some(Checker::new(layout))),
        Ok(Ok(Readable::Encrypted)) => {
            warnings.push(
                "the database is encrypted: DuckDB's block checksums were not checked during the copy (DuckDB's own scan checks them at VERIFY_LEVEL standard and full)".into(),
            );
            Ok(None)
        }
        Ok(Err(d)) => Err(damaged(&d, &source.path, limits)),
        Err(e) => Err(Error::io("read", &source.path, e)),
    }
}

fn damaged(d: &integrity::Damage, src: &Path, limits: &Limits) -> Error {
    Error::DatabaseDamaged {
        path: src.to_path_buf(),
        why: describe_damage(d, src, limits),
        restore: None,
    }
}

/// What [`take`] checks of the locked source's bytes as it copies them (DuckDB's checksum of
/// every header and block in use), without copying: a dry run's check. Returns the warnings
/// the copy would give.
pub fn check_source(source: &SourceLock, limits: &Limits) -> Result<Vec<String>> {
    let len = source
        .file
        .metadata()
        .map_err(|e| Error::io("stat", &source.path, e))?
        .len();
    let mut warnings = Vec::new();
    let Some(mut checker) = checker_for(source, len, limits, &mut warnings)? else {
        return Ok(warnings);
    };
    // The locked descriptor itself, as the copy reads it, by offset.
    let mut buf = vec![0u8; files::BUF_SIZE];
    let mut at = 0u64;
    while at < len {
        let n = source
            .file
            .read_at(&mut buf, at)
            .map_err(|e| Error::io("read", &source.path, e))?;
        if n == 0 {
            break;
        }
        checker.feed(&buf[..n]);
        at += n as u64;
    }
    checker
        .finish()
        .map_err(|d| damaged(&d, &source.path, limits))?;
    Ok(warnings)
}

/// The block map's chunker for a database whose blocks `checker` checks, when the block store
/// takes it; else a warning that says why the backups stay full copies.
fn chunker_for(checker: Option<&Checker>, warnings: &mut Vec<String>) -> Option<Chunker> {
    let why = match checker {
        None => "the database is encrypted".to_owned(),
        Some(c) if c.block_size() != blockmap::SUPPORTED_BLOCK_SIZE => format!(
            "its block size is {} bytes, not DuckDB's default {}",
            c.block_size(),
            blockmap::SUPPORTED_BLOCK_SIZE
        ),
        Some(c) => return Some(Chunker::new(c.block_size())),
    };
    warnings.push(format!(
        "this backup stays a full copy, as will the older ones (BACKUP_STORAGE asks for the block store): {why}"
    ));
    None
}

/// The result of [`hash_and_check`]: the file's length and SHA-256, DuckDB's verdict on its
/// blocks, and its block map when asked for.
type Checked = (
    files::Copied,
    Result<Option<u64>, integrity::Damage>,
    Option<BlockMap>,
);

/// A file's name, for the progress bar.
fn name_of(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// Reads a file once: its length and SHA-256, DuckDB's checksum of every header and block it
/// uses (`Ok(None)` when it is encrypted and cannot be checked), and, with `want_blocks`, its
/// block map.
fn hash_and_check(path: &Path, want_blocks: bool, warnings: &mut Vec<String>) -> Result<Checked> {
    let file = files::open_read_nofollow(path).map_err(|e| Error::io("read back", path, e))?;
    let len = file
        .metadata()
        .map_err(|e| Error::io("read back", path, e))?
        .len();
    let layout = integrity::Layout::read(len, &|at, buf| file.read_exact_at(buf, at))
        .map_err(|e| Error::io("read back", path, e))?;
    let mut checker = match layout {
        Ok(Readable::Layout(l)) => Some(Checker::new(l)),
        Ok(Readable::Encrypted) => None,
        Err(d) => {
            let back = files::hash_file(path).map_err(|e| Error::io("read back", path, e))?;
            return Ok((back, Err(d), None));
        }
    };
    let mut chunker = if want_blocks {
        chunker_for(checker.as_ref(), warnings)
    } else {
        None
    };
    let _shown = progress::step("reading the copy back", Some(len));
    let back = files::hash_file_inspecting(path, &mut |piece| {
        if let Some(c) = checker.as_mut() {
            c.feed(piece);
        }
        if let Some(c) = chunker.as_mut() {
            c.feed(piece);
        }
    })
    .map_err(|e| Error::io("read back", path, e))?;
    let verdict = match checker {
        Some(c) => c.finish().map(Some),
        None => Ok(None),
    };
    Ok((back, verdict, chunker.map(Chunker::finish)))
}

/// The damage in words, with the tables whose data sits in a damaged block (DuckDB reads which
/// blocks a table uses from its metadata, without touching the damaged block).
fn describe_damage(d: &integrity::Damage, db: &Path, limits: &Limits) -> String {
    let mut why = d.to_string();
    let Some(id) = d.block else { return why };
    let used_by = Db::open_read_only(db, limits).and_then(|db| {
        let mut names = Vec::new();
        for t in db.tables()? {
            if db.table_uses_block(&t, id)? {
                names.push(format!("`{}`", t.display()));
            }
        }
        Ok(names)
    });
    match used_by {
        Ok(names) if !names.is_empty() => {
            why.push_str("; it holds data of table ");
            why.push_str(&names.join(", "));
        }
        Ok(_) => why.push_str(
            "; no table keeps its rows there: it holds DuckDB's own metadata (the catalog, the free list, or an index)",
        ),
        Err(_) => {}
    }
    why
}

/// What a copy's read-back says ([`super::verify::read_back`]): a length other than the locked
/// file's means something wrote it behind the lock.
fn judge(copied: &files::VerifiedCopy, expected: u64, src: &Path, temp: &Path) -> Result<()> {
    super::verify::read_back(copied, temp, expected, &|got| {
        Error::BackupFailed {
        path: src.to_path_buf(),
        why: format!(
            "the file changed size while it was copied ({expected} → {got} bytes) although it was locked"
        ),
    }
    })
}

/// Copies the WAL files beside the private copy and checkpoints the copy, so that the backup
/// holds every committed change in one file.
fn fold_wal(wals: &[(PathBuf, u64)], src: &Path, temp: &Path, limits: &Limits) -> Result<()> {
    for (wal, _) in wals {
        let suffix = wal
            .to_string_lossy()
            .strip_prefix(&*src.to_string_lossy())
            .map(str::to_owned)
            .unwrap_or_default();
        let dest = PathBuf::from(format!("{}{suffix}", temp.display()));
        let mut from = files::open_read(wal).map_err(|e| Error::io("read WAL", wal, e))?;
        let mut to =
            files::create_private(&dest).map_err(|e| Error::io("copy WAL to", &dest, e))?;
        // The folded file is hashed after the checkpoint; hashing the WAL here would be wasted.
        std::io::copy(&mut from, &mut to).map_err(|e| Error::io("copy WAL to", &dest, e))?;
    }
    let fail = |e: DuckError| match e {
        // Disk full while DuckDB wrote: the same code and hint as any other disk full.
        DuckError::NoSpace(_) => Error::io(
            "fold the WAL into",
            temp,
            std::io::Error::from_raw_os_error(libc::ENOSPC),
        ),
        // DuckDB read a damaged block of the database (or one its WAL points to) while
        // folding: the database itself is damaged.
        DuckError::Corrupt(msg) => Error::DatabaseDamaged {
            path: src.to_path_buf(),
            why: format!("DuckDB found damage while folding its WAL into the copy: {msg}"),
            restore: None,
        },
        other => Error::BackupFailed {
            path: src.to_path_buf(),
            why: format!("DuckDB could not fold the WAL into the copy: {other}"),
        },
    };
    let db = Db::open_read_write(temp, limits).map_err(fail)?;
    db.checkpoint().map_err(fail)?;
    db.close().map_err(fail)?;
    for leftover in duck::wal_paths(temp) {
        match fs::metadata(&leftover) {
            Ok(m) if m.len() > 0 => {
                return Err(Error::BackupFailed {
                    path: src.to_path_buf(),
                    why: format!(
                        "DuckDB left a non-empty `{}` after the checkpoint",
                        leftover.display()
                    ),
                })
            }
            Ok(_) => {
                let _ = fs::remove_file(&leftover);
            }
            Err(_) => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn copy(
        bytes: u64,
        read_back_bytes: u64,
        first_difference: Option<u64>,
    ) -> files::VerifiedCopy {
        files::VerifiedCopy {
            bytes,
            read_back_bytes,
            sha256: [0; 32],
            first_difference,
            method: files::CopyMethod::KernelCopy,
        }
    }

    #[test]
    fn a_wrong_byte_is_a_verification_failure_even_though_the_copy_stopped_short() {
        let (src, temp) = (Path::new("/db"), Path::new("/backups/tmp"));
        let judged = |c| judge(&c, 1000, src, temp).map_err(|e| (e.code(), e.to_string()));
        let (code, msg) = judged(copy(512, 512, Some(700))).unwrap_err();
        assert_eq!(code, crate::protocol::ErrorCode::VerificationFailed);
        assert!(msg.contains("at byte 700"), "{msg}");
        let (code, msg) = judged(copy(900, 900, None)).unwrap_err();
        assert_eq!(code, crate::protocol::ErrorCode::BackupFailed);
        assert!(msg.contains("changed size"), "{msg}");
        let (code, _) = judged(copy(1000, 998, None)).unwrap_err();
        assert_eq!(code, crate::protocol::ErrorCode::VerificationFailed);
        assert!(judged(copy(1000, 1000, None)).is_ok());
    }
}
