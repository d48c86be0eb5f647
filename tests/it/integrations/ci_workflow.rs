//! The CI workflow example (`examples/ci/github-actions.yml`): it parses, every command it runs
//! exists, and its scripts run for real.

use std::fs;
use std::path::Path;

use crate::support::{self, assert_exit, fingerprints, hold, Project};

use ducksafe::protocol::Decision;

use super::{command, ducksafe_bin, python_with_duckdb, repo, run, saved, text, tool};

fn workflow() -> serde_json::Value {
    let path = repo().join("examples/ci/github-actions.yml");
    let text = fs::read_to_string(&path).unwrap();
    ducksafe::config::parse_text(&text, &path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The steps of a job, by their `id` (or `name`), and the run scripts in it.
fn step<'a>(wf: &'a serde_json::Value, job: &str, id: &str) -> &'a serde_json::Value {
    wf["jobs"][job]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == id || s["name"] == id)
        .unwrap_or_else(|| panic!("job `{job}` has no step `{id}`"))
}

/// Words of one shell line, quotes removed; good enough for the commands a workflow names.
fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut quote = None;
    let mut any = false;
    for c in line.chars() {
        match quote {
            Some(q) if c == q => quote = None,
            None if c == '\'' || c == '"' => {
                quote = Some(c);
                any = true;
            }
            None if c.is_whitespace() => {
                if any || !cur.is_empty() {
                    words.push(std::mem::take(&mut cur));
                }
                any = false;
            }
            _ => cur.push(c),
        }
    }
    if any || !cur.is_empty() {
        words.push(cur);
    }
    words
}

/// The logical lines of a run script: continuations joined, heredoc bodies left out.
fn script_lines(script: &str) -> Vec<String> {
    let mut lines = Vec::new();
    let mut heredoc_end: Option<String> = None;
    let mut pending = String::new();
    for raw in script.lines() {
        if let Some(end) = &heredoc_end {
            if raw.trim() == end {
                heredoc_end = None;
            }
            continue;
        }
        if let Some(body) = raw.strip_suffix('\\') {
            pending.push_str(body);
            continue;
        }
        let line = std::mem::take(&mut pending) + raw;
        if let Some(i) = line.find("<<") {
            let end = line[i + 2..]
                .trim()
                .trim_matches(|c| c == '\'' || c == '"' || c == '-');
            heredoc_end = Some(end.to_owned());
        }
        lines.push(line);
    }
    lines
}

const REPO_DIRS: [&str; 5] = ["hooks/", "examples/", ".ci/", "docs/", "schemas/"];

/// Every `steps.ID` and `needs.JOB.outputs.KEY` in a job names something that exists.
fn check_expressions(
    name: &str,
    job: &serde_json::Value,
    jobs: &serde_json::Map<String, serde_json::Value>,
) {
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    let ids: Vec<&str> = job["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["id"].as_str())
        .collect();
    let needs: Vec<&str> = match &job["needs"] {
        serde_json::Value::String(s) => vec![s.as_str()],
        serde_json::Value::Array(a) => a.iter().map(|v| v.as_str().unwrap()).collect(),
        _ => vec![],
    };
    let job_text = job.to_string();
    for part in job_text.split("steps.").skip(1) {
        let id = ident(part);
        assert!(ids.contains(&id.as_str()), "{name}: unknown step `{id}`");
    }
    for part in job_text.split("needs.").skip(1) {
        let mut it = part.split('.');
        let (other, outputs, key) = (
            it.next().unwrap(),
            it.next().unwrap(),
            ident(it.next().unwrap()),
        );
        assert!(
            needs.contains(&other) && outputs == "outputs",
            "{name}: needs.{other}"
        );
        assert!(
            jobs[other]["outputs"].get(&key).is_some(),
            "{name}: needs.{other}.outputs.{key}"
        );
    }
}

/// Checks one `run:` script: repository paths exist, and every ducksafe it runs comes from this
/// job (release build or downloaded artifact) and accepts its subcommand and flags. Returns the
/// number of ducksafe calls.
fn check_script(name: &str, script: &str, steps: &[serde_json::Value]) -> usize {
    assert!(
        !script.contains("${{"),
        "{name}: expressions go through env, not into scripts"
    );
    let downloads: Vec<&str> = steps
        .iter()
        .filter(|s| {
            s["uses"]
                .as_str()
                .is_some_and(|u| u.contains("download-artifact"))
        })
        .filter_map(|s| s["with"]["path"].as_str())
        .collect();
    let builds_release = steps.iter().any(|s| {
        s["run"]
            .as_str()
            .is_some_and(|r| r.contains("cargo build") && r.contains("--release"))
    });
    let mut calls = 0;
    for line in script_lines(script) {
        let words = shell_words(&line);
        for w in &words {
            if REPO_DIRS.iter().any(|d| w.starts_with(d)) {
                assert!(
                    repo().join(w).exists(),
                    "{name}: `{w}` is not in the repository"
                );
            }
        }
        let Some(first) = words.first() else { continue };
        if Path::new(first).file_name().is_none_or(|f| f != "ducksafe") {
            continue;
        }
        let built = first.starts_with("target/release/") && builds_release;
        let downloaded = downloads
            .iter()
            .any(|d| Path::new(first).parent() == Some(Path::new(d)));
        assert!(
            built || downloaded,
            "{name}: where does `{first}` come from?"
        );
        // The real binary accepts the subcommand and flags as written; a shell variable stands
        // in as `0`, a valid value for every flag.
        let args: Vec<String> = words[1..]
            .iter()
            .take_while(|w| !["<", ">", "|", "||", "&&", ";"].contains(&w.as_str()))
            .map(|w| {
                if w.contains('$') {
                    "0".to_owned()
                } else {
                    w.clone()
                }
            })
            .collect();
        let out = support::bin().args(&args).arg("--help").output().unwrap();
        assert!(
            out.status.success(),
            "{name}: `ducksafe {}` is refused: {}",
            args.join(" "),
            text(&out.stderr)
        );
        calls += 1;
    }
    calls
}

#[test]
fn ci_workflow_parses_and_every_command_it_runs_exists() {
    let wf = workflow();
    assert!(wf["name"].is_string() && wf.get("on").is_some());
    let jobs = wf["jobs"].as_object().expect("jobs");
    let known_actions = [
        "actions/checkout@v4",
        "actions/cache@v4",
        "actions/upload-artifact@v4",
        "actions/download-artifact@v4",
    ];
    let mut ducksafe_calls = 0;
    for (name, job) in jobs {
        assert!(job.get("runs-on").is_some(), "{name}: runs-on");
        check_expressions(name, job, jobs);
        let steps = job["steps"].as_array().expect("steps");
        for s in steps {
            assert!(
                s.get("uses").is_some() != s.get("run").is_some(),
                "{name}: a step uses an action or runs a script: {s}"
            );
            if let Some(script) = s["run"].as_str() {
                ducksafe_calls += check_script(name, script, steps);
                continue;
            }
            let uses = s["uses"].as_str().unwrap();
            assert!(
                known_actions.contains(&uses),
                "{name}: unexpected action `{uses}`"
            );
            if uses.contains("upload-artifact")
                && s["with"]["name"]
                    .as_str()
                    .is_some_and(|n| n.ends_with("-response"))
            {
                assert_eq!(
                    s["if"], "always()",
                    "{name}: responses are uploaded also after a failure"
                );
            }
        }
    }
    assert_eq!(ducksafe_calls, 2, "pre-run and post-run");
    // The gate: the simulation job needs the backup job and runs only on a verified backup.
    assert_eq!(
        wf["jobs"]["simulate"]["if"],
        "needs.backup.outputs.verified == 'true'"
    );
    assert!(step(&wf, "backup", "build ducksafe")["run"]
        .as_str()
        .unwrap()
        .contains("--locked"));
    assert!(repo().join("Cargo.lock").exists());
}

/// The workflow's own scripts, run as a runner would (bash -eo pipefail) in a workspace laid
/// out like the checkout, against a real simulation folder.
#[test]
fn ci_workflow_steps_run_for_real() {
    let python = need!(python_with_duckdb());
    let bash = need!(tool("bash"));
    let wf = workflow();
    let p = Project::new("RESTORE_ON_FAILURE: true\n");
    let ws = tempfile::tempdir().unwrap();
    for d in ["examples", "hooks"] {
        std::os::unix::fs::symlink(repo().join(d), ws.path().join(d)).unwrap();
    }
    for d in ["target/release", "bin"] {
        fs::create_dir_all(ws.path().join(d)).unwrap();
        std::os::unix::fs::symlink(ducksafe_bin(), ws.path().join(d).join("ducksafe")).unwrap();
    }
    let github_output = ws.path().join("github_output");
    for key in ["SIM_DIR", "DUCKSAFE_CONFIG", "PYTHON", "REQUEST_ID"] {
        assert!(wf["env"].get(key).is_some(), "the workflow sets {key}");
    }
    let script = |job: &str, id: &str, env: &[(&str, &str)]| {
        let mut c = command(&bash, ws.path());
        c.current_dir(ws.path())
            .args(["--noprofile", "--norc", "-eo", "pipefail", "-c"])
            .arg(step(&wf, job, id)["run"].as_str().unwrap())
            .env("SIM_DIR", p.dir.path())
            .env("DUCKSAFE_CONFIG", p.config())
            .env("PYTHON", &python)
            .env("REQUEST_ID", "gh-1-1")
            .env("GITHUB_OUTPUT", &github_output);
        for (k, v) in env {
            c.env(k, v);
        }
        run(&mut c)
    };
    let outputs = || -> std::collections::BTreeMap<String, String> {
        let s = fs::read_to_string(&github_output).unwrap_or_default();
        let _ = fs::remove_file(&github_output);
        s.lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    };

    // A writer holds the database: the backup job fails with 75 and the gate stays closed.
    let holder = hold(&p.db());
    let out = script("backup", "pre_run", &[]);
    drop(holder);
    assert_exit(&out, 75);
    assert_eq!(outputs()["verified"], "false");

    // The backup job: a verified backup, its id handed to the next job.
    let out = script("backup", "pre_run", &[]);
    assert!(out.status.success());
    let o = outputs();
    assert_eq!(o["verified"], "true");
    let pre = saved(ws.path(), "pre_run").unwrap();
    assert_eq!(o["backup_id"], pre.backup.as_ref().unwrap().id);
    assert_eq!(pre.request_id, "gh-1-1");
    let before = fingerprints(&p.db());

    // The simulation job: the workload, then post_run with its exit code.
    for key in ["BACKUP_ID", "YEARS"] {
        assert!(
            wf["jobs"]["simulate"]["env"].get(key).is_some(),
            "the job sets {key}"
        );
    }
    let out = script(
        "simulate",
        "run the simulation, then post_run",
        &[("BACKUP_ID", &o["backup_id"]), ("YEARS", "2025 2026")],
    );
    assert!(out.status.success());
    assert!(text(&out.stdout).contains("simulate: year 2026"));
    let post = saved(ws.path(), "post_run").unwrap();
    assert_eq!(post.decision, Decision::Kept);
    assert_ne!(fingerprints(&p.db()), before, "the run's changes are kept");
}
