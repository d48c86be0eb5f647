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
}

/// How a backup is stored.
#[derive(Debug, Clone, Copy)]
pub struct Held<'a> {
    pub map: &'a BlockMap,
    /// True for a plain file (its chunks are held by the file, at their raw size).
    pub plain: bool,
}

/// Each backup's usage, in the order given. A chunk's size is its stored size in a pack, or its
/// raw size when only a plain file holds it.
pub fn usage(index: &Index, backups: &[Held<'_>]) -> Vec<Usage> {
    let mut holders: HashMap<&Hash, u32> = HashMap::new();
    for b in backups {
        let mut distinct: Vec<&Hash> = b.map.chunks.iter().collect();
        distinct.sort_unstable();
        distinct.dedup();
        for h in distinct {
            *holders.entry(h).or_insert(0) += 1;
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
                let size = match (b.plain, index.get(h)) {
                    (false, Some((_, e))) => u64::from(e.stored),
                    _ => b.map.range(i).1,
                };
                if holders.get(h).copied().unwrap_or(0) > 1 {
                    u.shared += size;
                } else {
                    u.own += size;
                }
            }
            u
        })
        .collect()
}
