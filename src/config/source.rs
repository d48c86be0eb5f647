//! Where the configuration comes from: the one place that decides it, for the operator commands
//! (`--config`) and the hook (a request's `config`) alike.
//!
//! A named file (`--config PATH`, `config.path`) or an inline object (`config.inline`) is used as
//! given. Otherwise: the file `$DUCKSAFE_CONFIG` names (set but empty is refused, as every empty
//! `DUCKSAFE_` value), else `./config.yaml`, else, when there is no such file and
//! `DUCKSAFE_DB_PATH` (or `--set DB_PATH=…`) names the database, the environment alone.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::env::{ENV_CONFIG, ENV_PREFIX};
use crate::error::{Error, Result, Violation};

/// What the caller named: the command line's `--config`, or a request's `config`.
#[derive(Debug, Clone)]
pub enum Asked {
    /// A YAML or JSON file; a relative path is taken from the working directory.
    Path(PathBuf),
    /// The configuration itself; relative paths resolve against the working directory.
    Inline(Map<String, Value>),
    /// Nothing: the default lookup.
    Nothing,
}

/// Where to read the configuration from, once decided.
#[derive(Debug, Clone)]
pub enum Source {
    /// A file: named by `--config`, a request's `config.path` or `$DUCKSAFE_CONFIG`, or the
    /// default `./config.yaml`.
    File(PathBuf),
    /// An object (a request's `config.inline`, or empty for an environment-only
    /// configuration); relative paths resolve against `base`.
    Inline {
        object: Map<String, Value>,
        base: PathBuf,
    },
}

/// The file the default lookup reads when `$DUCKSAFE_CONFIG` is unset.
const DEFAULT_FILE: &str = "config.yaml";

/// Decides where the configuration comes from. `env` reads `DUCKSAFE_*` as the configuration
/// sees them (see [`super::env::lookup`]).
pub fn locate(asked: Asked, env: &dyn Fn(&str) -> Option<String>) -> Result<Source> {
    let cwd = || std::env::current_dir().map_err(|e| Error::io("read", Path::new("."), e));
    Ok(match asked {
        Asked::Path(path) => Source::File(path),
        Asked::Inline(object) => Source::Inline {
            object,
            base: cwd()?,
        },
        Asked::Nothing => match env(ENV_CONFIG) {
            // An empty value is an invalid value, not "unset", as for every `DUCKSAFE_` variable
            // (read as a path, it would name the working directory).
            Some(path) if path.is_empty() => {
                return Err(Error::ConfigInvalid {
                    source_name: format!("${ENV_CONFIG}"),
                    violations: vec![Violation {
                        pointer: String::new(),
                        message: format!("`{ENV_CONFIG}` is set but empty: it names no configuration file"),
                        hint: Some(format!(
                            "set `{ENV_CONFIG}` to the configuration file's path, or unset it (`unset {ENV_CONFIG}`) to read `./{DEFAULT_FILE}`"
                        )),
                    }],
                })
            }
            Some(path) => Source::File(path.into()),
            None if !Path::new(DEFAULT_FILE).exists()
                && env(&format!("{ENV_PREFIX}DB_PATH")).is_some() =>
            {
                Source::Inline {
                    object: Map::new(),
                    base: cwd()?,
                }
            }
            None => Source::File(DEFAULT_FILE.into()),
        },
    })
}
