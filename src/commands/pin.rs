//! `ducksafe pin ID` / `ducksafe unpin ID`: a pinned backup is never rotated away and does not
//! count against `BACKUP_KEEP_LAST`.

use super::Global;
use crate::cli::PinArgs;
use crate::engine::store::Store;
use crate::report;

pub fn run(g: &Global, a: &PinArgs, pin: bool) -> i32 {
    let result = (|| {
        let settings = super::load_settings(g)?;
        super::warn_pending(&settings);
        let store = Store::open(&settings.backup_dir, false)?;
        let _lock = store.lock_only()?;
        let owner = crate::engine::identity::check(store.dir(), &settings)?;
        let store = store.owned_by(owner);
        // This database's directory: sweep what an interrupted run left.
        store.clean_leftovers(false)?;
        let mut entry = store.resolve(&a.id)?;
        entry.manifest.pinned = pin;
        store.rewrite_manifest(&entry.manifest)?;
        Ok::<_, crate::error::Error>(entry.id)
    })();
    match result {
        Ok(id) => {
            if g.json {
                report::print_json_pretty(&serde_json::json!({"id": id, "pinned": pin}));
            } else if pin {
                println!("pinned `{id}`: rotation will never delete it");
            } else {
                println!("unpinned `{id}`: rotation may delete it again");
            }
            0
        }
        Err(e) => super::fail(g, &e),
    }
}
