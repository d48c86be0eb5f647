//! `ducksafe delete ID`: deletes one backup now, with its manifest and sidecar. For the backup
//! rotation cannot order (dated in the future by a wrong clock) or one an operator knows is
//! unwanted. Refuses a pinned backup, the one `latest.duckdb` names and the one a guarded run in
//! progress may restore: those are decisions to undo first (`unpin`, a new backup that `latest`
//! then names, the run's post_run).

use super::Global;
use crate::cli::DeleteArgs;
use crate::engine::store::Store;
use crate::error::Error;
use crate::report;

pub fn run(g: &Global, a: &DeleteArgs) -> i32 {
    let result = (|| {
        let settings = super::load_settings(g)?;
        let store = Store::open(&settings.backup_dir, false)?;
        let _lock = store.lock_only()?;
        let owner = crate::engine::identity::check(store.dir(), &settings)?;
        let store = store.owned_by(owner);
        if !a.dry_run {
            // This database's directory: sweep what an interrupted run left.
            store.clean_leftovers(false)?;
        }
        if a.id == "latest" || a.id == crate::engine::store::LATEST {
            return Err(Error::Usage(
                "`delete` takes a backup id, never `latest`: `ducksafe list` shows the ids".into(),
            ));
        }
        let entry = store.resolve(&a.id)?;
        if entry.manifest.pinned {
            return Err(Error::Usage(format!(
                "backup `{}` is pinned; unpin it first (`ducksafe unpin {}`) if it really should go",
                entry.id, entry.id
            )));
        }
        if store.latest_id().as_deref() == Some(entry.id.as_str()) {
            return Err(Error::Usage(format!(
                "backup `{}` is the one `latest.duckdb` names; take a new backup first (`ducksafe backup`), then `latest` names that one",
                entry.id
            )));
        }
        if let Some(run) =
            crate::engine::lease::live(store.dir()).filter(|l| l.backup_id == entry.id)
        {
            return Err(Error::Usage(format!(
                "backup `{}` is the one a guarded run in progress (PID {}) may restore; delete it once that run's post_run has ended it",
                entry.id, run.pid
            )));
        }
        if !a.dry_run {
            store.delete(&entry.id)?;
        }
        Ok::<_, Error>(entry)
    })();
    match result {
        Ok(entry) => {
            if g.json {
                report::print_json_pretty(&serde_json::json!({
                    "id": entry.id,
                    "deleted": !a.dry_run,
                    "dry_run": a.dry_run,
                    "bytes": entry.file_bytes,
                }));
            } else if a.dry_run {
                println!("dry run: would delete `{}`", entry.id);
            } else {
                println!(
                    "deleted `{}` (its manifest and checksum file too)",
                    entry.id
                );
            }
            0
        }
        Err(e) => super::fail(g, &e),
    }
}
