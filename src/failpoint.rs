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

/// The failpoints a backup passes, in the order it reaches them, whatever `BACKUP_STORAGE`
/// says (`snapshot.folded` only when there is a WAL to fold).
pub const BACKUP: &[&str] = &[
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
    "rotation.deleting",
    "rotation.done",
];

/// The block store's failpoints (`BACKUP_STORAGE: incremental`), in the order a backup that
/// packs and a deletion that collects reach them: after `backup.latest` the pack and the
/// conversion of the previous backup, within rotation the securing of chunks and the collection
/// of packs.
pub const BLOCK_STORE: &[&str] = &[
    "pack.synced",
    "pack.published",
    "convert.packed",
    "convert.proven",
    "convert.manifest",
    "convert.removed",
    "secure.packed",
    "gc.repacked",
    "gc.deleting",
];

/// The failpoints a restore passes, in the order it reaches them.
pub const RESTORE: &[&str] = &[
    "restore.staged",
    "restore.intent",
    "restore.quarantined",
    "restore.renamed",
];

/// The failpoints a table restore (`restore --table`) passes, in order: its checks done (before
/// the undo backup), after each table's rows went in (inside the transaction), its COMMIT.
pub const RESTORE_TABLE: &[&str] = &[
    "restore_table.checked",
    "restore_table.inserted",
    "restore_table.committed",
];

/// The failpoints of an upload to the remote (`REMOTE_URL`), in order: after the first part
/// (or the single PUT's read) and before the upload completes, then after the data is uploaded
/// and checked and before its manifest is written, then after a packed backup's record is
/// written and before its full copy is deleted.
pub const REMOTE: &[&str] = &["remote.part", "remote.uploaded", "remote.packed"];

/// Every failpoint: [`BACKUP`]'s, [`BLOCK_STORE`]'s, [`RESTORE`]'s, [`RESTORE_TABLE`]'s, then
/// [`REMOTE`]'s. A unit test holds it equal to the names the source passes to [`hit`].
pub const ALL: &[&str] = &ALL_POINTS;

const ALL_POINTS: [&str;
    BACKUP.len() + BLOCK_STORE.len() + RESTORE.len() + RESTORE_TABLE.len() + REMOTE.len()] =
    concat(&[BACKUP, BLOCK_STORE, RESTORE, RESTORE_TABLE, REMOTE]);

/// The lists one after the other, in an array of their summed length.
const fn concat<const N: usize>(lists: &[&[&'static str]]) -> [&'static str; N] {
    let mut all = [""; N];
    let (mut at, mut l) = (0, 0);
    while l < lists.len() {
        let mut i = 0;
        while i < lists[l].len() {
            all[at] = lists[l][i];
            at += 1;
            i += 1;
        }
        l += 1;
    }
    assert!(at == N);
    all
}

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

#[cfg(test)]
mod tests {
    use super::*;

    /// The names every `failpoint::hit("…")` under `src/` passes, by file (this file aside: it
    /// only defines `hit`). A call that does not pass a literal, or calls `hit` by another path,
    /// is an error: the test could not see it.
    fn hit_in_source() -> Result<Vec<(String, String)>, String> {
        fn walk(dir: &std::path::Path, files: &mut Vec<std::path::PathBuf>) {
            for e in std::fs::read_dir(dir).unwrap() {
                let path = e.unwrap().path();
                if path.is_dir() {
                    walk(&path, files);
                } else if path.extension().is_some_and(|x| x == "rs") {
                    files.push(path);
                }
            }
        }
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        walk(&src, &mut files);
        let call = "failpoint::hit(";
        let mut found = Vec::new();
        for file in files {
            let rel = file.strip_prefix(&src).unwrap().display().to_string();
            if rel == "failpoint.rs" {
                continue;
            }
            let text = std::fs::read_to_string(&file).unwrap();
            if text.contains("failpoint::{") || text.contains("failpoint::hit;") {
                return Err(format!(
                    "{rel} imports `hit`: call it as `failpoint::hit(\"…\")`"
                ));
            }
            for (at, _) in text.match_indices(call) {
                let rest = &text[at + call.len()..];
                let name = rest
                    .strip_prefix('"')
                    .and_then(|r| r.split_once('"'))
                    .map(|(name, _)| name)
                    .ok_or_else(|| format!("{rel}: `{call}` without a literal name"))?;
                found.push((rel.clone(), name.to_owned()));
            }
        }
        Ok(found)
    }

    /// Every failpoint the source hits is in [`ALL`] (so the crash scenarios, which kill a run
    /// at each of [`BACKUP`] and [`RESTORE`], reach it), and every name in [`ALL`] is hit
    /// somewhere (a failpoint renamed or removed in the code leaves no dead name behind).
    #[test]
    fn all_is_exactly_the_failpoints_the_source_hits() {
        let hit = hit_in_source().unwrap();
        assert!(
            !hit.is_empty(),
            "no failpoint found under src/: the scan is broken"
        );
        for (file, name) in &hit {
            assert!(
                ALL.contains(&name.as_str()),
                "src/{file} hits `{name}`, which failpoint::ALL does not list"
            );
        }
        for name in ALL {
            assert!(
                hit.iter().any(|(_, n)| n == name),
                "failpoint::ALL lists `{name}`, which no file under src/ hits"
            );
        }
        let mut names = ALL.to_vec();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ALL.len(), "a name listed twice: {ALL:?}");
        assert_eq!(
            ALL,
            [BACKUP, BLOCK_STORE, RESTORE, RESTORE_TABLE, REMOTE].concat(),
            "ALL is BACKUP, BLOCK_STORE, RESTORE, RESTORE_TABLE, then REMOTE"
        );
    }
}
