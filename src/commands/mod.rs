//! One file per subcommand. Each turns its flags and the configuration into one call into the
//! engine, then prints the report: text for people, or `--json`. Errors are printed by
//! [`fail`], with the exit code from the one error table.

pub mod adopt;
pub mod backup;
pub mod delete;
pub mod hook;
pub mod init;
pub mod list;
pub mod pin;
pub mod post_run;
pub mod pre_run;
pub mod prune;
pub mod restore;
pub mod schema;
pub mod validate;
pub mod verify;

use std::path::PathBuf;

use crate::config::{self, Settings, Source};
use crate::error::{Error, Result};
use crate::report;

/// Flags shared by every subcommand.
#[derive(Debug, Clone)]
pub struct Global {
    pub config: Option<PathBuf>,
    pub json: bool,
    /// `--set KEY=VALUE`, in order: over the configuration and the environment.
    pub set: Vec<(String, String)>,
}

/// Reads `DUCKSAFE_*` from the process environment.
pub fn env_var(key: &str) -> Option<String> {
    std::env::var(key).ok()
}

/// `DUCKSAFE_<KEY>` as the configuration sees it: a `--set KEY=VALUE` (or a request's `set`)
/// wins over the process environment, the last of several for one key.
pub fn lookup(set: &[(String, String)], var: &str) -> Option<String> {
    var.strip_prefix(config::ENV_PREFIX)
        .and_then(|key| set.iter().rev().find(|(k, _)| k == key))
        .map(|(_, v)| v.clone())
        .or_else(|| env_var(var))
}

/// The configuration source for `--config`, or the default lookup. Without a file, a
/// configuration made only of `DUCKSAFE_<KEY>` variables (or `--set`) is accepted when it names
/// `DB_PATH`.
pub fn source_for(config: Option<&PathBuf>, set: &[(String, String)]) -> Result<Source> {
    if let Some(p) = config {
        return Ok(Source::File(p.clone()));
    }
    if env_var(config::ENV_CONFIG).is_none()
        && !std::path::Path::new("config.yaml").exists()
        && lookup(set, "DUCKSAFE_DB_PATH").is_some()
    {
        let base =
            std::env::current_dir().map_err(|e| Error::io("read", std::path::Path::new("."), e))?;
        return Ok(Source::Inline {
            object: serde_json::Map::new(),
            base,
        });
    }
    Ok(Source::Default)
}

/// Loads and validates the configuration, then starts logging at its `LOG_LEVEL`.
pub fn load_settings(g: &Global) -> Result<Settings> {
    let settings = config::load(&source_for(g.config.as_ref(), &g.set)?, &|var: &str| {
        lookup(&g.set, var)
    })?;
    init_logging(settings.config.log_level.as_tracing());
    for n in &settings.notes {
        tracing::debug!("{n}");
    }
    Ok(settings)
}

/// Says on stderr, before anything else, that a restore of this database was interrupted and is
/// unfinished (for the commands that neither finish it nor print their own report of it).
pub fn warn_pending(settings: &Settings) {
    report::print_warnings(&report::pending_warnings(settings));
}

/// Logs go to stderr, never stdout (stdout carries data and the hook's JSON line).
pub fn init_logging(level: tracing::Level) {
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_max_level(level)
        .with_target(false)
        .without_time()
        .try_init();
}

/// Reports a failure: the JSON report when `--json` asked for one, text on stderr always.
pub fn fail(g: &Global, err: &Error) -> i32 {
    if g.json {
        report::print_json_pretty(&serde_json::json!({
            "status": "error",
            "errors": err.entries(),
            "exit_code": err.exit_code(),
        }));
    }
    report::print_error(err);
    err.exit_code()
}

/// Reports a failed operation that has a full response (`backup`, `restore`): that response
/// when `--json` asked for it, text on stderr always.
pub fn fail_with_response(
    g: &Global,
    ctx: &report::Ctx,
    decision: crate::protocol::Decision,
    err: &Error,
) -> i32 {
    if g.json {
        report::print_json_pretty(&ctx.fail(decision, err));
    }
    report::print_error(err);
    report::print_warnings(&ctx.warnings);
    err.exit_code()
}
