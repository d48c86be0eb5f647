#![allow(clippy::unwrap_used)]
//! What an outside attack on the build found, each kept fixed: the real binary, as an operator
//! or a caller would run it, one case per finding.

mod common;

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use common::{assert_ok, Project};

#[test]
#[ignore = "helper process for the lock tests, started by common::hold"]
fn hold_database_child() {
    common::hold_database_child();
}

/// Runs `c` with a stdout whose reader has already gone (`ducksafe … | head -c0`).
fn with_closed_stdout(mut c: Command) -> Output {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    c.stdout(writer).output().unwrap()
}

/// A project with one backup; returns its id.
fn backed_up() -> (Project, String) {
    let p = Project::new("");
    assert_ok(&p.run(&["backup"]));
    let id = p.backup_files()[0].trim_end_matches(".duckdb").to_owned();
    (p, id)
}

/// Flips bytes in the middle of a backup file: it no longer matches its manifest.
fn damage(path: &Path) {
    use std::io::{Seek, SeekFrom, Write};
    let len = fs::metadata(path).unwrap().len();
    let mut f = fs::OpenOptions::new().write(true).open(path).unwrap();
    f.seek(SeekFrom::Start(len / 2)).unwrap();
    f.write_all(b"XXXX").unwrap();
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

// 1. A closed stdout never turns a failure into a success.
#[test]
fn a_failed_command_keeps_its_exit_code_when_stdout_is_closed() {
    let (p, id) = backed_up();
    // A success whose reader has gone ends quietly with 0.
    let out = with_closed_stdout(p.cmd(&["list"]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(!stderr(&out).contains("error"), "{}", stderr(&out));

    damage(&p.backups().join(format!("{id}.duckdb")));
    let out = with_closed_stdout(p.cmd(&["verify", "--all"]));
    assert_eq!(out.status.code(), Some(74), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("verification failed"),
        "the failure is still said: {}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains("stdout"), "{}", stderr(&out));

    let out = with_closed_stdout(p.cmd(&["--json", "restore", &id]));
    assert_eq!(out.status.code(), Some(74), "{}", stderr(&out));

    let mut c = p.cmd(&["--json", "backup"]);
    c.env("DUCKSAFE_BACKUP_MIN_FREE_BYTES", "999999999999999");
    let out = with_closed_stdout(c);
    assert_eq!(out.status.code(), Some(73), "{}", stderr(&out));
}
