//! Before a plain file goes away, the chunks other backups still need from it go into a pack;
//! conversion of a plain backup to a packed one is that, then a rebuild that proves it.
//!
//! One rule covers conversion, rotation, prune and delete: the chunks that the backups staying
//! need, and that neither a pack nor a plain file staying holds, are read from the files
//! leaving (each checked against its hash as it is read) and written into one new pack, which
//! is durable before this returns. Converting the previous newest backup against the new one
//! packs exactly its blocks that the new file does not hold and no pack holds yet.
//!
//! Invariants:
//! - Nothing here deletes or renames a backup or a manifest: the caller does, after this
//!   returned (the pack durable) and, for a conversion, after the rebuild proved the map.
//! - A chunk is packed from a leaving file only when the bytes read have the map's hash: a file
//!   that rotted since it was backed up is reported, never packed.

use std::collections::HashSet;
use std::os::unix::fs::FileExt;

use super::blockmap::{self, BlockMap, Hash};
use super::pack::{self, PackWriter, Published};
use super::rebuild::{self, Failure, Plain, Rebuilt, Sources};
use super::{Index, Packs};
use crate::files;

/// Chunks read and compressed together (64 × 256 KiB = 16 MiB).
const BATCH: usize = 64;

/// What [`secure`] packed.
#[derive(Debug, Clone, Default)]
pub struct Secured {
    /// The new pack (none when nothing had to be packed).
    pub pack: Option<Published>,
    pub chunks: usize,
    /// Raw bytes of the chunks packed.
    pub raw_bytes: u64,
    /// Chunks the maps in `needed` list that no pack, no plain file staying and no file
    /// leaving holds: already lost (a pack deleted or truncated behind ducksafe's back) before
    /// this call, and not made any more lost by it. The backups that list them can no longer
    /// be rebuilt; the caller names them, and carries on with what it was doing.
    pub lost: HashSet<Hash>,
}

/// Packs every chunk the maps in `needed` list that `index` and the plain files `staying` do
/// not hold, reading it from the plain files `leaving`. A chunk that none of them holds is
/// reported in [`Secured::lost`], not an error: the files leaving do not hold it, so letting
/// them go loses nothing more, and a healthy backup must not be kept (or blamed) for a pack
/// that went missing elsewhere.
///
/// With `strict`, a chunk of a leaving file that fails its hash (or that the file, cut short,
/// no longer holds) is an error: a conversion, whose leaving file is the backup being
/// converted, reports that backup damaged. Without, it is lost like any other: a deletion goes
/// ahead.
pub fn secure(
    packs: &Packs,
    index: &Index,
    needed: &[&BlockMap],
    staying: &[Plain<'_>],
    leaving: &[Plain<'_>],
    strict: bool,
) -> Result<Secured, Failure> {
    let held: HashSet<&Hash> = staying.iter().flat_map(|p| p.map.chunks.iter()).collect();
    let mut wanted: Vec<Hash> = Vec::new();
    let mut seen: HashSet<Hash> = HashSet::new();
    for m in needed {
        m.well_formed().map_err(Failure::BadMap)?;
        for h in &m.chunks {
            if !index.contains(h) && !held.contains(h) && seen.insert(*h) {
                wanted.push(*h);
            }
        }
    }
    let leaving_at: Vec<_> = leaving.iter().map(|p| p.map.positions()).collect();
    let mut out = Secured::default();
    // Each chunk wanted, with the file leaving that holds it and its position there.
    let mut found: Vec<(Hash, usize, usize)> = Vec::with_capacity(wanted.len());
    for h in wanted {
        match leaving_at
            .iter()
            .enumerate()
            .find_map(|(k, pos)| pos.get(&h).map(|&at| (k, at)))
        {
            Some((k, at)) => found.push((h, k, at)),
            None => {
                out.lost.insert(h);
            }
        }
    }
    if found.is_empty() {
        return Ok(out);
    }
    let mut opened = Vec::with_capacity(leaving.len());
    for p in leaving {
        opened.push(files::open_read_nofollow(p.path).map_err(|e| Failure::io(p.path, e))?);
    }
    let mut writer = PackWriter::create(packs.dir()).map_err(|e| Failure::write(packs.dir(), e))?;
    let threads = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    // Read (and checked) one batch at a time, compressed on every core, appended in order:
    // memory stays at one batch whatever the number of chunks.
    for batch in found.chunks(BATCH) {
        let mut raws = Vec::with_capacity(batch.len());
        let mut kept = Vec::with_capacity(batch.len());
        for &(h, k, at) in batch {
            let (start, len) = leaving[k].map.range(at);
            let mut buf = vec![0u8; usize::try_from(len).unwrap_or(0)];
            let damage = match opened[k].read_exact_at(&mut buf, start) {
                Ok(()) if blockmap::hash(&buf) == h => None,
                Ok(()) => Some("changed after it was backed up: its bytes"),
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                    Some("was cut short after it was backed up: it ends before its bytes")
                }
                Err(e) => return Err(Failure::io(leaving[k].path, e)),
            };
            match damage {
                None => {
                    raws.push(buf);
                    kept.push(h);
                }
                Some(what) if strict => {
                    return Err(Failure::Damaged(format!(
                        "`{}` {what} {start} to {}, which its manifest records",
                        leaving[k].path.display(),
                        start + len - 1
                    )));
                }
                Some(_) => {
                    out.lost.insert(h);
                }
            }
        }
        let frames = pack::compress(&raws, threads).map_err(|e| Failure::write(packs.dir(), e))?;
        for ((h, raw), frame) in kept.iter().copied().zip(&raws).zip(&frames) {
            writer
                .add_compressed(h, frame, raw.len())
                .map_err(|e| Failure::write(packs.dir(), e))?;
            out.chunks += 1;
            out.raw_bytes += raw.len() as u64;
        }
    }
    if out.chunks > 0 {
        out.pack = Some(
            writer
                .finish()
                .map_err(|e| Failure::write(packs.dir(), e))?,
        );
    }
    Ok(out)
}

/// What a conversion did.
#[derive(Debug, Clone)]
pub struct Converted {
    pub secured: Secured,
    /// The proof: the backup rebuilt from the packs and the plain files staying.
    pub proof: Rebuilt,
}

/// Converts the plain backup `old` into packed form: its chunks (and those of the packed
/// backups `packed`, which may rely on its file) that neither a pack nor a plain file in
/// `staying` holds go into a new pack; then `old` is rebuilt from the packs and `staying`
/// alone, every chunk checked against its hash. On success the caller records `old`'s map as
/// packed in its manifest, durably, and only then removes its file.
///
/// With `independent`, plain files do not count as holding anything: every chunk goes into
/// packs, so the backup never relies on a newer file.
pub fn convert(
    packs: &Packs,
    old: Plain<'_>,
    packed: &[&BlockMap],
    staying: &[Plain<'_>],
    independent: bool,
) -> Result<Converted, Failure> {
    let index = packs.index().map_err(|e| Failure::io(packs.dir(), e))?;
    let staying = if independent { &[][..] } else { staying };
    let mut needed = vec![old.map];
    needed.extend_from_slice(packed);
    let secured = secure(packs, &index, &needed, staying, &[old], true)?;
    crate::failpoint::hit("convert.packed");
    let index = packs.index().map_err(|e| Failure::io(packs.dir(), e))?;
    let sources = Sources::new(&index, staying)?;
    let threads = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let proof = rebuild::check(old.map, &sources, threads)?;
    if proof.bytes != old.map.bytes {
        return Err(Failure::Damaged(format!(
            "the rebuild gave {} bytes where the backup has {}",
            proof.bytes, old.map.bytes
        )));
    }
    Ok(Converted { secured, proof })
}

#[cfg(test)]
mod tests {
    use super::super::testdb;
    use super::*;

    /// A chain of runs converted one after the other, as rotation does: every older backup
    /// rebuilds to its bytes from the packs and the newest file alone, and the packs hold only
    /// what the newest lacks.
    #[test]
    fn converting_each_previous_backup_keeps_every_one_rebuildable() {
        let dir = tempfile::tempdir().unwrap();
        let runs = testdb::runs(dir.path(), crate::workload::Shape::Append, 4);
        let maps: Vec<BlockMap> = runs.iter().map(|p| testdb::map(p)).collect();
        let packs = Packs::of(dir.path());
        packs.ensure().unwrap();
        let mut packed: Vec<usize> = Vec::new();
        for k in 1..runs.len() {
            let old = Plain {
                path: &runs[k - 1],
                map: &maps[k - 1],
            };
            let newest = Plain {
                path: &runs[k],
                map: &maps[k],
            };
            let others: Vec<&BlockMap> = packed.iter().map(|&i| &maps[i]).collect();
            let c = convert(&packs, old, &others, &[newest], false).unwrap();
            assert!(c.secured.chunks > 0 && c.secured.chunks < maps[k - 1].chunks.len() / 2);
            packed.push(k - 1);
            // The plain file goes; every packed backup still rebuilds from packs + newest.
            let keep = std::fs::read(&runs[k - 1]).unwrap();
            std::fs::remove_file(&runs[k - 1]).unwrap();
            std::fs::write(dir.path().join(format!("want{}", k - 1)), keep).unwrap();
            let index = packs.index().unwrap();
            let sources = Sources::new(&index, &[newest]).unwrap();
            for &i in &packed {
                let mut out = Vec::new();
                rebuild::rebuild(&maps[i], &sources, false, &mut |c| {
                    out.extend_from_slice(c);
                    Ok(())
                })
                .unwrap();
                let want = std::fs::read(dir.path().join(format!("want{i}"))).unwrap();
                assert!(out == want, "backup {i} after converting {}", k - 1);
            }
        }
    }

    #[test]
    fn independent_backups_rebuild_from_packs_alone() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = testdb::two_runs(dir.path());
        let (ma, mb) = (testdb::map(&a), testdb::map(&b));
        let packs = Packs::of(dir.path());
        packs.ensure().unwrap();
        let c = convert(
            &packs,
            Plain { path: &a, map: &ma },
            &[],
            &[Plain { path: &b, map: &mb }],
            true,
        )
        .unwrap();
        assert_eq!(c.proof.from_plain, 0);
        let index = packs.index().unwrap();
        let sources = Sources::new(&index, &[]).unwrap();
        let mut out = Vec::new();
        rebuild::rebuild(&ma, &sources, false, &mut |c| {
            out.extend_from_slice(c);
            Ok(())
        })
        .unwrap();
        assert!(out == std::fs::read(&a).unwrap());
    }

    #[test]
    fn a_leaving_file_that_rotted_is_never_packed() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = testdb::two_runs(dir.path());
        let (ma, mb) = (testdb::map(&a), testdb::map(&b));
        let packs = Packs::of(dir.path());
        packs.ensure().unwrap();
        // A byte of a chunk only `a` holds.
        let held: HashSet<&Hash> = mb.chunks.iter().collect();
        let own = ma.chunks.iter().position(|h| !held.contains(h)).unwrap();
        testdb::flip(&a, ma.range(own).0 + 100);
        let err = convert(
            &packs,
            Plain { path: &a, map: &ma },
            &[],
            &[Plain { path: &b, map: &mb }],
            false,
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("changed after it was backed up"),
            "{err}"
        );
        assert!(packs.names().unwrap().is_empty(), "no pack was published");
        assert!(
            packs.sweep().unwrap().is_empty(),
            "no temporary pack is left"
        );
    }
}
