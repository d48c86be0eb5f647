//! What changed between two states of the database: `ducksafe diff [FROM] [TO]`, and the
//! post_run's summary of what a run changed.
//!
//! A state is the live database (`current`, read under the same shared lock a backup takes), a
//! stored backup (`latest` or an id), or any DuckDB file named by its path. Each is opened
//! ([`Side`]), read into a [`State`] (tables with their columns, rows and fingerprints; views
//! with their SQL), and two states are compared by [`compare`], which is pure.
//!
//! Invariants:
//! - Nothing is written but a packed backup's staged rebuild beside the database (removed on
//!   every path, locked while it is used, as a restore's is); every database is attached
//!   `READ_ONLY`.
//! - A backup's bytes are proven to be its manifest's (SHA-256, the size; a packed one rebuilt
//!   chunk by chunk) before anything is read from them, so its manifest's row counts and
//!   fingerprints can stand for a scan: they are used when DuckDB's version is the one that
//!   computed them, and computed (one query per table) otherwise, and for every other state.
//! - Two tables are the same when their columns (names, types, nullability, defaults) and
//!   their fingerprints are equal; a table whose content cannot be compared (a manifest
//!   without fingerprints, in a post_run) says so (`content_changed: null`), never "unchanged".

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::database::{self, Owner};
use super::identity;
use super::lock::SourceLock;
use super::manifest::{Manifest, Storage};
use super::space;
use super::staging::{self, Staged};
use super::store::{Entry, Store};
use crate::config::Settings;
use crate::duck::{
    self, ColumnDef, Db, DuckError, Fingerprint, Instance, Limits, TableName, ViewDef,
};
use crate::error::{Error, Result};
use crate::protocol::{ChangeKind, ChangeSummary, TableChangeSummary};

/// Room left beside a staged rebuild.
const STAGING_SLACK: u64 = 1 << 20;

/// What a FROM or TO argument names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// The live database (`current`, or `DB_PATH` itself).
    Current,
    /// A stored backup: `latest`, an id, or a path inside the backup directory.
    Backup(String),
    /// Any other DuckDB file.
    File(PathBuf),
}

impl Selector {
    /// Reads an argument: `current`; a path to an existing file (the database itself, a file
    /// in the backup directory, or another file); else a backup id or `latest`.
    pub fn parse(arg: &str, settings: &Settings) -> Selector {
        if arg == "current" {
            return Selector::Current;
        }
        let p = Path::new(arg);
        // A path: it has a folder, or it is a file here (a bare name that is not one is a
        // backup's file name, as `restore` takes it).
        let is_path = arg.contains('/') || (arg.ends_with(".duckdb") && p.is_file());
        if !is_path {
            return Selector::Backup(arg.to_owned());
        }
        if database::same(p, &settings.db_path) {
            return Selector::Current;
        }
        let in_store = std::fs::canonicalize(crate::files::parent_of(p))
            .ok()
            .zip(std::fs::canonicalize(&settings.backup_dir).ok())
            .is_some_and(|(a, b)| a == b);
        if in_store {
            Selector::Backup(arg.to_owned())
        } else {
            Selector::File(p.to_path_buf())
        }
    }
}

/// One state of the database, open for reading: what DuckDB attaches, and what keeps it as
/// it was meanwhile (the live database's shared lock, a staged rebuild).
pub struct Side<'a> {
    /// For people: `current`, `backup simulation_20250818_143022`, `file x.duckdb`.
    pub label: String,
    /// The backup's id, for a backup.
    pub backup_id: Option<String>,
    path: PathBuf,
    manifest: Option<Manifest>,
    /// Whether DuckDB's damage found in it is the live database's own.
    live: bool,
    _lock: Option<SourceLock>,
    _staged: Option<Staged<'a>>,
}

/// The backup directory, opened to read one of its backups.
fn open_store(settings: &Settings) -> Result<Store> {
    let store = Store::open(&settings.backup_dir, false)?;
    let owner: Owner = identity::check(store.dir(), settings)?;
    Ok(store.owned_by(owner))
}

/// Opens the states `selectors` name, in order; `stage` gives a staging path per side (for a
/// packed backup, rebuilt there). The live database is locked first, so that a writer holding
/// it is said before anything is rebuilt.
pub fn open<'a>(
    settings: &Settings,
    selectors: &[Selector],
    stage: &'a [PathBuf],
) -> Result<Vec<Side<'a>>> {
    let db = database::path(settings)?;
    let mut store = None;
    let mut sides = Vec::with_capacity(selectors.len());
    for (sel, staged_at) in selectors.iter().zip(stage) {
        let side = match sel {
            Selector::Current => {
                database::check(settings)?;
                Side {
                    label: "current".into(),
                    backup_id: None,
                    path: db.clone(),
                    manifest: None,
                    live: true,
                    _lock: Some(SourceLock::acquire(&db)?),
                    _staged: None,
                }
            }
            Selector::File(p) => {
                let lock = SourceLock::acquire(p).map_err(|e| match e {
                    Error::DatabaseNotFound { path } => Error::CompareFileNotFound { path },
                    other => other,
                })?;
                duck::check_header(p).map_err(|e| Error::CompareFileInvalid {
                    path: p.clone(),
                    why: e.to_string(),
                })?;
                Side {
                    label: format!("file {}", p.display()),
                    backup_id: None,
                    path: p.clone(),
                    manifest: None,
                    live: false,
                    _lock: Some(lock),
                    _staged: None,
                }
            }
            Selector::Backup(id) => {
                if store.is_none() {
                    store = Some(open_store(settings)?);
                }
                let Some(store) = store.as_ref() else {
                    return Err(Error::Internal(
                        "the backup directory was not opened".into(),
                    ));
                };
                let entry = store.resolve(id)?;
                open_backup(store, &entry, &db, staged_at)?
            }
        };
        sides.push(side);
    }
    Ok(sides)
}

/// A stored backup, its bytes proven to be its manifest's: a plain one hashed in place, a
/// packed one rebuilt beside the database (every chunk and the whole SHA-256 checked).
fn open_backup<'a>(
    store: &Store,
    entry: &Entry,
    db: &Path,
    staged_at: &'a Path,
) -> Result<Side<'a>> {
    let m = &entry.manifest;
    let (path, staged) = if m.storage == Storage::Plain {
        let path = store.backup_path(&entry.id);
        staging::check_in_place(&path, m.bytes, &m.sha256)?;
        (path, None)
    } else {
        // A diff or restore killed before it removed its staged copy left it here: no process
        // holds it any more, so it goes before a new one takes the room.
        for line in staging::sweep(db, false) {
            tracing::info!("{line}");
        }
        space::check(crate::files::parent_of(staged_at), m.bytes, STAGING_SLACK).map_err(|e| {
            match e {
                Error::InsufficientSpace {
                    dir,
                    available,
                    required,
                } => Error::NoRoomToCompare {
                    id: entry.id.clone(),
                    dir,
                    available,
                    required,
                },
                other => other,
            }
        })?;
        let inv = store.inventory()?;
        let staged = Staged::fill(staged_at, |out| {
            store.rebuild_into(&inv, entry, out, staged_at).map(drop)
        })?;
        (staged_at.to_path_buf(), Some(staged))
    };
    Ok(Side {
        label: format!("backup {}", entry.id),
        backup_id: Some(entry.id.clone()),
        path,
        manifest: Some(m.clone()),
        live: false,
        _lock: None,
        _staged: staged,
    })
}

/// Where a side's packed backup would be rebuilt: beside the database, under a restore's
/// staging name (so that a crashed diff's copy is swept like a crashed restore's).
pub fn staging_paths(settings: &Settings, n: usize) -> Vec<PathBuf> {
    let db = database::resolve(&settings.db_path);
    (0..n)
        .map(|i| staging::path_for(&db, &format!("diff{i}")))
        .collect()
}

/// The failure DuckDB's `e` is, reading `side`.
fn duck_error(side: &Side<'_>, e: DuckError) -> Error {
    let path = side.path.clone();
    match e {
        DuckError::Locked { pid, holder } => Error::DatabaseLocked { path, pid, holder },
        DuckError::Corrupt(why) if side.live => Error::DatabaseDamaged {
            path,
            why,
            restore: None,
        },
        DuckError::Corrupt(why) if side.backup_id.is_some() => {
            Error::VerificationFailed { path, why }
        }
        other if !side.live && side.backup_id.is_none() => Error::CompareFileInvalid {
            path,
            why: other.to_string(),
        },
        other => Error::DatabaseInvalid {
            path,
            why: other.to_string(),
        },
    }
}

/// A table in one state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableState {
    /// `None` when unknown (a manifest records no columns).
    pub columns: Option<Vec<ColumnDef>>,
    pub rows: Option<u64>,
    pub fingerprint: Option<Fingerprint>,
}

/// What one state holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct State {
    pub tables: BTreeMap<TableName, TableState>,
    /// `None` when unknown (a manifest counts views only).
    pub views: Option<BTreeMap<TableName, String>>,
    /// Sequences, macros and indexes by kind and name, with their SQL; `None` when unknown
    /// (a manifest only counts sequences).
    pub others: Option<BTreeMap<(&'static str, TableName), String>>,
}

/// How one table or view differs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    /// `table`, `view`, `sequence`, `macro` or `index`.
    pub kind: &'static str,
    /// `schema.name`.
    pub name: String,
    pub change: ChangeKind,
    /// The columns that differ, side by side (empty when the columns are equal or unknown).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub columns: Vec<ColumnChange>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rows_before: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rows_after: Option<u64>,
    /// Whether the rows differ (fingerprints); null when they could not be compared.
    pub content_changed: Option<bool>,
}

/// One column that differs: its definition before and after (`None`: not there).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ColumnChange {
    pub column: String,
    pub before: Option<String>,
    pub after: Option<String>,
}

/// A column's definition for people: `DOUBLE`, `INTEGER NOT NULL DEFAULT 0`.
fn definition(c: &ColumnDef) -> String {
    let mut s = c.data_type.clone();
    if !c.nullable {
        s.push_str(" NOT NULL");
    }
    if let Some(d) = &c.default {
        s.push_str(" DEFAULT ");
        s.push_str(d);
    }
    s
}

/// The columns that differ between `a` and `b`: those of `b` in its order, then those only
/// `a` has.
fn column_changes(a: &[ColumnDef], b: &[ColumnDef]) -> Vec<ColumnChange> {
    let mut out = Vec::new();
    for cb in b {
        let before = a.iter().find(|ca| ca.name == cb.name).map(definition);
        let after = Some(definition(cb));
        if before != after {
            out.push(ColumnChange {
                column: cb.name.clone(),
                before,
                after,
            });
        }
    }
    for ca in a {
        if !b.iter().any(|cb| cb.name == ca.name) {
            out.push(ColumnChange {
                column: ca.name.clone(),
                before: Some(definition(ca)),
                after: None,
            });
        }
    }
    out
}

/// Every table and view of `before` and `after`, compared; sorted by kind, then name.
/// Unchanged ones are in the answer too ([`ChangeKind::Unchanged`]): the caller counts them.
pub fn compare(before: &State, after: &State) -> Vec<Change> {
    let mut out = Vec::new();
    let names: std::collections::BTreeSet<&TableName> =
        before.tables.keys().chain(after.tables.keys()).collect();
    for name in names {
        let (b, a) = (before.tables.get(name), after.tables.get(name));
        let change = match (b, a) {
            (None, Some(a)) => Change {
                kind: "table",
                name: name.display(),
                change: ChangeKind::Added,
                columns: Vec::new(),
                rows_before: None,
                rows_after: a.rows,
                content_changed: Some(true),
            },
            (Some(b), None) => Change {
                kind: "table",
                name: name.display(),
                change: ChangeKind::Dropped,
                columns: Vec::new(),
                rows_before: b.rows,
                rows_after: None,
                content_changed: Some(true),
            },
            (Some(b), Some(a)) => {
                let columns = match (&b.columns, &a.columns) {
                    (Some(cb), Some(ca)) => column_changes(cb, ca),
                    _ => Vec::new(),
                };
                let content_changed = match (&b.fingerprint, &a.fingerprint) {
                    (Some(fb), Some(fa)) if fb.comparable(fa) => Some(fb != fa),
                    // Without fingerprints, a different count still proves a change.
                    _ => match (b.rows, a.rows) {
                        (Some(rb), Some(ra)) if rb != ra => Some(true),
                        _ => None,
                    },
                };
                let change = if !columns.is_empty() {
                    ChangeKind::SchemaChanged
                } else if content_changed == Some(false) {
                    ChangeKind::Unchanged
                } else if content_changed == Some(true) {
                    ChangeKind::Changed
                } else {
                    ChangeKind::Unknown
                };
                Change {
                    kind: "table",
                    name: name.display(),
                    change,
                    columns,
                    rows_before: b.rows,
                    rows_after: a.rows,
                    content_changed,
                }
            }
            (None, None) => continue,
        };
        out.push(change);
    }
    let keyed = |m: &Option<BTreeMap<TableName, String>>| {
        m.as_ref().map(|m| {
            m.iter()
                .map(|(n, sql)| (("view", n.clone()), sql.clone()))
                .collect::<BTreeMap<_, _>>()
        })
    };
    for (b, a) in [
        (keyed(&before.views), keyed(&after.views)),
        (before.others.clone(), after.others.clone()),
    ] {
        if let (Some(b), Some(a)) = (b, a) {
            out.extend(definitions_compared(&b, &a));
        }
    }
    out
}

/// Views, sequences, macros or indexes compared by their SQL, by kind and name.
fn definitions_compared(
    before: &BTreeMap<(&'static str, TableName), String>,
    after: &BTreeMap<(&'static str, TableName), String>,
) -> Vec<Change> {
    let keys: std::collections::BTreeSet<&(&'static str, TableName)> =
        before.keys().chain(after.keys()).collect();
    keys.into_iter()
        .map(|key| {
            let change = match (before.get(key), after.get(key)) {
                (None, _) => ChangeKind::Added,
                (_, None) => ChangeKind::Dropped,
                (Some(b), Some(a)) if b == a => ChangeKind::Unchanged,
                _ => ChangeKind::Changed,
            };
            Change {
                kind: key.0,
                name: key.1.display(),
                change,
                columns: Vec::new(),
                rows_before: None,
                rows_after: None,
                content_changed: None,
            }
        })
        .collect()
}

/// The two states, attached to one DuckDB instance.
pub struct Attached {
    pub before: Db,
    pub after: Db,
    _duck: Instance,
    _spill: Option<SpillDir>,
}

/// A private folder beside the database where DuckDB spills what does not fit in its memory
/// limit, removed with what is in it when the diff ends.
struct SpillDir(PathBuf);

impl Drop for SpillDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What [`SpillDir`]s are called beside the database (`files::temp_sibling` adds the PID).
const SPILL: &str = "diff-spill";

/// Removes this database's spill folders whose diff is gone (killed: no destructor ran). The
/// PID in the name says whose it is; a folder of a live process is left alone.
fn sweep_spills(db: &Path) {
    let prefix = format!("{}{SPILL}-", crate::files::TEMP_PREFIX);
    let suffix = format!("-{}", crate::files::file_name(db));
    let Ok(entries) = std::fs::read_dir(crate::files::parent_of(db)) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(&prefix) else {
            continue;
        };
        if !rest.ends_with(&suffix) {
            continue;
        }
        let pid: Option<i32> = rest.split('-').next().and_then(|p| p.parse().ok());
        let gone = pid.is_some_and(|p| crate::files::process_start(p).is_none());
        if gone && e.file_type().is_ok_and(|t| t.is_dir()) {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// Attaches both sides read-only to one instance, with `limits` (the scan pool when no limit
/// is configured).
pub fn attach(settings: &Settings, sides: &[Side<'_>; 2], limits: &Limits) -> Result<Attached> {
    let pool = limits
        .scan_pool(&sides[1].path)
        .or_else(|| limits.scan_pool(&sides[0].path));
    let duck =
        Instance::start(pool.as_ref().unwrap_or(limits)).map_err(|e| duck_error(&sides[0], e))?;
    // Beside the database, private, never the current directory; none when that folder is
    // not writable (a comparison too large for memory then fails, saying so).
    let db = database::resolve(&settings.db_path);
    sweep_spills(&db);
    let spill_at = crate::files::temp_sibling(&db, SPILL);
    let spill = crate::files::create_private_dir(&spill_at)
        .ok()
        .map(|()| SpillDir(spill_at));
    duck.set_spill_dir(spill.as_ref().map(|s| s.0.as_path()))
        .map_err(|e| duck_error(&sides[0], e))?;
    let (before, _) = duck
        .attach_read_only(&sides[0].path)
        .map_err(|e| duck_error(&sides[0], e))?;
    let (after, _) = duck
        .attach_read_only(&sides[1].path)
        .map_err(|e| duck_error(&sides[1], e))?;
    Ok(Attached {
        before,
        after,
        _duck: duck,
        _spill: spill,
    })
}

/// Reads a side's catalog: its tables with their columns, and its views with their SQL; no
/// rows yet ([`fingerprints`] adds them).
pub fn read_catalog(side: &Side<'_>, db: &Db) -> Result<State> {
    let err = |e| duck_error(side, e);
    let mut state = State::default();
    for t in db.tables().map_err(err)? {
        let columns = db
            .table_schema(&t)
            .map_err(err)?
            .map(|s| s.columns)
            .unwrap_or_default();
        state.tables.insert(
            t,
            TableState {
                columns: Some(columns),
                rows: None,
                fingerprint: None,
            },
        );
    }
    let views: Vec<ViewDef> = db.views().map_err(err)?;
    state.views = Some(views.into_iter().map(|v| (v.name, v.sql)).collect());
    let others = db.definitions().map_err(err)?;
    state.others = Some(
        others
            .into_iter()
            .map(|d| ((d.kind, d.name), d.sql))
            .collect(),
    );
    Ok(state)
}

/// Gives every table of `state` its rows and fingerprint: from the side's manifest when
/// DuckDB's version is the one that computed them, else one query per table. Returns how many
/// tables were scanned.
pub fn fingerprints(side: &Side<'_>, db: &Db, state: &mut State) -> Result<usize> {
    let version = db.library_version().map_err(|e| duck_error(side, e))?;
    let recorded: BTreeMap<TableName, Fingerprint> = side
        .manifest
        .as_ref()
        .filter(|m| m.duckdb_version == version)
        .map(|m| {
            m.tables
                .iter()
                .filter_map(|t| {
                    t.fingerprint.clone().map(|f| {
                        (
                            TableName {
                                schema: t.schema.clone(),
                                name: t.name.clone(),
                            },
                            f,
                        )
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    let mut scanned = 0;
    for (t, entry) in &mut state.tables {
        // A fingerprint recorded before nested columns were hashed by structure is read
        // again when the table has one.
        let recorded = match recorded.get(t) {
            Some(f)
                if f.nested.is_none()
                    && db.has_nested_columns(t).map_err(|e| duck_error(side, e))? =>
            {
                None
            }
            other => other,
        };
        let fingerprint = if let Some(f) = recorded {
            f.clone()
        } else {
            scanned += 1;
            let _shown = crate::progress::step(&format!("reading {}", t.display()), None);
            db.fingerprint(t).map_err(|e| {
                duck_error(
                    side,
                    e.map_message(|m| format!("table `{}`: {m}", t.display())),
                )
            })?
        };
        entry.rows = Some(fingerprint.rows);
        entry.fingerprint = Some(fingerprint);
    }
    Ok(scanned)
}

/// `schema.name` or `name` (in `main`) as a table name; an empty schema or name is a usage
/// error.
pub fn table_name(arg: &str) -> Result<TableName> {
    TableName::parse(arg).ok_or_else(|| {
        Error::Usage(format!(
            "`--rows` takes a table as `TABLE` or `SCHEMA.TABLE` (double-quote a part that holds a dot), got `{arg}`"
        ))
    })
}

/// The rows of `table` that differ between the two attached states: matched on the primary
/// key when both states have the same one, else as whole rows. Compared on the columns both
/// states have.
pub fn rows(
    sides: &[Side<'_>; 2],
    at: &Attached,
    before: &State,
    after: &State,
    table: &TableName,
    limit: u64,
) -> Result<duck::RowDiff> {
    let (Some(b), Some(a)) = (before.tables.get(table), after.tables.get(table)) else {
        let missing: Vec<&str> = [(before, &sides[0]), (after, &sides[1])]
            .iter()
            .filter(|(s, _)| !s.tables.contains_key(table))
            .map(|(_, side)| side.label.as_str())
            .collect();
        return Err(Error::TableNotFound {
            table: table.display(),
            missing_in: missing.join(" and "),
        });
    };
    let (cb, ca) = (
        b.columns.clone().unwrap_or_default(),
        a.columns.clone().unwrap_or_default(),
    );
    let columns: Vec<(String, bool)> = ca
        .iter()
        .filter_map(|c| {
            cb.iter()
                .find(|o| o.name == c.name)
                .map(|o| (c.name.clone(), o.data_type == c.data_type))
        })
        .collect();
    let key_b = at
        .before
        .primary_key(table)
        .map_err(|e| duck_error(&sides[0], e))?;
    let key_a = at
        .after
        .primary_key(table)
        .map_err(|e| duck_error(&sides[1], e))?;
    let key = if key_a == key_b && key_a.iter().all(|k| columns.iter().any(|(c, _)| c == k)) {
        key_a
    } else {
        Vec::new()
    };
    at.before
        .diff_rows(&at.after, table, &columns, &key, limit)
        .map_err(|e| duck_error(&sides[1], e))
}

/// The post_run's summary: the live database against the backup's manifest (its row counts
/// and fingerprints), one query per table of the database. Views are not compared (a manifest
/// counts them only), and a manifest without fingerprints gives row counts only.
pub fn summary(settings: &Settings, backup: &Manifest, limits: &Limits) -> Result<ChangeSummary> {
    let started = std::time::Instant::now();
    let db_path = database::path(settings)?;
    database::check(settings)?;
    let lock = SourceLock::acquire(&db_path)?;
    let side = Side {
        label: "current".into(),
        backup_id: None,
        path: db_path.clone(),
        manifest: None,
        live: true,
        _lock: None,
        _staged: None,
    };
    let pool = limits.scan_pool(&db_path);
    let duck =
        Instance::start(pool.as_ref().unwrap_or(limits)).map_err(|e| duck_error(&side, e))?;
    let (db, _) = duck
        .attach_read_only(&db_path)
        .map_err(|e| duck_error(&side, e))?;
    let version = db.library_version().map_err(|e| duck_error(&side, e))?;
    let comparable = backup.duckdb_version == version;
    let mut before = State::default();
    for t in &backup.tables {
        before.tables.insert(
            TableName {
                schema: t.schema.clone(),
                name: t.name.clone(),
            },
            TableState {
                columns: None,
                rows: t.rows.or(t.fingerprint.as_ref().map(|f| f.rows)),
                fingerprint: t.fingerprint.clone().filter(|_| comparable),
            },
        );
    }
    let mut after = State::default();
    for t in db.tables().map_err(|e| duck_error(&side, e))? {
        let f = db.fingerprint(&t).map_err(|e| duck_error(&side, e))?;
        after.tables.insert(
            t,
            TableState {
                columns: None,
                rows: Some(f.rows),
                fingerprint: Some(f),
            },
        );
    }
    drop(db);
    drop(lock);
    let changes = compare(&before, &after);
    Ok(summarize(&backup.id, &changes, started.elapsed()))
}

/// Whether a post_run reports the run's changes: `REPORT_CHANGES` when it is set, else
/// whether the database (`bytes`, its WAL included) is at most `REPORT_CHANGES_MAX_BYTES`.
pub fn wanted(report_changes: Option<bool>, max_bytes: u64, bytes: u64) -> bool {
    report_changes.unwrap_or(bytes <= max_bytes)
}

/// The size of the database's main file and its WAL files.
pub fn database_bytes(db: &Path) -> u64 {
    std::iter::once(db.to_path_buf())
        .chain(duck::wal_paths(db))
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum()
}

/// The post_run's summary of what the run changed, against the backup `selector` names, when
/// the configuration asks for it (`None` when it does not); a failure is the caller's warning.
pub fn after_run(settings: &Settings, selector: &str) -> Result<Option<ChangeSummary>> {
    let db = database::resolve(&settings.db_path);
    let c = &settings.config;
    if !wanted(
        c.report_changes,
        c.report_changes_max_bytes,
        database_bytes(&db),
    ) {
        return Ok(None);
    }
    let store = open_store(settings)?;
    let entry = store.resolve(selector)?;
    let limits = database::limits(settings);
    summary(settings, &entry.manifest, &limits).map(Some)
}

/// The protocol's short form of `changes`.
pub fn summarize(backup_id: &str, changes: &[Change], took: std::time::Duration) -> ChangeSummary {
    let tables: Vec<TableChangeSummary> = changes
        .iter()
        .filter(|c| c.kind == "table" && c.change != ChangeKind::Unchanged)
        .map(|c| TableChangeSummary {
            table: c.name.clone(),
            change: c.change,
            rows_before: c.rows_before,
            rows_after: c.rows_after,
            rows_delta: delta(c.rows_before, c.rows_after),
        })
        .collect();
    let unchanged = changes
        .iter()
        .filter(|c| c.kind == "table" && c.change == ChangeKind::Unchanged)
        .count() as u64;
    ChangeSummary {
        against_backup: backup_id.to_owned(),
        tables_changed: tables.len() as u64,
        tables_unchanged: unchanged,
        tables,
        duration_ms: u64::try_from(took.as_millis()).unwrap_or(u64::MAX),
    }
}

/// `after - before`, counting a missing side as no rows.
pub fn delta(before: Option<u64>, after: Option<u64>) -> i64 {
    let b = i64::try_from(before.unwrap_or(0)).unwrap_or(i64::MAX);
    let a = i64::try_from(after.unwrap_or(0)).unwrap_or(i64::MAX);
    a.saturating_sub(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(name: &str, ty: &str) -> ColumnDef {
        ColumnDef {
            name: name.into(),
            data_type: ty.into(),
            nullable: true,
            default: None,
            generated: false,
        }
    }

    fn fp(rows: u64, x: u64) -> Fingerprint {
        Fingerprint {
            rows,
            sum_hash: Some(x.to_string()),
            xor_hash: Some(x),
            nested: Some(false),
        }
    }

    fn table(cols: &[ColumnDef], rows: u64, x: u64) -> TableState {
        TableState {
            columns: Some(cols.to_vec()),
            rows: Some(rows),
            fingerprint: Some(fp(rows, x)),
        }
    }

    fn t(name: &str) -> TableName {
        table_name(name).unwrap()
    }

    #[test]
    fn each_kind_of_change_is_told_apart() {
        let id = [col("id", "INTEGER")];
        let mut before = State::default();
        let mut after = State::default();
        before.tables.insert(t("same"), table(&id, 3, 1));
        after.tables.insert(t("same"), table(&id, 3, 1));
        before.tables.insert(t("grew"), table(&id, 3, 1));
        after.tables.insert(t("grew"), table(&id, 5, 2));
        before.tables.insert(t("gone"), table(&id, 3, 1));
        after.tables.insert(t("new"), table(&id, 2, 9));
        before.tables.insert(t("typed"), table(&id, 3, 1));
        after
            .tables
            .insert(t("typed"), table(&[col("id", "BIGINT")], 3, 1));
        before.tables.insert(
            t("blind"),
            TableState {
                columns: None,
                rows: Some(3),
                fingerprint: None,
            },
        );
        after.tables.insert(t("blind"), table(&id, 3, 1));
        let got: Vec<(String, ChangeKind)> = compare(&before, &after)
            .into_iter()
            .map(|c| (c.name, c.change))
            .collect();
        assert_eq!(
            got,
            [
                ("main.blind".into(), ChangeKind::Unknown),
                ("main.gone".into(), ChangeKind::Dropped),
                ("main.grew".into(), ChangeKind::Changed),
                ("main.new".into(), ChangeKind::Added),
                ("main.same".into(), ChangeKind::Unchanged),
                ("main.typed".into(), ChangeKind::SchemaChanged),
            ]
        );
    }

    #[test]
    fn columns_are_shown_side_by_side() {
        let a = [
            col("id", "INTEGER"),
            col("salary", "INTEGER"),
            col("old", "VARCHAR"),
        ];
        let mut b = vec![
            col("id", "INTEGER"),
            col("salary", "DOUBLE"),
            col("new", "DATE"),
        ];
        b[0].nullable = false;
        let got = column_changes(&a, &b);
        let row = |c: &str, x: Option<&str>, y: Option<&str>| ColumnChange {
            column: c.into(),
            before: x.map(Into::into),
            after: y.map(Into::into),
        };
        assert_eq!(
            got,
            [
                row("id", Some("INTEGER"), Some("INTEGER NOT NULL")),
                row("salary", Some("INTEGER"), Some("DOUBLE")),
                row("new", None, Some("DATE")),
                row("old", Some("VARCHAR"), None),
            ]
        );
    }

    #[test]
    fn changes_are_reported_by_size_unless_the_key_says() {
        assert!(wanted(None, 100, 100));
        assert!(!wanted(None, 100, 101));
        assert!(wanted(Some(true), 100, 10_000));
        assert!(!wanted(Some(false), 100, 1));
    }

    #[test]
    fn names_default_to_main() {
        assert_eq!(table_name("events").unwrap(), t("main.events"));
        for bad in ["", "main.", ".x", " . ", "a.b.c", "\"open"] {
            assert!(table_name(bad).is_err(), "{bad}");
        }
        // As `restore --table` reads them: a quoted part may hold a dot.
        assert_eq!(
            table_name(r#""my.schema"."t 1""#).unwrap(),
            TableName {
                schema: "my.schema".into(),
                name: "t 1".into()
            }
        );
        assert_eq!(
            table_name("hr.salaries").unwrap(),
            TableName {
                schema: "hr".into(),
                name: "salaries".into()
            }
        );
        assert_eq!(delta(Some(5), None), -5);
        assert_eq!(delta(None, Some(7)), 7);
    }
}
