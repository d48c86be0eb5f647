//! ducksafe keeps a DuckDB database safe before every run of the workload that writes it: a
//! consistent, verified, atomic backup behind a pre-run hook, and a safe restore after a failed
//! run.
//!
//! From stdin to stdout: [`cli`] parses the command line and picks a command in [`commands`]
//! (one file per subcommand). `ducksafe hook` reads one request and [`hook`] answers it:
//! [`hook::request`] reads and validates it, [`hook::serve`] does the event's work,
//! [`hook::response`] builds the answer. [`config`] turns a file, a request's inline object and
//! the environment into one validated configuration. The work itself is the [`engine`]'s (one
//! file per step of a backup); [`duck`] alone talks to DuckDB; [`files`] alone does low-level
//! file work. [`output`] writes every report (text, or `--json`) and the protocol line;
//! [`error`] maps every failure to its protocol code and exit code; [`protocol`] holds the
//! types behind the JSON Schemas; [`rollback`] says how to undo a run; [`timing`] is the `DEBUG` phase log.
//! [`audit`] appends one line per changing command or hook call to the audit log, which
//! `ducksafe status` reads.

#![warn(clippy::print_stdout)]

pub mod audit;
pub mod cli;
pub mod clock;
pub mod commands;
pub mod config;
pub mod demo;
pub mod duck;
pub mod engine;
pub mod error;
pub mod failpoint;
pub mod files;
pub mod hook;
pub mod output;
pub mod progress;
pub mod protocol;
pub mod remote;
pub mod rollback;
pub mod schemas;
pub mod timing;
pub mod workload;
