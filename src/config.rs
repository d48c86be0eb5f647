//! The configuration: its keys (the Rust type derives `schemas/config.schema.json`), where it is
//! read from, and its validation.
//!
//! Raw input (a YAML or JSON file, or an inline object from a hook request) plus the environment
//! (`DUCKSAFE_<KEY>` overrides) becomes one validated [`Settings`] before any work starts.
//! Invariants:
//! - Every violation is reported at once, each with its JSON Pointer; an unknown key gets a
//!   did-you-mean. Validation uses the same schema that `ducksafe schema config` prints.
//! - Values of keys that look like credentials, and passwords inside DSNs, never appear in a
//!   message.
//! - Relative paths are resolved against the configuration file's directory (the working
//!   directory for inline and default configurations), lexically, so `..` is predictable; the
//!   resolved absolute paths are what every report shows.

use std::path::{Component, Path, PathBuf};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{Error, Result, Violation};

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

    /// DuckDB worker threads for verification scans; default: all cores.
    #[serde(
        rename = "DUCKDB_THREADS",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(range(min = 1, max = 1024))]
    pub duckdb_threads: Option<u32>,
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
pub const KEYS: [&str; 12] = [
    "DB_PATH",
    "LOG_LEVEL",
    "BACKUP_DIR",
    "BACKUP_KEEP_LAST",
    "BACKUP_RETENTION_DAYS",
    "BACKUP_MAX_TOTAL_BYTES",
    "BACKUP_MIN_FREE_BYTES",
    "VERIFY_LEVEL",
    "RESTORE_ON_FAILURE",
    "QUARANTINE_DIR",
    "DUCKDB_MEMORY_LIMIT",
    "DUCKDB_THREADS",
];

/// Prefix of the environment variables that override configuration keys.
pub const ENV_PREFIX: &str = "DUCKSAFE_";
/// The environment variable that names the configuration file.
pub const ENV_CONFIG: &str = "DUCKSAFE_CONFIG";

/// Where to read the configuration from.
#[derive(Debug, Clone)]
pub enum Source {
    /// A file named by `--config` or a request's `config.path`.
    File(PathBuf),
    /// An inline object from a request; relative paths resolve against `base`.
    Inline {
        object: Map<String, Value>,
        base: PathBuf,
    },
    /// `DUCKSAFE_CONFIG`, else `./config.yaml`.
    Default,
}

/// The validated configuration, with every path resolved and absolute.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub config: Config,
    /// The configuration file, when there is one.
    pub config_path: Option<PathBuf>,
    pub db_path: PathBuf,
    pub backup_dir: PathBuf,
    pub quarantine_dir: PathBuf,
    /// Non-fatal remarks made while loading (a key set from the environment, say).
    pub notes: Vec<String>,
    /// Keys whose value came from a `DUCKSAFE_<KEY>` variable (or a `--set`), not from the
    /// configuration itself: rollback instructions carry them.
    pub overridden: Vec<&'static str>,
}

impl Settings {
    /// The database file's stem, which names its backups (`simulation` for `simulation.duckdb`).
    /// The database's file name (`simulation.duckdb`): how backups name what they were taken
    /// of.
    pub fn db_file_name(&self) -> String {
        self.db_path
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
    }

    pub fn db_stem(&self) -> String {
        self.db_path.file_stem().map_or_else(
            || "database".to_owned(),
            |s| s.to_string_lossy().into_owned(),
        )
    }
}

/// Reads, merges with the environment, validates and resolves the configuration.
pub fn load(source: &Source, env: &dyn Fn(&str) -> Option<String>) -> Result<Settings> {
    let cwd = std::env::current_dir().map_err(|e| Error::io("read", Path::new("."), e))?;
    let (mut object, base, config_path, name) = match source {
        Source::Inline { object, base } => (
            Value::Object(object.clone()),
            base.clone(),
            None,
            "inline configuration".to_owned(),
        ),
        Source::File(_) | Source::Default => {
            let path = match source {
                Source::File(path) => path.clone(),
                _ => env(ENV_CONFIG).map_or_else(|| PathBuf::from("config.yaml"), PathBuf::from),
            };
            let abs = normalize(&cwd.join(path));
            let v = read_file(&abs)?;
            let base = abs.parent().map_or_else(|| cwd.clone(), Path::to_path_buf);
            (v, base, Some(abs.clone()), abs.display().to_string())
        }
    };
    // Every check below reports all it found at once, then stops.
    let reject = |violations: Vec<Violation>| -> Result<()> {
        if violations.is_empty() {
            return Ok(());
        }
        Err(Error::ConfigInvalid {
            source_name: name.clone(),
            violations,
        })
    };

    let mut notes = Vec::new();
    let mut overridden = Vec::new();
    let mut violations = Vec::new();
    if let Value::Object(map) = &mut object {
        overridden = apply_env(map, env, &mut notes);
        violations.extend(unknown_keys(map));
    }
    violations.extend(schema_violations(&object));
    reject(violations)?;
    let config: Config = serde_json::from_value(object).map_err(|e| Error::ConfigInvalid {
        source_name: name.clone(),
        violations: vec![Violation {
            pointer: String::new(),
            message: redact_text(&e.to_string()),
            hint: None,
        }],
    })?;

    reject(path_value_violations(&config))?;

    let db_path = normalize(&base.join(&config.db_path));
    let backup_dir = normalize(&base.join(&config.backup_dir));
    let quarantine_dir = config.quarantine_dir.as_ref().map_or_else(
        || backup_dir.join("quarantine"),
        |q| normalize(&base.join(q)),
    );
    let mut violations = Vec::new();
    if backup_dir == db_path {
        violations.push(Violation {
            pointer: "/BACKUP_DIR".into(),
            message: format!(
                "`BACKUP_DIR` resolves to the database file itself (`{}`)",
                db_path.display()
            ),
            hint: Some("use a directory of its own, such as `backups`".into()),
        });
    } else if Some(backup_dir.as_path()) == db_path.parent() {
        violations.push(Violation {
            pointer: "/BACKUP_DIR".into(),
            message: format!(
                "`BACKUP_DIR` is the database's own directory (`{}`): backups would sit among the live database and its WAL files",
                backup_dir.display()
            ),
            hint: Some("use a directory of its own, such as `backups`".into()),
        });
    }
    if db_path.starts_with(&backup_dir) && backup_dir != db_path {
        violations.push(Violation {
            pointer: "/DB_PATH".into(),
            message: format!(
                "the database `{}` lies inside `BACKUP_DIR`",
                db_path.display()
            ),
            hint: Some("keep backups in a directory apart from the live database".into()),
        });
    }
    reject(violations)?;
    Ok(Settings {
        config,
        config_path,
        db_path,
        backup_dir,
        quarantine_dir,
        notes,
        overridden,
    })
}

/// The configuration schema as JSON (what `ducksafe schema config` prints).
pub fn schema() -> Value {
    serde_json::to_value(schemars::schema_for!(Config)).unwrap_or(Value::Null)
}

/// The largest configuration file read; a real one is well under 4 KiB.
const MAX_CONFIG_BYTES: u64 = 1 << 20;

fn read_file(path: &Path) -> Result<Value> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let invalid = |message: String| Error::ConfigInvalid {
        source_name: path.display().to_string(),
        violations: vec![Violation {
            pointer: String::new(),
            message,
            hint: Some("the configuration is a small YAML or JSON file".into()),
        }],
    };
    // O_NONBLOCK: opening a FIFO must not hang the hook; only regular files are read.
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::ConfigNotFound {
                path: path.to_path_buf(),
            })
        }
        Err(e) => return Err(Error::io("read configuration", path, e)),
    };
    let meta = file
        .metadata()
        .map_err(|e| Error::io("read configuration", path, e))?;
    if !meta.is_file() {
        return Err(invalid("it is not a regular file".into()));
    }
    let mut bytes = Vec::new();
    file.take(MAX_CONFIG_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io("read configuration", path, e))?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err(invalid(format!(
            "it is larger than {MAX_CONFIG_BYTES} bytes"
        )));
    }
    let text = String::from_utf8(bytes).map_err(|_| invalid("it is not UTF-8 text".into()))?;
    parse_text(&text, path)
}

/// Parses a configuration document: JSON for `.json`, YAML otherwise (YAML 1.2 reads JSON too).
pub fn parse_text(text: &str, path: &Path) -> Result<Value> {
    let invalid = |message: String| Error::ConfigInvalid {
        source_name: path.display().to_string(),
        violations: vec![Violation {
            pointer: String::new(),
            message,
            hint: Some("the configuration is a YAML or JSON mapping of `KEY: value` lines".into()),
        }],
    };
    let is_json = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"));
    let value: Value = if is_json {
        serde_json::from_str(text).map_err(|e| invalid(format!("not valid JSON: {e}")))?
    } else {
        serde_yaml_ng::from_str(text).map_err(|e| invalid(format!("not valid YAML: {e}")))?
    };
    match value {
        Value::Object(_) => Ok(value),
        Value::Null => Err(invalid("the file is empty".into())),
        other => Err(invalid(format!(
            "expected a mapping of keys to values, found {}",
            type_name(&other)
        ))),
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// Applies `DUCKSAFE_<KEY>` overrides, coercing each to the key's type (an uncoercible value is
/// left as a string, so the schema reports it with its pointer).
fn apply_env(
    map: &mut Map<String, Value>,
    env: &dyn Fn(&str) -> Option<String>,
    notes: &mut Vec<String>,
) -> Vec<&'static str> {
    let mut overridden = Vec::new();
    for key in KEYS {
        let var = format!("{ENV_PREFIX}{key}");
        let Some(raw) = env(&var) else { continue };
        let value = match key {
            "BACKUP_KEEP_LAST"
            | "BACKUP_RETENTION_DAYS"
            | "BACKUP_MAX_TOTAL_BYTES"
            | "BACKUP_MIN_FREE_BYTES"
            | "DUCKDB_THREADS" => raw
                .trim()
                .parse::<u64>()
                .map_or_else(|_| Value::String(raw.clone()), Value::from),
            "RESTORE_ON_FAILURE" => match raw.trim().to_ascii_lowercase().as_str() {
                "1" | "true" | "yes" | "on" => Value::Bool(true),
                "0" | "false" | "no" | "off" => Value::Bool(false),
                _ => Value::String(raw.clone()),
            },
            _ => Value::String(raw.clone()),
        };
        map.insert(key.to_owned(), value);
        notes.push(format!("`{key}` set from `{var}`"));
        overridden.push(key);
    }
    overridden
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

fn unknown_keys(map: &Map<String, Value>) -> Vec<Violation> {
    map.keys()
        .filter(|k| !KEYS.contains(&k.as_str()))
        .map(|k| Violation {
            pointer: pointer_for(k),
            message: format!("unknown key `{}`", redact_key(k)),
            hint: Some(match did_you_mean(k) {
                Some(s) => format!("did you mean `{s}`?"),
                None if looks_secret(k) => {
                    "credentials do not belong in ducksafe's configuration; see docs/configuration.md".into()
                }
                None => format!("known keys: {}", KEYS.join(", ")),
            }),
        })
        .collect()
}

/// The closest known key, when one is close enough to be a likely typo.
pub fn did_you_mean(key: &str) -> Option<&'static str> {
    let upper = key.to_ascii_uppercase().replace(['-', ' ', '.'], "_");
    if let Some(k) = KEYS.iter().find(|k| **k == upper) {
        return Some(k);
    }
    KEYS.iter()
        .map(|k| (levenshtein(&upper, k), *k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

fn schema_violations(instance: &Value) -> Vec<Violation> {
    let schema = schema();
    let validator = match jsonschema::validator_for(&schema) {
        Ok(v) => v,
        Err(e) => {
            return vec![Violation {
                pointer: String::new(),
                message: format!("internal error: the configuration schema does not compile: {e}"),
                hint: None,
            }]
        }
    };
    validator
        .iter_errors(instance)
        .filter(|e| {
            !matches!(
                e.kind(),
                jsonschema::error::ValidationErrorKind::AdditionalProperties { .. }
            )
        })
        .map(|e| {
            let pointer = e.instance_path().as_str().to_owned();
            let key = pointer.trim_start_matches('/').to_owned();
            let message = if key.is_empty() {
                redact_text(&e.to_string())
            } else if looks_secret(&key) {
                format!("`{key}`: invalid value (hidden: the key looks like a credential)")
            } else {
                format!("`{key}`: {}", redact_text(&e.to_string()))
            };
            Violation {
                pointer,
                message,
                hint: expected_hint(&key),
            }
        })
        .collect()
}

fn expected_hint(key: &str) -> Option<String> {
    Some(
        match key {
            "DB_PATH" => "a path to the DuckDB file, e.g. `simulation.duckdb`",
            "LOG_LEVEL" => "one of TRACE, DEBUG, INFO, WARNING, ERROR",
            "BACKUP_KEEP_LAST" => "a whole number of backups, at least 1",
            "BACKUP_RETENTION_DAYS" => "a whole number of days, at least 1, or leave it out",
            "BACKUP_MAX_TOTAL_BYTES" => "a whole number of bytes, e.g. 1073741824 for 1 GiB",
            "BACKUP_MIN_FREE_BYTES" => "a whole number of bytes, e.g. 104857600 for 100 MiB",
            "VERIFY_LEVEL" => "one of quick, standard, full",
            "RESTORE_ON_FAILURE" => "true or false",
            "DUCKDB_MEMORY_LIMIT" => "a size such as `512MB` or `2GB`",
            "DUCKDB_THREADS" => "a whole number of threads, at least 1",
            "" => "see `ducksafe schema config`",
            _ => return None,
        }
        .to_owned(),
    )
}

fn pointer_for(key: &str) -> String {
    format!("/{}", key.replace('~', "~0").replace('/', "~1"))
}

/// Path keys must hold local paths: a URL or DSN (which may carry a password) is refused, and
/// its value never repeated.
fn path_value_violations(config: &Config) -> Vec<Violation> {
    [
        ("DB_PATH", Some(&config.db_path)),
        ("BACKUP_DIR", Some(&config.backup_dir)),
        ("QUARANTINE_DIR", config.quarantine_dir.as_ref()),
    ]
    .into_iter()
    .filter_map(|(key, value)| {
        let why = not_a_local_path(value?)?;
        Some(Violation {
            pointer: format!("/{key}"),
            message: format!("`{key}` {why} (value hidden)"),
            hint: Some(
                "ducksafe protects a local DuckDB file: give a filesystem path; credentials do not belong here"
                    .into(),
            ),
        })
    })
    .collect()
}

/// Why a path value is not a local filesystem path (a URL or DSN, possibly with credentials).
fn not_a_local_path(v: &str) -> Option<&'static str> {
    if v.contains("://") {
        return Some("is a URL, not a local path");
    }
    let lower = v.to_ascii_lowercase();
    if ["password=", "passwd=", "token=", "secret="]
        .iter()
        .any(|k| lower.contains(k))
    {
        return Some("carries a credential, not a local path");
    }
    None
}

/// True for key names that usually hold credentials.
pub fn looks_secret(key: &str) -> bool {
    let k = key.to_ascii_uppercase();
    [
        "TOKEN",
        "PASSWORD",
        "PASSWD",
        "SECRET",
        "CREDENTIAL",
        "API_KEY",
        "APIKEY",
        "PRIVATE_KEY",
        "DSN",
    ]
    .iter()
    .any(|w| k.contains(w))
}

fn redact_key(key: &str) -> String {
    key.chars().take(64).collect()
}

/// Hides passwords inside URLs/DSNs (`scheme://user:secret@host`) and `password=…`-style pairs.
pub fn redact_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    // scheme://user:password@ → scheme://user:***@
    while let Some(pos) = rest.find("://") {
        let (head, tail) = rest.split_at(pos + 3);
        out.push_str(head);
        let end = tail
            .find(|c: char| c.is_whitespace() || c == '"' || c == '\'' || c == '`' || c == '/')
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        if let Some(at) = authority.rfind('@') {
            let userinfo = &authority[..at];
            if let Some(colon) = userinfo.find(':') {
                out.push_str(&userinfo[..=colon]);
                out.push_str("***");
                out.push_str(&authority[at..]);
                rest = &tail[end..];
                continue;
            }
        }
        out.push_str(authority);
        rest = &tail[end..];
    }
    out.push_str(rest);
    // key=value pairs whose key looks secret
    out.split_inclusive(|c: char| c.is_whitespace() || c == '&' || c == ';' || c == '?')
        .map(|part| {
            if let Some(eq) = part.find('=') {
                if looks_secret(&part[..eq]) {
                    let trail = part
                        .chars()
                        .last()
                        .filter(|c| c.is_whitespace() || *c == '&' || *c == ';' || *c == '?');
                    let mut s = format!("{}=***", &part[..eq]);
                    if let Some(t) = trail {
                        s.push(t);
                    }
                    return s;
                }
            }
            part.to_owned()
        })
        .collect()
}

/// Lexical normalization: removes `.` and resolves `..` against earlier components without
/// touching the filesystem (the path may not exist yet).
pub fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::ParentDir => match out.components().next_back() {
                Some(Component::Normal(_)) => {
                    out.pop();
                }
                // `/..` is `/`.
                Some(Component::RootDir | Component::Prefix(_)) => {}
                _ => out.push(".."),
            },
            Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[allow(clippy::needless_pass_by_value)]
    fn inline(v: Value) -> Source {
        Source::Inline {
            object: v.as_object().cloned().unwrap(),
            base: PathBuf::from("/srv/sim"),
        }
    }

    #[test]
    fn seed_quick_start_config_is_accepted_as_written() {
        let text = "DB_PATH: simulation.duckdb\nLOG_LEVEL: INFO\nBACKUP_RETENTION_DAYS: 7\n";
        let v = parse_text(text, Path::new("config.yaml")).unwrap();
        let s = load(&inline(v), &no_env).unwrap();
        assert_eq!(s.db_path, PathBuf::from("/srv/sim/simulation.duckdb"));
        assert_eq!(s.backup_dir, PathBuf::from("/srv/sim/backups"));
        assert_eq!(s.config.backup_keep_last, 7);
        assert_eq!(s.config.backup_retention_days, Some(7));
        assert_eq!(s.config.verify_level, VerifyLevel::Full);
    }

    #[test]
    fn every_violation_is_reported_with_its_pointer() {
        let v = serde_json::json!({
            "LOG_LEVEL": "LOUD",
            "BACKUP_KEEP_LAST": 0,
            "BACKUP_RETENTON_DAYS": 7,
            "VERIFY_LEVEL": "paranoid"
        });
        let Err(Error::ConfigInvalid { violations, .. }) = load(&inline(v), &no_env) else {
            panic!("expected invalid")
        };
        let pointers: Vec<&str> = violations.iter().map(|v| v.pointer.as_str()).collect();
        for p in [
            "/BACKUP_RETENTON_DAYS",
            "/LOG_LEVEL",
            "/BACKUP_KEEP_LAST",
            "/VERIFY_LEVEL",
            "",
        ] {
            assert!(pointers.contains(&p), "{p} missing from {pointers:?}");
        }
        let typo = violations
            .iter()
            .find(|v| v.pointer == "/BACKUP_RETENTON_DAYS")
            .unwrap();
        assert_eq!(
            typo.hint.as_deref(),
            Some("did you mean `BACKUP_RETENTION_DAYS`?")
        );
        let missing = violations.iter().find(|v| v.pointer.is_empty()).unwrap();
        assert!(missing.message.contains("DB_PATH"), "{}", missing.message);
    }

    #[test]
    fn environment_overrides_the_file_and_is_typed() {
        let v = serde_json::json!({"DB_PATH": "a.duckdb", "LOG_LEVEL": "INFO"});
        let env = |k: &str| match k {
            "DUCKSAFE_BACKUP_KEEP_LAST" => Some("3".to_owned()),
            "DUCKSAFE_RESTORE_ON_FAILURE" => Some("yes".to_owned()),
            _ => None,
        };
        let s = load(&inline(v.clone()), &env).unwrap();
        assert_eq!(s.config.backup_keep_last, 3);
        assert!(s.config.restore_on_failure);
        let bad = |k: &str| (k == "DUCKSAFE_BACKUP_KEEP_LAST").then(|| "many".to_owned());
        let Err(Error::ConfigInvalid { violations, .. }) = load(&inline(v), &bad) else {
            panic!("expected invalid")
        };
        assert_eq!(violations[0].pointer, "/BACKUP_KEEP_LAST");
    }

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

    #[test]
    fn lowercase_keys_get_a_did_you_mean() {
        assert_eq!(did_you_mean("db_path"), Some("DB_PATH"));
        assert_eq!(did_you_mean("BACKUP_KEEP_LST"), Some("BACKUP_KEEP_LAST"));
        assert_eq!(did_you_mean("COMPLETELY_DIFFERENT"), None);
    }

    #[test]
    fn backup_dir_may_not_be_the_database_or_its_directory() {
        for dir in ["simulation.duckdb", ".", "./"] {
            let v = serde_json::json!({"DB_PATH": "simulation.duckdb", "LOG_LEVEL": "INFO", "BACKUP_DIR": dir});
            assert!(
                matches!(load(&inline(v), &no_env), Err(Error::ConfigInvalid { .. })),
                "{dir}"
            );
        }
    }

    #[test]
    fn parent_of_the_root_is_the_root() {
        assert_eq!(normalize(Path::new("/../x")), PathBuf::from("/x"));
        assert_eq!(normalize(Path::new("../../x")), PathBuf::from("../../x"));
        assert_eq!(normalize(Path::new("a/../../x")), PathBuf::from("../x"));
        assert_eq!(normalize(Path::new("/a/./b/../c")), PathBuf::from("/a/c"));
    }

    #[test]
    fn urls_with_credentials_are_refused_in_path_keys_and_never_echoed() {
        for (key, value) in [
            ("DB_PATH", "postgres://app:hunter2@db/sim"),
            ("BACKUP_DIR", "s3://AKIA:hunter2@bucket/x"),
            ("QUARANTINE_DIR", "q?token=hunter2"),
        ] {
            let mut v = serde_json::json!({"DB_PATH": "a.duckdb", "LOG_LEVEL": "INFO"});
            v[key] = Value::String(value.into());
            let Err(e @ Error::ConfigInvalid { .. }) = load(&inline(v), &no_env) else {
                panic!("{key} accepted a URL")
            };
            let all = format!("{e} {}", serde_json::to_string(&e.entries()).unwrap());
            assert!(!all.contains("hunter2"), "{all}");
            assert_eq!(e.entries()[0].path.as_deref(), Some(&*format!("/{key}")));
        }
    }

    #[test]
    fn paths_resolve_lexically_against_the_base() {
        let v = serde_json::json!({"DB_PATH": "../data/./sim.duckdb", "LOG_LEVEL": "INFO", "BACKUP_DIR": "/var/b/../backups"});
        let s = load(&inline(v), &no_env).unwrap();
        assert_eq!(s.db_path, PathBuf::from("/srv/data/sim.duckdb"));
        assert_eq!(s.backup_dir, PathBuf::from("/var/backups"));
        assert_eq!(s.quarantine_dir, PathBuf::from("/var/backups/quarantine"));
    }

    #[test]
    fn secrets_never_appear_in_messages() {
        let v = serde_json::json!({"DB_PATH": "a.duckdb", "LOG_LEVEL": "INFO", "API_TOKEN": "hunter2", "DB_PASSWORD": "hunter3"});
        let Err(e @ Error::ConfigInvalid { .. }) = load(&inline(v), &no_env) else {
            panic!("expected invalid")
        };
        let all = serde_json::to_string(&e.entries()).unwrap();
        assert!(!all.contains("hunter"), "{all}");
        assert_eq!(
            redact_text("postgres://app:s3cret@db:5432/x and password=abc&x=1"),
            "postgres://app:***@db:5432/x and password=***&x=1"
        );
    }
}
