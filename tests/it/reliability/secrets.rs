//! Secrets: credentials in a configuration never appear on stdout or stderr.

use std::fs;
use std::path::PathBuf;
use std::process::Command;

use crate::support::cases::{ensure, Tally};
use crate::support::runs::start;
use crate::support::{bin, request, Project};

use serde_json::{json, Value};

/// Distinct secret values, so that any leak is found by a plain substring search.
const SECRETS: [&str; 10] = [
    "tok-7Hq2LmX9sEcReT01",
    "pw-Z4kP8vN2sEcReT02",
    "aws-Q9wE3rT5sEcReT03",
    "ghp-L0kI8uJ7sEcReT04",
    "key-M2nB6vC4sEcReT05",
    "dsn-X1cV5bN3sEcReT06",
    "low-P7oI9uY6sEcReT07",
    "mix-R3tY8uI2sEcReT08",
    "arr-D5fG7hJ1sEcReT09",
    "obj-K8jH6gF4sEcReT10",
];

/// Configuration lines that carry credentials, each as (label, YAML lines). The values are
/// secrets; the lines come beside a valid minimal configuration (or replace its `DB_PATH` or
/// `LOG_LEVEL` when they set it).
fn secret_configs() -> Vec<(&'static str, String)> {
    let s = SECRETS;
    vec![
        (
            "credential keys",
            format!(
                "API_TOKEN: {}\nDB_PASSWORD: {}\nAWS_SECRET_ACCESS_KEY: {}\nGITHUB_TOKEN: {}\nPRIVATE_KEY: {}\nSNOWFLAKE_DSN: \"snowflake://app:{}@acct/db\"\ndb_password: {}\nPassword: {}\n",
                s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]
            ),
        ),
        (
            "credential keys holding a list and a mapping",
            format!("API_TOKEN: [{}]\nDB_PASSWORD: {{value: {}}}\n", s[8], s[9]),
        ),
        (
            "a DSN with a password in LOG_LEVEL",
            format!("LOG_LEVEL: \"postgres://app:{}@db/sim\"\n", s[5]),
        ),
        (
            "a DSN with a password in DUCKDB_MEMORY_LIMIT",
            format!("DUCKDB_MEMORY_LIMIT: \"mysql://root:{}@db\"\n", s[6]),
        ),
        (
            "password=… in VERIFY_LEVEL",
            format!("VERIFY_LEVEL: \"password={}\"\n", s[1]),
        ),
        (
            "a DSN with a password as DB_PATH",
            format!("DB_PATH: \"postgres://app:{}@db:5432/sim\"\n", s[5]),
        ),
        (
            "a DSN with a password as BACKUP_DIR",
            format!("BACKUP_DIR: \"s3://AKIAEXAMPLE:{}@bucket/backups\"\n", s[2]),
        ),
        (
            "a DSN with a password as QUARANTINE_DIR",
            format!("QUARANTINE_DIR: \"https://user:{}@host/q\"\n", s[3]),
        ),
        (
            "a YAML syntax error beside a secret",
            format!("API_TOKEN: \"{}\nBACKUP_DIR: [unclosed\n", s[0]),
        ),
    ]
}

fn leaked(text: &str) -> Vec<&'static str> {
    SECRETS
        .iter()
        .copied()
        .filter(|s| text.contains(s))
        .collect()
}

/// The runs of one configuration `text` in one `form` (a YAML file, a JSON file, or inline in the
/// request): the hook's validate and pre_run, and (for files) the operator commands. `None` when
/// the text cannot take that form (a YAML syntax error has no JSON or inline form).
fn secret_runs(p: &Project, form: &str, text: &str) -> Option<Vec<(String, Command, Vec<u8>)>> {
    let parsed = serde_yaml_ng::from_str::<Value>(text);
    let config = match form {
        "yaml" => {
            p.write_config(text);
            p.config()
        }
        "json" => {
            let path = p.path("config.json");
            fs::write(
                &path,
                serde_json::to_string_pretty(parsed.as_ref().ok()?).unwrap(),
            )
            .unwrap();
            path
        }
        _ => PathBuf::new(),
    };
    let mut runs = Vec::new();
    for event in ["validate", "pre_run"] {
        let req = if form == "inline" {
            let inline = parsed.as_ref().ok()?;
            json!({"protocol_version": 1, "event": event, "config": {"inline": inline}}).to_string()
        } else {
            request(event, &config, "")
        };
        let mut c = bin();
        c.current_dir(p.dir.path()).arg("hook");
        runs.push((format!("hook {event}"), c, req.into_bytes()));
    }
    if form != "inline" {
        for args in [
            &["backup"][..],
            &["--json", "backup"],
            &["verify"],
            &["list"],
        ] {
            let mut c = bin();
            c.current_dir(p.dir.path())
                .arg("--config")
                .arg(&config)
                .args(args);
            runs.push((format!("ducksafe {}", args.join(" ")), c, Vec::new()));
        }
    }
    Some(runs)
}

/// Runs `c` and fails when a secret appears on its stdout or stderr.
fn nothing_leaks(c: Command, input: &[u8]) -> Result<(), String> {
    let out = start(c, (!input.is_empty()).then_some(input)).finish(None);
    let all = format!("{}{}", String::from_utf8_lossy(&out.stdout), out.stderr);
    let found = leaked(&all);
    ensure(found.is_empty(), || {
        let at = all.find(found[0]).unwrap();
        let from = all[..at]
            .char_indices()
            .rev()
            .nth(120)
            .map_or(0, |(i, _)| i);
        format!(
            "printed {found:?}: …{}…",
            &all[from..(at + 40).min(all.len())]
        )
    })
}

#[test]
fn secrets_are_never_printed() {
    let mut t = Tally::new("secrets_are_never_printed");
    for (label, body) in secret_configs() {
        let mut base = String::new();
        for (key, value) in [("DB_PATH", "simulation.duckdb"), ("LOG_LEVEL", "DEBUG")] {
            if !body.contains(&format!("{key}: ")) {
                base.push_str(key);
                base.push_str(": ");
                base.push_str(value);
                base.push('\n');
            }
        }
        let text = format!("{base}{body}");
        for form in ["yaml", "json", "inline"] {
            let p = Project::new("");
            for (what, c, input) in secret_runs(&p, form, &text).unwrap_or_default() {
                t.case(format!("{label} ({form}): {what}"), || {
                    nothing_leaks(c, &input)
                });
            }
        }
    }
    // Environment overrides carrying credentials.
    for (var, value) in [
        (
            "DUCKSAFE_LOG_LEVEL",
            format!("postgres://u:{}@h/x", SECRETS[5]),
        ),
        (
            "DUCKSAFE_DUCKDB_MEMORY_LIMIT",
            format!("token={}", SECRETS[0]),
        ),
        (
            "DUCKSAFE_DB_PATH",
            format!("postgres://u:{}@h/x", SECRETS[5]),
        ),
    ] {
        let p = Project::new("");
        t.case(format!("environment override {var}"), || {
            let mut c = p.cmd(&["hook"]);
            c.env(var, &value);
            nothing_leaks(c, request("pre_run", &p.config(), "").as_bytes())
        });
    }
    t.case("the docs say where credentials belong", || {
        let doc = fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/docs/configuration.md"
        ))
        .map_err(|e| e.to_string())?;
        ensure(doc.contains("## Credentials"), || {
            "no Credentials section in docs/configuration.md".into()
        })
    });
    t.finish();
}
