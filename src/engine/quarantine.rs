//! The quarantine root: where a restore moves the database it replaces, with every WAL file
//! beside it, and where it keeps its journal. Nothing in it is ever deleted by ducksafe.
//!
//! Invariants:
//! - The root shares the database's filesystem (a rename cannot cross filesystems): the
//!   configured `QUARANTINE_DIR` when it does, else a private `.ducksafe-quarantine` folder
//!   beside the database ([`root`]).
//! - It is trusted only as a private, real directory of this user ([`check`]): a journal planted
//!   in a shared folder could name any file to rename over the database.

use std::fs;
use std::path::{Path, PathBuf};

use super::folders::{self, Kind};
use crate::config::Settings;
use crate::error::Result;
use crate::files;

/// Where quarantined files go for `settings`: the configured folder when it shares the
/// database's filesystem, else a private folder beside the database.
pub fn root(settings: &Settings) -> PathBuf {
    let db_dir = files::parent_of(&settings.db_path);
    let configured = &settings.quarantine_dir;
    let probe = if configured.exists() {
        configured.as_path()
    } else {
        files::parent_of(configured)
    };
    match (files::device_of(probe), files::device_of(db_dir)) {
        // A read-only mount of the database's filesystem (a snapshot) has its device number.
        (Some(a), Some(b)) if a == b && !files::is_read_only_fs(probe) => configured.clone(),
        _ => db_dir.join(".ducksafe-quarantine"),
    }
}

/// What a backup, a restore and `validate` all check of the quarantine root before they rely on
/// it: when it exists, it is a private, real directory of this user. Writes nothing.
pub fn check(settings: &Settings) -> Result<()> {
    folders::check(&root(settings), Kind::Quarantine)
}

/// Makes sure `dir` (the root, or the folder a restore creates in it) is a private directory
/// of this user, creating it when missing and tightening it when it is open to others (the
/// note says so). An unsafe one is reported under the key that decides it, `QUARANTINE_DIR`.
pub fn ensure(dir: &Path) -> Result<Option<String>> {
    folders::ensure(dir, Kind::Quarantine)
}

/// The quarantine folder for a restore started `now`: `<stem>_<date>_restore`, with `_2`, `_3`…
/// when that name is taken.
pub fn folder_for(settings: &Settings, now: chrono::DateTime<chrono::Utc>) -> PathBuf {
    let root = root(settings);
    let base = format!(
        "{}_restore",
        super::store::base_id(&settings.db_stem(), now)
    );
    let mut folder = root.join(&base);
    let mut n = 2;
    while fs::symlink_metadata(&folder).is_ok() {
        folder = root.join(format!("{base}_{n}"));
        n += 1;
    }
    folder
}
