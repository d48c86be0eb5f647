//! The storage benchmark (`cargo run --example bench -- --storage`): seven backups of a database
//! that simulated runs change in three ways, kept as plain copies, in ducksafe's block store
//! (the newest plain, older ones as packed blocks), and in restic when `restic` is on PATH; then
//! the oldest restored by each. Every operation is a child process, timed from spawn to exit,
//! with its peak RSS from `wait4`.
//!
//! Per run: the workload changes the database (not measured), then, interleaved in a rotating
//! order: `cp` + `sync` of the database (the floor), ducksafe's verified copy with and without
//! the block map, and `restic backup`; then the previous backup is converted (its blocks the
//! new one lacks go into a pack, proven by a rebuild) and, in a second store, converted with
//! every block packed (`independent`).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use ducksafe::engine::blockstore::{self, BlockMap, Chunker, Packs, Plain};
use ducksafe::engine::integrity::{Checker, Layout, Readable};
use ducksafe::workload::{self, Shape};

use super::{median, run, Sample};

/// Seven backups, as the issue counts them.
const BACKUPS: u32 = 7;

/// A scale of the benchmark: multiplier of the seed's employees and events.
#[derive(Clone, Copy)]
pub struct Scale {
    pub name: &'static str,
    pub scale: u32,
}

pub const SCALES: [Scale; 3] = [
    // A quick look (about a minute).
    Scale {
        name: "50MB",
        scale: 30,
    },
    Scale {
        name: "400MB",
        scale: 265,
    },
    Scale {
        name: "1GB",
        scale: 700,
    },
];

fn counts(scale: u32) -> (u32, u32) {
    (9_016 * scale, 42_331 * scale)
}

fn exe() -> PathBuf {
    std::env::current_exe().unwrap()
}

/// The child modes: work measured in a process of its own.
pub fn child(args: &[String]) {
    match args[1].as_str() {
        "--storage-base" => {
            let (e, v) = counts(args[3].parse().unwrap());
            ducksafe::demo::create_sized(Path::new(&args[2]), e, v).unwrap();
        }
        "--storage-run" => {
            let shape = Shape::ALL
                .into_iter()
                .find(|s| s.name() == args[3])
                .unwrap();
            let (e, v) = counts(args[5].parse().unwrap());
            workload::run(Path::new(&args[2]), shape, args[4].parse().unwrap(), e, v).unwrap();
        }
        "--storage-copy" => copy(Path::new(&args[2]), Path::new(&args[3]), args[4] == "map"),
        "--storage-convert" => convert(
            Path::new(&args[2]),
            &args[3],
            &args[4],
            args.get(5).is_some_and(|a| a == "independent"),
        ),
        "--storage-rebuild" => rebuild(Path::new(&args[2]), &args[3], Path::new(&args[4])),
        other => panic!("unknown child mode {other}"),
    }
}

/// ducksafe's verified copy (as a backup makes it: DuckDB's block checksums checked on the
/// copy's own read), with the block map computed from the same read when `with_map`.
fn copy(src: &Path, dst: &Path, with_map: bool) {
    use std::os::unix::fs::FileExt;
    let source = ducksafe::files::open_read(src).unwrap();
    let len = source.metadata().unwrap().len();
    let Ok(Ok(Readable::Layout(layout))) = Layout::read(len, &|at, b| source.read_exact_at(b, at))
    else {
        panic!("not a plain DuckDB file")
    };
    let block_size = layout.block_size;
    let mut checker = Checker::new(layout);
    let mut chunker = with_map.then(|| Chunker::new(block_size));
    let out = ducksafe::files::create_private(dst).unwrap();
    let copied = ducksafe::files::copy_verified_inspecting(
        &source,
        &out,
        &mut |piece| {
            checker.feed(piece);
            if let Some(c) = chunker.as_mut() {
                c.feed(piece);
            }
        },
        || {},
    )
    .unwrap();
    assert!(copied.identical());
    checker.finish().unwrap();
    if let Some(c) = chunker {
        let map = c.finish();
        ducksafe::files::write_json_atomic(&map_path(dst), &map).unwrap();
        fs::write(sha_path(dst), ducksafe::files::hex(&copied.sha256)).unwrap();
    }
}

fn map_path(file: &Path) -> PathBuf {
    file.with_extension("map.json")
}

fn sha_path(file: &Path) -> PathBuf {
    file.with_extension("sha256")
}

fn read_map(path: &Path) -> BlockMap {
    serde_json::from_slice(&fs::read(path).unwrap()).unwrap()
}

/// Converts backup `old` of the store at `dir` against the newest plain backup `new`; the
/// store holds `<id>.duckdb` + `<id>.map.json` for plain backups, `packed/<id>.map.json` for
/// converted ones, and `packs/`.
fn convert(dir: &Path, old: &str, new: &str, independent: bool) {
    let t = std::time::Instant::now();
    let packs = Packs::of(dir);
    packs.ensure().unwrap();
    let packed_dir = dir.join("packed");
    fs::create_dir_all(&packed_dir).unwrap();
    let old_file = dir.join(format!("{old}.duckdb"));
    let new_file = dir.join(format!("{new}.duckdb"));
    let (old_map, new_map) = (
        read_map(&map_path(&old_file)),
        read_map(&map_path(&new_file)),
    );
    let packed: Vec<BlockMap> = fs::read_dir(&packed_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".map.json"))
        .map(|p| read_map(&p))
        .collect();
    let packed: Vec<&BlockMap> = packed.iter().collect();
    let core = std::time::Instant::now();
    let done = blockstore::convert(
        &packs,
        Plain {
            path: &old_file,
            map: &old_map,
        },
        &packed,
        &[Plain {
            path: &new_file,
            map: &new_map,
        }],
        independent,
    )
    .unwrap();
    let core = core.elapsed().as_secs_f64();
    // The manifest's switch, then the plain file goes (as the engine does it).
    ducksafe::files::write_json_atomic(&packed_dir.join(format!("{old}.map.json")), &old_map)
        .unwrap();
    fs::rename(
        sha_path(&old_file),
        packed_dir.join(format!("{old}.sha256")),
    )
    .unwrap();
    fs::remove_file(&old_file).unwrap();
    fs::remove_file(map_path(&old_file)).unwrap();
    ducksafe::files::sync_dir(dir).unwrap();
    // Where the time went, for the report: packing and proof, and the whole child.
    let line = format!(
        "{core:.3} {:.3} {}\n",
        t.elapsed().as_secs_f64(),
        done.secured.raw_bytes
    );
    let log = dir.join("phases.log");
    let mut all = fs::read_to_string(&log).unwrap_or_default();
    all.push_str(&line);
    fs::write(log, all).unwrap();
}

/// Rebuilds packed backup `id` of the store at `dir` into `dest` (created, fsynced), checking
/// every chunk and the whole file's SHA-256, as a restore of an older backup does.
fn rebuild(dir: &Path, id: &str, dest: &Path) {
    let packed_dir = dir.join("packed");
    let map = read_map(&packed_dir.join(format!("{id}.map.json")));
    let want = fs::read_to_string(packed_dir.join(format!("{id}.sha256"))).unwrap();
    let plains: Vec<(PathBuf, BlockMap)> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "duckdb"))
        .map(|p| {
            let m = read_map(&map_path(&p));
            (p, m)
        })
        .collect();
    let plains: Vec<Plain> = plains
        .iter()
        .map(|(p, m)| Plain { path: p, map: m })
        .collect();
    let index = Packs::of(dir).index().unwrap();
    let sources = blockstore::Sources::new(&index, &plains).unwrap();
    let out = ducksafe::files::create_private(dest).unwrap();
    let done = blockstore::rebuild::rebuild_to_file(&map, &sources, &out, dest).unwrap();
    assert_eq!(ducksafe::files::hex(&done.sha256.unwrap()), want.trim());
}

/// Flushes every pending write and deletion, unmeasured, before a measured operation.
fn settle(dir: &Path) {
    run(&mut Command::new("sync"), dir);
}

/// Bytes of every file under `dir`.
fn du(dir: &Path) -> u64 {
    let mut total = 0;
    for e in fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let m = e.metadata().unwrap();
        total += if m.is_dir() { du(&e.path()) } else { m.len() };
    }
    total
}

/// The file called `name` somewhere under `dir`.
fn find_file(dir: &Path, name: &str) -> Option<PathBuf> {
    for e in fs::read_dir(dir).ok()? {
        let p = e.ok()?.path();
        if p.is_dir() {
            if let Some(f) = find_file(&p, name) {
                return Some(f);
            }
        } else if p.file_name().is_some_and(|n| n == name) {
            return Some(p);
        }
    }
    None
}

fn restic_present() -> bool {
    Command::new("restic")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// One workload's figures.
struct Figures {
    shape: Shape,
    newest: u64,
    plain_total: u64,
    ours: u64,
    independent: u64,
    restic: Option<u64>,
    floor: Vec<Sample>,
    copy_map: Vec<Sample>,
    copy_nomap: Vec<Sample>,
    convert: Vec<Sample>,
    convert_bytes: Vec<u64>,
    restic_backup: Vec<Sample>,
    restore_floor: Vec<Sample>,
    restore_ours: Vec<Sample>,
    restore_restic: Vec<Sample>,
    /// Per conversion: seconds in packing and proof, seconds in the child, raw bytes packed.
    phases: String,
}

fn workload(root: &Path, scale: Scale, shape: Shape, reps: usize) -> Figures {
    let dir = root.join(scale.name).join(shape.name());
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    let db = dir.join("simulation.duckdb");
    let (ours, indep, scratch) = (
        dir.join("ours"),
        dir.join("independent"),
        dir.join("scratch"),
    );
    for d in [&ours, &indep, &scratch] {
        fs::create_dir_all(d).unwrap();
    }
    let tmp = scratch.join("floor.duckdb");
    let restic = restic_present().then(|| dir.join("restic"));
    let restic_cmd = |args: &[&str]| {
        let mut c = Command::new("restic");
        c.env("RESTIC_PASSWORD", "bench")
            .arg("--repo")
            .arg(restic.as_ref().unwrap())
            .arg("--cache-dir")
            .arg(dir.join("restic-cache"))
            .arg("--quiet")
            .args(args);
        c
    };
    if restic.is_some() {
        run(&mut restic_cmd(&["init"]), &dir);
    }
    run(
        Command::new(exe())
            .arg("--storage-base")
            .arg(&db)
            .arg(scale.scale.to_string()),
        &dir,
    );
    let mut f = Figures {
        shape,
        newest: 0,
        plain_total: 0,
        ours: 0,
        independent: 0,
        restic: None,
        floor: Vec::new(),
        copy_map: Vec::new(),
        copy_nomap: Vec::new(),
        convert: Vec::new(),
        convert_bytes: Vec::new(),
        restic_backup: Vec::new(),
        restore_floor: Vec::new(),
        restore_ours: Vec::new(),
        restore_restic: Vec::new(),
        phases: String::new(),
    };
    for k in 1..=BACKUPS {
        run(
            Command::new(exe())
                .arg("--storage-run")
                .arg(&db)
                .arg(shape.name())
                .arg(k.to_string())
                .arg(scale.scale.to_string()),
            &dir,
        );
        let bytes = fs::metadata(&db).unwrap().len();
        f.plain_total += bytes;
        f.newest = bytes;
        let id = format!("b{k}");
        let nomap = scratch.join("nomap.duckdb");
        // Interleaved, rotating: the floor, both copies, restic's backup; each after a `sync`
        // (not measured), so none pays for another's writeback or deletions.
        for i in 0..4 {
            settle(&dir);
            match (i + k as usize) % 4 {
                0 => f.floor.push(run(
                    Command::new("sh").arg("-c").arg(format!(
                        "cp {} {t} && sync {t} && rm {t}",
                        db.display(),
                        t = tmp.display()
                    )),
                    &dir,
                )),
                1 => f.copy_map.push(run(
                    Command::new(exe())
                        .arg("--storage-copy")
                        .arg(&db)
                        .arg(ours.join(format!("{id}.duckdb")))
                        .arg("map"),
                    &dir,
                )),
                2 => {
                    f.copy_nomap.push(run(
                        Command::new(exe())
                            .arg("--storage-copy")
                            .arg(&db)
                            .arg(&nomap)
                            .arg("nomap"),
                        &dir,
                    ));
                    fs::remove_file(&nomap).unwrap();
                }
                _ => {
                    if restic.is_some() {
                        f.restic_backup
                            .push(run(&mut restic_cmd(&["backup", "simulation.duckdb"]), &dir));
                    }
                }
            }
        }
        // The independent store gets the same plain file (a hard link: nothing is copied).
        for ext in ["duckdb", "map.json", "sha256"] {
            fs::hard_link(
                ours.join(format!("{id}.{ext}")),
                indep.join(format!("{id}.{ext}")),
            )
            .unwrap();
        }
        if k > 1 {
            settle(&dir);
            let prev = format!("b{}", k - 1);
            let before = Packs::of(&ours).bytes().unwrap();
            f.convert.push(run(
                Command::new(exe())
                    .arg("--storage-convert")
                    .arg(&ours)
                    .arg(&prev)
                    .arg(&id),
                &dir,
            ));
            f.convert_bytes
                .push(Packs::of(&ours).bytes().unwrap().saturating_sub(before));
            run(
                Command::new(exe())
                    .arg("--storage-convert")
                    .arg(&indep)
                    .arg(&prev)
                    .arg(&id)
                    .arg("independent"),
                &dir,
            );
        }
    }
    f.phases = fs::read_to_string(ours.join("phases.log")).unwrap_or_default();
    fs::remove_file(ours.join("phases.log")).unwrap();
    let _ = fs::remove_file(indep.join("phases.log"));
    f.ours = du(&ours);
    // The independent store's newest file is the same file as ours: count it once, as its own.
    f.independent = du(&indep);
    f.restic = restic.as_ref().map(|r| du(r));
    // Restore the oldest: ducksafe rebuilds it (every chunk and the SHA-256 checked, fsynced);
    // the floor copies a file of its size; restic restores its first snapshot.
    let rebuilt = scratch.join("rebuilt.duckdb");
    let floor_src = scratch.join("oldest.duckdb");
    run(
        Command::new(exe())
            .arg("--storage-rebuild")
            .arg(&ours)
            .arg("b1")
            .arg(&floor_src),
        &dir,
    );
    let first_snapshot = restic.as_ref().map(|_| {
        let out = restic_cmd(&["snapshots", "--json"]).output().unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v[0]["short_id"].as_str().unwrap().to_owned()
    });
    for rep in 0..reps {
        for i in 0..3 {
            settle(&dir);
            match (i + rep) % 3 {
                0 => f.restore_floor.push(run(
                    Command::new("sh").arg("-c").arg(format!(
                        "cp {} {t} && sync {t} && rm {t}",
                        floor_src.display(),
                        t = tmp.display()
                    )),
                    &dir,
                )),
                1 => {
                    f.restore_ours.push(run(
                        Command::new(exe())
                            .arg("--storage-rebuild")
                            .arg(&ours)
                            .arg("b1")
                            .arg(&rebuilt),
                        &dir,
                    ));
                    fs::remove_file(&rebuilt).unwrap();
                }
                _ => {
                    if let Some(snap) = &first_snapshot {
                        let target = scratch.join("restic-restore");
                        let mut c = restic_cmd(&["restore", snap, "--target"]);
                        c.arg(&target);
                        let mut s = run(&mut c, &dir);
                        let file = find_file(&target, "simulation.duckdb").unwrap();
                        let sync = run(Command::new("sync").arg(&file), &dir);
                        s.secs += sync.secs;
                        assert_eq!(
                            fs::metadata(&file).unwrap().len(),
                            fs::metadata(&floor_src).unwrap().len()
                        );
                        f.restore_restic.push(s);
                        fs::remove_dir_all(&target).unwrap();
                    }
                }
            }
        }
    }
    f
}

/// Runs the storage benchmark at `scales` and prints its tables.
pub fn bench(root: &Path, scales: &[Scale], reps: usize) -> serde_json::Value {
    let restic = restic_present();
    let restic_version = Command::new("restic")
        .arg("version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    println!(
        "restic: {}",
        if restic {
            restic_version.as_str()
        } else {
            "not on PATH (its rows are left out; Debian: apt-get install restic)"
        }
    );
    let mut report = Vec::new();
    for scale in scales {
        let figures: Vec<Figures> = Shape::ALL
            .into_iter()
            .map(|s| {
                let t = std::time::Instant::now();
                let f = workload(root, *scale, s, reps);
                // Its database, stores and restic repository go before the next workload's
                // are made: at 1 GiB the three would need about 35 GB at once.
                let _ = fs::remove_dir_all(root.join(scale.name).join(s.name()));
                eprintln!(
                    "{} {}: {:.0} s",
                    scale.name,
                    s.name(),
                    t.elapsed().as_secs_f64()
                );
                f
            })
            .collect();
        print_scale(scale, &figures);
        report.push(serde_json::json!({
            "scale": scale.name,
            "workloads": figures.iter().map(|f| serde_json::json!({
                "shape": f.shape.name(), "newest": f.newest, "plain": f.plain_total,
                "ours": f.ours, "independent": f.independent, "restic": f.restic,
                "floor_s": secs(&f.floor), "copy_map_s": secs(&f.copy_map),
                "copy_nomap_s": secs(&f.copy_nomap), "convert_s": secs(&f.convert),
                "convert_rss_kib": f.convert.iter().map(|s| s.max_rss_kib).collect::<Vec<_>>(),
                "convert_bytes": f.convert_bytes,
                "restic_backup_s": secs(&f.restic_backup), "restore_floor_s": secs(&f.restore_floor),
                "restore_ours_s": secs(&f.restore_ours), "restore_restic_s": secs(&f.restore_restic),
                "convert_phases": f.phases,
            })).collect::<Vec<_>>(),
        }));
        let _ = fs::remove_dir_all(root.join(scale.name));
    }
    serde_json::Value::Array(report)
}

fn secs(v: &[Sample]) -> Vec<f64> {
    v.iter().map(|s| s.secs).collect()
}

fn rss(v: &[Sample]) -> f64 {
    v.iter().map(|s| s.max_rss_kib).max().unwrap_or(0) as f64 / 1024.0
}

fn med(v: &[Sample]) -> f64 {
    if v.is_empty() {
        f64::NAN
    } else {
        median(v)
    }
}

/// Picks an operation's samples and its floor's from a workload's figures.
type Pick = dyn Fn(&Figures) -> (&[Sample], &[Sample]);

fn print_scale(scale: &Scale, fs_: &[Figures]) {
    let mib = |b: u64| b as f64 / f64::from(1u32 << 20);
    println!();
    println!("## Storage of {BACKUPS} backups, {} scale", scale.name);
    println!();
    let head: Vec<String> = fs_
        .iter()
        .map(|f| format!("{} (newest {:.0} MiB)", f.shape.describe(), mib(f.newest)))
        .collect();
    println!(
        "| {BACKUPS} backups, × the newest file | {} |",
        head.join(" | ")
    );
    println!("|---|{}", "---:|".repeat(fs_.len()));
    let row = |name: &str, get: &dyn Fn(&Figures) -> Option<u64>| {
        let cells: Vec<String> = fs_
            .iter()
            .map(|f| {
                get(f).map_or("–".into(), |b| {
                    format!("{:.3}× ({:.0} MiB)", b as f64 / f.newest as f64, mib(b))
                })
            })
            .collect();
        println!("| {name} | {} |", cells.join(" | "));
    };
    row("plain copies", &|f| Some(f.plain_total));
    row("ducksafe: newest plain + older as packed blocks", &|f| {
        Some(f.ours)
    });
    row(
        "ducksafe: older ones independent of the newest file",
        &|f| Some(f.independent),
    );
    row("restic, compression auto", &|f| f.restic);
    println!();
    println!(
        "## Timings, {} scale (medians; × the floor of the same run)",
        scale.name
    );
    println!();
    println!(
        "| operation | {} |",
        fs_.iter()
            .map(|f| f.shape.describe())
            .collect::<Vec<_>>()
            .join(" | ")
    );
    println!("|---|{}", "---:|".repeat(fs_.len()));
    let trow = |name: &str, get: &Pick| {
        let cells: Vec<String> = fs_
            .iter()
            .map(|f| {
                let (v, floor) = get(f);
                if v.is_empty() {
                    "–".into()
                } else {
                    format!(
                        "{:.3} s ({:.2}×, {:.0} MiB)",
                        med(v),
                        med(v) / med(floor),
                        rss(v)
                    )
                }
            })
            .collect();
        println!("| {name} | {} |", cells.join(" | "));
    };
    trow("cp + sync of the database (floor)", &|f| {
        (&f.floor, &f.floor)
    });
    trow("ducksafe verified copy, no block map", &|f| {
        (&f.copy_nomap, &f.floor)
    });
    trow("ducksafe verified copy with the block map", &|f| {
        (&f.copy_map, &f.floor)
    });
    trow(
        "conversion of the previous backup (pack + rebuild proof)",
        &|f| (&f.convert, &f.floor),
    );
    trow("restic backup", &|f| (&f.restic_backup, &f.floor));
    trow("restore oldest: cp + sync of its size (floor)", &|f| {
        (&f.restore_floor, &f.restore_floor)
    });
    trow(
        "restore oldest: ducksafe rebuild (chunks + SHA-256 checked, fsync)",
        &|f| (&f.restore_ours, &f.restore_floor),
    );
    trow("restore oldest: restic restore + sync", &|f| {
        (&f.restore_restic, &f.restore_floor)
    });
    let packs: Vec<String> = fs_
        .iter()
        .map(|f| {
            let mut b = f.convert_bytes.clone();
            b.sort_unstable();
            format!(
                "{}: {:.1}–{:.1} MiB",
                f.shape.name(),
                mib(*b.first().unwrap_or(&0)),
                mib(*b.last().unwrap_or(&0))
            )
        })
        .collect();
    println!();
    println!("new pack per conversion: {}", packs.join("; "));
    for f in fs_ {
        let mut core: Vec<f64> = f
            .phases
            .lines()
            .filter_map(|l| l.split(' ').next()?.parse().ok())
            .collect();
        core.sort_by(f64::total_cmp);
        if let Some(m) = core.get(core.len() / 2) {
            println!(
                "{}: conversion's pack + proof alone, median {m:.3} s ({:.2}× the floor); the rest is the process, reading manifests, the manifest's switch and removing the plain file",
                f.shape.name(),
                m / med(&f.floor)
            );
        }
    }
}
