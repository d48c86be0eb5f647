//! The integration tests: one binary (`cargo test --test it`), so that DuckDB is linked once, with
//! a module per area. Every module runs the real binary on real DuckDB files in temporary
//! folders; `support` holds what they share (a project, the binary, a second process that holds
//! the database, and the reliability suite's harness).
#![allow(clippy::unwrap_used)]

mod support;

mod audit;
mod backup;
mod blockstore;
mod cli;
mod diff;
mod edges;
mod guarded_runs;
mod init_and_locks;
mod integrations;
mod protocol;
mod reflink;
mod reliability;
mod remote;
mod restore;
mod restore_table;
mod schemas;
mod status;

/// The second process behind [`support::hold`]: this binary, re-executed with `--exact
/// hold_database_child --ignored`, opens the database and keeps it open until stdin closes.
/// Ignored: run alone, it does nothing.
#[test]
#[ignore = "helper process for the lock tests, started by support::hold"]
fn hold_database_child() {
    support::hold_database_child();
}

/// Cargo finds no test file by itself here (`autotests = false`): a file under `tests/` that no
/// `mod` line names would never be compiled, and its cases would silently never run. Every
/// `.rs` file is this binary's main.rs or a module its parent names.
#[test]
fn every_test_file_is_a_module_of_this_binary() {
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
    let tests = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let it = tests.join("it");
    let mut files = Vec::new();
    walk(&tests, &mut files);
    assert!(files.len() > 10, "{files:?}");
    for file in files {
        if file == it.join("main.rs") {
            continue;
        }
        let rel = file.strip_prefix(&tests).unwrap().display().to_string();
        assert!(
            file.starts_with(&it),
            "`tests/{rel}` is outside tests/it/: never run"
        );
        let (parent_dir, name) = if file.file_name().is_some_and(|n| n == "mod.rs") {
            let dir = file.parent().unwrap();
            (dir.parent().unwrap(), dir.file_name().unwrap())
        } else {
            (file.parent().unwrap(), file.file_stem().unwrap())
        };
        let parent = if parent_dir == it {
            it.join("main.rs")
        } else {
            parent_dir.join("mod.rs")
        };
        let declared = std::fs::read_to_string(&parent).unwrap().lines().any(|l| {
            let l = l.trim_start().trim_start_matches("pub ");
            l == format!("mod {};", name.to_string_lossy())
        });
        assert!(
            declared,
            "`tests/{rel}` is named by no `mod` line: never compiled"
        );
    }
}
