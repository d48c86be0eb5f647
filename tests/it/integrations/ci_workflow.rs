//! The CI workflow example (`examples/ci/github-actions.yml`) and the composite action it uses
//! (`examples/ci/action.yml`: install the wheel, gate the job on pre_run): they parse, every
//! command and expression in them names something that exists, and their scripts run for real,
//! the action's with the wheel built from this checkout.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::support::{self, assert_exit, fingerprints, hold, Project};

use ducksafe::protocol::{Decision, ErrorCode};

use super::{python_with_duckdb, repo, run, saved, text, tool};

fn yaml(rel: &str) -> serde_json::Value {
    let path = repo().join(rel);
    let text = fs::read_to_string(&path).unwrap();
    ducksafe::config::parse_text(&text, &path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn workflow() -> serde_json::Value {
    yaml("examples/ci/github-actions.yml")
}

/// The local action the workflow uses, and the path a step names it by.
const ACTION: &str = "./examples/ci";

fn action() -> serde_json::Value {
    yaml("examples/ci/action.yml")
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
/// job (a release build, a downloaded artifact, or the local action, which puts the installed
/// wheel's binary on PATH, in an earlier step) and accepts its subcommand and flags. Returns
/// the number of ducksafe calls.
fn check_script(name: &str, script: &str, steps: &[serde_json::Value], index: usize) -> usize {
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
    let installed = steps[..index].iter().any(|s| s["uses"] == ACTION);
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
        let on_path = first == "ducksafe" && installed;
        assert!(
            built || downloaded || on_path,
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

/// A step that uses the local action gives every required input and no unknown one.
fn check_action_use(name: &str, step: &serde_json::Value) {
    let action = action();
    let inputs = action["inputs"].as_object().unwrap();
    let with = step["with"].as_object().cloned().unwrap_or_default();
    for key in with.keys() {
        assert!(
            inputs.contains_key(key),
            "{name}: the action has no input `{key}`"
        );
    }
    for (key, input) in inputs {
        if input["required"] == true {
            assert!(with.contains_key(key), "{name}: input `{key}` is required");
        }
    }
}

/// The maturin version pinned for CI (.ci/python-requirements.txt).
fn pinned_maturin() -> String {
    let reqs = fs::read_to_string(repo().join(".ci/python-requirements.txt")).unwrap();
    reqs.lines()
        .find(|l| l.starts_with("maturin=="))
        .expect("maturin is pinned")
        .to_owned()
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
        ACTION,
    ];
    let mut ducksafe_calls = 0;
    for (name, job) in jobs {
        assert!(job.get("runs-on").is_some(), "{name}: runs-on");
        check_expressions(name, job, jobs);
        let steps = job["steps"].as_array().expect("steps");
        for (i, s) in steps.iter().enumerate() {
            assert!(
                s.get("uses").is_some() != s.get("run").is_some(),
                "{name}: a step uses an action or runs a script: {s}"
            );
            if let Some(script) = s["run"].as_str() {
                ducksafe_calls += check_script(name, script, steps, i);
                continue;
            }
            let uses = s["uses"].as_str().unwrap();
            assert!(
                known_actions.contains(&uses),
                "{name}: unexpected action `{uses}`"
            );
            if uses == ACTION {
                check_action_use(name, s);
                assert!(
                    steps[..i]
                        .iter()
                        .any(|s| s["uses"] == "actions/checkout@v4"),
                    "{name}: a local action needs the checkout first"
                );
            }
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
    assert_eq!(ducksafe_calls, 1, "post-run (pre_run is the action's)");
    // The gate: the backup job's outputs are the action's; the simulation job needs them and
    // runs only on a verified backup.
    let gate = step(&wf, "backup", "gate");
    assert_eq!(gate["uses"], ACTION);
    assert!(
        gate["with"].get("pre-run").is_none(),
        "the gate runs pre_run"
    );
    assert_eq!(
        wf["jobs"]["backup"]["outputs"]["verified"],
        "${{ steps.gate.outputs.verified }}"
    );
    assert_eq!(
        wf["jobs"]["simulate"]["if"],
        "needs.backup.outputs.verified == 'true'"
    );
    let install = step(&wf, "simulate", "install ducksafe");
    assert_eq!(install["with"]["pre-run"], "false");
    // The wheel is built with the maturin CI pins, from Cargo.lock as committed.
    let build = step(&wf, "backup", "build the wheel")["run"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(build.contains(&pinned_maturin()), "{build}");
    assert!(build.contains("maturin\" build --locked --release --out dist"));
    assert!(repo().join("Cargo.lock").exists() && repo().join("pyproject.toml").exists());
}

/// The action: composite, bash steps whose scripts take every input through `env:`, outputs and
/// expressions that name steps and inputs that exist, and every input used.
#[test]
fn ci_action_parses_and_names_only_what_exists() {
    let a = action();
    assert!(a["name"].is_string() && a["description"].is_string());
    assert_eq!(a["runs"]["using"], "composite");
    let inputs = a["inputs"].as_object().unwrap();
    let steps = a["runs"]["steps"].as_array().unwrap();
    let ids: Vec<&str> = steps.iter().filter_map(|s| s["id"].as_str()).collect();
    let mut used = std::collections::BTreeSet::new();
    let mut expressions = Vec::new();
    for s in steps {
        assert_eq!(s["shell"], "bash", "{s}");
        let script = s["run"].as_str().expect("a script");
        assert!(!script.contains("${{"), "inputs go through env: {script}");
        for (_, v) in s["env"].as_object().into_iter().flatten() {
            expressions.push(v.as_str().unwrap().to_owned());
        }
        if let Some(cond) = s["if"].as_str() {
            expressions.push(format!("${{{{ {cond} }}}}"));
        }
    }
    for (_, o) in a["outputs"].as_object().unwrap() {
        expressions.push(o["value"].as_str().unwrap().to_owned());
    }
    for e in &expressions {
        for part in e.split("inputs.").skip(1) {
            let name: String = part
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '-' || *c == '_')
                .collect();
            assert!(inputs.contains_key(&name), "unknown input `{name}` in {e}");
            used.insert(name);
        }
        for part in e.split("steps.").skip(1) {
            let id: String = part
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            assert!(ids.contains(&id.as_str()), "unknown step `{id}` in {e}");
        }
    }
    for name in inputs.keys() {
        assert!(used.contains(name), "input `{name}` is never used");
    }
}

/// The action's steps run as a runner runs a composite action: each script by `bash --noprofile
/// --norc -eo pipefail`, its `env:` evaluated (`inputs.X` with their defaults, `steps.ID.outputs.
/// KEY`), a step skipped when its `if` (`inputs.X == 'V'`) is false, outputs from
/// $GITHUB_OUTPUT, PATH additions from $GITHUB_PATH.
struct ActionRun {
    /// The last step's output (what failed, or the gate).
    last: Output,
    outputs: BTreeMap<String, String>,
    path: Vec<PathBuf>,
}

fn run_action(
    with: &[(&str, &str)],
    environ: &dyn Fn() -> Command,
    ws: &Path,
    shell: &Path,
) -> ActionRun {
    let a = action();
    let mut inputs: BTreeMap<String, String> = a["inputs"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v["default"].as_str().unwrap_or("").to_owned()))
        .collect();
    for (k, v) in with {
        inputs.insert((*k).to_owned(), (*v).to_owned());
    }
    let mut steps: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let eval = |e: &str, steps: &BTreeMap<String, BTreeMap<String, String>>| -> String {
        let Some(inner) = e.strip_prefix("${{").and_then(|e| e.strip_suffix("}}")) else {
            assert!(!e.contains("${{"), "only whole expressions: {e}");
            return e.to_owned();
        };
        let inner = inner.trim();
        if let Some(name) = inner.strip_prefix("inputs.") {
            return inputs[name].clone();
        }
        let parts: Vec<&str> = inner.split('.').collect();
        assert!(
            parts.len() == 4 && parts[0] == "steps" && parts[2] == "outputs",
            "an expression this runner does not know: {e}"
        );
        steps
            .get(parts[1])
            .and_then(|o| o.get(parts[3]))
            .cloned()
            .unwrap_or_default()
    };
    let mut path = Vec::new();
    let mut last = None;
    for s in a["runs"]["steps"].as_array().unwrap() {
        if let Some(cond) = s["if"].as_str() {
            let (lhs, rhs) = cond.split_once(" == ").expect("`inputs.X == 'V'`");
            let lhs = eval(&format!("${{{{ {lhs} }}}}"), &steps);
            if lhs != rhs.trim_matches('\'') {
                continue;
            }
        }
        let out_file = ws.join("github_output");
        let path_file = ws.join("github_path");
        let _ = fs::remove_file(&out_file);
        let _ = fs::remove_file(&path_file);
        let mut c = environ();
        c.arg(shell)
            .args(["--noprofile", "--norc", "-eo", "pipefail", "-c"])
            .arg(s["run"].as_str().unwrap())
            .env("GITHUB_OUTPUT", &out_file)
            .env("GITHUB_PATH", &path_file);
        for (k, v) in s["env"].as_object().into_iter().flatten() {
            c.env(k, eval(v.as_str().unwrap(), &steps));
        }
        let out = run(&mut c);
        let produced: BTreeMap<String, String> = fs::read_to_string(&out_file)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        path.extend(
            fs::read_to_string(&path_file)
                .unwrap_or_default()
                .lines()
                .map(PathBuf::from),
        );
        if let Some(id) = s["id"].as_str() {
            steps.insert(id.to_owned(), produced);
        }
        let failed = !out.status.success();
        last = Some(out);
        if failed {
            break;
        }
    }
    let outputs = a["outputs"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, o)| (k.clone(), eval(o["value"].as_str().unwrap(), &steps)))
        .collect();
    ActionRun {
        last: last.expect("a step ran"),
        outputs,
        path,
    }
}

/// A workspace laid out like the checkout, a runner's temporary folder, and the simulation
/// folder the workflow's env names.
struct Workspace {
    ws: tempfile::TempDir,
    p: Project,
    python: PathBuf,
    bash: PathBuf,
}

/// The PATH of the runner: the system's, nothing of ducksafe's.
const SYSTEM_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

impl Workspace {
    fn path(&self) -> &Path {
        self.ws.path()
    }

    /// A step's command line: the workflow's env, a runner's variables, `path` as PATH.
    fn command(&self, path: &str) -> Command {
        let mut c = support::command("env");
        c.env_clear()
            .current_dir(self.path())
            .env("PATH", path)
            .env("HOME", self.path())
            .env("RUNNER_TEMP", self.path().join("runner_temp"))
            .env("SIM_DIR", self.p.dir.path())
            .env("DUCKSAFE_CONFIG", self.p.config())
            .env("PYTHON", &self.python)
            .env("REQUEST_ID", "gh-1-1")
            .env("GITHUB_RUN_ID", "1")
            .env("GITHUB_RUN_ATTEMPT", "1")
            .env("PYTHONDONTWRITEBYTECODE", "1");
        c
    }

    /// The local action, with what the workflow step gives it (`${{ env.X }}` resolved).
    fn run_action(&self, step: &serde_json::Value) -> ActionRun {
        let with: Vec<(String, String)> = step["with"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| {
                let v = match v.as_str().unwrap() {
                    "${{ env.DUCKSAFE_CONFIG }}" => self.p.config().display().to_string(),
                    "${{ env.REQUEST_ID }}" => "gh-1-1".to_owned(),
                    v => {
                        assert!(!v.contains("${{"), "{v}");
                        v.to_owned()
                    }
                };
                (k.clone(), v)
            })
            .collect();
        let with: Vec<(&str, &str)> = with.iter().map(|(k, v)| (&**k, &**v)).collect();
        run_action(
            &with,
            &|| self.command(SYSTEM_PATH),
            self.path(),
            &self.bash,
        )
    }
}

/// The gate, as the backup job runs it: refused while a writer holds the database, then a
/// verified backup. Returns its id.
fn gate_for_real(w: &Workspace, wf: &serde_json::Value) -> String {
    let gate = step(wf, "backup", "gate");
    let holder = hold(&w.p.db());
    let r = w.run_action(gate);
    drop(holder);
    assert_exit(&r.last, 75);
    assert_eq!(r.outputs["verified"], "false");
    assert_eq!(r.outputs["backup_id"], "");
    assert_eq!(r.outputs["exit-code"], "75");
    assert!(
        text(&r.last.stdout).contains("::error::pre_run refused the run (database_locked: busy")
    );
    let refused = saved(w.path(), "pre_run").expect("pre_run.json, also when refused");
    assert_eq!(refused.errors[0].code, ErrorCode::DatabaseLocked);

    let r = w.run_action(gate);
    assert!(r.last.status.success());
    assert_eq!(r.outputs["verified"], "true");
    assert_eq!(r.outputs["decision"], "proceed");
    let pre = saved(w.path(), "pre_run").unwrap();
    assert_eq!(r.outputs["backup_id"], pre.backup.as_ref().unwrap().id);
    assert_eq!(pre.request_id, "gh-1-1");
    r.outputs["backup_id"].clone()
}

/// The workflow as a runner runs it, against a real simulation folder: the action (with the
/// wheel built from this checkout: the workflow's own build step would compile DuckDB in
/// release mode) gates on pre_run, then the simulation job installs the same wheel with the
/// action and runs its script, whose `ducksafe` is the one the action put on PATH (nothing
/// else of ducksafe's is on it).
#[test]
fn ci_workflow_steps_run_for_real() {
    let python = need!(python_with_duckdb());
    let bash = need!(tool("bash"));
    let Some(maturin) = super::wheel::py_tool("maturin") else {
        return;
    };
    let wf = workflow();
    for key in ["SIM_DIR", "DUCKSAFE_CONFIG", "PYTHON", "REQUEST_ID"] {
        assert!(wf["env"].get(key).is_some(), "the workflow sets {key}");
    }
    let w = Workspace {
        ws: tempfile::tempdir().unwrap(),
        p: Project::new("RESTORE_ON_FAILURE: true\n"),
        python,
        bash,
    };
    for d in ["examples", "hooks"] {
        std::os::unix::fs::symlink(repo().join(d), w.path().join(d)).unwrap();
    }
    for d in ["dist", "runner_temp"] {
        fs::create_dir(w.path().join(d)).unwrap();
    }
    super::wheel::build_wheel(&maturin, &w.path().join("dist"));

    let backup_id = gate_for_real(&w, &wf);
    let before = fingerprints(&w.p.db());

    // The simulation job: the action installs (no pre_run), then the script; a year that dies
    // after committing is rolled back by post_run (RESTORE_ON_FAILURE).
    for key in ["BACKUP_ID", "YEARS"] {
        assert!(
            wf["jobs"]["simulate"]["env"].get(key).is_some(),
            "the job sets {key}"
        );
    }
    let r = w.run_action(step(&wf, "simulate", "install ducksafe"));
    assert!(r.last.status.success());
    assert_eq!(r.outputs["verified"], "", "install only: no pre_run");
    assert_eq!(r.path.len(), 1, "the venv's bin on PATH");
    let path = format!("{}:{SYSTEM_PATH}", r.path[0].display());
    let script = |years: &str| {
        let mut c = w.command(&path);
        c.arg(&w.bash)
            .args(["--noprofile", "--norc", "-eo", "pipefail", "-c"])
            .arg(
                step(&wf, "simulate", "run the simulation, then post_run")["run"]
                    .as_str()
                    .unwrap(),
            )
            .env("BACKUP_ID", &backup_id)
            .env("YEARS", years);
        run(&mut c)
    };
    let out = script("2025 2026");
    assert!(out.status.success());
    assert!(text(&out.stdout).contains("simulate: year 2026"));
    let post = saved(w.path(), "post_run").unwrap();
    assert_eq!(post.decision, Decision::Kept);
    assert_ne!(
        fingerprints(&w.p.db()),
        before,
        "the run's changes are kept"
    );

    // A failed run (YEARS is split into words by the script: the workload's own flag rides
    // along): post_run restores the backup the gate took.
    let out = script("2027 --fail-in-year 2027");
    assert_eq!(out.status.code(), Some(1));
    let post = saved(w.path(), "post_run").unwrap();
    assert_eq!(post.decision, Decision::Restored);
    assert_eq!(fingerprints(&w.p.db()), before, "back to the gate's backup");
}
