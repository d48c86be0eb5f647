//! Loading: reads a configuration file (or takes an inline object), lays the environment over
//! it, validates it, and resolves its paths into one [`Settings`] before any work starts.
//! Relative paths resolve against the configuration file's directory (the working directory for
//! an inline or environment-only configuration), lexically, so `..` is predictable; the
//! resolved absolute paths are what every report shows.

use std::path::{Component, Path, PathBuf};

use serde_json::Value;

use super::redact::redact_text;
use super::source::Source;
use super::validate::{
    path_value_violations, placement_violations, remote_violations, schema_violations, unknown_keys,
};
use super::{env, Config};
use crate::error::{Error, Result, Violation};

/// The validated configuration, with every path resolved and absolute.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub config: Config,
    /// The configuration file, when there is one.
    pub config_path: Option<PathBuf>,
    pub db_path: PathBuf,
    pub backup_dir: PathBuf,
    pub quarantine_dir: PathBuf,
    /// The audit log's folder (`LOG_DIR`, resolved).
    pub log_dir: PathBuf,
    /// Non-fatal remarks made while loading (a key set from the environment, say).
    pub notes: Vec<String>,
    /// Keys whose value came from a `DUCKSAFE_<KEY>` variable (or a `--set`), not from the
    /// configuration itself: rollback instructions carry them.
    pub overridden: Vec<&'static str>,
}

impl Settings {
    /// The database file's stem, which names its backups (`simulation` for `simulation.duckdb`).
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
        Source::File(path) => {
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
        overridden = env::apply(map, env, &mut notes);
        violations.extend(unknown_keys(map));
    }
    violations.extend(schema_violations(&object));
    reject(from_overrides(violations, &overridden))?;
    let config: Config = serde_json::from_value(object).map_err(|e| Error::ConfigInvalid {
        source_name: name.clone(),
        violations: vec![Violation {
            pointer: String::new(),
            message: redact_text(&e.to_string()),
            hint: None,
        }],
    })?;

    reject(path_value_violations(&config))?;
    let (remote, remote_notes) = remote_violations(&config);
    reject(from_overrides(remote, &overridden))?;
    notes.extend(remote_notes);

    let db_path = normalize(&base.join(&config.db_path));
    let backup_dir = normalize(&base.join(&config.backup_dir));
    let quarantine_dir = config.quarantine_dir.as_ref().map_or_else(
        || backup_dir.join("quarantine"),
        |q| normalize(&base.join(q)),
    );
    let log_dir = normalize(&base.join(&config.log_dir));
    reject(placement_violations(&db_path, &backup_dir))?;
    Ok(Settings {
        config,
        config_path,
        db_path,
        backup_dir,
        quarantine_dir,
        log_dir,
        notes,
        overridden,
    })
}

/// `LOG_DIR` as far as it is known without reading `source`: `$DUCKSAFE_LOG_DIR` (or `--set
/// LOG_DIR=…`), else the default `logs`, resolved against the configuration's base.
pub fn log_dir_of(source: &Source, env: &dyn Fn(&str) -> Option<String>) -> PathBuf {
    let base = match source {
        Source::Inline { base, .. } => base.clone(),
        Source::File(path) => {
            let abs = std::env::current_dir().map_or_else(|_| path.clone(), |cwd| cwd.join(path));
            abs.parent().map_or_else(PathBuf::new, Path::to_path_buf)
        }
    };
    let dir = env("DUCKSAFE_LOG_DIR")
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| "logs".to_owned());
    normalize(&base.join(dir))
}

/// The database of a configuration that does not load, as far as it can be told (a name for a
/// monitoring label, never a path to act on): `DB_PATH` from `--set`/`$DUCKSAFE_DB_PATH` or the
/// file, resolved against the configuration's base; else the configuration file's own path.
pub fn db_path_guess(source: &Source, env: &dyn Fn(&str) -> Option<String>) -> Option<String> {
    let (base, file) = match source {
        Source::Inline { base, object } => (
            base.clone(),
            Err(object
                .get("DB_PATH")
                .and_then(Value::as_str)
                .map(str::to_owned)),
        ),
        Source::File(path) => {
            let abs = std::env::current_dir().map_or_else(|_| path.clone(), |cwd| cwd.join(path));
            let base = abs.parent().map_or_else(PathBuf::new, Path::to_path_buf);
            (base, Ok(normalize(&abs)))
        }
    };
    let from_file = |file: &std::result::Result<PathBuf, Option<String>>| match file {
        Ok(path) => read_file(path)
            .ok()
            .and_then(|v| v.get("DB_PATH")?.as_str().map(str::to_owned)),
        Err(inline) => inline.clone(),
    };
    let db = env("DUCKSAFE_DB_PATH")
        .filter(|d| !d.is_empty())
        .or_else(|| from_file(&file).filter(|d| !d.is_empty()));
    match (db, file) {
        (Some(db), _) => Some(normalize(&base.join(db)).display().to_string()),
        (None, Ok(path)) => Some(path.display().to_string()),
        (None, Err(_)) => None,
    }
}

/// Says, of each problem with a key set over the file, where its value came from: the file
/// the summary line names is not where to look.
fn from_overrides(mut violations: Vec<Violation>, overridden: &[&str]) -> Vec<Violation> {
    for v in &mut violations {
        let key = v.pointer.trim_start_matches('/');
        if let Some(key) = overridden.iter().find(|k| **k == key) {
            v.message = format!(
                "{} (the value comes from `--set {key}=…` or `$DUCKSAFE_{key}`, not from the file)",
                v.message
            );
        }
    }
    violations
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
        let what = if meta.is_dir() {
            "a directory"
        } else {
            "not a regular file"
        };
        return Err(invalid(format!(
            "`{}` is {what}: name the configuration file itself",
            path.display()
        )));
    }
    let mut bytes = Vec::new();
    file.take(MAX_CONFIG_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io("read configuration", path, e))?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err(invalid(format!(
            "`{}` is larger than {MAX_CONFIG_BYTES} bytes",
            path.display()
        )));
    }
    let text = String::from_utf8(bytes)
        .map_err(|_| invalid(format!("`{}` is not UTF-8 text", path.display())))?;
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
        Value::Object(_) => match duplicate_key(text, is_json) {
            // The reader kept the last value: refused rather than silently guessed.
            Some(key) => Err(Error::ConfigInvalid {
                source_name: path.display().to_string(),
                violations: vec![Violation {
                    pointer: format!("/{}", key.replace('~', "~0").replace('/', "~1")),
                    message: format!(
                        "`{}` is given twice: ducksafe does not guess which value you meant",
                        redact_text(&key)
                    ),
                    hint: Some("keep one line for each key".into()),
                }],
            }),
            None => Ok(value),
        },
        Value::Null => Err(invalid("the file is empty".into())),
        other => Err(invalid(format!(
            "expected a mapping of keys to values, found {}",
            type_name(&other)
        ))),
    }
}

/// The first key given twice at the top of a configuration document (both readers keep the last
/// value silently). `None` when there is none, or when the document is no mapping.
fn duplicate_key(text: &str, is_json: bool) -> Option<String> {
    use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, Visitor};

    /// The first key seen twice in a mapping, read key by key.
    struct FirstTwice(Option<String>);

    impl<'de> Deserialize<'de> for FirstTwice {
        fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
            d.deserialize_map(KeysVisitor)
        }
    }

    struct KeysVisitor;

    impl<'de> Visitor<'de> for KeysVisitor {
        type Value = FirstTwice;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a mapping")
        }

        fn visit_map<A: MapAccess<'de>>(
            self,
            mut map: A,
        ) -> std::result::Result<FirstTwice, A::Error> {
            let mut seen = std::collections::HashSet::new();
            let mut twice = None;
            while let Some(key) = map.next_key::<String>()? {
                map.next_value::<IgnoredAny>()?;
                if !seen.insert(key.clone()) && twice.is_none() {
                    twice = Some(key);
                }
            }
            Ok(FirstTwice(twice))
        }
    }

    let read = if is_json {
        serde_json::from_str::<FirstTwice>(text).ok()
    } else {
        serde_yaml_ng::from_str::<FirstTwice>(text).ok()
    };
    read.and_then(|f| f.0)
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
    use crate::config::VerifyLevel;

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
    fn a_key_given_twice_is_refused_not_guessed() {
        for (text, name) in [
            (
                "DB_PATH: a.duckdb\nLOG_LEVEL: INFO\nDB_PATH: b.duckdb\n",
                "config.yaml",
            ),
            (
                r#"{"DB_PATH": "a.duckdb", "LOG_LEVEL": "INFO", "DB_PATH": "b.duckdb"}"#,
                "config.json",
            ),
        ] {
            let Err(Error::ConfigInvalid { violations, .. }) = parse_text(text, Path::new(name))
            else {
                panic!("{name}: a duplicate key was accepted");
            };
            assert_eq!(violations[0].pointer, "/DB_PATH", "{name}");
            assert!(violations[0].message.contains("given twice"), "{name}");
        }
        // Keys that differ only in nesting or case are no duplicates.
        let text = "DB_PATH: a.duckdb\nLOG_LEVEL: INFO\ndb_path: b\n";
        assert!(parse_text(text, Path::new("config.yaml")).is_ok());
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
    }

    #[test]
    fn a_bad_value_set_over_the_file_says_so_and_a_negative_number_is_a_number() {
        let v = serde_json::json!({"DB_PATH": "a.duckdb", "LOG_LEVEL": "INFO"});
        let env = |var: &str| (var == "DUCKSAFE_BACKUP_KEEP_LAST").then(|| "-1".to_owned());
        let Err(Error::ConfigInvalid { violations, .. }) = load(&inline(v.clone()), &env) else {
            panic!("expected invalid")
        };
        assert_eq!(violations.len(), 1, "{violations:?}");
        let m = &violations[0].message;
        assert!(m.contains("minimum") && !m.contains("integer"), "{m}");
        assert!(
            m.contains("`--set BACKUP_KEEP_LAST=…` or `$DUCKSAFE_BACKUP_KEEP_LAST`"),
            "{m}"
        );
        // The same mistake in the file itself names no override.
        let mut in_file = v;
        in_file["BACKUP_KEEP_LAST"] = serde_json::json!(-1);
        let Err(Error::ConfigInvalid { violations, .. }) = load(&inline(in_file), &no_env) else {
            panic!("expected invalid")
        };
        assert!(!violations[0].message.contains("--set"), "{violations:?}");
    }

    #[test]
    fn a_folder_given_as_the_configuration_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let Err(Error::ConfigInvalid { violations, .. }) = read_file(dir.path()) else {
            panic!("expected invalid")
        };
        let m = &violations[0].message;
        assert!(
            m.starts_with(&format!("`{}` is a directory", dir.path().display())),
            "{m}"
        );
    }
}
