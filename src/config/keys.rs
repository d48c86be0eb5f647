//! The configuration's keys: the [`Config`] type (it derives `schemas/config.schema.json`), its
//! enums and defaults, [`KEYS`] in documentation order, and each key's expected-value hint.
//! A test keeps [`KEYS`] equal to the schema's properties.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The configuration file as written by the operator. Keys are the seed's: flat, upper-case.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "ducksafe configuration")]
pub struct Config {
    /// The DuckDB database to protect (the simulation's `simulation.duckdb`). Relative paths are
    /// taken from the configuration file's directory. ducksafe never creates it.
    #[serde(rename = "DB_PATH")]
    #[schemars(length(min = 1))]
    pub db_path: String,

    /// Verbosity of ducksafe's log on stderr.
    #[serde(rename = "LOG_LEVEL")]
    pub log_level: LogLevel,

    /// Where backups, manifests and `latest.duckdb` live; created `0700` when missing.
    #[serde(rename = "BACKUP_DIR", default = "default_backup_dir")]
    #[schemars(length(min = 1))]
    pub backup_dir: String,

    /// How many of the newest backups to keep (pinned backups do not count).
    #[serde(rename = "BACKUP_KEEP_LAST", default = "default_keep_last")]
    #[schemars(range(min = 1, max = 10000))]
    pub backup_keep_last: u32,

    /// When set, backups older than this many days are deleted (never the newest verified one).
    #[serde(
        rename = "BACKUP_RETENTION_DAYS",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(range(min = 1, max = 36500))]
    pub backup_retention_days: Option<u32>,

    /// When set, the oldest backups are deleted until all of them fit in this many bytes (never
    /// the newest verified one; a warning says when this keeps fewer than `BACKUP_KEEP_LAST`).
    #[serde(
        rename = "BACKUP_MAX_TOTAL_BYTES",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(range(min = 1))]
    pub backup_max_total_bytes: Option<u64>,

    /// Free space that must remain on the backup filesystem after a backup is written; a backup
    /// that would leave less is refused with `insufficient_space` before a byte is written.
    #[serde(rename = "BACKUP_MIN_FREE_BYTES", default = "default_min_free")]
    pub backup_min_free_bytes: u64,

    /// How backups are kept: `full` (each a plain copy), `incremental` (the newest a plain
    /// copy, older ones as the DuckDB blocks they do not share with newer ones) or
    /// `independent` (like `incremental`, but older ones never rely on the newest file).
    #[serde(rename = "BACKUP_STORAGE", default)]
    pub backup_storage: BackupStorage,

    /// How much a new backup is checked before it is published: `quick`, `standard` or `full`
    /// (see docs/configuration.md).
    #[serde(rename = "VERIFY_LEVEL", default)]
    pub verify_level: VerifyLevel,

    /// On a post_run whose run failed: restore the pre-run backup (`true`) or keep the database
    /// as the run left it (`false`). A request's `on_failure` overrides it.
    #[serde(rename = "RESTORE_ON_FAILURE", default)]
    pub restore_on_failure: bool,

    /// Where a restore moves the replaced database and its WAL files; default
    /// `<BACKUP_DIR>/quarantine`. Must be on the database's filesystem.
    #[serde(
        rename = "QUARANTINE_DIR",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(length(min = 1))]
    pub quarantine_dir: Option<String>,

    /// DuckDB's memory limit, e.g. `512MB` or `2GB`; default for scans: 128 MiB per thread
    /// (at least 256 MiB), else DuckDB's default.
    #[serde(
        rename = "DUCKDB_MEMORY_LIMIT",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(regex(pattern = r"^[0-9]+(\.[0-9]+)?\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)$"))]
    pub duckdb_memory_limit: Option<String>,

    /// post_run: add a per-table summary of what the run changed (`changes` in the response),
    /// computed from the pre-run backup's manifest and a scan of every table of the database.
    /// Unset: only when the database is at most `REPORT_CHANGES_MAX_BYTES`.
    #[serde(
        rename = "REPORT_CHANGES",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub report_changes: Option<bool>,

    /// With `REPORT_CHANGES` unset: the largest database (main file plus WAL, in bytes) whose
    /// post_run reports the run's changes; the scan costs about a second per GiB.
    #[serde(
        rename = "REPORT_CHANGES_MAX_BYTES",
        default = "default_report_changes_max"
    )]
    pub report_changes_max_bytes: u64,

    /// DuckDB worker threads for verification scans; default: all cores.
    #[serde(
        rename = "DUCKDB_THREADS",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(range(min = 1, max = 1024))]
    pub duckdb_threads: Option<u32>,

    /// Where the audit log `ducksafe.jsonl` is appended (one JSON line per backup, restore,
    /// prune, pin, delete, adopt and hook call); created `0700` when missing. A log that cannot
    /// be written is warned about, never a reason to refuse a backup.
    #[serde(rename = "LOG_DIR", default = "default_log_dir")]
    #[schemars(length(min = 1))]
    pub log_dir: String,

    /// Size at which `ducksafe.jsonl` is renamed to `ducksafe.jsonl.1` (the older ones shift up
    /// to `.5`, the oldest is dropped) and a new one started.
    #[serde(rename = "LOG_MAX_BYTES", default = "default_log_max_bytes")]
    #[schemars(range(min = 4096))]
    pub log_max_bytes: u64,

    /// `ducksafe status`: a newest verified backup older than this many hours is critical
    /// (exit 2).
    #[serde(
        rename = "STATUS_MAX_AGE_HOURS",
        default = "default_status_max_age_hours"
    )]
    #[schemars(range(min = 1, max = 87600))]
    pub status_max_age_hours: u32,

    /// Where every verified backup is also copied off this machine: `s3://bucket/prefix`
    /// (one prefix per database). Unset: no remote copies. Credentials come only from the
    /// environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`).
    // Checked by `validate::remote_violations`, not by a schema pattern: a schema message would
    // repeat the value, which may hold a pasted credential.
    #[serde(
        rename = "REMOTE_URL",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(length(min = 1))]
    pub remote_url: Option<String>,

    /// The S3-compatible server (MinIO, Cloudflare R2, Backblaze B2, Ceph, SeaweedFS):
    /// `https://host[:port]`; `http://` only when it says so itself. Unset: AWS S3.
    #[serde(
        rename = "REMOTE_ENDPOINT",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(length(min = 1))]
    pub remote_endpoint: Option<String>,

    /// The bucket's region (signing needs it); default `AWS_REGION`, else `us-east-1`.
    #[serde(
        rename = "REMOTE_REGION",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(length(min = 1, max = 64))]
    pub remote_region: Option<String>,

    /// `true`: a backup that cannot be copied off the machine makes pre_run answer `abort`.
    /// `false` (default): a warning, and the next run (or `ducksafe push`) catches up.
    #[serde(rename = "REMOTE_REQUIRED", default)]
    pub remote_required: bool,

    /// How many of the newest remote backups to keep; default `BACKUP_KEEP_LAST`.
    #[serde(
        rename = "REMOTE_KEEP_LAST",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(range(min = 1, max = 10000))]
    pub remote_keep_last: Option<u32>,

    /// Remote backups older than this many days are deleted (never the newest); default
    /// `BACKUP_RETENTION_DAYS`.
    #[serde(
        rename = "REMOTE_RETENTION_DAYS",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(range(min = 1, max = 36500))]
    pub remote_retention_days: Option<u32>,

    /// Parts of a large backup uploaded at once (each 8 MiB in memory); default 4.
    #[serde(
        rename = "REMOTE_CONCURRENCY",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(range(min = 1, max = 64))]
    pub remote_concurrency: Option<u32>,
}

fn default_log_dir() -> String {
    "logs".to_owned()
}
fn default_log_max_bytes() -> u64 {
    10 * 1024 * 1024
}
fn default_status_max_age_hours() -> u32 {
    26
}

fn default_backup_dir() -> String {
    "backups".to_owned()
}
fn default_keep_last() -> u32 {
    7
}
fn default_min_free() -> u64 {
    100 * 1024 * 1024
}
fn default_report_changes_max() -> u64 {
    1024 * 1024 * 1024
}

/// Log verbosity; the Python names the seed's users know are accepted too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum LogLevel {
    #[serde(rename = "TRACE")]
    Trace,
    #[serde(rename = "DEBUG")]
    Debug,
    #[serde(rename = "INFO")]
    Info,
    #[serde(rename = "WARN")]
    Warn,
    #[serde(rename = "WARNING")]
    Warning,
    #[serde(rename = "ERROR")]
    Error,
    #[serde(rename = "CRITICAL")]
    Critical,
}

impl LogLevel {
    pub fn as_tracing(self) -> tracing::Level {
        match self {
            LogLevel::Trace => tracing::Level::TRACE,
            LogLevel::Debug => tracing::Level::DEBUG,
            LogLevel::Info => tracing::Level::INFO,
            LogLevel::Warn | LogLevel::Warning => tracing::Level::WARN,
            LogLevel::Error | LogLevel::Critical => tracing::Level::ERROR,
        }
    }
}

/// How backups are kept on disk (see docs/configuration.md, `BACKUP_STORAGE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "lowercase")]
pub enum BackupStorage {
    /// Every backup a plain, byte-exact copy of the database.
    #[default]
    Full,
    /// The newest backup a plain copy; each older one kept as the DuckDB blocks that no newer
    /// backup holds, compressed into packs, and rebuilt (every block and the whole file's
    /// SHA-256 checked) when it is restored.
    Incremental,
    /// As `incremental`, but every block of an older backup is in the packs: none relies on
    /// the newest file. Costs about one compressed database more.
    Independent,
}

impl BackupStorage {
    pub fn as_str(self) -> &'static str {
        match self {
            BackupStorage::Full => "full",
            BackupStorage::Incremental => "incremental",
            BackupStorage::Independent => "independent",
        }
    }

    /// Whether backups go into the block store.
    pub fn blocks(self) -> bool {
        self != BackupStorage::Full
    }
}

/// How much a fresh backup is checked before it is published.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema, Default,
)]
#[serde(rename_all = "lowercase")]
pub enum VerifyLevel {
    /// Size and SHA-256 read back from disk; DuckDB opens the copy read-only and reads its
    /// catalog. Proves the bytes on disk are the bytes intended. One read of the backup.
    Quick,
    /// `quick`, plus every table's exact row count, equal to the source's.
    Standard,
    /// `standard`, plus every table's content fingerprint (a scan of every column, which makes
    /// DuckDB check the checksum of every block a table uses), equal to the source's.
    #[default]
    Full,
}

impl VerifyLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            VerifyLevel::Quick => "quick",
            VerifyLevel::Standard => "standard",
            VerifyLevel::Full => "full",
        }
    }
}

/// Every key, in the order the documentation lists them.
pub const KEYS: [&str; 25] = [
    "DB_PATH",
    "LOG_LEVEL",
    "BACKUP_DIR",
    "BACKUP_KEEP_LAST",
    "BACKUP_RETENTION_DAYS",
    "BACKUP_MAX_TOTAL_BYTES",
    "BACKUP_MIN_FREE_BYTES",
    "BACKUP_STORAGE",
    "VERIFY_LEVEL",
    "RESTORE_ON_FAILURE",
    "QUARANTINE_DIR",
    "DUCKDB_MEMORY_LIMIT",
    "DUCKDB_THREADS",
    "LOG_DIR",
    "LOG_MAX_BYTES",
    "STATUS_MAX_AGE_HOURS",
    "REMOTE_URL",
    "REMOTE_ENDPOINT",
    "REMOTE_REGION",
    "REMOTE_REQUIRED",
    "REMOTE_KEEP_LAST",
    "REMOTE_RETENTION_DAYS",
    "REMOTE_CONCURRENCY",
    "REPORT_CHANGES",
    "REPORT_CHANGES_MAX_BYTES",
];

/// The configuration schema as JSON (what `ducksafe schema config` prints).
pub fn schema() -> Value {
    serde_json::to_value(schemars::schema_for!(Config)).unwrap_or(Value::Null)
}

/// The value of `key` in the effective configuration, as a `DUCKSAFE_<KEY>` variable or a
/// `--set KEY=VALUE` would give it (`None` when the key is unset).
pub fn value_text(config: &Config, key: &str) -> Option<String> {
    match serde_json::to_value(config).ok()?.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        other => Some(other.to_string()),
    }
}

/// What a valid value of `key` looks like, for a violation's hint.
pub(super) fn expected_hint(key: &str) -> Option<String> {
    Some(
        match key {
            "DB_PATH" => "a path to the DuckDB file, e.g. `simulation.duckdb`",
            "LOG_LEVEL" => "one of TRACE, DEBUG, INFO, WARNING, ERROR",
            "BACKUP_KEEP_LAST" => "a whole number of backups, at least 1",
            "BACKUP_RETENTION_DAYS" | "REMOTE_RETENTION_DAYS" => {
                "a whole number of days, at least 1, or leave it out"
            }
            "BACKUP_MAX_TOTAL_BYTES" | "REPORT_CHANGES_MAX_BYTES" => {
                "a whole number of bytes, e.g. 1073741824 for 1 GiB"
            }
            "BACKUP_MIN_FREE_BYTES" => "a whole number of bytes, e.g. 104857600 for 100 MiB",
            "BACKUP_STORAGE" => "one of full, incremental, independent",
            "VERIFY_LEVEL" => "one of quick, standard, full",
            "RESTORE_ON_FAILURE" | "REMOTE_REQUIRED" => "true or false",
            "DUCKDB_MEMORY_LIMIT" => "a size such as `512MB` or `2GB`",
            "DUCKDB_THREADS" => "a whole number of threads, at least 1",
            "LOG_DIR" => "a folder for the audit log, e.g. `logs`",
            "LOG_MAX_BYTES" => "a whole number of bytes, at least 4096, e.g. 10485760 for 10 MiB",
            "STATUS_MAX_AGE_HOURS" => "a whole number of hours, at least 1, e.g. 26",
            "REMOTE_URL" => "`s3://bucket/prefix`, e.g. `s3://my-backups/ducksafe/simulation`",
            "REMOTE_ENDPOINT" => {
                "`https://host[:port]`, or `http://host:port` for a server on a network you trust"
            }
            "REMOTE_REGION" => "a region name such as `us-east-1` or `auto` (R2)",
            "REMOTE_KEEP_LAST" => "a whole number of remote backups, at least 1",
            "REMOTE_CONCURRENCY" => "a whole number of parts, 1 to 64",
            "REPORT_CHANGES" => "true or false, or leave it out to decide by size",
            "" => "see `ducksafe schema config`",
            _ => return None,
        }
        .to_owned(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_exactly_the_schemas_properties() {
        let schema = schema();
        let mut props: Vec<&str> = schema["properties"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut keys = KEYS.to_vec();
        props.sort_unstable();
        keys.sort_unstable();
        assert_eq!(props, keys);
    }
}
