//! Which backups are this database's: the backup directory's owner file. Every command that
//! reads or writes backups goes through it; what "this database" is, is [`super::database`]'s
//! one rule.
//!
//! A database that has been backed up carries a random **database id** that ducksafe records in
//! two places:
//! - the backup directory's owner file `.ducksafe-database.json` (`0600`): the id and the resolved
//!   path of the one database whose backups the directory holds;
//! - every manifest (`source.database_id`, beside `source.path`).
//!
//! Invariants:
//! - A backup directory belongs to one database. A directory whose owner file names another
//!   database is refused by every command (`backup_dir_unsafe`, both paths named): two databases
//!   never share rotation, `latest` or a restore, even when their files have the same name.
//! - Anything in the directory that is not this database's is invisible to restore, `latest`,
//!   rotation and `list` (and reported by `list` and `verify --all`, never deleted).
//! - Moving the project folder changes the resolved path: the directory is then refused until
//!   `ducksafe adopt` records the new path under the same id. Never by accident.
//! - The owner file is written only by a backup (with the directory lock held) and by `adopt`.
//!   Reading it writes nothing, so backups on read-only media stay restorable.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::database::{self, Owner};
use super::store::{Entry, Inventory, Store};
use crate::config::Settings;
use crate::error::{Error, Result};
use crate::files;

/// Name of the owner file in a backup directory.
pub const OWNER_FILE: &str = ".ducksafe-database.json";
const OWNER_FORMAT: u32 = 1;
/// An owner file larger than this is refused (a real one is a few hundred bytes).
const MAX_OWNER_BYTES: u64 = 64 << 10;

/// `.ducksafe-database.json`: the database a backup directory belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnerFile {
    pub format: u32,
    /// Random, 128 bits, hex: recorded in every manifest of this database's backups.
    pub database_id: String,
    /// The database's resolved path.
    pub database: PathBuf,
    pub created_at: DateTime<Utc>,
    /// Earlier paths of the database, newest last (one per `ducksafe adopt`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub adopted_from: Vec<PathBuf>,
}

/// The directory's owner, read without writing anything (list, verify, restore, prune, pin, dry
/// runs, validate). Refuses a directory that belongs to another database.
pub fn check(dir: &Path, settings: &Settings) -> Result<Owner> {
    let ours = database::path(settings)?;
    match read_owner(dir)? {
        Some(f) if f.database == ours => Ok(Owner {
            id: Some(f.database_id),
            database: ours,
            recorded: true,
        }),
        Some(f) => Err(Error::SharedBackupDir {
            dir: dir.to_path_buf(),
            other: f.database.display().to_string(),
            ours,
        }),
        None => Ok(Owner {
            id: None,
            database: ours,
            recorded: false,
        }),
    }
}

/// [`check`] for a backup: when the directory has no owner yet, this database becomes its
/// owner, with the id an earlier backup of it recorded (its owner file was lost) or a new random
/// one. A directory without an owner that already holds another database's backups (written by
/// an earlier ducksafe) is refused. Writes nothing: [`record`] writes the owner file once the
/// new backup is verified, so that a refused or failed run leaves the directory as it was. Call
/// with the directory lock held.
pub fn claim(store: &Store, settings: &Settings) -> Result<Owner> {
    let mut owner = check(store.dir(), settings)?;
    if owner.recorded {
        return Ok(owner);
    }
    let inv = store.inventory()?;
    if let Some(other) = first_foreign(&inv, &owner) {
        return Err(Error::SharedBackupDir {
            dir: store.dir().to_path_buf(),
            other,
            ours: owner.database,
        });
    }
    let earlier = inv
        .backups
        .iter()
        .find_map(|b| b.manifest.source.database_id.clone());
    owner.id = Some(match earlier {
        Some(id) => id,
        None => new_database_id()?,
    });
    Ok(owner)
}

/// Writes the owner file of a [`claim`]ed directory when it does not record the owner yet.
pub fn record(dir: &Path, owner: &Owner) -> Result<()> {
    let Some(id) = owner.id.clone().filter(|_| !owner.recorded) else {
        return Ok(());
    };
    write_owner(
        dir,
        &OwnerFile {
            format: OWNER_FORMAT,
            database_id: id,
            database: owner.database.clone(),
            created_at: Utc::now(),
            adopted_from: Vec::new(),
        },
    )
}

fn first_foreign(inv: &Inventory, owner: &Owner) -> Option<String> {
    inv.backups
        .iter()
        .find(|b| owner.foreign(&b.manifest).is_some())
        .map(|b| b.manifest.source.path.clone())
}

/// What `ducksafe adopt` did (or would do).
#[derive(Debug, Clone, Serialize)]
pub struct Adoption {
    pub backup_dir: PathBuf,
    pub database: PathBuf,
    pub database_id: String,
    /// The path the backups were this database's under, when it changed.
    pub previous: Option<PathBuf>,
    /// Backups that are this database's after the adoption.
    pub backups: Vec<String>,
    /// Manifests from before ids were recorded that received the id.
    pub stamped: Vec<String>,
    pub changed: bool,
}

/// Whose backups these are before an adoption: the owner file's database, or, without one (an
/// earlier ducksafe, or a damaged file), the one database the manifests name. Several: refused.
fn owner_before_adoption(
    store: &Store,
    inv: &Inventory,
    recorded: Option<&OwnerFile>,
    ours: &Path,
) -> Result<Owner> {
    let owner = if let Some(f) = recorded {
        Owner {
            id: Some(f.database_id.clone()),
            database: f.database.clone(),
            recorded: true,
        }
    } else {
        // No owner file (an earlier ducksafe, or it was lost): the manifests tell.
        let mut ids: Vec<&String> = inv
            .backups
            .iter()
            .filter_map(|b| b.manifest.source.database_id.as_ref())
            .collect();
        ids.sort();
        ids.dedup();
        let mut paths: Vec<PathBuf> = inv
            .backups
            .iter()
            .filter(|b| {
                ids.len() != 1 || b.manifest.source.database_id.as_ref() == ids.first().copied()
            })
            .map(|b| database::resolve(Path::new(&b.manifest.source.path)))
            .collect();
        paths.dedup();
        let mut distinct = paths.clone();
        distinct.sort();
        distinct.dedup();
        if ids.len() > 1 || (ids.is_empty() && distinct.len() > 1) {
            return Err(Error::SharedBackupDir {
                dir: store.dir().to_path_buf(),
                other: distinct
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join("`, `"),
                ours: ours.to_path_buf(),
            });
        }
        Owner {
            recorded: false,
            id: ids.first().map(|s| (*s).clone()),
            // Newest first: the path of the newest backup.
            database: paths.first().cloned().unwrap_or_else(|| ours.to_path_buf()),
        }
    };
    Ok(owner)
}

/// Makes the backups in `store` those of the database `settings` names now: for a project
/// folder moved on purpose. The id stays; the owner file records the new path (and the old one
/// under `adopted_from`); manifests written before ids were recorded receive the id, so that
/// they stay this database's. A directory holding backups of several databases is refused.
/// Call with the directory lock held.
pub fn adopt(store: &Store, settings: &Settings, dry_run: bool) -> Result<Adoption> {
    let ours = database::path(settings)?;
    let inv = store.inventory()?;
    // A damaged owner file is replaced: adopt is how it is written again.
    let recorded = read_owner(store.dir()).ok().flatten();
    let previous_owner = owner_before_adoption(store, &inv, recorded.as_ref(), &ours)?;
    let id = match &previous_owner.id {
        Some(id) => id.clone(),
        None => new_database_id()?,
    };
    let adopted: Vec<&Entry> = inv
        .backups
        .iter()
        .filter(|b| previous_owner.foreign(&b.manifest).is_none())
        .collect();
    let stamped: Vec<String> = adopted
        .iter()
        .filter(|b| b.manifest.source.database_id.is_none())
        .map(|b| b.id.clone())
        .collect();
    let previous = (previous_owner.database != ours).then(|| previous_owner.database.clone());
    if let Some(old) = &previous {
        // The database these backups belong to is still there: this is not a moved project but
        // another database, and adopting would hand its backups (and its restores) to this one.
        if std::fs::symlink_metadata(old).is_ok() {
            return Err(Error::SharedBackupDir {
                dir: store.dir().to_path_buf(),
                other: old.display().to_string(),
                ours,
            });
        }
    }
    let changed = recorded.is_none() || previous.is_some() || !stamped.is_empty();
    if !dry_run && changed {
        for b in &adopted {
            if b.manifest.source.database_id.is_none() {
                let mut m = b.manifest.clone();
                m.source.database_id = Some(id.clone());
                store.rewrite_manifest(&m)?;
            }
        }
        let mut adopted_from = recorded
            .as_ref()
            .map(|f| f.adopted_from.clone())
            .unwrap_or_default();
        adopted_from.extend(previous.clone());
        write_owner(
            store.dir(),
            &OwnerFile {
                format: OWNER_FORMAT,
                database_id: id.clone(),
                database: ours.clone(),
                created_at: recorded.as_ref().map_or_else(Utc::now, |f| f.created_at),
                adopted_from,
            },
        )?;
    }
    Ok(Adoption {
        backup_dir: store.dir().to_path_buf(),
        database: ours,
        database_id: id,
        previous,
        backups: adopted.iter().map(|b| b.id.clone()).collect(),
        stamped,
        changed,
    })
}

/// Reads the owner file: `None` when there is none. A symlink, an oversized or unparsable file
/// is an error: it is never silently replaced (only `adopt` rewrites it).
pub fn read_owner(dir: &Path) -> Result<Option<OwnerFile>> {
    let path = dir.join(OWNER_FILE);
    let f = match files::open_read_nofollow(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("read the database owner file", &path, e)),
    };
    let mut buf = Vec::new();
    f.take(MAX_OWNER_BYTES + 1)
        .read_to_end(&mut buf)
        .map_err(|e| Error::io("read the database owner file", &path, e))?;
    let damaged = |why: String| Error::OwnerFileDamaged {
        path: path.clone(),
        why,
    };
    if buf.len() as u64 > MAX_OWNER_BYTES {
        return Err(damaged("it is implausibly large".into()));
    }
    let file: OwnerFile =
        serde_json::from_slice(&buf).map_err(|e| damaged(format!("it does not parse: {e}")))?;
    if file.format != OWNER_FORMAT {
        return Err(damaged(format!(
            "its format {} is not one this ducksafe knows",
            file.format
        )));
    }
    Ok(Some(file))
}

fn write_owner(dir: &Path, file: &OwnerFile) -> Result<()> {
    let path = dir.join(OWNER_FILE);
    files::write_json_atomic(&path, file)
        .map_err(|e| Error::io("write the database owner file", &path, e))
}

/// 128 random bits, hex.
fn new_database_id() -> Result<String> {
    let path = Path::new("/dev/urandom");
    let mut bytes = [0u8; 16];
    fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| Error::io("read", path, e))?;
    Ok(files::hex(&bytes))
}
