//! Table restore: put some tables back from a backup into the LIVE database, in one DuckDB
//! transaction, leaving every other table as it is now (`ducksafe restore --table NAME`).
//!
//! The order, and why:
//! 1. check, writing nothing, under a shared hold of the backup directory: the database exists
//!    and no guarded run is in progress ([`lease`]); the backup is this database's and the one
//!    asked for (`--expect-sha256`); an interrupted whole-file restore is finished first
//!    ([`journal::recover`]);
//! 2. stage the backup beside the database ([`staging`]): copied, or rebuilt from the block
//!    store, fsynced, read back, its SHA-256 the manifest's. A dry run checks a plain backup in
//!    place instead (a packed one is rebuilt into a staged copy all the same, removed before
//!    the dry run returns: DuckDB cannot read a stream);
//! 3. refuse, changing nothing, what must not be restored ([`check`]): a table missing from the
//!    backup or from the database; a definition (columns, types, defaults, constraints) that
//!    differs, unless `--replace-schema`; a foreign key that would break (a restored table's
//!    rows referencing rows that would not be there, or a referenced row the restore would
//!    delete: DuckDB refuses to delete a referenced row even in the transaction that also
//!    deletes what references it); a view that would no longer bind (only a replaced
//!    definition can break one: checked on a copy of the catalog, no row read); any process
//!    that has the database open, a reader too, as for a whole-file restore
//!    (`database_locked`);
//! 4. the undo: a verified backup of the live database, through the same path as `ducksafe
//!    backup` ([`backup::run_undo`]), published pinned (rotation never deletes it before the
//!    operator has decided; `ducksafe unpin ID` lets it go), never named by `latest` and
//!    rotating nothing: it never pushes the backup being restored from out of the retention;
//! 5. one transaction on the live database opened read-write, the staged copy attached
//!    read-only: deletes (tables that reference others first), then inserts (referenced tables
//!    first); a view that bound before must still bind; every restored table's fingerprint
//!    must equal the backup's (its manifest's, when it holds one computed by this DuckDB, else
//!    computed on the staged copy) — otherwise ROLLBACK, and the error names the undo backup;
//!    then COMMIT, and the database is closed (DuckDB checkpoints it).
//!
//! A crash or a failure before the COMMIT leaves the database as it was: DuckDB writes nothing
//! of an uncommitted transaction to its WAL. The staged copy is removed on every path (a crash
//! leaves it to the sweep of the next backup, pre_run or restore, [`staging::sweep`]).
//!
//! Between the undo backup (4) and the read-write open (5) no ducksafe lock is held on the
//! database (an OFD lock of this process would conflict with DuckDB's own): a writer that
//! opened it in that instant makes the open fail with `database_locked` (nothing restored, the
//! undo unpinned); one that also wrote and closed it within that instant would leave changes
//! the undo does not hold. The transaction checks again that each table's definition is the
//! one the refusals were made on, and DuckDB enforces the foreign keys itself.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::lock::{DatabaseLock, DirLock};
use super::manifest::Storage;
use super::staging::{self, Staged};
use super::store::{Entry, Store};
use super::{backup, database, identity, journal, lease, shell};
use crate::config::Settings;
use crate::duck::{self, Db, DuckError, Fingerprint, ForeignKey, Instance, TableName, TableSchema};
use crate::error::{Error, Result};
use crate::failpoint;

/// What the operator asked for.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    /// `latest`, an id, or a path in the backup directory.
    pub selector: &'a str,
    /// `schema.table` or `table` (schema `main`), as given.
    pub tables: &'a [String],
    pub replace_schema: bool,
    pub expect_sha256: Option<&'a str>,
    pub dry_run: bool,
}

/// How a table's rows are put back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// `DELETE` every row, `INSERT` the backup's: the definition is kept as it is.
    ReplaceRows,
    /// Only the rows that differ: those not in the backup deleted, the backup's missing ones
    /// inserted. For a table other tables' foreign keys reference (DuckDB refuses to delete a
    /// referenced row, so the rows that stay must not be touched).
    ChangedRows,
    /// `DROP` and `CREATE` with the backup's definition (`--replace-schema`), then `INSERT`.
    Recreate,
}

/// One table of a table restore: what it was, what it becomes.
#[derive(Debug, Clone, Serialize)]
pub struct TableOutcome {
    /// `schema.table`.
    pub table: String,
    pub method: Method,
    /// Rows in the live database before the restore.
    pub rows_before: u64,
    /// Rows in the backup: the table's rows after the restore.
    pub rows_after: u64,
    /// The live definition differed from the backup's and was replaced by it.
    pub schema_replaced: bool,
    /// The backup's fingerprint of the table.
    pub fingerprint: Fingerprint,
    /// Where it came from: `manifest` (recorded when the backup was verified) or `backup`
    /// (computed on the staged copy now).
    pub fingerprint_source: String,
    /// The restored table's fingerprint, computed in the transaction before its COMMIT, equals
    /// the backup's. `None` in a dry run.
    pub fingerprint_matches: Option<bool>,
    #[serde(skip)]
    name: TableName,
    #[serde(skip)]
    live_schema: TableSchema,
    #[serde(skip)]
    backup_schema: TableSchema,
    #[serde(skip)]
    create_sql: Option<String>,
}

/// The undo backup: the live database as it was just before the tables were put back.
#[derive(Debug, Clone, Serialize)]
pub struct Undo {
    pub backup_id: String,
    pub sha256: String,
    /// Pinned: rotation never deletes it (`ducksafe unpin ID` lets it go).
    pub pinned: bool,
    /// The whole-file restore that undoes the table restore.
    pub command: String,
}

/// What a table restore did, or in a dry run would do.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub backup_id: String,
    pub backup_sha256: String,
    pub database: PathBuf,
    pub dry_run: bool,
    pub tables: Vec<TableOutcome>,
    /// `None` in a dry run (none is taken).
    pub undo: Option<Undo>,
    pub duration_ms: u64,
    pub warnings: Vec<String>,
}

/// A table restore that failed: why, and what the operator must know besides (no table was
/// restored; what became of the undo backup).
#[derive(Debug)]
pub struct Failed {
    pub error: Error,
    pub notes: Vec<String>,
}

impl From<Error> for Failed {
    fn from(error: Error) -> Self {
        Failed {
            error,
            notes: Vec::new(),
        }
    }
}

/// A refusal: nothing was changed.
fn refused(database: &Path, why: String, hint: String) -> Error {
    Error::TableRestoreRefused {
        database: database.to_path_buf(),
        why,
        hint,
    }
}

/// `schema.table` or `table` (schema `main`); either part may be double-quoted (`"my.schema"."t"`).
pub fn parse_name(s: &str) -> Result<TableName> {
    TableName::parse(s).ok_or_else(|| {
        Error::Usage(format!(
            "`--table {s}`: expected a table name, `table` or `schema.table` (double-quote a part that holds a dot)"
        ))
    })
}

fn duck_err(path: &Path, e: DuckError) -> Error {
    match e {
        DuckError::Locked { pid, holder } => Error::DatabaseLocked {
            path: path.to_path_buf(),
            pid,
            holder,
        },
        other => Error::DatabaseInvalid {
            path: path.to_path_buf(),
            why: other.to_string(),
        },
    }
}

fn elapsed_ms(started: std::time::Instant) -> u64 {
    u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Runs a table restore (or its dry run): see the module documentation for the order.
pub fn run(
    settings: &Settings,
    req: &Request,
    now: DateTime<Utc>,
) -> std::result::Result<Outcome, Failed> {
    let started = std::time::Instant::now();
    let names = parse_names(req.tables)?;
    database::check(settings)?;
    let db = database::path(settings)?;
    let live_path = settings.db_path.clone();
    let store = Store::open(&settings.backup_dir, false)?;
    // Shared: a refusal writes nothing, not even the lock's PID. Released before the undo
    // backup, which takes the directory itself.
    let dir_lock = DirLock::acquire_without_writing(store.dir())?;
    let owner = identity::check(store.dir(), settings)?;
    let store = store.owned_by(owner);
    lease::check(&db, store.dir())?;
    let mut warnings = journal::recover(settings, req.dry_run)?.all_notes();
    // Resolved once, before the undo backup becomes `latest`.
    let entry = store.resolve(req.selector)?;
    check_not_an_undo(&live_path, req.selector, &entry)?;
    super::restore::check_expected(settings, &entry, req.expect_sha256)?;
    let backup_file = store.backup_path(&entry.id);
    let staged_path = staging::path_for(&live_path, &entry.id);
    let limits = database::limits(settings);
    // The transaction needs the database to itself, as a whole-file restore does: a reader (a
    // notebook, a DuckDB shell) would make its read-write open fail after the undo backup.
    // Asked now, before anything is written; let go at once (DuckDB takes its own lock).
    drop(DatabaseLock::acquire(&live_path)?);

    // 2. The backup's bytes, proven.
    let staged = stage(&store, &entry, &staged_path, req.dry_run)?;
    let backup_copy: &Path = if staged.is_some() {
        &staged_path
    } else {
        &backup_file
    };
    crate::timing::phase("table restore: backup staged and its SHA-256 checked");

    // 3. The refusals, both databases read-only in one DuckDB.
    let plans = {
        let duck = Instance::start(&limits).map_err(|e| duck_err(&live_path, e))?;
        let (live, _) = duck
            .attach_read_only(&live_path)
            .map_err(|e| duck_err(&live_path, e))?;
        let (bak, _) =
            duck.attach_read_only(backup_copy)
                .map_err(|e| Error::VerificationFailed {
                    path: backup_file.clone(),
                    why: format!("DuckDB cannot open it: {e}"),
                })?;
        let pair = Pair::new(&live_path, &backup_file, &live, &bak, &entry.id);
        check(&pair, &entry, &names, req.replace_schema)?
    };
    failpoint::hit("restore_table.checked");
    crate::timing::phase("table restore: refusals checked");
    if req.dry_run {
        return Ok(Outcome {
            backup_id: entry.id,
            backup_sha256: entry.manifest.sha256,
            database: live_path,
            dry_run: true,
            tables: plans,
            undo: None,
            duration_ms: elapsed_ms(started),
            warnings,
        });
    }
    drop(dir_lock);

    // 4. The undo, with the database's turn held: no guarded run starts meanwhile.
    let turn = lease::Turn::take(&db, store.dir())?;
    let undo = take_undo(settings, now, &entry.id, &mut warnings).map_err(|error| Failed {
        error,
        notes: vec![
            "no table was restored: the undo backup (of the database as it is) could not be taken; the database is as it was".into(),
        ],
    })?;

    crate::timing::phase("table restore: undo backup taken and pinned");
    // 5. The transaction. Not committed, the undo is the database as it still is: unpinned,
    // so that retries on a full disk do not pile up pinned copies.
    let tables = transact(&live_path, backup_copy, plans, &limits, &undo).map_err(
        |(error, committed)| {
            let mut notes = Vec::new();
            if !committed {
                notes.push(match pin_as(settings, &undo.backup_id, false) {
                    Ok(()) => format!(
                        "no table was restored; the undo backup `{}` was unpinned (it is the database as it still is: rotation may delete it)",
                        undo.backup_id
                    ),
                    Err(e) => format!(
                        "no table was restored; the undo backup `{}` is still pinned ({e}): `ducksafe unpin {}` when you do not need it",
                        undo.backup_id, undo.backup_id
                    ),
                });
            }
            Failed { error, notes }
        },
    )?;
    drop(turn);
    drop(staged);
    crate::timing::phase("table restore: committed and closed");
    Ok(Outcome {
        backup_id: entry.id,
        backup_sha256: entry.manifest.sha256,
        database: live_path,
        dry_run: false,
        tables,
        undo: Some(undo),
        duration_ms: elapsed_ms(started),
        warnings,
    })
}

/// The `request_id` of an undo backup's manifest: this prefix, then the id of the backup the
/// table restore put tables back from.
pub const UNDO_REQUEST_PREFIX: &str = "restore-table-undo-from:";

/// The undo backup of a table restore becomes `latest`, as every backup does. Restoring tables
/// from `latest` again would then take them from the state just before that restore: a second
/// table restore "from latest" would silently put back broken rows. Refused when `latest` (not
/// the undo's id, named on purpose) names an undo backup.
fn check_not_an_undo(database: &Path, selector: &str, entry: &Entry) -> Result<()> {
    let via_latest = selector == "latest"
        || Path::new(selector).file_name() == Some(std::ffi::OsStr::new("latest.duckdb"));
    let Some(source) = entry
        .manifest
        .request_id
        .as_deref()
        .and_then(|r| r.strip_prefix(UNDO_REQUEST_PREFIX))
        .filter(|_| via_latest)
    else {
        return Ok(());
    };
    Err(refused(
        database,
        format!(
            "`latest` is backup `{}`, the undo backup an earlier table restore took of the database as it was just before it: tables restored from it would be the ones that restore replaced",
            entry.id
        ),
        format!(
            "name the backup to restore from: that restore used `{source}` (`ducksafe restore --table NAME {source}`; `ducksafe list` shows the others); to undo that restore, name the undo backup itself (`ducksafe restore {}`); nothing was changed",
            entry.id
        ),
    ))
}

/// The names asked for, each once, in the order given.
fn parse_names(tables: &[String]) -> Result<Vec<TableName>> {
    let mut names: Vec<TableName> = Vec::new();
    for t in tables {
        let n = parse_name(t)?;
        if !names.contains(&n) {
            names.push(n);
        }
    }
    Ok(names)
}

/// Step 2: the backup's bytes, proven to be the manifest's: a staged copy beside the database
/// (rebuilt from the block store for a packed backup), or, in a dry run of a plain backup, the
/// backup itself read in place (`None`: nothing staged).
fn stage<'a>(
    store: &Store,
    entry: &Entry,
    staged_path: &'a Path,
    dry_run: bool,
) -> Result<Option<Staged<'a>>> {
    let backup_file = store.backup_path(&entry.id);
    if entry.manifest.storage == Storage::Packed {
        let inv = store.inventory()?;
        return Staged::fill(staged_path, |out| {
            store.rebuild_into(&inv, entry, out, staged_path).map(drop)
        })
        .map(Some);
    }
    if dry_run {
        staging::check_in_place(&backup_file, entry.manifest.bytes, &entry.manifest.sha256)?;
        return Ok(None);
    }
    Staged::create(
        &backup_file,
        staged_path,
        entry.manifest.bytes,
        &entry.manifest.sha256,
    )
    .map(Some)
}

/// Step 4: the undo backup, taken as `ducksafe backup` takes one (its manifest's `request_id`
/// marks it, [`UNDO_REQUEST_PREFIX`]), then pinned. A failure to pin is a warning: the backup
/// is there, and the operator is told to pin it.
fn take_undo(
    settings: &Settings,
    now: DateTime<Utc>,
    source: &str,
    warnings: &mut Vec<String>,
) -> Result<Undo> {
    let marker = format!("{UNDO_REQUEST_PREFIX}{source}");
    let taken = backup::run_undo(settings, now, &marker).map_err(|r| {
        let mut e = r.error;
        if let Error::BackupFailed { why, .. } = &mut e {
            why.push_str("; the undo backup could not be taken, so no table was restored");
        }
        e
    })?;
    warnings.extend(taken.notes.warnings.iter().cloned());
    let id = taken.manifest.id.clone();
    // Published pinned, rotating nothing and leaving `latest` alone (`backup::run_undo`).
    let pinned = taken.manifest.pinned;
    Ok(Undo {
        command: shell::restore_line(settings, &id, &taken.manifest.sha256),
        backup_id: id,
        sha256: taken.manifest.sha256,
        pinned,
    })
}

/// Pins or unpins backup `id`, under the backup directory's lock.
fn pin_as(settings: &Settings, id: &str, pinned: bool) -> Result<()> {
    let store = Store::open(&settings.backup_dir, false)?;
    let _lock = store.lock_only()?;
    let owner = identity::check(store.dir(), settings)?;
    let store = store.owned_by(owner);
    let mut entry = store.resolve(id)?;
    entry.manifest.pinned = pinned;
    store.rewrite_manifest(&entry.manifest)
}

/// The live database and the backup, attached read-only to one DuckDB: the check's view of
/// both, and how a query names a table in either.
struct Pair<'a> {
    database: &'a Path,
    backup_file: &'a Path,
    live: &'a Db,
    bak: &'a Db,
    backup_id: &'a str,
    live_alias: String,
    bak_alias: String,
}

impl<'a> Pair<'a> {
    fn new(
        database: &'a Path,
        backup_file: &'a Path,
        live: &'a Db,
        bak: &'a Db,
        backup_id: &'a str,
    ) -> Pair<'a> {
        Pair {
            database,
            backup_file,
            live,
            bak,
            backup_id,
            live_alias: live.alias().unwrap_or_default().to_owned(),
            bak_alias: bak.alias().unwrap_or_default().to_owned(),
        }
    }
    fn in_live(&self, t: &TableName) -> String {
        format!("{}.{}", duck::quote_ident(&self.live_alias), t.quoted())
    }
    fn in_bak(&self, t: &TableName) -> String {
        format!("{}.{}", duck::quote_ident(&self.bak_alias), t.quoted())
    }
    /// A failure reading the live database.
    fn live_err(&self, e: DuckError) -> Error {
        duck_err(self.database, e)
    }
    /// A failure reading the backup.
    fn bak_err(&self, e: &DuckError) -> Error {
        Error::VerificationFailed {
            path: self.backup_file.to_path_buf(),
            why: format!("DuckDB cannot read it: {e}"),
        }
    }
    fn refused(&self, why: String, hint: String) -> Error {
        refused(self.database, why, hint)
    }
    /// The hint that sends the operator to the whole-file restore.
    fn whole(&self) -> String {
        format!(
            "restore the whole database instead (`ducksafe restore {}`); nothing was changed",
            self.backup_id
        )
    }
}

/// Step 3: every refusal, reading only. Returns the tables in the order their rows go in
/// (referenced tables first).
fn check(
    pair: &Pair,
    entry: &Entry,
    names: &[TableName],
    replace_schema: bool,
) -> Result<Vec<TableOutcome>> {
    let m = &entry.manifest;
    let live_tables = pair.live.tables().map_err(|e| pair.live_err(e))?;
    let bak_tables = pair.bak.tables().map_err(|e| pair.bak_err(&e))?;
    let names = &spelled(names, &live_tables, &bak_tables);
    check_present(pair, names, &live_tables, &bak_tables)?;
    let live_fks = pair.live.foreign_keys().map_err(|e| pair.live_err(e))?;
    let bak_fks = pair.bak.foreign_keys().map_err(|e| pair.bak_err(&e))?;
    let version = pair.live.library_version().map_err(|e| pair.live_err(e))?;
    let no_table = || TableSchema {
        columns: Vec::new(),
        constraints: Vec::new(),
    };
    let mut plans = Vec::new();
    for n in names {
        let live_schema = pair
            .live
            .table_schema(n)
            .map_err(|e| pair.live_err(e))?
            .unwrap_or_else(no_table);
        let backup_schema = pair
            .bak
            .table_schema(n)
            .map_err(|e| pair.bak_err(&e))?
            .unwrap_or_else(no_table);
        let differs = live_schema != backup_schema;
        if differs && !replace_schema {
            return Err(pair.refused(
                format!(
                    "table `{}` has another definition in the database than in backup `{}`: {}",
                    n.display(),
                    m.id,
                    schema_differences(&live_schema, &backup_schema).join("; ")
                ),
                "add `--replace-schema` to recreate the table with the backup's definition (columns, types, defaults, constraints: what was added since is dropped with its data), or restore the whole database; nothing was changed".into(),
            ));
        }
        let referenced_by: Vec<&ForeignKey> =
            live_fks.iter().filter(|f| &f.referenced == n).collect();
        check_referenced(pair, n, &live_schema, &referenced_by, differs)?;
        check_references(pair, n, names, &live_tables, &bak_fks)?;
        let method = if differs {
            Method::Recreate
        } else if referenced_by.is_empty() {
            Method::ReplaceRows
        } else {
            Method::ChangedRows
        };
        let (fingerprint, source) = expected_fingerprint(pair, m, n, &version)?;
        plans.push(TableOutcome {
            table: n.display(),
            method,
            rows_before: pair.live.row_count(n).map_err(|e| pair.live_err(e))?,
            rows_after: fingerprint.rows,
            schema_replaced: differs,
            fingerprint,
            fingerprint_source: source.into(),
            fingerprint_matches: None,
            name: n.clone(),
            // The backup's `CREATE TABLE`, then its indexes and comments: a recreated table is
            // the backup's whole definition, its unique indexes enforced again.
            create_sql: if differs {
                let indexes = pair.bak.index_sql(n).map_err(|e| pair.bak_err(&e))?;
                let comments = pair.bak.comment_sql(n).map_err(|e| pair.bak_err(&e))?;
                pair.bak
                    .create_table_sql(n)
                    .map_err(|e| pair.bak_err(&e))?
                    .map(|c| {
                        std::iter::once(c)
                            .chain(indexes)
                            .chain(comments)
                            .collect::<Vec<_>>()
                            .join("\n")
                    })
            } else {
                None
            },
            live_schema,
            backup_schema,
        });
    }
    check_views(pair, &plans, &live_tables)?;
    Ok(insert_order(plans, &bak_fks))
}

/// The fingerprint table `n` must have once restored, and where it came from: the manifest's
/// when this DuckDB computed it (`hash` may change between versions) the way it is computed
/// now (a nested table's, recorded before those were hashed by structure, is not), else
/// computed from the backup.
fn expected_fingerprint(
    pair: &Pair,
    m: &crate::engine::manifest::Manifest,
    n: &TableName,
    version: &str,
) -> Result<(Fingerprint, &'static str)> {
    let recorded = m
        .tables
        .iter()
        .find(|t| t.schema == n.schema && t.name == n.name)
        .and_then(|t| t.fingerprint.clone())
        .filter(|_| m.duckdb_version == version);
    let recorded = match recorded {
        Some(f)
            if f.nested.is_none()
                && pair
                    .bak
                    .has_nested_columns(n)
                    .map_err(|e| pair.bak_err(&e))? =>
        {
            None
        }
        other => other,
    };
    Ok(match recorded {
        Some(f) => (f, "manifest"),
        None => (
            pair.bak.fingerprint(n).map_err(|e| pair.bak_err(&e))?,
            "backup",
        ),
    })
}

/// The names as the catalogs spell them ([`TableName::spelled_in`]), each once.
fn spelled(names: &[TableName], live: &[TableName], bak: &[TableName]) -> Vec<TableName> {
    let mut out: Vec<TableName> = Vec::new();
    for n in names {
        let name = n.spelled_in(bak.iter().chain(live));
        if !out.contains(&name) {
            out.push(name);
        }
    }
    out
}

/// Every table asked for is in the backup and in the database.
fn check_present(
    pair: &Pair,
    names: &[TableName],
    live_tables: &[TableName],
    bak_tables: &[TableName],
) -> Result<()> {
    let listed = |ts: &[TableName]| {
        ts.iter()
            .map(|t| format!("`{}`", t.display()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    for n in names {
        if !bak_tables.contains(n) {
            return Err(pair.refused(
                format!(
                    "table `{}` is not in backup `{}` (it has {})",
                    n.display(),
                    pair.backup_id,
                    listed(bak_tables)
                ),
                "name a table the backup has (`schema.table`, or `table` for schema `main`), or another backup (`ducksafe list`); nothing was changed".into(),
            ));
        }
        if !live_tables.contains(n) {
            return Err(pair.refused(
                format!(
                    "table `{}` is not in the database now: a table restore puts rows back into a table that exists",
                    n.display()
                ),
                format!(
                    "to get a dropped table back, restore the whole database (`ducksafe restore {}`: every other table goes back too), or create the table first; nothing was changed",
                    pair.backup_id
                ),
            ));
        }
    }
    Ok(())
}

/// Table `n` is referenced by the foreign keys `referenced_by`: its definition cannot be
/// replaced (DuckDB cannot drop it), and no referenced row may be deleted: DuckDB refuses that
/// even in the transaction that also restores the referencing table.
fn check_referenced(
    pair: &Pair,
    n: &TableName,
    live_schema: &TableSchema,
    referenced_by: &[&ForeignKey],
    differs: bool,
) -> Result<()> {
    if differs && !referenced_by.is_empty() {
        return Err(pair.refused(
            format!(
                "table `{}` cannot be recreated with the backup's definition: {} references it with a foreign key, and DuckDB cannot drop a referenced table",
                n.display(),
                referenced_by
                    .iter()
                    .map(|f| format!("`{}`", f.table.display()))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            pair.whole(),
        ));
    }
    for f in referenced_by {
        let keys = pairs(&f.referenced_columns, &f.columns, "t", "c");
        let n_refs = pair
            .live
            .query_u64(&format!(
                "SELECT count(*) FROM {} AS c WHERE EXISTS (SELECT 1 FROM {} AS t WHERE {keys} AND NOT EXISTS (SELECT 1 FROM {} AS b WHERE {}))",
                pair.in_live(&f.table),
                pair.in_live(n),
                pair.in_bak(n),
                same_row(live_schema)
            ))
            .map_err(|e| pair.live_err(e))?;
        if n_refs > 0 {
            return Err(pair.refused(
                format!(
                    "{n_refs} rows of `{}` reference rows of `{}` that backup `{}` changes or lacks: the foreign key would break, and DuckDB refuses to delete a referenced row even in the transaction that also restores `{}`",
                    f.table.display(),
                    n.display(),
                    pair.backup_id,
                    f.table.display()
                ),
                format!(
                    "restore the whole database instead (`ducksafe restore {}`), or delete or change those rows of `{}` first; nothing was changed",
                    pair.backup_id,
                    f.table.display()
                ),
            ));
        }
    }
    Ok(())
}

/// The backup's rows of table `n` must find what they reference after the restore: the
/// backup's rows of a table restored with it, else the database's.
fn check_references(
    pair: &Pair,
    n: &TableName,
    names: &[TableName],
    live_tables: &[TableName],
    bak_fks: &[ForeignKey],
) -> Result<()> {
    for f in bak_fks.iter().filter(|f| &f.table == n) {
        let parent = if names.contains(&f.referenced) {
            pair.in_bak(&f.referenced)
        } else if live_tables.contains(&f.referenced) {
            pair.in_live(&f.referenced)
        } else {
            return Err(pair.refused(
                format!(
                    "table `{}` references `{}` with a foreign key, and the database has no table `{}` now",
                    n.display(),
                    f.referenced.display(),
                    f.referenced.display()
                ),
                pair.whole(),
            ));
        };
        let not_null = f
            .columns
            .iter()
            .map(|c| format!("c.{} IS NOT NULL", duck::quote_ident(c)))
            .collect::<Vec<_>>()
            .join(" AND ");
        let keys = pairs(&f.referenced_columns, &f.columns, "p", "c");
        let orphans = pair
            .live
            .query_u64(&format!(
                "SELECT count(*) FROM {} AS c WHERE {not_null} AND NOT EXISTS (SELECT 1 FROM {parent} AS p WHERE {keys})",
                pair.in_bak(n)
            ))
            .map_err(|e| pair.live_err(e))?;
        if orphans > 0 {
            return Err(pair.refused(
                format!(
                    "{orphans} rows of `{}` in backup `{}` reference rows of `{}` that the database no longer has: the foreign key would break",
                    n.display(),
                    pair.backup_id,
                    f.referenced.display()
                ),
                format!(
                    "also restore table `{}` (add `--table {}`); nothing was changed",
                    f.referenced.display(),
                    f.referenced.display()
                ),
            ));
        }
    }
    Ok(())
}

/// Views: only a replaced definition can break one.
fn check_views(pair: &Pair, plans: &[TableOutcome], live_tables: &[TableName]) -> Result<()> {
    let replaced: Vec<TableName> = plans
        .iter()
        .filter(|p| p.schema_replaced)
        .map(|p| p.name.clone())
        .collect();
    if replaced.is_empty() {
        return Ok(());
    }
    let broken = views_broken(
        pair.live,
        &pair.live_alias,
        &pair.bak_alias,
        live_tables,
        &replaced,
    )
    .map_err(|e| pair.live_err(e))?;
    match broken.first() {
        None => Ok(()),
        Some((v, why)) => Err(pair.refused(
            format!(
                "view `{}` would break with the backup's definition of {}: {why}",
                v.display(),
                replaced
                    .iter()
                    .map(|t| format!("`{}`", t.display()))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            format!(
                "drop the view (and create it again after the restore, to fit the table), or restore the whole database (`ducksafe restore {}`); nothing was changed",
                pair.backup_id
            ),
        )),
    }
}

/// `b.c IS NOT DISTINCT FROM t.c AND …` over every column: row `t` has an equal row `b`.
fn same_row(schema: &TableSchema) -> String {
    schema
        .columns
        .iter()
        .map(|c| {
            let q = duck::quote_ident(&c.name);
            format!("b.{q} IS NOT DISTINCT FROM t.{q}")
        })
        .collect::<Vec<_>>()
        .join(" AND ")
}

/// `a.x = b.y AND …` over two column lists, quoted.
fn pairs(left: &[String], right: &[String], a: &str, b: &str) -> String {
    left.iter()
        .zip(right)
        .map(|(l, r)| {
            format!(
                "{a}.{} = {b}.{}",
                duck::quote_ident(l),
                duck::quote_ident(r)
            )
        })
        .collect::<Vec<_>>()
        .join(" AND ")
}

/// What differs between two definitions of a table, one phrase each.
pub fn schema_differences(live: &TableSchema, backup: &TableSchema) -> Vec<String> {
    let mut out = Vec::new();
    let describe = |c: &duck::ColumnDef| {
        let mut s = c.data_type.clone();
        if !c.nullable {
            s.push_str(" NOT NULL");
        }
        if let Some(d) = &c.default {
            s.push_str(if c.generated {
                " GENERATED AS "
            } else {
                " DEFAULT "
            });
            s.push_str(d);
        }
        s
    };
    for c in &live.columns {
        match backup.columns.iter().find(|b| b.name == c.name) {
            None => out.push(format!("column `{}` is new (not in the backup)", c.name)),
            Some(b) if b != c => out.push(format!(
                "column `{}` is {} now, {} in the backup",
                c.name,
                describe(c),
                describe(b)
            )),
            Some(_) => {}
        }
    }
    for b in &backup.columns {
        if !live.columns.iter().any(|c| c.name == b.name) {
            out.push(format!("column `{}` is only in the backup", b.name));
        }
    }
    let names = |s: &TableSchema| s.columns.iter().map(|c| c.name.clone()).collect::<Vec<_>>();
    if out.is_empty() && names(live) != names(backup) {
        out.push("the columns are in another order".into());
    }
    for c in &live.constraints {
        if !backup.constraints.contains(c) {
            out.push(format!("constraint `{c}` is new"));
        }
    }
    for c in &backup.constraints {
        if !live.constraints.contains(c) {
            out.push(format!("constraint `{c}` is only in the backup"));
        }
    }
    if out.is_empty() {
        out.push("the catalog describes them differently".into());
    }
    out
}

/// The tables ordered so that a table comes after those it references among them (a cycle
/// keeps the order asked).
fn insert_order(mut plans: Vec<TableOutcome>, fks: &[ForeignKey]) -> Vec<TableOutcome> {
    let mut ordered = Vec::with_capacity(plans.len());
    while !plans.is_empty() {
        let ready = plans
            .iter()
            .position(|p| {
                !fks.iter().any(|f| {
                    f.table == p.name
                        && f.referenced != p.name
                        && plans.iter().any(|q| q.name == f.referenced)
                })
            })
            .unwrap_or(0);
        ordered.push(plans.remove(ready));
    }
    ordered
}

/// The views of the live database that bind now and would not once `replaced` had the
/// backup's definition. Checked on copies of the catalog in memory (every table created with
/// no row, the replaced ones from the backup; then every view created again), so nothing of
/// either database is written or read beyond its catalog. A view that does not bind on the
/// copy of today's catalog either (it needs a macro, a type) is not judged here; the
/// transaction binds every view again before it commits.
fn views_broken(
    live: &Db,
    live_alias: &str,
    bak_alias: &str,
    tables: &[TableName],
    replaced: &[TableName],
) -> std::result::Result<Vec<(TableName, String)>, DuckError> {
    let views = live.views()?;
    if views.is_empty() {
        return Ok(Vec::new());
    }
    let base = failing_views(live, live_alias, bak_alias, tables, &[], &views)?;
    let after = failing_views(live, live_alias, bak_alias, tables, replaced, &views)?;
    Ok(after
        .into_iter()
        .filter(|(v, _)| !base.iter().any(|(b, _)| b == v))
        .collect())
}

/// Builds one copy of the catalog (see [`views_broken`]) and returns the views that cannot be
/// created on it, with DuckDB's reason.
fn failing_views(
    live: &Db,
    live_alias: &str,
    bak_alias: &str,
    tables: &[TableName],
    replaced: &[TableName],
    views: &[duck::ViewDef],
) -> std::result::Result<Vec<(TableName, String)>, DuckError> {
    static SCRATCH: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let q = duck::quote_ident;
    let scratch = format!(
        "ducksafe_scratch_{}",
        SCRATCH.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    live.execute_batch(&format!("ATTACH ':memory:' AS {scratch}"))?;
    let schemas: BTreeSet<&str> = tables
        .iter()
        .map(|t| t.schema.as_str())
        .chain(views.iter().map(|v| v.name.schema.as_str()))
        .collect();
    let result = (|| {
        for s in schemas {
            live.execute_batch(&format!("CREATE SCHEMA IF NOT EXISTS {scratch}.{}", q(s)))?;
        }
        for t in tables {
            let from = if replaced.contains(t) {
                bak_alias
            } else {
                live_alias
            };
            // A table whose copy cannot be made (a type of its database's own) is left out:
            // the views that need it fail on both copies and are not judged.
            let _ = live.execute_batch(&format!(
                "CREATE TABLE {scratch}.{} AS SELECT * FROM {}.{} LIMIT 0",
                t.quoted(),
                q(from),
                t.quoted()
            ));
        }
        live.execute_batch(&format!("USE {scratch}"))?;
        let mut pending: Vec<(&duck::ViewDef, String)> =
            views.iter().map(|v| (v, String::new())).collect();
        // Views on views: again while one more could be created.
        loop {
            let before = pending.len();
            let mut still = Vec::new();
            for (v, _) in pending {
                match live.execute_batch(&v.sql) {
                    Ok(()) => {}
                    Err(e) => still.push((v, e.to_string())),
                }
            }
            pending = still;
            if pending.is_empty() || pending.len() == before {
                break;
            }
        }
        Ok(pending
            .into_iter()
            .map(|(v, why)| (v.name.clone(), why))
            .collect())
    })();
    let _ = live.execute_batch(&format!("USE {}; DETACH {scratch}", q(live_alias)));
    result
}

/// The statements of the transaction, in order (see the module documentation); the caller
/// rolls back on an error, which says why in words for the operator.
fn put_back(db: &Db, bak: &str, plans: &mut [TableOutcome]) -> std::result::Result<(), String> {
    let in_bak = |t: &TableName| format!("{}.{}", duck::quote_ident(bak), t.quoted());
    // The definitions checked are still the database's: nothing changed since.
    for p in plans.iter() {
        let now = db.table_schema(&p.name).map_err(|e| e.to_string())?;
        if now.as_ref() != Some(&p.live_schema) {
            return Err(format!(
                "table `{}` changed since it was checked (another process wrote the database meanwhile)",
                p.table
            ));
        }
    }
    let views = db.views().map_err(|e| e.to_string())?;
    let bound: Vec<&duck::ViewDef> = views.iter().filter(|v| db.binds(&v.name).is_ok()).collect();
    // Deletes: tables that reference others first.
    for p in plans.iter().rev() {
        let t = p.name.quoted();
        let sql = match p.method {
            Method::ReplaceRows => format!("DELETE FROM {t}"),
            Method::Recreate => format!("DROP TABLE {t}"),
            Method::ChangedRows => format!(
                "DELETE FROM {t} AS t WHERE NOT EXISTS (SELECT 1 FROM {} AS b WHERE {})",
                in_bak(&p.name),
                same_row(&p.live_schema)
            ),
        };
        db.execute_batch(&sql)
            .map_err(|e| format!("`{}`: {e}", p.table))?;
    }
    // Inserts: referenced tables first.
    for p in plans.iter() {
        let t = p.name.quoted();
        if let Some(create) = &p.create_sql {
            // DuckDB keeps the statement without the database's name: it is created in
            // the current one, the live database.
            db.execute_batch(create)
                .map_err(|e| format!("recreating `{}`: {e}", p.table))?;
        }
        let cols = p
            .backup_schema
            .columns
            .iter()
            .filter(|c| !c.generated)
            .map(|c| duck::quote_ident(&c.name))
            .collect::<Vec<_>>()
            .join(", ");
        let mut sql = format!(
            "INSERT INTO {t} ({cols}) SELECT {cols} FROM {}",
            in_bak(&p.name)
        );
        if p.method == Method::ChangedRows {
            let _ = write!(sql, " EXCEPT ALL SELECT {cols} FROM {t}");
        }
        db.execute_batch(&sql)
            .map_err(|e| format!("`{}`: {e}", p.table))?;
        failpoint::hit("restore_table.inserted");
    }
    for v in bound {
        db.binds(&v.name).map_err(|e| {
            format!(
                "view `{}` no longer binds after the restore: {e}",
                v.name.display()
            )
        })?;
    }
    for p in plans.iter_mut() {
        let got = db.fingerprint(&p.name).map_err(|e| e.to_string())?;
        p.fingerprint_matches = Some(got == p.fingerprint);
        if got != p.fingerprint {
            return Err(format!(
                "table `{}` does not match the backup after the restore: {} rows with fingerprint {}/{}, the backup's ({}) has {} rows with {}/{}",
                p.table,
                got.rows,
                got.sum_hash.as_deref().unwrap_or("null"),
                got.xor_hash.map_or_else(|| "null".into(), |x| x.to_string()),
                p.fingerprint_source,
                p.fingerprint.rows,
                p.fingerprint.sum_hash.as_deref().unwrap_or("null"),
                p.fingerprint.xor_hash.map_or_else(|| "null".into(), |x| x.to_string()),
            ));
        }
    }
    Ok(())
}

/// Step 5: the one transaction. Every failure before its COMMIT rolls it back. An error says
/// whether the tables were committed (only a failure to close after the COMMIT).
fn transact(
    live_path: &Path,
    backup_copy: &Path,
    mut plans: Vec<TableOutcome>,
    limits: &duck::Limits,
    undo: &Undo,
) -> std::result::Result<Vec<TableOutcome>, (Error, bool)> {
    let nothing = |why: String| {
        (
            Error::RestoreFailed {
                database: live_path.to_path_buf(),
                why: format!(
                    "{why}; the transaction was rolled back: no table was restored, the database is as it was (its undo backup `{}` was taken before)",
                    undo.backup_id
                ),
            },
            false,
        )
    };
    let locked_or = |e: DuckError| match e {
        DuckError::Locked { pid, holder } => (
            Error::DatabaseLocked {
                path: live_path.to_path_buf(),
                pid,
                holder,
            },
            false,
        ),
        other => nothing(format!(
            "DuckDB cannot open the database read-write: {other}"
        )),
    };
    duck::check_header(live_path).map_err(&locked_or)?;
    let db = Db::open_read_write(live_path, limits).map_err(&locked_or)?;
    let bak = db
        .attach_other(backup_copy)
        .map_err(|e| nothing(format!("DuckDB cannot attach the staged backup: {e}")))?;
    db.execute_batch("BEGIN TRANSACTION")
        .map_err(|e| nothing(e.to_string()))?;
    let work = put_back(&db, &bak, &mut plans);
    if let Err(why) = work {
        let _ = db.execute_batch("ROLLBACK");
        return Err(nothing(why));
    }
    db.execute_batch("COMMIT").map_err(|e| {
        let _ = db.execute_batch("ROLLBACK");
        nothing(format!("the COMMIT failed: {e}"))
    })?;
    failpoint::hit("restore_table.committed");
    crate::timing::phase("table restore: rows put back, views and fingerprints checked, committed");
    let closed = db.detach_other(&bak).and_then(|()| db.close());
    closed.map_err(|e| {
        (
            Error::RestoreFailed {
                database: live_path.to_path_buf(),
                why: format!(
                    "the tables WERE restored (committed), but DuckDB failed while closing the database ({e}); to undo: {}",
                    undo.command
                ),
            },
            true,
        )
    })?;
    Ok(plans)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_are_schema_dot_table_or_main() {
        let t = |s: &str| parse_name(s).map(|t| (t.schema, t.name)).ok();
        assert_eq!(t("employees"), Some(("main".into(), "employees".into())));
        assert_eq!(t("hr.employees"), Some(("hr".into(), "employees".into())));
        assert_eq!(
            t(r#""my.schema"."t 1""#),
            Some(("my.schema".into(), "t 1".into()))
        );
        assert_eq!(t(r#""a""b""#), Some(("main".into(), "a\"b".into())));
        for bad in ["", ".", "a.", ".b", "a.b.c", "\"open"] {
            assert_eq!(t(bad), None, "{bad}");
        }
    }
}
