//! The backup directory: its names (the one place they are made), its inventory, publication
//! of a new backup, `latest`, rotation (the deletions a [`retention`] plan decides), and the
//! cleanup of what an interrupted run left behind.
//!
//! Layout of a backup directory:
//! ```text
//! backups/                                   0700
//!   simulation_20250818_143022.duckdb        0600  the backup (one file, no WAL)
//!   simulation_20250818_143022.duckdb.sha256 0600  `sha256sum -c` line
//!   simulation_20250818_143022.manifest.json 0600  what it holds and how it was verified
//!   latest.duckdb -> simulation_20250818_143022.duckdb   (relative symlink)
//!   .ducksafe.lock                           0600  the directory lock (holder's PID inside)
//!   .ducksafe-ids                            0600  every id ever issued here, in order
//!   .ducksafe-database.json                  0600  the one database these backups belong to
//!                                                  (see super::identity)
//!   .ducksafe-run.json                       0600  a guarded run in progress, recorded here
//!                                                  by earlier versions or when the database's
//!                                                  folder is read-only; otherwise the lease is
//!                                                  beside the database (super::lease)
//!   .ducksafe-tmp-…                                in-flight files; never a backup name
//!   quarantine/                              0700  databases moved aside by restores
//! ```
//! Invariants:
//! - A file appears under a backup name only by `rename` of a fully written, fsynced and
//!   verified temporary file, after its manifest; renames never replace an existing backup.
//! - An id names one backup forever: it is recorded in `.ducksafe-ids` (durably, before its
//!   manifest is written) and never issued again, even after its backup is deleted or when the
//!   clock steps back. The order of that file is the order backups were made in.
//! - Readers see whole backups: publication and deletion happen inside the exclusive
//!   [`Section`], and [`Store::inventory`] reads inside the shared one.
//! - ducksafe deletes only what it made: backups that have a ducksafe manifest, their sidecars,
//!   and `.ducksafe-tmp-*` names. Symlinks are never followed for a write or a delete, and a
//!   backup name that is not a regular file is never trusted.

use std::fs;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};

use super::database::Owner;
use super::folders::{self, Kind};
use super::lease;
use super::lock::{DirLock, Section};
use super::manifest::{self, Manifest, Storage};
use super::retention::{self, Candidate, Plan};
use crate::error::{Error, Result};
use crate::failpoint;
use crate::files;
use crate::protocol::RotationReport;

/// Name of the symlink to the newest verified backup.
pub const LATEST: &str = "latest.duckdb";
const BACKUP_EXT: &str = ".duckdb";
pub const MANIFEST_EXT: &str = ".manifest.json";
const SIDECAR_EXT: &str = ".duckdb.sha256";
/// Every id issued in this directory, one a line, in the order they were issued.
const IDS: &str = ".ducksafe-ids";

/// A backup directory that exists, is a directory, and is private to this user.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
    /// When set, the inventory holds only this database's backups (see [`super::identity`]).
    owner: Option<Owner>,
}

/// One backup known to the store.
#[derive(Debug, Clone)]
pub struct Entry {
    pub id: String,
    pub manifest: Manifest,
    /// Size of the backup file on disk (`None` when it is missing).
    pub file_bytes: Option<u64>,
}

/// Everything found in the directory.
#[derive(Debug, Default)]
pub struct Inventory {
    /// Backups with a manifest and a regular file, newest first.
    pub backups: Vec<Entry>,
    /// Files that look like backups but have no (readable) ducksafe manifest; never deleted.
    pub unmanaged: Vec<(String, String)>,
    /// Manifests whose backup file is missing or not a regular file (deleted or moved by hand).
    pub incomplete: Vec<String>,
    /// Manifests of backups whose publication was cut short (their temporary file is still
    /// there): no backups, and no problem either; the next backup removes what they left.
    pub interrupted: Vec<String>,
}

impl Store {
    /// Opens the backup directory, creating it (`0700`, missing parents too) when `create` is
    /// set, and refuses one that is not private or is a symlink (see [`super::folders`]: a link
    /// is never followed to ducksafe's own folder, which must be checked and kept private as
    /// what it is).
    pub fn open(dir: &Path, create: bool) -> Result<Store> {
        folders::check(dir, Kind::BackupDir)?;
        match fs::metadata(dir) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
                if let Some(parent) = dir.parent() {
                    fs::create_dir_all(parent)
                        .map_err(|e| Error::io("create backup directory", parent, e))?;
                }
                match files::create_private_dir(dir) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(Error::io("create backup directory", dir, e)),
                }
                let _ = files::sync_dir(files::parent_of(dir));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::NoBackupDir {
                    dir: dir.to_path_buf(),
                })
            }
            Err(e) => return Err(Error::io("open backup directory", dir, e)),
        }
        let meta = fs::metadata(dir).map_err(|e| Error::io("open backup directory", dir, e))?;
        if let Some(why) = files::unsafe_folder_reason(dir, &meta) {
            return Err(Error::BackupDirUnsafe {
                dir: dir.to_path_buf(),
                why,
            });
        }
        if !create {
            return Ok(Store {
                dir: dir.to_path_buf(),
                owner: None,
            });
        }
        // Writable by us? (root passes access checks anyway, so try the real thing.)
        let probe = files::temp_sibling(&dir.join("probe"), "probe");
        match files::create_private(&probe) {
            Ok(_) => {
                let _ = fs::remove_file(&probe);
            }
            Err(e) => return Err(not_writable(dir, &e)),
        }
        Ok(Store {
            dir: dir.to_path_buf(),
            owner: None,
        })
    }

    /// What creating the missing directory `dir` (with its missing parents, as [`Store::open`]
    /// does) needs, checked without creating anything (a dry run's and `validate`'s check): its
    /// nearest existing ancestor is a directory this user may write in (`access(W_OK)`, which
    /// root passes except on a read-only filesystem). Returns that ancestor: the filesystem the
    /// backups would land on. The refusal is the `io_error` the creation itself would end in.
    pub fn check_creatable(dir: &Path) -> Result<PathBuf> {
        let cannot = |why: std::io::Error| Error::io("create backup directory", dir, why);
        for at in dir.ancestors().skip(1) {
            let at = if at.as_os_str().is_empty() {
                Path::new(".")
            } else {
                at
            };
            match fs::metadata(at) {
                Ok(m) if m.is_dir() => {
                    files::access_write(at).map_err(|e| {
                        cannot(std::io::Error::new(
                            e.kind(),
                            format!("`{}` cannot be written in: {e}", at.display()),
                        ))
                    })?;
                    return Ok(at.to_path_buf());
                }
                Ok(_) => {
                    return Err(cannot(std::io::Error::other(format!(
                        "`{}` is not a directory",
                        at.display()
                    ))))
                }
                // Missing too: created along with it, so what decides is further up.
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
                    ) => {}
                Err(e) => return Err(Error::io("create backup directory", at, e)),
            }
        }
        Err(cannot(std::io::Error::other("no folder above it exists")))
    }

    /// What [`Store::open`] refuses of a directory it cannot write into, without writing
    /// anything (a dry run's check): `access(W_OK)`, which root passes except on a read-only
    /// filesystem.
    pub fn check_writable(&self) -> Result<()> {
        files::access_write(&self.dir).map_err(|e| not_writable(&self.dir, &e))
    }

    /// The same directory, seen by one database: other databases' backups leave the inventory
    /// (they are listed as unmanaged, never used or deleted).
    #[must_use]
    pub fn owned_by(mut self, owner: Owner) -> Store {
        self.owner = Some(owner);
        self
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Tightens the directory to `0700` when it is open to group or others (a `mkdir -p`
    /// before ducksafe first ran): the note that says so, or why it could not be done. For the
    /// commands that write here (see [`super::folders`]).
    pub fn tighten(&self) -> Option<String> {
        folders::tighten(&self.dir)
    }

    /// Takes the directory's lock (see [`DirLock`]). A backup that takes it, once it has
    /// checked that the directory is its database's ([`super::identity`]), sweeps what an
    /// interrupted run left with [`Store::clean_leftovers`] and names it; no other command does.
    pub fn lock_only(&self) -> Result<DirLock> {
        DirLock::acquire(&self.dir)
    }

    pub fn backup_path(&self, id: &str) -> PathBuf {
        self.dir.join(backup_file_name(id))
    }
    pub fn manifest_path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}{MANIFEST_EXT}"))
    }
    pub fn sidecar_path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}{SIDECAR_EXT}"))
    }
    pub fn latest_path(&self) -> PathBuf {
        self.dir.join(LATEST)
    }
    /// The temporary name a backup is written under before it is published.
    pub fn temp_path(&self, id: &str) -> PathBuf {
        self.dir.join(format!(
            "{}backup-{}-{id}{BACKUP_EXT}",
            files::TEMP_PREFIX,
            std::process::id()
        ))
    }

    /// The id for a new backup: `<stem>_YYYYMMDD_HHMMSS` (UTC), with `_2`, `_3`… when that
    /// name was ever issued here before or is taken by a file. [`Store::publish`] records it, so
    /// it is never issued again; between the two, the caller holds the directory lock.
    pub fn next_id(&self, stem: &str, now: DateTime<Utc>) -> Result<String> {
        let issued: std::collections::HashSet<String> = self.issued_ids()?.into_iter().collect();
        let base = base_id(stem, now);
        let taken = |id: &str| {
            issued.contains(id)
                || [
                    self.backup_path(id),
                    self.manifest_path(id),
                    self.sidecar_path(id),
                ]
                .iter()
                .any(|p| fs::symlink_metadata(p).is_ok())
        };
        let id = if taken(&base) {
            (2..=u32::MAX)
                .map(|n| format!("{base}_{n}"))
                .find(|id| !taken(id))
                .ok_or_else(|| Error::Internal(format!("every id for `{base}` is used")))?
        } else {
            base
        };
        Ok(id)
    }

    /// The ids issued here, oldest first. A directory from before ids were recorded starts
    /// with its backups' ids (by date), so none of them is issued again either.
    pub fn issued_ids(&self) -> Result<Vec<String>> {
        let path = self.dir.join(IDS);
        match files::open_read_nofollow(&path) {
            Ok(mut f) => {
                let mut s = String::new();
                std::io::Read::read_to_string(&mut f, &mut s)
                    .map_err(|e| Error::io("read", &path, e))?;
                Ok(s.lines()
                    .filter(|l| !l.is_empty())
                    .map(str::to_owned)
                    .collect())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut known: Vec<(DateTime<Utc>, String)> = self
                    .inventory()?
                    .backups
                    .into_iter()
                    .map(|b| (b.manifest.created_at, b.id))
                    .collect();
                known.sort();
                Ok(known.into_iter().map(|(_, id)| id).collect())
            }
            Err(e) => Err(Error::io("read", &path, e)),
        }
    }

    /// Appends `id` to the record of issued ids, durably (appended on an `O_APPEND` descriptor,
    /// then `fsync`). A directory without the record gets one, written whole, that starts with
    /// its existing backups.
    fn record_id(&self, id: &str) -> Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let path = self.dir.join(IDS);
        if fs::symlink_metadata(&path).is_err() {
            // The first record: the backups already here, then this id, written whole
            // (temporary file, fsync, rename), so that a crash never leaves a partial record
            // that would be trusted over the inventory.
            let mut lines = String::new();
            for known in self.issued_ids()? {
                lines.push_str(&known);
                lines.push('\n');
            }
            lines.push_str(id);
            lines.push('\n');
            return files::write_atomic(&path, lines.as_bytes())
                .map_err(|e| Error::io("record the new backup id in", &path, e));
        }
        let lines = format!("{id}\n");
        let mut f = fs::OpenOptions::new()
            .append(true)
            .create(true)
            .mode(files::PRIVATE_FILE_MODE)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path)
            .map_err(|e| Error::io("record the new backup id in", &path, e))?;
        f.write_all(lines.as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(|e| Error::io("record the new backup id in", &path, e))
    }

    /// The last backup made that still exists, by the order ids were issued in (a clock that
    /// stepped back cannot reorder it).
    pub fn last_made(&self, inv: &Inventory) -> Result<Option<String>> {
        Ok(self
            .issued_ids()?
            .into_iter()
            .rev()
            .find(|id| inv.backups.iter().any(|b| &b.id == id)))
    }

    /// True while the backup `id` is listed (its manifest is there), read in the shared
    /// section: a backup that is gone was deleted whole, by rotation or prune.
    pub fn still_listed(&self, id: &str) -> bool {
        let _section = Section::shared(&self.dir);
        fs::symlink_metadata(self.manifest_path(id)).is_ok()
    }

    /// Reads the directory: managed backups (newest first), unmanaged look-alikes, leftovers.
    pub fn inventory(&self) -> Result<Inventory> {
        // No backup is half-published or half-deleted while this reads.
        let _section = Section::shared(&self.dir);
        let mut inv = Inventory::default();
        let mut foreign: Vec<String> = Vec::new();
        let rd = fs::read_dir(&self.dir).map_err(|e| Error::io("list", &self.dir, e))?;
        let mut names: Vec<String> = rd
            .filter_map(std::result::Result::ok)
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        names.sort();
        for name in &names {
            if let Some(id) = name.strip_suffix(MANIFEST_EXT) {
                if name.starts_with('.') {
                    continue;
                }
                let manifest = match Manifest::read(&self.dir.join(name)) {
                    Ok(m) if m.id == id => m,
                    Ok(m) => {
                        let why = format!("the manifest is for another backup (`{}`)", m.id);
                        inv.unmanaged.push((name.clone(), why));
                        continue;
                    }
                    Err(e) => {
                        inv.unmanaged.push((name.clone(), e.to_string()));
                        continue;
                    }
                };
                if let Some(why) = self.owner.as_ref().and_then(|o| o.foreign(&manifest)) {
                    inv.unmanaged.push((name.clone(), why));
                    foreign.push(id.to_owned());
                    continue;
                }
                let path = self.backup_path(id);
                match fs::symlink_metadata(&path) {
                    Ok(m) if m.file_type().is_file() => inv.backups.push(Entry {
                        id: id.to_owned(),
                        manifest,
                        file_bytes: Some(m.len()),
                    }),
                    // Packed: no file of its own (see `super::incremental`).
                    Err(_) if manifest.storage == Storage::Packed => inv.backups.push(Entry {
                        id: id.to_owned(),
                        manifest,
                        file_bytes: None,
                    }),
                    _ if names.iter().any(|n| is_temp_backup_of(n, id)) => {
                        inv.interrupted.push(id.to_owned());
                    }
                    _ => inv.incomplete.push(id.to_owned()),
                }
            }
        }
        for name in &names {
            if let Some(id) = name.strip_suffix(BACKUP_EXT) {
                if name == LATEST || name.starts_with('.') {
                    continue;
                }
                let managed =
                    inv.backups.iter().any(|b| b.id == id) || foreign.iter().any(|f| f == id);
                if !managed {
                    inv.unmanaged
                        .push((name.clone(), "no ducksafe manifest beside it".into()));
                }
            }
        }
        inv.backups.sort_by(|a, b| {
            b.manifest
                .created_at
                .cmp(&a.manifest.created_at)
                .then_with(|| retention::id_order(&b.id, &a.id))
        });
        Ok(inv)
    }

    /// Removes what an interrupted run left: `.ducksafe-tmp-*` entries and manifests or sidecars
    /// whose backup never got published. Returns the names removed. Call with the directory
    /// lock held.
    ///
    /// A manifest or sidecar without its backup is a publication cut short while the temporary
    /// file it was for is still there: always swept. Without one, its backup file was deleted or
    /// moved by hand: only a backup (`orphans`) removes those, saying so, as the runbook
    /// documents; dry runs and other commands leave them (`verify --all` reports them), so a
    /// file moved aside for a moment keeps its manifest.
    pub fn clean_leftovers(&self, orphans: bool) -> Result<Vec<String>> {
        let mut removed = Vec::new();
        // One listing: the names decide both what was in flight and what is left over.
        let names: Vec<String> = fs::read_dir(&self.dir)
            .map_err(|e| Error::io("list", &self.dir, e))?
            .filter_map(std::result::Result::ok)
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        let cut_short = |id: &str| names.iter().any(|n| is_temp_backup_of(n, id));
        for name in &names {
            let path = self.dir.join(name);
            let Ok(meta) = fs::symlink_metadata(&path) else {
                continue;
            };
            let leftover = if name.starts_with(files::TEMP_PREFIX) {
                !meta.is_dir()
            } else if let Some(id) = companion_of(name) {
                // Ours only when it is a regular file and its backup was never published.
                meta.file_type().is_file()
                    && (orphans || cut_short(id))
                    && fs::symlink_metadata(self.backup_path(id)).is_err()
                    && (name.ends_with(SIDECAR_EXT)
                        || Manifest::read(&path)
                            .is_ok_and(|m| m.id == id && m.storage != Storage::Packed))
            } else {
                false
            };
            if leftover {
                // unlink removes a symlink itself, never its target.
                if fs::remove_file(&path).is_ok() {
                    removed.push(name.clone());
                }
            }
        }
        if !removed.is_empty() {
            files::sync_dir(&self.dir).map_err(|e| Error::io("sync", &self.dir, e))?;
        }
        removed.sort();
        Ok(removed)
    }

    /// Publishes a verified temporary backup under `manifest.id`: the id recorded as issued,
    /// then the manifest, the sidecar and the backup itself by a no-replace rename, each durable
    /// before the next.
    pub fn publish(&self, temp: &Path, manifest: &Manifest) -> Result<PathBuf> {
        let id = &manifest.id;
        let final_path = self.backup_path(id);
        let sidecar = self.sidecar_path(id);
        // The id is recorded before anything appears under it, so it is never issued again
        // (a crash after this burns it, harmlessly). The manifest and the sidecar are written
        // and fsynced under temporary names meanwhile: three fsyncs at once share the
        // filesystem's journal commits.
        let sidecar_line = manifest::sidecar_line(&manifest.sha256, &backup_file_name(id));
        let (recorded, staged_manifest, staged_sidecar) = std::thread::scope(|s| {
            let staging_sidecar = s.spawn(|| {
                files::stage(&sidecar, sidecar_line.as_bytes())
                    .map_err(|e| Error::io("write checksum file", &sidecar, e))
            });
            let staging_manifest = s.spawn(|| manifest.stage(&self.manifest_path(id)));
            let recorded = self.record_id(id);
            let joined = |h: std::thread::ScopedJoinHandle<'_, Result<files::Staged>>| {
                h.join()
                    .map_err(|_| Error::Internal("a staging thread panicked".into()))
                    .and_then(|r| r)
            };
            (recorded, joined(staging_manifest), joined(staging_sidecar))
        });
        recorded?;
        let (staged_manifest, staged_sidecar) = (staged_manifest?, staged_sidecar?);
        let _section = Section::exclusive(&self.dir)?;
        let result = (|| {
            let put =
                |s: files::Staged, path: &Path| s.put().map_err(|e| Error::io("write", path, e));
            put(staged_manifest, &self.manifest_path(id))?;
            failpoint::hit("publish.manifest");
            put(staged_sidecar, &sidecar)?;
            failpoint::hit("publish.sidecar");
            // One fsync for both names, before the backup's: a backup never stands durably
            // without its manifest and sidecar (either of those alone is a leftover).
            files::sync_dir(&self.dir).map_err(|e| Error::io("sync", &self.dir, e))?;
            files::rename_noreplace(temp, &final_path)
                .map_err(|e| Error::io("publish backup", &final_path, e))
        })();
        if let Err(e) = result {
            // Nothing half-published stays: no manifest or sidecar without its backup.
            let _ = fs::remove_file(self.manifest_path(id));
            let _ = fs::remove_file(&sidecar);
            return Err(e);
        }
        // Renamed: the backup is in place with its manifest. A failed directory fsync is
        // reported, but nothing that is in place is taken away.
        files::sync_dir(&self.dir).map_err(|e| Error::io("sync", &self.dir, e))?;
        Ok(final_path)
    }

    /// Points `latest.duckdb` at a backup, atomically and durably. Returns a warning instead
    /// when the name is taken by something that is not a symlink (ducksafe never replaces a
    /// user's file).
    pub fn point_latest(&self, id: &str) -> Result<Option<String>> {
        let said = self.swap_latest(id)?;
        files::sync_dir(&self.dir).map_err(|e| Error::io("sync", &self.dir, e))?;
        Ok(said)
    }

    /// [`Store::point_latest`] without the directory's fsync: the caller syncs the directory.
    pub fn swap_latest(&self, id: &str) -> Result<Option<String>> {
        let link = self.latest_path();
        if let Ok(meta) = fs::symlink_metadata(&link) {
            if !meta.file_type().is_symlink() {
                return Ok(Some(format!(
                    "`{}` exists and is not a symlink; it was left alone and does not point to the new backup",
                    link.display()
                )));
            }
        }
        let target = PathBuf::from(backup_file_name(id));
        files::symlink_swap(&target, &link).map_err(|e| Error::io("update", &link, e))?;
        Ok(None)
    }

    /// The id `latest.duckdb` points to, if it is a symlink to a backup name in this directory.
    pub fn latest_id(&self) -> Option<String> {
        let target = fs::read_link(self.latest_path()).ok()?;
        if target.components().count() != 1 {
            return None;
        }
        let name = target.to_str()?;
        name.strip_suffix(BACKUP_EXT).map(str::to_owned)
    }

    /// Where `latest.duckdb` points when that is not a backup in the inventory (deleted by hand,
    /// or a link ducksafe did not make); `None` when it names a backup or does not exist.
    pub fn dangling_latest(&self, inv: &Inventory) -> Option<String> {
        let target = fs::read_link(self.latest_path()).ok()?;
        let named = self.latest_id();
        match named {
            Some(id) if inv.backups.iter().any(|b| b.id == id) => None,
            _ => Some(target.display().to_string()),
        }
    }

    /// Deletes a managed backup: the backup file first (so a crash never leaves a backup without
    /// its manifest), then its sidecar and manifest. Symlinks are unlinked, never followed.
    ///
    /// In the block store, a plain backup's chunks that packed backups need from its file alone
    /// go into a durable pack first, and packs nothing references any more are collected after
    /// (see `super::incremental`). Returns a warning when other packed backups were found
    /// already damaged (chunks in no pack): the deletion does not depend on them.
    pub fn delete(&self, id: &str) -> Result<Option<String>> {
        let backup = self.backup_path(id);
        let before = self.inventory()?;
        let damaged = self.secure_leaving(&before, id)?;
        self.delete_files(id, &backup)?;
        if before
            .backups
            .iter()
            .any(|b| b.manifest.storage == Storage::Packed)
        {
            // The manifest is gone, durably: what only it referenced can go. A failure here
            // loses nothing (the next run collects again).
            if let Err(e) = self.inventory().and_then(|inv| self.collect_packs(&inv)) {
                tracing::warn!("packs not collected after deleting `{id}`: {e}");
            }
        }
        Ok(damaged)
    }

    fn delete_files(&self, id: &str, backup: &Path) -> Result<()> {
        let _section = Section::exclusive(&self.dir)?;
        match fs::symlink_metadata(backup) {
            Ok(m) if m.file_type().is_file() || m.file_type().is_symlink() => {
                fs::remove_file(backup).map_err(|e| Error::io("delete backup", backup, e))?;
            }
            Ok(_) => {
                return Err(Error::io(
                    "delete backup",
                    backup,
                    std::io::Error::other("not a regular file"),
                ))
            }
            Err(_) => {}
        }
        for p in [self.sidecar_path(id), self.manifest_path(id)] {
            match fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("delete", &p, e)),
            }
        }
        files::sync_dir(&self.dir).map_err(|e| Error::io("sync", &self.dir, e))
    }

    /// Rewrites a backup's manifest (pin and unpin).
    pub fn rewrite_manifest(&self, manifest: &Manifest) -> Result<()> {
        manifest.write(&self.manifest_path(&manifest.id))
    }

    /// Finds a backup by `latest`, by id, by file name, or by a path inside this directory.
    pub fn resolve(&self, selector: &str) -> Result<Entry> {
        let inv = self.inventory()?;
        let name = Path::new(selector)
            .file_name()
            .map_or_else(|| selector.to_owned(), |n| n.to_string_lossy().into_owned());
        if selector.contains('/') {
            // A path: it must be inside this backup directory.
            let p = Path::new(selector);
            let parent = fs::canonicalize(files::parent_of(p)).ok();
            let ours = fs::canonicalize(&self.dir).ok();
            if parent.is_none() || parent != ours {
                return Err(Error::BackupNotFound {
                    id: selector.to_owned(),
                    dir: self.dir.clone(),
                });
            }
        }
        // `latest`, `latest.duckdb`, or the link's path (`backups/latest.duckdb`, as the seed's
        // recovery names it).
        let wanted = if selector == "latest" || name == LATEST {
            if let Some(target) = self.dangling_latest(&inv) {
                // Never a silent substitute: the operator decides which backup to put back.
                return Err(Error::DanglingLatest {
                    link: self.latest_path(),
                    target,
                });
            }
            match self.latest_id() {
                Some(id) => id,
                // No link at all (a directory from before `latest`, or its link removed): the
                // newest by date.
                None => {
                    return inv
                        .backups
                        .first()
                        .cloned()
                        .ok_or_else(|| Error::BackupNotFound {
                            id: selector.to_owned(),
                            dir: self.dir.clone(),
                        })
                }
            }
        } else {
            companion_of(&name)
                .or_else(|| name.strip_suffix(BACKUP_EXT))
                .unwrap_or(&name)
                .to_owned()
        };
        inv.backups
            .into_iter()
            .find(|b| b.id == wanted)
            .ok_or_else(|| Error::BackupNotFound {
                id: selector.to_owned(),
                dir: self.dir.clone(),
            })
    }

    /// Bytes used by managed backups.
    pub fn used_bytes(inv: &Inventory) -> u64 {
        inv.backups.iter().filter_map(|b| b.file_bytes).sum()
    }

    /// What retention weighs of each backup in `inv`; `fresh` names the backup this run just
    /// made.
    pub fn candidates(&self, inv: &Inventory, fresh: Option<&str>) -> Result<Vec<Candidate>> {
        let latest = self.latest_id();
        // The backup this run just made is the last one made: no need to read the record again.
        let last_made = match fresh {
            Some(id) => Some(id.to_owned()),
            None => self.last_made(inv)?,
        };
        let in_use: Vec<String> =
            lease::in_use(self.owner.as_ref().map(|o| o.database.as_path()), &self.dir)
                .into_iter()
                .map(|l| l.backup_id)
                .collect();
        // A packed backup weighs its share of the packs, a plain one its file: the budget
        // compares what the backups really take on disk.
        let usage = if inv
            .backups
            .iter()
            .any(|b| b.manifest.storage == Storage::Packed)
        {
            self.usage(inv)
        } else {
            Vec::new()
        };
        Ok(inv
            .backups
            .iter()
            .enumerate()
            .map(|(i, b)| Candidate {
                id: b.id.clone(),
                created_at: b.manifest.created_at,
                bytes: match (b.file_bytes, usage.get(i)) {
                    (Some(n), _) => n,
                    (None, Some(u)) => u.fair,
                    (None, None) => b.manifest.bytes,
                },
                pinned: b.manifest.pinned,
                verified: !b.manifest.verification.checks.is_empty(),
                fresh: fresh == Some(b.id.as_str()),
                proven: b.manifest.verification.fully_verified(),
                latest: latest.as_deref() == Some(b.id.as_str()),
                last_made: last_made.as_deref() == Some(b.id.as_str()),
                in_use: in_use.contains(&b.id),
            })
            .collect())
    }

    /// Applies a retention plan's deletions. Returns what was deleted; a deletion that fails
    /// becomes a warning (the new backup is already safe, and the next run tries again). Call
    /// with the directory lock held.
    pub fn rotate(&self, plan: &Plan, warnings: &mut Vec<String>) -> RotationReport {
        let mut report = plan.report();
        report.deleted.retain(|d| {
            failpoint::hit("rotation.deleting");
            match self.delete(&d.id) {
                Ok(damaged) => {
                    warnings.extend(damaged);
                    true
                }
                Err(e) => {
                    warnings.push(format!("could not delete old backup `{}`: {e}", d.id));
                    false
                }
            }
        });
        report
    }

    /// Plans retention for `inv` and applies it; returns the plan (every decision, including
    /// later rounds') and what was deleted. `fresh` names the backup this run just made. Call
    /// with the directory lock held.
    ///
    /// With `BACKUP_MAX_TOTAL_BYTES` and the block store, a packed backup weighs its fair
    /// share of chunks other backups also hold: deleting it frees its own chunks only, so the
    /// bytes left can still be over the budget. The bytes really on disk are then weighed
    /// again and the budget applied once more, until they fit or the budget deletes nothing
    /// more (each round deletes at least one backup, so this ends).
    pub fn apply_retention(
        &self,
        inv: &Inventory,
        fresh: Option<&str>,
        now: DateTime<Utc>,
        policy: retention::Policy,
        warnings: &mut Vec<String>,
    ) -> Result<(Plan, RotationReport)> {
        let mut plan = retention::plan(&self.candidates(inv, fresh)?, now, policy);
        let mut report = self.rotate(&plan, warnings);
        let mut round = (plan.clone(), report.deleted.clone());
        while let Some(budget) = policy.max_total_bytes {
            let (last, deleted) = &round;
            let for_budget = deleted.iter().any(|d| {
                last.decisions.iter().any(|x| {
                    x.id == d.id && matches!(x.reason, retention::Reason::OverBudget { .. })
                })
            });
            if !for_budget || !self.packs().dir().exists() {
                break;
            }
            let left = self.inventory()?;
            if self.real_bytes(&left) <= budget {
                break;
            }
            let again = retention::plan(&self.candidates(&left, fresh)?, now, policy);
            let more = self.rotate(&again, warnings);
            report.kept = more.kept;
            report.deleted.extend(more.deleted.iter().cloned());
            plan = plan.then(again.clone(), policy);
            round = (again, more.deleted);
        }
        Ok((plan, report))
    }

    /// What an operator must know about the backups before trusting their order: backups dated
    /// in the future (a clock that was wrong), a `latest.duckdb` that names no backup, and packs
    /// whose index cannot be read.
    pub fn inventory_warnings(&self, inv: &Inventory, now: DateTime<Utc>) -> Vec<String> {
        let mut warnings: Vec<String> = inv
            .interrupted
            .iter()
            .map(|id| {
                format!(
                    "backup `{id}` was interrupted while it was being published: it is no backup; the next backup removes what it left"
                )
            })
            .collect();
        let latest = self.latest_id();
        for b in &inv.backups {
            if b.manifest.created_at > now + chrono::Duration::minutes(5) {
                // `delete` keeps the backup `latest` names: the way out then starts with a backup.
                let first = if latest.as_deref() == Some(b.id.as_str()) {
                    "take a new backup (`ducksafe backup`, so that `latest` names that one), then "
                } else {
                    ""
                };
                warnings.push(format!(
                    "backup `{}` is dated {}, in the future: the clock was wrong when it was taken (or is wrong now). Rotation orders backups by date, so it counts as newer than every backup made since and outlives them; if it is not a state you need, {first}delete it with `ducksafe delete {}`",
                    b.id,
                    b.manifest.created_at.format("%Y-%m-%d %H:%M:%S UTC"),
                    b.id
                ));
            }
        }
        if let Some(target) = self.dangling_latest(inv) {
            warnings.push(format!(
                "`{}` points to `{target}`, which is not a backup here (deleted by hand?): `restore latest` refuses until the next backup repoints it; name a backup id instead (`ducksafe list`)",
                self.latest_path().display()
            ));
        }
        // A pack whose index cannot be read: nothing can use its blocks, and no collection
        // deletes it (it may be evidence), so its bytes stay until someone removes it.
        if let Ok(index) = self.packs().index() {
            for d in &index.damaged {
                warnings.push(format!(
                    "{d}: no backup can use its blocks, and ducksafe never deletes it, so its bytes still count against BACKUP_MAX_TOTAL_BYTES. `ducksafe verify --all` names the backups that needed it; once they are dealt with, delete it by hand (`rm {}`)",
                    crate::engine::shell::quote(&self.packs().dir().join(&d.pack))
                ));
            }
        }
        warnings
    }
}

/// The file name of backup `id` (`<id>.duckdb`): names come from the id, never from a field
/// inside a manifest.
pub fn backup_file_name(id: &str) -> String {
    format!("{id}{BACKUP_EXT}")
}

/// The refusal of a backup directory that cannot be written: a read-only filesystem is no
/// permission problem (a chmod hint would mislead).
fn not_writable(dir: &Path, e: &std::io::Error) -> Error {
    if e.raw_os_error() == Some(libc::EROFS) {
        Error::BackupDirReadOnly {
            dir: dir.to_path_buf(),
        }
    } else {
        Error::BackupDirUnsafe {
            dir: dir.to_path_buf(),
            why: format!("it is not writable: {e}"),
        }
    }
}

/// The id of the backup a manifest or checksum file named `name` belongs to.
pub fn companion_of(name: &str) -> Option<&str> {
    name.strip_suffix(MANIFEST_EXT)
        .or_else(|| name.strip_suffix(SIDECAR_EXT))
}

/// Whether `name` is the temporary file a backup with id `id` was written under (its
/// publication was under way while it exists).
pub fn is_temp_backup_of(name: &str, id: &str) -> bool {
    name.starts_with(&format!("{}backup-", files::TEMP_PREFIX))
        && name.ends_with(&format!("-{id}{BACKUP_EXT}"))
}

/// `<stem>_YYYYMMDD_HHMMSS` in UTC: the seed's naming, before any `_2` that keeps it unique.
pub fn base_id(stem: &str, now: DateTime<Utc>) -> String {
    format!("{stem}_{}", now.format("%Y%m%d_%H%M%S"))
}
