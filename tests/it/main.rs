//! The integration tests: one binary (`cargo test --test it`), so that DuckDB is linked once, with
//! a module per area. Every module runs the real binary on real DuckDB files in temporary
//! folders; `support` holds what they share (a project, the binary, a second process that holds
//! the database, and the reliability suite's harness).
#![allow(clippy::unwrap_used)]

mod support;

mod backup;
mod edges;
mod init_and_locks;
mod integrations;
mod protocol;
mod reflink;
mod reliability;
mod restore;
mod schemas;

/// The second process behind [`support::hold`]: this binary, re-executed with `--exact
/// hold_database_child --ignored`, opens the database and keeps it open until stdin closes.
/// Ignored: run alone, it does nothing.
#[test]
#[ignore = "helper process for the lock tests, started by support::hold"]
fn hold_database_child() {
    support::hold_database_child();
}
