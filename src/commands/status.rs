//! `ducksafe status`: is the safety net healthy? The figures an operator and a monitoring agent
//! need (the newest verified backup and its age, the backups' count and bytes against
//! `BACKUP_MAX_TOTAL_BYTES`, free space, the last hook run from the audit log, unfinished
//! restores, quarantine folders), judged by [`assess`] into a [`CheckState`].
//!
//! Three renderings of one [`StatusReport`]: a screen whose first line is a monitoring plugin's
//! summary (`DUCKSAFE OK - … | perfdata`), `--json`, and `--prometheus` (the text exposition
//! format, for the node_exporter textfile collector; `--prometheus-file` writes it atomically).
//! It reads only, takes no lock, and exits by the monitoring convention (0 ok, 1 warning,
//! 2 critical, 3 unknown: [`CheckState::exit_code`]), whatever went wrong.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::fs;
use std::io::{self, Write};
use std::path::Path;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

use super::{Access, Global};
use crate::audit;
use crate::cli::StatusArgs;
use crate::config::{self, redact_text, Settings};
use crate::engine::blockstore::Hash;
use crate::engine::journal::{self, Pending};
use crate::engine::manifest::{Manifest, Storage};
use crate::engine::quarantine;
use crate::engine::store::{Inventory, Store, MANIFEST_EXT};
use crate::error::{CheckState, Error};
use crate::files;
use crate::output::{self, size, Failure, Report};
use crate::protocol::ErrorEntry;

/// Share of `BACKUP_MAX_TOTAL_BYTES` from which the backups' bytes are a warning.
pub const BUDGET_WARNING_PERCENT: u64 = 90;

/// The fewest bytes of backups that are a warning under `budget`: [`BUDGET_WARNING_PERCENT`] of
/// it, rounded up, in integers (a float rounds 90 % of 2,343,823 to the wrong byte). The state
/// and the perfdata threshold both come from it.
pub fn budget_warning_bytes(budget: u64) -> u64 {
    let share = u128::from(budget) * u128::from(BUDGET_WARNING_PERCENT);
    u64::try_from(share.div_ceil(100)).unwrap_or(u64::MAX)
}

/// The newest backup that passed verification.
#[derive(Debug, Clone, Serialize)]
pub struct Newest {
    pub id: String,
    pub created_at: DateTime<Utc>,
    pub age_seconds: i64,
    pub bytes: u64,
    pub verification_level: String,
}

/// The last `pre_run` or `post_run` of this database in the audit log (dry runs left out).
#[derive(Debug, Clone, Serialize)]
pub struct LastHook {
    pub time: String,
    pub event: String,
    pub status: String,
    pub decision: Option<String>,
    pub request_id: String,
    pub exit_code: i32,
    pub errors: Vec<String>,
}

/// A backup that cannot be restored as it stands on disk (sizes and presence, not content).
#[derive(Debug, Clone, Serialize)]
pub struct Damaged {
    pub id: String,
    pub created_at: DateTime<Utc>,
    pub why: String,
}

/// One folder a restore left in quarantine.
#[derive(Debug, Clone, Serialize)]
pub struct QuarantineFolder {
    pub path: String,
    pub bytes: u64,
}

/// What status found, before any judgement.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Figures {
    /// The newest backup that passed verification and is intact on disk.
    pub newest_verified: Option<Newest>,
    /// Backups whose file is missing or of another size than their manifest records, or
    /// (packed) whose chunks are not all in a pack or a plain backup on disk. Newest first.
    pub damaged_backups: Vec<Damaged>,
    pub backups: usize,
    pub backups_bytes: u64,
    pub budget_bytes: Option<u64>,
    /// Free space on the backup directory's filesystem (its parent's, before the first backup).
    pub free_bytes: Option<u64>,
    /// What the next backup needs free: the database's size plus `BACKUP_MIN_FREE_BYTES`.
    pub next_backup_needs_bytes: Option<u64>,
    pub last_hook: Option<LastHook>,
    /// How long the last backup took (the audit log's last backup that was made).
    pub last_backup_duration_seconds: Option<f64>,
    pub unfinished_restores: Vec<Pending>,
    pub quarantine_dir: String,
    pub quarantine_folders: Vec<QuarantineFolder>,
    pub quarantine_bytes: u64,
    /// What makes the next backup fail however much room there is: a database that is
    /// missing or not a DuckDB file, an unsafe backup directory (each with its error code).
    pub next_backup_refused: Vec<String>,
    /// Remarks every command says first (a restore marker in trouble, folders open to others,
    /// backups dated in the future…), and an audit log that cannot be read.
    pub standing_warnings: Vec<String>,
}

/// One reason for the verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub state: CheckState,
    pub message: String,
}

/// The report: the verdict, why, and the figures.
#[derive(Debug, Serialize)]
pub struct StatusReport {
    pub state: CheckState,
    /// The plugin summary line, without its perfdata.
    pub summary: String,
    pub checked_at: String,
    pub database: Option<String>,
    pub backup_dir: Option<String>,
    pub max_age_hours: Option<u32>,
    /// Every reason for the verdict, worst first (empty when ok).
    pub findings: Vec<Finding>,
    #[serde(flatten)]
    pub figures: Figures,
    /// Whether the figures were gathered: when not (the configuration or the backup directory
    /// could not be read), `--json` has them null and `--prometheus` has only the status.
    #[serde(skip)]
    pub figures_known: bool,
    /// Why the check could not be made (state unknown).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<ErrorEntry>,
}

/// Judges the figures: critical when there is no verified backup, when the newest is older
/// than `max_age_hours`, or when the next backup would be refused for space; warning for the
/// backups' bytes at [`BUDGET_WARNING_PERCENT`] of the budget, an unfinished restore, a last
/// hook run that failed, folders left in quarantine and every standing warning. Worst first.
pub fn assess(f: &Figures, max_age_hours: u32) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut say = |state, message: String| out.push(Finding { state, message });
    let max_age = i64::from(max_age_hours) * 3600;
    match &f.newest_verified {
        None if !f.damaged_backups.is_empty() => say(CheckState::Critical, no_restorable(f)),
        None => say(
            CheckState::Critical,
            "no verified backup: take one with `ducksafe backup`".into(),
        ),
        Some(n) if n.age_seconds > max_age => say(
            CheckState::Critical,
            format!(
                "newest verified backup `{}` is {} old, more than STATUS_MAX_AGE_HOURS ({max_age_hours}h)",
                n.id,
                age(n.age_seconds)
            ),
        ),
        Some(_) => {}
    }
    damage_findings(f, &mut say);
    for why in &f.next_backup_refused {
        say(
            CheckState::Critical,
            format!("the next backup would be refused: {why}"),
        );
    }
    if let (Some(free), Some(needs)) = (f.free_bytes, f.next_backup_needs_bytes) {
        if free < needs {
            say(
                CheckState::Critical,
                format!(
                    "{} free on the backup filesystem, the next backup needs about {} (the database and BACKUP_MIN_FREE_BYTES): it would be refused with `insufficient_space`",
                    size(free),
                    size(needs)
                ),
            );
        }
    }
    if let Some(budget) = f.budget_bytes {
        if f.backups_bytes >= budget_warning_bytes(budget) {
            say(
                CheckState::Warning,
                format!(
                    "backups use {} of the {} BACKUP_MAX_TOTAL_BYTES budget ({}%): rotation, not BACKUP_KEEP_LAST, decides how many are kept",
                    size(f.backups_bytes),
                    size(budget),
                    u128::from(f.backups_bytes) * 100 / u128::from(budget)
                ),
            );
        }
    }
    for p in &f.unfinished_restores {
        say(
            CheckState::Warning,
            format!(
                "unfinished restore of backup `{}`: finish it with `{}`",
                p.backup_id, p.finish
            ),
        );
    }
    if let Some(h) = f.last_hook.as_ref().filter(|h| h.status != "ok") {
        say(
            CheckState::Warning,
            format!(
                "the last hook run ({} at {}, request `{}`) ended `{}`{}",
                h.event,
                h.time,
                h.request_id,
                h.decision.as_deref().unwrap_or("error"),
                if h.errors.is_empty() {
                    String::new()
                } else {
                    format!(" with {}", h.errors.join(", "))
                }
            ),
        );
    }
    if !f.quarantine_folders.is_empty() {
        say(
            CheckState::Warning,
            format!(
                "{} folder(s) in quarantine `{}` ({}): what restores replaced; delete them once nothing in them is needed",
                f.quarantine_folders.len(),
                f.quarantine_dir,
                size(f.quarantine_bytes)
            ),
        );
    }
    for w in &f.standing_warnings {
        say(CheckState::Warning, w.clone());
    }
    out.sort_by_key(|f| std::cmp::Reverse(f.state));
    out
}

/// Every backup is damaged: say which and why.
fn no_restorable(f: &Figures) -> String {
    format!(
        "no restorable backup: {} damaged ({}): take a new one with `ducksafe backup` now",
        f.damaged_backups.len(),
        f.damaged_backups
            .iter()
            .map(|d| format!("`{}` {}", d.id, d.why))
            .collect::<Vec<_>>()
            .join("; ")
    )
}

/// A warning for each damaged backup when an intact one remains (none is critical, in
/// [`assess`]), naming the newest restorable one when the newest backup is damaged.
fn damage_findings(f: &Figures, say: &mut impl FnMut(CheckState, String)) {
    if let Some(n) = &f.newest_verified {
        for d in &f.damaged_backups {
            let newer = d.created_at > n.created_at;
            say(
            CheckState::Warning,
            format!(
                "{}backup `{}` cannot be restored: {}; {}check the others' content with `ducksafe verify --all`",
                if newer { "the newest " } else { "" },
                d.id,
                d.why,
                if newer {
                    format!("the newest restorable one is `{}`; take a new backup with `ducksafe backup` and ", n.id)
                } else {
                    String::new()
                }
            ),
        );
        }
    }
}

/// The verdict of `findings`.
pub fn verdict(findings: &[Finding]) -> CheckState {
    findings
        .iter()
        .map(|f| f.state)
        .max()
        .unwrap_or(CheckState::Ok)
}

/// `2h 05m`, `3d 4h`, `45s` for people.
fn age(secs: i64) -> String {
    match secs {
        s if s < 0 => "in the future".into(),
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h {:02}m", s / 3600, (s % 3600) / 60),
        s => format!("{}d {}h", s / 86400, (s % 86400) / 3600),
    }
}

/// Gathers the figures of `settings`' database. An error is the state unknown.
fn gather(settings: &Settings, now: DateTime<Utc>) -> Result<Figures, Error> {
    let mut f = Figures {
        budget_bytes: settings.config.backup_max_total_bytes,
        unfinished_restores: journal::pending(settings),
        standing_warnings: crate::engine::standing_remarks(settings),
        ..Figures::default()
    };
    match super::open_store(settings, Access::Read) {
        Ok(opened) => backups(&mut f, &opened.store, now)?,
        Err(Error::NoBackupDir { .. }) => {}
        // Known and said: the next backup refuses it, so this is no reason to know nothing.
        Err(e @ Error::BackupDirUnsafe { .. }) => f.next_backup_refused.push(refusal(&e)),
        Err(e) => return Err(e),
    }
    if let Err(e) = crate::engine::database::check(settings) {
        f.next_backup_refused.push(refusal(&e));
    }
    // Before the first backup, the folder that will hold the backup directory.
    let mut probe = settings.backup_dir.as_path();
    while !probe.exists() {
        match probe.parent() {
            Some(p) => probe = p,
            None => break,
        }
    }
    f.free_bytes = files::fs_space(probe).ok().map(|s| s.available_bytes);
    f.next_backup_needs_bytes = fs::metadata(&settings.db_path).ok().map(|m| {
        m.len()
            .saturating_add(settings.config.backup_min_free_bytes)
    });
    let root = quarantine::root(settings);
    f.quarantine_dir = root.display().to_string();
    if let Ok(rd) = fs::read_dir(&root) {
        let mut folders: Vec<QuarantineFolder> = rd
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| QuarantineFolder {
                bytes: tree_bytes(&e.path()),
                path: e.path().display().to_string(),
            })
            .collect();
        folders.sort_by(|a, b| a.path.cmp(&b.path));
        f.quarantine_bytes = folders.iter().map(|q| q.bytes).sum();
        f.quarantine_folders = folders;
    }
    f.standing_warnings.extend(log_distrust(&settings.log_dir));
    match audit::recent(&settings.log_dir, 200) {
        Ok(records) => read_log(&mut f, &records, settings),
        Err(e) => f.standing_warnings.push(format!(
            "cannot read the audit log `{}`: {e}; the last hook run is unknown",
            settings.log_dir.join(audit::LOG_FILE).display()
        )),
    }
    Ok(f)
}

/// Why each backup of `inv` (in its order) cannot be restored as it stands on disk, or `None`
/// when it is intact. Cheap checks only, no hashing (`verify --all` checks content): a plain
/// backup is intact when its file has the size its manifest records; a packed one when every
/// chunk its block map lists is in a pack on disk or in an intact plain backup's file. The
/// packs' index is read from their trailers (48 bytes a chunk), only when a backup is packed.
fn damage(store: &Store, inv: &Inventory) -> Vec<Option<String>> {
    let mut out: Vec<Option<String>> = inv
        .backups
        .iter()
        .map(|b| match (b.manifest.storage, b.file_bytes) {
            (Storage::Packed, _) => None,
            (_, Some(n)) if n == b.manifest.bytes => None,
            (_, Some(n)) => Some(format!(
                "its file `{}` is {n} bytes, its manifest records {}",
                store.backup_path(&b.id).display(),
                b.manifest.bytes
            )),
            (_, None) => Some(format!(
                "its file `{}` is missing",
                store.backup_path(&b.id).display()
            )),
        })
        .collect();
    if !inv
        .backups
        .iter()
        .any(|b| b.manifest.storage == Storage::Packed)
    {
        return out;
    }
    let index = store.packs().index();
    let mut in_plain: HashSet<&Hash> = HashSet::new();
    for (b, d) in inv.backups.iter().zip(&out) {
        if b.manifest.storage != Storage::Packed && d.is_none() {
            if let Some(map) = &b.manifest.blocks {
                in_plain.extend(map.chunks.iter());
            }
        }
    }
    for (b, d) in inv.backups.iter().zip(out.iter_mut()) {
        if b.manifest.storage != Storage::Packed {
            continue;
        }
        *d = match (&index, &b.manifest.blocks) {
            (Err(e), _) => Some(format!(
                "the packs in `{}` cannot be read: {e}",
                store.packs().dir().display()
            )),
            (Ok(_), None) => Some("it is packed but its manifest has no block map".into()),
            (Ok(index), Some(map)) => {
                let missing = map
                    .chunks
                    .iter()
                    .filter(|h| !index.contains(h) && !in_plain.contains(h))
                    .count();
                (missing > 0).then(|| {
                    format!(
                        "{missing} of its {} chunks are in no pack in `{}` and no intact plain backup (a pack or a backup file deleted or cut short?)",
                        map.chunks.len(),
                        store.packs().dir().display()
                    )
                })
            }
        };
    }
    out
}

/// The backups' figures: counts, bytes, the newest intact verified backup, damaged backups,
/// unreadable manifests and the inventory's warnings.
fn backups(f: &mut Figures, store: &Store, now: DateTime<Utc>) -> Result<(), Error> {
    let inv = store.inventory()?;
    f.backups = inv.backups.len();
    f.backups_bytes = store.real_bytes(&inv);
    let damage = damage(store, &inv);
    f.newest_verified = inv
        .backups
        .iter()
        .zip(&damage)
        .filter(|(_, d)| d.is_none())
        .map(|(b, _)| b)
        .find(|b| !b.manifest.verification.checks.is_empty())
        .map(|b| Newest {
            id: b.id.clone(),
            created_at: b.manifest.created_at,
            age_seconds: (now - b.manifest.created_at).num_seconds(),
            bytes: b.manifest.bytes,
            verification_level: b.manifest.verification.level.clone(),
        });
    f.damaged_backups = inv
        .backups
        .iter()
        .zip(damage)
        .filter_map(|(b, why)| {
            why.map(|why| Damaged {
                id: b.id.clone(),
                created_at: b.manifest.created_at,
                why,
            })
        })
        .collect();
    // A manifest without its file (deleted by hand) is a backup that cannot be restored.
    for id in &inv.incomplete {
        if let Ok(m) = Manifest::read(&store.manifest_path(id)) {
            f.damaged_backups.push(Damaged {
                id: id.clone(),
                created_at: m.created_at,
                why: format!("its file `{}` is missing", store.backup_path(id).display()),
            });
        }
    }
    f.damaged_backups
        .sort_by_key(|d| std::cmp::Reverse(d.created_at));
    // A manifest that cannot be read drops its backup out of every count: say so.
    for (name, why) in &inv.unmanaged {
        let path = store.dir().join(name);
        if name.ends_with(MANIFEST_EXT) && Manifest::read(&path).is_err() {
            f.standing_warnings.push(format!(
                "the manifest `{}` cannot be read ({why}): its backup is neither counted nor restorable; `ducksafe verify --all` says more",
                path.display()
            ));
        }
    }
    f.standing_warnings
        .extend(store.inventory_warnings(&inv, now));
    Ok(())
}

/// An error the next backup would fail with, and its code.
fn refusal(e: &Error) -> String {
    format!("{e} (`{}`)", e.code().as_str())
}

/// Why the audit log's lines could be another user's forgeries, if they could: its folder
/// (through a symlink too) writable by others, or a log file another user owns. Status reports
/// the last hook run from it, so it says when that report is not to be trusted.
fn log_distrust(dir: &Path) -> Vec<String> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let mut out = Vec::new();
    if let Ok(meta) = fs::metadata(dir) {
        let mode = meta.permissions().mode();
        let why = files::unsafe_folder_reason(dir, &meta).or_else(|| {
            (mode & 0o020 != 0).then(|| {
                format!(
                    "it is group-writable (mode {:04o}): the group's users could write in it",
                    mode & 0o7777
                )
            })
        });
        if let Some(why) = why {
            out.push(format!(
                "the audit log folder `{}` is not safe: {why}; the last hook run status reports from it could be forged: give LOG_DIR a folder of this user's, mode 0700",
                dir.display()
            ));
        }
    }
    let log = dir.join(audit::LOG_FILE);
    for path in [files::rotated_name(&log, 1), log] {
        if let Ok(m) = fs::symlink_metadata(&path) {
            if m.uid() != files::euid() {
                out.push(format!(
                    "the audit log `{}` is owned by uid {}, not by this user (uid {}): the last hook run status reports from it could be forged; move it away",
                    path.display(),
                    m.uid(),
                    files::euid()
                ));
            }
        }
    }
    out
}

/// The last hook run and the last backup's duration, from this database's records.
fn read_log(f: &mut Figures, records: &[audit::Record], settings: &Settings) {
    let db = redact_text(&settings.db_path.display().to_string());
    // The same database reached through another path (a symlinked project folder) is ours too.
    let real = fs::canonicalize(&settings.db_path).ok();
    let mut resolved: HashMap<String, bool> = HashMap::new();
    let mut is_ours = |named: &str| {
        named == db
            || real.is_some()
                && *resolved
                    .entry(named.to_owned())
                    .or_insert_with(|| fs::canonicalize(named).ok() == real)
    };
    let ours = records
        .iter()
        .rev()
        .filter(|r| r.database.as_deref().is_some_and(&mut is_ours));
    for r in ours {
        let event = r.event.as_deref().unwrap_or("");
        // A dry run is no run: a dry pre_run that would proceed says nothing of the last real
        // one, which may have aborted.
        if f.last_hook.is_none()
            && !r.dry_run
            && (event == "pre_run" || event == "post_run")
            && r.command != "backup"
            && r.command != "restore"
        {
            f.last_hook = Some(LastHook {
                time: r.time.clone(),
                event: event.to_owned(),
                status: r.status.clone(),
                decision: r.decision.clone(),
                request_id: r.request_id.clone(),
                exit_code: r.exit_code,
                errors: r.errors.clone(),
            });
        }
        if f.last_backup_duration_seconds.is_none()
            && event == "pre_run"
            && r.status == "ok"
            && !r.dry_run
            && r.backup_id.is_some()
        {
            #[allow(clippy::cast_precision_loss)] // milliseconds: far below 2^52
            let secs = r.duration_ms as f64 / 1000.0;
            f.last_backup_duration_seconds = Some(secs);
        }
    }
}

/// Bytes of the files under `dir` (symlinks not followed).
fn tree_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.filter_map(Result::ok) {
            let Ok(meta) = fs::symlink_metadata(e.path()) else {
                continue;
            };
            if meta.is_dir() {
                stack.push(e.path());
            } else {
                total += meta.len();
            }
        }
    }
    total
}

/// The report for `settings`, or the unknown one when the configuration or the backup
/// directory cannot be read.
/// `guess` names the database when the configuration does not load.
fn report(
    settings: Result<Settings, Error>,
    guess: impl FnOnce() -> Option<String>,
    now: DateTime<Utc>,
) -> StatusReport {
    let checked_at = now.to_rfc3339_opts(SecondsFormat::Secs, true);
    let (settings, error) = match settings {
        Ok(s) => match gather(&s, now) {
            Ok(figures) => {
                let max_age = s.config.status_max_age_hours;
                let findings = assess(&figures, max_age);
                let state = verdict(&findings);
                return StatusReport {
                    state,
                    summary: summary(state, &figures, &findings),
                    checked_at,
                    database: Some(s.db_path.display().to_string()),
                    backup_dir: Some(s.backup_dir.display().to_string()),
                    max_age_hours: Some(max_age),
                    findings,
                    figures,
                    figures_known: true,
                    errors: Vec::new(),
                };
            }
            Err(e) => (Some(s), e),
        },
        Err(e) => (None, e),
    };
    let message = error.to_string();
    StatusReport {
        state: CheckState::Unknown,
        summary: format!("DUCKSAFE UNKNOWN - {message}"),
        checked_at,
        database: settings
            .as_ref()
            .map(|s| s.db_path.display().to_string())
            .or_else(guess),
        backup_dir: settings
            .as_ref()
            .map(|s| s.backup_dir.display().to_string()),
        max_age_hours: settings.as_ref().map(|s| s.config.status_max_age_hours),
        findings: vec![Finding {
            state: CheckState::Unknown,
            message,
        }],
        figures: Figures::default(),
        figures_known: false,
        errors: error.entries(),
    }
}

/// The plugin's one-line summary: the state, then the worst finding (and how many more), or
/// the newest backup when all is well.
fn summary(state: CheckState, f: &Figures, findings: &[Finding]) -> String {
    let what = match (findings.first(), &f.newest_verified) {
        (Some(first), _) if findings.len() > 1 => {
            format!("{} (+{} more)", first.message, findings.len() - 1)
        }
        (Some(first), _) => first.message.clone(),
        (None, Some(n)) => format!(
            "newest verified backup `{}` is {} old; {} backup(s), {}",
            n.id,
            age(n.age_seconds),
            f.backups,
            size(f.backups_bytes)
        ),
        (None, None) => "no backup".into(),
    };
    format!("DUCKSAFE {} - {what}", state.label())
}

/// `s` with every control character (and the invisible ones that reorder text) escaped as
/// `\n`, `\u{1b}`…: a request id, a path or a message from the audit log (which any process
/// of this user can write) can neither split a line nor reach the terminal as a control
/// sequence.
fn shown(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else if matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
        {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
}

/// The plugin's first line: [`shown`], and no `|`, which starts the performance data there
/// (a `|` in a request id would forge figures): it becomes `¦`.
fn summary_line(s: &str) -> String {
    shown(s).replace('|', "\u{a6}")
}

/// Nagios performance data: `'label'=value[UOM];warn;crit;min;max`, space separated.
fn perfdata(r: &StatusReport) -> String {
    let f = &r.figures;
    let mut out = Vec::new();
    if let Some(n) = &f.newest_verified {
        let crit = r
            .max_age_hours
            .map_or_else(String::new, |h| (u64::from(h) * 3600).to_string());
        out.push(format!("age={}s;;{crit};0", n.age_seconds.max(0)));
    }
    out.push(format!("backups={};;;0", f.backups));
    let (warn, max) = f.budget_bytes.map_or_else(
        || (String::new(), String::new()),
        |b| {
            // A plugin threshold alerts above its value: the byte before the first that warns.
            (
                budget_warning_bytes(b).saturating_sub(1).to_string(),
                b.to_string(),
            )
        },
    );
    out.push(format!(
        "backups_bytes={}B;{warn};;0;{max}",
        f.backups_bytes
    ));
    if let Some(free) = f.free_bytes {
        let crit = f
            .next_backup_needs_bytes
            .map_or_else(String::new, |n| format!("{n}:"));
        out.push(format!("free_bytes={free}B;;{crit};0"));
    }
    out.push(format!(
        "unfinished_restores={};;;0",
        f.unfinished_restores.len()
    ));
    out.push(format!("quarantine_bytes={}B;;;0", f.quarantine_bytes));
    out.join(" ")
}

impl StatusReport {
    fn screen(&self, out: &mut dyn Write) -> io::Result<()> {
        let summary = summary_line(&self.summary);
        if self.state == CheckState::Unknown {
            writeln!(out, "{summary}")?;
            return Ok(());
        }
        writeln!(out, "{summary} | {}", perfdata(self))?;
        self.figure_lines(out)?;
        for finding in &self.findings {
            writeln!(
                out,
                "{}: {}",
                finding.state.label().to_lowercase(),
                shown(&finding.message)
            )?;
        }
        Ok(())
    }

    /// The figures for people, one a line, after the summary.
    fn figure_lines(&self, out: &mut dyn Write) -> io::Result<()> {
        let f = &self.figures;
        let field = |name: &str| format!("{name:<18}");
        if let Some(db) = &self.database {
            writeln!(out, "{}`{}`", field("database:"), shown(db))?;
        }
        match &f.newest_verified {
            Some(n) => writeln!(
                out,
                "{}`{}`, {} ({} ago), {}, verified {}",
                field("newest backup:"),
                shown(&n.id),
                n.created_at.format("%Y-%m-%d %H:%M:%S UTC"),
                age(n.age_seconds),
                size(n.bytes),
                n.verification_level
            )?,
            None => writeln!(out, "{}none verified", field("newest backup:"))?,
        }
        let budget = f.budget_bytes.map_or_else(
            || "no BACKUP_MAX_TOTAL_BYTES budget".to_owned(),
            |b| {
                format!(
                    "{}% of the {} budget",
                    u128::from(f.backups_bytes) * 100 / u128::from(b),
                    size(b)
                )
            },
        );
        writeln!(
            out,
            "{}{} in `{}`, using {} ({budget})",
            field("backups:"),
            f.backups,
            shown(self.backup_dir.as_deref().unwrap_or("")),
            size(f.backups_bytes)
        )?;
        if let Some(free) = f.free_bytes {
            let needs = f.next_backup_needs_bytes.map_or_else(String::new, |n| {
                format!("; the next backup needs about {}", size(n))
            });
            writeln!(
                out,
                "{}{} on the backup filesystem{needs}",
                field("free:"),
                size(free)
            )?;
        }
        match &f.last_hook {
            Some(h) => writeln!(
                out,
                "{}{} → {} at {} (request `{}`, exit {}){}",
                field("last hook run:"),
                shown(&h.event),
                shown(h.decision.as_deref().unwrap_or(&h.status)),
                shown(&h.time),
                shown(&h.request_id),
                h.exit_code,
                if h.errors.is_empty() {
                    String::new()
                } else {
                    format!(", {}", shown(&h.errors.join(", ")))
                }
            )?,
            None => writeln!(
                out,
                "{}none in the last MiB of the audit log",
                field("last hook run:")
            )?,
        }
        if let Some(d) = f.last_backup_duration_seconds {
            writeln!(out, "{}{d:.1}s", field("last backup took:"))?;
        }
        writeln!(
            out,
            "{}{}",
            field("restores:"),
            match f.unfinished_restores.len() {
                0 => "none unfinished".to_owned(),
                n => format!("{n} UNFINISHED"),
            }
        )?;
        writeln!(
            out,
            "{}{}",
            field("quarantine:"),
            if f.quarantine_folders.is_empty() {
                "empty".to_owned()
            } else {
                format!(
                    "{} folder(s), {} in `{}`",
                    f.quarantine_folders.len(),
                    size(f.quarantine_bytes),
                    shown(&f.quarantine_dir)
                )
            }
        )
    }

    /// The figures in the Prometheus text exposition format (version 0.0.4), one gauge family
    /// each, labelled with the database. A figure that is not known (no backup yet) keeps its
    /// `# HELP` and `# TYPE` lines and has no sample.
    pub fn prometheus(&self) -> String {
        let mut out = String::new();
        let db = label_value(self.database.as_deref().unwrap_or(""));
        for (name, help, value) in self.gauges() {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} gauge");
            if let Some(v) = value {
                let _ = writeln!(out, "{name}{{database=\"{db}\"}} {v}");
            }
        }
        out
    }

    /// Each gauge: name (base units), help, value. Only the status when the check is unknown.
    fn gauges(&self) -> Vec<(&'static str, &'static str, Option<String>)> {
        let status = (
            "ducksafe_status",
            "Health of the safety net as ducksafe status judges it: 0 ok, 1 warning, 2 critical, 3 unknown.",
            Some(self.state.exit_code().to_string()),
        );
        if !self.figures_known {
            return vec![status];
        }
        let f = &self.figures;
        let n = f.newest_verified.as_ref();
        let hook = f.last_hook.as_ref();
        let num = |v: u64| Some(v.to_string());
        vec![
            status,
            (
                "ducksafe_backup_last_success_timestamp_seconds",
                "When the newest verified backup was taken, in seconds since the Unix epoch.",
                n.map(|n| n.created_at.timestamp().to_string()),
            ),
            (
                "ducksafe_backup_age_seconds",
                "Age of the newest verified backup.",
                n.map(|n| n.age_seconds.to_string()),
            ),
            (
                "ducksafe_backup_max_age_seconds",
                "STATUS_MAX_AGE_HOURS in seconds: an older newest backup is critical.",
                self.max_age_hours.map(|h| (u64::from(h) * 3600).to_string()),
            ),
            ("ducksafe_backups", "Backups stored.", num(f.backups as u64)),
            (
                "ducksafe_backups_damaged",
                "Backups whose file is missing or cut short, or whose chunks are not all on disk (sizes and presence; verify --all checks content).",
                num(f.damaged_backups.len() as u64),
            ),
            (
                "ducksafe_backups_bytes",
                "Bytes the backups take on disk.",
                num(f.backups_bytes),
            ),
            (
                "ducksafe_backups_budget_bytes",
                "BACKUP_MAX_TOTAL_BYTES, when set.",
                f.budget_bytes.and_then(num),
            ),
            (
                "ducksafe_backup_filesystem_free_bytes",
                "Free bytes on the backup directory's filesystem.",
                f.free_bytes.and_then(num),
            ),
            (
                "ducksafe_next_backup_needs_bytes",
                "Free bytes the next backup needs: the database's size plus BACKUP_MIN_FREE_BYTES.",
                f.next_backup_needs_bytes.and_then(num),
            ),
            (
                "ducksafe_last_backup_duration_seconds",
                "How long the last backup in the audit log took.",
                f.last_backup_duration_seconds.map(|d| format!("{d:.3}")),
            ),
            (
                "ducksafe_last_hook_run_timestamp_seconds",
                "When the last pre_run or post_run in the audit log ended.",
                hook.and_then(|h| DateTime::parse_from_rfc3339(&h.time).ok())
                    .map(|t| {
                        let ms = t.timestamp_millis();
                        format!("{}.{:03}", ms.div_euclid(1000), ms.rem_euclid(1000))
                    }),
            ),
            (
                "ducksafe_last_hook_run_ok",
                "1 when the last pre_run or post_run in the audit log did its job, 0 when it did not.",
                hook.map(|h| u8::from(h.status == "ok").to_string()),
            ),
            (
                "ducksafe_unfinished_restores",
                "Restores that were interrupted and are not finished.",
                num(f.unfinished_restores.len() as u64),
            ),
            (
                "ducksafe_quarantine_folders",
                "Folders that restores left in quarantine.",
                num(f.quarantine_folders.len() as u64),
            ),
            (
                "ducksafe_quarantine_bytes",
                "Bytes in quarantine folders.",
                num(f.quarantine_bytes),
            ),
            (
                "ducksafe_findings",
                "Reasons for a status other than ok.",
                num(self.findings.len() as u64),
            ),
        ]
    }
}

/// A label value, escaped as the exposition format asks (backslash, double quote, newline).
fn label_value(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// How the report is written on stdout.
struct Shown {
    report: StatusReport,
    prometheus: bool,
}

/// The report; figures that were not gathered are null, never a 0 that reads as a fact.
impl Serialize for Shown {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut v = serde_json::to_value(&self.report).map_err(serde::ser::Error::custom)?;
        if !self.report.figures_known {
            let figures =
                serde_json::to_value(Figures::default()).map_err(serde::ser::Error::custom)?;
            if let (Some(out), Some(keys)) = (v.as_object_mut(), figures.as_object()) {
                for k in keys.keys() {
                    out.insert(k.clone(), serde_json::Value::Null);
                }
            }
        }
        v.serialize(s)
    }
}

impl Report for Shown {
    fn text(&self, out: &mut dyn Write) -> io::Result<()> {
        if self.prometheus {
            out.write_all(self.report.prometheus().as_bytes())
        } else {
            self.report.screen(out)
        }
    }

    /// The check's exit code (see [`CheckState`]); an unknown state says why on stderr.
    fn failure(&self) -> Option<(Vec<ErrorEntry>, i32)> {
        (self.report.state != CheckState::Ok)
            .then(|| (self.report.errors.clone(), self.report.state.exit_code()))
    }
}

pub fn run(g: &Global, a: &StatusArgs) -> i32 {
    // `json` is a global flag: clap cannot say that it conflicts with a subcommand's own.
    if g.json && a.prometheus {
        return output::fail(
            false,
            Error::Usage(
                "`--json` and `--prometheus` cannot be used together: pick one format for stdout (`--prometheus-file PATH` writes the metrics beside either)".into(),
            ),
        );
    }
    let now = crate::clock::now();
    let asked = g
        .config
        .clone()
        .map_or(config::Asked::Nothing, config::Asked::Path);
    let mut report = report(
        g.settings(),
        || {
            config::db_path_guess(asked, &g.set)
                .or_else(|| g.config.as_ref().map(|c| c.display().to_string()))
        },
        now,
    );
    if let Some(path) = &a.prometheus_file {
        // Readable by the collector's own user: the figures are no secret (paths and numbers).
        if let Err(e) = files::write_atomic_mode(path, report.prometheus().as_bytes(), 0o644) {
            let e = Error::io("write", path, e);
            let message = format!("{e}: the textfile collector keeps the previous figures");
            report.summary = format!("DUCKSAFE UNKNOWN - {message}");
            report.findings.insert(
                0,
                Finding {
                    state: CheckState::Unknown,
                    message,
                },
            );
            report.errors.extend(e.entries());
            report.state = CheckState::Unknown;
        }
    }
    output::finish(
        g.json,
        Ok::<_, Failure>(Shown {
            report,
            prometheus: a.prometheus,
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn newest(age_seconds: i64) -> Newest {
        Newest {
            id: "simulation_20260101_000000".into(),
            created_at: Utc::now(),
            age_seconds,
            bytes: 1,
            verification_level: "full".into(),
        }
    }

    fn states(f: &Figures) -> Vec<CheckState> {
        assess(f, 26).into_iter().map(|x| x.state).collect()
    }

    #[test]
    fn each_threshold_gives_its_state() {
        let fresh = Figures {
            newest_verified: Some(newest(3600)),
            ..Figures::default()
        };
        assert_eq!(verdict(&assess(&fresh, 26)), CheckState::Ok);
        // Age: exactly the limit is still ok, a second more is critical.
        let at_limit = Figures {
            newest_verified: Some(newest(26 * 3600)),
            ..Figures::default()
        };
        assert_eq!(verdict(&assess(&at_limit, 26)), CheckState::Ok);
        let old = Figures {
            newest_verified: Some(newest(26 * 3600 + 1)),
            ..Figures::default()
        };
        assert_eq!(states(&old), [CheckState::Critical]);
        assert_eq!(states(&Figures::default()), [CheckState::Critical]);
        // Budget: 89% ok, 90% warning.
        let budget = |used| Figures {
            backups_bytes: used,
            budget_bytes: Some(1000),
            ..fresh.clone()
        };
        assert_eq!(verdict(&assess(&budget(899), 26)), CheckState::Ok);
        assert_eq!(states(&budget(900)), [CheckState::Warning]);
        // Space for the next backup: critical below what it needs.
        let space = |free| Figures {
            free_bytes: Some(free),
            next_backup_needs_bytes: Some(500),
            ..fresh.clone()
        };
        assert_eq!(verdict(&assess(&space(500), 26)), CheckState::Ok);
        assert_eq!(states(&space(499)), [CheckState::Critical]);
        // What refuses the next backup whatever the room: critical.
        let refused = Figures {
            next_backup_refused: vec!["database `x` does not exist".into()],
            ..fresh.clone()
        };
        assert_eq!(states(&refused), [CheckState::Critical]);
        // A failed last hook and quarantine are warnings; the worst comes first.
        let mut worse = budget(950);
        worse.newest_verified = None;
        worse.quarantine_folders = vec![QuarantineFolder {
            path: "q".into(),
            bytes: 3,
        }];
        worse.last_hook = Some(LastHook {
            time: "t".into(),
            event: "pre_run".into(),
            status: "error".into(),
            decision: Some("abort".into()),
            request_id: "r".into(),
            exit_code: 75,
            errors: vec!["database_locked".into()],
        });
        let s = states(&worse);
        assert_eq!(
            s,
            [
                CheckState::Critical,
                CheckState::Warning,
                CheckState::Warning,
                CheckState::Warning
            ]
        );
    }

    #[test]
    fn the_perfdata_warning_is_where_the_state_turns_warning() {
        for budget in [1000, 1001, 2_343_823, 1_073_741_824, 7, u64::MAX] {
            let report = StatusReport {
                state: CheckState::Ok,
                summary: String::new(),
                checked_at: String::new(),
                database: None,
                backup_dir: None,
                max_age_hours: None,
                findings: Vec::new(),
                figures: Figures {
                    budget_bytes: Some(budget),
                    ..Figures::default()
                },
                figures_known: true,
                errors: Vec::new(),
            };
            let data = perfdata(&report);
            let warn: u64 = data
                .split("backups_bytes=0B;")
                .nth(1)
                .and_then(|r| r.split(';').next())
                .and_then(|w| w.parse().ok())
                .unwrap_or_else(|| panic!("{data}"));
            // The plugin alerts above `warn`: exactly where assess turns warning.
            let state_at = |used| {
                let f = Figures {
                    newest_verified: Some(newest(1)),
                    backups_bytes: used,
                    budget_bytes: Some(budget),
                    ..Figures::default()
                };
                verdict(&assess(&f, 26))
            };
            assert_eq!(state_at(warn), CheckState::Ok, "{budget}: {data}");
            assert_eq!(state_at(warn + 1), CheckState::Warning, "{budget}: {data}");
        }
        // 90 % of 2,343,823 is 2,109,440.7: 2,109,441 bytes warn.
        assert_eq!(budget_warning_bytes(2_343_823), 2_109_441);
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label_value("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
