//! A database file as an ordered list of chunks, each named by its BLAKE3 hash: the block map
//! that lets a backup be rebuilt from chunks held elsewhere.
//!
//! Chunk boundaries follow DuckDB's layout (see [`crate::engine::integrity`]): chunk 0 is the
//! three 4 KiB headers (bytes 0 to 12,287), chunk *i* ≥ 1 is block *i* − 1 (`block_size` bytes
//! from `12288 + (i − 1) × block_size`), and the last chunk is whatever remains, however short.
//! Boundaries are a pure function of the file's length and block size, so a map covers every
//! byte of the file exactly once, in order; identical blocks at different offsets get the same
//! name, which is what lets a rebuilt table's blocks be found wherever they landed.
//!
//! Invariants:
//! - A map is computed from the bytes the copy itself read ([`Chunker`] is fed by the copy's
//!   inspection callback), never from a second read of a file.
//! - A rebuilt file whose every chunk has the map's hash and whose length is the map's is the
//!   file the map was computed from (BLAKE3 is collision resistant); restore and verify also
//!   check the whole file's SHA-256.

use std::collections::HashMap;
use std::io;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The bytes of DuckDB's three headers: the first chunk.
pub const HEADER_CHUNK: u64 = crate::engine::integrity::BLOCKS_START;
/// The only block size the block store takes: DuckDB's default. Other sizes are backed up as
/// full copies.
pub const SUPPORTED_BLOCK_SIZE: u64 = 262_144;
/// Name of the chunk hash, recorded in every map.
pub const HASH_NAME: &str = "blake3";

/// A chunk's name: its BLAKE3 hash.
pub type Hash = [u8; 32];

/// The BLAKE3 hash of a chunk's bytes.
pub fn hash(bytes: &[u8]) -> Hash {
    *blake3::hash(bytes).as_bytes()
}

/// A backup file as an ordered list of chunk hashes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct BlockMap {
    /// The chunk hash: `blake3`.
    pub hash: String,
    /// DuckDB's block size in the file.
    pub block_size: u64,
    /// The file's length.
    pub bytes: u64,
    /// The chunks' hashes in file order, as one lower-case hex string (64 characters each).
    #[serde(with = "hex_hashes")]
    #[schemars(with = "String")]
    pub chunks: Vec<Hash>,
}

impl BlockMap {
    /// How many chunks a file of `bytes` bytes has.
    pub fn chunk_count(bytes: u64, block_size: u64) -> usize {
        if bytes == 0 {
            return 0;
        }
        let rest = bytes.saturating_sub(HEADER_CHUNK);
        usize::try_from(1 + rest.div_ceil(block_size)).unwrap_or(usize::MAX)
    }

    /// Offset and length of chunk `i`.
    pub fn range(&self, i: usize) -> (u64, u64) {
        chunk_range(self.bytes, self.block_size, i)
    }

    /// True when the map is one this version can rebuild from: its hash, its block size, and
    /// as many chunks as its length needs.
    pub fn well_formed(&self) -> Result<(), String> {
        if self.hash != HASH_NAME {
            return Err(format!("its chunk hash `{}` is not {HASH_NAME}", self.hash));
        }
        if self.block_size != SUPPORTED_BLOCK_SIZE {
            return Err(format!(
                "its block size {} is not {SUPPORTED_BLOCK_SIZE}",
                self.block_size
            ));
        }
        let want = Self::chunk_count(self.bytes, self.block_size);
        if self.chunks.len() != want {
            return Err(format!(
                "it lists {} chunks where a file of {} bytes has {want}",
                self.chunks.len(),
                self.bytes
            ));
        }
        Ok(())
    }

    /// Where each chunk first occurs in the file (chunk hash → chunk index).
    pub fn positions(&self) -> HashMap<Hash, usize> {
        let mut m = HashMap::with_capacity(self.chunks.len());
        for (i, h) in self.chunks.iter().enumerate() {
            m.entry(*h).or_insert(i);
        }
        m
    }

    /// The map of a whole file read from `read` (tests, and files no copy read).
    pub fn of_reader(read: &mut impl io::Read, block_size: u64) -> io::Result<BlockMap> {
        let mut c = Chunker::new(block_size);
        let mut buf = vec![0u8; 1 << 20];
        loop {
            match read.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => c.feed(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(c.finish())
    }
}

/// Offset and length of chunk `i` of a file of `bytes` bytes.
fn chunk_range(bytes: u64, block_size: u64, i: usize) -> (u64, u64) {
    let (start, len) = if i == 0 {
        (0, HEADER_CHUNK)
    } else {
        (HEADER_CHUNK + (i as u64 - 1) * block_size, block_size)
    };
    (start, len.min(bytes.saturating_sub(start)))
}

/// Computes a [`BlockMap`] from a file's bytes fed in order, in pieces of any length.
#[derive(Debug)]
pub struct Chunker {
    block_size: u64,
    /// Bytes fed so far.
    pos: u64,
    /// Where the current chunk ends.
    end: u64,
    current: blake3::Hasher,
    chunks: Vec<Hash>,
}

impl Chunker {
    pub fn new(block_size: u64) -> Chunker {
        Chunker {
            block_size,
            pos: 0,
            end: HEADER_CHUNK,
            current: blake3::Hasher::new(),
            chunks: Vec::new(),
        }
    }

    /// Feeds the next bytes of the file.
    pub fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let room = usize::try_from(self.end - self.pos).unwrap_or(usize::MAX);
            let take = room.min(bytes.len());
            self.current.update(&bytes[..take]);
            self.pos += take as u64;
            bytes = &bytes[take..];
            if self.pos == self.end {
                self.chunks.push(*self.current.finalize().as_bytes());
                self.current.reset();
                self.end += self.block_size;
            }
        }
    }

    /// The map of everything fed.
    pub fn finish(mut self) -> BlockMap {
        let start = self.end
            - if self.chunks.is_empty() {
                HEADER_CHUNK
            } else {
                self.block_size
            };
        if self.pos > start {
            self.chunks.push(*self.current.finalize().as_bytes());
        }
        BlockMap {
            hash: HASH_NAME.to_owned(),
            block_size: self.block_size,
            bytes: self.pos,
            chunks: self.chunks,
        }
    }
}

/// Why a database is backed up as full copies rather than into the block store, if it is.
pub fn ineligible(readable: &crate::engine::integrity::Readable) -> Option<String> {
    use crate::engine::integrity::Readable;
    match readable {
        Readable::Encrypted => Some(
            "the database is encrypted: its blocks cannot be told apart without the key".into(),
        ),
        Readable::Layout(l) if l.block_size != SUPPORTED_BLOCK_SIZE => Some(format!(
            "the database's block size is {} bytes, not DuckDB's default {SUPPORTED_BLOCK_SIZE}",
            l.block_size
        )),
        Readable::Layout(_) => None,
    }
}

/// Hashes as one hex string in JSON.
mod hex_hashes {
    use super::Hash;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[Hash], s: S) -> Result<S::Ok, S::Error> {
        let mut out = String::with_capacity(v.len() * 64);
        for h in v {
            out.push_str(&crate::files::hex(h));
        }
        s.serialize_str(&out)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Hash>, D::Error> {
        let s = String::deserialize(d)?;
        parse(&s).map_err(serde::de::Error::custom)
    }

    pub fn parse(s: &str) -> Result<Vec<Hash>, String> {
        let b = s.as_bytes();
        if !b.len().is_multiple_of(64) {
            return Err(format!(
                "chunk hashes: {} hex digits is no whole number of hashes",
                b.len()
            ));
        }
        let digit = |c: u8| match c {
            b'0'..=b'9' => Ok(c - b'0'),
            b'a'..=b'f' => Ok(c - b'a' + 10),
            _ => Err(format!(
                "chunk hashes: `{}` is no lower-case hex digit",
                c as char
            )),
        };
        b.chunks_exact(64)
            .map(|h| {
                let mut out = [0u8; 32];
                for (i, pair) in h.chunks_exact(2).enumerate() {
                    out[i] = digit(pair[0])? << 4 | digit(pair[1])?;
                }
                Ok(out)
            })
            .collect()
    }
}

/// Parses a hex string of hashes (pack indexes in text, tests).
pub fn parse_hashes(s: &str) -> Result<Vec<Hash>, String> {
    hex_hashes::parse(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map_of(data: &[u8], block_size: u64, piece: usize) -> BlockMap {
        let mut c = Chunker::new(block_size);
        for p in data.chunks(piece.max(1)) {
            c.feed(p);
        }
        c.finish()
    }

    /// Chunks cover every byte once, in order, whatever the length and the piece size: the
    /// concatenation of the ranges is the file, and each hash is that of its range.
    #[test]
    fn chunks_cover_every_byte_once_for_any_length_and_piece() {
        let bs = 16_384u64;
        for len in [
            0usize,
            1,
            12_287,
            12_288,
            12_289,
            12_288 + 16_384,
            12_288 + 16_384 + 1,
            12_288 + 5 * 16_384 - 3,
        ] {
            #[allow(clippy::cast_possible_truncation)]
            let data: Vec<u8> = (0..len).map(|i| (i * 131 % 251) as u8).collect();
            for piece in [1, 7, 4096, 1 << 20] {
                let m = map_of(&data, bs, piece);
                assert_eq!(m.bytes, len as u64);
                assert_eq!(
                    m.chunks.len(),
                    BlockMap::chunk_count(len as u64, bs),
                    "{len}"
                );
                let mut rebuilt = Vec::new();
                for (i, h) in m.chunks.iter().enumerate() {
                    let (s, l) = m.range(i);
                    let part = &data[usize::try_from(s).unwrap()..usize::try_from(s + l).unwrap()];
                    assert_eq!(&hash(part), h, "{len} bytes, piece {piece}, chunk {i}");
                    rebuilt.extend_from_slice(part);
                }
                assert!(rebuilt == data, "{len} bytes, piece {piece}");
            }
        }
    }

    #[test]
    fn identical_blocks_at_other_offsets_have_one_name() {
        let bs = 16_384usize;
        let mut data = vec![0u8; 12_288 + 4 * bs];
        for (i, b) in data.iter_mut().enumerate().skip(12_288) {
            #[allow(clippy::cast_possible_truncation)]
            {
                *b = ((i - 12_288) % bs * 7 % 251) as u8;
            }
        }
        let m = map_of(&data, bs as u64, 1000);
        assert_eq!(m.chunks[1], m.chunks[4]);
        assert_eq!(m.positions()[&m.chunks[4]], 1);
    }

    #[test]
    fn the_map_round_trips_through_json_and_refuses_bad_hex() {
        let m = map_of(&vec![9u8; 40_000], SUPPORTED_BLOCK_SIZE, 333);
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(serde_json::from_str::<BlockMap>(&json).unwrap(), m);
        assert!(m.well_formed().is_ok());
        let bad = json.replacen(&crate::files::hex(&m.chunks[0])[..2], "zz", 1);
        assert!(serde_json::from_str::<BlockMap>(&bad).is_err());
        let mut short = m.clone();
        short.chunks.pop();
        assert!(short.well_formed().unwrap_err().contains("chunks"));
    }
}
