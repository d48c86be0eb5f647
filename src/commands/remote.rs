//! The operator's commands on the off-machine copies (`REMOTE_URL`): `push`, `list --remote`,
//! `verify --remote [ID|--all] [--read-data]` and `restore --remote latest|ID`. Each builds one
//! report; the work is [`crate::remote`]'s, and a restore is the local one
//! ([`crate::engine::restore`]) once the remote backup is downloaded, proven and published in
//! the backup directory.

use std::io::{self, Write};

use serde::Serialize;

use super::verify::Checked;
use super::{Access, Global};
use crate::config::Settings;
use crate::engine::manifest::Storage;
use crate::engine::store::Store;
use crate::error::{Error, RemoteFailure, Result};
use crate::output::{self, Report};
use crate::protocol::RemoteCopy;
use crate::remote::{Inventory, Pruned, Remote, RemoteBackup};

fn remote_of(settings: &Settings) -> Result<Remote> {
    Remote::of(settings)?.ok_or_else(|| {
        Error::Usage(
            "no remote is configured: set `REMOTE_URL` (e.g. `s3://my-backups/ducksafe/simulation`) in the configuration or `DUCKSAFE_REMOTE_URL`; see docs/remote.md".into(),
        )
    })
}

/// Uploads what the remote lacks, cleans up after interrupted uploads, applies remote
/// retention. Shared by `push` and pre_run (with only the new backup).
pub struct PushOutcome {
    pub uploaded: Vec<RemoteCopy>,
    /// Packs uploaded: (key, bytes).
    pub packs: Vec<(String, u64)>,
    pub skipped: Vec<String>,
    pub cleaned: Vec<String>,
    pub pruned: Vec<Pruned>,
    /// What was kept on purpose (a full copy a packed backup is rebuilt from).
    pub notes: Vec<String>,
    /// Remote backups that cannot be rebuilt as they stand (a pack or their full copy missing).
    pub problems: Vec<String>,
}

/// Uploads the local backups `ids` names (all when `None`) under the directory lock: full
/// backups as files; packed ones (the block store's) as their packs and a record leaning on
/// the newest full copy, which also converts the remote's full copies of backups packed since
/// (pre_run: only those the remote already holds). Then deletes what that made unneeded,
/// cleans up after interrupted uploads and applies remote retention.
pub fn push_backups(
    settings: &Settings,
    remote: &Remote,
    ids: Option<&[String]>,
) -> Result<PushOutcome> {
    let opened = super::open_store(settings, Access::Change { dry_run: false })?;
    let store = &opened.store;
    let mut cleaned: Vec<String> = remote.abort_interrupted()?.into_iter().collect();
    cleaned.extend(crate::remote::packed::sweep_scratch(store.dir()));
    cleaned.extend(crate::remote::packed::sweep_scratch(
        crate::files::parent_of(&settings.db_path),
    ));
    let inv = store.inventory()?;
    // Read before anything goes up: a prefix that holds another database's backups is
    // refused here, with nothing uploaded (`remote_conflict`).
    let before = remote.inventory()?;
    let mut uploaded = Vec::new();
    // Oldest first: an outage's backlog arrives in the order it was made.
    for entry in inv.backups.iter().rev() {
        if ids.is_some_and(|ids| !ids.contains(&entry.id))
            || entry.manifest.storage == Storage::Packed
        {
            continue;
        }
        // A backup the remote holds packed (a full one rebuilt from it on this machine) is
        // not uploaded a second time in full.
        let listed = before.get(&entry.id);
        let held_packed = listed.filter(|b| b.is_packed());
        if held_packed.is_some_and(|b| b.record.sha256.eq_ignore_ascii_case(&entry.manifest.sha256))
        {
            continue;
        }
        uploaded.push(remote.upload(store, entry, listed)?);
    }
    let mut remote_inv = if uploaded.iter().all(|u| u.state != "uploaded") {
        before
    } else {
        remote.inventory()?
    };
    let packed = remote.push_packed(store, &inv, &remote_inv, ids.is_some())?;
    if !packed.copies.is_empty() {
        remote_inv = remote.inventory()?;
    }
    uploaded.extend(packed.copies);
    let tidied = remote.tidy(&remote_inv)?;
    cleaned.extend(remote.clean_orphans(&remote_inv)?);
    cleaned.extend(tidied.removed);
    if !cleaned.is_empty() {
        remote_inv = remote.inventory()?;
    }
    // A backup pinned here after it was uploaded is pinned there too: its remote record still
    // says what it said at upload.
    for b in &mut remote_inv.backups {
        if inv
            .backups
            .iter()
            .any(|l| l.id == b.id && l.manifest.pinned)
        {
            b.manifest.pinned = true;
        }
    }
    let pruned = remote.prune(&remote_inv, crate::clock::now(), false)?;
    let (mut notes, mut problems) = (tidied.notes, tidied.problems);
    if pruned.iter().any(|p| p.outcome.starts_with("deleted")) {
        // What only the deleted backups needed: packs, and a full copy that a deleted packed
        // backup (one local rotation removed already, so it could not move onto the newest
        // copy) still leaned on. Left for the next run, the remote would hold two full copies
        // until then.
        let again = remote.tidy(&remote.inventory()?)?;
        cleaned.extend(again.removed);
        notes = again.notes;
        problems = again.problems;
    }
    Ok(PushOutcome {
        uploaded,
        packs: packed.packs,
        skipped: packed.warnings,
        cleaned,
        pruned,
        notes,
        problems,
    })
}

#[derive(Debug, Serialize)]
struct PushedPack {
    key: String,
    bytes: u64,
}

#[derive(Debug, Serialize)]
struct PushReport {
    remote: String,
    uploaded: Vec<RemoteCopy>,
    /// Packs of the block store uploaded.
    packs: Vec<PushedPack>,
    cleaned: Vec<String>,
    pruned: Vec<Pruned>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    warnings: Vec<String>,
}

impl Report for PushReport {
    fn text(&self, out: &mut dyn Write) -> io::Result<()> {
        // In the order they went up: full copies, packs, then the packed records.
        let line = |out: &mut dyn Write, u: &RemoteCopy| {
            let verb = match (u.state.as_str(), u.parts) {
                ("uploaded", 0) => "packed",
                ("uploaded", _) => "uploaded",
                _ => "already there",
            };
            writeln!(
                out,
                "{verb:<13} {}  {}  {:.1}s",
                u.key,
                output::size(u.bytes),
                u.seconds
            )
        };
        for u in self.uploaded.iter().filter(|u| u.parts > 0) {
            line(out, u)?;
        }
        for p in &self.packs {
            writeln!(out, "{:<13} {}  {}", "pack", p.key, output::size(p.bytes))?;
        }
        for u in self.uploaded.iter().filter(|u| u.parts == 0) {
            line(out, u)?;
        }
        for c in &self.cleaned {
            writeln!(out, "cleaned       {c}")?;
        }
        for p in &self.pruned {
            writeln!(out, "{:<13} {}  {}", p.outcome, p.id, p.reason)?;
        }
        if self.uploaded.is_empty() {
            writeln!(out, "no local backups to push to {}", self.remote)?;
        }
        Ok(())
    }

    fn warnings(&self) -> &[String] {
        &self.warnings
    }
}

/// `ducksafe push`.
pub fn push(g: &Global) -> i32 {
    g.show_progress();
    let report = (|| {
        let settings = g.settings()?;
        let remote = remote_of(&settings)?;
        let o = push_backups(&settings, &remote, None)?;
        Ok::<_, Error>(PushReport {
            remote: remote.url(),
            uploaded: o.uploaded,
            packs: o
                .packs
                .into_iter()
                .map(|(key, bytes)| PushedPack { key, bytes })
                .collect(),
            cleaned: o.cleaned,
            pruned: o.pruned,
            warnings: remote
                .warning
                .iter()
                .cloned()
                .chain(o.skipped)
                .chain(o.problems)
                .chain(o.notes)
                .collect(),
        })
    })();
    output::finish(g.json, report.map_err(Into::into))
}

#[derive(Debug, Serialize)]
struct ListedRemote {
    id: String,
    created_at: String,
    bytes: u64,
    sha256: String,
    parts: u64,
    pinned: bool,
    /// `full` (its own `.duckdb` object) or `packed` (packs plus the full copy of `base`).
    storage: String,
    /// Bytes on the remote that only this backup needs: its data object, or the packs no
    /// other backup's record names.
    own_bytes: u64,
    /// A packed backup's packs, all of them (shared with other backups or not).
    pack_bytes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    base: Option<String>,
    /// `present`, or `missing` when the data object is gone though its manifest is there.
    data: String,
}

#[derive(Debug, Serialize)]
struct ListReport {
    remote: String,
    backups: Vec<ListedRemote>,
    /// Data objects without a manifest (interrupted uploads): not backups.
    orphans: Vec<String>,
    unreadable: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    warnings: Vec<String>,
}

impl Report for ListReport {
    fn text(&self, out: &mut dyn Write) -> io::Result<()> {
        writeln!(out, "remote backups in {}:", self.remote)?;
        for b in &self.backups {
            let kept = if b.storage == "packed" {
                format!(
                    "packed: {} in packs ({} its own){}",
                    output::size(b.pack_bytes),
                    output::size(b.own_bytes),
                    b.base
                        .as_ref()
                        .map_or_else(String::new, |base| format!(" + {base}"))
                )
            } else {
                "full".to_owned()
            };
            writeln!(
                out,
                "  {:<36} {}  {:>10}  {kept}{}{}",
                b.id,
                b.created_at,
                output::size(b.bytes),
                match b.data.as_str() {
                    "present" => "",
                    "incomplete" => "  INCOMPLETE",
                    _ => "  DATA MISSING",
                },
                if b.pinned { " pinned" } else { "" }
            )?;
        }
        if self.backups.is_empty() {
            writeln!(out, "  none")?;
        }
        Ok(())
    }

    fn warnings(&self) -> &[String] {
        &self.warnings
    }
}

fn listed(remote: &Remote, inv: &Inventory, b: &RemoteBackup) -> ListedRemote {
    ListedRemote {
        storage: if b.is_packed() { "packed" } else { "full" }.into(),
        own_bytes: Remote::own_bytes(inv, b),
        pack_bytes: b.record.packs.iter().map(|p| p.bytes).sum(),
        base: b.record.base.clone(),
        id: b.id.clone(),
        created_at: b
            .manifest
            .created_at
            .format("%Y-%m-%d %H:%M:%S UTC")
            .to_string(),
        bytes: b.record.bytes,
        sha256: b.record.sha256.clone(),
        parts: b.record.parts,
        pinned: b.manifest.pinned,
        // A packed backup's data is its packs and its base's full copy.
        data: if b.is_packed() {
            if remote.missing_of(inv, b).is_some() {
                "incomplete"
            } else {
                "present"
            }
        } else if b.data_size.is_some() {
            "present"
        } else {
            "missing"
        }
        .into(),
    }
}

fn inventory_warnings(remote: &Remote, inv: &Inventory) -> Vec<String> {
    inv.orphans
        .iter()
        .map(|o| {
            format!(
                "`{}` has no manifest: an interrupted upload, not a backup (the next push or pre_run deletes it)",
                remote.location().key(o)
            )
        })
        .chain(inv.unreadable.iter().map(|(n, why)| {
            format!("`{}` cannot be trusted: {why}", remote.location().key(n))
        }))
        .collect()
}

/// `ducksafe list --remote`.
pub fn list(g: &Global) -> i32 {
    let report = (|| {
        let settings = g.settings()?;
        let remote = remote_of(&settings)?;
        let inv = remote.inventory()?;
        Ok::<_, Error>(ListReport {
            remote: remote.url(),
            backups: inv
                .backups
                .iter()
                .map(|b| listed(&remote, &inv, b))
                .collect(),
            orphans: inv
                .orphans
                .iter()
                .map(|o| remote.location().key(o))
                .collect(),
            unreadable: inv
                .unreadable
                .iter()
                .map(|(n, _)| remote.location().key(n))
                .collect(),
            warnings: remote
                .warning
                .iter()
                .cloned()
                .chain(inventory_warnings(&remote, &inv))
                .chain(inv.backups.iter().filter_map(|b| {
                    remote.missing_of(&inv, b).map(|why| {
                        format!(
                            "remote backup `{}` cannot be rebuilt as it stands ({why}): `ducksafe push` uploads what this machine still has",
                            b.id
                        )
                    })
                }))
                .collect(),
        })
    })();
    output::finish(g.json, report.map_err(Into::into))
}

#[derive(Debug, Serialize)]
struct VerifyReport {
    remote: String,
    read_data: bool,
    backups: Vec<Checked>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    warnings: Vec<String>,
    #[serde(skip)]
    errors: Vec<Error>,
}

impl Report for VerifyReport {
    fn text(&self, out: &mut dyn Write) -> io::Result<()> {
        super::verify::checked_lines(out, &self.backups)
    }

    fn warnings(&self) -> &[String] {
        &self.warnings
    }

    fn failure(&self) -> Option<(Vec<crate::protocol::ErrorEntry>, i32)> {
        let first = self.errors.first()?;
        Some((
            self.errors.iter().flat_map(Error::entries).collect(),
            first.exit_code(),
        ))
    }
}

/// Picks a remote backup: `latest` (the newest) or an id.
fn pick<'a>(remote: &Remote, inv: &'a Inventory, selector: &str) -> Result<&'a RemoteBackup> {
    if selector == "latest" && inv.databases.len() > 1 {
        return Err(Error::Remote {
            failure: RemoteFailure::Conflict,
            url: remote.url(),
            why: format!(
                "the prefix holds the backups of {} databases ({}), so `latest` could be another database's: name the backup by its id (`ducksafe list --remote` shows each one's database)",
                inv.databases.len(),
                inv.databases.iter().cloned().collect::<Vec<_>>().join(", ")
            ),
        });
    }
    let found = if selector == "latest" {
        inv.backups.first()
    } else {
        inv.backups.iter().find(|b| b.id == selector)
    };
    found.ok_or_else(|| Error::Remote {
        failure: RemoteFailure::NotFound,
        url: remote.url(),
        why: if selector == "latest" {
            "there are no remote backups yet".into()
        } else {
            format!("no remote backup `{selector}`")
        },
    })
}

/// Where a packed remote backup's downloads go while it is rebuilt: the backup directory when
/// it exists, else the database's folder.
fn scratch_dir(settings: &Settings) -> std::path::PathBuf {
    // One a killed run left beside the database (before the backup directory existed) goes
    // now, whichever folder this run uses.
    crate::remote::packed::sweep_scratch(crate::files::parent_of(&settings.db_path));
    if settings.backup_dir.is_dir() {
        settings.backup_dir.clone()
    } else {
        crate::files::parent_of(&settings.db_path).to_path_buf()
    }
}

/// `ducksafe verify --remote [ID|--all] [--read-data]`: the size (and ETag) from the store, and
/// with `--read-data` a download and hash of each. A failure exits 74.
pub fn verify(g: &Global, id: Option<&str>, all: bool, read_data: bool) -> i32 {
    g.show_progress();
    let report = (|| {
        let settings = g.settings()?;
        let remote = remote_of(&settings)?;
        let inv = remote.inventory()?;
        let chosen: Vec<&RemoteBackup> = if all {
            inv.backups.iter().collect()
        } else {
            vec![pick(&remote, &inv, id.unwrap_or("latest"))?]
        };
        let mut backups = Vec::new();
        let mut errors = Vec::new();
        let scratch = scratch_dir(&settings);
        for b in chosen {
            match remote.verify(&inv, b, read_data, &scratch) {
                Ok(checks) => backups.push(Checked {
                    id: b.id.clone(),
                    ok: true,
                    checks,
                    error: None,
                }),
                Err(e) => {
                    backups.push(Checked {
                        id: b.id.clone(),
                        ok: false,
                        checks: Vec::new(),
                        error: Some(e.to_string()),
                    });
                    errors.push(e);
                }
            }
        }
        if all {
            for (n, why) in &inv.unreadable {
                errors.push(Error::Remote {
                    failure: RemoteFailure::Corrupt,
                    url: remote.url(),
                    why: format!("`{}` cannot be trusted: {why}", remote.location().key(n)),
                });
            }
        }
        Ok::<_, Error>(VerifyReport {
            remote: remote.url(),
            read_data,
            backups,
            warnings: inventory_warnings(&remote, &inv),
            errors,
        })
    })();
    output::finish(g.json, report.map_err(Into::into))
}

/// Downloads the remote backup `selector` names into the backup directory (created when
/// missing; on an empty machine this database becomes its owner, under the backup's database
/// id), unless it is there already. Returns the backup's id: the local restore takes it from
/// there.
pub fn fetch_for_restore(settings: &Settings, selector: &str, dry_run: bool) -> Result<String> {
    let remote = remote_of(settings)?;
    let inv = remote.inventory()?;
    let b = pick(&remote, &inv, selector)?;
    let store = Store::open(&settings.backup_dir, !dry_run)?;
    let _lock = if dry_run {
        None
    } else {
        Some(store.lock_only()?)
    };
    let owner = crate::engine::identity::check(store.dir(), settings)?;
    if let (Some(ours), Some(theirs)) = (&owner.id, &b.manifest.source.database_id) {
        if ours != theirs {
            return Err(Error::SharedBackupDir {
                dir: store.dir().to_path_buf(),
                other: b.manifest.source.path.clone(),
                ours: owner.database.clone(),
            });
        }
    }
    // Here already: as a file, or packed in the local block store (restored from there).
    let packed_here = crate::engine::manifest::Manifest::read(&store.manifest_path(&b.id))
        .is_ok_and(|m| m.storage == Storage::Packed);
    if store.backup_path(&b.id).exists() || packed_here || dry_run {
        return Ok(b.id.clone());
    }
    if !owner.recorded {
        // An empty machine: this database is now the one these backups belong to.
        let new_owner = crate::engine::database::Owner {
            id: b.manifest.source.database_id.clone().or(owner.id.clone()),
            database: owner.database.clone(),
            recorded: false,
        };
        if new_owner.id.is_some() {
            crate::engine::identity::record(store.dir(), &new_owner)?;
        }
    }
    // What a killed download left here (its temporary backup file, up to the database's size)
    // goes before another download needs the room: the directory is locked and its owner
    // checked, as a backup's sweep requires.
    for name in store.clean_leftovers(false)? {
        tracing::info!("removed `{name}`, left by an interrupted run");
    }
    if b.is_packed() {
        // A killed verify on this machine before the backup directory existed left its
        // downloads beside the database.
        if let Some(dir) = owner.database.parent() {
            crate::remote::packed::sweep_scratch(dir);
        }
        remote.fetch_packed(&inv, b, &store)?;
    } else {
        remote.fetch(b, &store)?;
    }
    Ok(b.id.clone())
}
