//! A pack: chunks compressed one zstd frame each, then an index of them in a trailer, so that
//! the store's whole index is rebuilt from the packs alone (as restic's packs are).
//!
//! ```text
//! "DSPACK\0\x01"                                 8 bytes
//! frame 0, frame 1, …                            one zstd frame (level 3) per chunk
//! index: per chunk                               48 bytes each
//!   BLAKE3 of the raw chunk (32) · offset of its frame (u64) · frame length (u32) · raw length (u32)
//! trailer                                        56 bytes
//!   offset of the index (u64) · entries (u64) · BLAKE3 of the index (32) · "DSPKEND\x01"
//! ```
//! All integers little-endian. A pack's file name is the SHA-256 of its whole content
//! (`<64 hex>.pack`): `verify` recomputes it, and identical packs are one file.
//!
//! Invariants:
//! - A pack appears under its name only by a no-replace rename of a complete, fsynced temporary
//!   file, followed by an fsync of the folder: a pack that has a name is durable and whole.
//! - A chunk is handed out only after its frame decompressed to exactly its raw length and the
//!   result has the index's BLAKE3: a damaged pack gives an error, never other bytes.
//! - Opening a pack checks its trailer and its index's hash; the content is checked chunk by
//!   chunk as it is read, and whole by [`Pack::verify`].

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::blockmap::{self, Hash};
use crate::files;

const MAGIC: &[u8; 8] = b"DSPACK\0\x01";
const END_MAGIC: &[u8; 8] = b"DSPKEND\x01";
const ENTRY: usize = 48;
const TRAILER: usize = 56;
/// zstd's level for new frames: per-chunk frames at level 3 compressed the append workload's
/// packs to 1.117× the newest file in all, level 19 to 1.103× at 60 times the CPU
/// (docs/performance.md).
pub const LEVEL: i32 = 3;
/// No chunk is larger (DuckDB's blocks are at most 256 KiB; the header chunk is 12 KiB).
pub const MAX_CHUNK: u32 = 4 << 20;
/// File-name suffix of a pack.
pub const EXT: &str = ".pack";

/// One chunk in a pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub hash: Hash,
    /// Offset of its frame in the pack.
    pub offset: u64,
    /// Length of its frame.
    pub stored: u32,
    /// Length of the chunk.
    pub raw: u32,
}

/// What is wrong with a pack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackDamage {
    pub pack: String,
    pub why: String,
}

impl std::fmt::Display for PackDamage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "pack `{}` {}", self.pack, self.why)
    }
}

/// Whether `name` is a pack's file name (`<64 lower-case hex>.pack`).
pub fn is_pack_name(name: &str) -> bool {
    name.strip_suffix(EXT).is_some_and(|h| {
        h.len() == 64
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// An open pack, its index read and checked.
#[derive(Debug)]
pub struct Pack {
    /// The file name.
    pub name: String,
    pub path: PathBuf,
    pub file: File,
    pub bytes: u64,
    pub entries: Vec<Entry>,
}

fn le_u64(b: &[u8]) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[..8]);
    u64::from_le_bytes(w)
}

fn le_u32(b: &[u8]) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[..4]);
    u32::from_le_bytes(w)
}

impl Pack {
    /// Opens the pack at `path` and reads its index (`Ok(Err(_))`: the pack is damaged).
    pub fn open(path: &Path) -> io::Result<Result<Pack, PackDamage>> {
        let name = path
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        let damage = |why: String| {
            Ok(Err(PackDamage {
                pack: name.clone(),
                why,
            }))
        };
        let file = files::open_read_nofollow(path)?;
        let bytes = file.metadata()?.len();
        if bytes < (MAGIC.len() + TRAILER) as u64 {
            return damage(format!("is {bytes} bytes long, too short for a pack"));
        }
        let mut head = [0u8; 8];
        file.read_exact_at(&mut head, 0)?;
        let mut trailer = [0u8; TRAILER];
        file.read_exact_at(&mut trailer, bytes - TRAILER as u64)?;
        if &head != MAGIC || &trailer[48..] != END_MAGIC {
            return damage("does not start and end like a pack".into());
        }
        let (index_at, count) = (le_u64(&trailer), le_u64(&trailer[8..]));
        let index_len = count.checked_mul(ENTRY as u64);
        if index_len.and_then(|l| l.checked_add(index_at)) != Some(bytes - TRAILER as u64)
            || index_at < MAGIC.len() as u64
        {
            return damage(format!(
                "has a trailer that does not fit the file ({count} entries from byte {index_at})"
            ));
        }
        let mut index = vec![0u8; usize::try_from(count).unwrap_or(0) * ENTRY];
        file.read_exact_at(&mut index, index_at)?;
        if blockmap::hash(&index)[..] != trailer[16..48] {
            return damage("has an index that does not match its hash".into());
        }
        let mut entries = Vec::with_capacity(index.len() / ENTRY);
        for e in index.chunks_exact(ENTRY) {
            let mut hash = [0u8; 32];
            hash.copy_from_slice(&e[..32]);
            let entry = Entry {
                hash,
                offset: le_u64(&e[32..]),
                stored: le_u32(&e[40..]),
                raw: le_u32(&e[44..]),
            };
            if entry.offset < MAGIC.len() as u64
                || entry.offset + u64::from(entry.stored) > index_at
                || entry.raw > MAX_CHUNK
            {
                return damage(format!(
                    "lists a chunk outside its frames (at byte {})",
                    entry.offset
                ));
            }
            entries.push(entry);
        }
        Ok(Ok(Pack {
            name,
            path: path.to_path_buf(),
            file,
            bytes,
            entries,
        }))
    }

    /// The frame of `entry` as stored.
    pub fn read_frame(&self, entry: &Entry, frame: &mut Vec<u8>) -> io::Result<()> {
        frame.resize(entry.stored as usize, 0);
        self.file.read_exact_at(frame, entry.offset)
    }

    /// Reads chunk `entry` into `out` (resized to its raw length), checked: `Ok(Err(_))` when
    /// the frame does not decompress to a chunk with the index's hash.
    pub fn read_chunk(
        &self,
        entry: &Entry,
        frame: &mut Vec<u8>,
        out: &mut Vec<u8>,
    ) -> io::Result<Result<(), PackDamage>> {
        self.read_frame(entry, frame)?;
        Ok(self.decode(entry, frame, out))
    }

    /// Decompresses `frame` into `out` and checks it against `entry`.
    fn decode(&self, entry: &Entry, frame: &[u8], out: &mut Vec<u8>) -> Result<(), PackDamage> {
        let damage = |why: String| PackDamage {
            pack: self.name.clone(),
            why,
        };
        out.resize(entry.raw as usize, 0);
        match zstd::bulk::decompress_to_buffer(frame, out.as_mut_slice()) {
            Ok(n) if n == entry.raw as usize => {}
            Ok(n) => {
                return Err(damage(format!(
                    "holds a chunk at byte {} that decompresses to {n} bytes, not {}",
                    entry.offset, entry.raw
                )))
            }
            Err(e) => {
                return Err(damage(format!(
                    "holds a chunk at byte {} that does not decompress: {e}",
                    entry.offset
                )))
            }
        }
        if blockmap::hash(out) != entry.hash {
            return Err(damage(format!(
                "holds a chunk at byte {} whose content does not match its hash",
                entry.offset
            )));
        }
        Ok(())
    }

    /// Checks the whole pack: its SHA-256 is its name, and every chunk decompresses to its
    /// hash.
    pub fn verify(&self) -> io::Result<Result<(), PackDamage>> {
        let damage = |why: String| PackDamage {
            pack: self.name.clone(),
            why,
        };
        let whole = files::hash_file(&self.path)?;
        if format!("{}{EXT}", files::hex(&whole.sha256)) != self.name {
            return Ok(Err(damage(
                "does not have the SHA-256 its name records: its bytes changed after it was written"
                    .into(),
            )));
        }
        let (mut frame, mut out) = (Vec::new(), Vec::new());
        for e in &self.entries {
            if let Err(d) = self.read_chunk(e, &mut frame, &mut out)? {
                return Ok(Err(d));
            }
        }
        Ok(Ok(()))
    }
}

/// Compresses chunks into frames on up to `threads` threads, in order.
pub fn compress(chunks: &[Vec<u8>], threads: usize) -> io::Result<Vec<Vec<u8>>> {
    let per = chunks.len().div_ceil(threads.max(1)).max(1);
    std::thread::scope(|scope| {
        let parts: Vec<_> = chunks
            .chunks(per)
            .map(|part| {
                scope.spawn(move || -> io::Result<Vec<Vec<u8>>> {
                    let mut c = zstd::bulk::Compressor::new(LEVEL)?;
                    part.iter().map(|raw| c.compress(raw)).collect()
                })
            })
            .collect();
        let mut out = Vec::with_capacity(chunks.len());
        for p in parts {
            out.extend(
                p.join()
                    .map_err(|_| io::Error::other("a compressing thread panicked"))??,
            );
        }
        Ok(out)
    })
}

/// A pack being written under a temporary name in the packs folder.
pub struct PackWriter {
    dir: PathBuf,
    temp: PathBuf,
    file: File,
    sha: Sha256,
    offset: u64,
    entries: Vec<Entry>,
    compressor: zstd::bulk::Compressor<'static>,
    /// False once published (the temporary name is gone).
    armed: bool,
}

/// A pack that was published.
#[derive(Debug, Clone)]
pub struct Published {
    pub name: String,
    pub path: PathBuf,
    pub bytes: u64,
    pub entries: Vec<Entry>,
}

impl PackWriter {
    /// Starts a pack in the folder `dir`.
    pub fn create(dir: &Path) -> io::Result<PackWriter> {
        let temp = files::temp_sibling(&dir.join("new.pack"), "pack");
        let mut file = files::create_private(&temp)?;
        let mut w = PackWriter {
            dir: dir.to_path_buf(),
            temp,
            file: file.try_clone()?,
            sha: Sha256::new(),
            offset: 0,
            entries: Vec::new(),
            compressor: zstd::bulk::Compressor::new(LEVEL)?,
            armed: true,
        };
        file.write_all(MAGIC)?;
        w.sha.update(MAGIC);
        w.offset = MAGIC.len() as u64;
        Ok(w)
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Compresses and appends a chunk whose hash is `hash` (the caller checked it).
    pub fn add(&mut self, hash: Hash, raw: &[u8]) -> io::Result<()> {
        let frame = self.compressor.compress(raw)?;
        self.append(hash, &frame, raw.len())
    }

    /// Appends a chunk compressed elsewhere (with [`compress`]) from `raw` bytes whose hash is
    /// `hash`.
    pub fn add_compressed(&mut self, hash: Hash, frame: &[u8], raw: usize) -> io::Result<()> {
        self.append(hash, frame, raw)
    }

    /// Appends a frame as it is stored in another pack (repacking: the frame was checked by
    /// decompressing it to its hash).
    pub fn add_frame(&mut self, entry: &Entry, frame: &[u8]) -> io::Result<()> {
        self.append(entry.hash, frame, entry.raw as usize)
    }

    fn append(&mut self, hash: Hash, frame: &[u8], raw: usize) -> io::Result<()> {
        let too_big = || io::Error::other("a chunk or frame too large for a pack");
        let raw = u32::try_from(raw).map_err(|_| too_big())?;
        let stored = u32::try_from(frame.len()).map_err(|_| too_big())?;
        if raw > MAX_CHUNK {
            return Err(too_big());
        }
        self.file.write_all(frame)?;
        self.sha.update(frame);
        self.entries.push(Entry {
            hash,
            offset: self.offset,
            stored,
            raw,
        });
        self.offset += u64::from(stored);
        Ok(())
    }

    /// Writes the index and trailer, fsyncs, and publishes the pack under its SHA-256 (temporary
    /// name → no-replace rename → folder fsync). An identical pack already there is kept.
    pub fn finish(mut self) -> io::Result<Published> {
        let mut index = Vec::with_capacity(self.entries.len() * ENTRY);
        for e in &self.entries {
            index.extend_from_slice(&e.hash);
            index.extend_from_slice(&e.offset.to_le_bytes());
            index.extend_from_slice(&e.stored.to_le_bytes());
            index.extend_from_slice(&e.raw.to_le_bytes());
        }
        let mut trailer = Vec::with_capacity(TRAILER);
        trailer.extend_from_slice(&self.offset.to_le_bytes());
        trailer.extend_from_slice(&(self.entries.len() as u64).to_le_bytes());
        trailer.extend_from_slice(&blockmap::hash(&index));
        trailer.extend_from_slice(END_MAGIC);
        for part in [&index, &trailer] {
            self.file.write_all(part)?;
            self.sha.update(part);
        }
        self.file.sync_all()?;
        crate::failpoint::hit("pack.synced");
        let name = format!("{}{EXT}", files::hex(&self.sha.clone().finalize()));
        let path = self.dir.join(&name);
        match files::rename_noreplace(&self.temp, &path) {
            Ok(()) => {}
            // The same content under the same name: it is that pack already.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                std::fs::remove_file(&self.temp)?;
            }
            Err(e) => return Err(e),
        }
        self.armed = false;
        files::sync_dir(&self.dir)?;
        crate::failpoint::hit("pack.published");
        let bytes = self.offset + (index.len() + TRAILER) as u64;
        Ok(Published {
            name,
            path,
            bytes,
            entries: std::mem::take(&mut self.entries),
        })
    }
}

impl Drop for PackWriter {
    fn drop(&mut self) {
        if self.armed {
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(seed: u8, len: usize) -> Vec<u8> {
        #[allow(clippy::cast_possible_truncation)]
        (0..len)
            .map(|i| seed.wrapping_add((i * 7 / 5) as u8))
            .collect()
    }

    #[test]
    fn a_pack_is_named_by_its_sha256_and_gives_back_every_chunk() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = PackWriter::create(dir.path()).unwrap();
        let chunks: Vec<Vec<u8>> = (0..5u8)
            .map(|s| chunk(s, 1000 + 50_000 * usize::from(s)))
            .collect();
        for c in &chunks {
            w.add(blockmap::hash(c), c).unwrap();
        }
        let p = w.finish().unwrap();
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, vec![p.name.clone()], "no temporary file is left");
        assert!(is_pack_name(&p.name));
        let pack = Pack::open(&p.path).unwrap().unwrap();
        assert_eq!(pack.entries, p.entries);
        assert_eq!(pack.bytes, p.bytes);
        assert!(pack.verify().unwrap().is_ok());
        let (mut f, mut out) = (Vec::new(), Vec::new());
        for (e, c) in pack.entries.iter().zip(&chunks) {
            pack.read_chunk(e, &mut f, &mut out).unwrap().unwrap();
            assert!(&out == c);
        }
    }

    /// Every byte of a pack is covered: a flipped byte anywhere is found by `verify`, and a
    /// chunk read from a damaged pack is never other bytes than its own.
    #[test]
    fn a_flipped_byte_anywhere_in_a_pack_is_found_and_never_read_as_a_chunk() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = PackWriter::create(dir.path()).unwrap();
        let chunks: Vec<Vec<u8>> = (0..3u8).map(|s| chunk(s, 3000)).collect();
        for c in &chunks {
            w.add(blockmap::hash(c), c).unwrap();
        }
        let p = w.finish().unwrap();
        let good = std::fs::read(&p.path).unwrap();
        for at in 0..good.len() {
            let mut bad = good.clone();
            bad[at] ^= 0x10;
            std::fs::write(&p.path, &bad).unwrap();
            match Pack::open(&p.path).unwrap() {
                Err(_) => {}
                Ok(pack) => {
                    assert!(pack.verify().unwrap().is_err(), "byte {at}");
                    let (mut f, mut out) = (Vec::new(), Vec::new());
                    for e in &pack.entries {
                        if pack.read_chunk(e, &mut f, &mut out).unwrap().is_ok() {
                            assert!(chunks.iter().any(|c| c == &out), "byte {at}");
                            assert_eq!(blockmap::hash(&out), e.hash);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn an_abandoned_writer_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = PackWriter::create(dir.path()).unwrap();
        w.add([0; 32], b"x").unwrap();
        drop(w);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
