//! Who owns which bytes: each backup's own bytes (held for it alone: what deleting it frees)
//! and its shared bytes (held for it and others), for `list` and the storage budget.

use std::collections::HashMap;

use super::blockmap::{BlockMap, Hash};
use super::Index;

/// One backup's share of the storage.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Bytes held for this backup alone.
    pub own: u64,
    /// Bytes held for this backup and at least one other.
    pub shared: u64,
    /// Its own bytes plus an equal share of each shared chunk: summed over every backup, the
    /// bytes the chunks take (what a storage budget weighs).
    pub fair: u64,
}

/// How a backup is stored.
#[derive(Debug, Clone, Copy)]
pub struct Held<'a> {
    pub map: &'a BlockMap,
    /// True for a plain file (its chunks are held by the file, at their raw size).
    pub plain: bool,
}

/// Each backup's usage, in the order given.
///
/// A plain backup's chunks live in its file, at their raw size: own when no other backup lists
/// them, shared otherwise; its fair share is left to the caller (its file's size). A packed
/// backup's chunks live in a pack (its stored size, owned alone or shared with the other packed
/// backups that list it) or, when no pack holds them, in a plain file that pays for them: shared,
/// and nothing of its fair share.
pub fn usage(index: &Index, backups: &[Held<'_>]) -> Vec<Usage> {
    let mut holders: HashMap<&Hash, (u32, u32)> = HashMap::new();
    for b in backups {
        let mut distinct: Vec<&Hash> = b.map.chunks.iter().collect();
        distinct.sort_unstable();
        distinct.dedup();
        for h in distinct {
            let e = holders.entry(h).or_insert((0, 0));
            e.0 += 1;
            if !b.plain {
                e.1 += 1;
            }
        }
    }
    backups
        .iter()
        .map(|b| {
            let mut u = Usage::default();
            let mut seen = std::collections::HashSet::new();
            for (i, h) in b.map.chunks.iter().enumerate() {
                if !seen.insert(h) {
                    continue;
                }
                let (all, packed) = holders.get(h).copied().unwrap_or((1, 1));
                if b.plain {
                    let size = b.map.range(i).1;
                    if all > 1 {
                        u.shared += size;
                    } else {
                        u.own += size;
                    }
                    continue;
                }
                match index.get(h) {
                    Some((_, e)) => {
                        let size = u64::from(e.stored);
                        if packed > 1 {
                            u.shared += size;
                        } else {
                            u.own += size;
                        }
                        u.fair += size / u64::from(packed.max(1));
                    }
                    None => u.shared += b.map.range(i).1,
                }
            }
            u
        })
        .collect()
}
