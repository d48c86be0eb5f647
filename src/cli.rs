//! Command-line parsing and dispatch. Each subcommand lives in its own file under
//! [`crate::commands`]; this file only names them and picks one. A command-line error that the
//! parser catches is said on stderr and exits 64 (`usage`), with no JSON line.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::commands;
use crate::error::Error;

#[derive(Debug, Parser)]
#[command(
    name = "ducksafe",
    version,
    about = "Consistent, verified, atomic backups of a DuckDB database before every run",
    long_about = "ducksafe keeps a DuckDB database safe before every run of the workload that writes it.\n\
                  As a pre-run hook it reads one JSON request on stdin and answers one JSON line on stdout;\n\
                  as an operator CLI it backs up, lists, verifies, restores and prunes.",
    after_help = "Exit codes: 0 ok, 64 usage, 65 bad request, 66 not found, 70 internal, 73 cannot create backup,\n\
                  74 I/O or verification failure, 75 busy (retry), 76 unsupported protocol, 78 invalid configuration.\n\
                  `ducksafe status` alone exits as a monitoring check: 0 ok, 1 warning, 2 critical, 3 unknown.\n\
                  Docs: docs/runbook.md, docs/configuration.md, docs/protocol.md"
)]
pub struct Cli {
    /// Configuration file (YAML or JSON). Default: $DUCKSAFE_CONFIG, else ./config.yaml
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Print the command's report as JSON on stdout instead of text
    #[arg(long, global = true)]
    pub json: bool,

    /// Set a configuration key over the file and over DUCKSAFE_<KEY> (repeatable), e.g.
    /// --set DB_PATH=/srv/sim/simulation.duckdb
    #[arg(long, global = true, value_name = "KEY=VALUE", value_parser = parse_set)]
    pub set: Vec<(String, String)>,

    /// Log errors only (LOG_LEVEL=ERROR) and draw no progress bar
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,

    /// Log more: -v is LOG_LEVEL=DEBUG (each step's timing), -vv is TRACE
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write config.yaml with secure defaults, create backups/ (0700) and logs/, ignore backups/ in git
    Init(InitArgs),
    /// Take a consistent, verified backup now and rotate old ones
    Backup(BackupArgs),
    /// List stored backups with their size, tables, rows and verification
    List(ListArgs),
    /// Re-check stored backups: SHA-256, a read-only open and a scan of every column
    Verify(VerifyArgs),
    /// Put a backup back in place of the database; the replaced files go to quarantine
    Restore(RestoreArgs),
    /// Apply the retention rules now and print each decision
    Prune(PruneArgs),
    /// Upload every local verified backup the remote (REMOTE_URL) lacks, then apply remote retention
    Push,
    /// After moving the project folder on purpose: make the backups those of DB_PATH's new path
    Adopt(AdoptArgs),
    /// Protect a backup from rotation
    Pin(PinArgs),
    /// Let rotation delete a pinned backup again
    Unpin(PinArgs),
    /// Delete one backup now (e.g. one dated in the future by a wrong clock)
    Delete(DeleteArgs),
    /// What changed between two states of the database (default: latest backup -> current); exit 1 when they differ
    Diff(DiffArgs),
    /// Print a committed JSON Schema: config, request, response or manifest
    Schema(SchemaArgs),
    /// Check the configuration, the database and the backup directory; write nothing
    Validate,
    /// Is the safety net healthy? A monitoring check: exit 0 ok, 1 warning, 2 critical, 3 unknown
    Status(StatusArgs),
    /// Hook protocol v1: read one JSON request on stdin, answer one JSON line on stdout
    Hook,
    /// The hook's pre_run event from flags (for make and just); answers one JSON line
    PreRun(PreRunArgs),
    /// The hook's post_run event from flags (for make and just); answers one JSON line
    PostRun(PostRunArgs),
    /// Print a completion script for a shell (bash, zsh, fish, elvish, powershell)
    Completions(CompletionsArgs),
    /// Print the man page (roff), or write one page per command into a folder
    Man(ManArgs),
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell: e.g. `ducksafe completions bash > ~/.local/share/bash-completion/completions/ducksafe`
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub struct ManArgs {
    /// Write ducksafe.1 and ducksafe-COMMAND.1 here instead of printing ducksafe.1
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Directory to set up (default: the current directory)
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub dir: PathBuf,
    /// Also create a demo simulation.duckdb shaped like the seed's data (9,016 employees, 42,331 events)
    #[arg(long)]
    pub demo: bool,
    /// Overwrite an existing config.yaml (never an existing database)
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct BackupArgs {
    /// Validate and plan without writing anything
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// List the backups in the remote (REMOTE_URL) instead of the backup directory
    #[arg(long)]
    pub remote: bool,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Backup to check: an id, `latest`, or a path inside the backup directory
    #[arg(value_name = "ID", conflicts_with = "all")]
    pub id: Option<String>,
    /// Check every backup, and report files that do not belong
    #[arg(long)]
    pub all: bool,
    /// Check the remote copies (REMOTE_URL): size and ETag from the store
    #[arg(long)]
    pub remote: bool,
    /// With --remote: download each copy and hash it (costs egress: docs/remote.md)
    #[arg(long, requires = "remote")]
    pub read_data: bool,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// Backup to restore: `latest` (default), an id, or a path inside the backup directory
    #[arg(value_name = "BACKUP", default_value = "latest")]
    pub backup: String,
    /// Show what would be moved and copied without doing it
    #[arg(long)]
    pub dry_run: bool,
    /// Refuse, changing nothing, unless the backup's SHA-256 is this one (rollback
    /// instructions pass it, so an id can never restore other content)
    #[arg(long, value_name = "HEX", value_parser = parse_sha256)]
    pub expect_sha256: Option<String>,
    /// Put back only this table (`schema.table` or `table`; repeatable) into the live
    /// database, in one transaction, after an undo backup; every other table stays as it is
    #[arg(long = "table", value_name = "NAME")]
    pub tables: Vec<String>,
    /// With --table: recreate a table whose definition differs with the backup's (columns,
    /// types, defaults, constraints)
    #[arg(long, requires = "tables")]
    pub replace_schema: bool,
    /// Restore from the remote (REMOTE_URL): download the backup into the backup directory
    /// (checked against its manifest), then restore it as a local one
    #[arg(long, conflicts_with_all = ["dry_run", "tables"])]
    pub remote: bool,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Print the figures in the Prometheus text format instead (node_exporter textfile
    /// collector); not with --json
    #[arg(long)]
    pub prometheus: bool,
    /// Also write the Prometheus figures to this file, atomically (e.g.
    /// /var/lib/node_exporter/textfile/ducksafe.prom)
    #[arg(long, value_name = "PATH")]
    pub prometheus_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The older state: a backup id, `latest`, `current` (the live database) or a path to a
    /// DuckDB file
    #[arg(value_name = "FROM", default_value = "latest")]
    pub from: String,
    /// The newer state, as FROM
    #[arg(value_name = "TO", default_value = "current")]
    pub to: String,
    /// List unchanged tables and views too
    #[arg(long, conflicts_with = "rows")]
    pub all: bool,
    /// Show the rows of this table that differ (`schema.table`; default schema `main`)
    #[arg(long, value_name = "TABLE")]
    pub rows: Option<String>,
    /// With --rows: at most this many rows of each change (removed, added, changed)
    #[arg(long, value_name = "N", default_value_t = 100, requires = "rows",
          value_parser = clap::value_parser!(u64).range(1..=i64::MAX.unsigned_abs()))]
    pub limit: u64,
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Print the plan without deleting anything
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct AdoptArgs {
    /// Say what would change without writing anything
    #[arg(long)]
    pub dry_run: bool,
}

/// `KEY=VALUE` for `--set`, with a known key.
fn parse_set(s: &str) -> Result<(String, String), String> {
    let (key, value) = s
        .split_once('=')
        .ok_or_else(|| format!("expected KEY=VALUE, e.g. DB_PATH=simulation.duckdb; got `{s}`"))?;
    let key = key.trim();
    if !crate::config::KEYS.contains(&key) {
        let hint = crate::config::did_you_mean(key)
            .map_or_else(String::new, |k| format!(" (did you mean `{k}`?)"));
        return Err(format!("unknown configuration key `{key}`{hint}"));
    }
    Ok((key.to_owned(), value.to_owned()))
}

#[derive(Debug, Args)]
pub struct PinArgs {
    /// The backup's id (or `latest`)
    pub id: String,
}

#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// The backup's id (never `latest`: name the one you mean)
    pub id: String,
    /// Say what would be deleted without deleting it
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum SchemaName {
    Config,
    Request,
    Response,
    Manifest,
}

#[derive(Debug, Args)]
pub struct SchemaArgs {
    pub name: SchemaName,
}

#[derive(Debug, Args)]
pub struct PreRunArgs {
    /// Echoed in the response; generated when absent
    #[arg(long)]
    pub request_id: Option<String>,
    /// Validate and plan without writing anything
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum OutcomeArg {
    Success,
    Failure,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum OnFailureArg {
    Restore,
    Keep,
}

#[derive(Debug, Args)]
pub struct PostRunArgs {
    /// The backup the matching pre-run created (default: latest)
    #[arg(long)]
    pub backup_id: Option<String>,
    /// That backup's SHA-256, from the pre-run's answer: a restore of other content is refused
    #[arg(long, value_name = "HEX", value_parser = parse_sha256)]
    pub backup_sha256: Option<String>,
    /// How the run ended
    #[arg(long, value_enum)]
    pub outcome: Option<OutcomeArg>,
    /// The run's exit code; sets --outcome when --outcome is absent (0 = success)
    #[arg(long, allow_negative_numbers = true)]
    pub exit_code: Option<i32>,
    /// Override RESTORE_ON_FAILURE
    #[arg(long, value_enum)]
    pub on_failure: Option<OnFailureArg>,
    #[arg(long)]
    pub request_id: Option<String>,
    /// Decide without restoring
    #[arg(long)]
    pub dry_run: bool,
}

/// Parses the command line, runs the command, and returns the process exit code.
pub fn main() -> i32 {
    crate::timing::start();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            return match e.kind() {
                ErrorKind::DisplayVersion => commands::version::run(),
                ErrorKind::DisplayHelp => {
                    let _ = e.print();
                    0
                }
                _ => {
                    let _ = e.print();
                    Error::Usage(e.to_string()).exit_code()
                }
            };
        }
    };
    run(cli)
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> i32 {
    let mut set = Vec::with_capacity(cli.set.len() + 1);
    // Before the `--set` pairs, so that an explicit `--set LOG_LEVEL=…` still has the last word.
    if let Some(level) = log_level(cli.quiet, cli.verbose) {
        set.push(("LOG_LEVEL".to_owned(), level.to_owned()));
    }
    set.extend(cli.set);
    if let Some((command, dry_run)) = audited(&cli.command) {
        crate::audit::begin(command, dry_run);
    }
    let g = commands::Global {
        config: cli.config,
        json: cli.json,
        set,
        quiet: cli.quiet,
    };
    match cli.command {
        Command::Init(a) => commands::init::run(&g, &a),
        Command::Backup(a) => commands::backup::run(&g, &a),
        Command::List(a) if a.remote => commands::remote::list(&g),
        Command::List(_) => commands::list::run(&g),
        Command::Verify(a) if a.remote => {
            commands::remote::verify(&g, a.id.as_deref(), a.all, a.read_data)
        }
        Command::Verify(a) => commands::verify::run(&g, &a),
        Command::Push => commands::remote::push(&g),
        Command::Restore(a) => commands::restore::run(&g, &a),
        Command::Prune(a) => commands::prune::run(&g, &a),
        Command::Adopt(a) => commands::adopt::run(&g, &a),
        Command::Pin(a) => commands::pin::run(&g, &a, true),
        Command::Unpin(a) => commands::pin::run(&g, &a, false),
        Command::Delete(a) => commands::delete::run(&g, &a),
        Command::Diff(a) => commands::diff::run(&g, &a),
        Command::Schema(a) => commands::schema::run(g.json, &a),
        Command::Validate => commands::validate::run(&g),
        Command::Status(a) => commands::status::run(&g, &a),
        Command::Hook => commands::hook::run(),
        Command::PreRun(a) => commands::pre_run::run(&g, &a),
        Command::PostRun(a) => commands::post_run::run(&g, &a),
        Command::Completions(a) => commands::completions::run(&a),
        Command::Man(a) => commands::man::run(g.json, &a),
    }
}

/// The commands the audit log records (every one that changes something, and every hook call),
/// by name, with their `--dry-run`.
fn audited(command: &Command) -> Option<(&'static str, bool)> {
    Some(match command {
        Command::Backup(a) => ("backup", a.dry_run),
        Command::Restore(a) => ("restore", a.dry_run),
        Command::Prune(a) => ("prune", a.dry_run),
        Command::Adopt(a) => ("adopt", a.dry_run),
        Command::Pin(_) => ("pin", false),
        Command::Unpin(_) => ("unpin", false),
        Command::Delete(a) => ("delete", a.dry_run),
        Command::Validate => ("validate", false),
        Command::Hook => ("hook", false),
        Command::PreRun(a) => ("pre-run", a.dry_run),
        Command::PostRun(a) => ("post-run", a.dry_run),
        Command::Push => ("push", false),
        Command::Init(_)
        | Command::List(_)
        | Command::Diff(_)
        | Command::Verify(_)
        | Command::Status(_)
        | Command::Schema(_)
        | Command::Completions(_)
        | Command::Man(_) => return None,
    })
}

/// The `LOG_LEVEL` that `--quiet` or `--verbose` stand for.
fn log_level(quiet: bool, verbose: u8) -> Option<&'static str> {
    match (quiet, verbose) {
        (true, _) => Some("ERROR"),
        (false, 0) => None,
        (false, 1) => Some("DEBUG"),
        (false, _) => Some("TRACE"),
    }
}

/// A SHA-256 as 64 hex digits, taken in lower case (as manifests and the hook's
/// `backup_sha256` write it); anything else is a usage error, not a restore that fails.
fn parse_sha256(s: &str) -> Result<String, String> {
    if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(s.to_ascii_lowercase())
    } else {
        Err(
            "expected a SHA-256: 64 hexadecimal digits, as `backup.sha256` in the pre_run's answer"
                .into(),
        )
    }
}
