//! The one module that talks to DuckDB, and the one that knows its file format.
//!
//! DuckDB is started as an [`Instance`] in memory, and the databases ducksafe reads are
//! `ATTACH`ed to it `READ_ONLY`: a backup starts one instance and reads both the source and its
//! copy through it, so it pays DuckDB's start-up (about 10 ms, then as much again for the
//! built-in catalog on its first listing, [`Instance::warm`]) once. Each attached database is
//! read through a connection of its own ([`Db`]), whose `USE` makes it the current database.
//!
//! Invariants:
//! - Every open of a database ducksafe protects (the source, a backup) is read-only, after
//!   [`check_header`] proved the file exists and starts like a DuckDB file: a mistyped path can
//!   never create an empty database.
//!   The one exception is a table restore (`engine::table_restore`), which opens the live
//!   database read-write ([`Db::open_read_write`], after [`check_header`]) to put tables back in
//!   one transaction, once its undo backup is taken. An attachment is `READ_ONLY`: DuckDB opens the file
//!   `O_RDONLY` and refuses every write to it.
//! - [`Db::close`] (or dropping a [`Db`]) detaches the database: once it returns, DuckDB holds
//!   no descriptor, mapping or lock of the file, even while the instance lives on for another
//!   attachment. A copy is detached before it is renamed.
//! - A database is opened at most once at a time per path in this process (duckdb-rs has no
//!   instance cache; two opens would be two independent databases).
//! - Extension autoloading and autoinstall are off: verification never reaches for the network.
//! - DuckDB's messages are read in one place ([`DuckError`]'s classification): callers match on
//!   its kinds (a lock, damage, a full disk, no memory), never on its words.
//! - Fingerprints are `count(*)`, `sum(h)` and `bit_xor(h)` with `h = hash(c1, c2, …)` over every
//!   column of each row: the scan reads every column, so it also makes DuckDB check the checksum
//!   of every block a table uses.
//!   `hash` may change between DuckDB versions, so the version is recorded beside them.
//! - `hash` alone cannot tell some nested values apart (`[NULL]` and `[]`, `{'x': NULL}` and a
//!   NULL struct, `[[1], [2]]` and `[[1, 2]]` hash alike), so a nested column is hashed by its
//!   structure ([`Shape`]): null-ness at every level, each element hashed on its own.
//!   A table without nested columns hashes exactly as before; one with them says so
//!   ([`Fingerprint::nested`]), and fingerprints taken the old way are compared with nothing.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use duckdb::{AccessMode, Config, Connection};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Offset of the `DUCK` magic in the main header.
const MAGIC_OFFSET: usize = 8;
/// Bytes of the main header that carry the magic, storage version and creating version.
const HEADER_BYTES: usize = 4096;
/// The first data block starts here: a shorter file cannot hold a database.
const MIN_DATABASE_BYTES: u64 = 12_288;

/// DuckDB's suffixes for the write-ahead log and its companions.
const WAL_SUFFIXES: [&str; 3] = [".wal", ".wal.checkpoint", ".wal.recovery"];

/// The write-ahead-log files that belong beside `db`, whether or not they exist.
pub fn wal_paths(db: &Path) -> Vec<PathBuf> {
    WAL_SUFFIXES
        .iter()
        .map(|s| {
            let mut p = db.as_os_str().to_owned();
            p.push(s);
            PathBuf::from(p)
        })
        .collect()
}

/// Resource limits for DuckDB opened by ducksafe.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Limits {
    pub memory_limit: Option<String>,
    pub threads: Option<u32>,
}

/// Buffer pool per DuckDB thread for a scan when no memory limit is configured.
const SCAN_MEMORY_PER_THREAD_MIB: u64 = 128;
/// Smallest such pool.
const SCAN_MEMORY_MIN_MIB: u64 = 256;

impl Limits {
    /// The limits for a read-only scan of `db` with a small buffer pool, or `None` when the
    /// configured limits apply as they are: a memory limit is configured, or `db` has a WAL (its
    /// replay goes to memory that a read-only database cannot spill).
    ///
    /// ducksafe scans a database once, so DuckDB's default pool (80% of RAM) would cache every
    /// block it reads and never read it again: the process grew to the size of the database,
    /// and allocating fresh memory for each block cost time. A small pool recycles buffers: in
    /// one benchmark run, the 1 GiB `full` backup took 2.81 s and 328 MiB instead of 3.01 s
    /// and 1140 MiB. A scan pins about 0.5–0.75 MiB per column per thread (measured: 120
    /// columns on 2 threads fail at 128 MiB, pass at 192 MiB), so 128 MiB per thread covers
    /// about 170 columns; a wider table runs out of memory, and the caller scans again with the
    /// configured limits (see `verify::inspect`). The thread count the pool was sized for is
    /// passed to DuckDB too, so the two cannot disagree.
    pub fn scan_pool(&self, db: &Path) -> Option<Limits> {
        let has_wal = wal_paths(db)
            .iter()
            .any(|w| std::fs::metadata(w).is_ok_and(|m| m.len() > 0));
        if self.memory_limit.is_some() || has_wal {
            return None;
        }
        let threads = self.threads.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .ok()
                .and_then(|n| u32::try_from(n.get()).ok())
                .unwrap_or(1)
        });
        let mib = (u64::from(threads) * SCAN_MEMORY_PER_THREAD_MIB).max(SCAN_MEMORY_MIN_MIB);
        Some(Limits {
            memory_limit: Some(format!("{mib}MiB")),
            threads: Some(threads),
        })
    }
}

/// What the main header says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Header {
    /// Storage format version (64 for DuckDB 0.10–1.1 files, higher since).
    pub storage_version: u64,
    /// The DuckDB version that created the file, as written in its header (may be empty).
    pub created_by: String,
}

/// Why DuckDB could not do what was asked.
#[derive(Debug)]
pub enum DuckError {
    /// Another process holds a conflicting lock on the file.
    Locked {
        pid: Option<i32>,
        holder: Option<String>,
    },
    /// The file is not a DuckDB database this version can read.
    NotDatabase(String),
    /// DuckDB could not fit the work in its memory limit.
    OutOfMemory(String),
    /// DuckDB found a block whose checksum does not match its bytes: the file is damaged.
    Corrupt(String),
    /// The filesystem filled up (or a quota was reached) while DuckDB wrote.
    NoSpace(String),
    /// Anything else DuckDB reported (I/O, SQL).
    Failed(String),
}

impl DuckError {
    /// The same error with its message rewritten by `f` (to say which table it came from).
    #[must_use]
    pub fn map_message(self, f: impl FnOnce(String) -> String) -> DuckError {
        match self {
            DuckError::NotDatabase(m) => DuckError::NotDatabase(f(m)),
            DuckError::OutOfMemory(m) => DuckError::OutOfMemory(f(m)),
            DuckError::Corrupt(m) => DuckError::Corrupt(f(m)),
            DuckError::NoSpace(m) => DuckError::NoSpace(f(m)),
            DuckError::Failed(m) => DuckError::Failed(f(m)),
            locked @ DuckError::Locked { .. } => locked,
        }
    }
}

impl std::fmt::Display for DuckError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DuckError::Locked { pid, holder } => {
                write!(f, "the file is locked by another process")?;
                if let Some(h) = holder {
                    write!(f, " `{h}`")?;
                }
                if let Some(p) = pid {
                    write!(f, " (PID {p})")?;
                }
                Ok(())
            }
            DuckError::OutOfMemory(m) => write!(
                f,
                "DuckDB ran out of memory ({m}); raise DUCKDB_MEMORY_LIMIT or lower DUCKDB_THREADS"
            ),
            DuckError::NotDatabase(m)
            | DuckError::Corrupt(m)
            | DuckError::NoSpace(m)
            | DuckError::Failed(m) => f.write_str(m),
        }
    }
}

fn classify(e: &duckdb::Error) -> DuckError {
    classify_message(&e.to_string())
}

/// The kind of a DuckDB failure, from its message (DuckDB gives no codes): the one place its
/// words are matched.
fn classify_message(msg: &str) -> DuckError {
    if msg.contains("Could not set lock") || msg.contains("Conflicting lock") {
        return DuckError::Locked {
            pid: parse_pid(msg),
            holder: parse_holder(msg),
        };
    }
    if msg.starts_with("Out of Memory Error") {
        return DuckError::OutOfMemory(first_line(msg));
    }
    // DuckDB's words for a block whose stored checksum does not match its bytes.
    if msg.contains("Corrupt database file") {
        return DuckError::Corrupt(first_line(msg));
    }
    if msg.contains("No space left on device") || msg.contains("Disk quota exceeded") {
        return DuckError::NoSpace(first_line(msg));
    }
    DuckError::Failed(first_line(msg))
}

fn first_line(msg: &str) -> String {
    msg.lines().next().unwrap_or(msg).trim().to_owned()
}

/// `… Conflicting lock is held in /usr/bin/python3 (PID 1234) …` → 1234.
fn parse_pid(msg: &str) -> Option<i32> {
    let start = msg.find("(PID ")? + 5;
    let rest = &msg[start..];
    let end = rest.find(|c: char| !c.is_ascii_digit())?;
    rest[..end].parse().ok()
}

fn parse_holder(msg: &str) -> Option<String> {
    let start = msg.find("held in ")? + 8;
    let rest = &msg[start..];
    let end = rest.find(" (PID").unwrap_or(rest.len());
    let h = rest[..end].trim();
    (!h.is_empty()).then(|| h.to_owned())
}

/// Reads the main header; fails unless the file is long enough and carries DuckDB's magic.
pub fn check_header(path: &Path) -> Result<Header, DuckError> {
    let mut f = crate::files::open_read(path)
        .map_err(|e| DuckError::NotDatabase(format!("cannot open it: {e}")))?;
    let len = f
        .metadata()
        .map_err(|e| DuckError::NotDatabase(format!("cannot stat it: {e}")))?
        .len();
    if len < MIN_DATABASE_BYTES {
        return Err(DuckError::NotDatabase(format!(
            "it is {len} bytes long, shorter than the smallest DuckDB file ({MIN_DATABASE_BYTES} bytes)"
        )));
    }
    let mut buf = vec![0u8; HEADER_BYTES];
    f.read_exact(&mut buf)
        .map_err(|e| DuckError::NotDatabase(format!("cannot read its header: {e}")))?;
    parse_header(&buf)
}

/// Parses the first 4 KiB of a database file.
fn parse_header(buf: &[u8]) -> Result<Header, DuckError> {
    if buf.len() < 84 || &buf[MAGIC_OFFSET..MAGIC_OFFSET + 4] != b"DUCK" {
        return Err(DuckError::NotDatabase(
            "it does not start with DuckDB's magic bytes `DUCK`".into(),
        ));
    }
    let mut v = [0u8; 8];
    v.copy_from_slice(&buf[12..20]);
    let storage_version = u64::from_le_bytes(v);
    // version_number (8) then 4 flag words (32), then the library's version string (32 bytes).
    let created = &buf[52..84];
    let end = created
        .iter()
        .position(|b| *b == 0)
        .unwrap_or(created.len());
    let created_by = String::from_utf8_lossy(&created[..end]).trim().to_owned();
    Ok(Header {
        storage_version,
        created_by,
    })
}

/// A table, by schema and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
pub struct TableName {
    pub schema: String,
    pub name: String,
}

impl TableName {
    /// `"schema"."name"`, quoted for SQL.
    pub fn quoted(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.name))
    }
    /// `schema.name` for people.
    pub fn display(&self) -> String {
        format!("{}.{}", self.schema, self.name)
    }

    /// `schema.table` or `table` (schema `main`), as an operator types it on the command line;
    /// either part may be double-quoted (`"my.schema"."t"`), `""` inside quotes being one `"`.
    /// `None` when it is not one of those.
    pub fn parse(s: &str) -> Option<TableName> {
        let mut parts = vec![String::new()];
        let mut quoted = false;
        let mut chars = s.trim().chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '"' if quoted && chars.peek() == Some(&'"') => {
                    chars.next();
                    parts.last_mut()?.push('"');
                }
                '"' => quoted = !quoted,
                '.' if !quoted => parts.push(String::new()),
                c => parts.last_mut()?.push(c),
            }
        }
        if quoted || parts.iter().any(String::is_empty) {
            return None;
        }
        match <[String; 2]>::try_from(parts) {
            Ok([schema, name]) => Some(TableName { schema, name }),
            Err(parts) if parts.len() == 1 => Some(TableName {
                schema: "main".into(),
                name: parts.into_iter().next().unwrap_or_default(),
            }),
            Err(_) => None,
        }
    }

    /// This name as the catalogs spell it: DuckDB's names are case-insensitive, so `Employees`
    /// is `employees` when exactly one table of the catalogs matches it so and none matches it
    /// exactly; otherwise the name as given.
    #[must_use]
    pub fn spelled_in<'a>(&self, catalogs: impl IntoIterator<Item = &'a TableName>) -> TableName {
        let mut matches: Vec<&TableName> = catalogs
            .into_iter()
            .filter(|t| {
                t.schema.eq_ignore_ascii_case(&self.schema)
                    && t.name.eq_ignore_ascii_case(&self.name)
            })
            .collect();
        matches.sort();
        matches.dedup();
        match matches[..] {
            [only] => only.clone(),
            _ => self.clone(),
        }
    }
}

/// `"a","b""c"` → `a`, `b"c`: a list of quoted SQL identifiers, separated by commas.
fn split_quoted(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let (mut quoted, mut chars) = (false, s.chars().peekable());
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                chars.next();
                cur.push('"');
            }
            '"' => quoted = !quoted,
            ',' if !quoted => out.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    if !s.is_empty() {
        out.push(cur);
    }
    out
}

/// `"name"`, quoted for SQL.
pub fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// An order-independent content fingerprint of a table.
#[derive(Debug, Clone, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Fingerprint {
    pub rows: u64,
    /// `sum(hash(row))` as a decimal HUGEINT; null for an empty table.
    pub sum_hash: Option<String>,
    /// `bit_xor(hash(row))`; null for an empty table.
    pub xor_hash: Option<u64>,
    /// Whether the table has nested columns (STRUCT, LIST, ARRAY, MAP, UNION), which are hashed
    /// by their structure. Absent from fingerprints written before ducksafe hashed them so:
    /// those hashed DuckDB's `hash()` of the values alone, which cannot tell `[NULL]` from `[]`,
    /// and one of a table with nested columns is compared with nothing computed now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nested: Option<bool>,
}

/// Two fingerprints are equal when their figures are: [`Fingerprint::nested`] says how they
/// were computed, not what was read.
impl PartialEq for Fingerprint {
    fn eq(&self, other: &Self) -> bool {
        (self.rows, &self.sum_hash, self.xor_hash) == (other.rows, &other.sum_hash, other.xor_hash)
    }
}

impl Fingerprint {
    /// Whether the two were computed the same way, so that equal means same rows: always, but
    /// for one written before nested columns were hashed by structure (`nested` absent), which
    /// is comparable only with one of a table without nested columns (hashed alike then and
    /// now).
    pub fn comparable(&self, other: &Self) -> bool {
        match (self.nested, other.nested) {
            (None, Some(n)) | (Some(n), None) => !n,
            _ => true,
        }
    }
}

/// How a column's values are taken apart to be hashed: DuckDB's `hash()` of a nested value
/// forgets where its null-ness and its elements' boundaries were, so a nested value is hashed
/// as its null-ness and the list of its elements' own hashes, recursively (a struct's field
/// names and fields one by one, a union's tag and members). A scalar is hashed as itself.
///
/// Each LIST, ARRAY or MAP level is a lambda, and DuckDB's binding of nested lambdas doubles
/// with each level; below [`MAX_LAMBDA_DEPTH`] of them a value is hashed as its text instead
/// (`CAST(… AS VARCHAR)`, which DuckDB writes unambiguously: strings quoted when they need
/// it, NULL apart from `'NULL'`, field names spelled out).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Shape {
    Scalar,
    /// Fields by name; an unnamed struct's (a `ROW`) names are empty.
    Struct(Vec<(String, Shape)>),
    /// A LIST or a fixed-size ARRAY.
    List(Box<Shape>),
    Map(Box<Shape>, Box<Shape>),
    Union(Vec<(String, Shape)>),
}

/// Nested lambdas at most, in one column's hash (see [`Shape`]).
const MAX_LAMBDA_DEPTH: usize = 3;

impl Shape {
    fn of(t: &duckdb::core::LogicalTypeHandle) -> Shape {
        use duckdb::core::LogicalTypeId as Id;
        let fields = |t: &duckdb::core::LogicalTypeHandle| {
            (0..t.num_children())
                .map(|i| (t.child_name(i), Shape::of(&t.child(i))))
                .collect()
        };
        match t.try_id() {
            Ok(Id::Struct) => Shape::Struct(fields(t)),
            Ok(Id::Union) => Shape::Union(fields(t)),
            Ok(Id::List | Id::Array) => Shape::List(Box::new(Shape::of(&t.child(0)))),
            Ok(Id::Map) => Shape::Map(
                Box::new(Shape::of(&t.child(0))),
                Box::new(Shape::of(&t.child(1))),
            ),
            _ => Shape::Scalar,
        }
    }

    fn nested(&self) -> bool {
        *self != Shape::Scalar
    }

    /// The scalar expressions whose `hash` tells the values of `e` apart, appended to `out`;
    /// `depth` counts the lambdas `e` is in, and names their parameters apart.
    fn parts(&self, e: &str, depth: usize, out: &mut Vec<String>) {
        let literal = |n: &str| format!("'{}'", n.replace('\'', "''"));
        match self {
            Shape::Scalar => out.push(e.to_owned()),
            Shape::List(_) | Shape::Map(..) if depth >= MAX_LAMBDA_DEPTH => {
                out.push(format!("CAST({e} AS VARCHAR)"));
            }
            Shape::Struct(fields) => {
                out.push(format!("({e} IS NULL)"));
                let unnamed = fields.iter().all(|(n, _)| n.is_empty());
                if !unnamed {
                    // Field names, so that swapped fields are not the same rows.
                    let names: Vec<String> = fields.iter().map(|(n, _)| quote_ident(n)).collect();
                    out.push(literal(&names.join(",")));
                }
                for (i, (n, s)) in fields.iter().enumerate() {
                    let field = if unnamed {
                        format!("struct_extract({e}, {})", i + 1)
                    } else {
                        format!("struct_extract({e}, {})", literal(n))
                    };
                    s.parts(&field, depth, out);
                }
            }
            Shape::Union(members) => {
                out.push(format!("union_tag({e})"));
                for (n, s) in members {
                    s.parts(&format!("union_extract({e}, {})", literal(n)), depth, out);
                }
            }
            Shape::List(child) => {
                let x = format!("__ducksafe_x{depth}");
                out.push(format!("({e} IS NULL)"));
                out.push(format!(
                    "list_transform({e}, lambda {x}: {})",
                    child.hash(&x, depth + 1)
                ));
            }
            Shape::Map(key, value) => {
                let x = format!("__ducksafe_x{depth}");
                let mut entry = Vec::new();
                key.parts(
                    &format!("struct_extract({x}, 'key')"),
                    depth + 1,
                    &mut entry,
                );
                value.parts(
                    &format!("struct_extract({x}, 'value')"),
                    depth + 1,
                    &mut entry,
                );
                out.push(format!("({e} IS NULL)"));
                out.push(format!(
                    "list_transform(map_entries({e}), lambda {x}: hash({}))",
                    entry.join(", ")
                ));
            }
        }
    }

    fn hash(&self, e: &str, depth: usize) -> String {
        let mut parts = Vec::new();
        self.parts(e, depth, &mut parts);
        format!("hash({})", parts.join(", "))
    }
}

/// A table's columns in order, with their shapes.
type Columns = Vec<(String, Shape)>;

/// `hash(…)` of a row of side `s` (an alias) over `columns`: the columns themselves when none
/// is nested (the same value as `hash(*COLUMNS(*))`), their parts otherwise.
fn row_hash_of(s: &str, columns: &[(String, Shape)]) -> String {
    let mut parts = Vec::new();
    for (c, shape) in columns {
        shape.parts(&format!("{s}.{}", quote_ident(c)), 0, &mut parts);
    }
    format!("hash({})", parts.join(", "))
}

/// A column as the catalog describes it (`duckdb_columns()`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ColumnDef {
    pub name: String,
    pub data_type: String,
    pub nullable: bool,
    /// The default expression as DuckDB prints it (`'x'`, `nextval('s')`), if any.
    pub default: Option<String>,
    /// A generated column: computed, never inserted into.
    pub generated: bool,
}

/// A table's definition: its columns in order, and its constraints as DuckDB prints them
/// (`PRIMARY KEY(id)`, `CHECK((n > 0))`, `FOREIGN KEY (pid) REFERENCES p(id)`), in the
/// catalog's order. Two tables with equal schemas take each other's rows as they are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TableSchema {
    pub columns: Vec<ColumnDef>,
    pub constraints: Vec<String>,
}

/// A foreign key: `table(columns)` references `referenced(referenced_columns)` (DuckDB keeps
/// both in one schema).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ForeignKey {
    pub table: TableName,
    pub columns: Vec<String>,
    pub referenced: TableName,
    pub referenced_columns: Vec<String>,
}

/// A view and the statement that creates it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ViewDef {
    pub name: TableName,
    pub sql: String,
}

/// A sequence, macro or index and what defines it, as `diff` compares them
/// ([`Db::definitions`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Definition {
    /// `sequence`, `macro` or `index`.
    pub kind: &'static str,
    pub name: TableName,
    /// Its SQL: a sequence's says where it stands (`START` is its next value), a macro's
    /// lists every overload, an index's names its table.
    pub sql: String,
}

/// How a row differs between two states of a table ([`Db::diff_rows`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RowChange {
    /// Only in the old state.
    Removed,
    /// Only in the new state.
    Added,
    /// The same key on both sides, other values (keyed comparison only).
    Changed,
}

/// One row that differs: its values as DuckDB prints them (`NULL` is `None`), in the order of
/// [`RowDiff::columns`]; `old` for a removed or changed row, `new` for an added or changed one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct DiffRow {
    pub change: RowChange,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub old: Option<Vec<Option<String>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new: Option<Vec<Option<String>>>,
}

/// The rows of one table that differ between two states, at most `limit` of each change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RowDiff {
    /// The columns compared: those both states have, in the new state's order.
    pub columns: Vec<String>,
    /// The primary key the rows were matched on; empty for a comparison of whole rows
    /// (`EXCEPT ALL` both ways), where a changed row is one removed and one added.
    pub key: Vec<String>,
    pub rows: Vec<DiffRow>,
    /// More rows differ than were returned.
    pub more: bool,
}

/// Names of attachments: unique in the process, so never two in one instance.
static ATTACHMENTS: AtomicU64 = AtomicU64::new(0);

/// A DuckDB instance in memory, with nothing attached yet: the engine that reads the databases
/// ducksafe checks. Cheap to share: [`Instance::connect`] gives another connection to the same
/// instance, for another thread; the instance ends when its last connection (or [`Db`]) does.
pub struct Instance {
    conn: Connection,
}

impl Instance {
    /// Starts DuckDB in memory with ducksafe's configuration: no extension autoloading or
    /// autoinstall, and `limits` (threads, buffer pool) as given.
    pub fn start(limits: &Limits) -> Result<Instance, DuckError> {
        let started = std::time::Instant::now();
        let config = configure(Config::default(), limits)?;
        let conn = Connection::open_in_memory_with_flags(config).map_err(|e| classify(&e))?;
        crate::timing::took("DuckDB started (in memory)", started);
        Ok(Instance { conn })
    }

    /// Makes DuckDB create its built-in catalog entries (the views of `information_schema` and
    /// `pg_catalog`, parsed from SQL) now: the first listing of any catalog does (10–20 ms on
    /// this engine), whatever database it asks about. Called on a thread of its own while the
    /// copy runs, so that listing the copy's tables later costs under a millisecond.
    pub fn warm(&self) -> Result<(), DuckError> {
        let started = std::time::Instant::now();
        self.conn
            .query_row("SELECT count(*) FROM duckdb_tables()", [], |r| {
                r.get::<_, i64>(0)
            })
            .map_err(|e| classify(&e))?;
        crate::timing::took("DuckDB's built-in catalog created", started);
        Ok(())
    }

    /// Another connection to the same instance.
    pub fn connect(&self) -> Result<Instance, DuckError> {
        Ok(Instance {
            conn: self.conn.try_clone().map_err(|e| classify(&e))?,
        })
    }

    /// Sets the instance's thread count and buffer pool (DuckDB's defaults where `limits` has
    /// none): they hold for every connection of the instance.
    pub fn set_limits(&self, limits: &Limits) -> Result<(), DuckError> {
        let memory = match &limits.memory_limit {
            Some(m) => format!("SET memory_limit = '{}';", m.replace('\'', "''")),
            None => "RESET memory_limit;".to_owned(),
        };
        let threads = match limits.threads {
            Some(t) => format!("SET threads = {t};"),
            None => "RESET threads;".to_owned(),
        };
        self.conn
            .execute_batch(&format!("{memory} {threads}"))
            .map_err(|e| classify(&e))
    }

    /// Where DuckDB writes what does not fit in its memory limit (a large join or sort):
    /// `dir`, or nowhere (`None`: such work fails with [`DuckError::OutOfMemory`]). An instance
    /// in memory would otherwise spill into `.tmp` in the current directory.
    pub fn set_spill_dir(&self, dir: Option<&Path>) -> Result<(), DuckError> {
        let text = match dir {
            Some(d) => d.to_str().ok_or_else(|| {
                DuckError::Failed(format!("`{}` is not a UTF-8 path", d.display()))
            })?,
            None => "",
        };
        self.conn
            .execute_batch(&format!(
                "SET temp_directory = '{}';",
                text.replace('\'', "''")
            ))
            .map_err(|e| classify(&e))
    }

    /// Attaches an existing database read-only (its WAL, if any, is replayed in memory and
    /// left on disk), through a new connection whose current database it is; also gives the
    /// header [`check_header`] read before DuckDB saw the file.
    pub fn attach_read_only(&self, path: &Path) -> Result<(Db, Header), DuckError> {
        let header = check_header(path)?;
        let started = std::time::Instant::now();
        let text = path.to_str().ok_or_else(|| {
            DuckError::Failed(format!("`{}` is not a UTF-8 path", path.display()))
        })?;
        let name = format!(
            "ducksafe_{}",
            ATTACHMENTS.fetch_add(1, Ordering::Relaxed) + 1
        );
        let conn = self.conn.try_clone().map_err(|e| classify(&e))?;
        conn.execute_batch(&format!(
            "ATTACH '{}' AS {name} (READ_ONLY); USE {name};",
            text.replace('\'', "''")
        ))
        .map_err(|e| not_a_database(&e))?;
        crate::timing::took(&format!("DuckDB attach `{}`", path.display()), started);
        Ok((
            Db {
                conn: Some(conn),
                attached: Some(name),
            },
            header,
        ))
    }
}

/// The expression column `c` of side `s` is compared on: itself, or its text when its type
/// differs between the two states (`same` false).
fn compared(s: &str, c: &str, same: bool) -> String {
    let e = format!("{s}.{}", quote_ident(c));
    if same {
        e
    } else {
        format!("CAST({e} AS VARCHAR)")
    }
}

/// The compared columns with the shapes their hash takes apart: a column of the same type on
/// both sides has its shape in `shapes`; one whose type changed is compared as text.
fn compared_shapes(columns: &[(String, bool)], shapes: &[(String, Shape)]) -> Columns {
    columns
        .iter()
        .map(|(c, same)| {
            let shape = shapes
                .iter()
                .find(|(n, _)| n == c)
                .filter(|_| *same)
                .map_or(Shape::Scalar, |(_, s)| s.clone());
            (c.clone(), shape)
        })
        .collect()
}

/// Column `c` of side `s` as text, as the rows are returned.
fn as_text(s: &str, c: &str) -> String {
    format!("CAST({s}.{} AS VARCHAR)", quote_ident(c))
}

/// The row hash of side `s`'s compared columns: equal rows hash alike, and nested values that
/// differ hash apart ([`Shape`]).
fn row_hash(s: &str, columns: &[(String, bool)], shapes: &[(String, Shape)]) -> String {
    let mut parts = Vec::new();
    for (c, shape) in compared_shapes(columns, shapes) {
        let same = columns.iter().any(|(n, same)| *n == c && *same);
        shape.parts(&compared(s, &c, same), 0, &mut parts);
    }
    format!("hash({})", parts.join(", "))
}

/// [`Db::diff_rows`] without a key: whole rows, `EXCEPT ALL` both ways, at most `take` of each.
/// The rows to compare are first narrowed down to those whose row hash is not as frequent on
/// both sides (one aggregation of the two tables' hashes): a table of millions of rows with a
/// few changes then compares a few rows, not millions of whole rows in a hash table. A row is
/// missed only if another row with the same 64-bit hash took its place, as often.
fn whole_rows_sql(
    a: &str,
    b: &str,
    columns: &[(String, bool)],
    shapes: &[(String, Shape)],
    take: u64,
) -> String {
    let list = columns
        .iter()
        .map(|(c, same)| format!("{} AS {}", compared("t", c, *same), quote_ident(c)))
        .collect::<Vec<_>>()
        .join(", ");
    let out = columns
        .iter()
        .map(|(c, _)| as_text("d", c))
        .collect::<Vec<_>>()
        .join(", ");
    let h = row_hash("t", columns, shapes);
    let candidates = |from: &str| {
        format!("SELECT {list} FROM {from} AS t WHERE {h} IN (SELECT h FROM __ducksafe_hashes)")
    };
    let side = |change: &str, from: &str, other: &str| {
        format!(
            "(SELECT '{change}' AS __ducksafe_change, {out} FROM \
             (SELECT * FROM {from} EXCEPT ALL SELECT * FROM {other}) AS d \
             ORDER BY ALL LIMIT {take})"
        )
    };
    format!(
        "WITH __ducksafe_hashes AS MATERIALIZED (\
            SELECT h FROM (SELECT {h} AS h, 1 AS s FROM {a} AS t \
                           UNION ALL SELECT {h} AS h, -1 AS s FROM {b} AS t) \
            GROUP BY h HAVING sum(s) <> 0), \
         __ducksafe_a AS MATERIALIZED ({}), \
         __ducksafe_b AS MATERIALIZED ({}) \
         SELECT * FROM ({} UNION ALL {})",
        candidates(a),
        candidates(b),
        side("removed", "__ducksafe_a", "__ducksafe_b"),
        side("added", "__ducksafe_b", "__ducksafe_a")
    )
}

/// [`Db::diff_rows`] on a key: a full outer join on it, the rows whose other columns differ
/// (`IS DISTINCT FROM`: a NULL that became a value differs), at most `take` of each change,
/// ordered by the key. The keys to compare are first narrowed down to those whose row hash
/// differs (a join of keys and hashes only), so that only their rows are joined whole.
fn keyed_rows_sql(
    a: &str,
    b: &str,
    columns: &[(String, bool)],
    shapes: &[(String, Shape)],
    key: &[String],
    take: u64,
) -> String {
    let same_of = |k: &str| columns.iter().find(|(c, _)| c == k).is_none_or(|(_, s)| *s);
    let k_at = |s: &str, k: &str| compared(s, k, same_of(k));
    let kname = |i: usize| format!("__ducksafe_k{i}");
    let h = row_hash("t", columns, shapes);
    let keyed = |from: &str| {
        let ks = key
            .iter()
            .enumerate()
            .map(|(i, k)| format!("{} AS {}", k_at("t", k), kname(i)))
            .collect::<Vec<_>>()
            .join(", ");
        format!("SELECT {ks}, {h} AS __ducksafe_h FROM {from} AS t")
    };
    let join_on = |x: &str, y: &str| {
        (0..key.len())
            .map(|i| format!("{x}.{} = {y}.{}", kname(i), kname(i)))
            .collect::<Vec<_>>()
            .join(" AND ")
    };
    let coalesced = (0..key.len())
        .map(|i| format!("coalesce(o.{k}, n.{k}) AS {k}", k = kname(i)))
        .collect::<Vec<_>>()
        .join(", ");
    let narrowed = |from: &str, mark: &str| {
        let on = key
            .iter()
            .enumerate()
            .map(|(i, k)| format!("{} = d.{}", k_at("t", k), kname(i)))
            .collect::<Vec<_>>()
            .join(" AND ");
        format!(
            "SELECT t.*, true AS {mark} FROM {from} AS t SEMI JOIN __ducksafe_keys AS d ON {on}"
        )
    };
    let on = key
        .iter()
        .map(|k| format!("{} = {}", k_at("o", k), k_at("n", k)))
        .collect::<Vec<_>>()
        .join(" AND ");
    let mut filter = vec![
        "o.__ducksafe_o IS NULL".to_owned(),
        "n.__ducksafe_n IS NULL".to_owned(),
    ];
    filter.extend(columns.iter().map(|(c, same)| {
        format!(
            "{} IS DISTINCT FROM {}",
            compared("o", c, *same),
            compared("n", c, *same)
        )
    }));
    let filter = filter.join(" OR ");
    let values = |s: &str| {
        columns
            .iter()
            .map(|(c, _)| as_text(s, c))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let (old, new) = (values("o"), values("n"));
    let order = key
        .iter()
        .map(|k| format!("coalesce({}, {})", as_text("o", k), as_text("n", k)))
        .collect::<Vec<_>>()
        .join(", ");
    let per_change = |change: &str, when: &str| {
        format!(
            "(SELECT '{change}' AS __ducksafe_change, {old}, {new} \
             FROM __ducksafe_old AS o FULL OUTER JOIN __ducksafe_new AS n ON {on} \
             WHERE ({filter}) AND {when} ORDER BY {order} LIMIT {take})"
        )
    };
    format!(
        "WITH __ducksafe_keys AS MATERIALIZED (\
            SELECT {coalesced} FROM ({}) AS o FULL OUTER JOIN ({}) AS n ON {} \
            WHERE o.__ducksafe_h IS DISTINCT FROM n.__ducksafe_h), \
         __ducksafe_old AS MATERIALIZED ({}), \
         __ducksafe_new AS MATERIALIZED ({}) \
         SELECT * FROM ({} UNION ALL {} UNION ALL {})",
        keyed(a),
        keyed(b),
        join_on("o", "n"),
        narrowed(a, "__ducksafe_o"),
        narrowed(b, "__ducksafe_n"),
        per_change("removed", "n.__ducksafe_n IS NULL"),
        per_change("added", "o.__ducksafe_o IS NULL"),
        per_change(
            "changed",
            "o.__ducksafe_o IS NOT NULL AND n.__ducksafe_n IS NOT NULL"
        ),
    )
}

/// ducksafe's DuckDB configuration on top of `config`.
fn configure(config: Config, limits: &Limits) -> Result<Config, DuckError> {
    let mut config = config
        .enable_autoload_extension(false)
        .and_then(|c| c.with("autoinstall_known_extensions", "false"))
        .map_err(|e| classify(&e))?;
    if let Some(m) = &limits.memory_limit {
        config = config.max_memory(m).map_err(|e| classify(&e))?;
    }
    if let Some(t) = limits.threads {
        config = config.threads(i64::from(t)).map_err(|e| classify(&e))?;
    }
    Ok(config)
}

/// A failure to open or attach a database file: the words that say the file is no database
/// this DuckDB can read make it [`DuckError::NotDatabase`].
fn not_a_database(e: &duckdb::Error) -> DuckError {
    match classify(e) {
        DuckError::Failed(m)
            if m.contains("not a valid DuckDB database")
                || m.contains("can only read versions")
                || m.contains("older development version")
                || m.contains("newer") =>
        {
            DuckError::NotDatabase(m)
        }
        other => other,
    }
}

/// An open DuckDB database: attached read-only to an [`Instance`] (and detached when closed or
/// dropped), or a file ducksafe owns opened read-write.
pub struct Db {
    /// `None` only once closed.
    conn: Option<Connection>,
    /// The attachment's name, while attached.
    attached: Option<String>,
}

impl Drop for Db {
    fn drop(&mut self) {
        // Not closed on purpose (an error on the way): the file is let go all the same.
        let _ = self.detach();
    }
}

impl Db {
    /// Opens an existing database read-only, in an instance of its own (its WAL, if any, is
    /// replayed in memory and left on disk). Refuses anything that does not look like a
    /// DuckDB file before DuckDB sees it.
    pub fn open_read_only(path: &Path, limits: &Limits) -> Result<Db, DuckError> {
        Self::open_read_only_with_header(path, limits).map(|(db, _)| db)
    }

    /// [`Db::open_read_only`], also giving the header it checked (read once).
    pub fn open_read_only_with_header(
        path: &Path,
        limits: &Limits,
    ) -> Result<(Db, Header), DuckError> {
        Instance::start(limits)?.attach_read_only(path)
    }

    /// Opens a database read-write. Only for files ducksafe itself owns: a private temporary
    /// copy (to fold a WAL in) or a demo database it creates.
    pub fn open_read_write(path: &Path, limits: &Limits) -> Result<Db, DuckError> {
        let started = std::time::Instant::now();
        let config = configure(
            Config::default()
                .access_mode(AccessMode::ReadWrite)
                .map_err(|e| classify(&e))?,
            limits,
        )?;
        let conn = Connection::open_with_flags(path, config).map_err(|e| not_a_database(&e))?;
        crate::timing::took(&format!("DuckDB open `{}`", path.display()), started);
        Ok(Db {
            conn: Some(conn),
            attached: None,
        })
    }

    fn conn(&self) -> &Connection {
        // Set from construction until `close`, which consumes the `Db`.
        self.conn.as_ref().expect("an open Db has its connection")
    }

    /// Detaches the database, if attached; returns DuckDB's error.
    fn detach(&mut self) -> Result<(), DuckError> {
        let (Some(name), Some(conn)) = (self.attached.take(), self.conn.as_ref()) else {
            return Ok(());
        };
        let started = std::time::Instant::now();
        let detached = conn
            .execute_batch(&format!("USE memory; DETACH {name};"))
            .map_err(|e| classify(&e));
        crate::timing::took("DuckDB detach", started);
        detached
    }

    /// Runs SQL statements that return nothing (a checkpoint, the demo's DDL).
    pub fn execute_batch(&self, sql: &str) -> Result<(), DuckError> {
        self.conn().execute_batch(sql).map_err(|e| classify(&e))
    }

    /// The DuckDB library version (`v2.0.0`).
    pub fn library_version(&self) -> Result<String, DuckError> {
        self.conn()
            .query_row("SELECT library_version FROM pragma_version()", [], |r| {
                r.get::<_, String>(0)
            })
            .map_err(|e| classify(&e))
    }

    /// Every user table of the database, sorted.
    pub fn tables(&self) -> Result<Vec<TableName>, DuckError> {
        let mut stmt = self
            .conn()
            .prepare(
                "SELECT schema_name, table_name FROM duckdb_tables() \
                 WHERE database_name = current_database() AND NOT internal AND NOT temporary \
                 ORDER BY schema_name, table_name",
            )
            .map_err(|e| classify(&e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok(TableName {
                    schema: r.get(0)?,
                    name: r.get(1)?,
                })
            })
            .map_err(|e| classify(&e))?;
        rows.collect::<Result<Vec<_>, _>>()
            .map_err(|e| classify(&e))
    }

    /// Number of views, macros and sequences: reported, not fingerprinted.
    pub fn object_counts(&self) -> Result<(u64, u64), DuckError> {
        self.conn()
            .query_row(
                "SELECT (SELECT count(*) FROM duckdb_views() WHERE database_name = current_database() AND NOT internal), \
                        (SELECT count(*) FROM duckdb_sequences() WHERE database_name = current_database())",
                [],
                |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)),
            )
            .map(|(v, s)| (v.unsigned_abs(), s.unsigned_abs()))
            .map_err(|e| classify(&e))
    }

    /// The exact number of rows of a table.
    pub fn row_count(&self, t: &TableName) -> Result<u64, DuckError> {
        self.conn()
            .query_row(&format!("SELECT count(*) FROM {}", t.quoted()), [], |r| {
                r.get::<_, i64>(0)
            })
            .map(i64::unsigned_abs)
            .map_err(|e| classify(&e))
    }

    /// Whether table `t` keeps data in block `id` (`pragma_storage_info` reads the table's
    /// metadata only, so it answers even when that block is damaged).
    pub fn table_uses_block(&self, t: &TableName, id: u64) -> Result<bool, DuckError> {
        let id = i64::try_from(id).unwrap_or(i64::MAX);
        self.conn()
            .query_row(
                "SELECT count(*) FROM pragma_storage_info(?) WHERE block_id = ?",
                duckdb::params![format!("{}.{}", t.schema, t.name), id],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n > 0)
            .map_err(|e| classify(&e))
    }

    /// The columns of a table, in order.
    pub fn columns(&self, t: &TableName) -> Result<Vec<String>, DuckError> {
        self.table_strings(
            "SELECT column_name FROM duckdb_columns() \
             WHERE database_name = current_database() AND schema_name = ? AND table_name = ? \
             ORDER BY column_index",
            t,
        )
    }

    /// The first column of the rows of `sql`, a catalog query about table `t` whose two
    /// parameters are its schema and name: the shape every such listing shares.
    fn table_strings(&self, sql: &str, t: &TableName) -> Result<Vec<String>, DuckError> {
        let mut stmt = self.conn().prepare(sql).map_err(|e| classify(&e))?;
        let rows = stmt
            .query_map([&t.schema, &t.name], |r| r.get::<_, String>(0))
            .map_err(|e| classify(&e))?;
        rows.collect::<Result<Vec<_>, _>>()
            .map_err(|e| classify(&e))
    }

    /// The name this database is attached under in its instance, while attached: other
    /// attachments' connections reach its tables as `"<alias>".schema.table`.
    pub fn alias(&self) -> Option<&str> {
        self.attached.as_deref()
    }

    /// The name of this connection's current database (the file's stem for a database
    /// opened read-write, the alias of an attachment).
    pub fn current_database(&self) -> Result<String, DuckError> {
        self.conn()
            .query_row("SELECT current_database()", [], |r| r.get::<_, String>(0))
            .map_err(|e| classify(&e))
    }

    /// Attaches another database file read-only beside this one, under a unique alias that is
    /// returned (detached again by [`Db::detach_other`], or when the instance ends). The file is
    /// checked to be a DuckDB file first.
    pub fn attach_other(&self, path: &Path) -> Result<String, DuckError> {
        check_header(path)?;
        let text = path.to_str().ok_or_else(|| {
            DuckError::Failed(format!("`{}` is not a UTF-8 path", path.display()))
        })?;
        let name = format!(
            "ducksafe_{}",
            ATTACHMENTS.fetch_add(1, Ordering::Relaxed) + 1
        );
        self.conn()
            .execute_batch(&format!(
                "ATTACH '{}' AS {name} (READ_ONLY);",
                text.replace('\'', "''")
            ))
            .map_err(|e| not_a_database(&e))?;
        Ok(name)
    }

    /// Detaches what [`Db::attach_other`] attached.
    pub fn detach_other(&self, alias: &str) -> Result<(), DuckError> {
        self.execute_batch(&format!("DETACH {}", quote_ident(alias)))
    }

    /// A query that returns one integer (a count), as a `u64`.
    pub fn query_u64(&self, sql: &str) -> Result<u64, DuckError> {
        self.conn()
            .query_row(sql, [], |r| r.get::<_, Option<i64>>(0))
            .map(|n| n.unwrap_or(0).unsigned_abs())
            .map_err(|e| classify(&e))
    }

    /// The definition of table `t` in this database, `None` when there is no such table.
    pub fn table_schema(&self, t: &TableName) -> Result<Option<TableSchema>, DuckError> {
        let mut stmt = self
            .conn()
            .prepare(
                "SELECT column_name, data_type, is_nullable, column_default, is_generated \
                 FROM duckdb_columns() \
                 WHERE database_name = current_database() AND schema_name = ? AND table_name = ? \
                 ORDER BY column_index",
            )
            .map_err(|e| classify(&e))?;
        let columns = stmt
            .query_map([&t.schema, &t.name], |r| {
                Ok(ColumnDef {
                    name: r.get(0)?,
                    data_type: r.get(1)?,
                    nullable: r.get(2)?,
                    default: r.get(3)?,
                    generated: r.get::<_, Option<bool>>(4)?.unwrap_or(false),
                })
            })
            .map_err(|e| classify(&e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| classify(&e))?;
        if columns.is_empty() && !self.tables()?.contains(t) {
            return Ok(None);
        }
        let constraints = self.table_strings(
            "SELECT constraint_text FROM duckdb_constraints() \
             WHERE database_name = current_database() AND schema_name = ? AND table_name = ? \
             ORDER BY constraint_index",
            t,
        )?;
        Ok(Some(TableSchema {
            columns,
            constraints,
        }))
    }

    /// The `CREATE TABLE` statement DuckDB keeps for table `t` (columns, defaults and
    /// constraints; schema-qualified unless `main`), `None` when there is no such table.
    pub fn create_table_sql(&self, t: &TableName) -> Result<Option<String>, DuckError> {
        let mut stmt = self
            .conn()
            .prepare(
                "SELECT sql FROM duckdb_tables() \
                 WHERE database_name = current_database() AND schema_name = ? AND table_name = ?",
            )
            .map_err(|e| classify(&e))?;
        let mut rows = stmt
            .query_map([&t.schema, &t.name], |r| r.get::<_, Option<String>>(0))
            .map_err(|e| classify(&e))?;
        rows.next()
            .transpose()
            .map(Option::flatten)
            .map_err(|e| classify(&e))
    }

    /// The `COMMENT ON` statements that give table `t` and its columns their comments, each
    /// ending with `;` (none when it has none): a recreated table keeps them.
    pub fn comment_sql(&self, t: &TableName) -> Result<Vec<String>, DuckError> {
        let mut stmt = self
            .conn()
            .prepare(
                "SELECT NULL, CAST(comment AS VARCHAR) FROM duckdb_tables() \
                     WHERE database_name = current_database() AND schema_name = ? AND table_name = ? \
                 UNION ALL \
                 SELECT column_name, CAST(comment AS VARCHAR) FROM duckdb_columns() \
                     WHERE database_name = current_database() AND schema_name = ? AND table_name = ?",
            )
            .map_err(|e| classify(&e))?;
        let rows = stmt
            .query_map([&t.schema, &t.name, &t.schema, &t.name], |r| {
                Ok((
                    r.get::<_, Option<String>>(0)?,
                    r.get::<_, Option<String>>(1)?,
                ))
            })
            .map_err(|e| classify(&e))?;
        let literal = |s: &str| format!("'{}'", s.replace('\'', "''"));
        let mut out = Vec::new();
        for row in rows {
            let (column, comment) = row.map_err(|e| classify(&e))?;
            let Some(comment) = comment.filter(|c| !c.is_empty()) else {
                continue;
            };
            out.push(match column {
                None => format!("COMMENT ON TABLE {} IS {};", t.quoted(), literal(&comment)),
                Some(c) => format!(
                    "COMMENT ON COLUMN {}.{} IS {};",
                    t.quoted(),
                    quote_ident(&c),
                    literal(&comment)
                ),
            });
        }
        Ok(out)
    }

    /// The `CREATE INDEX` statements of table `t`'s indexes (those a primary key or a
    /// `UNIQUE` constraint makes are part of its `CREATE TABLE`), each ending with `;`.
    pub fn index_sql(&self, t: &TableName) -> Result<Vec<String>, DuckError> {
        let indexes = self.table_strings(
            "SELECT sql FROM duckdb_indexes() \
             WHERE database_name = current_database() AND schema_name = ? AND table_name = ? \
             AND sql IS NOT NULL ORDER BY index_name",
            t,
        )?;
        Ok(indexes
            .into_iter()
            .map(|s| {
                let s = s.trim_end().to_owned();
                if s.ends_with(';') {
                    s
                } else {
                    s + ";"
                }
            })
            .collect())
    }

    /// Every foreign key of this database.
    pub fn foreign_keys(&self) -> Result<Vec<ForeignKey>, DuckError> {
        let mut stmt = self
            .conn()
            .prepare(
                "SELECT schema_name, table_name, \
                        array_to_string(list_transform(constraint_column_names, lambda x: '\"' || replace(x, '\"', '\"\"') || '\"'), ','), \
                        referenced_table, \
                        array_to_string(list_transform(referenced_column_names, lambda x: '\"' || replace(x, '\"', '\"\"') || '\"'), ',') \
                 FROM duckdb_constraints() \
                 WHERE database_name = current_database() AND constraint_type = 'FOREIGN KEY' \
                 ORDER BY schema_name, table_name, constraint_index",
            )
            .map_err(|e| classify(&e))?;
        // Lists come as text, each name quoted (`"a","b"`): no dependence on how the driver
        // maps a LIST, nor on the json extension.
        let list = |v: Option<String>| split_quoted(&v.unwrap_or_default());
        let rows = stmt
            .query_map([], |r| {
                let schema: String = r.get(0)?;
                Ok(ForeignKey {
                    table: TableName {
                        schema: schema.clone(),
                        name: r.get(1)?,
                    },
                    columns: list(r.get(2)?),
                    referenced: TableName {
                        schema,
                        name: r.get(3)?,
                    },
                    referenced_columns: list(r.get(4)?),
                })
            })
            .map_err(|e| classify(&e))?;
        rows.collect::<Result<Vec<_>, _>>()
            .map_err(|e| classify(&e))
    }

    /// Every user view of this database, with its `CREATE VIEW` statement.
    pub fn views(&self) -> Result<Vec<ViewDef>, DuckError> {
        let mut stmt = self
            .conn()
            .prepare(
                "SELECT schema_name, view_name, sql FROM duckdb_views() \
                 WHERE database_name = current_database() AND NOT internal AND NOT temporary \
                 ORDER BY schema_name, view_name",
            )
            .map_err(|e| classify(&e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok(ViewDef {
                    name: TableName {
                        schema: r.get(0)?,
                        name: r.get(1)?,
                    },
                    sql: r.get::<_, Option<String>>(2)?.unwrap_or_default(),
                })
            })
            .map_err(|e| classify(&e))?;
        rows.collect::<Result<Vec<_>, _>>()
            .map_err(|e| classify(&e))
    }

    /// The sequences, macros and indexes of the current database (the catalog's own left
    /// out), each with the SQL that defines it, by kind and name.
    pub fn definitions(&self) -> Result<Vec<Definition>, DuckError> {
        let mut stmt = self
            .conn()
            .prepare(
                "SELECT 'sequence', schema_name, sequence_name, sql FROM duckdb_sequences() \
                     WHERE database_name = current_database() AND NOT temporary \
                 UNION ALL \
                 SELECT 'macro', schema_name, function_name, \
                        string_agg(CASE WHEN function_type = 'table_macro' THEN 'TABLE ' ELSE '' END \
                                   || '(' || array_to_string(parameters, ', ') || ') (' \
                                   || array_to_string(list_transform(parameter_types, lambda t: coalesce(t, '?')), ', ') \
                                   || ') AS ' \
                                   || coalesce(macro_definition, ''), '; ' ORDER BY len(parameters), macro_definition) \
                     FROM duckdb_functions() \
                     WHERE database_name = current_database() AND NOT internal \
                       AND function_type IN ('macro', 'table_macro') \
                     GROUP BY schema_name, function_name \
                 UNION ALL \
                 SELECT 'index', schema_name, index_name, sql FROM duckdb_indexes() \
                     WHERE database_name = current_database() AND sql IS NOT NULL \
                 ORDER BY 1, 2, 3",
            )
            .map_err(|e| classify(&e))?;
        let rows = stmt
            .query_map([], |r| {
                let kind = match r.get::<_, String>(0)?.as_str() {
                    "sequence" => "sequence",
                    "macro" => "macro",
                    _ => "index",
                };
                Ok(Definition {
                    kind,
                    name: TableName {
                        schema: r.get(1)?,
                        name: r.get(2)?,
                    },
                    sql: r.get::<_, Option<String>>(3)?.unwrap_or_default(),
                })
            })
            .map_err(|e| classify(&e))?;
        rows.collect::<Result<Vec<_>, _>>()
            .map_err(|e| classify(&e))
    }

    /// Whether a view (or table) of the current database can be read: DuckDB binds it again
    /// (`SELECT * … LIMIT 0`), reading no row. The error says why it cannot.
    pub fn binds(&self, t: &TableName) -> Result<(), DuckError> {
        self.execute_batch(&format!("SELECT * FROM {} LIMIT 0", t.quoted()))
    }

    /// The content fingerprint of a table: reads every column of every row, in one query. The
    /// row hash is `hash(c1, c2, …)` over the columns in order (20% faster than hashing the row
    /// as a struct, measured on the benchmark's largest table), written `hash(*COLUMNS(*))` so
    /// that no catalog query is needed for the column list (the same value as naming them:
    /// `fingerprint_names_every_column_in_order`).
    ///
    /// A table with nested columns is hashed by their structure ([`Shape`]), and its
    /// fingerprint says so ([`Fingerprint::nested`]).
    pub fn fingerprint(&self, t: &TableName) -> Result<Fingerprint, DuckError> {
        let columns = self.shapes(&t.quoted())?;
        let nested = columns.iter().any(|(_, s)| s.nested());
        let h = if nested {
            row_hash_of("t", &columns)
        } else {
            "hash(*COLUMNS(*))".to_owned()
        };
        self.conn()
            .query_row(
                // The row hash is computed once and aggregated twice (10% faster than
                // repeating the expression in both aggregates).
                &format!(
                    "SELECT count(*), sum(h)::HUGEINT::VARCHAR, bit_xor(h) FROM (SELECT {h} AS h FROM {} AS t)",
                    t.quoted()
                ),
                [],
                |r| {
                    Ok(Fingerprint {
                        rows: r.get::<_, i64>(0)?.unsigned_abs(),
                        sum_hash: r.get(1)?,
                        xor_hash: r.get(2)?,
                        nested: Some(nested),
                    })
                },
            )
            .map_err(|e| classify(&e))
    }

    /// Whether the table has a nested column: a fingerprint recorded for it before nested
    /// columns were hashed by structure is not comparable with one computed now.
    pub fn has_nested_columns(&self, t: &TableName) -> Result<bool, DuckError> {
        Ok(self.shapes(&t.quoted())?.iter().any(|(_, s)| s.nested()))
    }

    /// The columns of table `from` (SQL, quoted) and their shapes, from the result of
    /// `SELECT * … LIMIT 0`: no row read, no catalog query.
    fn shapes(&self, from: &str) -> Result<Columns, DuckError> {
        let mut stmt = self
            .conn()
            .prepare(&format!("SELECT * FROM {from} LIMIT 0"))
            .map_err(|e| classify(&e))?;
        // Run (no row comes back): the names are known once it has.
        stmt.query([])
            .map_err(|e| classify(&e))?
            .next()
            .map_err(|e| classify(&e))?;
        Ok(stmt
            .column_names()
            .into_iter()
            .enumerate()
            .map(|(i, n)| (n, Shape::of(&stmt.column_logical_type(i))))
            .collect())
    }

    /// The columns of a table's primary key, in key order; empty when it has none.
    pub fn primary_key(&self, t: &TableName) -> Result<Vec<String>, DuckError> {
        let mut stmt = self
            .conn()
            .prepare(
                "SELECT constraint_column_names FROM duckdb_constraints() \
                 WHERE database_name = current_database() AND schema_name = ? AND table_name = ? \
                 AND constraint_type = 'PRIMARY KEY'",
            )
            .map_err(|e| classify(&e))?;
        let mut rows = stmt
            .query_map([&t.schema, &t.name], |r| {
                r.get::<_, duckdb::types::Value>(0)
            })
            .map_err(|e| classify(&e))?;
        let Some(first) = rows.next() else {
            return Ok(Vec::new());
        };
        match first.map_err(|e| classify(&e))? {
            duckdb::types::Value::List(items) => Ok(items
                .into_iter()
                .filter_map(|v| match v {
                    duckdb::types::Value::Text(s) => Some(s),
                    _ => None,
                })
                .collect()),
            _ => Ok(Vec::new()),
        }
    }

    /// `"attachment"."schema"."name"`: the table as another connection of the same instance
    /// names it.
    fn qualified(&self, t: &TableName) -> Result<String, DuckError> {
        let at = self
            .attached
            .as_deref()
            .ok_or_else(|| DuckError::Failed("the database is not attached".into()))?;
        Ok(format!("{}.{}", quote_ident(at), t.quoted()))
    }

    /// The rows of table `t` that differ between `self` (the old state) and `new`, both
    /// attached to the same [`Instance`], computed by DuckDB in one query: matched on `key`
    /// (the primary key, which both must have) with a full outer join, or, with no key, as
    /// whole rows, `EXCEPT ALL` both ways (duplicates count). `columns` are compared: a column
    /// whose type differs between the states is compared as text. At most `limit` rows of each
    /// change are returned, ordered by key (or by every column), so that the answer is the same
    /// every time; memory stays within the instance's limit (DuckDB spills joins and sorts).
    pub fn diff_rows(
        &self,
        new: &Db,
        t: &TableName,
        columns: &[(String, bool)],
        key: &[String],
        limit: u64,
    ) -> Result<RowDiff, DuckError> {
        let (a, b) = (self.qualified(t)?, new.qualified(t)?);
        let n = columns.len();
        let take = limit.saturating_add(1);
        let shapes = self.shapes(&a)?;
        let sql = if key.is_empty() {
            whole_rows_sql(&a, &b, columns, &shapes, take)
        } else {
            keyed_rows_sql(&a, &b, columns, &shapes, key, take)
        };
        let started = std::time::Instant::now();
        let mut stmt = self.conn().prepare(&sql).map_err(|e| classify(&e))?;
        let keyed = !key.is_empty();
        let rows = stmt
            .query_map([], |r| {
                let change: String = r.get(0)?;
                let read = |from: usize| -> duckdb::Result<Vec<Option<String>>> {
                    (from..from + n)
                        .map(|i| r.get::<_, Option<String>>(i))
                        .collect()
                };
                let (change, old, new) = match (change.as_str(), keyed) {
                    ("removed", _) => (RowChange::Removed, Some(read(1)?), None),
                    ("added", false) => (RowChange::Added, None, Some(read(1)?)),
                    ("added", true) => (RowChange::Added, None, Some(read(1 + n)?)),
                    _ => (RowChange::Changed, Some(read(1)?), Some(read(1 + n)?)),
                };
                Ok(DiffRow { change, old, new })
            })
            .map_err(|e| classify(&e))?;
        let all = rows
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| classify(&e))?;
        crate::timing::took(&format!("rows of {} compared", t.display()), started);
        let mut more = false;
        let mut kept = Vec::with_capacity(all.len());
        for change in [RowChange::Removed, RowChange::Added, RowChange::Changed] {
            let of: Vec<DiffRow> = all.iter().filter(|r| r.change == change).cloned().collect();
            more |= of.len() as u64 > limit;
            kept.extend(
                of.into_iter()
                    .take(usize::try_from(limit).unwrap_or(usize::MAX)),
            );
        }
        Ok(RowDiff {
            columns: columns.iter().map(|(c, _)| c.clone()).collect(),
            key: key.to_vec(),
            rows: kept,
            more,
        })
    }

    /// Folds the WAL into the database file (only ever on ducksafe's own temporary copy).
    pub fn checkpoint(&self) -> Result<(), DuckError> {
        self.execute_batch("FORCE CHECKPOINT")
    }

    /// Closes the database, reporting an error DuckDB raises while closing.
    /// Detaches an attached database (the instance lives on while another connection holds
    /// it); closes a database opened read-write, reporting an error DuckDB raises while closing
    /// (its checkpoint).
    pub fn close(mut self) -> Result<(), DuckError> {
        self.detach()?;
        let Some(conn) = self.conn.take() else {
            return Ok(());
        };
        let started = std::time::Instant::now();
        let closed = conn.close().map_err(|(_, e)| classify(&e));
        crate::timing::took("DuckDB connection closed", started);
        closed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_messages_yield_pid_and_holder() {
        let msg = "IO Error: Could not set lock on file \"/x/sim.duckdb\": Conflicting lock is held in /usr/bin/python3.11 (PID 4242) by user root. See also https://duckdb.org/docs/";
        assert_eq!(parse_pid(msg), Some(4242));
        assert_eq!(parse_holder(msg).as_deref(), Some("/usr/bin/python3.11"));
        assert_eq!(parse_pid("no pid here"), None);
    }

    #[test]
    fn scans_get_a_small_pool_unless_a_limit_is_configured_or_a_wal_exists() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("sim.duckdb");
        let threads = |t| Limits {
            memory_limit: None,
            threads: Some(t),
        };
        let pool = |l: &Limits| {
            l.scan_pool(&db)
                .map(|p| (p.memory_limit.unwrap(), p.threads))
        };
        assert_eq!(pool(&threads(1)), Some(("256MiB".into(), Some(1))));
        assert_eq!(pool(&threads(2)), Some(("256MiB".into(), Some(2))));
        assert_eq!(pool(&threads(16)), Some(("2048MiB".into(), Some(16))));
        // Unset threads: sized for, and passed as, the CPUs this process may use.
        let any = pool(&Limits::default()).unwrap();
        assert!(any.1.is_some_and(|t| t >= 1));
        let set = Limits {
            memory_limit: Some("3GB".into()),
            threads: Some(8),
        };
        assert_eq!(set.scan_pool(&db), None);
        std::fs::write(dir.path().join("sim.duckdb.wal"), b"x").unwrap();
        assert_eq!(threads(2).scan_pool(&db), None);
    }

    #[test]
    fn damage_and_a_full_disk_are_told_by_kind_not_by_words() {
        let corrupt = "IO Error: Corrupt database file: computed checksum 1 does not match stored checksum 2 in block at location 12288";
        assert!(matches!(classify_message(corrupt), DuckError::Corrupt(m) if m == corrupt));
        for full in [
            "IO Error: Could not write file \"x.duckdb\": No space left on device",
            "IO Error: Could not write file: Disk quota exceeded",
        ] {
            assert!(
                matches!(classify_message(full), DuckError::NoSpace(_)),
                "{full}"
            );
        }
        assert!(matches!(
            classify_message("Out of Memory Error: failed to allocate"),
            DuckError::OutOfMemory(_)
        ));
        assert!(matches!(
            classify_message("Binder Error: no such table"),
            DuckError::Failed(_)
        ));
    }

    /// A small database with two tables, and a byte copy of it: a source and its backup.
    fn source_and_copy(dir: &Path) -> (PathBuf, PathBuf) {
        let src = dir.join("sim.duckdb");
        let db = Db::open_read_write(&src, &Limits::default()).unwrap();
        db.execute_batch(
            "CREATE TABLE a AS SELECT range AS id, md5(range::VARCHAR) AS s FROM range(5000);
             CREATE TABLE b AS SELECT range AS id FROM range(100);",
        )
        .unwrap();
        db.close().unwrap();
        let copy = dir.join("copy.duckdb");
        std::fs::copy(&src, &copy).unwrap();
        (src, copy)
    }

    /// The access modes (`O_ACCMODE` bits) of this process's descriptors of `path`.
    fn access_modes(path: &Path) -> Vec<i32> {
        let want = std::fs::canonicalize(path).unwrap();
        let mut modes = Vec::new();
        for fd in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
            if std::fs::read_link(fd.path()).ok().as_deref() != Some(want.as_path()) {
                continue;
            }
            let info = format!("/proc/self/fdinfo/{}", fd.file_name().to_string_lossy());
            let Ok(text) = std::fs::read_to_string(info) else {
                continue;
            };
            let flags = text
                .lines()
                .find_map(|l| l.strip_prefix("flags:"))
                .and_then(|f| i32::from_str_radix(f.trim(), 8).ok())
                .unwrap();
            modes.push(flags & libc::O_ACCMODE);
        }
        modes
    }

    #[test]
    fn one_instance_reads_source_and_copy_read_only_and_lets_each_go_when_detached() {
        let dir = tempfile::tempdir().unwrap();
        let (src, copy) = source_and_copy(dir.path());
        let bytes = |p: &Path| std::fs::read(p).unwrap();
        let (src_before, copy_before) = (bytes(&src), bytes(&copy));
        let duck = Instance::start(&Limits::default()).unwrap();
        duck.warm().unwrap();
        let (s, _) = duck.attach_read_only(&src).unwrap();
        let (c, header) = duck.attach_read_only(&copy).unwrap();
        assert!(header.storage_version >= 64);
        for (db, path) in [(&s, &src), (&c, &copy)] {
            // Each connection reads its own database, by unqualified names.
            let names: Vec<String> = db
                .tables()
                .unwrap()
                .iter()
                .map(TableName::display)
                .collect();
            assert_eq!(names, ["main.a", "main.b"]);
            // DuckDB holds the file through read-only descriptors only...
            let modes = access_modes(path);
            assert!(!modes.is_empty(), "DuckDB holds `{}`", path.display());
            assert!(modes.iter().all(|m| *m == libc::O_RDONLY), "{modes:?}");
            // ...and refuses every write.
            for sql in [
                "CREATE TABLE c (i INTEGER)",
                "INSERT INTO a VALUES (1, 'x')",
                "DROP TABLE b",
                "ALTER TABLE a ADD COLUMN z INTEGER",
            ] {
                assert!(db.execute_batch(sql).is_err(), "{sql} was accepted");
            }
            // DuckDB accepts a checkpoint of a read-only database as a no-op: the bytes compared
            // at the end show it wrote nothing.
            let _ = db.execute_batch("FORCE CHECKPOINT");
        }
        assert_eq!(s.fingerprint(&s.tables().unwrap()[0]).unwrap().rows, 5000);
        // Detached: DuckDB holds nothing of the copy, though the instance still reads the source.
        c.close().unwrap();
        assert_eq!(access_modes(&copy), Vec::<i32>::new());
        assert_eq!(s.row_count(&s.tables().unwrap()[1]).unwrap(), 100);
        // A Db dropped without closing (a failure on the way) lets its file go too.
        drop(s);
        assert_eq!(access_modes(&src), Vec::<i32>::new());
        drop(duck);
        assert_eq!(bytes(&src), src_before);
        assert_eq!(bytes(&copy), copy_before);
    }

    /// Values DuckDB's `hash()` takes for one another, one pair per row: a table holding the
    /// first of each and one holding the second must not share a fingerprint, and `diff_rows`
    /// must name every row.
    #[test]
    fn nested_values_that_hash_alike_have_fingerprints_apart() {
        let pairs: [(&str, &str, &str); 9] = [
            ("STRUCT(x INTEGER)", "{'x': NULL}", "NULL"),
            ("INTEGER[]", "[NULL]", "[]"),
            ("INTEGER[][]", "[[1], [2]]", "[[1, 2]]"),
            ("INTEGER[]", "[]", "NULL"),
            (
                "MAP(VARCHAR, INTEGER[])",
                "MAP {'a': [1], 'b': [2]}",
                "MAP {'a': [1, 2], 'b': []}",
            ),
            (
                "UNION(n INTEGER, s VARCHAR)",
                "union_value(n := NULL::INTEGER)",
                "NULL",
            ),
            (
                "STRUCT(\"a b\" INTEGER[], c VARCHAR)[]",
                "[{'a b': [NULL], 'c': 'x'}]",
                "[{'a b': [], 'c': 'x'}]",
            ),
            (
                "INTEGER[2][]",
                "[[1, NULL]::INTEGER[2]]",
                "[[NULL, 1]::INTEGER[2]]",
            ),
            ("MAP(VARCHAR, INTEGER)", "MAP {}", "NULL"),
        ];
        let duck = Instance::start(&Limits::default()).unwrap();
        let conn = duck.conn.try_clone().unwrap();
        for (i, (ty, a, b)) in pairs.iter().enumerate() {
            conn.execute_batch(&format!(
                "CREATE TABLE a{i} (k INTEGER, v {ty}); INSERT INTO a{i} VALUES (1, {a});
                 CREATE TABLE b{i} (k INTEGER, v {ty}); INSERT INTO b{i} VALUES (1, {b});"
            ))
            .unwrap();
        }
        let db = Db {
            conn: Some(conn),
            attached: None,
        };
        for (i, (ty, a, b)) in pairs.iter().enumerate() {
            let name = |p: &str| TableName {
                schema: "main".into(),
                name: format!("{p}{i}"),
            };
            let (fa, fb) = (
                db.fingerprint(&name("a")).unwrap(),
                db.fingerprint(&name("b")).unwrap(),
            );
            assert!(fa.nested == Some(true) && fa.comparable(&fb));
            assert_ne!(fa, fb, "{ty}: {a} and {b} share a fingerprint");
            // The same rows hash alike: a copy of a table has its fingerprint.
            db.execute_batch(&format!("CREATE TABLE c{i} AS FROM a{i}"))
                .unwrap();
            assert_eq!(db.fingerprint(&name("c")).unwrap(), fa, "{ty}");
            // The rows' narrowing by hash keeps both rows, keyed or not.
            let columns = [("k".to_owned(), true), ("v".to_owned(), true)];
            let shapes = db.shapes(&name("a").quoted()).unwrap();
            for key in [&[][..], &["k".to_owned()][..]] {
                let sql = if key.is_empty() {
                    whole_rows_sql(
                        &name("a").quoted(),
                        &name("b").quoted(),
                        &columns,
                        &shapes,
                        10,
                    )
                } else {
                    keyed_rows_sql(
                        &name("a").quoted(),
                        &name("b").quoted(),
                        &columns,
                        &shapes,
                        key,
                        10,
                    )
                };
                let n: i64 = db
                    .conn()
                    .query_row(&format!("SELECT count(*) FROM ({sql})"), [], |r| r.get(0))
                    .unwrap();
                assert_eq!(n, if key.is_empty() { 2 } else { 1 }, "{ty}, key {key:?}");
            }
        }
    }

    /// What the outside attack on the structural hash found: an unnamed struct (DuckDB's
    /// `ROW`) is taken apart by position; swapped field names are other rows; a column named
    /// like ducksafe's own alias is read as a column; deep nesting binds a bounded number of
    /// lambdas and still tells deep values apart; tables that gained or lost a nested column
    /// stay comparable.
    #[test]
    fn nested_odd_shapes_hash_apart_and_bounded() {
        let duck = Instance::start(&Limits::default()).unwrap();
        let db = Db {
            conn: Some(duck.conn.try_clone().unwrap()),
            attached: None,
        };
        let t = |n: &str| TableName {
            schema: "main".into(),
            name: n.into(),
        };
        let fp = |n: &str| db.fingerprint(&t(n)).unwrap();
        db.execute_batch(
            "CREATE TABLE row_a AS SELECT 1 AS k, row(1, NULL) AS v;
             CREATE TABLE row_b AS SELECT 1 AS k, CASE WHEN false THEN row(1, NULL) END AS v;
             CREATE TABLE ab AS SELECT {'a': 1, 'b': 2} AS s;
             CREATE TABLE ba AS SELECT {'b': 1, 'a': 2} AS s;
             CREATE TABLE own_a (v INTEGER[], __ducksafe_row STRUCT(k INTEGER));
             INSERT INTO own_a VALUES ([NULL], {'k': 1});
             CREATE TABLE own_b AS FROM own_a; UPDATE own_b SET v = [];
             CREATE TABLE deep_a (v INTEGER[][][][][][][][][][][][][][][][][]);
             INSERT INTO deep_a VALUES ([[[[[[[[[[[[[[[[[NULL]]]]]]]]]]]]]]]]]);
             CREATE TABLE deep_b AS FROM deep_a;
             UPDATE deep_b SET v = [[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]];",
        )
        .unwrap();
        for (a, b) in [
            ("row_a", "row_b"),
            ("ab", "ba"),
            ("own_a", "own_b"),
            ("deep_a", "deep_b"),
        ] {
            let (fa, fb) = (fp(a), fp(b));
            assert_eq!(fa.nested, Some(true), "{a}");
            assert_ne!(fa, fb, "{a} and {b} share a fingerprint");
        }
        let deep = db.shapes(&t("deep_a").quoted()).unwrap();
        let sql = row_hash_of("t", &deep);
        assert_eq!(sql.matches("lambda").count(), MAX_LAMBDA_DEPTH, "{sql}");
        // A table that gained a nested column: both fingerprints computed the same way.
        let (then, now) = (fp("row_a"), {
            let mut f = fp("row_a");
            f.nested = Some(false);
            f
        });
        assert!(
            then.comparable(&now) && then == now,
            "equal figures are equal"
        );
        let old = Fingerprint {
            nested: None,
            ..then.clone()
        };
        assert!(!old.comparable(&then) && old.comparable(&now));
    }

    #[test]
    fn fingerprint_names_every_column_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cols.duckdb");
        let db = Db::open_read_write(&path, &Limits::default()).unwrap();
        db.execute_batch(
            r#"CREATE SCHEMA "odd ""schema";
               CREATE TABLE "odd ""schema"."t 1" (
                   a INTEGER, "we""ird, col" VARCHAR, "T" STRUCT(x INTEGER, y VARCHAR),
                   d INTEGER[], n DOUBLE, g INTEGER GENERATED ALWAYS AS (a * 2) VIRTUAL);
               INSERT INTO "odd ""schema"."t 1" (a, "we""ird, col", "T", d, n)
                   SELECT i, i::VARCHAR, {'x': i, 'y': 'q'}, [i, i + 1],
                          CASE WHEN i % 7 = 0 THEN NULL ELSE i / 3 END
                   FROM range(3000) r(i);
               CREATE TABLE e (i INTEGER);"#,
        )
        .unwrap();
        db.close().unwrap();
        let db = Db::open_read_only(&path, &Limits::default()).unwrap();
        for t in db.tables().unwrap() {
            // The reference: the columns named one by one, as the catalog lists them.
            let cols = db.columns(&t).unwrap();
            let named = cols.iter().map(|c| quote_ident(c)).collect::<Vec<_>>();
            let reference = db
                .conn()
                .query_row(
                    &format!(
                        "SELECT count(*), sum(h)::HUGEINT::VARCHAR, bit_xor(h) FROM (SELECT hash({}) AS h FROM {} AS t)",
                        named.join(", "),
                        t.quoted()
                    ),
                    [],
                    |r| {
                        Ok(Fingerprint {
                            rows: r.get::<_, i64>(0)?.unsigned_abs(),
                            sum_hash: r.get(1)?,
                            xor_hash: r.get(2)?,
                            nested: None,
                        })
                    },
                )
                .unwrap();
            let got = db.fingerprint(&t).unwrap();
            if t.name == "e" {
                // No nested column: DuckDB's hash of the columns, as before.
                assert_eq!(got, reference, "{}", t.display());
            } else {
                // A struct and a list: hashed by structure, and said to be.
                assert!(got.nested == Some(true) && !got.comparable(&reference));
                assert_eq!(got.rows, reference.rows);
                assert_ne!(got.sum_hash, reference.sum_hash);
            }
        }
        assert_eq!(
            db.columns(&TableName {
                schema: "odd \"schema".into(),
                name: "t 1".into()
            })
            .unwrap()
            .len(),
            6,
            "the generated column is hashed too"
        );
    }

    #[test]
    fn quoted_name_lists_split_on_commas_outside_quotes() {
        assert_eq!(split_quoted(r#""a","b""c","d,e""#), ["a", "b\"c", "d,e"]);
        assert_eq!(split_quoted(""), Vec::<String>::new());
    }

    #[test]
    fn header_without_magic_is_refused() {
        let buf = vec![0u8; HEADER_BYTES];
        assert!(matches!(parse_header(&buf), Err(DuckError::NotDatabase(_))));
    }

    #[test]
    fn wal_paths_cover_every_companion() {
        let p = wal_paths(Path::new("/d/sim.duckdb"));
        assert_eq!(
            p,
            vec![
                PathBuf::from("/d/sim.duckdb.wal"),
                PathBuf::from("/d/sim.duckdb.wal.checkpoint"),
                PathBuf::from("/d/sim.duckdb.wal.recovery"),
            ]
        );
    }
}
