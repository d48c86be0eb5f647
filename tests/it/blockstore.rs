//! The block store (`BACKUP_STORAGE: incremental`), end to end with the real binary on real
//! DuckDB files: a round trip after ten simulated runs with rotation and a pinned backup, a crash
//! at every step of conversion and deletion, a flipped byte anywhere in the packs, the
//! manifests or the newest file, and the fallback to full copies.

use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use crate::support::{self, assert_ok, dir_names, fingerprints, sha256, Project};
use ducksafe::workload::{self, Shape};
use serde_json::Value;

/// The seed's size: about ten blocks, a few of which each run rewrites.
const EMPLOYEES: u32 = 9_016;
const EVENTS: u32 = 42_331;

fn project(extra: &str) -> Project {
    let p = Project::new(&format!("BACKUP_STORAGE: incremental\n{extra}"));
    fs::remove_file(p.db()).unwrap();
    ducksafe::demo::create_sized(&p.db(), EMPLOYEES, EVENTS).unwrap();
    p
}

fn simulate(p: &Project, run: u32) {
    simulate_as(p, Shape::Append, run);
}

fn simulate_as(p: &Project, shape: Shape, run: u32) {
    workload::run(&p.db(), shape, run, EMPLOYEES, EVENTS).unwrap();
}

fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}; stderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// Takes a backup; returns its id.
fn backup(p: &Project) -> String {
    let out = p.run(&["--json", "backup"]);
    assert_ok(&out);
    json(&out)["backup"]["id"].as_str().unwrap().to_owned()
}

/// The listed backups: id → storage (`plain` or `packed`).
fn listed(p: &Project) -> Vec<(String, String)> {
    let out = p.run(&["--json", "list"]);
    assert_ok(&out);
    json(&out)["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["id"].as_str().unwrap().to_owned(),
                b["storage"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn manifest(p: &Project, id: &str) -> Value {
    serde_json::from_slice(&fs::read(p.backups().join(format!("{id}.manifest.json"))).unwrap())
        .unwrap()
}

/// Whether `restore ID --dry-run` accepts the backup: for a packed one, it is rebuilt as a
/// stream with every block and the whole SHA-256 checked.
fn restorable(p: &Project, id: &str) -> bool {
    p.run(&["restore", id, "--dry-run"]).status.success()
}

/// Ten simulated runs, a backup after each, `BACKUP_KEEP_LAST: 4` and the second backup
/// pinned: every backup left rebuilds to exactly the SHA-256 its manifest recorded when it was
/// taken, and opens in DuckDB with the fingerprints recorded then.
#[test]
fn ten_runs_with_rotation_and_a_pinned_backup_round_trip() {
    let p = project("BACKUP_KEEP_LAST: 4\n");
    let mut ids = Vec::new();
    for run in 1..=10 {
        simulate(&p, run);
        ids.push(backup(&p));
        if run == 2 {
            assert_ok(&p.run(&["pin", &ids[1]]));
        }
    }
    let left = listed(&p);
    let packed = left.iter().filter(|(_, s)| s == "packed").count();
    assert_eq!(left.len(), 5, "4 kept and the pinned one: {left:?}");
    assert_eq!(packed, 4, "all but the newest are packed: {left:?}");
    assert!(left.iter().any(|(id, _)| id == &ids[1]), "the pinned one");
    // Only the newest is a file; `latest.duckdb` names it.
    assert_eq!(p.backup_files(), vec![format!("{}.duckdb", ids[9])]);
    let out = p.run(&["verify", "--all"]);
    assert_ok(&out);
    // The packs hold less than the newest file (seven backups in little more than one).
    let packs: u64 = dir_names(&p.backups().join("packs"))
        .iter()
        .map(|n| {
            fs::metadata(p.backups().join("packs").join(n))
                .unwrap()
                .len()
        })
        .sum();
    let newest = fs::metadata(p.backups().join(format!("{}.duckdb", ids[9])))
        .unwrap()
        .len();
    assert!(packs < newest, "packs {packs} bytes, newest {newest}");
    for (id, _) in &left {
        let m = manifest(&p, id);
        assert_ok(&p.run(&["restore", id]));
        assert_eq!(sha256(&p.db()), m["sha256"].as_str().unwrap(), "{id}");
        let want: Vec<(String, Value)> = m["tables"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                let name = t["name"].as_str().unwrap();
                let schema = t["schema"].as_str().unwrap();
                (format!("{schema}.{name}"), t["fingerprint"].clone())
            })
            .collect();
        let got: Vec<(String, Value)> = fingerprints(&p.db())
            .into_iter()
            .map(|(n, f)| (n, serde_json::to_value(f).unwrap()))
            .collect();
        for (name, fp) in &want {
            let found = got
                .iter()
                .find(|(n, _)| n.ends_with(name.rsplit('.').next().unwrap()));
            assert_eq!(found.map(|(_, f)| f), Some(fp), "{id}: {name}");
        }
    }
}

/// A kill at a failpoint: by `abort` there, or by SIGKILL while the process waits there.
#[derive(Debug, Clone, Copy)]
enum Kill {
    Abort,
    Sigkill,
}

/// Runs `args` with the process killed at `point`; panics unless it died there.
fn killed_at(p: &Project, args: &[&str], point: &str, kill: Kill) {
    let mut cmd = p.cmd(args);
    match kill {
        Kill::Abort => {
            support::abort_at(cmd, point);
        }
        Kill::Sigkill => {
            let go = p.path(&format!("go-{}", point.replace('.', "-")));
            let reached = PathBuf::from(format!("{}.reached", go.display()));
            cmd.env(
                "DUCKSAFE_FAILPOINT",
                format!("{point}:wait={}", go.display()),
            )
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
            let mut child = cmd.spawn().unwrap();
            let deadline = Instant::now() + Duration::from_secs(60);
            while !reached.exists() {
                assert!(
                    child.try_wait().unwrap().is_none(),
                    "{point}: the process ended before reaching it"
                );
                assert!(Instant::now() < deadline, "{point}: never reached");
                std::thread::sleep(Duration::from_millis(5));
            }
            child.kill().unwrap();
            child.wait().unwrap();
            let _ = fs::remove_file(reached);
        }
    }
}

/// The backup directory of a project copied aside, and put back, byte for byte (the project
/// stays at its path: the directory records which database it belongs to).
fn save(p: &Project, to: &Path) {
    let _ = fs::remove_dir_all(to);
    let status = support::command("cp")
        .arg("-a")
        .arg(p.dir.path())
        .arg(to)
        .status()
        .unwrap();
    assert!(status.success());
}

fn put_back(p: &Project, from: &Path) {
    fs::remove_dir_all(p.dir.path()).unwrap();
    let status = support::command("cp")
        .arg("-a")
        .arg(from)
        .arg(p.dir.path())
        .status()
        .unwrap();
    assert!(status.success());
}

/// A crash at every step of conversion, rotation, deletion and pack collection, by abort and by
/// SIGKILL: every backup listed before is still restorable byte for byte afterwards (one the
/// interrupted command was deleting may be gone), and the next backup cleans up (no temporary
/// pack, `verify --all` passes, every backup still restorable).
#[test]
fn a_crash_at_every_block_store_step() {
    // A: pinned; B: packed; C: plain with a block map, no longer `latest` (D was taken as a full
    // copy); D: `latest`; the database changed since. A backup now converts C and rotates B
    // away (its pack holds blocks A still needs and blocks only B had: repacked); `delete C`
    // packs what A and B need from C's file first. The runs re-run one year, so that each
    // rewrites the blocks the one before wrote.
    let p = project("BACKUP_KEEP_LAST: 3\n");
    let simulate = |p: &Project, run| simulate_as(p, Shape::Rerun, run);
    let mut ids = Vec::new();
    for run in 1..=3 {
        simulate(&p, run);
        ids.push(backup(&p));
    }
    assert_ok(&p.run(&["pin", &ids[0]]));
    simulate(&p, 4);
    let out = p
        .cmd(&["--json", "backup"])
        .env("DUCKSAFE_BACKUP_STORAGE", "full")
        .output()
        .unwrap();
    assert_ok(&out);
    ids.push(json(&out)["backup"]["id"].as_str().unwrap().to_owned());
    simulate(&p, 5);
    let before = listed(&p);
    assert_eq!(
        before.iter().map(|(_, s)| s.as_str()).collect::<Vec<_>>(),
        ["plain", "plain", "packed", "packed"],
        "{before:?}"
    );
    let template = PathBuf::from(format!("{}.template", p.dir.path().display()));
    save(&p, &template);
    let mut cases = 0;
    let points = ducksafe::failpoint::BLOCK_STORE;
    assert_eq!(points.len(), 9, "{points:?}");
    for point in points {
        // Which command reaches the point, and the backup it may legitimately remove.
        let (args, leaving): (&[&str], &str) = if *point == "secure.packed" {
            (&["delete", &ids[2]], &ids[2])
        } else {
            (&["backup"], &ids[1])
        };
        for kill in [Kill::Abort, Kill::Sigkill] {
            put_back(&p, &template);
            killed_at(&p, args, point, kill);
            let after: Vec<String> = listed(&p).into_iter().map(|(id, _)| id).collect();
            for (id, _) in &before {
                if after.contains(id) {
                    assert!(
                        restorable(&p, id),
                        "{point} {kill:?}: `{id}` is not restorable"
                    );
                } else {
                    assert_eq!(id, leaving, "{point} {kill:?}: `{id}` is gone");
                }
            }
            // The next run cleans up.
            simulate(&p, 6);
            backup(&p);
            assert!(
                dir_names(&p.backups().join("packs"))
                    .iter()
                    .all(|n| !n.starts_with(".ducksafe-tmp-")),
                "{point} {kill:?}: a temporary pack is left"
            );
            let out = p.run(&["verify", "--all"]);
            assert!(
                out.status.success(),
                "{point} {kill:?}: {}",
                String::from_utf8_lossy(&out.stdout)
            );
            for (id, _) in listed(&p) {
                assert!(
                    restorable(&p, &id),
                    "{point} {kill:?}: `{id}` after cleanup"
                );
            }
            cases += 1;
        }
    }
    eprintln!("crash cases: {cases}");
    put_back(&p, &template);
    let _ = fs::remove_dir_all(&template);
}

/// Flips one byte of `path` at `at` (and back, when called again).
fn flip(path: &Path, at: u64) {
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8];
    f.read_exact_at(&mut b, at).unwrap();
    f.write_all_at(&[b[0] ^ 0x20], at).unwrap();
}

/// `n` offsets spread over a file of `len` bytes, its first and last bytes included.
fn spread(len: u64, n: u64) -> Vec<u64> {
    let mut v: Vec<u64> = (0..n).map(|i| i * (len - 1) / (n - 1).max(1)).collect();
    v.dedup();
    v
}

/// A flipped byte anywhere in a pack, a manifest or the newest file: `verify --all` finds it,
/// and restore refuses every backup the byte belongs to (a restore that goes through gives the
/// exact bytes: its SHA-256 is checked). 100 % of at least 200 cases.
#[test]
fn a_flipped_byte_anywhere_is_found_and_refused() {
    let p = project("BACKUP_KEEP_LAST: 5\n");
    let mut ids = Vec::new();
    for run in 1..=5 {
        simulate(&p, run);
        ids.push(backup(&p));
    }
    let newest = ids.last().unwrap().clone();
    let packs_dir = p.backups().join("packs");
    let mut targets: Vec<(PathBuf, Vec<u64>)> = Vec::new();
    for n in dir_names(&packs_dir) {
        let path = packs_dir.join(&n);
        let len = fs::metadata(&path).unwrap().len();
        // The frames, and every byte of the index and trailer region's ends.
        let mut at = spread(len, 30);
        at.extend([1, 8, len - 1, len - 9, len - 30, len - 56, len - 57]);
        at.sort_unstable();
        at.dedup();
        targets.push((path, at));
    }
    for id in &ids {
        let path = p.backups().join(format!("{id}.manifest.json"));
        let len = fs::metadata(&path).unwrap().len();
        targets.push((path, spread(len, 12)));
    }
    let file = p.backups().join(format!("{newest}.duckdb"));
    targets.push((file.clone(), spread(fs::metadata(&file).unwrap().len(), 40)));
    let (mut cases, mut found, mut refused) = (0, 0, 0);
    for (path, offsets) in &targets {
        for &at in offsets {
            flip(path, at);
            cases += 1;
            let verify = p.run(&["verify", "--all"]);
            if verify.status.success() {
                eprintln!("NOT FOUND by verify: {} byte {at}", path.display());
            } else {
                found += 1;
            }
            // At least one backup refused; any restore that goes through was checked whole.
            if ids.iter().any(|id| !restorable(&p, id)) {
                refused += 1;
            } else {
                eprintln!("NOT REFUSED by restore: {} byte {at}", path.display());
            }
            flip(path, at);
        }
    }
    eprintln!("corruption cases: {cases}, found by verify {found}, refused by restore {refused}");
    assert!(cases >= 200, "{cases} cases");
    assert_eq!((found, refused), (cases, cases));
    // Put back, everything passes again.
    assert_ok(&p.run(&["verify", "--all"]));
}

/// A database the block store does not take (another block size) is backed up as full copies,
/// with a warning, never into a wrong backup.
#[test]
fn another_block_size_falls_back_to_full_copies() {
    let p = Project::new("BACKUP_STORAGE: incremental\n");
    fs::remove_file(p.db()).unwrap();
    let db = duckdb::Connection::open_in_memory().unwrap();
    db.execute_batch(&format!(
        "ATTACH '{}' AS s (BLOCK_SIZE 16384);
         CREATE TABLE s.t AS SELECT range AS id, md5(range::VARCHAR) AS v FROM range(50000);
         CHECKPOINT s; DETACH s;",
        p.db().display()
    ))
    .unwrap();
    drop(db);
    let first = p.run(&["--json", "backup"]);
    assert_ok(&first);
    let warnings = json(&first)["warnings"].to_string();
    assert!(warnings.contains("stays a full copy"), "{warnings}");
    assert!(warnings.contains("block size is 16384"), "{warnings}");
    assert_ok(&p.run(&["backup"]));
    let left = listed(&p);
    assert_eq!(left.len(), 2);
    assert!(left.iter().all(|(_, s)| s == "plain"), "{left:?}");
    assert!(dir_names(&p.backups().join("packs")).is_empty());
}

/// `BACKUP_MAX_TOTAL_BYTES` weighs what the backups really take: six backups of a database that
/// doubles in size over the runs fit in four times its first size, where six full copies would
/// take about eight.
#[test]
fn the_storage_budget_counts_real_bytes() {
    let probe = project("");
    simulate(&probe, 1);
    let size = fs::metadata(probe.db()).unwrap().len();
    drop(probe);
    let budget = 4 * size;
    let p = project(&format!(
        "BACKUP_KEEP_LAST: 10\nBACKUP_MAX_TOTAL_BYTES: {budget}\n"
    ));
    for run in 1..=6 {
        simulate(&p, run);
        backup(&p);
    }
    let out = p.run(&["--json", "list"]);
    assert_ok(&out);
    let listing = json(&out);
    assert_eq!(listing["backups"].as_array().unwrap().len(), 6, "{listing}");
    let total = listing["total_bytes"].as_u64().unwrap();
    assert!(total <= budget, "{total} bytes on disk, budget {budget}");
}

/// A pack deleted behind ducksafe's back damages the packed backups that needed it, and only
/// those: the next backup still converts the previous one (whose file holds its own blocks),
/// rotation still deletes what it should, and the warning names the damaged backups, not the
/// healthy one being converted.
#[test]
fn a_lost_pack_blames_only_the_backups_that_needed_it() {
    let p = project("BACKUP_KEEP_LAST: 3\n");
    let mut ids = Vec::new();
    for run in 1..=3 {
        simulate(&p, run);
        ids.push(backup(&p));
    }
    let packs = p.backups().join("packs");
    let lost = dir_names(&packs);
    assert!(!lost.is_empty(), "two packed backups, so packs exist");
    for n in &lost {
        fs::remove_file(packs.join(n)).unwrap();
    }
    simulate(&p, 4);
    let out = p.run(&["--json", "backup"]);
    assert_ok(&out);
    let report = json(&out);
    ids.push(report["backup"]["id"].as_str().unwrap().to_owned());
    let warnings = report["warnings"].to_string();
    assert!(
        warnings.contains(&format!("`{}`", ids[1])) && warnings.contains("cannot be restored"),
        "the damaged backup is named: {warnings}"
    );
    assert!(
        !warnings.contains("stays a full copy"),
        "the healthy previous backup converts: {warnings}"
    );
    let left = listed(&p);
    let storage = |id: &str| left.iter().find(|(i, _)| i == id).map(|(_, s)| s.clone());
    assert_eq!(storage(&ids[0]), None, "rotated: {left:?}");
    assert_eq!(storage(&ids[2]).as_deref(), Some("packed"), "{left:?}");
    assert_eq!(storage(&ids[3]).as_deref(), Some("plain"), "{left:?}");
    assert!(restorable(&p, &ids[2]), "the converted backup rebuilds");
    assert!(restorable(&p, &ids[3]));
    assert!(!restorable(&p, &ids[1]), "its blocks are gone");
}

/// Deleting a packed backup frees only the chunks no backup staying lists (and a pack goes only
/// when nothing in it is still needed): less than the fair share of the packs it weighed. A
/// budget that the plan's shares say fits the two newest backups does not fit them on disk,
/// where the second newest then holds the chunks it shared with the older ones alone: after
/// `prune` the bytes really on disk are within `BACKUP_MAX_TOTAL_BYTES`.
#[test]
fn the_budget_is_weighed_again_after_packed_backups_go() {
    let p = project("BACKUP_KEEP_LAST: 10\n");
    let mut ids = Vec::new();
    for run in 1..=6 {
        simulate_as(&p, Shape::Rebuild, run);
        ids.push(backup(&p));
    }
    let weights = p.run(&["--json", "prune", "--dry-run"]);
    assert_ok(&weights);
    let weights = json(&weights);
    let weight = |id: &str| {
        weights["plan"]["decisions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["id"] == id)
            .unwrap()["bytes"]
            .as_u64()
            .unwrap()
    };
    let budget = weight(&ids[5]) + weight(&ids[4]);
    let set = format!("BACKUP_MAX_TOTAL_BYTES={budget}");
    let out = p.run(&["--json", "--set", &set, "prune"]);
    assert_ok(&out);
    let pruned = json(&out);
    let out = p.run(&["--json", "list"]);
    assert_ok(&out);
    let after = json(&out)["total_bytes"].as_u64().unwrap();
    assert!(
        after <= budget,
        "{after} bytes on disk after the prune, budget {budget}: {pruned}"
    );
    let left = listed(&p);
    assert!(left.iter().any(|(id, _)| *id == ids[5]), "{left:?}");
    for (id, _) in &left {
        assert!(restorable(&p, id), "{id}");
    }
}

/// The newest backup's file cut short behind ducksafe's back (a full disk during a copy by
/// hand, a bad sector): it stays a full copy, named in every warning, but the healthy backups
/// taken after it still convert, rebuild and restore, and rotation deletes it when its turn
/// comes rather than keeping it at the expense of healthy ones.
#[test]
fn a_backup_file_cut_short_stops_nothing_but_itself() {
    let p = project("BACKUP_KEEP_LAST: 3\n");
    let mut ids = Vec::new();
    for run in 1..=4 {
        simulate(&p, run);
        ids.push(backup(&p));
    }
    let cut = p.backups().join(format!("{}.duckdb", ids[3]));
    let len = fs::metadata(&cut).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&cut)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let mut warnings = String::new();
    for run in 5..=7 {
        simulate(&p, run);
        let out = p.run(&["--json", "backup"]);
        assert_ok(&out);
        let report = json(&out);
        ids.push(report["backup"]["id"].as_str().unwrap().to_owned());
        warnings.push_str(&report["warnings"].to_string());
    }
    assert!(
        warnings.contains(&format!("`{}` stays a full copy", ids[3])),
        "the cut file is named: {warnings}"
    );
    for healthy in [&ids[4], &ids[5]] {
        assert!(
            !warnings.contains(&format!("`{healthy}` stays a full copy")),
            "`{healthy}` converts: {warnings}"
        );
    }
    let left = listed(&p);
    let storage = |id: &str| left.iter().find(|(i, _)| i == id).map(|(_, s)| s.clone());
    assert_eq!(
        storage(&ids[3]),
        None,
        "the cut backup was rotated away: {left:?}"
    );
    assert_eq!(storage(&ids[4]).as_deref(), Some("packed"), "{left:?}");
    assert_eq!(storage(&ids[5]).as_deref(), Some("packed"), "{left:?}");
    for id in &ids[4..] {
        assert!(restorable(&p, id), "{id}");
    }
}

/// A pack cut short behind ducksafe's back can no longer be read, and no collection deletes
/// it: `list` (and with it `status`) says so, names the file and the way out, instead of
/// counting its bytes in silence.
#[test]
fn a_pack_that_cannot_be_read_is_named_in_every_listing() {
    let p = project("");
    for run in 1..=3 {
        simulate(&p, run);
        backup(&p);
    }
    let packs = p.backups().join("packs");
    let name = dir_names(&packs).into_iter().next().expect("a pack");
    let path = packs.join(&name);
    let len = fs::metadata(&path).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let out = p.run(&["--json", "list"]);
    assert_ok(&out);
    let warnings = json(&out)["warnings"].to_string();
    assert!(
        warnings.contains(&format!("pack `{name}`")) && warnings.contains("never deletes it"),
        "{warnings}"
    );
}
