//! The free-space checks made before a byte of a backup, or of a restore's staged copy, is
//! written.
//!
//! Invariants: a backup starts only when the backup filesystem can hold the whole database (main
//! file and WAL: an upper bound on the backup's size) and still keep `BACKUP_MIN_FREE_BYTES`
//! free ([`check`]); a restore stages its copy only when the database's filesystem can hold the
//! backup plus [`STAGING_SLACK`] ([`check_staging`]), a dry run and the restore alike. The
//! decision is [`decide`], a pure function; the checks add the `statvfs` call.

use std::path::Path;

use crate::error::{Error, Result};
use crate::files;

/// The figures behind a space decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Space {
    pub available: u64,
    pub required: u64,
}

/// Whether `needed` bytes fit on a filesystem with `available` bytes free, keeping `margin`.
pub fn decide(available: u64, needed: u64, margin: u64) -> std::result::Result<Space, Space> {
    let required = needed.saturating_add(margin);
    let space = Space {
        available,
        required,
    };
    if available >= required {
        Ok(space)
    } else {
        Err(space)
    }
}

/// Reads the free space of `dir`'s filesystem and decides.
pub fn check(dir: &Path, needed: u64, margin: u64) -> Result<Space> {
    let fs = files::fs_space(dir).map_err(|e| Error::io("read free space of", dir, e))?;
    decide(fs.available_bytes, needed, margin).map_err(|s| Error::InsufficientSpace {
        dir: dir.to_path_buf(),
        available: s.available,
        required: s.required,
    })
}

/// Room a restore needs beside its staged copy: the journal, the marker, the quarantine folder,
/// and the copy's last partial block.
pub const STAGING_SLACK: u64 = 1 << 20;

/// Whether a restore's staged copy of `bytes`, to be written at `staged`, fits in its folder
/// (the database's), with [`STAGING_SLACK`].
pub fn check_staging(staged: &Path, bytes: u64) -> Result<()> {
    match check(files::parent_of(staged), bytes, STAGING_SLACK) {
        Err(Error::InsufficientSpace {
            dir,
            available,
            required,
        }) => Err(Error::NoRoomToStage {
            staged: staged.to_path_buf(),
            dir,
            available,
            required,
        }),
        checked => checked.map(|_| ()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_margin_counts() {
        assert!(decide(100, 60, 40).is_ok());
        assert_eq!(
            decide(99, 60, 40),
            Err(Space {
                available: 99,
                required: 100
            })
        );
        assert!(decide(0, u64::MAX, u64::MAX).is_err());
    }
}
