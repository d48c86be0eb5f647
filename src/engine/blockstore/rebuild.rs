//! A backup rebuilt as a stream, chunk by chunk in file order, from the packs and the plain
//! files that hold its chunks.
//!
//! Invariants:
//! - Every chunk handed to the sink has the map's hash and the map's length for its place,
//!   wherever it was read from (a plain file included: a newest file changed after it was
//!   backed up is caught here, not trusted).
//! - With `sha256`, the whole stream's SHA-256 is computed on a second thread beside the
//!   rebuild, and the caller compares it with the manifest's.
//! - Memory stays flat: a few chunk-sized buffers, whatever the file's size.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use sha2::{Digest, Sha256};

use super::blockmap::{self, BlockMap, Hash};
use super::Index;
use crate::files;

/// A plain backup file and its map.
#[derive(Debug, Clone, Copy)]
pub struct Plain<'a> {
    pub path: &'a Path,
    pub map: &'a BlockMap,
}

/// Why a rebuild (or packing) stopped.
#[derive(Debug)]
pub enum Failure {
    /// No pack and no plain file holds chunk `index` (a hash the map lists).
    Missing { index: usize, hash: Hash },
    /// A chunk was found, but what was read is not it.
    Damaged(String),
    /// The map itself cannot be rebuilt from (another hash, block size or chunk count).
    BadMap(String),
    /// Reading a source or writing the sink failed.
    Io { path: PathBuf, source: io::Error },
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Missing { index, hash } => write!(
                f,
                "chunk {index} ({}) is in no pack and no plain backup",
                &files::hex(hash)[..16]
            ),
            Failure::Damaged(why) => f.write_str(why),
            Failure::BadMap(why) => write!(f, "the block map cannot be used: {why}"),
            Failure::Io { path, source } => write!(f, "`{}`: {source}", path.display()),
        }
    }
}

impl Failure {
    fn io(path: &Path, source: io::Error) -> Failure {
        Failure::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// A plain file open for reading chunks, with where each of its chunks is.
#[derive(Debug)]
struct Source {
    path: PathBuf,
    file: File,
    map: BlockMap,
    positions: HashMap<Hash, usize>,
}

/// Where chunks come from: the packs, then plain files.
#[derive(Debug)]
pub struct Sources<'a> {
    index: &'a Index,
    plains: Vec<Source>,
}

impl<'a> Sources<'a> {
    /// The packs of `index` and the plain files `plains` (opened here).
    pub fn new(index: &'a Index, plains: &[Plain<'_>]) -> Result<Sources<'a>, Failure> {
        let mut out = Vec::with_capacity(plains.len());
        for p in plains {
            let file = files::open_read_nofollow(p.path).map_err(|e| Failure::io(p.path, e))?;
            out.push(Source {
                path: p.path.to_path_buf(),
                file,
                map: p.map.clone(),
                positions: p.map.positions(),
            });
        }
        Ok(Sources { index, plains: out })
    }

    /// True when a pack or a plain file holds `h`.
    pub fn holds(&self, h: &Hash) -> bool {
        self.index.contains(h) || self.plains.iter().any(|p| p.positions.contains_key(h))
    }

    /// Reads chunk `h` (the `index`-th of a map, `len` bytes long) into `out`, checked.
    fn fetch(
        &self,
        index: usize,
        h: &Hash,
        len: u64,
        frame: &mut Vec<u8>,
        out: &mut Vec<u8>,
    ) -> Result<Origin, Failure> {
        // A plain file first: no decompression.
        for p in &self.plains {
            if let Some(&at) = p.positions.get(h) {
                let (start, plen) = p.map.range(at);
                if plen != len {
                    return Err(Failure::Damaged(format!(
                        "chunk {index} is {len} bytes long, but `{}` holds it in {plen} bytes",
                        p.path.display()
                    )));
                }
                out.resize(usize::try_from(len).unwrap_or(0), 0);
                p.file
                    .read_exact_at(out, start)
                    .map_err(|e| Failure::io(&p.path, e))?;
                if blockmap::hash(out) != *h {
                    return Err(Failure::Damaged(format!(
                        "`{}` changed after it was backed up: its bytes {start} to {} no longer have the hash its manifest records",
                        p.path.display(),
                        start + len - 1
                    )));
                }
                return Ok(Origin::Plain);
            }
        }
        let Some((pack, entry)) = self.index.get(h) else {
            return Err(Failure::Missing { index, hash: *h });
        };
        if u64::from(entry.raw) != len {
            return Err(Failure::Damaged(format!(
                "chunk {index} is {len} bytes long, but pack `{}` holds it in {} bytes",
                pack.name, entry.raw
            )));
        }
        pack.read_chunk(entry, frame, out)
            .map_err(|e| Failure::io(&pack.path, e))?
            .map_err(|d| Failure::Damaged(d.to_string()))?;
        Ok(Origin::Pack)
    }
}

enum Origin {
    Pack,
    Plain,
}

/// What a rebuild read and produced.
#[derive(Debug, Clone, Copy, Default)]
pub struct Rebuilt {
    pub bytes: u64,
    /// SHA-256 of the stream, when asked for.
    pub sha256: Option<[u8; 32]>,
    /// Bytes that came from packs, and from plain files.
    pub from_packs: u64,
    pub from_plain: u64,
}

/// Chunk buffers between the rebuild and its hashing thread.
const IN_FLIGHT: usize = 4;

/// Rebuilds the file `map` describes from `sources`, handing each checked chunk to `sink` in
/// order; with `sha256`, also hashes the whole stream (on another thread).
pub fn rebuild(
    map: &BlockMap,
    sources: &Sources<'_>,
    sha256: bool,
    sink: &mut dyn FnMut(&[u8]) -> io::Result<()>,
) -> Result<Rebuilt, Failure> {
    map.well_formed().map_err(Failure::BadMap)?;
    if !sha256 {
        let (mut frame, mut buf) = (Vec::new(), Vec::new());
        let mut done = Rebuilt::default();
        for (i, h) in map.chunks.iter().enumerate() {
            step(map, sources, i, h, &mut frame, &mut buf, &mut done)?;
            sink(&buf).map_err(|e| Failure::io(Path::new("the rebuilt file"), e))?;
        }
        return Ok(done);
    }
    // Buffers go to the hashing thread and come back to be refilled: at most `IN_FLIGHT`.
    let (to_hash, hashed) = mpsc::sync_channel::<Vec<u8>>(IN_FLIGHT);
    let (give_back, take_back) = mpsc::channel::<Vec<u8>>();
    std::thread::scope(|scope| {
        let sha_thread = scope.spawn(move || {
            let mut sha = Sha256::new();
            for b in hashed {
                sha.update(&b);
                let _ = give_back.send(b);
            }
            <[u8; 32]>::from(sha.finalize())
        });
        let mut frame = Vec::new();
        let mut done = Rebuilt::default();
        let result = (|| {
            for (i, h) in map.chunks.iter().enumerate() {
                let mut buf = take_back.try_recv().unwrap_or_default();
                step(map, sources, i, h, &mut frame, &mut buf, &mut done)?;
                sink(&buf).map_err(|e| Failure::io(Path::new("the rebuilt file"), e))?;
                to_hash
                    .send(buf)
                    .map_err(|_| Failure::Damaged("the hashing thread stopped".into()))?;
            }
            Ok(())
        })();
        drop(to_hash);
        let sha = sha_thread
            .join()
            .map_err(|_| Failure::Damaged("the hashing thread panicked".into()))?;
        result?;
        done.sha256 = Some(sha);
        Ok(done)
    })
}

fn step(
    map: &BlockMap,
    sources: &Sources<'_>,
    i: usize,
    h: &Hash,
    frame: &mut Vec<u8>,
    buf: &mut Vec<u8>,
    done: &mut Rebuilt,
) -> Result<(), Failure> {
    let (_, len) = map.range(i);
    match sources.fetch(i, h, len, frame, buf)? {
        Origin::Pack => done.from_packs += len,
        Origin::Plain => done.from_plain += len,
    }
    done.bytes += len;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::{testdb, Packs};
    use super::*;

    #[test]
    fn a_file_rebuilds_from_a_plain_file_and_packs_with_its_sha256() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = testdb::two_runs(dir.path());
        let (ma, mb) = (testdb::map(&a), testdb::map(&b));
        let packs = Packs::of(dir.path());
        packs.ensure().unwrap();
        let index = packs.index().unwrap();
        // Everything of `a` that `b` lacks goes into a pack; the rest comes from `b`.
        super::super::secure(
            &packs,
            &index,
            &[&ma],
            &[Plain { path: &b, map: &mb }],
            &[Plain { path: &a, map: &ma }],
        )
        .unwrap();
        let index = packs.index().unwrap();
        let sources = Sources::new(&index, &[Plain { path: &b, map: &mb }]).unwrap();
        let mut out = Vec::new();
        let r = rebuild(&ma, &sources, true, &mut |c| {
            out.extend_from_slice(c);
            Ok(())
        })
        .unwrap();
        let want = std::fs::read(&a).unwrap();
        assert!(out == want);
        assert_eq!(r.sha256.unwrap(), <[u8; 32]>::from(Sha256::digest(&want)));
        assert!(r.from_packs > 0 && r.from_plain > r.from_packs, "{r:?}");
        assert_eq!(r.bytes, want.len() as u64);
    }

    #[test]
    fn a_changed_plain_file_or_a_missing_chunk_stops_the_rebuild() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = testdb::two_runs(dir.path());
        let (ma, mb) = (testdb::map(&a), testdb::map(&b));
        let index = Index::default();
        // Nothing holds `a`'s own chunks.
        let sources = Sources::new(&index, &[Plain { path: &b, map: &mb }]).unwrap();
        let err = rebuild(&ma, &sources, false, &mut |_| Ok(())).unwrap_err();
        assert!(matches!(err, Failure::Missing { .. }), "{err}");
        // `a` from itself, after a byte of it changed.
        let sources = Sources::new(&index, &[Plain { path: &a, map: &ma }]).unwrap();
        testdb::flip(&a, 300_000);
        let err = rebuild(&ma, &sources, true, &mut |_| Ok(())).unwrap_err();
        assert!(
            err.to_string().contains("changed after it was backed up"),
            "{err}"
        );
    }
}
