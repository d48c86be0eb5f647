//! Validation of a configuration document: unknown keys (with a did-you-mean), the schema that
//! `ducksafe schema config` prints, path keys that are URLs or DSNs, and a `BACKUP_DIR` that
//! would hold the live database. Each check reports every violation it finds, with its JSON
//! Pointer; credentials are never repeated.

use std::path::Path;
use std::sync::LazyLock;

use serde_json::{Map, Value};

use super::keys::expected_hint;
use super::redact::{looks_secret, redact_key, redact_text};
use super::suggest::did_you_mean;
use super::{schema, Config, KEYS};
use crate::error::Violation;

/// The configuration schema, compiled once per process.
static VALIDATOR: LazyLock<Result<jsonschema::Validator, String>> =
    LazyLock::new(|| jsonschema::validator_for(&schema()).map_err(|e| e.to_string()));

pub(super) fn unknown_keys(map: &Map<String, Value>) -> Vec<Violation> {
    map.keys()
        .filter(|k| !KEYS.contains(&k.as_str()))
        .map(|k| Violation {
            pointer: pointer_for(k),
            message: format!("unknown key `{}`", redact_key(k)),
            hint: Some(match did_you_mean(k) {
                Some(s) => format!("did you mean `{s}`?"),
                None if looks_secret(k) || is_remote_credential(k) => {
                    "credentials do not belong in ducksafe's configuration: the remote's come only from the environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`); see docs/configuration.md".into()
                }
                None => format!("known keys: {}", KEYS.join(", ")),
            }),
        })
        .collect()
}

pub(super) fn schema_violations(instance: &Value) -> Vec<Violation> {
    let validator = match &*VALIDATOR {
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

/// Key names that try to put object-store credentials in the configuration.
fn is_remote_credential(key: &str) -> bool {
    let k = key.to_ascii_uppercase();
    k.starts_with("AWS_") || k.contains("ACCESS_KEY") || k.contains("SESSION_TOKEN")
}

/// `REMOTE_URL` and `REMOTE_ENDPOINT` checked as what they are (values never repeated: they may
/// hold a pasted credential). Returns the violations and the remarks (`http://` off loopback).
pub(super) fn remote_violations(config: &Config) -> (Vec<Violation>, Vec<String>) {
    let mut violations = Vec::new();
    let mut notes = Vec::new();
    if let Some(url) = &config.remote_url {
        if let Err(why) = crate::remote::target::parse_url(url) {
            violations.push(Violation {
                pointer: "/REMOTE_URL".into(),
                message: format!("`REMOTE_URL` {why} (value hidden)"),
                hint: expected_hint("REMOTE_URL"),
            });
        }
    }
    if let Some(endpoint) = &config.remote_endpoint {
        match crate::remote::target::parse_endpoint(endpoint) {
            Err(why) => violations.push(Violation {
                pointer: "/REMOTE_ENDPOINT".into(),
                message: format!("`REMOTE_ENDPOINT` {why} (value hidden)"),
                hint: expected_hint("REMOTE_ENDPOINT"),
            }),
            Ok(e) if e.plain_http && !e.loopback => notes.push(format!(
                "`REMOTE_ENDPOINT` `{}` is plain http:// to another machine: backups and request signatures cross the network unencrypted; use https:// unless this network is yours",
                e.url
            )),
            Ok(_) => {}
        }
        if config.remote_url.is_none() {
            violations.push(Violation {
                pointer: "/REMOTE_ENDPOINT".into(),
                message:
                    "`REMOTE_ENDPOINT` is set but `REMOTE_URL` is not: nothing would be copied"
                        .into(),
                hint: expected_hint("REMOTE_URL"),
            });
        }
    }
    (violations, notes)
}

fn pointer_for(key: &str) -> String {
    format!("/{}", key.replace('~', "~0").replace('/', "~1"))
}

/// Path keys must hold local paths: a URL or DSN (which may carry a password) is refused, and
/// its value never repeated.
pub(super) fn path_value_violations(config: &Config) -> Vec<Violation> {
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

/// Where `BACKUP_DIR` may not be, once resolved: the database file itself, the database's own
/// directory, or a parent of the database.
pub(super) fn placement_violations(db_path: &Path, backup_dir: &Path) -> Vec<Violation> {
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
    } else if Some(backup_dir) == db_path.parent() {
        violations.push(Violation {
            pointer: "/BACKUP_DIR".into(),
            message: format!(
                "`BACKUP_DIR` is the database's own directory (`{}`): backups would sit among the live database and its WAL files",
                backup_dir.display()
            ),
            hint: Some("use a directory of its own, such as `backups`".into()),
        });
    }
    if db_path.starts_with(backup_dir) && backup_dir != db_path {
        violations.push(Violation {
            pointer: "/DB_PATH".into(),
            message: format!(
                "the database `{}` lies inside `BACKUP_DIR`",
                db_path.display()
            ),
            hint: Some("keep backups in a directory apart from the live database".into()),
        });
    }
    violations
}
