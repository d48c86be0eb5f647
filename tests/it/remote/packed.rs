//! Remote copies of the block store (`BACKUP_STORAGE: incremental`): what goes up is one full
//! copy (the newest backup) plus the packs, each older backup a packed record leaning on that
//! copy; the oldest restored on an empty machine; a pack changed on the server caught; a crash
//! between a packed record and the deletion of the full copy it replaces; retention keeping a
//! full copy a packed backup is rebuilt from.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use super::{creds, stdout_ok, Server};
use crate::support::{self, assert_exit, fingerprints, Project};
use ducksafe::duck::Fingerprint;
use ducksafe::workload::{self, Shape};

/// The blockstore tests' seed: about ten blocks, a few of which each run rewrites.
const EMPLOYEES: u32 = 9_016;
const EVENTS: u32 = 42_331;

fn project(s3: &Server, prefix: &str, extra: &str) -> Project {
    let p = Project::new(&format!(
        "BACKUP_STORAGE: incremental\n{extra}{}",
        s3.config(prefix)
    ));
    std::fs::remove_file(p.db()).unwrap();
    ducksafe::demo::create_sized(&p.db(), EMPLOYEES, EVENTS).unwrap();
    p
}

fn simulate(p: &Project, run: u32) {
    workload::run(&p.db(), Shape::Append, run, EMPLOYEES, EVENTS).unwrap();
}

/// A pre_run that must succeed; returns the backup's id and fingerprints of what it backed up.
fn pre_run(p: &Project) -> (String, Vec<(String, Fingerprint)>) {
    let before = fingerprints(&p.db());
    let (r, code) = p.pre_run_env(&creds());
    assert_eq!(code, 0, "{r:?}");
    assert!(
        r.warnings.iter().all(|w| !w.contains("copied off")),
        "{:?}",
        r.warnings
    );
    (r.backup.unwrap().id, before)
}

fn json(out: &std::process::Output) -> Value {
    serde_json::from_str(&stdout_ok(out)).unwrap()
}

/// Every key under `prefix/` with its size.
fn sizes(s3: &Server, prefix: &str) -> BTreeMap<String, u64> {
    let out = s3.boto(&format!(
        "r = s3.list_objects_v2(Bucket=BUCKET, Prefix={:?})\nprint('\\n'.join(o['Key'] + ' ' + str(o['Size']) for o in r.get('Contents', [])))",
        format!("{prefix}/")
    ));
    out.lines()
        .filter_map(|l| l.rsplit_once(' '))
        .map(|(k, n)| (k.to_owned(), n.parse().unwrap()))
        .collect()
}

/// `ducksafe --config config.yaml ARGS` in a fresh folder holding only `config`.
fn fresh_machine(config: &str) -> tempfile::TempDir {
    let fresh = tempfile::tempdir().unwrap();
    std::fs::write(fresh.path().join("config.yaml"), config).unwrap();
    fresh
}

fn run_in(dir: &Path, args: &[&str]) -> std::process::Output {
    support::bin()
        .current_dir(dir)
        .args(["--config", "config.yaml"])
        .args(args)
        .envs(creds())
        .output()
        .unwrap()
}

fn listed(p: &Project) -> Vec<Value> {
    json(
        &p.cmd(&["list", "--remote", "--json"])
            .envs(creds())
            .output()
            .unwrap(),
    )["backups"]
        .as_array()
        .unwrap()
        .clone()
}

#[test]
#[allow(clippy::too_many_lines)]
fn an_incremental_history_goes_up_as_one_full_copy_and_packs_and_the_oldest_comes_back() {
    let case = "remote::packed::an_incremental_history_goes_up_as_one_full_copy_and_packs_and_the_oldest_comes_back";
    let Some(s3) = Server::seaweed(case) else {
        return;
    };
    let p = project(&s3, "inc", "");
    let mut taken = Vec::new();
    for run in 1..=4 {
        taken.push(pre_run(&p));
        if run < 4 {
            simulate(&p, run);
        }
    }
    let ids: Vec<&str> = taken.iter().map(|(id, _)| id.as_str()).collect();
    let newest = ids[3];
    // Each backup's size, whole (the remote listing's `bytes`: a packed one's too).
    let local_bytes: BTreeMap<String, u64> = listed(&p)
        .iter()
        .map(|b| {
            (
                b["id"].as_str().unwrap().to_owned(),
                b["bytes"].as_u64().unwrap(),
            )
        })
        .collect();
    // On the remote: one full copy, the packs, a record per backup; nothing else.
    let objects = sizes(&s3, "inc");
    let full: Vec<&String> = objects.keys().filter(|k| k.ends_with(".duckdb")).collect();
    assert_eq!(full, [&format!("inc/{newest}.duckdb")], "{objects:#?}");
    let packs: BTreeMap<&String, &u64> = objects
        .iter()
        .filter(|(k, _)| k.starts_with("inc/packs/"))
        .collect();
    let local_packs = support::dir_names(&p.backups().join("packs"));
    assert!(!packs.is_empty());
    for k in packs.keys() {
        assert!(
            local_packs.contains(&k.trim_start_matches("inc/packs/").to_owned()),
            "{k} is a local pack"
        );
    }
    for id in &ids[..3] {
        assert!(
            objects.contains_key(&format!("inc/{id}.packed.{newest}.manifest.json")),
            "{objects:#?}"
        );
        assert!(!objects.contains_key(&format!("inc/{id}.manifest.json")));
    }
    let data: u64 = objects
        .iter()
        .filter(|(k, _)| !k.ends_with(".manifest.json"))
        .map(|(_, n)| n)
        .sum();
    let pack_bytes: u64 = packs.values().copied().sum();
    assert_eq!(data, local_bytes[newest] + pack_bytes);
    // What `BACKUP_STORAGE: full` would have uploaded: every backup whole.
    let all_full: u64 = local_bytes.values().sum();
    assert!(
        data * 2 < all_full,
        "{data} bytes up, {all_full} as full copies"
    );
    eprintln!(
        "remote: {data} bytes (newest {} + packs {pack_bytes}); as full copies: {all_full}",
        local_bytes[newest]
    );
    // A push has nothing to add.
    let pushed = json(&p.cmd(&["push", "--json"]).envs(creds()).output().unwrap());
    assert!(pushed["packs"].as_array().unwrap().is_empty(), "{pushed}");
    assert!(
        pushed["uploaded"]
            .as_array()
            .unwrap()
            .iter()
            .all(|u| u["state"] == "already_there"),
        "{pushed}"
    );
    assert_eq!(sizes(&s3, "inc"), objects);
    let remote = listed(&p);
    assert_eq!(remote.len(), 4);
    for b in &remote {
        let packed = b["id"] != newest;
        assert_eq!(b["storage"], if packed { "packed" } else { "full" }, "{b}");
        if packed {
            assert_eq!(b["base"], newest, "{b}");
            assert!(b["own_bytes"].as_u64().unwrap() < b["bytes"].as_u64().unwrap());
        }
    }
    let verified = p
        .cmd(&["verify", "--remote", "--all", "--read-data"])
        .envs(creds())
        .output()
        .unwrap();
    let text = stdout_ok(&verified);
    assert_eq!(
        text.lines().filter(|l| l.starts_with("ok ")).count(),
        4,
        "{text}"
    );
    assert_eq!(text.matches("blocks, sha256").count(), 3, "{text}");

    // The machine is gone: the oldest backup, packed, restored from the remote alone.
    let (oldest, original) = taken[0].clone();
    let config = std::fs::read_to_string(p.config()).unwrap();
    drop(p);
    let fresh = fresh_machine(&config);
    let said = stdout_ok(&run_in(fresh.path(), &["restore", "--remote", &oldest]));
    assert!(said.contains(&oldest), "{said}");
    assert_eq!(
        fingerprints(&fresh.path().join("simulation.duckdb")),
        original
    );
    // No download is left behind; the rebuilt backup is a local one now.
    let left: Vec<String> = support::dir_names(&fresh.path().join("backups"))
        .into_iter()
        .filter(|n| n.starts_with(".ducksafe-tmp"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    support::assert_ok(&run_in(fresh.path(), &["verify", &oldest]));
}

/// Flips one byte in the middle of a remote object (same size: the cheap check cannot see it).
fn flip_remote(s3: &Server, key: &str) {
    s3.boto(&format!(
        "b = bytearray(s3.get_object(Bucket=BUCKET, Key={key:?})['Body'].read())\nb[len(b) // 2] ^= 0xFF\ns3.put_object(Bucket=BUCKET, Key={key:?}, Body=bytes(b))"
    ));
}

#[test]
fn a_pack_changed_on_the_server_is_caught_by_verify_and_refused_by_restore() {
    let case =
        "remote::packed::a_pack_changed_on_the_server_is_caught_by_verify_and_refused_by_restore";
    let Some(s3) = Server::moto(case) else { return };
    let p = project(&s3, "bad", "");
    let (oldest, _) = pre_run(&p);
    simulate(&p, 1);
    pre_run(&p);
    let objects = sizes(&s3, "bad");
    let pack = objects
        .keys()
        .find(|k| k.starts_with("bad/packs/"))
        .expect("a pack went up")
        .clone();
    support::assert_ok(
        &p.cmd(&["verify", "--remote", &oldest, "--read-data"])
            .envs(creds())
            .output()
            .unwrap(),
    );
    flip_remote(&s3, &pack);
    let out = p
        .cmd(&["verify", "--remote", &oldest, "--read-data", "--json"])
        .envs(creds())
        .output()
        .unwrap();
    assert_exit(&out, 74);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["backups"][0]["ok"], false, "{report}");
    assert!(
        report["backups"][0]["error"]
            .as_str()
            .unwrap()
            .contains("packs/"),
        "{report}"
    );
    // And says how to repair it (the generic hint's "delete that id's objects" would not).
    assert!(
        report["backups"][0]["error"]
            .as_str()
            .unwrap()
            .contains(&format!("to repair it, delete `{pack}` on the server")),
        "{report}"
    );
    // A restore on another machine refuses it, and the database there stays as it was.
    let fresh = fresh_machine(&std::fs::read_to_string(p.config()).unwrap());
    let db = fresh.path().join("simulation.duckdb");
    std::fs::copy(p.db(), &db).unwrap();
    let before = support::every_byte(fresh.path());
    let out = run_in(fresh.path(), &["restore", "--remote", &oldest]);
    assert_exit(&out, 74);
    let after = support::every_byte(fresh.path());
    assert_eq!(
        before.get("simulation.duckdb"),
        after.get("simulation.duckdb")
    );
    assert!(
        !after
            .keys()
            .any(|k| k.contains(".ducksafe-tmp") || k.contains(&oldest)),
        "{after:?}"
    );
    // Gone from the server: the cheap check sees it, and push uploads it again from here.
    s3.boto(&format!("s3.delete_object(Bucket=BUCKET, Key={pack:?})"));
    assert_exit(
        &p.cmd(&["verify", "--remote", &oldest])
            .envs(creds())
            .output()
            .unwrap(),
        74,
    );
    let pushed = json(&p.cmd(&["push", "--json"]).envs(creds()).output().unwrap());
    assert_eq!(pushed["packs"][0]["key"], pack.as_str(), "{pushed}");
    support::assert_ok(
        &p.cmd(&["verify", "--remote", &oldest, "--read-data"])
            .envs(creds())
            .output()
            .unwrap(),
    );
    // Gone from the server and from here: push cannot repair it, and says so.
    s3.boto(&format!("s3.delete_object(Bucket=BUCKET, Key={pack:?})"));
    let local = p
        .backups()
        .join("packs")
        .join(pack.trim_start_matches("bad/packs/"));
    let aside = p.path("aside.pack");
    std::fs::rename(&local, &aside).unwrap();
    let out = p.cmd(&["push"]).envs(creds()).output().unwrap();
    std::fs::rename(&aside, &local).unwrap();
    support::assert_ok(&out);
    let said = support::stderr(&out);
    assert!(
        said.contains(&format!("remote backup `{oldest}` is incomplete")),
        "{said}"
    );
}

#[test]
fn a_crash_between_the_packed_record_and_the_full_copys_deletion_leaves_it_restorable() {
    let case = "remote::packed::a_crash_between_the_packed_record_and_the_full_copys_deletion_leaves_it_restorable";
    let Some(s3) = Server::moto(case) else { return };
    let p = project(&s3, "cut", "");
    let (first, original) = pre_run(&p);
    simulate(&p, 1);
    let mut env = creds();
    env.push(("DUCKSAFE_FAILPOINT", "remote.packed"));
    let out = support::pipe(
        {
            let mut c = support::bin();
            c.current_dir(p.dir.path()).arg("hook").envs(env);
            c
        },
        support::request("pre_run", &p.config(), "").as_bytes(),
    );
    assert!(
        out.status.code().is_none() || out.stdout.is_empty(),
        "{out:?}"
    );
    let second = p
        .backup_files()
        .into_iter()
        .map(|f| f.trim_end_matches(".duckdb").to_owned())
        .find(|f| *f != first)
        .expect("the second backup was made");
    // Both records of the first backup, and both full copies: the crash's moment.
    let keys = s3.keys("cut");
    for k in [
        format!("cut/{first}.duckdb"),
        format!("cut/{first}.manifest.json"),
        format!("cut/{first}.packed.{second}.manifest.json"),
        format!("cut/{second}.duckdb"),
    ] {
        assert!(keys.contains(&k), "{k} in {keys:#?}");
    }
    // Listed once, as packed; restorable from the packs and the newest full copy.
    let remote = listed(&p);
    assert_eq!(remote.len(), 2, "{remote:#?}");
    let listed_first = remote.iter().find(|b| b["id"] == first.as_str()).unwrap();
    assert_eq!(listed_first["storage"], "packed");
    let fresh = fresh_machine(&std::fs::read_to_string(p.config()).unwrap());
    support::assert_ok(&run_in(fresh.path(), &["restore", "--remote", &first]));
    assert_eq!(
        fingerprints(&fresh.path().join("simulation.duckdb")),
        original
    );
    // The next push sweeps the full copy the packed record replaced, and the download folder
    // a killed `restore --remote` would leave (its process is gone).
    let stale = p.backups().join(".ducksafe-tmp-remote-x-0");
    std::fs::create_dir(&stale).unwrap();
    std::fs::write(stale.join("x.duckdb"), b"partial download").unwrap();
    let pushed = json(&p.cmd(&["push", "--json"]).envs(creds()).output().unwrap());
    let cleaned: Vec<&str> = pushed["cleaned"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert!(
        cleaned.contains(&format!("cut/{first}.duckdb").as_str()),
        "{pushed}"
    );
    assert!(cleaned.contains(&".ducksafe-tmp-remote-x-0"), "{pushed}");
    assert!(!stale.exists());
    let keys = s3.keys("cut");
    assert!(!keys.contains(&format!("cut/{first}.duckdb")), "{keys:#?}");
    assert!(
        !keys.contains(&format!("cut/{first}.manifest.json")),
        "{keys:#?}"
    );
    assert_eq!(keys.iter().filter(|k| k.ends_with(".duckdb")).count(), 1);
}

#[test]
fn retention_keeps_the_full_copy_a_packed_backup_is_rebuilt_from() {
    let case = "remote::packed::retention_keeps_the_full_copy_a_packed_backup_is_rebuilt_from";
    let Some(s3) = Server::moto(case) else { return };
    let p = project(&s3, "keep", "REMOTE_KEEP_LAST: 1\n");
    let (first, original) = pre_run(&p);
    support::assert_ok(&p.run(&["pin", &first]));
    simulate(&p, 1);
    let (second, _) = pre_run(&p);
    // The first is packed on the remote, pinned, leaning on the second's full copy. Gone
    // from this machine, its record cannot lean on a newer copy.
    support::assert_ok(&p.run(&["unpin", &first]));
    support::assert_ok(&p.run(&["delete", &first]));
    simulate(&p, 2);
    let (third, _) = pre_run(&p);
    let pushed = json(&p.cmd(&["push", "--json"]).envs(creds()).output().unwrap());
    let pruned = pushed["pruned"].as_array().unwrap();
    let kept = pruned
        .iter()
        .find(|x| x["id"] == second.as_str())
        .unwrap_or_else(|| panic!("{pushed}"));
    assert_eq!(kept["outcome"], "kept", "{pushed}");
    assert!(
        kept["reason"].as_str().unwrap().contains(&first),
        "{pushed}"
    );
    let keys = s3.keys("keep");
    assert!(keys.contains(&format!("keep/{second}.duckdb")), "{keys:#?}");
    assert!(keys.contains(&format!("keep/{third}.duckdb")), "{keys:#?}");
    // The pinned first one still comes back whole.
    let fresh = fresh_machine(&std::fs::read_to_string(p.config()).unwrap());
    support::assert_ok(&run_in(fresh.path(), &["restore", "--remote", &first]));
    assert_eq!(
        fingerprints(&fresh.path().join("simulation.duckdb")),
        original
    );
}

/// Local rotation removes the oldest backup before the remote step: its remote record cannot
/// move onto the new full copy and leans on the previous one until remote retention deletes it
/// in the same run; the full copy it leaned on goes then, not a run later.
#[test]
fn with_rotation_every_run_leaves_one_full_copy() {
    let case = "remote::packed::with_rotation_every_run_leaves_one_full_copy";
    let Some(s3) = Server::moto(case) else { return };
    let p = project(&s3, "rot", "BACKUP_KEEP_LAST: 2\n");
    for run in 1..=4 {
        let (id, _) = pre_run(&p);
        let keys = s3.keys("rot");
        let full: Vec<&String> = keys.iter().filter(|k| k.ends_with(".duckdb")).collect();
        assert_eq!(full, [&format!("rot/{id}.duckdb")], "run {run}: {keys:#?}");
        assert_eq!(
            keys.iter()
                .filter(|k| k.ends_with(".manifest.json"))
                .count(),
            run.min(2) as usize,
            "run {run}: {keys:#?}"
        );
        simulate(&p, run);
    }
}

/// Two databases on one prefix (a misconfiguration): a full record under a packed backup's id
/// that holds another backup is not taken for a leftover of its conversion: it is reported, and
/// push deletes nothing of it.
#[test]
fn a_record_of_another_backup_under_the_same_id_is_reported_not_swept() {
    let case = "remote::packed::a_record_of_another_backup_under_the_same_id_is_reported_not_swept";
    let Some(s3) = Server::moto(case) else { return };
    let p = project(&s3, "two", "");
    let (first, _) = pre_run(&p);
    simulate(&p, 1);
    let (second, _) = pre_run(&p);
    // Another database's full backup, written under the first one's id.
    let other = format!("two/{first}.manifest.json");
    s3.boto(&format!(
        r#"import json
r = json.loads(s3.get_object(Bucket=BUCKET, Key="two/{first}.packed.{second}.manifest.json")['Body'].read())
m = r['manifest']
for k in ('digest', 'blocks', 'storage'):
    m.pop(k, None)
m['format'] = 1
m['sha256'] = r['sha256'] = '0' * 64
for k in ('packs', 'base', 'storage'):
    r.pop(k, None)
r['format'] = 1
r['data'] = "{first}.duckdb"
s3.put_object(Bucket=BUCKET, Key={other:?}, Body=json.dumps(r).encode())
s3.put_object(Bucket=BUCKET, Key="two/{first}.duckdb", Body=b'another database')"#
    ));
    let out = p.cmd(&["list", "--remote"]).envs(creds()).output().unwrap();
    let said = support::stderr(&out);
    assert!(said.contains("holds another backup"), "{said}");
    support::assert_ok(&p.cmd(&["push"]).envs(creds()).output().unwrap());
    let keys = s3.keys("two");
    assert!(keys.contains(&other), "{keys:#?}");
    assert!(keys.contains(&format!("two/{first}.duckdb")), "{keys:#?}");
    // The first backup is still listed as the packed one it is.
    let remote = listed(&p);
    let b = remote.iter().find(|b| b["id"] == first.as_str()).unwrap();
    assert_eq!(b["storage"], "packed", "{b}");
}

/// Two databases given one prefix: the second is refused before anything of it goes up
/// (`remote_conflict`), so retention never counts, and never deletes, the first one's backups.
#[test]
fn a_second_database_on_the_prefix_is_refused_before_it_uploads() {
    let case = "remote::packed::a_second_database_on_the_prefix_is_refused_before_it_uploads";
    let Some(s3) = Server::moto(case) else { return };
    let first = project(&s3, "shared", "");
    let (id, _) = pre_run(&first);
    let before = s3.keys("shared");
    let second = project(&s3, "shared", "");
    let (r, code) = second.pre_run_env(&creds());
    // REMOTE_REQUIRED is false: the run goes ahead, said loudly.
    assert_eq!(code, 0, "{r:?}");
    assert!(
        r.warnings.iter().any(|w| w.contains("another database")),
        "{:?}",
        r.warnings
    );
    let out = second.cmd(&["push"]).envs(creds()).output().unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("another database"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        s3.keys("shared"),
        before,
        "the first database's {id} untouched"
    );
}

/// A packed record that cannot be read may lean on any full copy: while there is one, no
/// older full copy is deleted (it would lose that backup for good).
#[test]
fn no_full_copy_goes_while_a_record_cannot_be_read() {
    let case = "remote::packed::no_full_copy_goes_while_a_record_cannot_be_read";
    let Some(s3) = Server::moto(case) else { return };
    let p = project(&s3, "unread", "BACKUP_KEEP_LAST: 2\nREMOTE_KEEP_LAST: 4\n");
    for run in 1..=3 {
        pre_run(&p);
        simulate(&p, run);
    }
    let keys = s3.keys("unread");
    let record = keys
        .iter()
        .find(|k| k.contains(".packed."))
        .unwrap_or_else(|| panic!("{keys:#?}"));
    flip_remote(&s3, record);
    let (r, code) = p.pre_run_env(&creds());
    assert_eq!(code, 0, "{r:?}");
    let keys = s3.keys("unread");
    for k in keys.iter().filter(|k| k.contains(".packed.")) {
        let base = k
            .split(".packed.")
            .nth(1)
            .and_then(|b| b.strip_suffix(".manifest.json"))
            .unwrap();
        assert!(
            keys.contains(&format!("unread/{base}.duckdb")),
            "{k} leans on a full copy that was deleted: {keys:#?}"
        );
    }
}

/// The newest full copy's data deleted on the server, its record left: push uploads it again
/// from this machine instead of saying it is already there.
#[test]
fn a_full_copy_lost_on_the_server_is_uploaded_again() {
    let case = "remote::packed::a_full_copy_lost_on_the_server_is_uploaded_again";
    let Some(s3) = Server::moto(case) else { return };
    let p = project(&s3, "lost", "");
    pre_run(&p);
    simulate(&p, 1);
    let (newest, _) = pre_run(&p);
    let key = format!("lost/{newest}.duckdb");
    s3.boto(&format!("s3.delete_object(Bucket=BUCKET, Key={key:?})"));
    let pushed = json(&p.cmd(&["push", "--json"]).envs(creds()).output().unwrap());
    let again = pushed["uploaded"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["key"] == key.as_str())
        .unwrap_or_else(|| panic!("{pushed:#}"));
    assert_eq!(again["state"], "uploaded", "{pushed:#}");
    assert!(s3.keys("lost").contains(&key));
    support::assert_ok(
        &p.cmd(&["verify", "--remote", "--all", "--read-data"])
            .envs(creds())
            .output()
            .unwrap(),
    );
}

/// A backup pinned here after it was uploaded: remote retention keeps it, though its remote
/// record was written unpinned.
#[test]
fn a_backup_pinned_after_its_upload_is_kept_on_the_remote() {
    let case = "remote::packed::a_backup_pinned_after_its_upload_is_kept_on_the_remote";
    let Some(s3) = Server::moto(case) else { return };
    let p = Project::new(&format!("BACKUP_KEEP_LAST: 2\n{}", s3.config("pin")));
    let (r, code) = p.pre_run_env(&creds());
    assert_eq!(code, 0, "{r:?}");
    let first = r.backup.unwrap().id;
    let (r, code) = p.pre_run_env(&creds());
    assert_eq!(code, 0, "{r:?}");
    support::assert_ok(&p.run(&["pin", &first]));
    for _ in 0..2 {
        let (r, code) = p.pre_run_env(&creds());
        assert_eq!(code, 0, "{r:?}");
    }
    let keys = s3.keys("pin");
    assert!(
        keys.contains(&format!("pin/{first}.duckdb")),
        "the pinned backup left the remote: {keys:#?}"
    );
}

/// A pack gone from the server: `list --remote` says the backup needing it is incomplete, in
/// text and in JSON (whose warnings now travel inside it), instead of listing it as healthy.
#[test]
fn list_says_a_packed_backup_missing_a_pack_is_incomplete() {
    let case = "remote::packed::list_says_a_packed_backup_missing_a_pack_is_incomplete";
    let Some(s3) = Server::moto(case) else { return };
    let p = project(&s3, "inc", "");
    for run in 1..=3 {
        pre_run(&p);
        simulate(&p, run);
    }
    let keys = s3.keys("inc");
    let pack = keys
        .iter()
        .find(|k| k.starts_with("inc/packs/"))
        .unwrap_or_else(|| panic!("{keys:#?}"));
    s3.boto(&format!("s3.delete_object(Bucket=BUCKET, Key={pack:?})"));
    let out = p
        .cmd(&["list", "--remote", "--json"])
        .envs(creds())
        .output()
        .unwrap();
    let listed = json(&out);
    let incomplete: Vec<&Value> = listed["backups"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["data"] == "incomplete")
        .collect();
    assert!(!incomplete.is_empty(), "{listed:#}");
    let warnings = listed["warnings"].as_array().unwrap();
    assert!(
        warnings
            .iter()
            .any(|w| w.as_str().unwrap().contains("cannot be rebuilt")),
        "{listed:#}"
    );
    let text = stdout_ok(&p.cmd(&["list", "--remote"]).envs(creds()).output().unwrap());
    assert!(text.contains("INCOMPLETE"), "{text}");
}

/// Downloads a killed `verify --remote --read-data` left beside the database (no backup
/// directory yet, on a fresh machine) go with the next push.
#[test]
fn a_scratch_folder_left_beside_the_database_is_swept() {
    let case = "remote::packed::a_scratch_folder_left_beside_the_database_is_swept";
    let Some(s3) = Server::moto(case) else { return };
    let p = project(&s3, "sweep", "");
    pre_run(&p);
    // A pid above the kernel's maximum: no such process.
    let left = p
        .db()
        .parent()
        .unwrap()
        .join(".ducksafe-tmp-remote-simulation_20261202_000000-4194305");
    std::fs::create_dir(&left).unwrap();
    std::fs::write(left.join("pack"), b"partial").unwrap();
    support::assert_ok(&p.cmd(&["push"]).envs(creds()).output().unwrap());
    assert!(!left.exists(), "{} was left", left.display());
}

/// A killed `restore --remote` leaves its temporary backup file (up to the database's size) in
/// the backup directory: the next `restore --remote` sweeps it before it downloads again.
#[test]
fn a_killed_remote_restore_leaves_nothing_for_the_next_one() {
    let case = "remote::packed::a_killed_remote_restore_leaves_nothing_for_the_next_one";
    let Some(s3) = Server::moto(case) else { return };
    let p = Project::new(&s3.config("kill"));
    let (r, code) = p.pre_run_env(&creds());
    assert_eq!(code, 0, "{r:?}");
    let first = r.backup.unwrap().id;
    let (r, code) = p.pre_run_env(&creds());
    assert_eq!(code, 0, "{r:?}");
    let fresh = fresh_machine(&std::fs::read_to_string(p.config()).unwrap());
    support::assert_ok(&run_in(fresh.path(), &["restore", "--remote", "latest"]));
    // What a restore killed mid-download leaves (a pid that no process has).
    let left = fresh
        .path()
        .join("backups")
        .join(format!(".ducksafe-tmp-backup-4194305-{first}.duckdb"));
    std::fs::write(&left, vec![0u8; 4096]).unwrap();
    support::assert_ok(&run_in(fresh.path(), &["restore", "--remote", &first]));
    assert!(!left.exists(), "{} was left", left.display());
}

/// On a fresh machine (no backup directory, so no database of its own yet) a prefix holding
/// two databases' backups, as an older ducksafe let happen: `restore --remote latest` is
/// refused (`latest` could be the other's), `restore --remote ID` restores that backup.
#[test]
fn latest_is_refused_on_a_fresh_machine_when_the_prefix_holds_two_databases() {
    let case =
        "remote::packed::latest_is_refused_on_a_fresh_machine_when_the_prefix_holds_two_databases";
    let Some(s3) = Server::moto(case) else { return };
    let at = |when: &'static str| {
        let mut e = creds();
        e.push(("DUCKSAFE_NOW", when));
        e
    };
    let a = Project::new(&s3.config("a"));
    let (r, code) = a.pre_run_env(&at("2026-12-01T10:00:00Z"));
    assert_eq!(code, 0, "{r:?}");
    let ours = r.backup.unwrap().id;
    let b = Project::new(&s3.config("b"));
    let (r, code) = b.pre_run_env(&at("2026-12-01T11:00:00Z"));
    assert_eq!(code, 0, "{r:?}");
    // The other database's backup copied under this prefix, newer than ours.
    s3.boto(
        "for o in s3.list_objects_v2(Bucket=BUCKET, Prefix='b/')['Contents']:\n    s3.copy_object(Bucket=BUCKET, Key='a/' + o['Key'][2:], CopySource={'Bucket': BUCKET, 'Key': o['Key']})",
    );
    let fresh = fresh_machine(&std::fs::read_to_string(a.config()).unwrap());
    let out = run_in(fresh.path(), &["restore", "--remote", "latest"]);
    assert_exit(&out, 73);
    let said = support::stderr(&out);
    assert!(said.contains("could be another database's"), "{said}");
    assert!(!fresh.path().join("simulation.duckdb").exists());
    support::assert_ok(&run_in(fresh.path(), &["restore", "--remote", &ours]));
    assert_eq!(
        fingerprints(&fresh.path().join("simulation.duckdb")),
        fingerprints(&a.db())
    );
}
