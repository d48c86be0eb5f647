//! Corruption: bytes flipped in every region of a stored backup, and truncations; verify and
//! restore refuse every one, and DuckDB's block checksums catch what a forged manifest hides.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::support::cases::{ensure, scaled, silence_in_process_logs, Rng, Tally};
use crate::support::runs::settings_of;
use crate::support::{sha256, Project};

use ducksafe::config::{Settings, VerifyLevel};
use ducksafe::duck::{Db, Limits};
use ducksafe::engine::manifest::Manifest;
use ducksafe::engine::verify;
use ducksafe::protocol::ErrorCode;

use super::{names, source_state, SourceState};

/// The byte ranges of a stored database file, by kind.
pub(super) struct Regions {
    /// (kind, [(first byte, end)]).
    kinds: Vec<(&'static str, Vec<(u64, u64)>)>,
}

/// Maps a backup file: its headers, the blocks its tables use, its metadata blocks, its free
/// blocks and its tail (DuckDB 2.0: blocks of 256 KiB from byte 12,288).
pub(super) fn regions_of(path: &Path, len: u64) -> Regions {
    let cfg = duckdb::Config::default()
        .access_mode(duckdb::AccessMode::ReadOnly)
        .unwrap();
    let c = duckdb::Connection::open_with_flags(path, cfg).unwrap();
    let (block_size, total): (i64, i64) = c
        .query_row(
            "SELECT block_size, total_blocks FROM pragma_database_size()",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    let tables: Vec<String> = c
        .prepare("SELECT table_name FROM duckdb_tables()")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let mut data = BTreeSet::new();
    for tname in &tables {
        let mut st = c
            .prepare(&format!(
                "SELECT DISTINCT block_id FROM pragma_storage_info('{tname}') WHERE block_id >= 0"
            ))
            .unwrap();
        data.extend(
            st.query_map([], |r| r.get::<_, i64>(0))
                .unwrap()
                .map(Result::unwrap),
        );
    }
    let meta: BTreeSet<i64> = c
        .prepare("SELECT block_id FROM pragma_metadata_info()")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    drop(c);
    let bs = block_size.unsigned_abs();
    let block = |b: i64| {
        let start = 12_288 + b.unsigned_abs() * bs;
        (start, (start + bs).min(len))
    };
    let free: Vec<_> = (0..total)
        .filter(|b| !data.contains(b) && !meta.contains(b))
        .map(block)
        .collect();
    Regions {
        kinds: vec![
            ("main header", vec![(0, 4096)]),
            ("database headers", vec![(4096, 12_288)]),
            ("data blocks", data.iter().copied().map(block).collect()),
            ("metadata blocks", meta.iter().copied().map(block).collect()),
            ("free blocks", free),
            ("tail", vec![(len - 4096, len)]),
        ],
    }
}

impl Regions {
    pub(super) fn get(&self, kind: &str) -> &[(u64, u64)] {
        &self.kinds.iter().find(|(k, _)| *k == kind).unwrap().1
    }
    pub(super) fn random_offset(&self, kind: &str, rng: &mut Rng) -> u64 {
        let ranges = self.get(kind);
        let (start, end) = ranges[rng.index(ranges.len())];
        start + rng.below(end - start)
    }
}

/// Flips every bit of the byte at `off`; flipping again restores it.
pub(super) fn flip(path: &Path, off: u64) {
    use std::os::unix::fs::FileExt;
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, off).unwrap();
    b[0] ^= 0xff;
    f.write_all_at(&b, off).unwrap();
}

/// Why verification refused, in a few words.
fn detected_by(message: &str) -> &'static str {
    if message.contains("the manifest says") && message.contains("bytes") {
        "size"
    } else if message.contains("SHA-256") {
        "sha256"
    } else if message.contains("DuckDB") {
        "duckdb"
    } else {
        "other"
    }
}

/// A database with free blocks in the middle (a big table dropped before a later one), so that
/// every region of a DuckDB file is there to corrupt.
pub(super) fn fragmented_database(db: &Path) {
    ducksafe::demo::create_sized(db, 2000, 20_000).unwrap();
    let d = Db::open_read_write(db, &Limits::default()).unwrap();
    d.execute_batch(
        "CREATE TABLE scratch AS SELECT range AS id, hash(range) AS h, 'filler ' || range AS s FROM range(200000); CHECKPOINT; \
         CREATE TABLE kept_after AS SELECT range AS id, hash(range * 7) AS h FROM range(100000); CHECKPOINT; \
         DROP TABLE scratch; CHECKPOINT;",
    )
    .unwrap();
    d.close().unwrap();
}

struct CorruptionFixture {
    p: Project,
    id: String,
    backup: PathBuf,
    clean: Vec<u8>,
    manifest: Manifest,
    settings: Settings,
    source: SourceState,
}

impl CorruptionFixture {
    fn new() -> CorruptionFixture {
        let p = Project::new("BACKUP_KEEP_LAST: 50\n");
        fs::remove_file(p.db()).unwrap();
        fragmented_database(&p.db());
        let (r, code) = p.pre_run();
        assert_eq!(code, 0, "{r:?}");
        let b = r.backup.unwrap();
        let backup = PathBuf::from(&b.path);
        let manifest =
            Manifest::read(&p.backups().join(format!("{}.manifest.json", b.id))).unwrap();
        CorruptionFixture {
            clean: fs::read(&backup).unwrap(),
            settings: settings_of(&p.config()),
            source: source_state(&p.db()),
            id: b.id,
            backup,
            manifest,
            p,
        }
    }

    /// In-process: `verify` detects the damage, `restore` refuses and touches nothing.
    fn refused_in_process(&self) -> Result<&'static str, String> {
        let why = match verify::stored(
            &self.backup,
            &self.manifest,
            VerifyLevel::Full,
            &Limits::default(),
        ) {
            Ok(_) => return Err("verify passed a corrupted backup".into()),
            Err(e) => {
                ensure(e.code() == ErrorCode::VerificationFailed, || {
                    format!("verify: {:?} ({e})", e.code())
                })?;
                detected_by(&e.to_string())
            }
        };
        // In-process only: a child that another test thread forks may briefly share the
        // description of a lock this thread just released (the directory's or the database's:
        // OFD locks belong to the description), so a retryable refusal (`lock_busy`,
        // `database_locked`) is retried, as the contract says a caller may.
        let mut tries = 0;
        let refused = loop {
            match ducksafe::engine::restore::run(&self.settings, &self.id, None, chrono::Utc::now())
            {
                Ok(_) => return Err("restore accepted a corrupted backup".into()),
                Err(e) if e.code().retryable() && tries < 50 => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => break e,
            }
        };
        ensure(refused.exit_code() == 74, || {
            format!(
                "restore refused with {:?} (exit {})",
                refused.code(),
                refused.exit_code()
            )
        })?;
        self.untouched()?;
        Ok(why)
    }

    /// Through the binary: `ducksafe verify ID` and `ducksafe restore ID` exit 74.
    fn refused_by_the_binary(&self) -> Result<(), String> {
        let out = self.p.run(&["verify", &self.id]);
        ensure(out.status.code() == Some(74), || {
            format!("verify exit {:?}", out.status.code())
        })?;
        ensure(
            String::from_utf8_lossy(&out.stdout).contains("FAILED"),
            || "verify did not print FAILED".into(),
        )?;
        let out = self.p.run(&["restore", &self.id]);
        ensure(out.status.code() == Some(74), || {
            format!("restore exit {:?}", out.status.code())
        })?;
        self.untouched()
    }

    /// The database and its folder are as they were: no quarantine, no staged copy.
    fn untouched(&self) -> Result<(), String> {
        ensure(source_state(&self.p.db()) == self.source, || {
            "the database changed".into()
        })?;
        ensure(!self.p.backups().join("quarantine").exists(), || {
            "a quarantine folder appeared".into()
        })?;
        ensure(
            !names(self.p.dir.path())
                .iter()
                .any(|n| n.starts_with(ducksafe::files::TEMP_PREFIX)),
            || "a staged copy was left beside the database".into(),
        )
    }

    /// One corrupted case: refused in-process, and (every tenth) through the binary too.
    fn check(&self, t: &mut Tally, label: String, n: u64, by: &mut BTreeMap<String, u64>) {
        let binary = n.is_multiple_of(10);
        t.case(label, || {
            let why = self.refused_in_process()?;
            *by.entry(why.to_owned()).or_default() += 1;
            if binary {
                self.refused_by_the_binary()?;
            }
            Ok(())
        });
        t.count("also through the binary", u64::from(binary));
    }

    fn restore_clean(&self) {
        fs::write(&self.backup, &self.clean).unwrap();
    }
}

#[test]
fn corruption_in_stored_backups() {
    silence_in_process_logs();
    let mut t = Tally::new("corruption_in_stored_backups");
    let mut rng = Rng::for_scenario("corruption_in_stored_backups");
    let fx = CorruptionFixture::new();
    let len = fx.clean.len() as u64;
    let regions = regions_of(&fx.backup, len);
    assert_eq!(
        sha256(&fx.backup),
        fx.manifest.sha256,
        "mapping opened it read-only"
    );
    for (k, r) in &regions.kinds {
        assert!(!r.is_empty(), "the fixture has no {k}");
        t.count(
            &format!("bytes in {k}"),
            r.iter().map(|(start, end)| end - start).sum(),
        );
    }
    let mut by = BTreeMap::<String, u64>::new();
    let mut n = 0u64;
    let plan = [
        ("main header", 30),
        ("database headers", 30),
        ("data blocks", 50),
        ("metadata blocks", 20),
        ("free blocks", 40),
        ("tail", 20),
    ];
    for (kind, count) in plan {
        for _ in 0..scaled(count) {
            n += 1;
            let off = regions.random_offset(kind, &mut rng);
            flip(&fx.backup, off);
            fx.check(&mut t, format!("{kind}: byte {off} flipped"), n, &mut by);
            t.count(&format!("flipped in {kind}"), 1);
            flip(&fx.backup, off);
        }
    }
    let special = [0, 1, 4095, 4096, 12_287, 12_288, len - 262_144, len - 1];
    for i in 0..scaled(30) {
        n += 1;
        let at = if i < special.len() as u64 {
            special[usize::try_from(i).unwrap()]
        } else {
            rng.below(len)
        };
        fs::OpenOptions::new()
            .write(true)
            .open(&fx.backup)
            .unwrap()
            .set_len(at)
            .unwrap();
        fx.check(&mut t, format!("truncated to {at} bytes"), n, &mut by);
        t.count("truncations", 1);
        fx.restore_clean();
    }
    assert_eq!(
        sha256(&fx.backup),
        fx.manifest.sha256,
        "every corruption was undone"
    );
    forged_manifest(&mut t, &fx, &regions, &mut rng, &mut by);
    t.detail("detected_by", serde_json::to_value(&by).unwrap());
    t.finish();
}

/// Defence in depth: with the manifest forged to match the damaged bytes, DuckDB's own block
/// checksums (read by the full scan) still catch damage to the blocks in use.
fn forged_manifest(
    t: &mut Tally,
    fx: &CorruptionFixture,
    regions: &Regions,
    rng: &mut Rng,
    by: &mut BTreeMap<String, u64>,
) {
    for kind in ["data blocks", "metadata blocks"] {
        for _ in 0..scaled(15) {
            let off = regions.random_offset(kind, rng);
            flip(&fx.backup, off);
            let mut forged = fx.manifest.clone();
            forged.sha256 = sha256(&fx.backup);
            t.case(
                format!("{kind}, manifest forged to match: byte {off} flipped"),
                || match verify::stored(&fx.backup, &forged, VerifyLevel::Full, &Limits::default())
                {
                    Ok(_) => Err("verify passed".into()),
                    Err(e) => {
                        // Size and SHA-256 match the forged manifest: what caught it must be
                        // DuckDB's checksums, as a verification failure.
                        let why = detected_by(&e.to_string());
                        ensure(
                            e.code() == ErrorCode::VerificationFailed
                                && !matches!(why, "size" | "sha256"),
                            || format!("refused as {:?} by {why}: {e}", e.code()),
                        )?;
                        *by.entry(format!("{why} (forged manifest)")).or_default() += 1;
                        Ok(())
                    }
                },
            );
            flip(&fx.backup, off);
        }
    }
}
