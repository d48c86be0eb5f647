//! Real DuckDB files for the block store's tests: a small demo database and simulated runs.
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::blockmap::{BlockMap, SUPPORTED_BLOCK_SIZE};
use crate::workload::{self, Shape};

/// Employees and events of the test database: about 40 blocks, enough for runs to change some
/// and keep most.
pub const EMPLOYEES: u32 = 9_016 * 3;
pub const EVENTS: u32 = 42_331 * 3;

/// `n` backups of a database after runs 1…n of `shape`: `run1.duckdb` … in `dir`.
pub fn runs(dir: &Path, shape: Shape, n: u32) -> Vec<PathBuf> {
    let db = dir.join("work.duckdb");
    crate::demo::create_sized(&db, EMPLOYEES, EVENTS).unwrap();
    (1..=n)
        .map(|k| {
            workload::run(&db, shape, k, EMPLOYEES, EVENTS).unwrap();
            let out = dir.join(format!("run{k}.duckdb"));
            std::fs::copy(&db, &out).unwrap();
            out
        })
        .collect()
}

/// Two successive backups of the append workload.
pub fn two_runs(dir: &Path) -> (PathBuf, PathBuf) {
    let mut r = runs(dir, Shape::Append, 2);
    let b = r.pop().unwrap();
    (r.pop().unwrap(), b)
}

/// The map of a whole file.
pub fn map(path: &Path) -> BlockMap {
    BlockMap::of_reader(
        &mut std::fs::File::open(path).unwrap(),
        SUPPORTED_BLOCK_SIZE,
    )
    .unwrap()
}

/// Flips the bits of one byte.
pub fn flip(path: &Path, at: u64) {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8];
    f.read_exact_at(&mut b, at).unwrap();
    f.write_all_at(&[!b[0]], at).unwrap();
}
