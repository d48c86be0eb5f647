//! `ducksafe list`: the stored backups, newest first, with totals.

use serde::Serialize;

use super::Global;
use crate::engine::journal::{self, Pending};
use crate::engine::store::Store;
use crate::files;
use crate::report::{self, size};

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
}

pub fn run(g: &Global) -> i32 {
    let settings = match super::load_settings(g) {
        Ok(s) => s,
        Err(e) => return super::fail(g, &e),
    };
    // An interrupted restore comes first, whatever else the listing says.
    let pending = journal::pending(&settings);
    if !g.json {
        report::print_pending(&pending);
        if let Some(t) = journal::marker_trouble(&settings) {
            println!("{t}");
        }
    }
    let store = match Store::open(&settings.backup_dir, false) {
        Ok(s) => s,
        // Before the first backup there is nothing to list: not an error.
        Err(crate::error::Error::NoBackupDir { dir }) => {
            if g.json {
                report::print_json_pretty(&serde_json::json!({
                    "backup_dir": dir.display().to_string(),
                    "unfinished_restores": pending,
                    "backups": [],
                    "unmanaged": [],
                    "total_bytes": 0,
                }));
            } else {
                println!(
                    "no backups yet: `{}` does not exist (the first backup creates it)",
                    dir.display()
                );
            }
            return 0;
        }
        Err(e) => return super::fail(g, &e),
    };
    // Only this database's backups are listed as backups; another's are notes.
    let store = match crate::engine::identity::check(store.dir(), &settings) {
        Ok(owner) => store.owned_by(owner),
        Err(e) => return super::fail(g, &e),
    };
    let inv = match store.inventory() {
        Ok(i) => i,
        Err(e) => return super::fail(g, &e),
    };
    let now = crate::clock::now();
    let latest = store.latest_id();
    let proven = inv
        .backups
        .iter()
        .find(|b| b.manifest.verification.fully_verified())
        .map(|b| b.id.clone());
    let rows: Vec<Row> = inv
        .backups
        .iter()
        .map(|b| Row {
            id: b.id.clone(),
            created_at: b
                .manifest
                .created_at
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            age_seconds: (now - b.manifest.created_at).num_seconds(),
            bytes: b.file_bytes.unwrap_or(0),
            tables: b.manifest.tables.len(),
            rows: b.manifest.total_rows(),
            verified: !b.manifest.verification.checks.is_empty(),
            verification_level: b.manifest.verification.level.clone(),
            pinned: b.manifest.pinned,
            latest: latest.as_deref() == Some(b.id.as_str()),
            newest_fully_verified: proven.as_deref() == Some(b.id.as_str()),
            wal_folded: b.manifest.source.wal_folded,
        })
        .collect();
    let listing = Listing {
        backup_dir: settings.backup_dir.display().to_string(),
        unfinished_restores: pending,
        total_bytes: Store::used_bytes(&inv),
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
        warnings: store.warnings(&inv, now),
    };
    if g.json {
        report::print_json_pretty(&listing);
        return 0;
    }
    print_table(&listing);
    0
}

/// The listing for people.
fn print_table(listing: &Listing) {
    if listing.backups.is_empty() {
        println!("no backups in `{}`", listing.backup_dir);
    } else {
        println!(
            "{:<36} {:<20} {:>8} {:>10} {:>6} {:>10}  {:<9} FLAGS",
            "ID", "CREATED (UTC)", "AGE", "SIZE", "TABLES", "ROWS", "VERIFIED"
        );
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
            println!(
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
            );
        }
    }
    println!(
        "{} backup(s), {} used in `{}`; {} free",
        listing.backups.len(),
        size(listing.total_bytes),
        listing.backup_dir,
        size(listing.available_bytes)
    );
    for u in &listing.unmanaged {
        println!("note: `{}`: {}; ducksafe never deletes it", u.file, u.why);
    }
    report::print_warnings(&listing.warnings);
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
