//! Hostile input: 100,000 generated hook requests in-process, about 300 through the real
//! binary, endless configuration paths, and every `request_id` the schema accepts.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::support::cases::{ensure, scaled, silence_in_process_logs, Rng, Tally};
use crate::support::runs::{one_line, start};
use crate::support::{self, bin, jstr, request};

use ducksafe::protocol::{Decision, ErrorCode, Response, Status, MAX_REQUEST_BYTES};
use serde_json::json;

/// Exit codes the hook may answer with (the protocol table; 64 is for command-line usage and 70
/// for a caught panic, which is a bug).
const HOOK_EXITS: [i32; 8] = [0, 65, 66, 73, 74, 75, 76, 78];

/// What every hook response must satisfy, whatever the input: one line that parses back to the
/// same response, an exit code from the contract that every error entry agrees with, `retryable`
/// exactly for 75, a decision that belongs to the event, and no `internal` error.
///
/// In-process (`hostile_input_in_process`), "one line" and "parses back" prove only that the
/// response serializes to one line and that serde reads it back: nothing is written to a stdout
/// there. What a caller really reads (exactly one line on the real stdout, the exit status equal
/// to `exit_code`, no panic on stderr) is proven by the cases run through the binary
/// (`hostile_input_through_the_binary`, `binary_contract`), about 300 of them.
fn contract(input_len: usize, r: &Response) -> Result<(), String> {
    let line = serde_json::to_string(r).map_err(|e| e.to_string())?;
    ensure(!line.contains('\n'), || {
        "the response is not one line".into()
    })?;
    let back: Response = serde_json::from_str(&line).map_err(|e| e.to_string())?;
    ensure(back == *r, || {
        "the response does not parse back to itself".into()
    })?;
    ensure(r.protocol_version == 1, || {
        format!("protocol_version {}", r.protocol_version)
    })?;
    ensure(HOOK_EXITS.contains(&r.exit_code), || {
        format!(
            "exit code {} is not in the contract: {:?}",
            r.exit_code, r.errors
        )
    })?;
    ensure((r.status == Status::Ok) == (r.exit_code == 0), || {
        format!("status {:?} with exit code {}", r.status, r.exit_code)
    })?;
    ensure((r.exit_code == 0) == r.errors.is_empty(), || {
        format!("exit code {} with errors {:?}", r.exit_code, r.errors)
    })?;
    for e in &r.errors {
        ensure(e.code != ErrorCode::Internal, || {
            format!("an internal error (a caught panic?): {}", e.message)
        })?;
        ensure(e.code.exit_code() == r.exit_code, || {
            format!("error {:?} with exit code {}", e.code, r.exit_code)
        })?;
        ensure(e.retryable == (r.exit_code == 75), || {
            format!("retryable {} with exit {}", e.retryable, r.exit_code)
        })?;
    }
    let allowed: &[Decision] = match r.event.as_deref() {
        Some("pre_run") => &[Decision::Proceed, Decision::Abort],
        Some("post_run") => &[
            Decision::Kept,
            Decision::Restored,
            Decision::RestoreFailed,
            Decision::Skipped,
        ],
        Some("validate") => &[Decision::Valid, Decision::Invalid],
        _ => &[Decision::Abort],
    };
    ensure(allowed.contains(&r.decision), || {
        format!("decision {:?} for event {:?}", r.decision, r.event)
    })?;
    if input_len > MAX_REQUEST_BYTES {
        ensure(
            r.exit_code == 65 && r.errors[0].message.contains("larger than"),
            || format!("an oversized stdin was not refused as such: {:?}", r.errors),
        )?;
    }
    Ok(())
}

/// Files the generated requests point to, all of which make ducksafe stop early (the fuzzer
/// must not take real backups a hundred thousand times):
/// - `notdb`: a config whose database is not a DuckDB file;
/// - `unsafe_dir`: a config with a real database and a world-writable backup directory;
/// - `bad_yaml`, `bad_keys`: invalid configurations.
struct FuzzFiles {
    dir: tempfile::TempDir,
}

impl FuzzFiles {
    fn new() -> FuzzFiles {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        fs::write(d.join("notes.duckdb"), "not a database\n".repeat(2000)).unwrap();
        ducksafe::demo::create_sized(&d.join("real.duckdb"), 20, 50).unwrap();
        fs::create_dir(d.join("open")).unwrap();
        fs::set_permissions(d.join("open"), fs::Permissions::from_mode(0o777)).unwrap();
        fs::write(
            d.join("notdb.yaml"),
            "DB_PATH: notes.duckdb\nLOG_LEVEL: ERROR\nBACKUP_DIR: open\n",
        )
        .unwrap();
        fs::write(
            d.join("unsafe_dir.yaml"),
            "DB_PATH: real.duckdb\nLOG_LEVEL: ERROR\nBACKUP_DIR: open\n",
        )
        .unwrap();
        fs::write(d.join("bad_yaml.yaml"), "DB_PATH: [unclosed\n  - : :\n\t").unwrap();
        fs::write(
            d.join("bad_keys.json"),
            r#"{"DB_PATH": 7, "LOG_LEVEL": "LOUD", "BACKUP_KEEP_LAST": -1, "db_pth": "x"}"#,
        )
        .unwrap();
        FuzzFiles { dir }
    }
    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }
}

/// The families of generated input, with their default counts (100,000 in all).
const FUZZ_FAMILIES: [(&str, u64); 8] = [
    ("random bytes", 20_000),
    ("random JSON tokens", 15_000),
    ("mutated valid requests", 30_000),
    ("structured requests with hostile values", 25_000),
    ("deep nesting", 4_000),
    ("huge strings", 1_000),
    ("invalid UTF-8", 4_900),
    ("stdin larger than the limit", 100),
];

/// Generates hook input.
struct Fuzz {
    rng: Rng,
    templates: Vec<String>,
    /// Whether a request may leave `config` out (only when the default lookup finds nothing).
    may_omit_config: bool,
    files_notdb: String,
    files_unsafe: String,
    files_bad_yaml: String,
    files_bad_keys: String,
    notes_db: String,
}

impl Fuzz {
    fn new(rng: Rng, files: &FuzzFiles, may_omit_config: bool) -> Fuzz {
        let notdb = files.path("notdb.yaml");
        let uns = files.path("unsafe_dir.yaml");
        let notes = files.path("notes.duckdb");
        let j = |s: &str| serde_json::to_string(s).unwrap();
        let mut templates = vec![
            format!(r#"{{"protocol_version":1,"event":"pre_run","request_id":"run-1","config":{{"path":{}}}}}"#, j(&notdb)),
            format!(r#"{{"protocol_version":1,"event":"pre_run","request_id":"run-2","config":{{"path":{}}},"dry_run":true}}"#, j(&uns)),
            format!(r#"{{"protocol_version":1,"event":"pre_run","config":{{"path":{}}}}}"#, j(&uns)),
            format!(r#"{{"protocol_version":1,"event":"post_run","request_id":"run-3","config":{{"path":{}}},"backup_id":"simulation_20250818_143022","run":{{"outcome":"failure","exit_code":3}},"on_failure":"restore"}}"#, j(&uns)),
            format!(r#"{{"protocol_version":1,"event":"post_run","config":{{"path":{}}},"run":{{"outcome":"success"}}}}"#, j(&notdb)),
            format!(r#"{{"protocol_version":1,"event":"validate","config":{{"path":{}}}}}"#, j(&notdb)),
            format!(r#"{{"protocol_version":1,"event":"validate","config":{{"inline":{{"DB_PATH":{},"LOG_LEVEL":"INFO","BACKUP_KEEP_LAST":3,"VERIFY_LEVEL":"full"}}}}}}"#, j(&notes)),
            format!(r#"{{"protocol_version":1,"event":"pre_run","config":{{"inline":{{"DB_PATH":"missing.duckdb","LOG_LEVEL":"DEBUG","BACKUP_DIR":"/nonexistent/backups"}}}},"dry_run":false}}"#),
            format!(r#"{{"protocol_version":1,"event":"validate","config":{{"path":{}}}}}"#, j(&files.path("bad_yaml.yaml"))),
            format!(r#"{{"protocol_version":1,"event":"pre_run","config":{{"path":{}}}}}"#, j(&files.path("bad_keys.json"))),
            r#"{"protocol_version":1,"event":"pre_run","config":{"path":"/nonexistent/ducksafe/config.yaml"}}"#.to_owned(),
        ];
        if may_omit_config {
            templates.push(r#"{"protocol_version":1,"event":"validate"}"#.to_owned());
        }
        Fuzz {
            rng,
            templates,
            may_omit_config,
            files_notdb: notdb,
            files_unsafe: uns,
            files_bad_yaml: files.path("bad_yaml.yaml"),
            files_bad_keys: files.path("bad_keys.json"),
            notes_db: notes,
        }
    }

    fn template(&mut self) -> Vec<u8> {
        let i = self.rng.index(self.templates.len());
        self.templates[i].clone().into_bytes()
    }

    fn family(&mut self, name: &str) -> Vec<u8> {
        match name {
            "random bytes" => {
                let n = self.rng.log_size(0, 8192);
                self.rng.bytes(n)
            }
            "random JSON tokens" => self.tokens(),
            "mutated valid requests" => self.mutated(),
            "structured requests with hostile values" => self.structured().into_bytes(),
            "deep nesting" => self.nested(),
            "huge strings" => self.huge(),
            "invalid UTF-8" => self.invalid_utf8(),
            "stdin larger than the limit" => self.oversized(),
            other => panic!("unknown family {other}"),
        }
    }

    fn tokens(&mut self) -> Vec<u8> {
        const T: &[&str] = &[
            "{",
            "}",
            "[",
            "]",
            ",",
            ":",
            "\"",
            "\"event\"",
            "\"pre_run\"",
            "\"post_run\"",
            "\"validate\"",
            "\"protocol_version\"",
            "\"config\"",
            "\"path\"",
            "\"inline\"",
            "\"request_id\"",
            "\"run\"",
            "\"outcome\"",
            "\"failure\"",
            "\"dry_run\"",
            "1",
            "0",
            "-1",
            "1.0",
            "1e400",
            "-0",
            "18446744073709551616",
            "true",
            "false",
            "null",
            " ",
            "\n",
            "\\",
            "\\u0000",
            "\"\\ud800\"",
            "\"\u{1F986}\"",
            "NaN",
            "Infinity",
            "'",
            "/*",
            "\u{feff}",
        ];
        let n = self.rng.log_size(1, 200);
        let mut s = String::new();
        if self.rng.chance(70) {
            s.push('{');
        }
        for _ in 0..n {
            let token: &&str = self.rng.pick(T);
            s.push_str(token);
        }
        s.into_bytes()
    }

    fn mutated(&mut self) -> Vec<u8> {
        let mut v = self.template();
        for _ in 0..self.rng.range(1, 8) {
            if v.is_empty() {
                v.push(b'{');
            }
            let at = self.rng.index(v.len());
            match self.rng.below(8) {
                0 => v[at] ^= 1 << self.rng.below(8),
                1 => v[at] = self.rng.byte(),
                2 => v.insert(at, self.rng.byte()),
                3 => {
                    v.remove(at);
                }
                4 => {
                    let end = (at + self.rng.usize_in(1, 40)).min(v.len());
                    let chunk = v[at..end].to_vec();
                    let to = self.rng.index(v.len());
                    v.splice(to..to, chunk);
                }
                5 => {
                    let end = (at + self.rng.usize_in(1, 40)).min(v.len());
                    v.drain(at..end);
                }
                6 => {
                    let value = self.rng.pick(HOSTILE_VALUES).as_bytes();
                    v.splice(at..at, value.iter().copied());
                }
                _ => {
                    // Splice with another template.
                    let other = self.template();
                    let cut = self.rng.index(other.len());
                    v.truncate(at);
                    v.extend_from_slice(&other[cut..]);
                }
            }
        }
        v
    }

    fn hostile_value(&mut self) -> String {
        (*self.rng.pick(HOSTILE_VALUES)).to_owned()
    }

    fn config_value(&mut self) -> String {
        let j = |s: &str| serde_json::to_string(s).unwrap();
        match self.rng.below(10) {
            0 => format!(r#"{{"path":{}}}"#, j(&self.files_notdb)),
            1 => format!(r#"{{"path":{}}}"#, j(&self.files_unsafe)),
            2 => format!(r#"{{"path":{}}}"#, j(&self.files_bad_yaml)),
            3 => format!(r#"{{"path":{}}}"#, j(&self.files_bad_keys)),
            4 => format!(r#"{{"path":{}}}"#, self.hostile_value()),
            5 => {
                let mut fields = vec![format!(r#""DB_PATH":{}"#, j(&self.notes_db))];
                for _ in 0..self.rng.range(0, 6) {
                    let key = self.rng.pick(CONFIG_KEYS);
                    let v = self.hostile_value();
                    fields.push(format!("{}:{v}", j(key)));
                }
                format!(r#"{{"inline":{{{}}}}}"#, fields.join(","))
            }
            6 => format!(r#"{{"inline":{}}}"#, self.hostile_value()),
            7 => format!(
                r#"{{"path":{},"inline":{{"DB_PATH":"x"}}}}"#,
                j(&self.files_notdb)
            ),
            8 => r#"{"path":"/nonexistent/ducksafe.yaml"}"#.to_owned(),
            _ => self.hostile_value(),
        }
    }

    /// A request assembled as text from hostile values (including numbers JSON allows but Rust
    /// types may not hold, and duplicate keys).
    fn structured(&mut self) -> String {
        let mut fields = Vec::new();
        if self.rng.chance(90) {
            let v = self.rng.pick(VERSIONS);
            fields.push(format!(r#""protocol_version":{v}"#));
        }
        if self.rng.chance(95) {
            let v = if self.rng.chance(75) {
                format!(
                    "\"{}\"",
                    self.rng.pick(&["pre_run", "post_run", "validate"])
                )
            } else {
                self.hostile_value()
            };
            fields.push(format!(r#""event":{v}"#));
        }
        if self.rng.chance(50) {
            let v = self.hostile_value();
            fields.push(format!(r#""request_id":{v}"#));
        }
        if self.rng.chance(85) || !self.may_omit_config {
            let v = self.config_value();
            fields.push(format!(r#""config":{v}"#));
        }
        for (key, p) in [
            ("dry_run", 40),
            ("backup_id", 30),
            ("run", 30),
            ("on_failure", 20),
        ] {
            if self.rng.chance(p) {
                let v = match (key, self.rng.chance(50)) {
                    ("dry_run", true) => "true".to_owned(),
                    ("run", true) => (*self.rng.pick(&[
                        r#"{"outcome":"failure"}"#,
                        r#"{"outcome":"success","exit_code":0}"#,
                        r#"{"outcome":"failure","exit_code":2147483648}"#,
                        r#"{"outcome":"crashed"}"#,
                        r#"{"outcome":"failure","extra":1}"#,
                    ]))
                    .to_owned(),
                    ("on_failure", true) => "\"restore\"".to_owned(),
                    _ => self.hostile_value(),
                };
                fields.push(format!(r#""{key}":{v}"#));
            }
        }
        if self.rng.chance(15) {
            let v = self.hostile_value();
            fields.push(format!(r#""unknown_{}":{v}"#, self.rng.below(1000)));
        }
        if self.rng.chance(10) && !fields.is_empty() {
            // A duplicate key.
            let dup = fields[self.rng.index(fields.len())].clone();
            fields.push(dup);
        }
        // Shuffle.
        for i in (1..fields.len()).rev() {
            let j = self.rng.index(i + 1);
            fields.swap(i, j);
        }
        format!("{{{}}}", fields.join(","))
    }

    fn nested(&mut self) -> Vec<u8> {
        let depth = match self.rng.below(10) {
            0 => self.rng.usize_in(126, 130),
            1 => self.rng.usize_in(1_000, 400_000),
            _ => self.rng.usize_in(1, 125),
        };
        let (open, close): (&str, &str) = *self.rng.pick(&[
            ("[", "]"),
            (r#"{"a":"#, "}"),
            (r#"{"inline":"#, "}"),
            (r#"[{"x":["#, "]}]"),
        ]);
        let closed = !self.rng.chance(10);
        let mut inner = open.repeat(depth);
        inner.push('1');
        if closed {
            inner.push_str(&close.repeat(depth));
        }
        let place = self.rng.below(5);
        let notdb = serde_json::to_string(&self.files_notdb).unwrap();
        let s = match place {
            0 => inner,
            1 => format!(
                r#"{{"protocol_version":1,"event":"validate","config":{{"path":{notdb}}},"extra":{inner}}}"#
            ),
            2 => format!(
                r#"{{"protocol_version":1,"event":"validate","config":{{"inline":{{"DB_PATH":"x.duckdb","LOG_LEVEL":{inner}}}}}}}"#
            ),
            3 => format!(
                r#"{{"protocol_version":1,"event":"post_run","config":{{"path":{notdb}}},"run":{inner}}}"#
            ),
            _ => format!(
                r#"{{"protocol_version":1,"event":"pre_run","request_id":{inner},"config":{{"path":{notdb}}}}}"#
            ),
        };
        s.into_bytes()
    }

    fn huge(&mut self) -> Vec<u8> {
        let budget = MAX_REQUEST_BYTES - 400;
        let units = ["a", "\u{e9}", "\u{1F986}", "\\n", "\\u00e9", "\\\\", " "];
        let unit: &str = units[self.rng.index(units.len())];
        let len = self.rng.log_size(1024, budget) / unit.len();
        let big = format!("\"{}\"", unit.repeat(len));
        let notdb = serde_json::to_string(&self.files_notdb).unwrap();
        let s = match self.rng.below(8) {
            0 => format!(
                r#"{{"protocol_version":1,"event":"validate","request_id":{big},"config":{{"path":{notdb}}}}}"#
            ),
            1 => format!(r#"{{"protocol_version":1,"event":{big}}}"#),
            2 => format!(
                r#"{{"protocol_version":1,"event":"post_run","backup_id":{big},"run":{{"outcome":"failure"}},"on_failure":"restore","config":{{"path":{notdb}}}}}"#
            ),
            3 => {
                format!(r#"{{"protocol_version":1,"event":"validate","config":{{"path":{big}}}}}"#)
            }
            4 => format!(
                r#"{{"protocol_version":1,"event":"pre_run","config":{{"inline":{{"DB_PATH":{big},"LOG_LEVEL":"INFO"}}}}}}"#
            ),
            5 => format!(
                r#"{{"protocol_version":1,"event":"validate","config":{{"inline":{{"DB_PATH":"x.duckdb","LOG_LEVEL":{big}}}}}}}"#
            ),
            6 => format!(
                r#"{{"protocol_version":1,"event":"validate",{big}:1,"config":{{"path":{notdb}}}}}"#
            ),
            _ => big,
        };
        s.into_bytes()
    }

    fn invalid_utf8(&mut self) -> Vec<u8> {
        const BAD: &[&[u8]] = &[
            b"\xff",
            b"\xfe\xff",
            b"\xc0\x80",
            b"\xc3\x28",
            b"\xed\xa0\x80",
            b"\xe2\x82",
            b"\xf0\x9f\xa6",
            b"\xf8\x88\x80\x80\x80",
            b"\x80",
            b"\xef\xbb\xbf",
        ];
        let mut v = self.template();
        for _ in 0..self.rng.range(1, 4) {
            let at = if self.rng.chance(70) {
                // Inside a string: right after a quote.
                let quotes: Vec<usize> = v
                    .iter()
                    .enumerate()
                    .filter(|(_, b)| **b == b'"')
                    .map(|(i, _)| i + 1)
                    .collect();
                if quotes.is_empty() {
                    0
                } else {
                    quotes[self.rng.index(quotes.len())]
                }
            } else {
                self.rng.index(v.len() + 1)
            };
            let bad = self.rng.pick(BAD);
            v.splice(at..at, bad.iter().copied());
        }
        v
    }

    fn oversized(&mut self) -> Vec<u8> {
        let len = MAX_REQUEST_BYTES + self.rng.log_size(1, 3 * MAX_REQUEST_BYTES);
        let mut v = self.template();
        if self.rng.chance(50) {
            v.resize(len, b' ');
        } else {
            let pad = self.rng.bytes(len.saturating_sub(v.len()));
            v.extend(pad);
        }
        v
    }
}

/// Values for any field: wrong types, edge numbers, odd strings, injection attempts. (No endless
/// file such as `/dev/zero`: as a configuration path ducksafe would read it until memory runs
/// out; `hostile_input_through_the_binary` checks that case under a memory cap.)
const HOSTILE_VALUES: &[&str] = &[
    "null",
    "true",
    "false",
    "0",
    "-1",
    "1",
    "2",
    "1.5",
    "1e400",
    "-1e400",
    "1e-400",
    "18446744073709551616",
    "-9223372036854775809",
    "[]",
    "{}",
    "[null]",
    "{\"a\":1}",
    "\"\"",
    "\" \"",
    "\"x\"",
    "\"pre_run\"",
    "\"PRE_RUN\"",
    "\"restore\"",
    "\"../../etc/passwd\"",
    "\"/etc/passwd\"",
    "\"/dev/null\"",
    "\"/proc/self/mem\"",
    "\"/\"",
    "\".\"",
    "\"..\"",
    "\"\\u0000\"",
    "\"a\\u0000b\"",
    "\"\\ud83e\\udd86\"",
    "\"\\u202e\"",
    "\"\\n\\r\\t\"",
    "\"$(rm -rf /)\"",
    "\"`id`\"",
    "\"; DROP TABLE employees; --\"",
    "\"%s%n%x\"",
    "\"\\\"}\\n{\\\"event\\\":\\\"pre_run\\\"\"",
    "\"simulation_20250818_143022\"",
    "\"latest\"",
    "\"../backups/latest\"",
    "\"~/.ssh/id_rsa\"",
    "\"C:\\\\Windows\"",
    "\"\u{1F986}\u{1F986}\u{1F986}\"",
    "\"\u{0301}\u{0301}\"",
    "\"postgres://u:p@h/db\"",
];

const VERSIONS: &[&str] = &[
    "1",
    "1",
    "1",
    "1.0",
    "2",
    "0",
    "-1",
    "1e400",
    "\"1\"",
    "null",
    "true",
    "[]",
    "{}",
    "18446744073709551616",
    "4294967297",
    "1e0",
    "0.99999999999999999999",
];

const CONFIG_KEYS: &[&str] = &[
    "DB_PATH",
    "LOG_LEVEL",
    "BACKUP_DIR",
    "BACKUP_KEEP_LAST",
    "BACKUP_RETENTION_DAYS",
    "BACKUP_MAX_TOTAL_BYTES",
    "BACKUP_MIN_FREE_BYTES",
    "VERIFY_LEVEL",
    "RESTORE_ON_FAILURE",
    "QUARANTINE_DIR",
    "DUCKDB_MEMORY_LIMIT",
    "DUCKDB_THREADS",
    "db_path",
    "API_TOKEN",
    "",
    "\u{0}",
];

/// The default configuration lookup (`./config.yaml`, `DUCKSAFE_CONFIG`, `DUCKSAFE_DB_PATH`)
/// finds nothing in this process, so a request without `config` stops early too.
fn default_lookup_is_empty() -> bool {
    !Path::new("config.yaml").exists()
        && std::env::var_os("DUCKSAFE_CONFIG").is_none()
        && std::env::var_os("DUCKSAFE_DB_PATH").is_none()
}

#[test]
fn hostile_input_in_process() {
    silence_in_process_logs();
    let mut t = Tally::new("hostile_input_in_process");
    let files = FuzzFiles::new();
    let mut fuzz = Fuzz::new(
        Rng::for_scenario("hostile_input_in_process"),
        &files,
        default_lookup_is_empty(),
    );
    let mut exits = BTreeMap::<String, u64>::new();
    for (family, count) in FUZZ_FAMILIES {
        let mut failed = 0u64;
        let started = Instant::now();
        for _ in 0..scaled(count) {
            let input = fuzz.family(family);
            let r = ducksafe::hook::answer(&input);
            *exits.entry(r.exit_code.to_string()).or_default() += 1;
            let result = contract(input.len(), &r).map_err(|e| {
                let shown = String::from_utf8_lossy(&input[..input.len().min(300)]).into_owned();
                format!("{e} (input, {} bytes: {shown:?})", input.len())
            });
            failed += u64::from(result.is_err());
            t.record_case(family, result);
        }
        t.count(&format!("{family}: cases"), scaled(count));
        t.count(&format!("{family}: failed"), failed);
        t.count(
            &format!("{family}: ms"),
            u64::try_from(started.elapsed().as_millis()).unwrap(),
        );
    }
    // The limit itself: exactly 1 MiB is read, one byte more is refused.
    let req = format!(
        r#"{{"protocol_version":1,"event":"validate","config":{{"path":{}}}}}"#,
        jstr(Path::new(&files.path("notdb.yaml")))
    );
    for (extra, refused) in [(0usize, false), (1, true)] {
        let mut input = req.clone().into_bytes();
        input.resize(MAX_REQUEST_BYTES + extra, b' ');
        let r = ducksafe::hook::answer(&input);
        t.record_case(
            format!("stdin of exactly {} bytes", input.len()),
            contract(input.len(), &r).and_then(|()| {
                ensure(
                    r.errors.iter().any(|e| e.message.contains("larger than")) == refused,
                    || format!("{:?}", r.errors),
                )
            }),
        );
    }
    t.detail("exit_codes", serde_json::to_value(&exits).unwrap());
    t.finish();
}

/// Runs `ducksafe hook` on `input` (or on a closed stdin) and checks the contract.
fn binary_contract(cwd: &Path, input: Option<&[u8]>) -> Result<i32, String> {
    let mut c = bin();
    c.current_dir(cwd).arg("hook");
    let out = start(c, input).finish(None);
    ensure(!out.stderr.contains("panicked"), || {
        format!("a panic on stderr: {}", out.stderr)
    })?;
    let r = one_line(&out.stdout, out.status)?;
    contract(input.map_or(0, <[u8]>::len), &r)?;
    Ok(r.exit_code)
}

#[test]
fn hostile_input_through_the_binary() {
    let mut t = Tally::new("hostile_input_through_the_binary");
    let files = FuzzFiles::new();
    let cwd = tempfile::tempdir().unwrap();
    let mut fuzz = Fuzz::new(
        Rng::for_scenario("hostile_input_through_the_binary"),
        &files,
        true,
    );
    let mut exits = BTreeMap::<String, u64>::new();
    let mut tally = |t: &mut Tally, label: &str, result: Result<i32, String>| {
        if let Ok(code) = &result {
            *exits.entry(code.to_string()).or_default() += 1;
        }
        t.record_case(label, result.map(|_| ()));
    };
    for (family, count) in FUZZ_FAMILIES {
        // 300 by default, in the same proportions as the in-process run (at least 5 each).
        let n = scaled((count * 3 / 1000).max(5));
        for _ in 0..n {
            let input = fuzz.family(family);
            let r = binary_contract(cwd.path(), Some(&input)).map_err(|e| {
                let shown = String::from_utf8_lossy(&input[..input.len().min(200)]).into_owned();
                format!("{e} (input: {shown:?})")
            });
            tally(&mut t, family, r);
        }
    }
    for (label, input) in [
        ("closed stdin", None),
        ("empty stdin", Some(Vec::new())),
        ("16 MiB of zeros", Some(vec![0u8; 16 << 20])),
        (
            "1 MiB + 1 of spaces",
            Some(vec![b' '; MAX_REQUEST_BYTES + 1]),
        ),
    ] {
        let r = binary_contract(cwd.path(), input.as_deref());
        tally(&mut t, label, r);
    }
    // A configuration path that never ends (a FIFO nobody writes to, `/dev/zero`): the hook
    // must answer promptly with a configuration error, not block or read until memory runs out
    // (the run is capped at 1 GiB of address space, so a failure here cannot exhaust the host).
    let fifo = cwd.path().join("config.fifo");
    let made = support::command("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success(), "mkfifo");
    for path in [fifo.as_path(), Path::new("/dev/zero")] {
        let r = endless_config_path(cwd.path(), path);
        t.record_case(format!("config.path is `{}`", path.display()), r);
    }
    t.detail("exit_codes", serde_json::to_value(&exits).unwrap());
    t.finish();
}

/// Runs the hook on a request whose configuration path names `path`, with 1 GiB of address
/// space: it must answer one line, with a configuration error. The two-minute bound only
/// catches a hook that blocks reading forever (it answers in milliseconds), so a busy machine
/// cannot fail it.
fn endless_config_path(cwd: &Path, path: &Path) -> Result<(), String> {
    let mut c = support::command("sh");
    c.args(["-c", "ulimit -v 1048576; exec \"$0\" hook"])
        .arg(env!("CARGO_BIN_EXE_ducksafe"))
        .current_dir(cwd);
    let req = request("validate", path, "");
    let started = Instant::now();
    let mut run = start(c, Some(req.as_bytes()));
    let deadline = started + Duration::from_secs(120);
    while run.child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = run.child.kill();
            run.finish(None);
            return Err("no answer within 120 s: the hook blocks reading it".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = run.finish(None);
    let r = one_line(&out.stdout, out.status)?;
    contract(req.len(), &r)?;
    let e = r.errors.first().ok_or("accepted as a configuration")?;
    ensure(!e.message.contains("memory"), || {
        format!(
            "it was read until memory ran out ({} ms): {}",
            started.elapsed().as_millis(),
            e.message
        )
    })?;
    ensure(
        matches!(e.code, ErrorCode::ConfigInvalid | ErrorCode::ConfigNotFound),
        || {
            format!(
                "expected a configuration error, got {:?}: {}",
                e.code, e.message
            )
        },
    )
}

#[test]
fn hostile_input_request_ids_are_echoed() {
    silence_in_process_logs();
    let mut t = Tally::new("hostile_input_request_ids_are_echoed");
    let mut ids: Vec<String> = (1..=200).map(|n| "r".repeat(n)).collect();
    for unit in ["\u{e9}", "\u{4e2d}", "\u{1F986}", "e\u{301}"] {
        for chars in [1usize, 50, 100, 101, 150, 199, 200] {
            let per = unit.chars().count();
            ids.push(unit.repeat((chars / per).max(1)));
        }
    }
    ids.extend(
        [
            "run\n2",
            "run\t3",
            "a\u{0}b",
            "\"quoted\"",
            "back\\slash",
            "\u{202e}rtl",
            " ",
            "{\"json\":1}",
            "run-2025-08-18-01",
        ]
        .map(str::to_owned),
    );
    for id in &ids {
        let chars = id.chars().count();
        let req = json!({"protocol_version": 1, "event": "validate", "request_id": id,
                         "config": {"path": "/nonexistent/ducksafe/config.yaml"}});
        let r = ducksafe::hook::answer(req.to_string().as_bytes());
        t.record_case(
            format!("request_id of {chars} chars, {} bytes", id.len()),
            contract(0, &r).and_then(|()| {
                ensure(r.request_id == *id, || {
                    format!("sent {id:?}, answered {:?}", r.request_id)
                })
            }),
        );
    }
    // Out of the schema's bounds (empty, 201 characters): refused, and an id is generated.
    for id in [String::new(), "r".repeat(201)] {
        let req = json!({"protocol_version": 1, "event": "validate", "request_id": id});
        let r = ducksafe::hook::answer(req.to_string().as_bytes());
        t.record_case(
            format!("request_id of {} chars is refused", id.chars().count()),
            contract(0, &r).and_then(|()| {
                ensure(r.exit_code == 65 && !r.request_id.is_empty(), || {
                    format!("{r:?}")
                })
            }),
        );
    }
    t.finish();
}
