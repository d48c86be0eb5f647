//! Named crash points for the fault-injection tests.
//!
//! `DUCKSAFE_FAILPOINT=<name>` makes the process abort (as `kill -9` would: no destructor, no
//! cleanup, no answer) when it reaches [`hit`] with that name; `<name>:sleep=<ms>` pauses there
//! instead; `<name>:panic` panics there (the hook's guard must still answer one JSON line, with
//! `internal`); `<name>:wait=<path>` creates `<path>.reached` there and waits until `<path>` exists,
//! so a test can act at exactly that moment (run another command, kill the process) and then
//! let it go on, without guessing a delay. Unset, a failpoint
//! costs one environment lookup. Aborting is no capability a caller lacks: anyone who can set
//! the environment can also kill the process.

/// Every failpoint in the order a backup reaches them (with `BACKUP_STORAGE: incremental`, the
/// block store's among them), then a restore's.
pub const ALL: &[&str] = &[
    "backup.locked",
    "snapshot.copying",
    "snapshot.copied",
    "snapshot.folded",
    "snapshot.synced",
    "backup.verified",
    "publish.manifest",
    "publish.sidecar",
    "publish.renamed",
    "backup.latest",
    "pack.synced",
    "pack.published",
    "convert.packed",
    "convert.proven",
    "convert.manifest",
    "convert.removed",
    "rotation.deleting",
    "secure.packed",
    "gc.repacked",
    "gc.deleting",
    "rotation.done",
    "restore.staged",
    "restore.intent",
    "restore.quarantined",
    "restore.renamed",
];

/// Aborts or pauses here when `DUCKSAFE_FAILPOINT` names this point.
pub fn hit(name: &str) {
    let Ok(spec) = std::env::var("DUCKSAFE_FAILPOINT") else {
        return;
    };
    let (point, action) = spec.split_once(':').unwrap_or((spec.as_str(), "abort"));
    if point != name {
        return;
    }
    if let Some(go) = action.strip_prefix("wait=") {
        let reached = format!("{go}.reached");
        if let Err(e) = std::fs::write(&reached, std::process::id().to_string()) {
            eprintln!("ducksafe: failpoint `{name}`: cannot write `{reached}`: {e}");
        }
        eprintln!("ducksafe: failpoint `{name}`: waiting for `{go}`");
        // Bounded, so that a test that failed before letting it go leaves no process behind
        // for long; ten minutes is far beyond any test's wait.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(600);
        while std::fs::symlink_metadata(go).is_err() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    } else if action == "panic" {
        panic!("failpoint `{name}`: panicking, as the test asked");
    } else if let Some(ms) = action.strip_prefix("sleep=") {
        let ms = ms.parse().unwrap_or(1000);
        eprintln!("ducksafe: failpoint `{name}`: sleeping {ms} ms");
        std::thread::sleep(std::time::Duration::from_millis(ms));
    } else {
        eprintln!("ducksafe: failpoint `{name}`: aborting");
        std::process::abort();
    }
}
