//! Off-machine copies: every verified backup also in S3-compatible object storage
//! (`REMOTE_URL`), checked there, restorable when the machine is gone.
//!
//! Layout under `s3://bucket/prefix/` (one prefix per database):
//! ```text
//! <id>.duckdb          the backup's bytes (multipart above 8 MiB, each part's SHA-256 checked
//!                      by the server)
//! <id>.manifest.json   written LAST, with If-None-Match: *: the local manifest, plus what was
//!                      uploaded (bytes, SHA-256, parts, ETag). No manifest, no backup.
//! ```
//! Invariants:
//! - A remote backup exists only when its manifest does, and the manifest is written only after
//!   the data was uploaded, its SHA-256 (computed from the bytes sent) found equal to the local
//!   manifest's, and its size read back (HEAD). A manifest is never replaced.
//! - A data object without a manifest is a leftover of an interrupted upload: the next upload
//!   of this database deletes it; a multipart upload cut short by a crash is recorded in
//!   `<BACKUP_DIR>/.ducksafe-remote-upload.json` before its first part, and aborted by the next
//!   run (the bucket's lifecycle rule is the safety net, docs/remote.md).
//! - Retention deletes a manifest before its data, never the newest remote backup nor a pinned
//!   one; a delete refused with AccessDenied (Object Lock) is reported as retained.
//! - Nothing here changes a local backup. [`s3`] alone speaks HTTP; [`sigv4`] signs; [`target`]
//!   parses the configuration's values.

pub mod s3;
pub mod sigv4;
pub mod target;

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::config::Settings;
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
const RECORD_FORMAT: u32 = 1;
/// A remote manifest larger than this is refused (a real one is a few KiB).
const MAX_RECORD_BYTES: usize = 16 << 20;

/// `<id>.manifest.json` in the bucket.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub format: u32,
    pub id: String,
    /// The data object's name under the prefix.
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
}

/// A remote backup: its record and manifest, and what the listing says of its data.
#[derive(Debug, Clone)]
pub struct RemoteBackup {
    pub id: String,
    pub record: Record,
    pub manifest: Manifest,
    /// The data object's size, from the listing (`None`: missing).
    pub data_size: Option<u64>,
    pub data_e_tag: Option<String>,
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
    /// SHA-256 and size checked, then the manifest with `If-None-Match: *`.
    #[allow(clippy::too_many_lines)]
    pub fn upload(&self, store: &Store, entry: &Entry) -> Result<RemoteCopy> {
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
            return if existing.sha256.eq_ignore_ascii_case(&m.sha256) {
                Ok(copy(existing.parts, "already_there"))
            } else {
                Err(self.conflict(&manifest_name, &existing))
            };
        }
        if m.storage == Storage::Packed {
            return Err(Error::Remote {
                failure: RemoteFailure::Io,
                url: self.url(),
                why: format!(
                    "backup `{id}` is kept in the block store (packed): remote copies of packed backups are not made yet; only plain backups (the newest one always is) are uploaded"
                ),
            });
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
        let Some(bytes) = self.client.get_small(name)? else {
            return Ok(None);
        };
        self.parse_record(name, &bytes).map(Some)
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
        if r.format != RECORD_FORMAT {
            return Err(corrupt(format!(
                "has format {}, this ducksafe reads {RECORD_FORMAT}",
                r.format
            )));
        }
        Ok(r)
    }

    /// Everything under the prefix: the backups (their manifests read and checked), the
    /// orphaned data objects and the manifests that cannot be trusted.
    pub fn inventory(&self) -> Result<Inventory> {
        let listed = self.client.list()?;
        let mut inv = Inventory::default();
        for obj in listed.iter().filter(|o| o.name.ends_with(MANIFEST_EXT)) {
            let id = obj.name.trim_end_matches(MANIFEST_EXT).to_owned();
            let parsed = self.read_record(&obj.name).and_then(|r| {
                let r = r.ok_or_else(|| Error::Remote {
                    failure: RemoteFailure::NotFound,
                    url: self.url(),
                    why: "vanished while it was listed".into(),
                })?;
                let origin = PathBuf::from(self.location().key(&obj.name));
                let m = Manifest::from_value(r.manifest.clone(), &origin)?;
                if m.id != id || r.id != id || m.sha256 != r.sha256 || m.bytes != r.bytes {
                    return Err(Error::Remote {
                        failure: RemoteFailure::Corrupt,
                        url: self.url(),
                        why: "its id, size or SHA-256 disagrees with the backup's own manifest"
                            .into(),
                    });
                }
                Ok((r, m))
            });
            match parsed {
                Ok((record, manifest)) => {
                    let data = listed.iter().find(|o| o.name == record.data);
                    inv.backups.push(RemoteBackup {
                        id,
                        data_size: data.map(|d| d.size),
                        data_e_tag: data.and_then(|d| d.e_tag.clone()),
                        record,
                        manifest,
                    });
                }
                Err(e) => inv.unreadable.push((obj.name.clone(), e.to_string())),
            }
        }
        for obj in listed.iter().filter(|o| o.name.ends_with(DATA_EXT)) {
            let id = obj.name.trim_end_matches(DATA_EXT);
            let has_manifest = listed.iter().any(|o| o.name == Self::manifest_name(id));
            if !has_manifest {
                inv.orphans.push(obj.name.clone());
            }
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
    pub fn verify(&self, b: &RemoteBackup, read_data: bool) -> Result<Vec<String>> {
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
    /// pinned one. The manifest goes first, then the data.
    pub fn prune(&self, inv: &Inventory, now: DateTime<Utc>, dry_run: bool) -> Result<Vec<Pruned>> {
        let plan = plan(inv, self.keep_last, self.retention_days, now);
        let mut out = Vec::new();
        for (b, reason) in plan {
            let outcome = if dry_run {
                "would_delete".to_owned()
            } else {
                match self.client.delete(&Self::manifest_name(&b.id))? {
                    Deleted::Retained => "retained".to_owned(),
                    Deleted::Deleted => match self.client.delete(&b.record.data)? {
                        Deleted::Deleted => "deleted".to_owned(),
                        // The manifest is gone: the data is an orphan its lock keeps.
                        Deleted::Retained => "deleted (data retained by Object Lock)".to_owned(),
                    },
                }
            };
            out.push(Pruned {
                id: b.id.clone(),
                reason,
                outcome,
            });
        }
        Ok(out)
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
            },
            manifest,
            data_size: Some(1),
            data_e_tag: None,
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
