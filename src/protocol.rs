//! Hook protocol v1: the request and response types (they derive the committed JSON Schemas) and
//! the error-code table.
//!
//! This module is the contract of `../shared/design/protocol.md`. Invariants:
//! - [`ErrorCode`] is the one table that maps a failure to its stable snake-case code, its exit
//!   code and whether it is retryable; nothing else in the crate picks an exit code.
//! - `retryable` is true exactly for exit 75.
//! - Fields are only ever added (optional) within a protocol version.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u32 = 1;
/// Every protocol version this build accepts.
pub const SUPPORTED_VERSIONS: &[u32] = &[1];
/// The largest request read from stdin; anything longer is refused with `invalid_request`.
pub const MAX_REQUEST_BYTES: usize = 1 << 20;

/// A request id for requests that bring none: `ducksafe-<UTC yyyymmddThhmmss.mmm>Z-<pid>`,
/// unique enough for logs.
pub fn generated_request_id() -> String {
    format!(
        "ducksafe-{}-{}",
        crate::clock::now().format("%Y%m%dT%H%M%S%.3fZ"),
        std::process::id()
    )
}

/// Stable error codes. The serialized name is the contract; the exit code follows from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    Usage,
    InvalidRequest,
    UnsupportedEvent,
    DatabaseNotFound,
    ConfigNotFound,
    BackupNotFound,
    Internal,
    InsufficientSpace,
    BackupDirUnsafe,
    BackupFailed,
    VerificationFailed,
    IoError,
    RestoreFailed,
    DatabaseInvalid,
    DatabaseDamaged,
    DatabaseLocked,
    LockBusy,
    UnsupportedProtocolVersion,
    ConfigInvalid,
    /// The object store refused the credentials from the environment, or they are missing.
    RemoteAuth,
    /// The bucket `REMOTE_URL` names does not exist.
    RemoteBucketMissing,
    /// A remote key already holds another backup (two databases under one prefix).
    RemoteConflict,
    /// The object store could not be reached after bounded retries.
    RemoteUnavailable,
    /// Any other unexpected answer of the object store.
    RemoteIo,
}

impl ErrorCode {
    /// The process exit code for this error (sysexits-style, as the protocol table gives).
    pub const fn exit_code(self) -> i32 {
        use ErrorCode as E;
        match self {
            E::Usage => 64,
            E::InvalidRequest | E::UnsupportedEvent => 65,
            E::DatabaseNotFound | E::ConfigNotFound | E::BackupNotFound => 66,
            E::Internal => 70,
            E::InsufficientSpace | E::BackupDirUnsafe | E::BackupFailed | E::RemoteConflict => 73,
            E::VerificationFailed
            | E::IoError
            | E::RestoreFailed
            | E::DatabaseInvalid
            | E::DatabaseDamaged
            | E::RemoteIo => 74,
            E::DatabaseLocked | E::LockBusy | E::RemoteUnavailable => 75,
            E::UnsupportedProtocolVersion => 76,
            E::ConfigInvalid | E::RemoteAuth | E::RemoteBucketMissing => 78,
        }
    }

    /// True exactly when trying again later may succeed without any change (exit 75).
    pub const fn retryable(self) -> bool {
        self.exit_code() == 75
    }

    /// The stable snake-case name, as serialized.
    pub fn as_str(self) -> &'static str {
        use ErrorCode as E;
        match self {
            E::Usage => "usage",
            E::InvalidRequest => "invalid_request",
            E::UnsupportedEvent => "unsupported_event",
            E::DatabaseNotFound => "database_not_found",
            E::ConfigNotFound => "config_not_found",
            E::BackupNotFound => "backup_not_found",
            E::Internal => "internal",
            E::InsufficientSpace => "insufficient_space",
            E::BackupDirUnsafe => "backup_dir_unsafe",
            E::BackupFailed => "backup_failed",
            E::VerificationFailed => "verification_failed",
            E::IoError => "io_error",
            E::RestoreFailed => "restore_failed",
            E::DatabaseInvalid => "database_invalid",
            E::DatabaseDamaged => "database_damaged",
            E::DatabaseLocked => "database_locked",
            E::LockBusy => "lock_busy",
            E::UnsupportedProtocolVersion => "unsupported_protocol_version",
            E::ConfigInvalid => "config_invalid",
            E::RemoteAuth => "remote_auth",
            E::RemoteBucketMissing => "remote_bucket_missing",
            E::RemoteConflict => "remote_conflict",
            E::RemoteUnavailable => "remote_unavailable",
            E::RemoteIo => "remote_io",
        }
    }

    /// Every code, for documentation and tests.
    pub const ALL: [ErrorCode; 24] = {
        use ErrorCode as E;
        [
            E::Usage,
            E::InvalidRequest,
            E::UnsupportedEvent,
            E::DatabaseNotFound,
            E::ConfigNotFound,
            E::BackupNotFound,
            E::Internal,
            E::InsufficientSpace,
            E::BackupDirUnsafe,
            E::BackupFailed,
            E::VerificationFailed,
            E::IoError,
            E::RestoreFailed,
            E::DatabaseInvalid,
            E::DatabaseDamaged,
            E::DatabaseLocked,
            E::LockBusy,
            E::UnsupportedProtocolVersion,
            E::ConfigInvalid,
            E::RemoteAuth,
            E::RemoteBucketMissing,
            E::RemoteConflict,
            E::RemoteUnavailable,
            E::RemoteIo,
        ]
    };
}

/// The hook events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    /// Validate the configuration, back up the database, rotate old backups.
    PreRun,
    /// After the run: on failure, restore the named backup when asked to, else keep.
    PostRun,
    /// Validate the configuration only.
    Validate,
}

impl Event {
    pub fn as_str(self) -> &'static str {
        match self {
            Event::PreRun => "pre_run",
            Event::PostRun => "post_run",
            Event::Validate => "validate",
        }
    }
}

/// Where the configuration comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum ConfigSource {
    /// A YAML or JSON file; a relative path is taken from the hook's working directory.
    Path { path: String },
    /// The configuration itself, with the same keys as the file.
    Inline {
        inline: serde_json::Map<String, serde_json::Value>,
    },
}

/// How the workload run ended (post_run).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Success,
    Failure,
}

/// The workload run that a post_run reports on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunInfo {
    pub outcome: Outcome,
    /// The workload's own exit code, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = -2_147_483_648, max = 2_147_483_647))]
    pub exit_code: Option<i32>,
}

/// What post_run does when the run failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnFailure {
    Restore,
    Keep,
}

/// One hook request, read as a single JSON object on stdin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(title = "ducksafe hook request (protocol v1)")]
pub struct Request {
    /// Must be 1.
    pub protocol_version: u32,
    pub event: Event,
    /// Echoed in the response; generated when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 200))]
    pub request_id: Option<String>,
    /// Omitted: `DUCKSAFE_CONFIG`, else `./config.yaml`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<ConfigSource>,
    /// Configuration keys set over the configuration and over `DUCKSAFE_<KEY>` variables, each
    /// value written as the variable would give it (`{"DB_PATH": "/srv/sim/simulation.duckdb"}`).
    /// Rollback requests carry every key that decided the database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set: Option<BTreeMap<String, String>>,
    /// Validate and plan without writing anything.
    #[serde(default)]
    pub dry_run: bool,
    /// post_run: the backup taken by the matching pre_run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255))]
    pub backup_id: Option<String>,
    /// post_run: the SHA-256 of that backup, as the pre_run answered it. A restore is refused,
    /// changing nothing, when `backup_id` names other content.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9a-f]{64}$"))]
    pub backup_sha256: Option<String>,
    /// post_run: how the run ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<RunInfo>,
    /// post_run: overrides the configuration's `RESTORE_ON_FAILURE`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_failure: Option<OnFailure>,
}

/// Did the hook do its job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Ok,
    Error,
}

/// The answer callers branch on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Proceed,
    Abort,
    Kept,
    Restored,
    RestoreFailed,
    Skipped,
    Valid,
    Invalid,
}

/// One problem, in a form callers can branch on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ErrorEntry {
    pub code: ErrorCode,
    pub message: String,
    pub retryable: bool,
    /// JSON Pointer into the configuration, for validation errors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

/// The backup a pre_run created (or a post_run restored).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct BackupRef {
    pub id: String,
    pub path: String,
    pub bytes: u64,
    pub sha256: String,
    pub created_at: String,
    pub verified: bool,
    /// The checks that passed, in order: size, sha256, open, row_counts, fingerprints.
    pub verification: Vec<String>,
}

/// The off-machine copy of a backup (`REMOTE_URL`): where it is and what was checked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RemoteCopy {
    /// `s3://bucket/prefix/<id>.duckdb`.
    pub url: String,
    /// The data object's key.
    pub key: String,
    /// The manifest's key: written last, with `If-None-Match: *`; no manifest, no backup.
    pub manifest_key: String,
    pub bytes: u64,
    /// SHA-256 of the bytes uploaded: the backup's, checked again as they were read.
    pub sha256: String,
    /// How many parts were uploaded (1: a single PUT), each with its SHA-256 checked by the server.
    pub parts: u64,
    /// `uploaded`, or `already_there` when an earlier run or `push` had uploaded it.
    pub state: String,
    /// Seconds the upload took.
    pub seconds: f64,
}

/// How to undo the run that follows a pre_run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Rollback {
    /// Always `restore_backup` in v1.
    pub strategy: String,
    pub backup_id: String,
    /// The argv of the operator command that restores the backup.
    pub command: Vec<String>,
    /// A ready post_run request that restores the backup through the hook.
    pub request: serde_json::Value,
    /// Exact shell steps for a restore without ducksafe, WAL files included.
    pub manual: Vec<String>,
}

/// A backup deleted by rotation, and the rule that deleted it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Deleted {
    pub id: String,
    pub bytes: u64,
    pub reason: String,
}

/// What rotation did after the new backup was published.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
pub struct RotationReport {
    pub kept: Vec<String>,
    pub deleted: Vec<Deleted>,
}

/// Space on the backup filesystem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SpaceReport {
    pub available_bytes: u64,
    pub required_bytes: u64,
    /// Bytes used by ducksafe's backups in the backup directory (after rotation on pre_run).
    pub backups_bytes: u64,
}

/// The outcome of a restore (post_run `restored`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RestoreRef {
    pub backup_id: String,
    pub database: String,
    /// Where the replaced database and its WAL files were moved.
    pub quarantine: String,
    pub quarantined_files: Vec<String>,
    /// Shell command that undoes this restore.
    pub undo: Vec<String>,
    pub duration_ms: u64,
    /// True when the database already was the backup, byte for byte, with no WAL beside it:
    /// nothing was moved, and `quarantine` was not created.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unchanged: bool,
}

/// One response, written as a single JSON line on stdout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(title = "ducksafe hook response (protocol v1)")]
pub struct Response {
    pub protocol_version: u32,
    pub request_id: String,
    /// The request's event; null when the request could not be read.
    pub event: Option<String>,
    pub status: Status,
    pub decision: Decision,
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<BackupRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback: Option<Rollback>,
    /// pre_run with `REMOTE_URL`: the backup's off-machine copy, once uploaded and checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote: Option<RemoteCopy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation: Option<RotationReport>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub space: Option<SpaceReport>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<RestoreRef>,
    /// post_run: the run the request reported (its outcome and the workload's own exit code),
    /// repeated so that a saved response tells whose exit code a caller saw.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<RunInfo>,
    /// post_run, with `REPORT_CHANGES`: what the run changed, per table (see
    /// docs/protocol.md). Absent when it was not asked for or could not be computed (then a
    /// warning says why).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changes: Option<ChangeSummary>,
    /// The resolved configuration paths (absolute), for the caller's logs.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub paths: BTreeMap<String, String>,
    /// The protocol versions this build accepts (on `unsupported_protocol_version`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supported_versions: Option<Vec<u32>>,
    pub warnings: Vec<String>,
    pub errors: Vec<ErrorEntry>,
    pub exit_code: i32,
    pub duration_ms: u64,
}

/// How a table (or view) differs between two states of the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    /// Only in the newer state.
    Added,
    /// Only in the older state.
    Dropped,
    /// Its columns (names, types, nullability or defaults) differ.
    SchemaChanged,
    /// Same columns, other rows (fingerprints or row counts differ).
    Changed,
    /// Same columns and same fingerprint.
    Unchanged,
    /// Same row count, but no fingerprint to compare the rows with (a backup verified below
    /// `VERIFY_LEVEL: full`).
    Unknown,
}

/// post_run, with `REPORT_CHANGES`: what the run changed, the database after the run against
/// the manifest of the backup its pre_run took (row counts and fingerprints).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ChangeSummary {
    /// The backup the database was compared with.
    pub against_backup: String,
    /// Tables added, dropped or changed (or whose change is unknown): those listed in `tables`.
    pub tables_changed: u64,
    /// Tables whose rows are the backup's, fingerprint for fingerprint.
    pub tables_unchanged: u64,
    pub tables: Vec<TableChangeSummary>,
    /// What computing the summary cost (a scan of every table of the database).
    pub duration_ms: u64,
}

/// One table the run touched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TableChangeSummary {
    /// `schema.name`.
    pub table: String,
    pub change: ChangeKind,
    /// Rows in the backup; absent for a table the run added.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows_before: Option<u64>,
    /// Rows after the run; absent for a table the run dropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows_after: Option<u64>,
    /// `rows_after - rows_before` (a missing side counts as 0 rows): rows added (positive) or
    /// removed (negative), net.
    pub rows_delta: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_serialize_as_their_names() {
        for code in ErrorCode::ALL {
            assert_eq!(
                serde_json::to_value(code).unwrap(),
                serde_json::Value::String(code.as_str().to_owned())
            );
        }
    }

    #[test]
    fn retryable_is_exactly_exit_75() {
        for code in ErrorCode::ALL {
            assert_eq!(code.retryable(), code.exit_code() == 75, "{code:?}");
        }
        assert!(ErrorCode::DatabaseLocked.retryable());
        assert!(ErrorCode::LockBusy.retryable());
        assert!(!ErrorCode::InsufficientSpace.retryable());
    }

    #[test]
    fn exit_codes_follow_the_protocol_table() {
        let table = [
            ("usage", 64),
            ("invalid_request", 65),
            ("unsupported_event", 65),
            ("database_not_found", 66),
            ("config_not_found", 66),
            ("backup_not_found", 66),
            ("internal", 70),
            ("insufficient_space", 73),
            ("backup_dir_unsafe", 73),
            ("backup_failed", 73),
            ("verification_failed", 74),
            ("io_error", 74),
            ("restore_failed", 74),
            ("database_invalid", 74),
            ("database_damaged", 74),
            ("database_locked", 75),
            ("lock_busy", 75),
            ("unsupported_protocol_version", 76),
            ("config_invalid", 78),
            ("remote_auth", 78),
            ("remote_bucket_missing", 78),
            ("remote_conflict", 73),
            ("remote_unavailable", 75),
            ("remote_io", 74),
        ];
        for (name, exit) in table {
            let code: ErrorCode = serde_json::from_value(serde_json::json!(name)).unwrap();
            assert_eq!(code.exit_code(), exit, "{name}");
        }
        assert_eq!(table.len(), ErrorCode::ALL.len());
    }
}
