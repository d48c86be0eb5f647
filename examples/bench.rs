//! The performance benchmark: ducksafe beside the baselines a user would pick instead, on the
//! same files, in the same run, interleaved and repeated; medians, ratios and peak memory.
//!
//! ```sh
//! cargo run --example bench                      # seed size, ~100 MB and ~1 GB
//! cargo run --example bench -- --sizes seed --reps 9
//! cargo run --example bench -- --sizes seed --baseline OLD/ducksafe   # an older build beside
//! cargo run --example bench -- --phases 15 --baseline OLD/ducksafe    # the hook's DEBUG phase log
//! ```
//! The seed's manager runs twice: under `python3` from PATH, and under the Python of an isolated
//! venv made once beside the databases (`python3 -m venv --without-pip`), which starts faster.
//! `--baseline BIN` adds the hook and backups of another ducksafe binary to the same interleaved
//! run, so before and after are measured side by side.
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
    /// User plus system CPU time of the child.
    cpu_secs: f64,
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
    let mut baseline: Option<PathBuf> = None;
    let mut phases: Option<usize> = None;
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
            "--baseline" => {
                baseline = Some(fs::canonicalize(&args[i + 1]).unwrap());
                i += 1;
            }
            "--phases" => {
                phases = Some(args[i + 1].parse().unwrap());
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
    if let Some(runs) = phases {
        phase_log(&dir, &bin, baseline.as_deref(), runs);
        return;
    }
    let seed_python = seed_manager.as_ref().map(|_| isolated_python(&dir));
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
        let rows = bench_size(
            &dir,
            size,
            reps,
            &bin,
            baseline.as_deref(),
            seed_manager.as_deref().zip(seed_python.as_deref()),
        );
        report.push(rows);
    }
    fs::write(
        dir.join("report.json"),
        serde_json::to_vec_pretty(&report).unwrap(),
    )
    .unwrap();
    println!("saved {}", dir.join("report.json").display());
}

/// The project folder of `size`, with its database generated once.
fn project_for(root: &Path, size: Size) -> PathBuf {
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
    project
}

fn bench_size(
    root: &Path,
    size: Size,
    reps: usize,
    bin: &Path,
    baseline: Option<&Path>,
    seed: Option<(&Path, &Path)>,
) -> serde_json::Value {
    let project = project_for(root, size);
    let db = project.join("simulation.duckdb");
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
    // `BIN --config config.NAME.yaml ARGS…` in the project, measured.
    let ducksafe_of = |bin: &Path, name: &str, args: &[&str]| {
        run(
            Command::new(bin).arg("--config").arg(cfg(name)).args(args),
            &project,
        )
    };
    let ducksafe = |name: &str, args: &[&str]| ducksafe_of(bin, name, args);
    // The hook's pre_run at `level`, from process start to exit.
    let hook_of = |bin: &Path, level: &str| {
        let req = format!(
            r#"{{"protocol_version":1,"event":"pre_run","config":{{"path":"{}"}}}}"#,
            cfg(level).display()
        );
        run_stdin(Command::new(bin).arg("hook"), &project, req.as_bytes())
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
            "ducksafe hook pre_run, quick (process start to exit)",
            Box::new(|| hook_of(bin, "quick")),
        ),
        (
            "ducksafe hook pre_run, full (process start to exit)",
            Box::new(|| hook_of(bin, "full")),
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
    if let Some(old) = baseline {
        methods.push((
            "baseline: ducksafe hook pre_run, quick",
            Box::new(move || hook_of(old, "quick")),
        ));
        methods.push((
            "baseline: ducksafe hook pre_run, full",
            Box::new(move || hook_of(old, "full")),
        ));
        methods.push((
            "baseline: ducksafe backup, quick",
            Box::new(move || ducksafe_of(old, "quick", &["backup"])),
        ));
        methods.push((
            "baseline: ducksafe backup, full",
            Box::new(move || ducksafe_of(old, "full", &["backup"])),
        ));
    }
    // The row the paired ratios divide by: the seed's manager under the isolated venv.
    let mut seed_row = None;
    if let Some((seed, venv_python)) = seed {
        for (name, python) in [
            (
                "seed BackupManager (python3 from PATH, no fsync, no read-back)",
                Path::new("python3"),
            ),
            ("seed BackupManager (isolated venv's python)", venv_python),
        ] {
            let seed_dir = scratch.join("seed_backups");
            let (db, project) = (db.clone(), project.clone());
            methods.push((
                name,
                Box::new(move || {
                    let s = run(
                        Command::new(python).arg(seed).arg(&db).arg(&seed_dir),
                        &project,
                    );
                    let _ = fs::remove_dir_all(&seed_dir);
                    s
                }),
            ));
        }
        seed_row = Some(methods.len() - 1);
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
    println!(
        "| operation | median s | vs floor | median CPU s | peak RSS MiB | vs seed (venv), paired |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    let mut rows = Vec::new();
    for (i, (name, _)) in methods.iter().enumerate() {
        let m = median(&samples[i]);
        let base = if name.contains("restore") {
            restore_floor
        } else {
            floor
        };
        let cpu = median_of(samples[i].iter().map(|s| s.cpu_secs).collect());
        let rss = samples[i].iter().map(|s| s.max_rss_kib).max().unwrap_or(0) as f64 / 1024.0;
        // The median of this row's sample divided by the seed's sample of the same repetition.
        let paired = seed_row.map(|k| {
            median_of(
                samples[i]
                    .iter()
                    .zip(&samples[k])
                    .map(|(a, b)| a.secs / b.secs)
                    .collect(),
            )
        });
        let paired_text = paired.map_or_else(String::new, |r| format!("{r:.2}x"));
        println!(
            "| {name} | {m:.3} | {:.2}x | {cpu:.3} | {rss:.1} | {paired_text} |",
            m / base
        );
        rows.push(serde_json::json!({
            "operation": name, "median_s": m, "ratio": m / base, "median_cpu_s": cpu,
            "peak_rss_mib": rss, "paired_vs_seed_venv": paired,
            "samples_s": samples[i].iter().map(|s| s.secs).collect::<Vec<_>>(),
            "samples_cpu_s": samples[i].iter().map(|s| s.cpu_secs).collect::<Vec<_>>(),
        }));
    }
    println!();
    let _ = fs::remove_dir_all(&scratch);
    serde_json::json!({"size": size.name, "bytes": bytes, "reps": reps, "rows": rows})
}

fn median(v: &[Sample]) -> f64 {
    median_of(v.iter().map(|x| x.secs).collect())
}

fn median_of(mut s: Vec<f64>) -> f64 {
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
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Sample {
        secs,
        cpu_secs: tv(usage.ru_utime) + tv(usage.ru_stime),
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

/// The seed's manager, `../shared/bench/seed_backup_manager.py` beside the checkout. Looked
/// up from the working directory first: the compiled-in manifest folder is that of whichever
/// checkout built the example (a CI clone shares the target folder), not necessarily this one.
fn seed_manager() -> Option<PathBuf> {
    let rel = "../shared/bench/seed_backup_manager.py";
    let found = [
        std::env::current_dir().unwrap_or_default(),
        PathBuf::from(env!("CARGO_MANIFEST_DIR")),
    ]
    .into_iter()
    .map(|d| d.join(rel))
    .find(|p| p.exists());
    if found.is_none() {
        eprintln!("note: {rel} not found from the working directory: the seed manager's rows and the paired column are left out");
    }
    found.map(|p| fs::canonicalize(p).unwrap())
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

/// The Python of an isolated venv beside the databases, made once (`python3 -m venv
/// --without-pip`): the seed's manager with the fastest start-up a user would give it.
fn isolated_python(root: &Path) -> PathBuf {
    let venv = root.join("seed-venv");
    let python = venv.join("bin/python");
    if !python.exists() {
        let made = Command::new("python3")
            .args(["-m", "venv", "--without-pip"])
            .arg(&venv)
            .status()
            .unwrap();
        assert!(made.success(), "python3 -m venv failed");
    }
    python
}

/// The hook's own `DEBUG` phase log at seed size, `runs` times per level after one unmeasured
/// run, for this build and for `baseline`: the median of each line, the wall time from spawn to
/// exit, and what lies outside the log (process start and exit).
fn phase_log(root: &Path, bin: &Path, baseline: Option<&Path>, runs: usize) {
    let project = project_for(root, SIZES[0]);
    let mut bins = vec![("this build", bin)];
    if let Some(b) = baseline {
        bins.push(("baseline", b));
    }
    for level in ["quick", "full"] {
        let cfg = project.join(format!("config.phases.{level}.yaml"));
        fs::write(
            &cfg,
            format!("DB_PATH: simulation.duckdb\nLOG_LEVEL: DEBUG\nBACKUP_DIR: backups\nBACKUP_KEEP_LAST: 1\nBACKUP_MIN_FREE_BYTES: 0\nVERIFY_LEVEL: {level}\n"),
        )
        .unwrap();
        let req = format!(
            r#"{{"protocol_version":1,"event":"pre_run","config":{{"path":"{}"}}}}"#,
            cfg.display()
        );
        // Per binary: line → one list of (sum of its durations, times it appeared) per run.
        let mut logs: Vec<PhaseRuns> = bins.iter().map(|_| PhaseRuns::default()).collect();
        for rep in 0..=runs {
            for (k, (_, b)) in bins.iter().enumerate() {
                let start = Instant::now();
                let out = Command::new(b)
                    .arg("hook")
                    .current_dir(&project)
                    .stdin(Stdio::piped())
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()
                    .and_then(|mut c| {
                        c.stdin.take().unwrap().write_all(req.as_bytes())?;
                        c.wait_with_output()
                    })
                    .unwrap();
                let wall = start.elapsed().as_secs_f64() * 1000.0;
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
                if rep > 0 {
                    logs[k].add(&String::from_utf8_lossy(&out.stderr), wall);
                }
            }
        }
        println!("## The hook's phase log at seed size, VERIFY_LEVEL {level} ({runs} runs, medians in ms)");
        println!();
        let header: Vec<String> = bins.iter().map(|(n, _)| format!("{n} ms | n")).collect();
        println!("| line of the log | {} |", header.join(" | "));
        println!("|---|{}", "---:|---:|".repeat(bins.len()));
        let mut keys: Vec<String> = Vec::new();
        for l in &logs {
            for key in &l.order {
                if !keys.contains(key) {
                    keys.push(key.clone());
                }
            }
        }
        for key in keys {
            let cells: Vec<String> = logs
                .iter()
                .map(|l| match l.lines.get(&key) {
                    Some(v) if v.len() == runs => format!(
                        "{:.1} | {}",
                        median_of(v.iter().map(|(d, _)| *d).collect()),
                        median_of(v.iter().map(|(_, n)| f64::from(*n)).collect())
                    ),
                    Some(v) => format!(
                        "{:.1} | in {} of {runs} runs",
                        median_of(v.iter().map(|(d, _)| *d).collect()),
                        v.len()
                    ),
                    None => " | ".to_owned(),
                })
                .collect();
            println!("| {key} | {} |", cells.join(" | "));
        }
        println!();
    }
}

/// The parsed `DEBUG` logs of several runs of one binary.
#[derive(Default)]
struct PhaseRuns {
    order: Vec<String>,
    lines: std::collections::HashMap<String, Vec<(f64, u32)>>,
}

impl PhaseRuns {
    /// Adds one run's log: `phase NAME: D ms (at T ms)` and `NAME: D ms (from S to T ms)`
    /// lines, with paths replaced by what they are, durations of a line summed over the run.
    fn add(&mut self, log: &str, wall_ms: f64) {
        let mut run: Vec<(String, f64, u32)> = Vec::new();
        let mut last_at = 0.0;
        for line in log.lines() {
            let Some(rest) = line.trim_start().strip_prefix("DEBUG ") else {
                continue;
            };
            let Some((name, tail)) = rest.rsplit_once(": ") else {
                continue;
            };
            let Some(ms) = tail
                .split_once(" ms")
                .and_then(|(d, _)| d.parse::<f64>().ok())
            else {
                continue;
            };
            if let Some(at) = tail
                .split_once("(at ")
                .and_then(|(_, t)| t.trim_end_matches(" ms)").parse::<f64>().ok())
            {
                last_at = at;
            }
            let key = generic(name);
            match run.iter_mut().find(|(k, _, _)| *k == key) {
                Some(e) => {
                    e.1 += ms;
                    e.2 += 1;
                }
                None => run.push((key, ms, 1)),
            }
        }
        run.push((
            "process start and exit (wall from spawn to exit, minus the last phase's end)".into(),
            wall_ms - last_at,
            1,
        ));
        run.push(("wall, spawn to exit".into(), wall_ms, 1));
        for (key, ms, n) in run {
            if !self.order.contains(&key) {
                self.order.push(key.clone());
            }
            self.lines.entry(key).or_default().push((ms, n));
        }
    }
}

/// A log line's name with its paths replaced by what they name, so runs compare.
fn generic(name: &str) -> String {
    let mut out = String::new();
    let mut parts = name.split('`');
    out.push_str(parts.next().unwrap_or(""));
    let mut inside = true;
    for p in parts {
        if inside {
            let what = if p.contains(".ducksafe-tmp-backup") {
                "the copy"
            } else if p.ends_with("simulation.duckdb") {
                "the database"
            } else if p.ends_with(".manifest.json") {
                "a manifest"
            } else if p.ends_with(".sha256") {
                "a sidecar"
            } else if p.ends_with(".ducksafe-run.json") {
                "the run record"
            } else if p.ends_with("backups") {
                "the backup folder"
            } else {
                p
            };
            out.push('`');
            out.push_str(what);
            out.push('`');
        } else {
            out.push_str(p);
        }
        inside = !inside;
    }
    out
}
