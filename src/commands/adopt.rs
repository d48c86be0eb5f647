//! `ducksafe adopt [--dry-run]`: after moving the project folder on purpose, makes the backup
//! directory's backups those of the database `DB_PATH` names now. Without it, a directory whose
//! database moved is refused by every command (see [`crate::engine::identity`]).

use super::Global;
use crate::cli::AdoptArgs;
use crate::engine::identity;
use crate::engine::lock::DirLock;
use crate::engine::store::Store;
use crate::report;

pub fn run(g: &Global, a: &AdoptArgs) -> i32 {
    let result = (|| {
        let settings = super::load_settings(g)?;
        let store = Store::open(&settings.backup_dir, false)?;
        let _lock = DirLock::acquire(store.dir())?;
        // A restore left open before the move must be finished where it started: its journal
        // names the old paths.
        crate::engine::journal::check_marker(&settings)?;
        identity::adopt(&store, &settings, a.dry_run)
    })();
    let adoption = match result {
        Ok(r) => r,
        Err(e) => return super::fail(g, &e),
    };
    if g.json {
        report::print_json_pretty(&serde_json::json!({
            "dry_run": a.dry_run,
            "adoption": adoption,
        }));
        return 0;
    }
    let verb = if a.dry_run { "would make" } else { "made" };
    match (&adoption.previous, adoption.changed) {
        (_, false) => println!(
            "`{}` already belongs to `{}`; nothing to do",
            adoption.backup_dir.display(),
            adoption.database.display()
        ),
        (Some(previous), true) => println!(
            "{verb} the {} backup(s) of `{}` in `{}` those of `{}` (database id {})",
            adoption.backups.len(),
            previous.display(),
            adoption.backup_dir.display(),
            adoption.database.display(),
            adoption.database_id
        ),
        (None, true) => println!(
            "{verb} `{}` the backup directory of `{}` ({} backup(s), database id {})",
            adoption.backup_dir.display(),
            adoption.database.display(),
            adoption.backups.len(),
            adoption.database_id
        ),
    }
    0
}
