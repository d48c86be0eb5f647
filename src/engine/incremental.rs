//! The block store in a backup directory (mechanism in [`super::blockstore`]): which backups
//! are plain and which packed, the previous backup converted once a newer one is published, a
//! plain backup deleted without breaking the packed ones that rely on its file, packs nothing
//! references collected, and a packed backup rebuilt for restore and verify.
//!
//! The crash order, step by step (each step's failpoint in brackets):
//! - conversion: the new pack durable (`pack.synced`, `pack.published`), then the backup
//!   rebuilt from the packs and the plain files that stay, every chunk checked
//!   (`convert.proven`), then its manifest rewritten as packed, atomically and durably
//!   (`convert.manifest`), and only then its file and sidecar removed (`convert.removed`). A
//!   crash leaves it plain with an unreferenced pack (collected later), or packed with its file
//!   still there (removed by the next sweep);
//! - deletion of a plain backup: first the chunks packed backups need from its file alone go
//!   into a durable pack (`secure.packed`), then the file, sidecar and manifest go;
//! - collection: manifests are always deleted first; a pack goes only when no manifest on disk
//!   lists a chunk that only it holds (`gc.repacked`, `gc.deleting`).
//!
//! Every listed backup stays restorable at every one of those points: the reliability suite
//! kills the process at each.

use std::collections::HashSet;
use std::fs::File;
use std::path::Path;

use super::blockstore::{self, gc, usage, BlockMap, Failure, Hash, Packs, Plain, Rebuilt};
use super::manifest::Storage;
use super::store::{Entry, Inventory, Store};
use super::verify;
use crate::config::VerifyLevel;
use crate::duck::Limits;
use crate::error::{Error, Result};
use crate::failpoint;
use crate::files;

/// A failure of the block store, as the error a command reports about `path`.
pub fn failure(path: &Path, f: &Failure) -> Error {
    match f {
        Failure::Io {
            path,
            source,
            write,
        } => Error::io(
            if *write {
                "write the block store at"
            } else {
                "read the block store at"
            },
            path,
            // The OS error number kept: a full disk is `insufficient_space` (exit 73), not
            // an I/O error that suggests damage.
            source.raw_os_error().map_or_else(
                || std::io::Error::new(source.kind(), source.to_string()),
                std::io::Error::from_raw_os_error,
            ),
        ),
        other => Error::VerificationFailed {
            path: path.to_path_buf(),
            why: other.to_string(),
        },
    }
}

/// The plain backups of `inv` that have a block map and a file of the size their manifest
/// records: the chunks they hold. A file cut short (or grown) holds nothing the block store may
/// count on: its chunks are packed from elsewhere, or reported lost.
fn plains(store: &Store, inv: &Inventory) -> Vec<(std::path::PathBuf, BlockMap)> {
    inv.backups
        .iter()
        .filter(|b| b.manifest.storage == Storage::Plain && b.file_bytes == Some(b.manifest.bytes))
        .filter_map(|b| {
            b.manifest
                .blocks
                .clone()
                .map(|m| (store.backup_path(&b.id), m))
        })
        .collect()
}

/// Why the block store must not drop anything now, if it must not: a manifest in the folder
/// that this run cannot read or that is not this database's may list chunks nobody else knows
/// of, so no pack is deleted and no plain file converted until it is dealt with.
fn unknown_manifests(inv: &Inventory) -> Option<String> {
    let names: Vec<&str> = inv
        .unmanaged
        .iter()
        .filter(|(n, _)| n.ends_with(".manifest.json"))
        .map(|(n, _)| n.as_str())
        .collect();
    (!names.is_empty()).then(|| {
        format!(
            "`{}` cannot be read as this database's manifest, and may need blocks in the packs; nothing is removed from the block store until it is repaired or removed (`ducksafe verify --all`)",
            names.join("`, `")
        )
    })
}

/// What an operator must hear when [`blockstore::secure`] met chunks already lost: the packed
/// backups that list them cannot be rebuilt any more (their pack went missing or was truncated
/// behind ducksafe's back), whatever this run does. `None` when nothing is lost.
fn lost_warning(inv: &Inventory, lost: &HashSet<Hash>) -> Option<String> {
    if lost.is_empty() {
        return None;
    }
    let hit: Vec<&str> = inv
        .backups
        .iter()
        .filter(|b| b.manifest.storage == Storage::Packed)
        .filter(|b| {
            b.manifest
                .blocks
                .as_ref()
                .is_some_and(|m| m.chunks.iter().any(|h| lost.contains(h)))
        })
        .map(|b| b.id.as_str())
        .collect();
    Some(format!(
        "{} block{} that packed backup{} `{}` need{} {} in no pack and no intact backup file (a pack under `packs/`, or the backup file that held them, was deleted, cut short or changed): {} cannot be restored. Run `ducksafe verify --all` to see every damaged backup, then `ducksafe delete` each one it names; the other backups are not affected",
        lost.len(),
        if lost.len() == 1 { "" } else { "s" },
        if hit.len() == 1 { "" } else { "s" },
        hit.join("`, `"),
        if hit.len() == 1 { "s" } else { "" },
        if lost.len() == 1 { "is" } else { "are" },
        if hit.len() == 1 { "it" } else { "they" },
    ))
}

/// The packed backups' maps.
fn packed(inv: &Inventory) -> Vec<&BlockMap> {
    inv.backups
        .iter()
        .filter(|b| b.manifest.storage == Storage::Packed)
        .filter_map(|b| b.manifest.blocks.as_ref())
        .collect()
}

impl Store {
    /// The packs folder of this directory.
    pub fn packs(&self) -> Packs {
        Packs::of(self.dir())
    }

    /// Converts every plain backup of `inv` that has a block map, other than `newest` (the
    /// backup just published), oldest first: normally only the previous one. A backup that
    /// cannot be converted stays plain, with a warning; nothing here fails the run.
    pub fn convert_older(
        &self,
        inv: &mut Inventory,
        newest: &str,
        independent: bool,
    ) -> Vec<String> {
        let mut warnings = Vec::new();
        if let Some(why) = unknown_manifests(inv) {
            warnings.push(format!("older backups stay full copies: {why}"));
            return warnings;
        }
        // `latest.duckdb` always names a plain file (`cp` restores it).
        let latest = self.latest_id();
        let mut ids: Vec<String> = inv
            .backups
            .iter()
            .filter(|b| {
                b.id != newest
                    && latest.as_deref() != Some(b.id.as_str())
                    && b.manifest.storage == Storage::Plain
                    && b.manifest.blocks.is_some()
                    && b.file_bytes.is_some()
            })
            .map(|b| b.id.clone())
            .collect();
        ids.reverse();
        for id in ids {
            match self.convert_one(inv, &id, independent) {
                Ok(lost) => {
                    warnings.extend(lost_warning(inv, &lost));
                    if let Some(b) = inv.backups.iter_mut().find(|b| b.id == id) {
                        b.manifest.storage = Storage::Packed;
                        b.file_bytes = None;
                    }
                }
                Err(e) => warnings.push(format!(
                    "backup `{id}` stays a full copy: it could not be converted to the block store ({e}); the next backup tries again"
                )),
            }
        }
        warnings
    }

    /// Converts one plain backup; returns the chunks other packed backups need that were
    /// already lost (see [`lost_warning`]).
    fn convert_one(&self, inv: &Inventory, id: &str, independent: bool) -> Result<HashSet<Hash>> {
        let Some(entry) = inv.backups.iter().find(|b| b.id == id) else {
            return Ok(HashSet::new());
        };
        let Some(map) = entry.manifest.blocks.as_ref() else {
            return Ok(HashSet::new());
        };
        let path = self.backup_path(id);
        // The file must still be the one the map describes, in size at least (its chunks are
        // checked one by one as they are packed).
        if entry.file_bytes != Some(map.bytes) || map.bytes != entry.manifest.bytes {
            return Err(Error::VerificationFailed {
                path,
                why: "its size is not the one its manifest records".into(),
            });
        }
        let packs = self.packs();
        packs.ensure()?;
        let staying: Vec<_> = plains(self, inv)
            .into_iter()
            .filter(|(p, _)| *p != path)
            .collect();
        let staying: Vec<Plain> = staying
            .iter()
            .map(|(p, m)| Plain { path: p, map: m })
            .collect();
        let converted = blockstore::convert(
            &packs,
            Plain { path: &path, map },
            &packed(inv),
            &staying,
            independent,
        )
        .map_err(|f| failure(&path, &f))?;
        failpoint::hit("convert.proven");
        let mut manifest = entry.manifest.clone();
        manifest.storage = Storage::Packed;
        self.rewrite_manifest(&manifest)?;
        failpoint::hit("convert.manifest");
        self.remove_plain_file(id)?;
        failpoint::hit("convert.removed");
        Ok(converted.secured.lost)
    }

    /// Removes the file and sidecar of a backup whose manifest says packed, then syncs the
    /// folder.
    fn remove_plain_file(&self, id: &str) -> Result<()> {
        for p in [self.backup_path(id), self.sidecar_path(id)] {
            match std::fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("remove", &p, e)),
            }
        }
        files::sync_dir(self.dir()).map_err(|e| Error::io("sync", self.dir(), e))
    }

    /// Before the plain backup `id` is deleted: the chunks the packed backups need that only
    /// its file holds go into a durable pack. Nothing to do for a packed backup, or when no
    /// backup is packed. Returns a warning when packed backups need chunks that nothing holds
    /// any more: the deletion goes ahead (it loses nothing more), and those backups are named.
    pub fn secure_leaving(&self, inv: &Inventory, id: &str) -> Result<Option<String>> {
        let needed = packed(inv);
        let leaving = inv
            .backups
            .iter()
            .find(|b| b.id == id && b.manifest.storage == Storage::Plain);
        let (Some(leaving), false) = (leaving, needed.is_empty()) else {
            return Ok(None);
        };
        if let Some(why) = unknown_manifests(inv) {
            return Err(Error::VerificationFailed {
                path: self.backup_path(id),
                why: format!("it is not deleted: {why}"),
            });
        }
        let path = self.backup_path(id);
        let all = plains(self, inv);
        let staying: Vec<Plain> = all
            .iter()
            .filter(|(p, _)| *p != path)
            .map(|(p, m)| Plain { path: p, map: m })
            .collect();
        // A file cut short is not read: what only it held is lost already, and reported.
        let leaving_plain: Vec<Plain> = match (&leaving.manifest.blocks, leaving.file_bytes) {
            (Some(m), Some(n)) if n == leaving.manifest.bytes => vec![Plain {
                path: &path,
                map: m,
            }],
            _ => Vec::new(),
        };
        let packs = self.packs();
        packs.ensure()?;
        let index = packs
            .index()
            .map_err(|e| Error::io("read", packs.dir(), e))?;
        // A chunk of the leaving file that fails its hash is lost, not a reason to keep a
        // damaged backup: the deletion goes ahead and the backups that needed it are named.
        let secured = blockstore::secure(&packs, &index, &needed, &staying, &leaving_plain, false)
            .map_err(|f| failure(&path, &f))?;
        failpoint::hit("secure.packed");
        Ok(lost_warning(inv, &secured.lost))
    }

    /// Deletes the packs no manifest of `inv` needs, and repacks mostly dead ones. Call with the
    /// directory lock held, after the manifests of deleted backups are gone.
    pub fn collect_packs(&self, inv: &Inventory) -> Result<gc::Applied> {
        let packs = self.packs();
        if packs
            .names()
            .map_err(|e| Error::io("list", packs.dir(), e))?
            .is_empty()
        {
            return Ok(gc::Applied::default());
        }
        if let Some(why) = unknown_manifests(inv) {
            return Err(Error::VerificationFailed {
                path: packs.dir().to_path_buf(),
                why,
            });
        }
        let referenced: HashSet<Hash> = packed(inv)
            .into_iter()
            .flat_map(|m| m.chunks.iter().copied())
            .collect();
        gc::collect(&packs, &referenced).map_err(|f| failure(packs.dir(), &f))
    }

    /// What an interrupted conversion or collection left: temporary packs, and the file and
    /// sidecar of a backup whose manifest already says packed. Returns the names removed.
    pub fn sweep_packed(&self, inv: &Inventory) -> Result<Vec<String>> {
        let packs = self.packs();
        let mut removed = packs
            .sweep()
            .map_err(|e| Error::io("clean", packs.dir(), e))?;
        for b in &inv.backups {
            if b.manifest.storage == Storage::Packed && b.file_bytes.is_some() {
                self.remove_plain_file(&b.id)?;
                removed.push(store_file_name(&self.backup_path(&b.id)));
            }
        }
        Ok(removed)
    }

    /// Rebuilds the packed backup `entry` into `out` (a new, empty file at `out_path`), every
    /// chunk checked, its read-back SHA-256 compared with the manifest's, fsynced.
    pub fn rebuild_into(
        &self,
        inv: &Inventory,
        entry: &Entry,
        out: &File,
        out_path: &Path,
    ) -> Result<Rebuilt> {
        self.rebuild_checked(inv, entry, Some((out, out_path)))
    }

    /// Rebuilds the packed backup `entry` as a stream, written nowhere: every chunk checked and
    /// the whole SHA-256 compared with the manifest's (a dry run's restore, `verify`).
    pub fn check_rebuild(&self, inv: &Inventory, entry: &Entry) -> Result<Rebuilt> {
        self.rebuild_checked(inv, entry, None)
    }

    fn rebuild_checked(
        &self,
        inv: &Inventory,
        entry: &Entry,
        into: Option<(&File, &Path)>,
    ) -> Result<Rebuilt> {
        let bad = |why: String| Error::VerificationFailed {
            path: self.manifest_path(&entry.id),
            why,
        };
        let map = entry
            .manifest
            .blocks
            .as_ref()
            .ok_or_else(|| bad("it is packed but its manifest has no block map".into()))?;
        let packs = self.packs();
        let index = packs
            .index()
            .map_err(|e| Error::io("read", packs.dir(), e))?;
        let all = plains(self, inv);
        let plain: Vec<Plain> = all.iter().map(|(p, m)| Plain { path: p, map: m }).collect();
        let sources =
            blockstore::Sources::new(&index, &plain).map_err(|f| failure(self.dir(), &f))?;
        let _shown = crate::progress::step(
            &format!("rebuilding {}", entry.id),
            Some(entry.manifest.bytes),
        );
        let done = match into {
            Some((out, out_path)) => {
                blockstore::rebuild::rebuild_to_file(map, &sources, out, out_path)
            }
            None => blockstore::rebuild(map, &sources, true, &mut |_| Ok(())),
        }
        .map_err(|f| failure(&self.manifest_path(&entry.id), &f))?;
        let got = done.sha256.map(|s| files::hex(&s)).unwrap_or_default();
        if got != entry.manifest.sha256 || done.bytes != entry.manifest.bytes {
            return Err(bad(format!(
                "rebuilt from the block store, it is {} bytes with SHA-256 {got}; the manifest says {} bytes, {}",
                done.bytes, entry.manifest.bytes, entry.manifest.sha256
            )));
        }
        Ok(done)
    }

    /// Each backup's own and shared bytes (see [`usage`]), in the order of `inv`; backups
    /// without a block map own their whole file.
    pub fn usage(&self, inv: &Inventory) -> Vec<usage::Usage> {
        let index = self.packs().index().unwrap_or_default();
        let held: Vec<usage::Held> = inv
            .backups
            .iter()
            .filter_map(|b| {
                b.manifest.blocks.as_ref().map(|m| usage::Held {
                    map: m,
                    plain: b.manifest.storage == Storage::Plain,
                })
            })
            .collect();
        let mut shares = usage::usage(&index, &held).into_iter();
        inv.backups
            .iter()
            .map(|b| match &b.manifest.blocks {
                Some(_) => shares.next().unwrap_or_default(),
                None => usage::Usage {
                    own: b.file_bytes.unwrap_or(0),
                    shared: 0,
                    fair: b.file_bytes.unwrap_or(0),
                },
            })
            .collect()
    }

    /// Bytes the backups take on disk: plain files and packs.
    pub fn real_bytes(&self, inv: &Inventory) -> u64 {
        Store::used_bytes(inv) + self.packs().bytes().unwrap_or(0)
    }
}

fn store_file_name(p: &Path) -> String {
    p.file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
}

impl Store {
    /// Re-verifies a stored backup as `verify` does ([`verify::stored`]): a plain one in place,
    /// its block map (when it has one) checked against its file too; a packed one rebuilt as a
    /// stream from the block store.
    pub fn verify_stored(
        &self,
        inv: &Inventory,
        entry: &Entry,
        level: VerifyLevel,
        limits: &Limits,
    ) -> Result<Vec<String>> {
        if entry.manifest.storage == Storage::Plain {
            let path = self.backup_path(&entry.id);
            let mut out = verify::stored(&path, &entry.manifest, level, limits)?;
            if let Some(map) = &entry.manifest.blocks {
                let file =
                    files::open_read_nofollow(&path).map_err(|e| Error::io("read", &path, e))?;
                let got = BlockMap::of_reader(&mut std::io::BufReader::new(file), map.block_size)
                    .map_err(|e| Error::io("read", &path, e))?;
                if got != *map {
                    return Err(Error::VerificationFailed {
                        path,
                        why: "its bytes are the manifest's, but its block map is not theirs: the manifest was changed".into(),
                    });
                }
                out.checks.push("blocks".into());
            }
            return Ok(out.checks);
        }
        // Packed: rebuilt as a stream, written nowhere, every chunk checked and the whole
        // SHA-256 compared. Byte for byte the backup that was verified when it was taken (its
        // scan and fingerprints then), so nothing more is learnt from opening it again.
        self.check_rebuild(inv, entry)?;
        Ok(["size", "sha256", "blocks"].map(str::to_owned).to_vec())
    }
}

/// What `verify` found in the block store itself, beyond each backup.
#[derive(Debug, Default)]
pub struct StoreCheck {
    /// Packs checked whole (SHA-256 is their name, every chunk decompresses to its hash).
    pub packs: usize,
    /// One line per problem: a damaged pack, a chunk a packed backup lists that nothing holds.
    pub problems: Vec<String>,
}

impl Store {
    /// Checks every pack whole, and that every chunk a packed backup lists is held by a pack
    /// or a plain backup.
    pub fn check_packs(&self, inv: &Inventory) -> Result<StoreCheck> {
        let packs = self.packs();
        let index = packs
            .index()
            .map_err(|e| Error::io("read", packs.dir(), e))?;
        let mut out = StoreCheck::default();
        for d in &index.damaged {
            out.problems.push(d.to_string());
        }
        let mut bad_packs = HashSet::new();
        for p in &index.packs {
            out.packs += 1;
            match p.verify() {
                Ok(Ok(())) => {}
                Ok(Err(d)) => {
                    bad_packs.insert(p.name.clone());
                    out.problems.push(d.to_string());
                }
                Err(e) => out
                    .problems
                    .push(format!("pack `{}` cannot be read: {e}", p.name)),
            }
        }
        let held: HashSet<&Hash> = plains_ref(self, inv);
        for b in inv
            .backups
            .iter()
            .filter(|b| b.manifest.storage == Storage::Packed)
        {
            let Some(map) = &b.manifest.blocks else {
                out.problems.push(format!(
                    "backup `{}` is packed but its manifest has no block map",
                    b.id
                ));
                continue;
            };
            if let Err(why) = map.well_formed() {
                out.problems.push(format!(
                    "backup `{}`: its block map is damaged: {why}",
                    b.id
                ));
                continue;
            }
            let missing = map
                .chunks
                .iter()
                .filter(|h| !held.contains(h) && !index.contains(h))
                .count();
            if missing > 0 {
                out.problems.push(format!(
                    "backup `{}`: {missing} of its chunks are in no pack and no plain backup",
                    b.id
                ));
            }
        }
        Ok(out)
    }
}

fn plains_ref<'a>(store: &Store, inv: &'a Inventory) -> HashSet<&'a Hash> {
    inv.backups
        .iter()
        .filter(|b| b.manifest.storage == Storage::Plain && b.file_bytes.is_some())
        .filter(|b| store.backup_path(&b.id).is_file())
        .filter_map(|b| b.manifest.blocks.as_ref())
        .flat_map(|m| m.chunks.iter())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ErrorCode;

    /// A pack that cannot be written on a full disk is `insufficient_space` (exit 73) and says
    /// "write", not an I/O error about reading the block store; a read failure still says read.
    #[test]
    fn a_full_disk_while_packing_is_said_as_such() {
        let dir = Path::new("/b/packs");
        let full = failure(
            dir,
            &Failure::write(dir, std::io::Error::from_raw_os_error(libc::ENOSPC)),
        );
        assert_eq!(full.code(), ErrorCode::InsufficientSpace);
        assert!(full.to_string().contains("write the block store"), "{full}");
        let eio = failure(
            dir,
            &Failure::io(dir, std::io::Error::from_raw_os_error(libc::EIO)),
        );
        assert_eq!(eio.code(), ErrorCode::IoError);
        assert!(eio.to_string().contains("read the block store"), "{eio}");
    }
}
