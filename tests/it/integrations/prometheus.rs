//! `ducksafe status --prometheus`, read by a real parser: `prometheus_client.parser` (the
//! `prometheus-client` package, pinned in .ci/integrations-requirements.txt), which is what the
//! Python ecosystem parses the text exposition format with. Names, types, labels and values
//! are checked against what `status --json` and `list --json` say.

use std::collections::BTreeMap;

use serde_json::Value;

use super::tool;
use crate::support::{self, assert_ok, Project};

/// Parses exposition text with `prometheus_client.parser.text_string_to_metric_families`:
/// family name → (type, [(sample name, labels, value)]).
type Families = BTreeMap<String, (String, Vec<(String, BTreeMap<String, String>, f64)>)>;

const PARSE: &str = r"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = {}
for fam in text_string_to_metric_families(sys.stdin.read()):
    out[fam.name] = [fam.type, [[s.name, s.labels, s.value] for s in fam.samples]]
print(json.dumps(out))
";

fn parse(python: &std::path::Path, text: &str) -> Families {
    let mut c = support::command(python);
    c.args(["-c", PARSE]);
    let out = support::pipe(c, text.as_bytes());
    assert!(
        out.status.success(),
        "the parser refused the exposition: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn value(f: &Families, name: &str) -> Option<f64> {
    f.get(name).and_then(|(_, s)| s.first()).map(|s| s.2)
}

#[test]
fn status_prometheus_parses_with_the_real_parser_and_says_what_ducksafe_knows() {
    let Some(python) = tool("python") else { return };
    let p = Project::new("BACKUP_MAX_TOTAL_BYTES: 5000000000\n");
    let now = "2026-05-04T10:00:00Z";
    let mut c = p.cmd(&["backup"]);
    c.env("DUCKSAFE_NOW", now);
    assert_ok(&c.output().unwrap());
    let later = "2026-05-04T12:30:00Z";
    let run = |args: &[&str]| {
        let mut c = p.cmd(&[&["status"], args].concat());
        c.env("DUCKSAFE_NOW", later);
        c.output().unwrap()
    };
    let out = run(&["--prometheus"]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8(out.stdout).unwrap();
    let families = parse(&python, &text);
    let j: Value = serde_json::from_slice(&run(&["--json"]).stdout).unwrap();

    // Every family a gauge, every sample labelled with the database, base units in the names.
    for (name, (kind, samples)) in &families {
        assert_eq!(kind, "gauge", "{name}");
        assert!(name.starts_with("ducksafe_"), "{name}");
        for (sample, labels, _) in samples {
            assert_eq!(sample, name);
            assert_eq!(
                labels.get("database").map(String::as_str),
                Some(p.db().to_str().unwrap()),
                "{name}"
            );
        }
    }
    let created = chrono::DateTime::parse_from_rfc3339(now)
        .unwrap()
        .timestamp();
    #[allow(clippy::cast_precision_loss)]
    let expect = [
        ("ducksafe_status", 0.0),
        (
            "ducksafe_backup_last_success_timestamp_seconds",
            created as f64,
        ),
        ("ducksafe_backup_age_seconds", 9000.0),
        ("ducksafe_backup_max_age_seconds", 93600.0),
        ("ducksafe_backups", 1.0),
        (
            "ducksafe_backups_bytes",
            j["backups_bytes"].as_f64().unwrap(),
        ),
        ("ducksafe_backups_budget_bytes", 5e9),
        (
            "ducksafe_next_backup_needs_bytes",
            j["next_backup_needs_bytes"].as_f64().unwrap(),
        ),
        ("ducksafe_unfinished_restores", 0.0),
        ("ducksafe_quarantine_folders", 0.0),
        ("ducksafe_quarantine_bytes", 0.0),
        ("ducksafe_findings", 0.0),
    ];
    for (name, v) in expect {
        assert_eq!(value(&families, name), Some(v), "{name}\n{text}");
    }
    assert!(value(&families, "ducksafe_backup_filesystem_free_bytes").unwrap() > 0.0);
    let took = value(&families, "ducksafe_last_backup_duration_seconds").unwrap();
    assert!(took > 0.0 && took < 600.0, "{took}");
    // No hook run yet: the family is there, without a sample.
    assert_eq!(families["ducksafe_last_hook_run_ok"].1.len(), 0);

    // The file the textfile collector reads holds the same families, and parses too.
    let prom = p.path("ducksafe.prom");
    assert_eq!(
        run(&["--prometheus-file", prom.to_str().unwrap()])
            .status
            .code(),
        Some(0)
    );
    let from_file = parse(&python, &std::fs::read_to_string(&prom).unwrap());
    assert_eq!(
        from_file.keys().collect::<Vec<_>>(),
        families.keys().collect::<Vec<_>>()
    );
    assert_eq!(value(&from_file, "ducksafe_backups"), Some(1.0));

    // Critical (no backup): the status gauge says 2, and it still parses.
    let empty = Project::new("");
    let mut c = empty.cmd(&["status", "--prometheus"]);
    let out = c.output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let f = parse(&python, &String::from_utf8(out.stdout).unwrap());
    assert_eq!(value(&f, "ducksafe_status"), Some(2.0));
    assert_eq!(
        f["ducksafe_backup_last_success_timestamp_seconds"].1.len(),
        0
    );
}
