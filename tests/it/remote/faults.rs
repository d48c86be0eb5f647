//! What goes wrong with a remote, and what ducksafe does about it: a wrong secret, a missing
//! bucket, a manifest already there, a copy corrupted behind ducksafe's back, a run killed
//! mid-upload, the server killed mid-upload, a connection that keeps dropping. In every case
//! the local backup is untouched and the answer says what happened.

use std::io::Read;
use std::net::TcpListener;

use super::{creds, Server, SECRET};
use crate::support::{self, assert_exit, assert_ok, every_byte, one_response, Project};

/// Every file under `dir`, as text, for a secret to be looked for.
fn all_text(dir: &std::path::Path) -> String {
    let mut out = String::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let path = e.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(bytes) = std::fs::read(&path) {
                out.push_str(&String::from_utf8_lossy(&bytes));
            }
        }
    }
    out
}

#[test]
fn a_wrong_secret_is_remote_auth_and_the_secret_is_in_no_output() {
    let case = "remote::faults::a_wrong_secret_is_remote_auth_and_the_secret_is_in_no_output";
    let Some(s3) = Server::seaweed(case) else {
        return;
    };
    let wrong = "Wr0ng-s3cr3t-that-must-never-be-printed";
    let env = [
        ("AWS_ACCESS_KEY_ID", super::ACCESS_KEY),
        ("AWS_SECRET_ACCESS_KEY", wrong),
        ("DUCKSAFE_REMOTE_RETRIES", "1"),
    ];
    let p = Project::new(&format!("{}REMOTE_REQUIRED: true\n", s3.config("auth")));
    let out = support::pipe(
        {
            let mut c = support::bin();
            c.current_dir(p.dir.path()).arg("hook").envs(env);
            c
        },
        support::request("pre_run", &p.config(), "").as_bytes(),
    );
    let r = one_response(&out);
    assert_eq!(out.status.code(), Some(78), "{r:?}");
    assert_eq!(r.decision, ducksafe::protocol::Decision::Abort);
    assert_eq!(r.errors[0].code.as_str(), "remote_auth", "{r:?}");
    assert!(r.errors[0]
        .hint
        .as_deref()
        .unwrap()
        .contains("AWS_SECRET_ACCESS_KEY"));
    // The local backup is made and kept; the run's turn is released (the next pre_run runs).
    assert_eq!(p.backup_files().len(), 1);
    let push = p.cmd(&["push"]).envs(env).output().unwrap();
    let said = assert_exit(&push, 78);
    for text in [
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        said,
        String::from_utf8_lossy(&push.stdout).into_owned(),
        all_text(p.dir.path()),
    ] {
        assert!(!text.contains(wrong), "the secret leaked: {text}");
        assert!(!text.contains(SECRET), "the secret leaked: {text}");
    }
    // With the right secret, the same server takes it.
    assert_ok(&p.cmd(&["push"]).envs(creds()).output().unwrap());
    assert_eq!(s3.keys("auth").len(), 2);
}

#[test]
fn without_remote_required_a_failed_upload_is_a_warning_and_push_catches_up() {
    let case =
        "remote::faults::without_remote_required_a_failed_upload_is_a_warning_and_push_catches_up";
    let Some(s3) = Server::moto(case) else { return };
    let p = Project::new(&s3.config("late"));
    let env = [("AWS_ACCESS_KEY_ID", "x"), ("DUCKSAFE_REMOTE_RETRIES", "0")];
    // No secret in the environment: the upload cannot be signed.
    let (r, code) = p.pre_run_env(&env);
    assert_eq!(code, 0, "{r:?}");
    assert!(r.remote.is_none());
    assert!(
        r.warnings
            .iter()
            .any(|w| w.contains("was not copied off this machine")
                && w.contains("AWS_SECRET_ACCESS_KEY")),
        "{:?}",
        r.warnings
    );
    let out = super::stdout_ok(&p.cmd(&["push"]).envs(creds()).output().unwrap());
    assert!(out.contains("uploaded"), "{out}");
    assert_eq!(s3.keys("late").len(), 2);
}

#[test]
fn a_missing_bucket_is_remote_bucket_missing() {
    let case = "remote::faults::a_missing_bucket_is_remote_bucket_missing";
    let Some(s3) = Server::moto(case) else { return };
    let p = Project::new(&format!(
        "REMOTE_URL: s3://no-such-bucket/x\nREMOTE_ENDPOINT: {}\n",
        s3.endpoint
    ));
    assert_ok(&p.run(&["backup"]));
    let before = every_byte(&p.backups());
    let out = p.cmd(&["push", "--json"]).envs(creds()).output().unwrap();
    assert_exit(&out, 78);
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["errors"][0]["code"], "remote_bucket_missing", "{r}");
    assert_eq!(r["errors"][0]["path"], "/REMOTE_URL", "{r}");
    assert_eq!(
        support::but_the_lock(before),
        support::but_the_lock(every_byte(&p.backups()))
    );
}

#[test]
fn a_manifest_already_there_is_never_replaced() {
    let case = "remote::faults::a_manifest_already_there_is_never_replaced";
    let Some(s3) = Server::moto(case) else { return };
    // Two databases misconfigured onto one prefix, backed up at the same second: one id.
    let now = [("DUCKSAFE_NOW", "2026-12-01T10:00:00Z")];
    let env = |extra: &[(&'static str, &'static str)]| {
        let mut e = creds();
        e.extend_from_slice(extra);
        e
    };
    let a = Project::new(&format!("{}REMOTE_REQUIRED: true\n", s3.config("shared")));
    let b = Project::new(&format!("{}REMOTE_REQUIRED: true\n", s3.config("shared")));
    support::write_into_wal(
        &b.db(),
        "INSERT INTO employees SELECT * FROM employees LIMIT 3",
    );
    let (ra, code) = a.pre_run_env(&env(&now));
    assert_eq!(code, 0, "{ra:?}");
    let manifest_key = ra.remote.unwrap().manifest_key;
    let first = s3.boto(&format!(
        "print(s3.get_object(Bucket=BUCKET, Key={manifest_key:?})['Body'].read().decode())"
    ));
    let (rb, code) = b.pre_run_env(&env(&now));
    assert_eq!(code, 73, "{rb:?}");
    assert_eq!(rb.errors[0].code.as_str(), "remote_conflict", "{rb:?}");
    // Refused before anything went up: the prefix holds another database's backups.
    assert!(rb.errors[0].message.contains("another database"), "{rb:?}");
    let after = s3.boto(&format!(
        "print(s3.get_object(Bucket=BUCKET, Key={manifest_key:?})['Body'].read().decode())"
    ));
    assert_eq!(first, after);
}

#[test]
fn a_copy_corrupted_behind_ducksafes_back_fails_verify_with_74() {
    let case = "remote::faults::a_copy_corrupted_behind_ducksafes_back_fails_verify_with_74";
    let Some(s3) = Server::moto(case) else { return };
    let p = Project::new(&s3.config("rot"));
    let (r, code) = p.pre_run_env(&creds());
    assert_eq!(code, 0, "{r:?}");
    let key = r.remote.unwrap().key;
    assert_ok(
        &p.cmd(&["verify", "--remote", "--read-data"])
            .envs(creds())
            .output()
            .unwrap(),
    );
    // Same size, one byte flipped, written by someone else.
    s3.boto(&format!(
        "b = bytearray(s3.get_object(Bucket=BUCKET, Key={key:?})['Body'].read())\nb[5000] ^= 1\ns3.put_object(Bucket=BUCKET, Key={key:?}, Body=bytes(b))"
    ));
    let out = p
        .cmd(&["verify", "--remote", "--read-data", "--json"])
        .envs(creds())
        .output()
        .unwrap();
    assert_exit(&out, 74);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["backups"][0]["ok"], false, "{report}");
    // The cheap check sees the replaced object too (its ETag changed).
    assert_exit(
        &p.cmd(&["verify", "--remote"])
            .envs(creds())
            .output()
            .unwrap(),
        74,
    );
    // A restore refuses it: the download does not hash to the manifest's SHA-256.
    let fresh = tempfile::tempdir().unwrap();
    std::fs::write(
        fresh.path().join("config.yaml"),
        std::fs::read(p.config()).unwrap(),
    )
    .unwrap();
    let out = support::bin()
        .current_dir(fresh.path())
        .args(["--config", "config.yaml", "restore", "--remote", "latest"])
        .envs(creds())
        .output()
        .unwrap();
    assert_exit(&out, 74);
    assert!(!fresh.path().join("simulation.duckdb").exists());
}

#[test]
fn a_run_killed_before_the_manifest_leaves_no_backup_and_the_next_run_cleans_up() {
    let case = "remote::faults::a_run_killed_before_the_manifest_leaves_no_backup_and_the_next_run_cleans_up";
    let Some(s3) = Server::moto(case) else { return };
    let p = Project::new(&s3.config("cut"));
    let mut env = creds();
    env.push(("DUCKSAFE_FAILPOINT", "remote.uploaded"));
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
    // The data is there, its manifest is not: no remote backup.
    let keys = s3.keys("cut");
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert!(keys[0].ends_with(".duckdb"));
    let listed = super::stdout_ok(
        &p.cmd(&["list", "--remote", "--json"])
            .envs(creds())
            .output()
            .unwrap(),
    );
    let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(listed["backups"].as_array().unwrap().len(), 0, "{listed}");
    assert_eq!(listed["orphans"].as_array().unwrap().len(), 1, "{listed}");
    // The next run uploads both backups' way and deletes the leftover.
    let (r, code) = p.pre_run_env(&creds());
    assert_eq!(code, 0, "{r:?}");
    let pushed = super::stdout_ok(&p.cmd(&["push", "--json"]).envs(creds()).output().unwrap());
    let pushed: serde_json::Value = serde_json::from_str(&pushed).unwrap();
    assert_eq!(pushed["uploaded"].as_array().unwrap().len(), 2, "{pushed}");
    assert_eq!(s3.keys("cut").len(), 4, "{:?}", s3.keys("cut"));
}

#[test]
fn a_multipart_upload_cut_short_is_aborted_by_the_next_run() {
    let case = "remote::faults::a_multipart_upload_cut_short_is_aborted_by_the_next_run";
    let Some(s3) = Server::moto(case) else { return };
    let dir = tempfile::tempdir().unwrap();
    // A database above one part (8 MiB): a multipart upload.
    ducksafe::demo::create_sized(&dir.path().join("simulation.duckdb"), 60_000, 400_000).unwrap();
    std::fs::write(
        dir.path().join("config.yaml"),
        format!(
            "DB_PATH: simulation.duckdb\nLOG_LEVEL: INFO\nBACKUP_MIN_FREE_BYTES: 0\nVERIFY_LEVEL: quick\nREMOTE_CONCURRENCY: 2\n{}",
            s3.config("big")
        ),
    )
    .unwrap();
    let size = std::fs::metadata(dir.path().join("simulation.duckdb"))
        .unwrap()
        .len();
    assert!(size > 8 << 20, "{size}");
    let mut env = creds();
    env.push(("DUCKSAFE_FAILPOINT", "remote.part"));
    let run = |env: &[(&str, &str)]| {
        let mut c = support::bin();
        c.current_dir(dir.path())
            .arg("hook")
            .envs(env.iter().copied());
        support::pipe(
            c,
            support::request("pre_run", &dir.path().join("config.yaml"), "").as_bytes(),
        )
    };
    let out = run(&env);
    assert!(out.stdout.is_empty(), "{out:?}");
    let record = dir.path().join("backups/.ducksafe-remote-upload.json");
    assert!(record.exists(), "the upload in flight is recorded");
    let uploads =
        s3.boto("print(len(s3.list_multipart_uploads(Bucket=BUCKET).get('Uploads', [])))");
    assert_eq!(uploads.trim(), "1");
    assert!(s3.keys("big").is_empty());
    let out = run(&creds());
    let r = one_response(&out);
    assert_eq!(out.status.code(), Some(0), "{r:?}");
    let copy = r.remote.unwrap();
    assert!(copy.parts >= 2, "{copy:?}");
    assert!(!record.exists());
    let uploads =
        s3.boto("print(len(s3.list_multipart_uploads(Bucket=BUCKET).get('Uploads', [])))");
    assert_eq!(uploads.trim(), "0", "the interrupted upload was aborted");
    assert_ok(
        &support::bin()
            .current_dir(dir.path())
            .args([
                "--config",
                "config.yaml",
                "verify",
                "--remote",
                "--read-data",
            ])
            .envs(creds())
            .output()
            .unwrap(),
    );
}

#[test]
fn the_server_killed_mid_upload_aborts_a_required_run_and_keeps_the_local_backup() {
    let case = "remote::faults::the_server_killed_mid_upload_aborts_a_required_run_and_keeps_the_local_backup";
    let Some(mut s3) = Server::moto(case) else {
        return;
    };
    let p = Project::new(&format!("{}REMOTE_REQUIRED: true\n", s3.config("dead")));
    let gate = p.path("gate");
    let mut env = creds();
    let spec = format!("remote.part:wait={}", gate.display());
    env.push(("DUCKSAFE_FAILPOINT", &spec));
    let mut c = support::bin();
    c.current_dir(p.dir.path())
        .arg("hook")
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = c.spawn().unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin
            .write_all(support::request("pre_run", &p.config(), "").as_bytes())
            .unwrap();
    }
    let reached = p.path("gate.reached");
    let started = std::time::Instant::now();
    while !reached.exists() {
        assert!(
            started.elapsed().as_secs() < 120,
            "the failpoint was not reached"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    s3.kill();
    std::fs::write(&gate, "").unwrap();
    let out = child.wait_with_output().unwrap();
    let r = one_response(&out);
    assert_eq!(out.status.code(), Some(75), "{r:?}");
    assert_eq!(r.errors[0].code.as_str(), "remote_unavailable", "{r:?}");
    assert!(r.errors[0].retryable);
    assert_eq!(r.decision, ducksafe::protocol::Decision::Abort);
    // The local backup is published and verifiable.
    assert_eq!(p.backup_files().len(), 1);
    assert_ok(&p.run(&["verify", "--all"]));
}

/// A loopback "server" that accepts every connection and closes it at once: a link that keeps
/// dropping.
fn dropping_proxy() -> (String, std::thread::JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let h = std::thread::spawn(move || {
        for mut c in l.incoming().take(64).flatten() {
            let mut buf = [0u8; 512];
            let _ = c.read(&mut buf);
            drop(c);
        }
    });
    (format!("http://{addr}"), h)
}

#[test]
fn a_dropping_connection_is_retried_a_bounded_number_of_times_then_said() {
    let p = Project::new("");
    assert_ok(&p.run(&["backup"]));
    let (endpoint, _h) = dropping_proxy();
    p.write_config(&format!(
        "DB_PATH: simulation.duckdb\nLOG_LEVEL: INFO\nBACKUP_MIN_FREE_BYTES: 0\nREMOTE_URL: s3://ducksafe-test/x\nREMOTE_ENDPOINT: {endpoint}\n"
    ));
    let before = every_byte(&p.backups());
    let out = p
        .cmd(&["push"])
        .envs(creds())
        .env("DUCKSAFE_REMOTE_RETRIES", "2")
        .output()
        .unwrap();
    let said = assert_exit(&out, 75);
    assert!(said.contains("after 3 attempts"), "{said}");
    assert!(said.contains("hint:"), "{said}");
    assert_eq!(
        support::but_the_lock(before),
        support::but_the_lock(every_byte(&p.backups()))
    );
}

#[test]
fn credentials_in_the_configuration_are_refused_and_not_repeated() {
    for (line, pointer) in [
        (
            "AWS_SECRET_ACCESS_KEY: hunter2-secret",
            "/AWS_SECRET_ACCESS_KEY",
        ),
        ("AWS_ACCESS_KEY_ID: AKIDhunter2", "/AWS_ACCESS_KEY_ID"),
        ("REMOTE_URL: s3://AKID:hunter2-secret@bkt/x", "/REMOTE_URL"),
        ("REMOTE_URL: AKID:hunter2-secret@bkt", "/REMOTE_URL"),
        (
            "REMOTE_ENDPOINT: https://AKID:hunter2@minio.lan",
            "/REMOTE_ENDPOINT",
        ),
    ] {
        let p = Project::new(&format!("{line}\n"));
        let out = p.run(&["validate", "--json"]);
        let said = assert_exit(&out, 78);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            !stdout.contains("hunter2") && !said.contains("hunter2"),
            "{stdout}{said}"
        );
        assert!(stdout.contains(pointer), "{stdout}");
        assert!(
            stdout.contains("environment") || stdout.contains("s3://"),
            "{stdout}"
        );
    }
}

/// Two uploaders of one id at once (two databases misconfigured onto one prefix): the one that
/// writes its manifest second is refused by the store itself (`If-None-Match: *`), whatever it
/// read before, and the manifest there stays the first one's.
#[test]
fn the_conditional_put_refuses_a_manifest_written_meanwhile() {
    let case = "remote::faults::the_conditional_put_refuses_a_manifest_written_meanwhile";
    let Some(s3) = Server::moto(case) else { return };
    let a = Project::new(&format!("{}REMOTE_REQUIRED: true\n", s3.config("race")));
    let b = Project::new(&format!("{}REMOTE_REQUIRED: true\n", s3.config("race")));
    support::write_into_wal(
        &b.db(),
        "INSERT INTO employees SELECT * FROM employees LIMIT 3",
    );
    let gate = a.path("gate");
    let spec = format!("remote.uploaded:wait={}", gate.display());
    let mut env = creds();
    env.push(("DUCKSAFE_NOW", "2026-12-01T10:00:00Z"));
    let mut c = support::bin();
    c.current_dir(a.dir.path())
        .arg("hook")
        .envs(env.iter().copied())
        .env("DUCKSAFE_FAILPOINT", &spec)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = c.spawn().unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin
            .write_all(support::request("pre_run", &a.config(), "").as_bytes())
            .unwrap();
    }
    let reached = a.path("gate.reached");
    let started = std::time::Instant::now();
    while !reached.exists() {
        assert!(
            started.elapsed().as_secs() < 120,
            "the failpoint was not reached"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // Meanwhile the other database publishes the same id, manifest and all.
    let (rb, code) = b.pre_run_env(&env);
    assert_eq!(code, 0, "{rb:?}");
    let b_sha = rb.remote.unwrap().sha256;
    std::fs::write(&gate, "").unwrap();
    let out = child.wait_with_output().unwrap();
    let ra = one_response(&out);
    assert_eq!(out.status.code(), Some(73), "{ra:?}");
    assert_eq!(ra.errors[0].code.as_str(), "remote_conflict", "{ra:?}");
    let listed = super::stdout_ok(
        &b.cmd(&["list", "--remote", "--json"])
            .envs(creds())
            .output()
            .unwrap(),
    );
    let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(listed["backups"][0]["sha256"], b_sha.as_str(), "{listed}");
}
