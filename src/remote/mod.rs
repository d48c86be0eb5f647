//! Off-machine copies: every verified backup also in S3-compatible object storage
//! (`REMOTE_URL`), checked there, restorable when the machine is gone.
//!
//! Layout under `s3://bucket/prefix/` (one prefix per database):
//! ```text
//! <id>.duckdb          a full backup's bytes (multipart above 8 MiB, each part's SHA-256
//!                      checked by the server)
//! <id>.manifest.json   a full backup's record, written LAST, with If-None-Match: *: the local
//!                      manifest, plus what was uploaded (bytes, SHA-256, parts, ETag). No
//!                      record, no backup.
//! packs/<sha256>.pack  the block store's packs (`BACKUP_STORAGE: incremental`), named by their
//!                      SHA-256 as on disk: uploaded with their checksum and If-None-Match: *.
//! <id>.packed.<base>.manifest.json
//!                      a packed backup's record (format 2): its manifest with its block map,
//!                      the packs its blocks are in, and the full backup `<base>` whose
//!                      `.duckdb` holds the rest (`<id>.packed.manifest.json` when the packs
//!                      hold every block). Written after every pack it names and its base.
//! ```
//! Invariants:
//! - A remote backup exists only when a record does, and a record is written only after what it
//!   names is uploaded and checked: the data's SHA-256 (computed from the bytes sent) equal to
//!   the local manifest's and its size read back (HEAD); every pack's SHA-256 equal to its name
//!   and its size read back; a packed record's base listed as a full backup. A record is never
//!   replaced: a packed backup whose base changes gets a record under a new name.
//! - A data object without a record is a leftover of an interrupted upload: the next upload
//!   of this database deletes it; a multipart upload cut short by a crash is recorded in
//!   `<BACKUP_DIR>/.ducksafe-remote-upload.json` before its first part, and aborted by the next
//!   run (the bucket's lifecycle rule is the safety net, docs/remote.md).
//! - When a backup has several records (a crash in the middle of its conversion), the packed
//!   one is read, and the others are deleted by the next push once it is complete. A full
//!   object goes (record first, then data) only when no packed record leans on it: there is one
//!   full copy (the newest) plus packs, never a second full copy for longer than a crash.
//! - Retention deletes a record before its data, never the newest remote backup nor a pinned
//!   one, nor a full backup a kept packed one leans on; a pack goes only when no record names
//!   it; a delete refused with AccessDenied (Object Lock) is reported as retained.
//! - Nothing here changes a local backup. [`s3`] alone speaks HTTP; [`sigv4`] signs; [`target`]
//!   parses the configuration's values; [`packed`] is the block store's side.

pub mod packed;
pub mod s3;
pub mod sigv4;
pub mod target;

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::config::Settings;
use crate::engine::blockstore::pack::is_pack_name;
use crate::engine::manifest::{Manifest, Storage};
use crate::engine::store::{Entry, Store};
use crate::error::{Error, RemoteFailure, Result};
use crate::failpoint;
use crate::files;
use crate::protocol::RemoteCopy;
use s3::{Client, Created, Deleted};
use target::Location;

const DATA_EXT: &str = ".duckdb";
const MANIFEST_EXT: &str = ".manifest.json";
/// The record of a multipart upload in flight, in the backup directory.
pub const UPLOAD_RECORD: &str = ".ducksafe-remote-upload.json";
/// A full backup's record format (older ducksafe versions read it).
const RECORD_FORMAT: u32 = 1;
/// A packed backup's record format: format 1's fields, plus `storage`, `packs` and `base`.
const PACKED_FORMAT: u32 = 2;
/// A remote manifest larger than this is refused (a real one is a few KiB).
const MAX_RECORD_BYTES: usize = 16 << 20;

/// `<id>.manifest.json` in the bucket.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub format: u32,
    pub id: String,
    /// The data object's name under the prefix (empty in a packed record: it has none).
    #[serde(default)]
    pub data: String,
    pub bytes: u64,
    /// SHA-256 of the bytes uploaded (equal to the local manifest's when it was written).
    pub sha256: String,
    pub parts: u64,
    /// The data object's ETag right after the upload: a copy replaced behind ducksafe's back
    /// has another one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e_tag: Option<String>,
    pub uploaded_at: DateTime<Utc>,
    pub ducksafe_version: String,
    /// The backup's own manifest, as it was written beside it (its digest checked on read).
    pub manifest: serde_json::Value,
    /// `packed`: no data object; rebuilt from `packs` and the full backup `base`.
    #[serde(default, skip_serializing_if = "Storage::is_plain")]
    pub storage: Storage,
    /// The packs (names under the prefix, and sizes) that hold the blocks `base` does not.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub packs: Vec<PackRef>,
    /// The full remote backup whose data object holds the packed backup's other blocks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<String>,
}

/// A pack a packed record names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackRef {
    /// `packs/<sha256>.pack`.
    pub name: String,
    pub bytes: u64,
}

/// A remote backup: its record and manifest, and what the listing says of its data.
#[derive(Debug, Clone)]
pub struct RemoteBackup {
    pub id: String,
    /// The record read: the packed one when there are several.
    pub record: Record,
    /// The record's name under the prefix.
    pub record_name: String,
    pub manifest: Manifest,
    /// The data object's size, from the listing (`None`: missing, or a packed backup without
    /// its full copy).
    pub data_size: Option<u64>,
    pub data_e_tag: Option<String>,
    /// Its full record, when it has one (the record read, or one a conversion leaves behind).
    pub full: Option<Record>,
    /// Its other records (names): superseded, deleted once the record read is complete.
    pub superseded: Vec<String>,
}

impl RemoteBackup {
    pub fn is_packed(&self) -> bool {
        self.record.storage == Storage::Packed
    }
}

/// Everything under the prefix.
#[derive(Debug, Default)]
pub struct Inventory {
    /// Newest first.
    pub backups: Vec<RemoteBackup>,
    /// Data objects without a manifest: leftovers of interrupted uploads (names).
    pub orphans: Vec<String>,
    /// Manifests that cannot be trusted: (name, why).
    pub unreadable: Vec<(String, String)>,
    /// The packs under `packs/`: name (`packs/<sha256>.pack`) → size.
    pub packs: std::collections::BTreeMap<String, u64>,
    /// The databases whose backups are under the prefix (`source.database_id` of the records
    /// that have one), when this machine's backup directory names none yet (a fresh machine):
    /// `latest` is then ambiguous with more than one.
    pub databases: std::collections::BTreeSet<String>,
}

impl Inventory {
    pub fn get(&self, id: &str) -> Option<&RemoteBackup> {
        self.backups.iter().find(|b| b.id == id)
    }

    /// Whether a packed record other than those of `except` leans on `id`'s full copy.
    pub fn leaned_on(&self, id: &str, except: &[&str]) -> Option<&RemoteBackup> {
        self.backups
            .iter()
            .filter(|b| !except.contains(&b.id.as_str()))
            .find(|b| b.record.base.as_deref() == Some(id))
    }
}

/// One remote deletion decided by retention, and how it ended.
#[derive(Debug, Clone, Serialize)]
pub struct Pruned {
    pub id: String,
    pub reason: String,
    /// `deleted`, or `retained` (Object Lock refused the delete).
    pub outcome: String,
}

/// The remote of a configuration.
pub struct Remote {
    client: Client,
    pub required: bool,
    /// Said with every use: an `http://` endpoint that is not this machine.
    pub warning: Option<String>,
    keep_last: u32,
    retention_days: Option<u32>,
    record_path: PathBuf,
    /// Records read by this process, by name: a record is never replaced, so one read once is
    /// read for good (a run lists the prefix several times; each record is fetched once).
    records: std::sync::Mutex<std::collections::HashMap<String, Record>>,
}

impl Remote {
    /// The remote `settings` configure; `None` without `REMOTE_URL`.
    pub fn of(settings: &Settings) -> Result<Option<Remote>> {
        let c = &settings.config;
        let Some(url) = &c.remote_url else {
            return Ok(None);
        };
        let invalid = |why: String| Error::Remote {
            failure: RemoteFailure::Io,
            url: "REMOTE_URL".into(),
            why,
        };
        let location = target::parse_url(url).map_err(invalid)?;
        let endpoint = c
            .remote_endpoint
            .as_deref()
            .map(target::parse_endpoint)
            .transpose()
            .map_err(invalid)?;
        let concurrency = c.remote_concurrency.unwrap_or(4) as usize;
        let warning = endpoint.as_ref().filter(|e| e.plain_http && !e.loopback).map(|e| {
            format!(
                "`REMOTE_ENDPOINT` `{}` is plain http:// to another machine: backups and request signatures cross the network unencrypted; use https:// unless this network is yours",
                e.url
            )
        });
        Ok(Some(Remote {
            warning,
            client: Client::new(
                &location,
                endpoint.as_ref(),
                c.remote_region.as_deref(),
                concurrency,
            ),
            required: c.remote_required,
            keep_last: c.remote_keep_last.unwrap_or(c.backup_keep_last),
            retention_days: c.remote_retention_days.or(c.backup_retention_days),
            record_path: settings.backup_dir.join(UPLOAD_RECORD),
            records: std::sync::Mutex::default(),
        }))
    }

    /// `s3://bucket/prefix`.
    pub fn url(&self) -> String {
        self.client.location().url()
    }

    pub fn location(&self) -> &Location {
        self.client.location()
    }

    fn data_name(id: &str) -> String {
        format!("{id}{DATA_EXT}")
    }

    fn manifest_name(id: &str) -> String {
        format!("{id}{MANIFEST_EXT}")
    }

    /// A packed backup's record name: `<id>.packed.<base>.manifest.json`.
    fn packed_name(id: &str, base: Option<&str>) -> String {
        match base {
            Some(b) => format!("{id}.packed.{b}{MANIFEST_EXT}"),
            None => format!("{id}.packed{MANIFEST_EXT}"),
        }
    }

    /// The name a record is kept under.
    fn record_name_of(r: &Record) -> String {
        if r.storage == Storage::Packed {
            Self::packed_name(&r.id, r.base.as_deref())
        } else {
            Self::manifest_name(&r.id)
        }
    }

    /// Aborts the multipart upload a crashed run recorded, if any. Returns what it did.
    pub fn abort_interrupted(&self) -> Result<Option<String>> {
        let Ok(text) = std::fs::read_to_string(&self.record_path) else {
            return Ok(None);
        };
        let parsed: Option<(String, String)> = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| {
                Some((
                    v.get("name")?.as_str()?.to_owned(),
                    v.get("upload_id")?.as_str()?.to_owned(),
                ))
            });
        if let Some((name, upload_id)) = &parsed {
            self.client.abort_upload(name, upload_id)?;
        }
        let _ = std::fs::remove_file(&self.record_path);
        Ok(parsed.map(|(name, _)| {
            format!(
                "aborted the upload of `{}` that an interrupted run left",
                self.location().key(&name)
            )
        }))
    }

    fn note_upload(&self, name: &str, upload_id: Option<&str>) -> Result<()> {
        match upload_id {
            Some(id) => {
                let text = serde_json::json!({"name": name, "upload_id": id}).to_string();
                let staged = files::stage(&self.record_path, text.as_bytes())
                    .map_err(|e| Error::io("write", &self.record_path, e))?;
                staged
                    .put()
                    .map_err(|e| Error::io("write", &self.record_path, e))
            }
            None => match std::fs::remove_file(&self.record_path) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(Error::io("remove", &self.record_path, e)),
            },
        }
    }

    /// Uploads a local verified backup unless the remote already has it. The data first, its
    /// SHA-256 and size checked, then the manifest with `If-None-Match: *`. `listed` is what
    /// the listing just read says of it (its data object's size), so that a backup already
    /// there costs no request of its own.
    #[allow(clippy::too_many_lines)]
    pub fn upload(
        &self,
        store: &Store,
        entry: &Entry,
        listed: Option<&RemoteBackup>,
    ) -> Result<RemoteCopy> {
        let started = std::time::Instant::now();
        let id = &entry.id;
        let m = &entry.manifest;
        let (data, manifest_name) = (Self::data_name(id), Self::manifest_name(id));
        let copy = |parts: u64, state: &str| RemoteCopy {
            url: format!(
                "s3://{}/{}",
                self.location().bucket,
                self.location().key(&data)
            ),
            key: self.location().key(&data),
            manifest_key: self.location().key(&manifest_name),
            bytes: m.bytes,
            sha256: m.sha256.clone(),
            parts,
            state: state.to_owned(),
            seconds: started.elapsed().as_secs_f64(),
        };
        if let Some(existing) = self.read_record(&manifest_name)? {
            if !existing.sha256.eq_ignore_ascii_case(&m.sha256) {
                return Err(self.conflict(&manifest_name, &existing));
            }
            // A record whose data object is gone vouches for nothing: it goes (the backup is
            // not restorable from the remote as it stands), and the data is uploaded again
            // from the local copy, the record written last as always.
            let listed_size = listed
                .filter(|b| b.full.as_ref().is_some_and(|f| f.data == existing.data))
                .map(|b| b.data_size);
            let data_size = match listed_size {
                Some(size) => size,
                None => self.client.head(&existing.data)?.map(|d| d.size),
            };
            if data_size == Some(existing.bytes) {
                return Ok(copy(existing.parts, "already_there"));
            }
            if self.client.delete(&manifest_name)? == Deleted::Retained {
                return Err(Error::Remote {
                    failure: RemoteFailure::Corrupt,
                    url: self.url(),
                    why: format!(
                        "`{}` has lost its data object, and its record is kept by Object Lock: the backup cannot be uploaded again under its id",
                        self.location().key(&manifest_name)
                    ),
                });
            }
            if let Ok(mut cache) = self.records.lock() {
                cache.remove(&manifest_name);
            }
        }
        if m.storage == Storage::Packed {
            // Packed backups go up as packs and a packed record: [`Remote::push_packed`].
            return Err(Error::Internal(format!(
                "backup `{id}` is packed: it is uploaded by its packs, not as a file"
            )));
        }
        let file = store.backup_path(id);
        let manifest_path = store.manifest_path(id);
        let manifest_json: serde_json::Value = std::fs::read(&manifest_path)
            .map_err(|e| Error::io("read manifest", &manifest_path, e))
            .and_then(|b| {
                serde_json::from_slice(&b).map_err(|e| Error::VerificationFailed {
                    path: manifest_path.clone(),
                    why: format!("the manifest does not parse: {e}"),
                })
            })?;
        staging_check(&file, m)?;
        let _step = crate::progress::step(&format!("uploading {id}"), Some(m.bytes));
        let uploaded = self.client.put_file(
            &data,
            &file,
            m.bytes,
            false,
            &mut |upload_id| self.note_upload(&data, upload_id),
            &|n| crate::progress::advance(n),
        )?;
        if !uploaded.sha256.eq_ignore_ascii_case(&m.sha256) {
            let _ = self.client.delete(&data);
            return Err(Error::VerificationFailed {
                path: file,
                why: format!(
                    "its bytes changed while they were uploaded (SHA-256 {} read, {} in the manifest); the remote copy was deleted",
                    uploaded.sha256, m.sha256
                ),
            });
        }
        let head = self.client.head(&data)?.ok_or_else(|| Error::Remote {
            failure: RemoteFailure::Corrupt,
            url: self.url(),
            why: format!(
                "`{}` is missing right after its upload",
                self.location().key(&data)
            ),
        })?;
        if head.size != m.bytes {
            return Err(Error::Remote {
                failure: RemoteFailure::Corrupt,
                url: self.url(),
                why: format!(
                    "`{}` is {} bytes on the server right after its upload, not {}; no manifest was written",
                    self.location().key(&data),
                    head.size,
                    m.bytes
                ),
            });
        }
        failpoint::hit("remote.uploaded");
        let record = Record {
            format: RECORD_FORMAT,
            id: id.clone(),
            data: data.clone(),
            bytes: m.bytes,
            sha256: uploaded.sha256.clone(),
            parts: uploaded.parts,
            e_tag: head.e_tag,
            uploaded_at: Utc::now(),
            ducksafe_version: env!("CARGO_PKG_VERSION").to_owned(),
            manifest: manifest_json,
            storage: Storage::Plain,
            packs: Vec::new(),
            base: None,
        };
        let body = serde_json::to_vec_pretty(&record)
            .map_err(|e| Error::Internal(format!("cannot write a remote manifest: {e}")))?;
        match self.client.put_new(&manifest_name, &body)? {
            Created::Made => Ok(copy(uploaded.parts, "uploaded")),
            Created::AlreadyThere => match self.read_record(&manifest_name)? {
                Some(r) if r.sha256.eq_ignore_ascii_case(&m.sha256) => {
                    Ok(copy(uploaded.parts, "already_there"))
                }
                Some(r) => Err(self.conflict(&manifest_name, &r)),
                None => Err(Error::Remote {
                    failure: RemoteFailure::Conflict,
                    url: self.url(),
                    why: format!(
                        "`{}` was refused as existing, yet cannot be read",
                        self.location().key(&manifest_name)
                    ),
                }),
            },
        }
    }

    fn conflict(&self, name: &str, existing: &Record) -> Error {
        Error::Remote {
            failure: RemoteFailure::Conflict,
            url: self.url(),
            why: format!(
                "`{}` already holds another backup (SHA-256 {}): it was not replaced",
                self.location().key(name),
                existing.sha256
            ),
        }
    }

    fn read_record(&self, name: &str) -> Result<Option<Record>> {
        if let Some(r) = self.records.lock().ok().and_then(|m| m.get(name).cloned()) {
            return Ok(Some(r));
        }
        let Some(bytes) = self.client.get_small(name)? else {
            return Ok(None);
        };
        let r = self.parse_record(name, &bytes)?;
        if let Ok(mut m) = self.records.lock() {
            m.insert(name.to_owned(), r.clone());
        }
        Ok(Some(r))
    }

    fn parse_record(&self, name: &str, bytes: &[u8]) -> Result<Record> {
        let corrupt = |why: String| Error::Remote {
            failure: RemoteFailure::Corrupt,
            url: self.url(),
            why: format!("`{}` {why}", self.location().key(name)),
        };
        if bytes.len() > MAX_RECORD_BYTES {
            return Err(corrupt("is implausibly large for a manifest".into()));
        }
        let r: Record = serde_json::from_slice(bytes)
            .map_err(|e| corrupt(format!("is not a ducksafe remote manifest: {e}")))?;
        let expected = if r.storage == Storage::Packed {
            PACKED_FORMAT
        } else {
            RECORD_FORMAT
        };
        if r.format != expected {
            return Err(corrupt(format!(
                "has format {}, this ducksafe reads {RECORD_FORMAT} (full) and {PACKED_FORMAT} (packed)",
                r.format
            )));
        }
        if r.storage == Storage::Packed
            && r.packs
                .iter()
                .any(|p| !p.name.strip_prefix(packed::PACKS).is_some_and(is_pack_name))
        {
            return Err(corrupt("names a pack that is not a ducksafe pack".into()));
        }
        Ok(r)
    }

    /// Another database's records under this prefix: refused (`remote_conflict`) before
    /// anything is uploaded, read further or deleted there. On a machine whose backup
    /// directory names no database yet (a fresh one), the databases present are noted instead,
    /// so that `latest` is refused when it is ambiguous.
    fn refuse_other_databases(
        &self,
        read: &[(String, Record, Manifest)],
        inv: &mut Inventory,
    ) -> Result<()> {
        let ours = self
            .record_path
            .parent()
            .and_then(|dir| crate::engine::identity::read_owner(dir).ok().flatten())
            .map(|f| f.database_id);
        if let Some(ours) = &ours {
            let foreign: Vec<(&String, &String)> = read
                .iter()
                .filter_map(|(n, _, m)| {
                    m.source
                        .database_id
                        .as_ref()
                        .filter(|d| *d != ours)
                        .map(|d| (n, d))
                })
                .collect();
            if let Some((name, other)) = foreign.first() {
                return Err(Error::Remote {
                    failure: RemoteFailure::Conflict,
                    url: self.url(),
                    why: format!(
                        "the prefix holds backups of another database (`{}` is database {other}'s, this one is {ours}, {} such record(s)): nothing was uploaded, read or deleted there; give each database its own REMOTE_URL prefix",
                        self.location().key(name),
                        foreign.len()
                    ),
                });
            }
        } else {
            inv.databases = read
                .iter()
                .filter_map(|(_, _, m)| m.source.database_id.clone())
                .collect();
        }
        Ok(())
    }

    /// Everything under the prefix: the backups (their records read and checked; a packed
    /// record preferred to a full one, the newest packed one to older ones), the orphaned data
    /// objects, the records that cannot be trusted and the packs.
    pub fn inventory(&self) -> Result<Inventory> {
        let listed = self.client.list()?;
        let mut inv = Inventory::default();
        let mut read: Vec<(String, Record, Manifest)> = Vec::new();
        for obj in listed.iter().filter(|o| o.name.ends_with(MANIFEST_EXT)) {
            let parsed = self.read_record(&obj.name).and_then(|r| {
                let r = r.ok_or_else(|| Error::Remote {
                    failure: RemoteFailure::NotFound,
                    url: self.url(),
                    why: "vanished while it was listed".into(),
                })?;
                let origin = PathBuf::from(self.location().key(&obj.name));
                let m = Manifest::from_value(r.manifest.clone(), &origin)?;
                if Self::record_name_of(&r) != obj.name
                    || m.id != r.id
                    || m.sha256 != r.sha256
                    || m.bytes != r.bytes
                    || (r.storage == Storage::Packed && m.blocks.is_none())
                {
                    return Err(Error::Remote {
                        failure: RemoteFailure::Corrupt,
                        url: self.url(),
                        why: "its name, id, size, SHA-256 or block map disagrees with the backup's own manifest"
                            .into(),
                    });
                }
                Ok((r, m))
            });
            match parsed {
                Ok((record, manifest)) => read.push((obj.name.clone(), record, manifest)),
                Err(e) => inv.unreadable.push((obj.name.clone(), e.to_string())),
            }
        }
        self.refuse_other_databases(&read, &mut inv)?;
        // Per id: the packed records, newest first, then the full one.
        read.sort_by(|a, b| {
            a.1.id
                .cmp(&b.1.id)
                .then((b.1.storage == Storage::Packed).cmp(&(a.1.storage == Storage::Packed)))
                .then(b.1.uploaded_at.cmp(&a.1.uploaded_at))
        });
        let mut i = 0;
        while i < read.len() {
            let id = read[i].1.id.clone();
            let group: Vec<&(String, Record, Manifest)> =
                read[i..].iter().take_while(|r| r.1.id == id).collect();
            i += group.len();
            let (name, record, manifest) = group[0].clone();
            // Records of this id that hold another backup (two databases on one prefix) are
            // neither read nor ever deleted as superseded.
            let (group, other): (Vec<_>, Vec<_>) = group
                .into_iter()
                .partition(|r| r.1.sha256.eq_ignore_ascii_case(&record.sha256));
            for r in other {
                inv.unreadable.push((
                    r.0.clone(),
                    format!(
                        "it holds another backup under the id `{id}` (SHA-256 {}, not {})",
                        r.1.sha256, record.sha256
                    ),
                ));
            }
            let full = group
                .iter()
                .find(|r| r.1.storage == Storage::Plain)
                .map(|r| r.1.clone());
            let data = full
                .as_ref()
                .and_then(|f| listed.iter().find(|o| o.name == f.data));
            inv.backups.push(RemoteBackup {
                id,
                data_size: data.map(|d| d.size),
                data_e_tag: data.and_then(|d| d.e_tag.clone()),
                superseded: group[1..].iter().map(|r| r.0.clone()).collect(),
                full,
                record,
                record_name: name,
                manifest,
            });
        }
        for obj in listed.iter().filter(|o| o.name.ends_with(DATA_EXT)) {
            let id = obj.name.trim_end_matches(DATA_EXT);
            let has_record = listed.iter().any(|o| o.name == Self::manifest_name(id));
            // A base a packed record leans on is never an orphan, whatever its own record.
            let leaned_on = inv
                .backups
                .iter()
                .any(|b| b.record.base.as_deref() == Some(id));
            if !has_record && !leaned_on {
                inv.orphans.push(obj.name.clone());
            }
        }
        for p in self.client.list_in(packed::PACKS)? {
            inv.packs.insert(p.name, p.size);
        }
        inv.backups.sort_by(|a, b| {
            b.manifest
                .created_at
                .cmp(&a.manifest.created_at)
                .then(b.id.cmp(&a.id))
        });
        Ok(inv)
    }

    /// Deletes the data objects that interrupted uploads left (no manifest). Returns their keys.
    pub fn clean_orphans(&self, inv: &Inventory) -> Result<Vec<String>> {
        let mut removed = Vec::new();
        for name in &inv.orphans {
            if self.client.delete(name)? == Deleted::Deleted {
                removed.push(self.location().key(name));
            }
        }
        Ok(removed)
    }

    /// Checks a remote backup: its data object is there with the size (and ETag) its manifest
    /// recorded; with `read_data`, downloaded and hashed too. Returns the checks that passed.
    /// A packed backup: every pack it names and its base's data there with their sizes; with
    /// `read_data`, downloaded and rebuilt to a hash (see [`packed`]).
    /// `scratch` is where a packed one's downloads go (removed after).
    pub fn verify(
        &self,
        inv: &Inventory,
        b: &RemoteBackup,
        read_data: bool,
        scratch: &Path,
    ) -> Result<Vec<String>> {
        if b.is_packed() {
            return self.verify_packed(inv, b, read_data, scratch);
        }
        let key = self.location().key(&b.record.data);
        let corrupt = |why: String| Error::Remote {
            failure: RemoteFailure::Corrupt,
            url: self.url(),
            why: format!("remote backup `{}`: `{key}` {why}", b.id),
        };
        let Some(size) = b.data_size else {
            return Err(corrupt("is missing (its manifest is there)".into()));
        };
        if size != b.record.bytes {
            return Err(corrupt(format!(
                "is {size} bytes, its manifest says {}",
                b.record.bytes
            )));
        }
        let mut checks = vec!["manifest".to_owned(), "size".to_owned()];
        if let (Some(recorded), Some(now)) = (&b.record.e_tag, &b.data_e_tag) {
            if recorded != now {
                return Err(corrupt(format!(
                    "was replaced after it was uploaded (ETag {now}, recorded {recorded})"
                )));
            }
            checks.push("etag".to_owned());
        }
        if read_data {
            let _step = crate::progress::step(&format!("reading {}", b.id), Some(size));
            let (bytes, sha) =
                self.client
                    .download(&b.record.data, &mut std::io::sink(), &|n| {
                        crate::progress::advance(n);
                    })?;
            if bytes != b.record.bytes || !sha.eq_ignore_ascii_case(&b.record.sha256) {
                return Err(corrupt(format!(
                    "does not hold the backup: {bytes} bytes with SHA-256 {sha}, the manifest says {} bytes with {}",
                    b.record.bytes, b.record.sha256
                )));
            }
            checks.push("sha256".to_owned());
        }
        Ok(checks)
    }

    /// Downloads a remote backup into `store` as a local backup (its file, manifest and
    /// sidecar, published as a backup is), after its bytes are proven to be the manifest's.
    pub fn fetch(&self, b: &RemoteBackup, store: &Store) -> Result<PathBuf> {
        let temp = store.temp_path(&b.id);
        let result = (|| {
            let mut f = files::create_private(&temp).map_err(|e| Error::io("create", &temp, e))?;
            let _step =
                crate::progress::step(&format!("downloading {}", b.id), Some(b.record.bytes));
            let (bytes, sha) = self.client.download(&b.record.data, &mut f, &|n| {
                crate::progress::advance(n);
            })?;
            if bytes != b.manifest.bytes || !sha.eq_ignore_ascii_case(&b.manifest.sha256) {
                return Err(Error::Remote {
                    failure: RemoteFailure::Corrupt,
                    url: self.url(),
                    why: format!(
                        "remote backup `{}` downloaded as {bytes} bytes with SHA-256 {sha}; its manifest says {} bytes with {}: not used",
                        b.id, b.manifest.bytes, b.manifest.sha256
                    ),
                });
            }
            f.sync_all().map_err(|e| Error::io("sync", &temp, e))?;
            drop(f);
            store.publish(&temp, &b.manifest)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&temp);
        }
        result
    }

    /// Applies remote retention: keeps the newest `REMOTE_KEEP_LAST` and, with
    /// `REMOTE_RETENTION_DAYS`, deletes older ones past that age; never the newest, never a
    /// pinned one, never a full backup that a packed backup staying is rebuilt from (`kept`).
    /// Every record of a backup goes first, then its data; packs no record names any more are
    /// deleted after (by [`Remote::tidy`]).
    pub fn prune(&self, inv: &Inventory, now: DateTime<Utc>, dry_run: bool) -> Result<Vec<Pruned>> {
        let plan = plan(inv, self.keep_last, self.retention_days, now);
        let leaving: Vec<&str> = plan.iter().map(|(b, _)| b.id.as_str()).collect();
        let mut out = Vec::new();
        for (b, reason) in &plan {
            if let Some(user) = inv.leaned_on(&b.id, &leaving) {
                out.push(Pruned {
                    id: b.id.clone(),
                    reason: format!(
                        "{reason}, but kept: packed backup `{}` is rebuilt from its full copy",
                        user.id
                    ),
                    outcome: "kept".to_owned(),
                });
                continue;
            }
            let outcome = if dry_run {
                "would_delete".to_owned()
            } else {
                self.delete_backup(b)?
            };
            out.push(Pruned {
                id: b.id.clone(),
                reason: reason.clone(),
                outcome,
            });
        }
        Ok(out)
    }

    /// Deletes a remote backup: its records (the one read last), then its data object if it
    /// has one. Returns `deleted`, `retained`, or `deleted (data retained by Object Lock)`.
    fn delete_backup(&self, b: &RemoteBackup) -> Result<String> {
        let mut records: Vec<String> = b.superseded.clone();
        if b.full.is_some() && b.is_packed() {
            records.retain(|n| *n != Self::manifest_name(&b.id));
            records.push(Self::manifest_name(&b.id));
        }
        records.push(b.record_name.clone());
        for name in &records {
            if self.client.delete(name)? == Deleted::Retained {
                return Ok("retained".to_owned());
            }
        }
        match &b.full {
            Some(f) if b.data_size.is_some() => match self.client.delete(&f.data)? {
                Deleted::Deleted => Ok("deleted".to_owned()),
                // The record is gone: the data is an orphan its lock keeps.
                Deleted::Retained => Ok("deleted (data retained by Object Lock)".to_owned()),
            },
            _ => Ok("deleted".to_owned()),
        }
    }
}

/// Checks the local backup about to be uploaded: a regular file of the manifest's size.
fn staging_check(file: &Path, m: &Manifest) -> Result<()> {
    let meta = std::fs::symlink_metadata(file).map_err(|e| Error::io("read backup", file, e))?;
    if !meta.is_file() || meta.len() != m.bytes {
        return Err(Error::VerificationFailed {
            path: file.to_path_buf(),
            why: format!(
                "it is not a regular file of {} bytes, as its manifest says; it was not uploaded",
                m.bytes
            ),
        });
    }
    Ok(())
}

/// Which remote backups retention deletes, and why. Pure: `now` is passed in. `inv.backups`
/// is newest first.
pub fn plan(
    inv: &Inventory,
    keep_last: u32,
    retention_days: Option<u32>,
    now: DateTime<Utc>,
) -> Vec<(&RemoteBackup, String)> {
    let mut out = Vec::new();
    let mut counted = 0u32;
    for (i, b) in inv.backups.iter().enumerate() {
        if b.manifest.pinned {
            continue;
        }
        counted += 1;
        if i == 0 {
            continue;
        }
        let age_days = (now - b.manifest.created_at).num_days();
        if counted > keep_last {
            out.push((b, format!("beyond REMOTE_KEEP_LAST ({keep_last})")));
        } else if let Some(days) = retention_days.filter(|d| age_days > i64::from(*d)) {
            out.push((b, format!("older than REMOTE_RETENTION_DAYS ({days})")));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backup(id: &str, days_ago: i64, pinned: bool, now: DateTime<Utc>) -> RemoteBackup {
        let manifest: Manifest = serde_json::from_value(serde_json::json!({
            "format": 1, "id": id, "file": format!("{id}.duckdb"),
            "created_at": (now - chrono::Duration::days(days_ago)).to_rfc3339(),
            "bytes": 1, "sha256": "ab",
            "source": {"path": "/p", "bytes": 1, "sha256": "ab", "wal_bytes": 0, "wal_folded": false},
            "duckdb_version": "v", "storage_version": 1, "created_by": "v", "tables": [],
            "views": 0, "sequences": 0,
            "verification": {"level": "full", "checks": [], "verified_at": now.to_rfc3339()},
            "pinned": pinned, "ducksafe_version": "0"
        }))
        .unwrap();
        RemoteBackup {
            id: id.to_owned(),
            record: Record {
                format: 1,
                id: id.to_owned(),
                data: format!("{id}.duckdb"),
                bytes: 1,
                sha256: "ab".into(),
                parts: 1,
                e_tag: None,
                uploaded_at: now,
                ducksafe_version: "0".into(),
                manifest: serde_json::Value::Null,
                storage: Storage::Plain,
                packs: Vec::new(),
                base: None,
            },
            record_name: format!("{id}.manifest.json"),
            manifest,
            data_size: Some(1),
            data_e_tag: None,
            full: None,
            superseded: Vec::new(),
        }
    }

    #[test]
    fn retention_keeps_the_newest_and_the_pinned() {
        let now = Utc::now();
        let inv = Inventory {
            backups: vec![
                backup("s_5", 0, false, now),
                backup("s_4", 1, true, now),
                backup("s_3", 2, false, now),
                backup("s_2", 40, false, now),
                backup("s_1", 50, false, now),
            ],
            ..Inventory::default()
        };
        let ids = |p: Vec<(&RemoteBackup, String)>| -> Vec<String> {
            p.into_iter().map(|(b, _)| b.id.clone()).collect()
        };
        assert_eq!(ids(plan(&inv, 2, None, now)), ["s_2", "s_1"]);
        assert_eq!(ids(plan(&inv, 10, Some(30), now)), ["s_2", "s_1"]);
        assert_eq!(ids(plan(&inv, 10, None, now)), Vec::<String>::new());
        // Keep 1, and every backup older than a day: never the newest, never the pinned one.
        let all_old = Inventory {
            backups: vec![backup("s_2", 90, false, now), backup("s_1", 99, true, now)],
            ..Inventory::default()
        };
        assert!(plan(&all_old, 1, Some(1), now).is_empty());
    }
}
