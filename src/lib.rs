//! ducksafe keeps a DuckDB database safe before every run of the workload that writes it: a
//! consistent, verified, atomic backup behind a pre-run hook, and a safe restore after a failed
//! run.
//!
//! Layout: [`cli`] and [`commands`] (one file per subcommand) on top; [`config`] and
//! [`protocol`] (the types behind the JSON Schemas, the error-code table); [`engine`] (one file
//! per step of a backup); [`duck`] alone talks to DuckDB; [`files`] alone does low-level file
//! work; [`error`] maps every failure to its protocol code and exit code.

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
pub mod protocol;
pub mod report;
pub mod schemas;
