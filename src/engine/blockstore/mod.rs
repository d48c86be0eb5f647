//! The block store: older backups kept as the DuckDB blocks they do not share with newer ones,
//! the newest kept as a plain file.
//!
//! A backup is plain (its `.duckdb` file, with its [`BlockMap`] recorded from the copy's own
//! read) or packed (its map alone; every chunk it lists is in a pack or in a plain backup's
//! file). Packs live in `BACKUP_DIR/packs/` (see [`pack`] for the format); the store's index
//! (chunk → pack) is rebuilt from the packs' trailers whenever it is needed: there is no index
//! file to keep in step.
//!
//! The steps, each its own file:
//! - [`blockmap`]: a file as chunks (headers, then one chunk per block), named by BLAKE3;
//! - [`pack`]: compressed frames with a trailer index, named by their SHA-256;
//! - [`secure`]: before a plain file goes away (converted or deleted), pack the chunks that
//!   the backups staying need and only that file holds; [`convert`] is that, then a rebuild;
//! - [`rebuild`]: a backup as a stream from packs and plain files, every chunk's hash checked
//!   (and the whole file's SHA-256 when asked);
//! - [`gc`]: packs nothing references are deleted; packs mostly dead are repacked.
//!
//! Crash safety, the order every caller keeps:
//! - A pack is durable (fsynced, renamed, folder fsynced) before any manifest lists a chunk
//!   only it holds; a plain file is removed only after its packed manifest is durable.
//! - A pack is deleted only when no durable manifest lists any of its live chunks: manifests
//!   are deleted first (durably), then [`gc`] deletes what nothing references. A crash in
//!   between leaves unreferenced packs, which the next run's [`gc`] deletes.
//! - Temporary packs (`.ducksafe-tmp-*`) are never read; [`Packs::sweep`] removes them.

pub mod blockmap;
pub mod gc;
pub mod pack;
pub mod rebuild;
pub mod secure;
pub mod usage;

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};

pub use blockmap::{BlockMap, Chunker, Hash};
pub use pack::{Pack, PackDamage};
pub use rebuild::{rebuild, Failure, Plain, Rebuilt, Sources};
pub use secure::{convert, secure, Converted, Secured};

use crate::files;

/// The packs folder's name in the backup directory.
pub const PACKS_DIR: &str = "packs";

/// The packs folder of a backup directory.
#[derive(Debug, Clone)]
pub struct Packs {
    dir: PathBuf,
}

impl Packs {
    /// The packs folder of `backup_dir` (it may not exist yet).
    pub fn of(backup_dir: &Path) -> Packs {
        Packs {
            dir: backup_dir.join(PACKS_DIR),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Creates the folder (`0700`) when it is missing; refuses a symlink or a folder that is
    /// not private.
    pub fn ensure(&self) -> crate::error::Result<()> {
        let existed = std::fs::symlink_metadata(&self.dir).is_ok();
        crate::engine::folders::ensure(&self.dir, crate::engine::folders::Kind::BackupDir)?;
        if !existed {
            files::sync_dir(files::parent_of(&self.dir))
                .map_err(|e| crate::error::Error::io("sync", files::parent_of(&self.dir), e))?;
        }
        Ok(())
    }

    /// The packs' file names, sorted (none when the folder does not exist).
    pub fn names(&self) -> io::Result<Vec<String>> {
        let rd = match std::fs::read_dir(&self.dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut names: Vec<String> = rd
            .filter_map(std::result::Result::ok)
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| pack::is_pack_name(n))
            .collect();
        names.sort();
        Ok(names)
    }

    /// Reads every pack's index.
    pub fn index(&self) -> io::Result<Index> {
        let mut index = Index::default();
        for name in self.names()? {
            match Pack::open(&self.dir.join(&name)) {
                Ok(Ok(p)) => index.add(p),
                Ok(Err(d)) => index.damaged.push(d),
                // Gone meanwhile (another process's gc cannot run while we hold the directory
                // lock; this is a hand deletion): as if it never was.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(index)
    }

    /// Removes temporary packs an interrupted run left. Returns their names.
    pub fn sweep(&self) -> io::Result<Vec<String>> {
        let rd = match std::fs::read_dir(&self.dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut removed = Vec::new();
        for e in rd.filter_map(std::result::Result::ok) {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(files::TEMP_PREFIX) {
                std::fs::remove_file(e.path())?;
                removed.push(name);
            }
        }
        if !removed.is_empty() {
            files::sync_dir(&self.dir)?;
        }
        Ok(removed)
    }

    /// Bytes of every pack on disk.
    pub fn bytes(&self) -> io::Result<u64> {
        let mut total = 0;
        for n in self.names()? {
            match std::fs::symlink_metadata(self.dir.join(n)) {
                Ok(m) => total += m.len(),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(total)
    }
}

/// Every readable pack and where each chunk is.
#[derive(Debug, Default)]
pub struct Index {
    pub packs: Vec<Pack>,
    /// Packs whose trailer or index is damaged: never read, never deleted by [`gc`].
    pub damaged: Vec<PackDamage>,
    /// Chunk → (pack, entry) of its first copy.
    chunks: HashMap<Hash, (usize, usize)>,
}

impl Index {
    pub fn add(&mut self, p: Pack) {
        let k = self.packs.len();
        for (i, e) in p.entries.iter().enumerate() {
            self.chunks.entry(e.hash).or_insert((k, i));
        }
        self.packs.push(p);
    }

    /// The pack and entry holding `h`.
    pub fn get(&self, h: &Hash) -> Option<(&Pack, &pack::Entry)> {
        self.chunks
            .get(h)
            .map(|&(p, e)| (&self.packs[p], &self.packs[p].entries[e]))
    }

    pub fn contains(&self, h: &Hash) -> bool {
        self.chunks.contains_key(h)
    }

    /// Distinct chunks held.
    pub fn len(&self) -> usize {
        self.chunks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }
}

#[cfg(test)]
pub(crate) mod testdb;
