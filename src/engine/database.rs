//! The database ducksafe protects, as every command sees it: `DB_PATH` resolved, the one rule
//! that tells whether a path or a backup is this database's, the check that it is a DuckDB
//! file, and the limits DuckDB opens it with.
//!
//! Invariants:
//! - A database is named by its **resolved path**: `DB_PATH` with its folder resolved through
//!   symlinks and `..`, the file name kept. Two paths are the same database when their resolved
//!   paths are equal ([`same`]); a backup is this database's when its manifest carries this
//!   database's id, or, written before ids were recorded, names the same resolved path
//!   ([`Owner::foreign`]). Nothing else decides it.
//! - `DB_PATH` must name the database file itself, not a symlink to it: DuckDB keeps the WAL
//!   beside the name it was opened with and the data at the link's target, so neither a backup
//!   nor a restore through a link could be exact. [`path`] refuses it for validate, backups,
//!   dry runs and restores alike.
//! - Checking the database ([`check`]) reads its header only; DuckDB never opens it here.

use std::fs;
use std::path::{Path, PathBuf};

use super::manifest::Manifest;
use crate::config::{self, Settings};
use crate::duck;
use crate::error::{Error, Result};
use crate::files;

/// A path with its folder resolved (symlinks, `..`) and its file name kept as written;
/// lexically normalized when the folder does not exist.
pub fn resolve(path: &Path) -> PathBuf {
    match (fs::canonicalize(files::parent_of(path)), path.file_name()) {
        (Ok(dir), Some(name)) => dir.join(name),
        _ => config::normalize(path),
    }
}

/// Whether `a` and `b` name the same database: the same resolved path.
pub fn same(a: &Path, b: &Path) -> bool {
    a == b || resolve(a) == resolve(b)
}

/// The database path every command acts on: `DB_PATH`, resolved. Refuses a `DB_PATH` that is
/// itself a symlink (see the module documentation), whatever the command.
pub fn path(settings: &Settings) -> Result<PathBuf> {
    let db = &settings.db_path;
    if let Ok(m) = fs::symlink_metadata(db) {
        if m.file_type().is_symlink() {
            let target = fs::read_link(db)
                .map(|t| format!(" (to `{}`)", t.display()))
                .unwrap_or_default();
            return Err(Error::DatabaseInvalid {
                path: db.clone(),
                why: format!(
                    "`DB_PATH` is a symlink{target}: DuckDB keeps the WAL beside the link and the data at its target, so ducksafe can neither back it up nor restore it exactly; set `DB_PATH` to the database file itself; nothing was changed"
                ),
            });
        }
    }
    Ok(resolve(db))
}

/// Checks that the database exists and is a DuckDB file (not reached through a symlink),
/// without opening it in DuckDB.
pub fn check(settings: &Settings) -> Result<()> {
    path(settings)?;
    let path = &settings.db_path;
    match fs::metadata(path) {
        Ok(m) if m.is_file() => {}
        Ok(_) => {
            return Err(Error::DatabaseInvalid {
                path: path.clone(),
                why: "it is not a regular file".into(),
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::DatabaseNotFound { path: path.clone() })
        }
        Err(e) => return Err(Error::io("stat database", path, e)),
    }
    duck::check_header(path)
        .map(drop)
        .map_err(|e| Error::DatabaseInvalid {
            path: path.clone(),
            why: e.to_string(),
        })
}

/// The limits DuckDB opens this configuration's databases with.
pub fn limits(settings: &Settings) -> duck::Limits {
    duck::Limits {
        memory_limit: settings.config.duckdb_memory_limit.clone(),
        threads: settings.config.duckdb_threads,
    }
}

/// The database a command works for, as far as its backups are concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// The database id; `None` when the backup directory has no owner file (no backup yet by a
    /// ducksafe that records ids) and the command only reads.
    pub id: Option<String>,
    /// The database's resolved path.
    pub database: PathBuf,
    /// Whether the directory's owner file records this owner already.
    pub recorded: bool,
}

impl Owner {
    /// `None` when the backup described by `m` is this database's; otherwise why it is not.
    pub fn foreign(&self, m: &Manifest) -> Option<String> {
        let ours = match (&m.source.database_id, &self.id) {
            (Some(theirs), Some(ours)) => theirs == ours,
            _ => same(Path::new(&m.source.path), &self.database),
        };
        (!ours).then(|| {
            format!(
                "a backup of another database (`{}`); ducksafe never restores, rotates or lists it for `{}`",
                m.source.path,
                self.database.display()
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_keeps_the_file_name_and_resolves_the_folder() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        fs::create_dir(&real).unwrap();
        std::os::unix::fs::symlink(&real, dir.path().join("link")).unwrap();
        let canon = fs::canonicalize(&real).unwrap();
        assert_eq!(
            resolve(&dir.path().join("link/db.duckdb")),
            canon.join("db.duckdb")
        );
        assert_eq!(
            resolve(Path::new("/nonexistent/x/../db.duckdb")),
            PathBuf::from("/nonexistent/db.duckdb")
        );
        assert!(same(
            &dir.path().join("link/db.duckdb"),
            &real.join("db.duckdb")
        ));
        assert!(!same(
            &dir.path().join("link/db.duckdb"),
            &real.join("other.duckdb")
        ));
    }
}
