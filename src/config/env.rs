//! The environment overlay: `DUCKSAFE_<KEY>` variables, and over them the `--set KEY=VALUE`
//! pairs (or a request's `set`), each coerced to its key's type before validation.

use serde_json::{Map, Value};

use super::KEYS;

/// Prefix of the environment variables that override configuration keys.
pub const ENV_PREFIX: &str = "DUCKSAFE_";
/// The environment variable that names the configuration file.
pub const ENV_CONFIG: &str = "DUCKSAFE_CONFIG";

/// `DUCKSAFE_<KEY>` (or `DUCKSAFE_CONFIG`) as the configuration sees it: a `--set KEY=VALUE`
/// (or a request's `set`) wins over the process environment, the last of several for one key.
pub fn lookup(set: &[(String, String)], var: &str) -> Option<String> {
    var.strip_prefix(ENV_PREFIX)
        .and_then(|key| set.iter().rev().find(|(k, _)| k == key))
        .map(|(_, v)| v.clone())
        .or_else(|| std::env::var(var).ok())
}

/// Applies `DUCKSAFE_<KEY>` overrides, coercing each to the key's type (an uncoercible value is
/// left as a string, so the schema reports it with its pointer).
pub(super) fn apply(
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
            | "DUCKDB_THREADS"
            | "LOG_MAX_BYTES"
            | "STATUS_MAX_AGE_HOURS"
            | "REMOTE_KEEP_LAST"
            | "REMOTE_RETENTION_DAYS"
            | "REMOTE_CONCURRENCY"
            | "REPORT_CHANGES_MAX_BYTES" => {
                // A negative number stays a number, so that the schema says it is below the
                // minimum rather than "not an integer".
                let n = raw.trim();
                n.parse::<i64>().map_or_else(
                    |_| {
                        n.parse::<u64>()
                            .map_or_else(|_| Value::String(raw.clone()), Value::from)
                    },
                    Value::from,
                )
            }
            "RESTORE_ON_FAILURE" | "REMOTE_REQUIRED" | "REPORT_CHANGES" => {
                match raw.trim().to_ascii_lowercase().as_str() {
                    "1" | "true" | "yes" | "on" => Value::Bool(true),
                    "0" | "false" | "no" | "off" => Value::Bool(false),
                    _ => Value::String(raw.clone()),
                }
            }
            _ => Value::String(raw.clone()),
        };
        map.insert(key.to_owned(), value);
        notes.push(format!(
            "`{key}` set over the configuration (by `--set {key}=…`, `-q`/`-v`, or `{var}`)"
        ));
        overridden.push(key);
    }
    overridden
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every integer or boolean key of the schema is coerced from its variable's text: a key
    /// added without its coercion would be refused whenever it is set by `--set` or the
    /// environment.
    #[test]
    fn every_integer_and_boolean_key_is_coerced() {
        let schema = super::super::schema();
        for key in KEYS {
            let ty = schema["properties"][key]["type"].to_string();
            let raw = if ty.contains("integer") {
                "3"
            } else if ty.contains("boolean") {
                "true"
            } else {
                continue;
            };
            let mut map = Map::new();
            let var = format!("{ENV_PREFIX}{key}");
            apply(
                &mut map,
                &|v| (v == var).then(|| raw.to_owned()),
                &mut Vec::new(),
            );
            assert!(
                !map[key].is_string(),
                "`{var}={raw}` stays a string for `{key}` ({ty})"
            );
        }
    }
}
