//! Packs nothing references are deleted; packs mostly dead have their live chunks repacked.
//!
//! [`plan`] is pure: given the index and the chunks that durable manifests reference, it says
//! which packs go and which are repacked. [`apply`] writes the repacked chunks into one new
//! pack, durable before any pack is deleted, then deletes. A chunk held by several packs lives
//! in its first (by name); its other copies count as dead.
//!
//! Invariant: a pack is deleted only when every chunk of it that a manifest references is held,
//! checked, by a pack that stays (an older one, or the new one this run made durable first).
//! Packs whose index cannot be read are never deleted here.

use std::collections::{HashMap, HashSet};

use super::blockmap::Hash;
use super::pack::PackWriter;
use super::rebuild::Failure;
use super::{Index, Packs};

/// A pack whose dead bytes reach this share of its size has its live chunks repacked: the
/// space a pinned backup in the middle keeps is its own chunks, not its neighbours'.
pub const REPACK_DEAD_SHARE: f64 = 0.25;

/// What [`apply`] will do, by pack index in the [`Index`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// Packs with no live chunk.
    pub delete: Vec<usize>,
    /// Packs to rewrite with their live chunks only.
    pub repack: Vec<usize>,
    /// Stored bytes of live and dead chunks, over every readable pack.
    pub live_bytes: u64,
    pub dead_bytes: u64,
}

/// Where each referenced chunk lives: its first copy, by pack order.
fn homes(index: &Index, referenced: &HashSet<Hash>) -> HashMap<Hash, usize> {
    let mut home = HashMap::new();
    for (k, p) in index.packs.iter().enumerate() {
        for e in &p.entries {
            if referenced.contains(&e.hash) {
                home.entry(e.hash).or_insert(k);
            }
        }
    }
    home
}

/// Plans the collection.
#[allow(clippy::implicit_hasher)]
pub fn plan(index: &Index, referenced: &HashSet<Hash>) -> Plan {
    let home = homes(index, referenced);
    let mut plan = Plan::default();
    for (k, p) in index.packs.iter().enumerate() {
        let mut seen = HashSet::new();
        let (mut live, mut dead) = (0u64, 0u64);
        for e in &p.entries {
            if home.get(&e.hash) == Some(&k) && seen.insert(e.hash) {
                live += u64::from(e.stored);
            } else {
                dead += u64::from(e.stored);
            }
        }
        plan.live_bytes += live;
        plan.dead_bytes += dead;
        #[allow(clippy::cast_precision_loss)]
        if live == 0 {
            plan.delete.push(k);
        } else if dead as f64 >= REPACK_DEAD_SHARE * (live + dead) as f64 {
            plan.repack.push(k);
        }
    }
    plan
}

/// What [`apply`] did.
#[derive(Debug, Clone, Default)]
pub struct Applied {
    /// Packs deleted (repacked ones included).
    pub deleted: Vec<String>,
    /// Bytes they held.
    pub freed: u64,
    /// The pack the live chunks went to, and its size.
    pub new_pack: Option<(String, u64)>,
}

#[allow(clippy::implicit_hasher)]
/// Carries out `plan` (made from the same `index` and `referenced`).
pub fn apply(
    packs: &Packs,
    index: &Index,
    referenced: &HashSet<Hash>,
    plan: &Plan,
) -> Result<Applied, Failure> {
    let io = |e: std::io::Error| Failure::io(packs.dir(), e);
    let write = |e: std::io::Error| Failure::write(packs.dir(), e);
    let mut out = Applied::default();
    if !plan.repack.is_empty() {
        let home = homes(index, referenced);
        let mut writer = PackWriter::create(packs.dir()).map_err(write)?;
        let (mut frame, mut raw) = (Vec::new(), Vec::new());
        let mut written = HashSet::new();
        for &k in &plan.repack {
            let p = &index.packs[k];
            for e in &p.entries {
                if home.get(&e.hash) != Some(&k) || !written.insert(e.hash) {
                    continue;
                }
                // Checked before it is copied: damage is never carried into a new pack.
                p.read_chunk(e, &mut frame, &mut raw)
                    .map_err(io)?
                    .map_err(|d| Failure::Damaged(d.to_string()))?;
                writer.add_frame(e, &frame).map_err(write)?;
            }
        }
        if !writer.is_empty() {
            let published = writer.finish().map_err(write)?;
            out.new_pack = Some((published.name, published.bytes));
        }
        crate::failpoint::hit("gc.repacked");
    }
    let mut doomed: Vec<usize> = plan.delete.iter().chain(&plan.repack).copied().collect();
    doomed.sort_unstable();
    doomed.dedup();
    for k in doomed {
        let p = &index.packs[k];
        if out.new_pack.as_ref().is_some_and(|(n, _)| n == &p.name) {
            // The repack produced this very pack again (same content): it stays.
            continue;
        }
        crate::failpoint::hit("gc.deleting");
        match std::fs::remove_file(&p.path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(write(e)),
        }
        out.deleted.push(p.name.clone());
        out.freed += p.bytes;
    }
    if !out.deleted.is_empty() {
        crate::files::sync_dir(packs.dir()).map_err(io)?;
    }
    Ok(out)
}

#[allow(clippy::implicit_hasher)]
/// Plans and applies in one go: what a prune does after its manifests are gone.
pub fn collect(packs: &Packs, referenced: &HashSet<Hash>) -> Result<Applied, Failure> {
    let index = packs.index().map_err(|e| Failure::io(packs.dir(), e))?;
    let plan = plan(&index, referenced);
    apply(packs, &index, referenced, &plan)
}

#[cfg(test)]
mod tests {
    use super::super::blockmap::{self, BlockMap};
    use super::super::pack::PackWriter;
    use super::*;

    fn pack_of(packs: &Packs, chunks: &[&[u8]]) {
        let mut w = PackWriter::create(packs.dir()).unwrap();
        for c in chunks {
            w.add(blockmap::hash(c), c).unwrap();
        }
        w.finish().unwrap();
    }

    fn noise(seed: u64, len: usize) -> Vec<u8> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x.to_le_bytes()[0]
            })
            .collect()
    }

    #[test]
    fn dead_packs_go_mostly_dead_ones_are_repacked_and_live_chunks_survive() {
        let dir = tempfile::tempdir().unwrap();
        let packs = Packs::of(dir.path());
        packs.ensure().unwrap();
        let c: Vec<Vec<u8>> = (0..6).map(|s| noise(s, 20_000)).collect();
        pack_of(&packs, &[&c[0], &c[1]]); // all dead
        pack_of(&packs, &[&c[2], &c[3], &c[4]]); // one live of three: repacked
        pack_of(&packs, &[&c[5]]); // live
        let referenced: HashSet<Hash> = [&c[3], &c[5]].iter().map(|x| blockmap::hash(x)).collect();
        let index = packs.index().unwrap();
        let p = plan(&index, &referenced);
        assert_eq!(p.delete.len() + p.repack.len(), 2, "{p:?}");
        let done = apply(&packs, &index, &referenced, &p).unwrap();
        assert_eq!(done.deleted.len(), 2);
        let index = packs.index().unwrap();
        assert_eq!(index.packs.len(), 2);
        assert_eq!(index.len(), 2);
        for h in &referenced {
            let (pack, e) = index.get(h).unwrap();
            let (mut f, mut out) = (Vec::new(), Vec::new());
            pack.read_chunk(e, &mut f, &mut out).unwrap().unwrap();
        }
        // Collected again: nothing left to do.
        let again = collect(&packs, &referenced).unwrap();
        assert!(again.deleted.is_empty() && again.new_pack.is_none());
    }

    #[test]
    fn a_chunk_in_two_packs_keeps_one_copy() {
        let dir = tempfile::tempdir().unwrap();
        let packs = Packs::of(dir.path());
        packs.ensure().unwrap();
        let c = noise(7, 30_000);
        let d = noise(8, 30_000);
        pack_of(&packs, &[&c]);
        pack_of(&packs, &[&c, &d]);
        let referenced: HashSet<Hash> = [blockmap::hash(&c)].into();
        collect(&packs, &referenced).unwrap();
        let index = packs.index().unwrap();
        assert_eq!(index.packs.len(), 1);
        assert!(index.contains(&blockmap::hash(&c)));
        let _ = BlockMap::chunk_count(0, 1);
    }
}
