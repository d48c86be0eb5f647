//! `ducksafe list`: the stored backups, newest first, with totals.

use std::io::{self, Write};

use serde::Serialize;

use super::{Access, Global};
use crate::engine::journal::{self, Pending};
use crate::error::Error;
use crate::files;
use crate::output::{self, size, Failure, Report};

#[derive(Debug, Serialize)]
#[allow(clippy::struct_excessive_bools)] // a report row: each flag is a column
struct Row {
    id: String,
    created_at: String,
    age_seconds: i64,
    bytes: u64,
    tables: usize,
    rows: Option<u64>,
    verified: bool,
    verification_level: String,
    pinned: bool,
    latest: bool,
    /// The newest backup verified by a full scan of every table: rotation never deletes it.
    newest_fully_verified: bool,
    wal_folded: bool,
    /// `plain` (its own `.duckdb` file) or `packed` (in the block store; `ducksafe restore`
    /// rebuilds it).
    storage: &'static str,
    /// Bytes on disk held for this backup alone (about what deleting it frees).
    own_bytes: u64,
    /// Bytes on disk this backup shares with other backups (blocks in common).
    shared_bytes: u64,
}

#[derive(Debug, Serialize)]
struct Unmanaged {
    file: String,
    why: String,
}

#[derive(Debug, Serialize)]
struct Listing {
    backup_dir: String,
    /// Restores that were interrupted (journal `prepared`): listed first, with the ways out.
    unfinished_restores: Vec<Pending>,
    backups: Vec<Row>,
    /// Files that look like backups but have no usable ducksafe manifest (never deleted by
    /// ducksafe), each with why.
    unmanaged: Vec<Unmanaged>,
    total_bytes: u64,
    available_bytes: u64,
    /// Backups dated in the future, a `latest.duckdb` that names no backup.
    warnings: Vec<String>,
    /// A restore journal that is lost or unreadable, said first in text mode.
    #[serde(skip)]
    marker_trouble: Option<String>,
}

/// Before the first backup there is nothing to list: not an error. Fields in alphabetical
/// order, as the JSON has always listed them.
#[derive(Debug, Serialize)]
struct NoBackupsYet {
    backup_dir: String,
    backups: [Row; 0],
    total_bytes: u64,
    unfinished_restores: Vec<Pending>,
    unmanaged: [Unmanaged; 0],
    #[serde(skip)]
    marker_trouble: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(untagged)]
enum ListReport {
    NoBackupsYet(NoBackupsYet),
    Listing(Listing),
}

impl Report for ListReport {
    fn text(&self, out: &mut dyn Write) -> io::Result<()> {
        match self {
            ListReport::NoBackupsYet(r) => {
                first(out, &r.unfinished_restores, r.marker_trouble.as_deref())?;
                writeln!(
                    out,
                    "no backups yet: `{}` does not exist (the first backup creates it)",
                    r.backup_dir
                )
            }
            ListReport::Listing(l) => {
                first(out, &l.unfinished_restores, l.marker_trouble.as_deref())?;
                table(out, l)
            }
        }
    }

    fn warnings(&self) -> &[String] {
        match self {
            ListReport::NoBackupsYet(_) => &[],
            ListReport::Listing(l) => &l.warnings,
        }
    }
}

/// What comes first, whatever else the listing says: interrupted restores, and a restore
/// journal that is lost.
fn first(out: &mut dyn Write, pending: &[Pending], trouble: Option<&str>) -> io::Result<()> {
    output::pending_text(out, pending)?;
    if let Some(t) = trouble {
        writeln!(out, "{t}")?;
    }
    Ok(())
}

pub fn run(g: &Global) -> i32 {
    output::finish(g.json, list(g))
}

fn list(g: &Global) -> Result<ListReport, Failure> {
    let settings = g.settings()?;
    // An interrupted restore comes first, whatever else the listing says.
    let pending = journal::pending(&settings);
    let marker_trouble = journal::marker_trouble(&settings);
    // They come first even when the listing then fails.
    let stopped = |error: Error| {
        let mut preface = Vec::new();
        let _ = first(&mut preface, &pending, marker_trouble.as_deref());
        Failure {
            preface: preface.into(),
            ..error.into()
        }
    };
    let opened = match super::open_store(&settings, Access::Read) {
        Ok(o) => o,
        Err(Error::NoBackupDir { dir }) => {
            return Ok(ListReport::NoBackupsYet(NoBackupsYet {
                backup_dir: dir.display().to_string(),
                backups: [],
                total_bytes: 0,
                unfinished_restores: pending,
                unmanaged: [],
                marker_trouble,
            }))
        }
        Err(error) => return Err(stopped(error)),
    };
    let store = &opened.store;
    let inv = store.inventory().map_err(stopped)?;
    let now = crate::clock::now();
    let latest = store.latest_id();
    let proven = inv
        .backups
        .iter()
        .find(|b| b.manifest.verification.fully_verified())
        .map(|b| b.id.clone());
    let usage = store.usage(&inv);
    let rows: Vec<Row> = inv
        .backups
        .iter()
        .zip(&usage)
        .map(|(b, u)| Row {
            id: b.id.clone(),
            created_at: b
                .manifest
                .created_at
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            age_seconds: (now - b.manifest.created_at).num_seconds(),
            bytes: b.file_bytes.unwrap_or(u.own),
            tables: b.manifest.tables.len(),
            rows: b.manifest.total_rows(),
            verified: !b.manifest.verification.checks.is_empty(),
            verification_level: b.manifest.verification.level.clone(),
            pinned: b.manifest.pinned,
            latest: latest.as_deref() == Some(b.id.as_str()),
            newest_fully_verified: proven.as_deref() == Some(b.id.as_str()),
            wal_folded: b.manifest.source.wal_folded,
            storage: if b.manifest.storage.is_plain() {
                "plain"
            } else {
                "packed"
            },
            own_bytes: u.own,
            shared_bytes: u.shared,
        })
        .collect();
    Ok(ListReport::Listing(Listing {
        backup_dir: settings.backup_dir.display().to_string(),
        unfinished_restores: pending,
        total_bytes: store.real_bytes(&inv),
        available_bytes: files::fs_space(store.dir()).map_or(0, |s| s.available_bytes),
        unmanaged: inv
            .unmanaged
            .iter()
            .map(|(file, why)| Unmanaged {
                file: file.clone(),
                why: why.clone(),
            })
            .collect(),
        backups: rows,
        warnings: crate::engine::loose_folders(&settings)
            .into_iter()
            .chain(store.inventory_warnings(&inv, now))
            .collect(),
        marker_trouble,
    }))
}

/// The listing for people.
fn table(out: &mut dyn Write, listing: &Listing) -> io::Result<()> {
    if listing.backups.is_empty() {
        writeln!(out, "no backups in `{}`", listing.backup_dir)?;
    } else {
        writeln!(
            out,
            "{:<36} {:<20} {:>8} {:>10} {:>6} {:>10}  {:<9} FLAGS",
            "ID", "CREATED (UTC)", "AGE", "SIZE", "TABLES", "ROWS", "VERIFIED"
        )?;
        for r in &listing.backups {
            let mut flags = Vec::new();
            if r.latest {
                flags.push("latest");
            }
            if r.pinned {
                flags.push("pinned");
            }
            if r.newest_fully_verified {
                flags.push("newest-full");
            }
            if r.wal_folded {
                flags.push("wal-folded");
            }
            if r.storage == "packed" {
                flags.push("packed");
            }
            writeln!(
                out,
                "{:<36} {:<20} {:>8} {:>10} {:>6} {:>10}  {:<9} {}",
                r.id,
                r.created_at.replace('T', " ").trim_end_matches('Z'),
                age(r.age_seconds),
                size(r.bytes),
                r.tables,
                r.rows.map_or_else(|| "-".to_owned(), |n| n.to_string()),
                if r.verified {
                    r.verification_level.as_str()
                } else {
                    "no"
                },
                flags.join(",")
            )?;
        }
    }
    writeln!(
        out,
        "{} backup(s), {} used in `{}`; {} free",
        listing.backups.len(),
        size(listing.total_bytes),
        listing.backup_dir,
        size(listing.available_bytes)
    )?;
    if listing.backups.iter().any(|r| r.storage == "packed") {
        writeln!(
            out,
            "a packed backup's SIZE is the bytes held for it alone; the rest of it is shared with the others (`--json`: own_bytes, shared_bytes); `ducksafe restore ID` rebuilds it"
        )?;
    }
    for u in &listing.unmanaged {
        writeln!(
            out,
            "note: `{}`: {}; ducksafe never deletes it",
            u.file, u.why
        )?;
    }
    Ok(())
}

fn age(secs: i64) -> String {
    match secs {
        s if s < 0 => "future".into(),
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}
