//! The manifest written beside every backup: what it holds, where it came from, and what was
//! checked before it was published.
//!
//! Invariants:
//! - A manifest is written (atomically, `0600`) before its backup becomes visible under its
//!   name, so every published backup has one; a manifest whose backup is missing is a leftover
//!   of an interrupted run.
//! - Manifests are read without following symlinks and with a size cap; a manifest that does not
//!   parse makes its backup untrusted, never silently trusted.

use std::io::Read;
use std::path::Path;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::blockstore::BlockMap;
use crate::duck::Fingerprint;
use crate::error::{Error, Result};
use crate::files;

/// Version of the manifest format. A manifest in the block store (with a block map) is written
/// as format 2, with its digest: see [`Manifest::write`].
pub const FORMAT: u32 = 1;
/// A manifest larger than this is refused (a real one is a few KiB per hundred tables).
const MAX_MANIFEST_BYTES: u64 = 16 << 20;

/// Where the backup came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SourceInfo {
    /// Absolute path of the database that was backed up (its folder resolved).
    pub path: String,
    /// The database's id, also recorded in the backup directory's `.ducksafe-database.json`:
    /// which database this backup belongs to. Absent from manifests written before it was
    /// recorded (those belong by `path`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database_id: Option<String>,
    /// Size of the database's main file when it was copied.
    pub bytes: u64,
    /// SHA-256 of the main file's bytes as read (under lock) for the copy.
    pub sha256: String,
    /// Total size of the WAL files that were folded into the backup (0 when there were none).
    pub wal_bytes: u64,
    /// True when committed data from the WAL was folded in, so the backup's bytes differ from
    /// the source's main file and its content was proven equal by comparing fingerprints.
    pub wal_folded: bool,
    /// How the bytes were copied. `reflink`: the backup shares the source's blocks on the same
    /// filesystem until either changes; it guards against a bad run, not a failing disk.
    /// Absent from manifests written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copy_method: Option<crate::files::CopyMethod>,
}

/// A table in the backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TableEntry {
    pub schema: String,
    pub name: String,
    /// Exact row count (`standard` and `full` verification).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
    /// Content fingerprint (`full` verification).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<Fingerprint>,
}

/// What was checked before the backup was published.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Verification {
    /// `quick`, `standard` or `full`.
    pub level: String,
    /// The checks that passed: size, sha256, open, row_counts, fingerprints.
    pub checks: Vec<String>,
    pub verified_at: DateTime<Utc>,
}

impl Verification {
    /// Verified by a full scan of every table (`VERIFY_LEVEL: full`): the backup rotation
    /// keeps while every newer one was checked less.
    pub fn fully_verified(&self) -> bool {
        self.checks.iter().any(|c| c == "fingerprints")
    }

    /// Proven block by block when it was taken: DuckDB's checksums checked natively, or a full
    /// scan (which makes DuckDB check them).
    pub fn blocks_proven(&self) -> bool {
        self.fully_verified() || self.checks.iter().any(|c| c == "block_checksums")
    }
}

/// `<id>.manifest.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Manifest {
    pub format: u32,
    pub id: String,
    /// The backup's file name in the backup directory.
    pub file: String,
    pub created_at: DateTime<Utc>,
    pub bytes: u64,
    pub sha256: String,
    pub source: SourceInfo,
    /// The DuckDB library that verified the backup (fingerprints depend on it).
    pub duckdb_version: String,
    /// Storage format version in the backup's header.
    pub storage_version: u64,
    /// The DuckDB version that created the database, from its header.
    pub created_by: String,
    pub tables: Vec<TableEntry>,
    pub views: u64,
    pub sequences: u64,
    pub verification: Verification,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// A pinned backup is never deleted by rotation and does not count against
    /// `BACKUP_KEEP_LAST`.
    #[serde(default)]
    pub pinned: bool,
    pub ducksafe_version: String,
    /// How the backup is kept: `plain` (its `.duckdb` file) or `packed` (no file: rebuilt from
    /// the packs and the plain backups, see [`crate::engine::blockstore`]). Absent means plain.
    #[serde(default, skip_serializing_if = "Storage::is_plain")]
    pub storage: Storage,
    /// The backup's chunks, computed from the copy's own read, when the database can be kept in
    /// the block store (`BACKUP_STORAGE: incremental`, DuckDB's default block size, not
    /// encrypted). A packed backup always has them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocks: Option<BlockMap>,
    /// SHA-256 of this manifest's JSON without this field (keys as written), in every format-2
    /// manifest (the block store's): one changed after it was written is refused, never
    /// trusted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
}

/// SHA-256 of a manifest's JSON value without its `digest` field.
fn digest_of(value: &serde_json::Value) -> String {
    use sha2::{Digest, Sha256};
    let mut v = value.clone();
    if let Some(o) = v.as_object_mut() {
        o.remove("digest");
    }
    files::hex(&Sha256::digest(serde_json::to_vec(&v).unwrap_or_default()))
}

/// How a backup is kept on disk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Storage {
    /// Its own `.duckdb` file, a byte-exact copy (`cp` puts it back).
    #[default]
    Plain,
    /// No file of its own: its blocks are in packs and in plain backups; `ducksafe restore`
    /// rebuilds it.
    Packed,
}

impl Storage {
    pub fn is_plain(&self) -> bool {
        *self == Storage::Plain
    }
}

impl Manifest {
    /// Total rows over every table, when counted.
    pub fn total_rows(&self) -> Option<u64> {
        self.tables.iter().map(|t| t.rows).sum()
    }

    /// Writes the manifest atomically and durably. A manifest with a block map (the block
    /// store's: its map is what rebuilds the backup) is written as format 2, with its digest; one
    /// without stays format 1, as earlier versions wrote it.
    pub fn write(&self, path: &Path) -> Result<()> {
        let staged = self.stage(path)?;
        let fail = |e: std::io::Error| Error::io("write manifest", path, e);
        staged.put().map_err(fail)?;
        files::sync_dir(files::parent_of(path)).map_err(fail)
    }

    /// The manifest written under a temporary name beside `path` and fsynced, for the caller
    /// to put in place ([`files::Staged`]).
    pub fn stage(&self, path: &Path) -> Result<files::Staged> {
        let fail = |e: std::io::Error| Error::io("write manifest", path, e);
        let mut value = serde_json::to_value(self).map_err(|e| fail(std::io::Error::other(e)))?;
        if self.blocks.is_some() || self.format >= 2 {
            if let Some(o) = value.as_object_mut() {
                o.insert(
                    "format".into(),
                    serde_json::Value::from(2u32.max(self.format)),
                );
            }
            let digest = digest_of(&value);
            if let Some(o) = value.as_object_mut() {
                o.insert("digest".into(), serde_json::Value::String(digest));
            }
        }
        files::stage_json(path, &value).map_err(fail)
    }

    /// Reads a manifest, refusing symlinks and oversized files.
    pub fn read(path: &Path) -> Result<Manifest> {
        let f = files::open_read_regular(path).map_err(|e| Error::io("read manifest", path, e))?;
        let mut buf = Vec::new();
        f.take(MAX_MANIFEST_BYTES + 1)
            .read_to_end(&mut buf)
            .map_err(|e| Error::io("read manifest", path, e))?;
        if buf.len() as u64 > MAX_MANIFEST_BYTES {
            return Err(Error::VerificationFailed {
                path: path.to_path_buf(),
                why: "the manifest is implausibly large".into(),
            });
        }
        let value: serde_json::Value =
            serde_json::from_slice(&buf).map_err(|e| Error::VerificationFailed {
                path: path.to_path_buf(),
                why: format!("the manifest does not parse: {e}"),
            })?;
        Manifest::from_value(value, path)
    }

    /// A manifest from its JSON (a remote copy's, see [`crate::remote`]), with the same checks
    /// as [`Manifest::read`]: a format-2 manifest must carry its digest, and match it. `origin`
    /// names it in errors.
    pub fn from_value(value: serde_json::Value, origin: &Path) -> Result<Manifest> {
        let path = origin;
        let bad = |why: String| Error::VerificationFailed {
            path: path.to_path_buf(),
            why,
        };
        // From format 2 on, every manifest has its digest: one missing is a change too.
        let digest_required = value
            .get("format")
            .and_then(serde_json::Value::as_u64)
            .is_none_or(|f| f >= 2);
        match value.get("digest") {
            Some(recorded) if recorded.as_str() == Some(digest_of(&value).as_str()) => {}
            None if !digest_required => {}
            _ => {
                return Err(bad(
                    "the manifest changed after it was written (its digest does not match)".into(),
                ))
            }
        }
        let mut m: Manifest = serde_json::from_value(value)
            .map_err(|e| bad(format!("the manifest does not parse: {e}")))?;
        // Checked: a storage detail, not content (written again, it is computed again).
        m.digest = None;
        Ok(m)
    }
}

/// The `sha256sum -c` line for a backup.
pub fn sidecar_line(sha256: &str, file_name: &str) -> String {
    format!("{sha256}  {file_name}\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Backups taken by an earlier ducksafe stay listed, verifiable, restorable and rotated:
    /// a manifest written before `copy_method` was recorded still parses.
    #[test]
    fn manifests_of_earlier_versions_still_parse() {
        let earlier = r#"{
          "format": 1, "id": "simulation_20261126_033945",
          "file": "simulation_20261126_033945.duckdb",
          "created_at": "2026-11-26T03:39:45.244276006Z", "bytes": 2109440,
          "sha256": "d40426aecd2ee3b3f4af306d89e66d4a2d461a14d6f2e236007aef3b4056a2ce",
          "source": {"path": "/work/main/demo/simulation.duckdb", "bytes": 2109440,
            "sha256": "d40426aecd2ee3b3f4af306d89e66d4a2d461a14d6f2e236007aef3b4056a2ce",
            "wal_bytes": 0, "wal_folded": false},
          "duckdb_version": "v2.0.0", "storage_version": 999, "created_by": "v2.0.0",
          "tables": [{"schema": "main", "name": "employees", "rows": 9016,
            "fingerprint": {"rows": 9016, "sum_hash": "82795234356470334468208",
              "xor_hash": 12501380608098927536}}],
          "views": 1, "sequences": 0,
          "verification": {"level": "full",
            "checks": ["size", "sha256", "open", "row_counts", "fingerprints"],
            "verified_at": "2026-11-26T03:39:45.292508614Z"},
          "request_id": "demo-run-1", "pinned": false, "ducksafe_version": "0.1.0"
        }"#;
        let m: Manifest = serde_json::from_str(earlier).unwrap();
        assert_eq!(m.source.copy_method, None);
        assert_eq!((m.storage, m.blocks.as_ref()), (Storage::Plain, None));
        assert_eq!(m.tables[0].rows, Some(9016));
        // Written back, it stays without the field rather than inventing a method.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.manifest.json");
        m.write(&path).unwrap();
        let written = std::fs::read_to_string(&path).unwrap();
        assert!(!written.contains("copy_method"), "{written}");
        assert!(
            !written.contains("\"storage\"") && !written.contains("\"blocks\""),
            "{written}"
        );
        assert!(written.ends_with("}\n"));
        assert_eq!(Manifest::read(&path).unwrap(), m);
    }

    /// Any byte of a written manifest changed (and still JSON) is refused by its digest.
    #[test]
    fn a_changed_manifest_is_refused() {
        let earlier = r#"{"format": 2, "id": "s_1", "file": "s_1.duckdb",
          "created_at": "2026-11-26T03:39:45Z", "bytes": 10, "sha256": "ab",
          "source": {"path": "/p", "bytes": 10, "sha256": "ab", "wal_bytes": 0, "wal_folded": false},
          "duckdb_version": "v2.0.0", "storage_version": 69, "created_by": "v2.0.0",
          "tables": [], "views": 0, "sequences": 0,
          "verification": {"level": "full", "checks": [], "verified_at": "2026-11-26T03:39:45Z"},
          "ducksafe_version": "0.1.0"}"#;
        let m: Manifest = serde_json::from_str(earlier).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s_1.manifest.json");
        m.write(&path).unwrap();
        assert!(std::fs::read_to_string(&path)
            .unwrap()
            .contains("\"digest\""));
        assert_eq!(Manifest::read(&path).unwrap().id, "s_1");
        let good = std::fs::read(&path).unwrap();
        let mut parsed_but_refused = 0;
        for at in 0..good.len() {
            let mut bad = good.clone();
            bad[at] ^= 0x01;
            std::fs::write(&path, &bad).unwrap();
            let still_json = serde_json::from_slice::<serde_json::Value>(&bad).is_ok();
            let read = Manifest::read(&path);
            // Whitespace between tokens may change harmlessly; nothing else may.
            if read.is_ok() {
                assert!(
                    b" \n\t\r".contains(&good[at]),
                    "byte {at} ({:?}) changed and was not noticed",
                    good[at] as char
                );
            } else if still_json {
                parsed_but_refused += 1;
            }
        }
        assert!(parsed_but_refused > 100, "{parsed_but_refused}");
    }

    #[test]
    fn sidecar_matches_sha256sum_format() {
        assert_eq!(sidecar_line("ab", "s_1.duckdb"), "ab  s_1.duckdb\n");
    }
}
