//! A damaged database (issue 16): refused at every `VERIFY_LEVEL`, with the newest good backup
//! named; damage in a free block is no damage.

use std::fs;
use std::path::Path;

use crate::support::cases::{ensure, scaled, Rng, Tally};
use crate::support::{self, write_into_wal, Project};

use ducksafe::protocol::{Decision, ErrorCode};

use super::corruption::{flip, fragmented_database, regions_of};

/// Zeroes `len` bytes of `path` from `off` (a block a failing disk or a trim returned as zeros).
fn zero(path: &Path, off: u64, len: u64) {
    use std::os::unix::fs::FileExt;
    let f = fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(&vec![0u8; usize::try_from(len).unwrap()], off)
        .unwrap();
}

/// A pre_run on a damaged database: refused with `database_damaged`, the way out named, and not
/// one file of the backup directory changed (no backup published, nothing rotated, `latest`
/// where it was) but the PID in the directory lock, which the refused run took.
fn refused_as_damaged(p: &Project, good: &str) -> Result<String, String> {
    let before = support::but_the_lock(support::every_byte(&p.backups()));
    let (r, code) = p.pre_run();
    ensure(code == 74 && r.decision == Decision::Abort, || {
        format!("exit {code}, {:?}: {:?}", r.decision, r.errors)
    })?;
    let e = &r.errors[0];
    ensure(e.code == ErrorCode::DatabaseDamaged, || format!("{e:?}"))?;
    ensure(
        e.message.contains("itself is damaged (not a backup)"),
        || e.message.clone(),
    )?;
    let hint = e.hint.clone().unwrap_or_default();
    ensure(
        hint.contains(&format!("`{good}`"))
            && hint.contains(&format!("restore {good} --expect-sha256 ")),
        || format!("the hint does not name `{good}` and its restore command: {hint}"),
    )?;
    ensure(
        support::but_the_lock(support::every_byte(&p.backups())) == before,
        || "the backup directory changed".into(),
    )?;
    Ok(e.message.clone())
}

/// A crashed run's big insert: DuckDB wrote its rows straight into blocks past the header's
/// block count, and only the WAL points to them. One byte flipped there: damage too.
fn damaged_block_only_the_wal_points_to(
    p: &Project,
    pristine: &[u8],
    good: &str,
) -> Result<(), String> {
    fs::write(p.db(), pristine).unwrap();
    write_into_wal(
        &p.db(),
        "CREATE TABLE big_run AS SELECT range AS id, md5(range::VARCHAR) AS s FROM range(600000);",
    );
    let len = fs::metadata(p.db()).unwrap().len();
    let f = fs::File::open(p.db()).unwrap();
    let Ok(Ok(ducksafe::engine::integrity::Readable::Layout(l))) =
        ducksafe::engine::integrity::Layout::read(len, &|at, buf| {
            std::os::unix::fs::FileExt::read_exact_at(&f, buf, at)
        })
    else {
        return Err("no layout".into());
    };
    let beyond = 12_288 + l.block_count * l.block_size;
    ensure(len > beyond, || {
        format!("the insert wrote no block past the header's count ({len} bytes)")
    })?;
    flip(&p.db(), beyond + 5000);
    let result = refused_as_damaged(p, good).map(drop);
    for wal in ducksafe::duck::wal_paths(&p.db()) {
        let _ = fs::remove_file(wal);
    }
    result
}

#[test]
fn damaged_database_is_refused() {
    let mut t = Tally::new("damaged_database_is_refused");
    let mut rng = Rng::for_scenario(t.test);
    for level in ["quick", "standard", "full"] {
        let p = Project::new(&format!("VERIFY_LEVEL: {level}\nBACKUP_KEEP_LAST: 2\n"));
        fs::remove_file(p.db()).unwrap();
        fragmented_database(&p.db());
        let (first, code) = p.pre_run();
        assert_eq!(code, 0, "{first:?}");
        let good = first.backup.unwrap();
        assert!(good.verification.contains(&"block_checksums".to_owned()));
        let pristine = fs::read(p.db()).unwrap();
        let len = pristine.len() as u64;
        let regions = regions_of(&p.db(), len);

        // ducksafe's reading of the free list agrees with DuckDB's own view: no block it skips
        // is one DuckDB's storage or metadata uses.
        t.case(
            format!("{level}: the free list matches DuckDB's view"),
            || {
                let f = fs::File::open(p.db()).map_err(|e| e.to_string())?;
                let layout = match ducksafe::engine::integrity::Layout::read(len, &|at, buf| {
                    std::os::unix::fs::FileExt::read_exact_at(&f, buf, at)
                }) {
                    Ok(Ok(ducksafe::engine::integrity::Readable::Layout(l))) => l,
                    other => return Err(format!("no layout: {other:?}")),
                };
                ensure(!layout.free.is_empty(), || "no free blocks to skip".into())?;
                for id in &layout.free {
                    let start = 12_288 + id * layout.block_size;
                    for kind in ["data blocks", "metadata blocks"] {
                        ensure(!regions.get(kind).iter().any(|(s, _)| *s == start), || {
                            format!("block {id} is on the free list but DuckDB uses it ({kind})")
                        })?;
                    }
                }
                Ok(())
            },
        );

        let kinds: [(&str, u64); 4] = [
            ("main header", 2),
            ("database headers", 2),
            ("data blocks", 4),
            ("metadata blocks", 2),
        ];
        for (kind, n) in kinds {
            for _ in 0..scaled(n) {
                let off = regions.random_offset(kind, &mut rng);
                t.case(
                    format!("{level}: a flipped byte in the {kind} at {off}"),
                    || {
                        fs::write(p.db(), &pristine).unwrap();
                        flip(&p.db(), off);
                        let message = refused_as_damaged(&p, &good.id)?;
                        // A data block is named with the table whose rows it holds.
                        ensure(
                            kind != "data blocks" || message.contains("holds data of table `main."),
                            || format!("the table is not named: {message}"),
                        )
                    },
                );
                t.count(&format!("refused: {kind}"), 1);
            }
        }
        for _ in 0..scaled(1) {
            let blocks = regions.get("data blocks");
            let (start, end) = blocks[rng.index(blocks.len())];
            t.case(format!("{level}: a zeroed data block at {start}"), || {
                fs::write(p.db(), &pristine).unwrap();
                zero(&p.db(), start, end - start);
                refused_as_damaged(&p, &good.id).map(drop)
            });
            t.count("refused: zeroed data block", 1);
        }
        t.case(format!("{level}: a truncated database"), || {
            fs::write(p.db(), &pristine[..pristine.len() - 100_000]).unwrap();
            refused_as_damaged(&p, &good.id).map(drop)
        });
        t.case(
            format!("{level}: a damaged block only the WAL points to"),
            || damaged_block_only_the_wal_points_to(&p, &pristine, &good.id),
        );
        // No false alarm: damage in a free block (never read by DuckDB) is no damage.
        for _ in 0..scaled(2) {
            let off = regions.random_offset("free blocks", &mut rng);
            t.case(
                format!("{level}: a flipped byte in a free block at {off}"),
                || {
                    fs::write(p.db(), &pristine).unwrap();
                    flip(&p.db(), off);
                    let (answer, code) = p.pre_run();
                    ensure(code == 0, || {
                        format!("a healthy database was refused: {:?}", answer.errors)
                    })
                },
            );
            t.count("accepted: free block", 1);
        }
        fs::write(p.db(), &pristine).unwrap();
    }
    t.finish();
}
