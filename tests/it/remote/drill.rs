//! The way it is meant to be used: pre_run uploads, `push` catches up, `list --remote` and
//! `verify --remote` see the copies, and the disaster drill: the project folder deleted,
//! `restore --remote latest` into a fresh folder, the database's fingerprints the original's.

use super::{creds, Server};
use crate::support::{assert_ok, fingerprints, Project};

#[test]
fn pre_run_uploads_and_the_disaster_drill_restores_into_a_fresh_folder() {
    let case = "remote::drill::pre_run_uploads_and_the_disaster_drill_restores_into_a_fresh_folder";
    let Some(s3) = Server::moto(case) else { return };
    let p = Project::new(&s3.config("sim"));
    let (r, code) = p.pre_run_env(&creds());
    assert_eq!(code, 0, "{r:?}");
    let remote = r
        .remote
        .clone()
        .expect("the answer says where the remote copy is");
    let backup = r.backup.clone().unwrap();
    assert_eq!(remote.state, "uploaded");
    assert_eq!(
        (remote.bytes, remote.sha256.as_str()),
        (backup.bytes, backup.sha256.as_str())
    );
    assert_eq!(remote.key, format!("sim/{}.duckdb", backup.id));
    assert_eq!(
        s3.keys("sim"),
        [
            format!("sim/{}.duckdb", backup.id),
            format!("sim/{}.manifest.json", backup.id)
        ]
    );
    // A second run: a second backup uploaded; push then has nothing to add.
    let (r2, code) = p.pre_run_env(&creds());
    assert_eq!(code, 0, "{r2:?}");
    assert_eq!(r2.remote.unwrap().state, "uploaded");
    let pushed = super::stdout_ok(&p.cmd(&["push", "--json"]).envs(creds()).output().unwrap());
    let pushed: serde_json::Value = serde_json::from_str(&pushed).unwrap();
    assert!(
        pushed["uploaded"]
            .as_array()
            .unwrap()
            .iter()
            .all(|u| u["state"] == "already_there"),
        "{pushed}"
    );
    let listed = super::stdout_ok(
        &p.cmd(&["list", "--remote", "--json"])
            .envs(creds())
            .output()
            .unwrap(),
    );
    let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(listed["backups"].as_array().unwrap().len(), 2, "{listed}");
    let verified = p
        .cmd(&["verify", "--remote", "--all", "--read-data"])
        .envs(creds())
        .output()
        .unwrap();
    let text = super::stdout_ok(&verified);
    assert_eq!(
        text.lines().filter(|l| l.starts_with("ok ")).count(),
        2,
        "{text}"
    );
    assert!(text.contains("sha256"), "{text}");

    // The machine is gone: only the configuration survives.
    let original = fingerprints(&p.db());
    let newest = r2.backup.unwrap().id;
    let config = std::fs::read_to_string(p.config()).unwrap();
    drop(p);
    let fresh = tempfile::tempdir().unwrap();
    std::fs::write(fresh.path().join("config.yaml"), &config).unwrap();
    let out = crate::support::bin()
        .current_dir(fresh.path())
        .args(["--config", "config.yaml", "restore", "--remote", "latest"])
        .envs(creds())
        .output()
        .unwrap();
    let said = super::stdout_ok(&out);
    assert!(said.contains(&newest), "{said}");
    assert_eq!(
        fingerprints(&fresh.path().join("simulation.duckdb")),
        original
    );
    // The downloaded backup is a local one now: listed, verifiable, restorable again.
    let listed = crate::support::bin()
        .current_dir(fresh.path())
        .args(["--config", "config.yaml", "verify", &newest])
        .output()
        .unwrap();
    assert_ok(&listed);
}
