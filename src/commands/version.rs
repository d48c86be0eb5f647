//! `ducksafe --version`: ducksafe's version and the DuckDB it bundles, the one that reads the
//! databases and writes the backups (a backup's manifest records it too).

use std::io::{self, Write};
use std::path::Path;

use crate::duck::{Db, Limits};

/// Prints `ducksafe 0.2.0 (DuckDB v2.0.0, bundled)`; exits 0, or 70 when DuckDB cannot start.
pub fn run() -> i32 {
    let duckdb = Db::open_read_write(Path::new(":memory:"), &Limits::default())
        .and_then(|db| db.library_version());
    let line = match &duckdb {
        Ok(v) => format!(
            "ducksafe {} (DuckDB {v}, bundled)\n",
            env!("CARGO_PKG_VERSION")
        ),
        Err(e) => format!(
            "ducksafe {} (the bundled DuckDB did not start: {e})\n",
            env!("CARGO_PKG_VERSION")
        ),
    };
    let written = io::stdout()
        .lock()
        .write_all(line.as_bytes())
        .and_then(|()| io::stdout().flush());
    match (written, duckdb) {
        (Ok(()), Ok(_)) => 0,
        (Err(_), _) => 74,
        (Ok(()), Err(_)) => 70,
    }
}
