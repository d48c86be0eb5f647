//! The block store's side of the remote (`BACKUP_STORAGE: incremental`): what goes up for a
//! packed backup is what rebuilds it, and no more: the packs that hold its blocks, and one full
//! copy (its base, the newest full backup) for the rest.
//!
//! The steps, in the order a crash never breaks:
//! - [`Remote::push_packed`]: for each local packed backup, the packs its blocks need that the
//!   remote lacks are uploaded (checksummed, their SHA-256 equal to their name, their size read
//!   back), then its record `<id>.packed.<base>.manifest.json` is written with
//!   `If-None-Match: *` (`remote.packed`). A backup whose base changed (a newer full backup
//!   arrived, the old base was packed) gets a record under its new base's name: none is
//!   replaced.
//! - [`Remote::tidy`]: once a backup's packed record is complete (every pack and its base
//!   there), its other records are deleted, then its full record, then its full data, unless a
//!   packed record still leans on that full copy; last, the packs no record names.
//! - [`Remote::verify_packed`] and [`Remote::fetch_packed`]: the packs and the base downloaded
//!   into a private scratch folder (streamed, each hashed), the backup rebuilt chunk by chunk
//!   with every block hash and the whole SHA-256 checked ([`blockstore::rebuild`]).

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};

use chrono::Utc;

use super::s3::{Created, Deleted};
use super::{Inventory, PackRef, Record, Remote, RemoteBackup, PACKED_FORMAT};
use crate::engine::blockstore::{self, Packs, Plain, Rebuilt};
use crate::engine::manifest::Storage;
use crate::engine::store::{self, Entry, Store};
use crate::error::{Error, RemoteFailure, Result};
use crate::failpoint;
use crate::files;
use crate::protocol::RemoteCopy;

/// The packs' folder under the prefix.
pub const PACKS: &str = "packs/";

/// What [`Remote::push_packed`] did.
#[derive(Debug, Default)]
pub struct PackedPush {
    /// One per packed backup whose record is there now.
    pub copies: Vec<RemoteCopy>,
    /// Packs uploaded: (key, bytes).
    pub packs: Vec<(String, u64)>,
    /// Packed backups that could not be copied, and why.
    pub warnings: Vec<String>,
}

/// What [`Remote::tidy`] did.
#[derive(Debug, Default)]
pub struct Tidied {
    /// Keys deleted.
    pub removed: Vec<String>,
    /// What was kept on purpose, said to the operator.
    pub notes: Vec<String>,
    /// Remote backups whose record names something missing: warnings wherever they are seen.
    pub problems: Vec<String>,
}

impl Remote {
    fn corrupt(&self, why: String) -> Error {
        Error::Remote {
            failure: RemoteFailure::Corrupt,
            url: self.url(),
            why,
        }
    }

    /// Writes the packed records of the local packed backups (all of them, or with
    /// `only_remote` only those the remote already holds, as pre_run does), each leaning on the
    /// newest local full backup that the remote holds as a full copy. `inv` is the remote as it
    /// is now (after the full uploads of this run).
    #[allow(clippy::too_many_lines)]
    pub fn push_packed(
        &self,
        store: &Store,
        local: &store::Inventory,
        inv: &Inventory,
        only_remote: bool,
    ) -> Result<PackedPush> {
        let mut out = PackedPush::default();
        // Oldest first, as full uploads go.
        let packed: Vec<&Entry> = local
            .backups
            .iter()
            .rev()
            .filter(|e| e.manifest.storage == Storage::Packed)
            .filter(|e| !only_remote || inv.get(&e.id).is_some())
            .collect();
        if packed.is_empty() {
            return Ok(out);
        }
        // The base: the newest local full backup with a block map whose full copy is remote.
        let base = local.backups.iter().find(|e| {
            e.manifest.storage == Storage::Plain
                && e.manifest.blocks.is_some()
                && inv.get(&e.id).is_some_and(|b| {
                    b.full
                        .as_ref()
                        .is_some_and(|f| f.sha256.eq_ignore_ascii_case(&e.manifest.sha256))
                        && b.data_size == Some(e.manifest.bytes)
                })
        });
        let base_chunks: HashSet<blockstore::Hash> = base
            .and_then(|b| b.manifest.blocks.as_ref())
            .map(|m| m.chunks.iter().copied().collect())
            .unwrap_or_default();
        let packs = store.packs();
        let index = packs
            .index()
            .map_err(|e| Error::io("read", packs.dir(), e))?;
        let mut uploaded_now: BTreeMap<String, u64> = BTreeMap::new();
        for e in packed {
            let started = std::time::Instant::now();
            let name = Self::packed_name(&e.id, base.map(|b| b.id.as_str()));
            let copy = |state: &str| RemoteCopy {
                url: format!(
                    "s3://{}/{}",
                    self.location().bucket,
                    self.location().key(&name)
                ),
                key: self.location().key(&name),
                manifest_key: self.location().key(&name),
                bytes: e.manifest.bytes,
                sha256: e.manifest.sha256.clone(),
                parts: 0,
                state: state.to_owned(),
                seconds: started.elapsed().as_secs_f64(),
            };
            if let Some(rb) = inv.get(&e.id) {
                if !rb.record.sha256.eq_ignore_ascii_case(&e.manifest.sha256) {
                    return Err(self.conflict(&rb.record_name, &rb.record));
                }
                if rb.record_name == name {
                    // A pack of its record lost on the server is uploaded again from here.
                    for p in &rb.record.packs {
                        let local = packs.dir().join(p.name.strip_prefix(PACKS).unwrap_or(""));
                        let there =
                            inv.packs.contains_key(&p.name) || uploaded_now.contains_key(&p.name);
                        if !there && local.is_file() {
                            self.upload_pack(&local, &p.name, p.bytes)?;
                            uploaded_now.insert(p.name.clone(), p.bytes);
                            out.packs.push((self.location().key(&p.name), p.bytes));
                        }
                    }
                    out.copies.push(copy("already_there"));
                    continue;
                }
                if rb.superseded.contains(&name) {
                    out.copies.push(copy("already_there"));
                    continue;
                }
            }
            let Some(map) = e.manifest.blocks.as_ref() else {
                out.warnings.push(format!(
                    "`{}` is packed but its manifest has no block map: it has no remote copy (`ducksafe verify {}`)",
                    e.id, e.id
                ));
                continue;
            };
            let (needed, missing) = packs_for(map, &base_chunks, &index);
            if missing > 0 {
                let kept = if inv.get(&e.id).is_some() {
                    "its remote copy stays as it is"
                } else {
                    "it has no remote copy yet"
                };
                out.warnings.push(match base {
                    Some(b) => format!(
                        "packed backup `{}`: {missing} of its blocks are in no local pack and not in `{}`, the newest full backup on the remote: {kept}; `ducksafe verify --all` checks the block store",
                        e.id, b.id
                    ),
                    None => format!(
                        "packed backup `{}`: {missing} of its blocks are in the newest backup's file, which is not on the remote yet: {kept}; `ducksafe push` uploads the newest backup first",
                        e.id
                    ),
                });
                continue;
            }
            for (pack, bytes) in &needed {
                let remote_name = format!("{PACKS}{pack}");
                let there = inv
                    .packs
                    .get(&remote_name)
                    .or_else(|| uploaded_now.get(&remote_name));
                match there {
                    Some(size) if size == bytes => {}
                    Some(size) => {
                        return Err(self.corrupt(format!(
                            "`{}` is {size} bytes on the server, the local pack of that name (its SHA-256) is {bytes}: it was changed behind ducksafe's back and is not replaced",
                            self.location().key(&remote_name)
                        )))
                    }
                    None => {
                        self.upload_pack(&packs.dir().join(pack), &remote_name, *bytes)?;
                        uploaded_now.insert(remote_name.clone(), *bytes);
                        out.packs
                            .push((self.location().key(&remote_name), *bytes));
                    }
                }
            }
            let manifest_path = store.manifest_path(&e.id);
            let manifest_json: serde_json::Value = std::fs::read(&manifest_path)
                .map_err(|err| Error::io("read manifest", &manifest_path, err))
                .and_then(|b| {
                    serde_json::from_slice(&b).map_err(|err| Error::VerificationFailed {
                        path: manifest_path.clone(),
                        why: format!("the manifest does not parse: {err}"),
                    })
                })?;
            let record = Record {
                format: PACKED_FORMAT,
                id: e.id.clone(),
                data: String::new(),
                bytes: e.manifest.bytes,
                sha256: e.manifest.sha256.clone(),
                parts: 0,
                e_tag: None,
                uploaded_at: Utc::now(),
                ducksafe_version: env!("CARGO_PKG_VERSION").to_owned(),
                manifest: manifest_json,
                storage: Storage::Packed,
                packs: needed
                    .iter()
                    .map(|(n, b)| PackRef {
                        name: format!("{PACKS}{n}"),
                        bytes: *b,
                    })
                    .collect(),
                base: base.map(|b| b.id.clone()),
            };
            let body = serde_json::to_vec_pretty(&record)
                .map_err(|err| Error::Internal(format!("cannot write a remote manifest: {err}")))?;
            match self.client.put_new(&name, &body)? {
                Created::Made => {}
                Created::AlreadyThere => match self.read_record(&name)? {
                    Some(r) if r.sha256.eq_ignore_ascii_case(&e.manifest.sha256) => {}
                    Some(r) => return Err(self.conflict(&name, &r)),
                    None => {
                        return Err(Error::Remote {
                            failure: RemoteFailure::Conflict,
                            url: self.url(),
                            why: format!(
                                "`{}` was refused as existing, yet cannot be read",
                                self.location().key(&name)
                            ),
                        })
                    }
                },
            }
            // The packed record is there; the full copy (if any) goes in `tidy`.
            failpoint::hit("remote.packed");
            out.copies.push(copy("uploaded"));
        }
        Ok(out)
    }

    /// Uploads one local pack as `remote_name`, proven: the SHA-256 of the bytes sent is the
    /// pack's name, and the server holds its size.
    fn upload_pack(&self, path: &Path, remote_name: &str, bytes: u64) -> Result<()> {
        let key = self.location().key(remote_name);
        let want = remote_name
            .strip_prefix(PACKS)
            .and_then(|n| n.strip_suffix(blockstore::pack::EXT))
            .unwrap_or_default();
        let _step = crate::progress::step(
            &format!("uploading pack {}", &want[..12.min(want.len())]),
            Some(bytes),
        );
        let up = self.client.put_file(
            remote_name,
            path,
            bytes,
            true,
            &mut |upload_id| self.note_upload(remote_name, upload_id),
            &|n| crate::progress::advance(n),
        )?;
        if up.created && !up.sha256.eq_ignore_ascii_case(want) {
            let _ = self.client.delete(remote_name);
            return Err(Error::VerificationFailed {
                path: path.to_path_buf(),
                why: format!(
                    "the pack's bytes have SHA-256 {}, not its name's: it is damaged (`ducksafe verify --all`); the remote copy was deleted",
                    up.sha256
                ),
            });
        }
        let head = self.client.head(remote_name)?;
        match head {
            Some(h) if h.size == bytes => Ok(()),
            Some(h) => Err(self.corrupt(format!(
                "`{key}` is {} bytes on the server right after its upload, not {bytes}; no record names it",
                h.size
            ))),
            None => Err(self.corrupt(format!("`{key}` is missing right after its upload"))),
        }
    }

    /// Whether the packed record of `b` has everything it names: each pack with its size, and
    /// its base's full copy.
    pub fn missing_of(&self, inv: &Inventory, b: &RemoteBackup) -> Option<String> {
        for p in &b.record.packs {
            match inv.packs.get(&p.name) {
                Some(size) if *size == p.bytes => {}
                Some(size) => {
                    return Some(format!(
                        "`{}` is {size} bytes, its record says {}",
                        self.location().key(&p.name),
                        p.bytes
                    ))
                }
                None => return Some(format!("`{}` is missing", self.location().key(&p.name))),
            }
        }
        if let Some(base) = &b.record.base {
            let ok = inv.get(base).is_some_and(|bb| {
                bb.full
                    .as_ref()
                    .is_some_and(|f| bb.data_size == Some(f.bytes))
            });
            if !ok {
                return Some(format!(
                    "the full copy of `{base}` that its other blocks come from is missing"
                ));
            }
        }
        None
    }

    /// After packed records are written: deletes what they make unneeded. For each packed
    /// backup whose record is complete, its other records go, then its full record and then
    /// its full data, unless a packed record leans on that full copy; then the packs no record
    /// names (not while a record that cannot be read may name some).
    pub fn tidy(&self, inv: &Inventory) -> Result<Tidied> {
        let mut out = Tidied::default();
        let mut unsettled = false;
        let mut complete: Vec<&RemoteBackup> = Vec::new();
        let mut gone: HashSet<&str> = HashSet::new();
        // First the superseded packed records of the backups whose record is complete.
        for b in inv.backups.iter().filter(|b| b.is_packed()) {
            if let Some(why) = self.missing_of(inv, b) {
                unsettled |= !b.superseded.is_empty();
                out.problems.push(format!(
                    "remote backup `{}` is incomplete ({why}): `ducksafe verify --remote {}`",
                    b.id, b.id
                ));
                continue;
            }
            complete.push(b);
            let full_name = Self::manifest_name(&b.id);
            for name in b.superseded.iter().filter(|n| **n != full_name) {
                match self.client.delete(name)? {
                    Deleted::Deleted => {
                        gone.insert(name.as_str());
                        out.removed.push(self.location().key(name));
                    }
                    Deleted::Retained => unsettled = true,
                }
            }
        }
        // A record that cannot be read may lean on any full copy: none goes while one is there.
        if !inv.unreadable.is_empty() {
            out.notes.push(format!(
                "no older full copy was deleted: {} remote record(s) cannot be read, and may be rebuilt from one",
                inv.unreadable.len()
            ));
            return Ok(out);
        }
        // Then the full copies no record (read or left) leans on: record first, then data.
        let leans_on = |id: &str| -> Option<&str> {
            inv.backups.iter().find_map(|o| {
                let by_read = o.record.base.as_deref() == Some(id);
                let by_left = o.superseded.iter().any(|n| {
                    !gone.contains(n.as_str()) && *n == Self::packed_name(&o.id, Some(id))
                });
                (by_read || by_left).then_some(o.id.as_str())
            })
        };
        for b in complete {
            let Some(full) = &b.full else { continue };
            if let Some(user) = leans_on(&b.id) {
                out.notes.push(format!(
                    "the full copy of `{}` is kept: packed backup `{user}` is rebuilt from it",
                    b.id
                ));
                continue;
            }
            let full_name = Self::manifest_name(&b.id);
            match self.client.delete(&full_name)? {
                Deleted::Deleted => out.removed.push(self.location().key(&full_name)),
                Deleted::Retained => {
                    out.notes.push(format!(
                        "the full copy of `{}` is retained (Object Lock) beside its packed record",
                        b.id
                    ));
                    continue;
                }
            }
            if b.data_size.is_some() {
                match self.client.delete(&full.data)? {
                    Deleted::Deleted => out.removed.push(self.location().key(&full.data)),
                    Deleted::Retained => out.notes.push(format!(
                        "`{}` is retained (Object Lock); its record is gone",
                        self.location().key(&full.data)
                    )),
                }
            }
        }
        if unsettled || !inv.unreadable.is_empty() {
            return Ok(out);
        }
        out.removed.extend(self.collect_packs(inv)?);
        Ok(out)
    }

    /// Deletes the packs that no record of `inv` names. Returns their keys.
    pub fn collect_packs(&self, inv: &Inventory) -> Result<Vec<String>> {
        let named: HashSet<&str> = inv
            .backups
            .iter()
            .flat_map(|b| b.record.packs.iter().map(|p| p.name.as_str()))
            .collect();
        let mut removed = Vec::new();
        for name in inv.packs.keys().filter(|n| !named.contains(n.as_str())) {
            if self.client.delete(name)? == Deleted::Deleted {
                removed.push(self.location().key(name));
            }
        }
        Ok(removed)
    }

    /// A packed backup's bytes on the remote that no other backup shares: the packs only its
    /// record names.
    pub fn own_bytes(inv: &Inventory, b: &RemoteBackup) -> u64 {
        if !b.is_packed() {
            return b.record.bytes;
        }
        b.record
            .packs
            .iter()
            .filter(|p| {
                !inv.backups
                    .iter()
                    .any(|o| o.id != b.id && o.record.packs.iter().any(|q| q.name == p.name))
            })
            .map(|p| p.bytes)
            .sum()
    }

    /// `verify --remote` of a packed backup: every pack it names and its base's full copy
    /// there with their sizes; with `read_data`, downloaded into `scratch` and rebuilt to a
    /// hash, every block checked (nothing kept).
    pub fn verify_packed(
        &self,
        inv: &Inventory,
        b: &RemoteBackup,
        read_data: bool,
        scratch: &Path,
    ) -> Result<Vec<String>> {
        if let Some(why) = self.missing_of(inv, b) {
            return Err(self.corrupt(format!("remote backup `{}`: {why}", b.id)));
        }
        let mut checks = vec!["manifest".to_owned(), "packs".to_owned()];
        if b.record.base.is_some() {
            checks.push("base".to_owned());
        }
        if read_data {
            self.rebuild_remote(inv, b, scratch, None)?;
            checks.extend(["blocks".to_owned(), "sha256".to_owned()]);
        }
        Ok(checks)
    }

    /// Downloads a packed remote backup's packs and base into `store`'s folder, rebuilds it
    /// there (every block and the SHA-256 checked) and publishes it as a local full backup.
    pub fn fetch_packed(
        &self,
        inv: &Inventory,
        b: &RemoteBackup,
        store: &Store,
    ) -> Result<PathBuf> {
        let temp = store.temp_path(&b.id);
        let result = (|| {
            let f = files::create_private(&temp).map_err(|e| Error::io("create", &temp, e))?;
            self.rebuild_remote(inv, b, store.dir(), Some((&f, &temp)))?;
            drop(f);
            let mut manifest = b.manifest.clone();
            manifest.storage = Storage::Plain;
            store.publish(&temp, &manifest)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&temp);
        }
        result
    }

    /// Downloads what `b` needs into a private folder under `scratch` (removed after), then
    /// rebuilds it into `into` (or as a stream, written nowhere), every block's hash and the
    /// whole SHA-256 checked.
    fn rebuild_remote(
        &self,
        inv: &Inventory,
        b: &RemoteBackup,
        scratch: &Path,
        into: Option<(&File, &Path)>,
    ) -> Result<Rebuilt> {
        let map = b.manifest.blocks.as_ref().ok_or_else(|| {
            self.corrupt(format!(
                "remote backup `{}` is packed but has no block map",
                b.id
            ))
        })?;
        let dir = Scratch::new(scratch, &b.id)?;
        let packs_dir = dir.path.join(blockstore::PACKS_DIR);
        files::create_private_dir(&packs_dir).map_err(|e| Error::io("create", &packs_dir, e))?;
        for p in &b.record.packs {
            let file_name = p.name.strip_prefix(PACKS).unwrap_or(&p.name);
            let want = file_name
                .strip_suffix(blockstore::pack::EXT)
                .unwrap_or_default();
            let path = packs_dir.join(file_name);
            self.download_checked(&p.name, &path, p.bytes, want)?;
        }
        let base = match &b.record.base {
            None => None,
            Some(base) => {
                let bb = inv.get(base).ok_or_else(|| {
                    self.corrupt(format!(
                        "remote backup `{}` is rebuilt from the full copy of `{base}`, which is not there",
                        b.id
                    ))
                })?;
                let full = bb.full.as_ref().ok_or_else(|| {
                    self.corrupt(format!(
                        "remote backup `{}` is rebuilt from the full copy of `{base}`, which is not there",
                        b.id
                    ))
                })?;
                let base_map = bb.manifest.blocks.clone().ok_or_else(|| {
                    self.corrupt(format!("the full copy of `{base}` has no block map"))
                })?;
                let path = dir.path.join(store::backup_file_name(base));
                self.download_checked(&full.data, &path, full.bytes, &full.sha256)?;
                Some((path, base_map))
            }
        };
        let index = Packs::of(&dir.path)
            .index()
            .map_err(|e| Error::io("read", &packs_dir, e))?;
        if let Some(d) = index.damaged.first() {
            return Err(self.corrupt(format!(
                "remote backup `{}`: {d} (downloaded from `{}`)",
                b.id,
                self.location().key(PACKS)
            )));
        }
        let plains: Vec<Plain> = base.iter().map(|(path, map)| Plain { path, map }).collect();
        let sources = blockstore::Sources::new(&index, &plains)
            .map_err(|f| crate::engine::incremental::failure(&dir.path, &f))?;
        let origin = PathBuf::from(self.location().key(&b.record_name));
        let _shown = crate::progress::step(&format!("rebuilding {}", b.id), Some(b.manifest.bytes));
        let done = match into {
            Some((out, out_path)) => {
                blockstore::rebuild::rebuild_to_file(map, &sources, out, out_path)
            }
            None => blockstore::rebuild(map, &sources, true, &mut |_| Ok(())),
        }
        .map_err(|f| match f {
            blockstore::Failure::Io { .. } => crate::engine::incremental::failure(&origin, &f),
            other => self.corrupt(format!(
                "remote backup `{}` cannot be rebuilt: {other}",
                b.id
            )),
        })?;
        let got = done.sha256.map(|s| files::hex(&s)).unwrap_or_default();
        if got != b.manifest.sha256 || done.bytes != b.manifest.bytes {
            return Err(self.corrupt(format!(
                "remote backup `{}` rebuilt as {} bytes with SHA-256 {got}; its manifest says {} bytes with {}: not used",
                b.id, done.bytes, b.manifest.bytes, b.manifest.sha256
            )));
        }
        Ok(done)
    }

    /// Downloads `name` into a new private file at `path`, proven to be `bytes` long with the
    /// SHA-256 `sha256`.
    fn download_checked(&self, name: &str, path: &Path, bytes: u64, sha256: &str) -> Result<()> {
        let mut f = files::create_private(path).map_err(|e| Error::io("create", path, e))?;
        let _step = crate::progress::step(
            &format!("downloading {}", files::file_name(Path::new(name))),
            Some(bytes),
        );
        let (got, sha) = self
            .client
            .download(name, &mut f, &|n| crate::progress::advance(n))?;
        if got != bytes || !sha.eq_ignore_ascii_case(sha256) {
            // A pack is named by its content: deleting it lets `push` put the right one back.
            let repair = if name.starts_with(PACKS) {
                format!(
                    "; to repair it, delete `{}` on the server and run `ducksafe push`, which uploads it again if this machine still holds it",
                    self.location().key(name)
                )
            } else {
                String::new()
            };
            return Err(self.corrupt(format!(
                "`{}` downloaded as {got} bytes with SHA-256 {sha}; its record says {bytes} bytes with {sha256}: it was changed on the server, and nothing was restored from it{repair}",
                self.location().key(name)
            )));
        }
        Ok(())
    }
}

/// The packs (name → bytes) that hold the blocks of `map` that `base` does not, and how many of
/// those blocks no pack holds. Pure: the block store's index is read by the caller.
fn packs_for(
    map: &blockstore::BlockMap,
    base: &HashSet<blockstore::Hash>,
    index: &blockstore::Index,
) -> (BTreeMap<String, u64>, usize) {
    let mut needed = BTreeMap::new();
    let mut missing = 0usize;
    for h in map.chunks.iter().filter(|h| !base.contains(*h)) {
        match index.get(h) {
            Some((p, _)) => {
                needed.insert(p.name.clone(), p.bytes);
            }
            None => missing += 1,
        }
    }
    (needed, missing)
}

/// A private folder for downloads, removed when dropped.
struct Scratch {
    path: PathBuf,
}

/// The scratch folders' names start with this (then `<id>-<pid>`).
fn scratch_prefix() -> String {
    format!("{}remote-", files::TEMP_PREFIX)
}

/// Removes the scratch folders in `dir` that a process no longer running left (a
/// `restore --remote` or `verify --remote --read-data` killed mid-way: up to a full copy of the
/// database each). Returns their names.
pub fn sweep_scratch(dir: &Path) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let prefix = scratch_prefix();
    let mut removed = Vec::new();
    for e in rd.filter_map(std::result::Result::ok) {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(&prefix) else {
            continue;
        };
        let alive = rest
            .rsplit_once('-')
            .and_then(|(_, pid)| pid.parse::<u32>().ok())
            .is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists());
        if !alive
            && e.file_type().is_ok_and(|t| t.is_dir())
            && std::fs::remove_dir_all(e.path()).is_ok()
        {
            removed.push(name);
        }
    }
    removed
}

impl Scratch {
    fn new(parent: &Path, id: &str) -> Result<Scratch> {
        sweep_scratch(parent);
        let path = parent.join(format!("{}{id}-{}", scratch_prefix(), std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        files::create_private_dir(&path).map_err(|e| Error::io("create", &path, e))?;
        Ok(Scratch { path })
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::blockstore::testdb;

    /// The older of two backups, packed against the newer: its blocks the newer file lacks are
    /// in the one pack (named with its size), the rest in the base; without the base, the
    /// blocks only the newer file held are counted as missing, never silently dropped.
    #[test]
    fn a_packed_backup_needs_the_packs_holding_what_its_base_lacks() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = testdb::two_runs(dir.path());
        let (ma, mb) = (testdb::map(&a), testdb::map(&b));
        let packs = Packs::of(dir.path());
        packs.ensure().unwrap();
        blockstore::convert(
            &packs,
            Plain { path: &a, map: &ma },
            &[],
            &[Plain { path: &b, map: &mb }],
            false,
        )
        .unwrap();
        let index = packs.index().unwrap();
        assert_eq!(index.packs.len(), 1);
        let base: HashSet<_> = mb.chunks.iter().copied().collect();
        let (needed, missing) = packs_for(&ma, &base, &index);
        assert_eq!(missing, 0);
        assert_eq!(
            needed.into_iter().collect::<Vec<_>>(),
            [(index.packs[0].name.clone(), index.packs[0].bytes)]
        );
        let (_, missing) = packs_for(&ma, &HashSet::new(), &index);
        let shared = ma.chunks.iter().filter(|h| !index.contains(h)).count();
        assert!(shared > 0);
        assert_eq!(missing, shared);
        // The newest backup itself needs nothing beyond its own full copy.
        assert_eq!(packs_for(&mb, &base, &index), (BTreeMap::new(), 0));
    }
}
