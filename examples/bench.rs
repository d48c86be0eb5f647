//! The performance benchmark: ducksafe beside the baselines a user would pick instead, on the
//! same files, in the same run, interleaved and repeated; medians, ratios and peak memory.
//!
//! ```sh
//! cargo run --example bench                      # seed size, ~100 MB and ~1 GB
//! cargo run --example bench -- --sizes seed --reps 9
//! ```
//! Databases are generated once into `--dir` (default `$CARGO_TARGET_DIR/bench` or
//! `target/bench`) and reused by later runs. Every measured operation is a separate process,
//! timed from spawn to exit; its peak memory is the child's `ru_maxrss` from `wait4`. Caches
//! are warm for everyone alike (each file was just written or read). The report is printed as a
//! Markdown table and saved as `report.json` beside the databases.
#![allow(
    clippy::unwrap_used,
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation
)]
#![allow(unsafe_code, clippy::too_many_lines, clippy::items_after_statements)]
#![allow(clippy::zombie_processes)] // reaped by wait4, which also gives the peak RSS

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use ducksafe::duck::{Db, Limits};

#[path = "support/storage.rs"]
mod storage;

#[derive(Clone, Copy)]
struct Size {
    name: &'static str,
    /// Multiplier of the seed's 9,016 employees and 42,331 events.
    scale: u32,
    reps: usize,
}

const SIZES: [Size; 3] = [
    Size {
        name: "seed",
        scale: 1,
        reps: 9,
    },
    Size {
        name: "100MB",
        scale: 48,
        reps: 5,
    },
    Size {
        name: "1GB",
        scale: 750,
        reps: 5,
    },
];

struct Sample {
    secs: f64,
    max_rss_kib: i64,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // Child modes: work that must not inflate this process's memory (a child's peak RSS
    // starts from its parent's at fork, so the parent stays small).
    match args.get(1).map(String::as_str) {
        Some("--logical-copy") => return logical_copy(Path::new(&args[2]), Path::new(&args[3])),
        Some("--hash-speeds") => {
            println!("{}", hash_speeds());
            return;
        }
        Some(mode) if mode.starts_with("--storage-") => return storage::child(&args),
        Some("--generate") => {
            let scale: u32 = args[3].parse().unwrap();
            ducksafe::demo::create_sized(Path::new(&args[2]), 9_016 * scale, 42_331 * scale)
                .unwrap();
            return;
        }
        _ => {}
    }
    let mut sizes: Vec<Size> = SIZES.to_vec();
    let mut reps_override = None;
    let mut dir = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| PathBuf::from("target"), PathBuf::from)
        .join("bench");
    let mut storage_scales: Option<Vec<storage::Scale>> = None;
    let mut i = 1;
    while i < args.len() {
        match args[i].as_str() {
            // The storage benchmark instead: `--storage` (400MB), `--storage 400MB,1GB`.
            "--storage" => {
                let wanted = args
                    .get(i + 1)
                    .filter(|a| !a.starts_with("--"))
                    .map_or("400MB", String::as_str)
                    .to_owned();
                if args.get(i + 1).is_some_and(|a| !a.starts_with("--")) {
                    i += 1;
                }
                storage_scales = Some(
                    storage::SCALES
                        .into_iter()
                        .filter(|s| wanted.split(',').any(|w| w.eq_ignore_ascii_case(s.name)))
                        .collect(),
                );
            }
            "--sizes" => {
                let wanted: Vec<&str> = args[i + 1].split(',').collect();
                sizes.retain(|s| wanted.iter().any(|w| w.eq_ignore_ascii_case(s.name)));
                i += 1;
            }
            "--reps" => {
                reps_override = Some(args[i + 1].parse().unwrap());
                i += 1;
            }
            "--dir" => {
                dir = PathBuf::from(&args[i + 1]);
                i += 1;
            }
            other => panic!("unknown argument {other}; see the header of examples/bench.rs"),
        }
        i += 1;
    }
    fs::create_dir_all(&dir).unwrap();
    let dir = fs::canonicalize(&dir).unwrap();
    let bin = ducksafe_bin();
    let seed_manager = seed_manager();
    println!("# ducksafe benchmark");
    println!();
    println!("machine: {}", machine());
    println!("ducksafe: {}", bin.display());
    // In a child: its 256 MiB buffer must not raise the peak RSS that children inherit.
    let speeds = Command::new(std::env::current_exe().unwrap())
        .arg("--hash-speeds")
        .output()
        .unwrap();
    print!("{}", String::from_utf8_lossy(&speeds.stdout));
    println!();
    if let Some(scales) = storage_scales {
        let report = storage::bench(&dir.join("storage"), &scales, reps_override.unwrap_or(5));
        let path = dir.join("storage-report.json");
        fs::write(&path, serde_json::to_vec_pretty(&report).unwrap()).unwrap();
        println!("saved {}", path.display());
        return;
    }
    let mut report = Vec::new();
    for size in sizes {
        let reps = reps_override.unwrap_or(size.reps);
        let rows = bench_size(&dir, size, reps, &bin, seed_manager.as_deref());
        report.push(rows);
    }
    fs::write(
        dir.join("report.json"),
        serde_json::to_vec_pretty(&report).unwrap(),
    )
    .unwrap();
    println!("saved {}", dir.join("report.json").display());
}

fn bench_size(
    root: &Path,
    size: Size,
    reps: usize,
    bin: &Path,
    seed_manager: Option<&Path>,
) -> serde_json::Value {
    let project = root.join(size.name);
    fs::create_dir_all(&project).unwrap();
    let db = project.join("simulation.duckdb");
    if !db.exists() {
        let t = Instant::now();
        run(
            Command::new(std::env::current_exe().unwrap())
                .arg("--generate")
                .arg(&db)
                .arg(size.scale.to_string()),
            &project,
        );
        eprintln!(
            "generated {} in {:.1} s",
            db.display(),
            t.elapsed().as_secs_f64()
        );
    }
    let bytes = fs::metadata(&db).unwrap().len();
    // DuckDB's own default pool is 80% of RAM: the baseline for ducksafe's small scan pool.
    let duckdb_default = format!("DUCKDB_MEMORY_LIMIT: {}MB\n", ram_mb() * 4 / 5);
    for (name, level, extra) in [
        ("quick", "quick", ""),
        ("standard", "standard", ""),
        ("full", "full", ""),
        ("full-64MB", "full", "DUCKDB_MEMORY_LIMIT: 64MB\n"),
        ("full-duckdb-pool", "full", duckdb_default.as_str()),
    ] {
        fs::write(
            project.join(format!("config.{name}.yaml")),
            format!(
                "DB_PATH: simulation.duckdb\nLOG_LEVEL: ERROR\nBACKUP_DIR: backups\nBACKUP_KEEP_LAST: 1\nBACKUP_MIN_FREE_BYTES: 0\nVERIFY_LEVEL: {level}\n{extra}"
            ),
        )
        .unwrap();
    }
    let cfg = |level: &str| project.join(format!("config.{level}.yaml"));
    // `ducksafe --config config.NAME.yaml ARGS…` in the project, measured.
    let ducksafe = |name: &str, args: &[&str]| {
        run(
            Command::new(bin).arg("--config").arg(cfg(name)).args(args),
            &project,
        )
    };
    // One backup to verify and restore from.
    ducksafe("full", &["backup"]);

    let scratch = project.join("scratch");
    let _ = fs::remove_dir_all(&scratch);
    fs::create_dir_all(&scratch).unwrap();

    type Method<'a> = (&'a str, Box<dyn Fn() -> Sample + 'a>);
    let sh = |script: String| {
        let project = project.clone();
        move || {
            let s = run(Command::new("sh").arg("-c").arg(&script), &project);
            s
        }
    };
    let cp_target = scratch.join("copy.duckdb");
    let mut methods: Vec<Method> = vec![
        (
            "cp + sync (backup floor)",
            Box::new(sh(format!(
                "cp {db} {t} && sync {t} && rm {t}",
                db = db.display(),
                t = cp_target.display()
            ))),
        ),
        (
            "cp + sync to a temp in the db dir (restore floor)",
            Box::new(sh(format!(
                "cp {b} {t} && sync {t} && rm {t}",
                b = db.display(),
                t = project.join("restore-floor.tmp").display()
            ))),
        ),
        (
            "ducksafe backup, quick",
            Box::new(|| ducksafe("quick", &["backup"])),
        ),
        (
            "ducksafe backup, standard",
            Box::new(|| ducksafe("standard", &["backup"])),
        ),
        (
            "ducksafe backup, full",
            Box::new(|| ducksafe("full", &["backup"])),
        ),
        (
            "ducksafe backup, full, DUCKDB_MEMORY_LIMIT=64MB",
            Box::new(|| ducksafe("full-64MB", &["backup"])),
        ),
        (
            "ducksafe backup, full, DUCKDB_MEMORY_LIMIT=80% of RAM (DuckDB's default pool)",
            Box::new(|| ducksafe("full-duckdb-pool", &["backup"])),
        ),
        (
            "ducksafe hook pre_run, full (process start to JSON answer)",
            Box::new(|| {
                let req = format!(
                    r#"{{"protocol_version":1,"event":"pre_run","config":{{"path":"{}"}}}}"#,
                    cfg("full").display()
                );
                run_stdin(Command::new(bin).arg("hook"), &project, req.as_bytes())
            }),
        ),
        (
            "ducksafe verify latest",
            Box::new(|| ducksafe("full", &["verify", "latest"])),
        ),
        (
            "ducksafe restore latest",
            Box::new(|| {
                let s = ducksafe("full", &["restore", "latest"]);
                let _ = fs::remove_dir_all(project.join("backups/quarantine"));
                s
            }),
        ),
        (
            "COPY FROM DATABASE (DuckDB logical copy)",
            Box::new(|| {
                let dst = scratch.join("logical.duckdb");
                let s = run(
                    Command::new(std::env::current_exe().unwrap())
                        .arg("--logical-copy")
                        .arg(&db)
                        .arg(&dst),
                    &project,
                );
                let _ = fs::remove_file(&dst);
                let _ = fs::remove_file(scratch.join("logical.duckdb.wal"));
                s
            }),
        ),
    ];
    if let Some(seed) = seed_manager {
        let seed_dir = scratch.join("seed_backups");
        let (db, project) = (db.clone(), project.clone());
        methods.push((
            "seed BackupManager (python, no fsync, no read-back)",
            Box::new(move || {
                let s = run(
                    Command::new("python3").arg(seed).arg(&db).arg(&seed_dir),
                    &project,
                );
                let _ = fs::remove_dir_all(&seed_dir);
                s
            }),
        ));
    }

    let mut samples: Vec<Vec<Sample>> = methods.iter().map(|_| Vec::new()).collect();
    // Warm-up round, not measured: every method once, so all start with the same caches.
    for (_, f) in &methods {
        f();
    }
    for rep in 0..reps {
        // Interleave, rotating the order each repetition.
        for k in 0..methods.len() {
            let idx = (k + rep) % methods.len();
            samples[idx].push((methods[idx].1)());
        }
    }
    let floor = median(&samples[0]);
    let restore_floor = median(&samples[1]);
    println!(
        "## {} database: {} ({} reps, medians)",
        size.name,
        human(bytes),
        reps
    );
    println!();
    println!("| operation | median s | vs floor | peak RSS MiB |");
    println!("|---|---:|---:|---:|");
    let mut rows = Vec::new();
    for (i, (name, _)) in methods.iter().enumerate() {
        let m = median(&samples[i]);
        let base = if name.contains("restore") {
            restore_floor
        } else {
            floor
        };
        let rss = samples[i].iter().map(|s| s.max_rss_kib).max().unwrap_or(0) as f64 / 1024.0;
        println!("| {name} | {m:.3} | {:.2}x | {rss:.1} |", m / base);
        rows.push(serde_json::json!({
            "operation": name, "median_s": m, "ratio": m / base, "peak_rss_mib": rss,
            "samples_s": samples[i].iter().map(|s| s.secs).collect::<Vec<_>>(),
        }));
    }
    println!();
    let _ = fs::remove_dir_all(&scratch);
    serde_json::json!({"size": size.name, "bytes": bytes, "reps": reps, "rows": rows})
}

fn median(v: &[Sample]) -> f64 {
    let mut s: Vec<f64> = v.iter().map(|x| x.secs).collect();
    s.sort_by(f64::total_cmp);
    s[s.len() / 2]
}

fn run(cmd: &mut Command, cwd: &Path) -> Sample {
    run_stdin(cmd, cwd, b"")
}

/// Spawns, feeds stdin, waits with `wait4` for the child's own peak RSS.
fn run_stdin(cmd: &mut Command, cwd: &Path, input: &[u8]) -> Sample {
    let start = Instant::now();
    let mut child = cmd
        .current_dir(cwd)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        let mut stdin = child.stdin.take().unwrap();
        let _ = stdin.write_all(input);
    }
    let pid = child.id().cast_signed();
    let mut status = 0;
    // SAFETY: zeroed rusage is valid; wait4 fills it for our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::wait4(pid, &raw mut status, 0, &raw mut usage) };
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(rc, pid, "wait4");
    let ok = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    if !ok {
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            use std::io::Read;
            let _ = e.read_to_string(&mut err);
        }
        panic!("{cmd:?} failed (status {status}): {err}");
    }
    Sample {
        secs,
        max_rss_kib: usage.ru_maxrss,
    }
}

/// DuckDB's logical copy, the alternative a DuckDB user would reach for.
fn logical_copy(src: &Path, dst: &Path) {
    let db = Db::open_read_write(Path::new(":memory:"), &Limits::default()).unwrap();
    db.execute_batch(&format!(
        "ATTACH '{}' AS src (READ_ONLY); ATTACH '{}' AS dst; COPY FROM DATABASE src TO dst; DETACH dst;",
        src.display(),
        dst.display()
    ))
    .unwrap();
    db.close().unwrap();
}

/// Total RAM in MB, from `/proc/meminfo`.
fn ram_mb() -> u64 {
    fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(4096, |kb| kb / 1000)
}

/// In-memory throughput of SHA-256 (with the CPU's SHA extensions where present), on 256 MiB:
/// the slowest step of every copy.
fn hash_speeds() -> String {
    use sha2::Digest;
    let data = vec![0x5au8; 256 << 20];
    let t = Instant::now();
    let mut sha = sha2::Sha256::new();
    for c in data.chunks(1 << 20) {
        sha.update(c);
    }
    let _ = sha.finalize();
    let gbs = 0.25 * f64::from(1u32 << 30) / 1e9 / t.elapsed().as_secs_f64();
    let sha_ext = fs::read_to_string("/proc/cpuinfo").is_ok_and(|s| s.contains(" sha_ni"));
    format!(
        "hashes: SHA-256 {gbs:.2} GB/s (CPU SHA extensions: {}); DuckDB block checksums {:.2} GB/s",
        if sha_ext { "yes" } else { "no" },
        block_checksum_speed(data)
    )
}

/// In-memory throughput of the native check of DuckDB's block checksums (the copy's own pass
/// runs it on every byte), on 256 MiB laid out as headers and 256 KiB blocks that all pass.
fn block_checksum_speed(mut data: Vec<u8>) -> f64 {
    use ducksafe::engine::integrity::{checksum, Checker, Layout, BLOCKS_START};
    const BLOCK: usize = 262_144;
    let start = usize::try_from(BLOCKS_START).unwrap();
    let blocks = (data.len() - start) / BLOCK;
    data.truncate(start + blocks * BLOCK);
    let mut seal = |from: usize, to: usize| {
        let sum = checksum(&data[from + 8..to]);
        data[from..from + 8].copy_from_slice(&sum.to_le_bytes());
    };
    for h in 0..3 {
        seal(h * 4096, (h + 1) * 4096);
    }
    for b in 0..blocks {
        seal(start + b * BLOCK, start + (b + 1) * BLOCK);
    }
    let mut checker = Checker::new(Layout {
        block_size: BLOCK as u64,
        block_count: blocks as u64,
        free: Vec::new(),
    });
    let t = Instant::now();
    for c in data.chunks(1 << 20) {
        checker.feed(c);
    }
    assert!(checker.finish().is_ok(), "the synthetic blocks all pass");
    data.len() as f64 / 1e9 / t.elapsed().as_secs_f64()
}

fn ducksafe_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/debug/examples/bench → target/debug/ducksafe
    let bin = exe.parent().unwrap().parent().unwrap().join("ducksafe");
    assert!(bin.exists(), "build the binary first: cargo build");
    bin
}

fn seed_manager() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/bench/seed_backup_manager.py");
    p.exists().then(|| fs::canonicalize(p).unwrap())
}

fn machine() -> String {
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    let mem = fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .next()
                .map(|l| l.split_whitespace().nth(1).unwrap_or("0").to_owned())
        })
        .and_then(|k| k.parse::<u64>().ok())
        .map_or(0, |k| k / 1024 / 1024);
    format!(
        "{cpu}, {cores} cores, {mem} GiB RAM, {}",
        std::env::consts::ARCH
    )
}

fn human(n: u64) -> String {
    ducksafe::error::human_bytes(n)
}
