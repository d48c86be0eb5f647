//! DuckDB's own block checksums, checked natively while the copy reads every byte: a damaged
//! database is refused at every verification level, before anything is published or rotated.
//!
//! The file, as DuckDB 2.0 writes it (`src/storage/single_file_block_manager.cpp`):
//! - three 4 KiB headers: the main header at 0, two database headers at 4096 and 8192 (the one
//!   with the higher `iteration` is active: a checkpoint writes the other one);
//! - then block *i* at `12288 + i × block_alloc_size` (262,144 by default; the active header
//!   records the size), for *i* below the header's `block_count`;
//! - every header and block starts with an 8-byte little-endian checksum of the rest of it:
//!   `5381 XOR (w × 0xbf58476d1ce4e5b9)` over its 8-byte words (`src/common/checksum.cpp`);
//! - the blocks that are free at the active checkpoint are listed in the free list, a chain of
//!   4,088-byte metadata sub-blocks (64 per block, each starting with the pointer to the next)
//!   that the active header points to. Free blocks keep old bytes, or zeros once trimmed: they
//!   are never read by DuckDB, so they are never checked here.
//!
//! Invariants:
//! - Only what DuckDB itself would check is checked: the three headers and every block below
//!   `block_count` that is not free. A healthy database never fails (the tests prove it on
//!   databases with dropped tables, rewritten tables, trimmed free blocks and other block sizes).
//! - A database this module cannot read the layout of with certainty (encrypted, or a header
//!   field out of range) is never called healthy by it: encrypted files are reported as not
//!   checked, everything else as damage.

use std::io;

/// Where blocks start: after the main header and the two database headers.
pub const BLOCKS_START: u64 = 12_288;
/// The size of each of the three headers.
const HEADER: u64 = 4_096;
/// The block size when the header records none (files before it was recorded).
const DEFAULT_BLOCK_SIZE: u64 = 262_144;
const CHECKSUM_SEED: u64 = 5_381;
const CHECKSUM_MUL: u64 = 0xbf58_476d_1ce4_e5b9;
/// Metadata sub-blocks per block.
const METADATA_PER_BLOCK: u64 = 64;
/// `INVALID_INDEX`: no free list, no next sub-block.
const NONE: u64 = u64::MAX;
/// Bit 0 of the main header's first flag word: the database is encrypted.
const ENCRYPTED_FLAG: u64 = 1;

/// DuckDB's checksum of `words` (a length that is a multiple of 8), folded into `acc`. XOR is
/// order-free, so four lanes fold independently (the loop runs at memory speed even in this
/// crate's lightly optimised dev profile) and are combined at the end.
fn fold(acc: u64, words: &[u8]) -> u64 {
    let word = |w: &[u8]| {
        let mut b = [0u8; 8];
        b.copy_from_slice(w);
        u64::from_le_bytes(b).wrapping_mul(CHECKSUM_MUL)
    };
    let mut lanes = [acc, 0, 0, 0];
    let mut wide = words.chunks_exact(32);
    for c in &mut wide {
        lanes[0] ^= word(&c[0..8]);
        lanes[1] ^= word(&c[8..16]);
        lanes[2] ^= word(&c[16..24]);
        lanes[3] ^= word(&c[24..32]);
    }
    for w in wide.remainder().chunks_exact(8) {
        lanes[0] ^= word(w);
    }
    lanes[0] ^ lanes[1] ^ lanes[2] ^ lanes[3]
}

/// DuckDB's checksum of the bytes of a header or block after its 8-byte checksum (`data`, a
/// multiple of 8 bytes long): what DuckDB stores in those 8 bytes.
pub fn checksum(data: &[u8]) -> u64 {
    fold(CHECKSUM_SEED, data)
}

/// DuckDB's checksum of one header or block (`bytes` includes its stored checksum).
fn checksum_ok(bytes: &[u8]) -> Result<(), (u64, u64)> {
    let stored = le_u64(bytes, 0);
    let computed = fold(CHECKSUM_SEED, &bytes[8..]);
    if stored == computed {
        Ok(())
    } else {
        Err((stored, computed))
    }
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(w)
}

/// What is wrong with a database file, in words for the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    /// `block 2 (bytes 536576 to 798719)`, `the main header`, …
    pub place: String,
    pub why: String,
    /// The damaged block's id, when it is a block (not a header or the file's length).
    pub block: Option<u64>,
}

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.place, self.why)
    }
}

/// The database's layout, read from its headers and free list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub block_size: u64,
    pub block_count: u64,
    /// Free block ids, sorted.
    pub free: Vec<u64>,
}

/// What [`Layout::read`] found.
#[derive(Debug)]
pub enum Readable {
    Layout(Layout),
    /// Encrypted: the blocks' checksums cannot be checked without the key.
    Encrypted,
}

impl Layout {
    /// Reads the layout through `read_at(offset, buf)` (which fills `buf` or fails) of a file
    /// `len` bytes long. The headers' checksums and those of the metadata blocks the free list
    /// lives in are checked on the way.
    pub fn read(
        len: u64,
        read_at: &dyn Fn(u64, &mut [u8]) -> io::Result<()>,
    ) -> io::Result<Result<Readable, Damage>> {
        if len < BLOCKS_START {
            return Ok(Err(Damage {
                place: "the file".into(),
                why: format!("is {len} bytes long, shorter than DuckDB's three headers"),
                block: None,
            }));
        }
        let mut headers = vec![0u8; 12_288];
        read_at(0, &mut headers)?;
        let names = ["the main header", "database header 1", "database header 2"];
        for (i, h) in headers.chunks_exact(4096).enumerate() {
            if let Err(d) = check_region(h, names[i]) {
                return Ok(Err(d));
            }
        }
        // The main header: checksum (8), `DUCK` (4), version (8), then the first flag word.
        if le_u64(&headers, 20) & ENCRYPTED_FLAG != 0 {
            return Ok(Ok(Readable::Encrypted));
        }
        let db_header = |i: usize| {
            let at = 4096 * (i + 1) + 8;
            (
                le_u64(&headers, at),      // iteration
                le_u64(&headers, at + 16), // free_list
                le_u64(&headers, at + 24), // block_count
                le_u64(&headers, at + 32), // block_alloc_size
            )
        };
        let (h1, h2) = (db_header(0), db_header(1));
        let (active, name) = if h1.0 > h2.0 {
            (h1, names[1])
        } else {
            (h2, names[2])
        };
        let (_, free_list, block_count, block_size) = active;
        let block_size = if block_size == 0 {
            DEFAULT_BLOCK_SIZE
        } else {
            block_size
        };
        if !block_size.is_power_of_two() || !(16_384..=262_144).contains(&block_size) {
            return Ok(Err(Damage {
                place: name.into(),
                why: format!(
                    "records a block size of {block_size} bytes, which DuckDB never writes"
                ),
                block: None,
            }));
        }
        // A count beyond what the file could ever hold is no count DuckDB wrote.
        if block_count > (len / block_size) + (1 << 20) {
            return Ok(Err(Damage {
                place: name.into(),
                why: format!("records {block_count} blocks, far beyond the file's {len} bytes"),
                block: None,
            }));
        }
        let layout = Layout {
            block_size,
            block_count,
            free: Vec::new(),
        };
        let layout = if free_list == NONE {
            layout
        } else {
            match layout.with_free_list(free_list, read_at)? {
                Ok(Readable::Layout(l)) => l,
                other => return Ok(other),
            }
        };
        // DuckDB truncates free blocks off the file's end but keeps counting them: only the
        // blocks in use must all be there.
        let needed = layout.end_of_used();
        if needed > len {
            return Ok(Err(Damage {
                place: "the file".into(),
                why: format!(
                    "is truncated: it is {len} bytes long, but the blocks in use reach byte {needed}"
                ),
                block: None,
            }));
        }
        Ok(Ok(Readable::Layout(layout)))
    }

    /// Reads the free list from the metadata chain that starts at `pointer`.
    fn with_free_list(
        mut self,
        pointer: u64,
        read_at: &dyn Fn(u64, &mut [u8]) -> io::Result<()>,
    ) -> io::Result<Result<Readable, Damage>> {
        let sub = ((self.block_size - 8) / METADATA_PER_BLOCK) & !7;
        let mut reader = MetaReader {
            layout: &self,
            sub,
            next: pointer,
            buf: Vec::new(),
            pos: 0,
            checked: Vec::new(),
            hops: 0,
            read_at,
        };
        let mut read = || -> io::Result<Result<u64, Damage>> { reader.u64() };
        let count = match read()? {
            Ok(n) if n <= self.block_count => n,
            Ok(n) => {
                return Ok(Err(Damage {
                    place: "the free list".into(),
                    why: format!(
                        "lists {n} free blocks in a file of {} blocks",
                        self.block_count
                    ),
                    block: None,
                }))
            }
            Err(d) => return Ok(Err(d)),
        };
        let mut free = Vec::with_capacity(usize::try_from(count).unwrap_or(0));
        for _ in 0..count {
            match read()? {
                Ok(id) if id < self.block_count => free.push(id),
                Ok(id) => {
                    return Ok(Err(Damage {
                        place: "the free list".into(),
                        why: format!(
                            "names block {id}, beyond the file's {} blocks",
                            self.block_count
                        ),
                        block: None,
                    }))
                }
                Err(d) => return Ok(Err(d)),
            }
        }
        free.sort_unstable();
        free.dedup();
        self.free = free;
        Ok(Ok(Readable::Layout(self)))
    }

    /// True when DuckDB reads block `id` at this checkpoint.
    fn in_use(&self, id: u64) -> bool {
        id < self.block_count && self.free.binary_search(&id).is_err()
    }

    /// The offset just past the last block in use (the headers' end when none is).
    pub fn end_of_used(&self) -> u64 {
        (0..self.block_count)
            .rev()
            .find(|id| self.in_use(*id))
            .map_or(BLOCKS_START, |id| BLOCKS_START + (id + 1) * self.block_size)
    }

    /// Blocks in use.
    pub fn used_blocks(&self) -> u64 {
        self.block_count - self.free.len() as u64
    }
}

/// Follows a chain of metadata sub-blocks, checking each block it enters.
struct MetaReader<'a> {
    layout: &'a Layout,
    /// Sub-block size.
    sub: u64,
    next: u64,
    buf: Vec<u8>,
    pos: usize,
    checked: Vec<u64>,
    hops: u64,
    read_at: &'a dyn Fn(u64, &mut [u8]) -> io::Result<()>,
}

impl MetaReader<'_> {
    fn damage(why: String) -> Damage {
        Damage {
            place: "the free list".into(),
            why,
            block: None,
        }
    }

    fn u64(&mut self) -> io::Result<Result<u64, Damage>> {
        let mut out = [0u8; 8];
        let mut got = 0;
        while got < 8 {
            if self.pos >= self.buf.len() {
                if let Err(d) = self.advance()? {
                    return Ok(Err(d));
                }
                continue;
            }
            let n = (8 - got).min(self.buf.len() - self.pos);
            out[got..got + n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
            got += n;
            self.pos += n;
        }
        Ok(Ok(u64::from_le_bytes(out)))
    }

    /// Loads the next sub-block of the chain.
    fn advance(&mut self) -> io::Result<Result<(), Damage>> {
        if self.next == NONE {
            return Ok(Err(Self::damage("ends before its last entry".into())));
        }
        self.hops += 1;
        if self.hops > self.layout.block_count * METADATA_PER_BLOCK {
            return Ok(Err(Self::damage("loops".into())));
        }
        let block = self.next & !(0xFF << 56);
        let index = self.next >> 56;
        if block >= self.layout.block_count || index >= METADATA_PER_BLOCK {
            return Ok(Err(Self::damage(format!(
                "points at block {block}, sub-block {index}, outside the file"
            ))));
        }
        let start = BLOCKS_START + block * self.layout.block_size;
        if !self.checked.contains(&block) {
            let mut whole = vec![0u8; usize::try_from(self.layout.block_size).unwrap_or(0)];
            match (self.read_at)(start, &mut whole) {
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    return Ok(Err(Self::damage(format!(
                        "lives in block {block}, past the end of the file (truncated)"
                    ))))
                }
                other => other?,
            }
            if let Err(mut d) = check_region(&whole, &block_place(block, self.layout.block_size)) {
                d.block = Some(block);
                return Ok(Err(d));
            }
            self.checked.push(block);
        }
        let mut sub = vec![0u8; usize::try_from(self.sub).unwrap_or(0)];
        (self.read_at)(start + 8 + index * self.sub, &mut sub)?;
        self.next = le_u64(&sub, 0);
        self.buf = sub;
        self.pos = 8;
        Ok(Ok(()))
    }
}

fn block_place(id: u64, block_size: u64) -> String {
    let start = BLOCKS_START + id * block_size;
    format!("block {id} (bytes {start} to {})", start + block_size - 1)
}

/// Checks one whole header or block held in memory.
fn check_region(bytes: &[u8], place: &str) -> Result<(), Damage> {
    checksum_ok(bytes).map_err(|(stored, computed)| Damage {
        block: None,
        place: place.to_owned(),
        why: mismatch(stored, computed, bytes.iter().all(|b| *b == 0)),
    })
}

/// What a region whose checksum does not match is, in words (one wording for both checks).
fn mismatch(stored: u64, computed: u64, all_zeros: bool) -> String {
    if all_zeros {
        "is all zeros where DuckDB expects data".into()
    } else {
        format!("fails its checksum (stored {stored:#018x}, computed {computed:#018x})")
    }
}

/// Checks every header and used block of a stream of the file's bytes, fed in order from byte
/// 0, in pieces of any length.
#[derive(Debug)]
pub struct Checker {
    layout: Layout,
    /// Offset of the next byte fed.
    pos: u64,
    /// A partial word carried from one piece to the next.
    carry: [u8; 8],
    carried: usize,
    /// The region being read: its start, end, whether it is checked, its stored checksum and
    /// the running fold; `zero` stays true while every word seen is 0.
    region: Region,
    damage: Option<Damage>,
    checked: u64,
}

#[derive(Debug, Clone, Copy)]
struct Region {
    start: u64,
    end: u64,
    check: bool,
    stored: u64,
    acc: u64,
    zero: bool,
}

impl Checker {
    pub fn new(layout: Layout) -> Checker {
        let mut c = Checker {
            layout,
            pos: 0,
            carry: [0; 8],
            carried: 0,
            region: Region {
                start: 0,
                end: 0,
                check: false,
                stored: 0,
                acc: CHECKSUM_SEED,
                zero: true,
            },
            damage: None,
            checked: 0,
        };
        c.region = c.region_at(0);
        c
    }

    /// The header or block that starts at `start` (past the last block: nothing to check).
    fn region_at(&self, start: u64) -> Region {
        let (end, check) = if start < BLOCKS_START {
            (start + HEADER, true)
        } else {
            let id = (start - BLOCKS_START) / self.layout.block_size;
            (start + self.layout.block_size, self.layout.in_use(id))
        };
        Region {
            start,
            end,
            check,
            stored: 0,
            acc: CHECKSUM_SEED,
            zero: true,
        }
    }

    /// The block size of the layout being checked.
    pub fn block_size(&self) -> u64 {
        self.layout.block_size
    }

    /// Feeds the next bytes of the file.
    pub fn feed(&mut self, mut bytes: &[u8]) {
        if self.damage.is_some() {
            return;
        }
        if self.carried > 0 {
            let n = (8 - self.carried).min(bytes.len());
            self.carry[self.carried..self.carried + n].copy_from_slice(&bytes[..n]);
            self.carried += n;
            bytes = &bytes[n..];
            if self.carried < 8 {
                return;
            }
            let word = self.carry;
            self.carried = 0;
            self.words(&word);
        }
        let whole = bytes.len() & !7;
        self.words(&bytes[..whole]);
        let rest = &bytes[whole..];
        self.carry[..rest.len()].copy_from_slice(rest);
        self.carried = rest.len();
    }

    /// Folds whole words, region by region.
    fn words(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() && self.damage.is_none() {
            let r = &mut self.region;
            let take = usize::try_from(r.end - self.pos)
                .unwrap_or(usize::MAX)
                .min(bytes.len());
            let (now, later) = bytes.split_at(take);
            if r.check {
                let mut part = now;
                if self.pos == r.start {
                    r.stored = le_u64(part, 0);
                    r.zero = r.stored == 0;
                    part = &part[8..];
                }
                r.acc = fold(r.acc, part);
                if r.zero {
                    r.zero = part.iter().all(|b| *b == 0);
                }
            }
            self.pos += take as u64;
            bytes = later;
            if self.pos == self.region.end {
                self.close_region();
            }
        }
    }

    fn close_region(&mut self) {
        let r = self.region;
        if r.check {
            if r.stored == r.acc {
                self.checked += 1;
            } else {
                let block = (r.start >= BLOCKS_START)
                    .then(|| (r.start - BLOCKS_START) / self.layout.block_size);
                let place = match (r.start, block) {
                    (_, Some(id)) => block_place(id, self.layout.block_size),
                    (0, _) => "the main header".to_owned(),
                    (4096, _) => "database header 1".to_owned(),
                    _ => "database header 2".to_owned(),
                };
                self.damage = Some(Damage {
                    block,
                    place,
                    why: mismatch(r.stored, r.acc, r.zero),
                });
            }
        }
        self.region = self.region_at(r.end);
    }

    /// The verdict once the whole file was fed (`len` bytes).
    pub fn finish(self) -> Result<u64, Damage> {
        if let Some(d) = self.damage {
            return Err(d);
        }
        let needed = self.layout.end_of_used();
        if self.pos < needed {
            return Err(Damage {
                place: "the file".into(),
                why: format!(
                    "ends at byte {}, before the end of its last block ({needed})",
                    self.pos
                ),
                block: None,
            });
        }
        Ok(self.checked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;
    use std::path::Path;

    fn layout_of(path: &Path) -> Result<Readable, Damage> {
        let f = std::fs::File::open(path).unwrap();
        let len = f.metadata().unwrap().len();
        Layout::read(len, &|at, buf| f.read_exact_at(buf, at)).unwrap()
    }

    /// Checks a file the way a backup does: layout, then the bytes in pieces of `piece`.
    fn check(path: &Path, piece: usize) -> Result<u64, Damage> {
        let Readable::Layout(layout) = layout_of(path)? else {
            panic!("encrypted")
        };
        let bytes = std::fs::read(path).unwrap();
        let mut c = Checker::new(layout);
        for p in bytes.chunks(piece) {
            c.feed(p);
        }
        c.finish()
    }

    fn sql(path: &Path, statements: &str) {
        let db = duckdb::Connection::open(path).unwrap();
        db.execute_batch(statements).unwrap();
        db.close().unwrap();
    }

    /// A database with used, freed and rewritten blocks: two tables, one dropped after a
    /// checkpoint, one half deleted and rewritten.
    fn churned(dir: &Path, extra: &str) -> std::path::PathBuf {
        let path = dir.join("churn.duckdb");
        sql(
            &path,
            &format!(
                "{extra}
                 CREATE TABLE a AS SELECT range AS id, md5(range::VARCHAR) AS s FROM range(300000);
                 CREATE TABLE b AS SELECT range AS id, random() AS r FROM range(200000);
                 CHECKPOINT;
                 DROP TABLE b; DELETE FROM a WHERE id % 3 = 0; CHECKPOINT;
                 CREATE OR REPLACE TABLE c AS SELECT range AS id FROM range(1000); CHECKPOINT;"
            ),
        );
        path
    }

    #[test]
    fn duckdb_checksum_matches_a_real_file_in_any_piece_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = churned(dir.path(), "");
        let Ok(Readable::Layout(layout)) = layout_of(&path) else {
            panic!("no layout")
        };
        assert!(
            !layout.free.is_empty(),
            "the churn should leave free blocks"
        );
        let used = layout.used_blocks();
        for piece in [1, 7, 4096, 1 << 20, 3 << 20] {
            assert_eq!(check(&path, piece), Ok(used + 3), "piece {piece}");
        }
    }

    #[test]
    fn a_flipped_byte_in_a_used_block_is_damage_and_in_a_free_block_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = churned(dir.path(), "");
        let Ok(Readable::Layout(layout)) = layout_of(&path) else {
            panic!("no layout")
        };
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        let at = |id: u64| BLOCKS_START + id * layout.block_size + 5000;
        let free = layout.free[0];
        f.write_all_at(&[0xAB; 64], at(free)).unwrap();
        // Zeroed, as trimming leaves it.
        f.write_all_at(&vec![0; 262_144], BLOCKS_START + free * 262_144)
            .unwrap();
        assert!(check(&path, 1 << 20).is_ok(), "a free block is never read");
        let used = (0..layout.block_count).find(|i| layout.in_use(*i)).unwrap();
        let mut b = [0u8];
        f.read_exact_at(&mut b, at(used)).unwrap();
        f.write_all_at(&[!b[0]], at(used)).unwrap();
        let d = check(&path, 1 << 20).unwrap_err();
        assert!(d.place.starts_with(&format!("block {used} ")), "{d}");
        assert!(d.why.contains("checksum"), "{d}");
    }

    #[test]
    fn each_header_is_checked() {
        for at in [100u64, 4096 + 200, 8192 + 300] {
            let dir = tempfile::tempdir().unwrap();
            let path = churned(dir.path(), "");
            let f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .unwrap();
            let mut b = [0u8];
            f.read_exact_at(&mut b, at).unwrap();
            f.write_all_at(&[b[0] ^ 1], at).unwrap();
            let d = check(&path, 1 << 20).unwrap_err();
            assert!(d.place.contains("header"), "{at}: {d}");
        }
    }

    #[test]
    fn a_truncated_file_is_damage() {
        let dir = tempfile::tempdir().unwrap();
        let path = churned(dir.path(), "");
        let len = std::fs::metadata(&path).unwrap().len();
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(len - 100_000).unwrap();
        let d = check(&path, 1 << 20).unwrap_err();
        assert!(d.why.contains("truncated"), "{d}");
    }

    #[test]
    fn an_encrypted_database_is_reported_as_not_checkable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret.duckdb");
        let db = duckdb::Connection::open_in_memory().unwrap();
        let made = db.execute_batch(&format!(
            "ATTACH '{}' AS e (ENCRYPTION_KEY 'k3y');
             CREATE TABLE e.t AS SELECT range AS id FROM range(10000); CHECKPOINT e; DETACH e;",
            path.display()
        ));
        drop(db);
        if let Err(e) = made {
            eprintln!("SKIPPED: this DuckDB cannot write an encrypted database here: {e}");
            return;
        }
        assert!(matches!(layout_of(&path), Ok(Readable::Encrypted)));
    }

    #[test]
    fn other_block_sizes_are_read_from_the_header() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("small.duckdb");
        let db = duckdb::Connection::open_in_memory().unwrap();
        db.execute_batch(&format!(
            "ATTACH '{}' AS s (BLOCK_SIZE 16384);
             CREATE TABLE s.t AS SELECT range AS id, md5(range::VARCHAR) AS v FROM range(50000);
             CHECKPOINT s; DELETE FROM s.t WHERE id % 2 = 0; CHECKPOINT s; DETACH s;",
            path.display()
        ))
        .unwrap();
        drop(db);
        let Ok(Readable::Layout(layout)) = layout_of(&path) else {
            panic!("no layout")
        };
        assert_eq!(layout.block_size, 16_384);
        assert!(check(&path, 1 << 20).is_ok());
    }
}
