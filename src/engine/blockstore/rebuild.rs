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
    /// Reading a source (`write` false) or writing a pack or the rebuilt file (`write` true)
    /// failed: the operator hears which, since a full disk and a damaged one call for different
    /// acts.
    Io {
        path: PathBuf,
        source: io::Error,
        write: bool,
    },
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
            Failure::Io { path, source, .. } => write!(f, "`{}`: {source}", path.display()),
        }
    }
}

impl Failure {
    /// Reading `path` failed.
    pub fn io(path: &Path, source: io::Error) -> Failure {
        Failure::Io {
            path: path.to_path_buf(),
            source,
            write: false,
        }
    }

    /// Writing `path` (a pack, the rebuilt file) failed.
    pub fn write(path: &Path, source: io::Error) -> Failure {
        Failure::Io {
            path: path.to_path_buf(),
            source,
            write: true,
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
        // A plain file first: no decompression. A chunk there that fails its hash, or that a
        // file cut short no longer holds, is read from another plain file or a pack that holds
        // it too (an `independent` store packs every chunk for exactly this; the plain file's
        // damage is for its own verification to report), else refused.
        let mut damaged = None;
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
                let why = match p.file.read_exact_at(out, start) {
                    Ok(()) if blockmap::hash(out) == *h => return Ok(Origin::Plain),
                    Ok(()) => format!(
                        "`{}` changed after it was backed up: its bytes {start} to {} no longer have the hash its manifest records",
                        p.path.display(),
                        start + len - 1
                    ),
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => format!(
                        "`{}` was cut short after it was backed up: it ends before its bytes {start} to {}",
                        p.path.display(),
                        start + len - 1
                    ),
                    Err(e) => return Err(Failure::io(&p.path, e)),
                };
                damaged.get_or_insert(Failure::Damaged(why));
            }
        }
        let Some((pack, entry)) = self.index.get(h) else {
            return Err(damaged.unwrap_or(Failure::Missing { index, hash: *h }));
        };
        if u64::from(entry.raw) != len {
            return Err(damaged.unwrap_or_else(|| {
                Failure::Damaged(format!(
                    "chunk {index} is {len} bytes long, but pack `{}` holds it in {} bytes",
                    pack.name, entry.raw
                ))
            }));
        }
        match (pack.read_chunk(entry, frame, out), damaged) {
            (Ok(Ok(())), _) => Ok(Origin::Pack),
            // The plain file's damage is what was asked about; the pack could not stand in.
            (_, Some(d)) => Err(d),
            (Err(e), None) => Err(Failure::io(&pack.path, e)),
            (Ok(Err(d)), None) => Err(Failure::Damaged(d.to_string())),
        }
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
            sink(&buf).map_err(|e| Failure::write(Path::new("the rebuilt file"), e))?;
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
                sink(&buf).map_err(|e| Failure::write(Path::new("the rebuilt file"), e))?;
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

/// Checks that `map` rebuilds from `sources` without writing it anywhere: every chunk read
/// and checked against its hash, on `threads` threads (each takes stripes of 16 chunks). The
/// proof a conversion runs before its plain file may go.
pub fn check(map: &BlockMap, sources: &Sources<'_>, threads: usize) -> Result<Rebuilt, Failure> {
    const STRIPE: usize = 16;
    map.well_formed().map_err(Failure::BadMap)?;
    let threads = threads.max(1);
    let part = |t: usize| -> Result<Rebuilt, Failure> {
        let (mut frame, mut buf) = (Vec::new(), Vec::new());
        let mut done = Rebuilt::default();
        for (i, h) in map.chunks.iter().enumerate() {
            if (i / STRIPE) % threads == t {
                step(map, sources, i, h, &mut frame, &mut buf, &mut done)?;
            }
        }
        Ok(done)
    };
    let parts: Vec<Result<Rebuilt, Failure>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (1..threads).map(|t| scope.spawn(move || part(t))).collect();
        let mut all = vec![part(0)];
        for h in handles {
            all.push(
                h.join()
                    .unwrap_or_else(|_| Err(Failure::Damaged("a checking thread panicked".into()))),
            );
        }
        all
    });
    let mut total = Rebuilt::default();
    for p in parts {
        let p = p?;
        total.bytes += p.bytes;
        total.from_packs += p.from_packs;
        total.from_plain += p.from_plain;
    }
    Ok(total)
}

/// Rebuilds the file `map` describes into `out` (a new, empty file), every chunk checked, then
/// fsyncs it. The SHA-256 is that of the file's bytes as read back after they were written (on
/// a second thread, as the verified copy does), so it vouches for what is on disk, not for what
/// was meant to be written. Writeback starts every 16 MiB, so the final fsync has little left.
pub fn rebuild_to_file(
    map: &BlockMap,
    sources: &Sources<'_>,
    out: &File,
    out_path: &Path,
) -> Result<Rebuilt, Failure> {
    const WRITEBACK_STEP: u64 = 16 << 20;
    map.well_formed().map_err(Failure::BadMap)?;
    let (to_hash, written) = mpsc::sync_channel::<(u64, u64)>(IN_FLIGHT * 4);
    std::thread::scope(|scope| {
        let sha_thread = scope.spawn(move || -> io::Result<[u8; 32]> {
            let mut sha = Sha256::new();
            let mut back = Vec::new();
            for (at, len) in written {
                back.resize(usize::try_from(len).unwrap_or(0), 0);
                out.read_exact_at(&mut back, at)?;
                sha.update(&back);
            }
            Ok(sha.finalize().into())
        });
        let (mut frame, mut buf) = (Vec::new(), Vec::new());
        let mut done = Rebuilt::default();
        let mut flushed = 0u64;
        let result = (|| {
            for (i, h) in map.chunks.iter().enumerate() {
                let at = done.bytes;
                step(map, sources, i, h, &mut frame, &mut buf, &mut done)?;
                out.write_all_at(&buf, at)
                    .map_err(|e| Failure::write(out_path, e))?;
                to_hash
                    .send((at, buf.len() as u64))
                    .map_err(|_| Failure::Damaged("the hashing thread stopped".into()))?;
                if done.bytes - flushed >= WRITEBACK_STEP {
                    files::start_writeback(out, flushed, done.bytes - flushed);
                    flushed = done.bytes;
                }
            }
            Ok(())
        })();
        drop(to_hash);
        let sha = sha_thread
            .join()
            .map_err(|_| Failure::Damaged("the hashing thread panicked".into()))?;
        result?;
        done.sha256 = Some(sha.map_err(|e| Failure::io(out_path, e))?);
        out.sync_all().map_err(|e| Failure::write(out_path, e))?;
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
    crate::progress::advance(len);
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
            true,
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

    /// Into a file: the SHA-256 read back from it is the original's, and the parallel check
    /// agrees with the stream on where the bytes came from.
    #[test]
    fn a_rebuild_into_a_file_hashes_what_it_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = testdb::two_runs(dir.path());
        let (ma, mb) = (testdb::map(&a), testdb::map(&b));
        let packs = Packs::of(dir.path());
        packs.ensure().unwrap();
        let converted = super::super::convert(
            &packs,
            Plain { path: &a, map: &ma },
            &[],
            &[Plain { path: &b, map: &mb }],
            false,
        )
        .unwrap();
        let index = packs.index().unwrap();
        let sources = Sources::new(&index, &[Plain { path: &b, map: &mb }]).unwrap();
        let dest = dir.path().join("rebuilt.duckdb");
        let out = files::create_private(&dest).unwrap();
        let rebuilt = rebuild_to_file(&ma, &sources, &out, &dest).unwrap();
        let want = std::fs::read(&a).unwrap();
        assert!(std::fs::read(&dest).unwrap() == want);
        assert_eq!(
            rebuilt.sha256.unwrap(),
            <[u8; 32]>::from(Sha256::digest(&want))
        );
        assert_eq!(
            (rebuilt.from_packs, rebuilt.from_plain),
            (converted.proof.from_packs, converted.proof.from_plain)
        );
        for threads in [1, 2, 3] {
            let checked = check(&ma, &sources, threads).unwrap();
            assert_eq!(
                (checked.bytes, checked.from_packs),
                (rebuilt.bytes, rebuilt.from_packs),
                "{threads} threads"
            );
        }
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

    /// A plain file's chunk that fails its hash is read from a pack that holds it too (an
    /// `independent` store packs every chunk): the rebuild stays exact.
    #[test]
    fn a_damaged_plain_chunk_is_read_from_a_pack_that_holds_it() {
        let dir = tempfile::tempdir().unwrap();
        let (a, _) = testdb::two_runs(dir.path());
        let ma = testdb::map(&a);
        let want = std::fs::read(&a).unwrap();
        let packs = Packs::of(dir.path());
        packs.ensure().unwrap();
        let index = packs.index().unwrap();
        super::super::secure(
            &packs,
            &index,
            &[&ma],
            &[],
            &[Plain { path: &a, map: &ma }],
            true,
        )
        .unwrap();
        let index = packs.index().unwrap();
        testdb::flip(&a, 300_000);
        let sources = Sources::new(&index, &[Plain { path: &a, map: &ma }]).unwrap();
        let mut out = Vec::new();
        let r = rebuild(&ma, &sources, true, &mut |c| {
            out.extend_from_slice(c);
            Ok(())
        })
        .unwrap();
        assert!(
            out == want,
            "the rebuild is the original, not the damaged file"
        );
        assert_eq!(r.sha256.unwrap(), <[u8; 32]>::from(Sha256::digest(&want)));
        assert!(r.from_packs > 0, "{r:?}");
    }
}
