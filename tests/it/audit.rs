//! The audit log (`LOG_DIR/ducksafe.jsonl`): one whole JSON line per changing command and per
//! hook call, whatever it decided; private; rotated by renaming without losing or tearing a
//! line, even when processes race; a log that cannot be written warns and changes no outcome;
//! no secret in it.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use ducksafe::audit::Record;

use crate::support::{self, assert_exit, assert_ok, bin, pipe, request, Project};

/// Every record in `dir`'s log and its rotated files, oldest file first; every line must parse.
fn records(dir: &Path) -> Vec<Record> {
    let mut files: Vec<_> = (1..=9)
        .rev()
        .map(|n| dir.join(format!("ducksafe.jsonl.{n}")))
        .collect();
    files.push(dir.join("ducksafe.jsonl"));
    let mut out = Vec::new();
    for f in files.iter().filter(|f| f.exists()) {
        let text = fs::read_to_string(f).unwrap();
        assert!(
            text.is_empty() || text.ends_with('\n'),
            "{} ends mid-line",
            f.display()
        );
        for line in text.lines() {
            let r: Record = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("torn line in {}: {e}: {line}", f.display()));
            out.push(r);
        }
    }
    out
}

fn hook_in(p: &Project, req: &str, env: &[(&str, &str)]) -> (serde_json::Value, i32) {
    let mut c = bin();
    c.current_dir(p.dir.path()).arg("hook");
    for (k, v) in env {
        c.env(k, v);
    }
    let out = pipe(c, req.as_bytes());
    let line = String::from_utf8(out.stdout).unwrap();
    (
        serde_json::from_str(line.trim()).unwrap(),
        out.status.code().unwrap(),
    )
}

fn with_id(event: &str, p: &Project, id: &str) -> String {
    request(event, &p.config(), &format!(r#","request_id":"{id}""#))
}

#[test]
fn eight_concurrent_hook_calls_write_eight_whole_lines() {
    let p = Project::new("");
    assert_ok(&p.run(&["backup"]));
    let logs = p.path("logs");
    let before = records(&logs).len();
    // Eight pre_runs at once: they contend for the backup directory, and whatever each
    // decides (a backup, or `lock_busy`), each writes exactly its own line.
    let children: Vec<_> = (0..8)
        .map(|i| {
            let mut c = bin();
            c.current_dir(p.dir.path())
                .arg("hook")
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped());
            let mut child = c.spawn().unwrap();
            let req = with_id("pre_run", &p, &format!("race-{i}"));
            std::io::Write::write_all(child.stdin.as_mut().unwrap(), req.as_bytes()).unwrap();
            drop(child.stdin.take());
            child
        })
        .collect();
    let mut answered = BTreeSet::new();
    for c in children {
        let out = c.wait_with_output().unwrap();
        let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        answered.insert((
            r["request_id"].as_str().unwrap().to_owned(),
            r["exit_code"].as_i64().unwrap(),
        ));
    }
    let all = records(&logs);
    assert_eq!(all.len(), before + 8, "{all:#?}");
    let logged: BTreeSet<(String, i64)> = all[before..]
        .iter()
        .map(|r| (r.request_id.clone(), i64::from(r.exit_code)))
        .collect();
    assert_eq!(
        logged, answered,
        "one line per call, with the call's exit code"
    );
    let mode = fs::metadata(logs.join("ducksafe.jsonl"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let dir_mode = fs::metadata(&logs).unwrap().permissions().mode();
    assert_eq!(
        dir_mode & 0o077,
        0,
        "the log folder is private: {dir_mode:o}"
    );
}

/// The seed's Quick Start makes `logs` with `mkdir -p backups logs`: `0755`. The first line
/// written makes it private.
#[test]
fn a_log_folder_open_to_others_is_made_private() {
    let p = Project::new("");
    let logs = p.path("logs");
    fs::create_dir(&logs).unwrap();
    fs::set_permissions(&logs, fs::Permissions::from_mode(0o755)).unwrap();
    assert_ok(&p.run(&["backup"]));
    let mode = fs::metadata(&logs).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
    assert_eq!(records(&logs).len(), 1);
}

#[test]
fn rotation_by_size_under_racing_writers_keeps_every_line_whole() {
    let p = Project::new("LOG_MAX_BYTES: 4096\n");
    let logs = p.path("logs");
    // 8 writers × 6 validate calls, about 330 bytes a line: a dozen lines a file, so about
    // four rotations, raced by the writers; 5 rotated files hold them all.
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let dir = p.dir.path().to_path_buf();
            let config = p.config();
            std::thread::spawn(move || {
                for i in 0..6 {
                    let mut c = bin();
                    c.current_dir(&dir).arg("hook");
                    let req = request("validate", &config, &format!(r#","request_id":"w{t}-{i}""#));
                    let out = pipe(c, req.as_bytes());
                    assert_eq!(out.status.code(), Some(0));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let all = records(&logs);
    let ids: BTreeSet<String> = all.iter().map(|r| r.request_id.clone()).collect();
    assert_eq!(all.len(), 48, "every line kept once");
    assert_eq!(ids.len(), 48);
    assert!(
        logs.join("ducksafe.jsonl.1").exists(),
        "the log was rotated: {:?}",
        support::dir_names(&logs)
    );
    assert!(!logs.join("ducksafe.jsonl.6").exists());
    for name in support::dir_names(&logs) {
        let f = logs.join(&name);
        if name.starts_with("ducksafe.jsonl") {
            let m = fs::metadata(&f).unwrap();
            assert_eq!(m.permissions().mode() & 0o777, 0o600, "{name}");
            // A file grows past the size only by the lines of writers that found another
            // rotating it: never by much.
            assert!(m.len() < 4096 * 3, "{name}: {} bytes", m.len());
        }
    }
}

#[test]
fn each_changing_command_and_hook_call_writes_one_line_and_readers_none() {
    let p = Project::new("");
    let logs = p.path("logs");
    assert_ok(&p.run(&["backup"]));
    let id = {
        let r = records(&logs);
        r[0].backup_id.clone().unwrap()
    };
    assert_ok(&p.run(&["backup", "--dry-run"]));
    assert_ok(&p.run(&["pin", &id]));
    assert_ok(&p.run(&["unpin", &id]));
    assert_ok(&p.run(&["prune", "--dry-run"]));
    assert_ok(&p.run(&["validate"]));
    assert_ok(&p.run(&["pre-run", "--request-id", "pr-1"]));
    assert_ok(&p.run(&[
        "post-run",
        "--request-id",
        "pr-1",
        "--outcome",
        "failure",
        "--on-failure",
        "keep",
    ]));
    assert_ok(&p.run(&["restore", &id]));
    assert_ok(&p.run(&["adopt"]));
    // A refusal is logged with its code and exit code.
    assert_exit(&p.run(&["delete", "latest"]), 64);
    assert_exit(&p.run(&["restore", "no_such_backup"]), 66);
    // Readers write nothing.
    let n = records(&logs).len();
    assert_ok(&p.run(&["list"]));
    assert_ok(&p.run(&["verify", "--all"]));
    let _ = p.run(&["status"]);
    assert_eq!(records(&logs).len(), n, "readers wrote audit lines");

    let r = records(&logs);
    #[allow(clippy::type_complexity)]
    let got: Vec<(&str, Option<&str>, Option<&str>, bool, i32)> = r
        .iter()
        .map(|r| {
            (
                r.command.as_str(),
                r.event.as_deref(),
                r.decision.as_deref(),
                r.dry_run,
                r.exit_code,
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("backup", Some("pre_run"), Some("proceed"), false, 0),
            ("backup", Some("pre_run"), Some("proceed"), true, 0),
            ("pin", None, Some("pinned"), false, 0),
            ("unpin", None, Some("unpinned"), false, 0),
            ("prune", None, Some("planned"), true, 0),
            ("validate", Some("validate"), Some("valid"), false, 0),
            ("pre-run", Some("pre_run"), Some("proceed"), false, 0),
            ("post-run", Some("post_run"), Some("kept"), false, 0),
            ("restore", Some("post_run"), Some("restored"), false, 0),
            ("adopt", None, Some("unchanged"), false, 0),
            ("delete", None, None, false, 64),
            (
                "restore",
                Some("post_run"),
                Some("restore_failed"),
                false,
                66
            ),
        ]
    );
    assert_eq!(r[0].backup_id.as_deref(), Some(id.as_str()));
    assert!(r[0].bytes.is_some_and(|b| b > 0));
    assert_eq!(r[6].request_id, "pr-1");
    assert_eq!(r[8].backup_id.as_deref(), Some(id.as_str()));
    assert_eq!(r[11].errors, ["backup_not_found"]);
    let db = p.db().display().to_string();
    for (i, rec) in r.iter().enumerate() {
        // `delete latest` is refused before the configuration is read: no database to name.
        let database = (i != 10).then_some(db.as_str());
        assert_eq!(rec.database.as_deref(), database, "{rec:?}");
        assert_eq!(rec.version, env!("CARGO_PKG_VERSION"));
        assert!(rec.pid > 0);
        assert!(rec.time.ends_with('Z'), "{}", rec.time);
    }
}

/// A `LOG_DIR` that cannot be created (its parent is a file: no permission trick that root
/// would bypass) warns, and each call's outcome and exit code are those it has without a log.
#[test]
fn an_unwritable_log_warns_and_changes_no_outcome() {
    let p = Project::new("LOG_DIR: config.yaml/logs\n");
    // The CLI backup: made, exit 0, a warning on stderr.
    let out = p.run(&["backup"]);
    let err = assert_ok(&out);
    assert!(
        err.contains("warning: could not append to the audit log"),
        "{err}"
    );
    assert_eq!(p.backup_files().len(), 1);
    // The hook: proceeds, exit 0, the warning in the response.
    let (r, code) = hook_in(&p, &with_id("pre_run", &p, "unwritable"), &[]);
    assert_eq!(code, 0);
    assert_eq!(r["decision"], "proceed");
    let warnings = r["warnings"].as_array().unwrap();
    assert!(
        warnings
            .iter()
            .any(|w| w.as_str().unwrap().contains("audit log")),
        "{warnings:?}"
    );
    assert_eq!(p.backup_files().len(), 2);
    // A refused backup keeps its own code.
    let holder = support::hold(&p.db());
    let (r, code) = hook_in(&p, &with_id("pre_run", &p, "locked"), &[]);
    drop(holder);
    assert_eq!(
        (code, r["errors"][0]["code"].as_str()),
        (75, Some("database_locked"))
    );
}

/// A full disk under the log: the line does not fit, the backup is made all the same.
#[test]
fn a_full_disk_under_the_log_warns_and_the_backup_is_made() {
    let case = "audit::a_full_disk_under_the_log_warns_and_the_backup_is_made";
    let mnt = tempfile::tempdir().unwrap();
    let Some(m) = support::mount::mounted(
        case,
        support::mount::Mount::tmpfs(mnt.path(), 64 * 1024, 0o700),
    ) else {
        return;
    };
    // A log that ends 100 bytes before the end of its page, then the rest of the disk filled:
    // a line appended now fits in part (the page is there), and a write(2) of it is cut short
    // rather than refused whole. No half line may be left.
    let line = |id: &str| {
        let r = Record {
            time: "2026-01-01T00:00:00.000Z".into(),
            request_id: id.into(),
            command: "hook".into(),
            event: None,
            status: "ok".into(),
            decision: None,
            dry_run: false,
            backup_id: None,
            bytes: None,
            database: None,
            duration_ms: 0,
            exit_code: 0,
            errors: vec![],
            version: "0".into(),
            pid: 1,
        };
        serde_json::to_string(&r).unwrap() + "\n"
    };
    let short = line("x").len();
    let first = line(&"x".repeat(4096 - 100 - short + 1));
    assert_eq!(first.len(), 4096 - 100);
    fs::write(m.path().join("ducksafe.jsonl"), &first).unwrap();
    let filler = m.path().join("filler");
    let _ = fs::write(&filler, vec![0u8; 256 * 1024]);
    let p = Project::new(&format!("LOG_DIR: {}\n", m.path().display()));
    let (r, code) = hook_in(&p, &with_id("pre_run", &p, "full"), &[]);
    assert_eq!((code, r["decision"].as_str()), (0, Some("proceed")), "{r}");
    let warnings = r["warnings"].to_string();
    assert!(warnings.contains("audit log"), "{warnings}");
    assert_eq!(p.backup_files().len(), 1);
    // What is there parses (nothing torn): the first line alone.
    assert_eq!(records(m.path()).len(), 1);
}

#[test]
fn no_secret_reaches_the_log() {
    let secrets = [
        "pw-Q8sEcReTaUdIt1",
        "tok-Z3sEcReTaUdIt2",
        "dsn-K5sEcReTaUdIt3",
    ];
    let p = Project::new("");
    assert_ok(&p.run(&["backup"]));
    // A request id that carries a password pair.
    let (_, code) = hook_in(
        &p,
        &with_id("validate", &p, &format!("run password={}", secrets[0])),
        &[],
    );
    assert_eq!(code, 0);
    // A configuration holding a credential (refused), logged beside that configuration.
    let bad = p.path("bad.yaml");
    fs::write(
        &bad,
        format!(
            "DB_PATH: simulation.duckdb\nLOG_LEVEL: INFO\nAPI_TOKEN: {}\n",
            secrets[1]
        ),
    )
    .unwrap();
    let (_, code) = hook_in(&p, &request("pre_run", &bad, ""), &[]);
    assert_eq!(code, 78);
    // A DSN with a password as the database, from the environment.
    let (_, code) = hook_in(
        &p,
        &request("pre_run", &p.config(), ""),
        &[(
            "DUCKSAFE_DB_PATH",
            &format!("postgres://app:{}@db/sim.duckdb", secrets[2]),
        )],
    );
    assert_ne!(code, 0);
    let logs = p.path("logs");
    let n = records(&logs).len();
    assert_eq!(n, 4, "each call logged");
    for name in support::dir_names(&logs) {
        let text = fs::read_to_string(logs.join(&name)).unwrap_or_default();
        for s in secrets {
            assert!(!text.contains(s), "`{s}` in {name}: {text}");
        }
    }
}

/// `cmd`'s output, or a failure (the child killed) when it has not ended after a minute: a
/// guard so that a hang fails the test instead of hanging the suite.
pub fn within_a_minute(mut cmd: std::process::Command) -> std::process::Output {
    use std::process::Stdio;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    for _ in 0..600 {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    child.kill().unwrap();
    let _ = child.wait();
    panic!("still running after a minute: it waits on the FIFO");
}

pub fn mkfifo(path: &Path) {
    assert!(std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .unwrap()
        .success());
}

/// A FIFO planted at the log's name (or at the rotated file status reads) would block the open
/// forever while the backup holds its locks: it is refused with a warning, and nothing waits.
#[test]
fn a_fifo_at_the_log_name_hangs_nothing() {
    let p = Project::new("");
    let logs = p.path("logs");
    fs::create_dir_all(&logs).unwrap();
    fs::set_permissions(&logs, fs::Permissions::from_mode(0o700)).unwrap();
    mkfifo(&logs.join("ducksafe.jsonl"));
    let out = within_a_minute(p.cmd(&["backup"]));
    let err = assert_ok(&out);
    assert!(err.contains("not a regular file"), "{err}");
    assert_eq!(p.backup_files().len(), 1);
    let out = within_a_minute(p.cmd(&["status"]));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("cannot read the audit log"), "{text}");
    // The rotated file, which status reads when the current one holds few lines.
    fs::remove_file(logs.join("ducksafe.jsonl")).unwrap();
    mkfifo(&logs.join("ducksafe.jsonl.1"));
    assert_ok(&within_a_minute(p.cmd(&["backup"])));
    let out = within_a_minute(p.cmd(&["status"]));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("cannot read the audit log"), "{text}");
}
