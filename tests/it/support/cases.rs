//! The reliability suite's harness: every scenario counts its cases in a [`Tally`] (a case's
//! panic fails that case only), draws its randomness from a seeded [`Rng`], scales its counts in
//! soak mode (`DUCKSAFE_SOAK`), and records its figures for `docs/reliability-report.sh`
//! (`DUCKSAFE_RELIABILITY_REPORT`).

use std::fmt::Display;
use std::fs;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use crate::support;

use serde_json::{json, Value};

/// Environment variable naming the JSON file the figures go to.
pub const REPORT_ENV: &str = "DUCKSAFE_RELIABILITY_REPORT";

/// Environment variable that turns on soak mode.
pub const SOAK_ENV: &str = "DUCKSAFE_SOAK";

/// Environment variable that changes the PRNG seed.
pub const SEED_ENV: &str = "DUCKSAFE_RELIABILITY_SEED";

pub const DEFAULT_SEED: u64 = 0x5EED_D0C5_AFE5_0005;

/// Every scenario, in the order the report lists them: (its test's path in the `it` binary,
/// scenario). A scenario's [`Tally`] is named by the test function, the last part of the path.
pub const SCENARIOS: &[(&str, &str)] = &[
    (
        "reliability::crash::crash_anywhere_during_backup",
        "Crash anywhere: backup",
    ),
    (
        "reliability::crash::crash_anywhere_during_restore",
        "Crash anywhere: restore",
    ),
    ("reliability::disk_full::disk_full", "Disk full"),
    (
        "reliability::concurrency::concurrency_eight_hooks_at_once",
        "Concurrency",
    ),
    (
        "reliability::live_writer::live_writer_is_refused",
        "A live writer",
    ),
    (
        "reliability::corruption::corruption_in_stored_backups",
        "Corruption",
    ),
    (
        "reliability::hostile_input::hostile_input_in_process",
        "Hostile input (in-process)",
    ),
    (
        "reliability::hostile_input::hostile_input_through_the_binary",
        "Hostile input (real binary)",
    ),
    (
        "reliability::hostile_input::hostile_input_request_ids_are_echoed",
        "Hostile input: request_id echo",
    ),
    (
        "reliability::hostile_fs::hostile_filesystem_symlinks",
        "Hostile filesystem: symlinks",
    ),
    (
        "reliability::hostile_fs::hostile_filesystem_unsafe_backup_dir",
        "Hostile filesystem: unsafe backup directory",
    ),
    (
        "reliability::hostile_fs::hostile_filesystem_paths",
        "Hostile filesystem: `..` and absolute paths",
    ),
    ("reliability::secrets::secrets_are_never_printed", "Secrets"),
    (
        "reliability::damaged_database::damaged_database_is_refused",
        "A damaged database",
    ),
    (
        "reliability::backup_ids::backup_ids_are_never_reused",
        "Backup ids",
    ),
    (
        "reliability::readers::readers_beside_a_running_backup",
        "Operator commands beside a running backup",
    ),
    (
        "reliability::several_databases::several_databases_on_one_machine",
        "Several databases on one machine",
    ),
];

/// How many times the default case counts are multiplied.
pub fn soak_factor() -> u64 {
    match std::env::var(SOAK_ENV).ok().as_deref().map(str::trim) {
        None | Some("" | "0") => 1,
        Some("1") => 10,
        Some(n) => n.parse().unwrap_or(10).max(1),
    }
}

/// `n` cases in default mode, `n × factor` in soak mode.
pub fn scaled(n: u64) -> u64 {
    n * soak_factor()
}

pub fn seed() -> u64 {
    std::env::var(SEED_ENV)
        .ok()
        .and_then(|s| {
            let s = s.trim();
            s.strip_prefix("0x")
                .map_or_else(|| s.parse().ok(), |h| u64::from_str_radix(h, 16).ok())
        })
        .unwrap_or(DEFAULT_SEED)
}

/// SplitMix64: small, fast, and the same sequence everywhere for a given seed.
pub struct Rng(u64);

impl Rng {
    /// A generator for one scenario: the global seed mixed with the scenario's name, so that
    /// scenarios do not share a sequence and adding cases to one does not change another.
    pub fn for_scenario(name: &str) -> Rng {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in name.bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
        Rng(seed() ^ h)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (`0` when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }
    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }
    pub fn index(&mut self, len: usize) -> usize {
        usize::try_from(self.below(len as u64)).unwrap()
    }
    pub fn usize_in(&mut self, lo: usize, hi: usize) -> usize {
        usize::try_from(self.range(lo as u64, hi as u64)).unwrap()
    }
    /// True with probability `percent` / 100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    pub fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.index(xs.len())]
    }
    pub fn byte(&mut self) -> u8 {
        self.next_u64().to_le_bytes()[0]
    }
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.byte()).collect()
    }
    /// Log-uniform in `lo..=hi`: small sizes as often as large ones.
    pub fn log_size(&mut self, lo: usize, hi: usize) -> usize {
        let bits_lo = usize::BITS - lo.max(1).leading_zeros();
        let bits_hi = usize::BITS - hi.max(1).leading_zeros();
        let bits = self.range(u64::from(bits_lo), u64::from(bits_hi));
        let top = (1usize << bits).min(hi);
        let bottom = (top / 2).max(lo);
        self.usize_in(bottom.min(top), top)
    }
}

pub static REPORT_LOCK: Mutex<()> = Mutex::new(());

/// The figures of one scenario while it runs.
pub struct Tally {
    /// The test function's name (it also seeds the scenario's [`Rng`]).
    pub test: &'static str,
    /// Where the report lists it: its place in [`SCENARIOS`], its path, its scenario.
    order: usize,
    path: &'static str,
    scenario: &'static str,
    started: Instant,
    cases: u64,
    passed: u64,
    failures: Vec<String>,
    details: serde_json::Map<String, Value>,
}

impl Tally {
    pub fn new(test: &'static str) -> Tally {
        let (order, (path, scenario)) = SCENARIOS
            .iter()
            .enumerate()
            .find(|(_, (path, _))| path.rsplit("::").next() == Some(test))
            .unwrap_or_else(|| panic!("{test} is not listed in SCENARIOS"));
        Tally {
            test,
            order,
            path,
            scenario,
            started: Instant::now(),
            cases: 0,
            passed: 0,
            failures: Vec::new(),
            details: serde_json::Map::new(),
        }
    }

    /// Runs one case; a panic inside it counts as a failure of that case only.
    pub fn case(&mut self, label: impl Display, f: impl FnOnce() -> Result<(), String>) -> bool {
        let result = match catch_unwind(AssertUnwindSafe(f)) {
            Ok(r) => r,
            Err(p) => Err(format!("panicked: {}", panic_text(p.as_ref()))),
        };
        self.record_case(label, result)
    }

    /// Counts a case whose result is already known.
    pub fn record_case(&mut self, label: impl Display, result: Result<(), String>) -> bool {
        self.cases += 1;
        match result {
            Ok(()) => {
                self.passed += 1;
                true
            }
            Err(e) => {
                // Long messages keep their head and their tail.
                let chars: Vec<char> = e.chars().collect();
                let e: String = if chars.len() > 3000 {
                    let head: String = chars[..1500].iter().collect();
                    let tail: String = chars[chars.len() - 1500..].iter().collect();
                    format!("{head} […] {tail}")
                } else {
                    e
                };
                self.failures.push(format!("{label}: {e}"));
                false
            }
        }
    }

    /// Adds `n` to the counter `key` of the details.
    pub fn count(&mut self, key: &str, n: u64) {
        let v = self.details.entry(key.to_owned()).or_insert(json!(0));
        *v = json!(v.as_u64().unwrap_or(0) + n);
    }

    pub fn detail(&mut self, key: &str, v: impl Into<Value>) {
        self.details.insert(key.to_owned(), v.into());
    }

    /// Records the figures, then fails the test if any case failed.
    pub fn finish(self) {
        self.record(None);
        let shown: Vec<&String> = self.failures.iter().take(40).collect();
        assert!(
            self.failures.is_empty(),
            "{}: {} of {} cases failed; the first {}:\n{}",
            self.test,
            self.failures.len(),
            self.cases,
            shown.len(),
            shown
                .iter()
                .map(|s| format!("  - {s}"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        assert!(self.cases > 0, "{}: no case ran", self.test);
    }

    /// Records a skipped scenario, and says why on stderr.
    pub fn skip(self, why: &str) {
        support::skip(self.test, why);
        self.record(Some(why));
    }

    pub fn record(&self, skipped: Option<&str>) {
        let Ok(path) = std::env::var(REPORT_ENV) else {
            return;
        };
        let _guard = REPORT_LOCK.lock().unwrap_or_else(PoisonError::into_inner);
        let mut doc: Value = fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .filter(Value::is_object)
            .unwrap_or_else(|| json!({}));
        let factor = soak_factor();
        let soak_prefix = if factor > 1 {
            format!(
                "{SOAK_ENV}={} ",
                std::env::var(SOAK_ENV).unwrap_or_default()
            )
        } else {
            String::new()
        };
        let entry = json!({
            "order": self.order,
            "test": self.path,
            "scenario": self.scenario,
            "cases": self.cases,
            "passed": self.passed,
            "failed": self.cases - self.passed,
            "skipped": skipped,
            "duration_ms": u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            "details": self.details,
            "first_failures": self.failures.iter().take(5).collect::<Vec<_>>(),
            "rerun": format!("{soak_prefix}cargo test --test it -- --exact {}", self.path),
        });
        doc["suite"] = json!("tests/it/reliability/");
        doc["scenario_list"] = json!(SCENARIOS
            .iter()
            .map(|(t, s)| json!({"test": t, "scenario": s}))
            .collect::<Vec<_>>());
        doc["mode"] = json!(if factor > 1 { "soak" } else { "default" });
        doc["soak_factor"] = json!(factor);
        doc["seed"] = json!(format!("{:#x}", seed()));
        let mut list: Vec<Value> = doc["scenarios"].as_array().cloned().unwrap_or_default();
        list.retain(|e| e["test"] != self.path);
        list.push(entry);
        list.sort_by_key(|e| e["order"].as_u64());
        doc["scenarios"] = Value::Array(list);
        let tmp = format!("{path}.tmp-{}", std::process::id());
        fs::write(&tmp, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
        fs::rename(&tmp, &path).unwrap();
    }
}

pub fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".into())
}

/// `Err(msg)` unless `cond`.
pub fn ensure(cond: bool, msg: impl FnOnce() -> String) -> Result<(), String> {
    if cond {
        Ok(())
    } else {
        Err(msg())
    }
}

/// Sends every in-process log line of ducksafe to nowhere: the in-process scenarios call the
/// library hundreds of thousands of times, and its logger writes straight to file descriptor 2,
/// which the test harness does not capture.
pub fn silence_in_process_logs() {
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::sink)
        .try_init();
}
