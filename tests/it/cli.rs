//! What a command-line user expects around the commands: completions and man pages generated
//! from the parser, `--version` naming the bundled DuckDB, `--quiet`/`--verbose` as log levels,
//! `NO_COLOR`, and a progress bar on a terminal only.
//!
//! A terminal is a pseudo-terminal from util-linux's `script`, sized with `stty`; the shells
//! that check the zsh and fish scripts are installed by `.ci/run` (elsewhere those cases skip).

use std::path::Path;
use std::process::{Command, Output};

use crate::support::{self, assert_exit, assert_ok, bin, stderr, Project};

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn on_path(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Every command name the parser knows (`help` aside), from `ducksafe --help`.
fn commands() -> Vec<String> {
    let out = bin().arg("--help").output().unwrap();
    let help = stdout(&out);
    let listed = help
        .split("Commands:")
        .nth(1)
        .and_then(|s| s.split("Options:").next())
        .unwrap();
    let names: Vec<String> = listed
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| *n != "help")
        .map(str::to_owned)
        .collect();
    assert!(names.len() >= 15, "{help}");
    names
}

/// Runs `script` in `dir` with a 120-column pseudo-terminal as stdout and stderr, extra
/// environment `env`; returns everything the terminal got.
fn on_a_terminal(dir: &Path, line: &str, env: &[(&str, &str)]) -> Option<String> {
    if !on_path("script") {
        support::skip(
            "cli::on_a_terminal",
            "util-linux's `script` is not installed",
        );
        return None;
    }
    let mut c = Command::new("script");
    c.current_dir(dir)
        .args([
            "-qec",
            &format!("stty cols 120 rows 40; {line}"),
            "/dev/null",
        ])
        .env_remove("NO_COLOR")
        .env_remove("DUCKSAFE_CONFIG");
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().unwrap();
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn exe() -> &'static str {
    env!("CARGO_BIN_EXE_ducksafe")
}

/// The bash script completes commands and their flags, as bash itself runs it.
#[test]
fn bash_completion_offers_the_commands_and_their_flags() {
    let out = bin().args(["completions", "bash"]).output().unwrap();
    assert_ok(&out);
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("ducksafe.bash");
    std::fs::write(&script, &out.stdout).unwrap();
    let complete = |words: &str, cword: usize| -> Vec<String> {
        let probe = format!(
            "source {}; COMP_WORDS=({words}); COMP_CWORD={cword}; \
             _ducksafe ducksafe \"${{COMP_WORDS[$COMP_CWORD]}}\" \"${{COMP_WORDS[$COMP_CWORD-1]}}\"; \
             printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            script.display()
        );
        let out = Command::new("bash").args(["-c", &probe]).output().unwrap();
        assert_ok(&out);
        stdout(&out).lines().map(str::to_owned).collect()
    };
    let first = complete("ducksafe ''", 1);
    for name in commands() {
        assert!(first.contains(&name), "`{name}` not offered: {first:?}");
    }
    assert_eq!(complete("ducksafe res", 1), ["restore"]);
    let flags = complete("ducksafe restore --", 2);
    for flag in ["--expect-sha256", "--dry-run", "--config", "--set"] {
        assert!(flags.iter().any(|f| f == flag), "{flag}: {flags:?}");
    }
    let shells = complete("ducksafe completions ''", 2);
    for shell in ["bash", "zsh", "fish"] {
        assert!(shells.iter().any(|s| s == shell), "{shell}: {shells:?}");
    }
}

/// The zsh and fish scripts are valid for their shells (each parsed by the shell itself).
#[test]
fn zsh_and_fish_completions_parse_in_their_shells() {
    for (shell, check) in [("zsh", &["-n"][..]), ("fish", &["--no-execute"][..])] {
        let out = bin().args(["completions", shell]).output().unwrap();
        assert_ok(&out);
        let text = stdout(&out);
        assert!(text.contains("restore"), "{text}");
        if !on_path(shell) {
            support::skip(
                "cli::zsh_and_fish_completions_parse_in_their_shells",
                &format!("`{shell}` is not installed"),
            );
            continue;
        }
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(format!("ducksafe.{shell}"));
        std::fs::write(&file, &out.stdout).unwrap();
        let parsed = Command::new(shell).args(check).arg(&file).output().unwrap();
        assert_ok(&parsed);
    }
}

/// `ducksafe man` renders with man(1) without a warning, and names every command; `--dir`
/// writes a page per command, each of which renders too.
#[test]
fn the_man_pages_render_and_name_every_command() {
    if !on_path("groff") {
        support::skip(
            "cli::the_man_pages_render_and_name_every_command",
            "groff is not installed",
        );
        return;
    }
    let render = |page: &Path| -> String {
        // -ww: every warning; -z: format, print nothing; then the text itself.
        let warned = Command::new("groff")
            .args(["-man", "-Tutf8", "-ww", "-z"])
            .arg(page)
            .output()
            .unwrap();
        assert_ok(&warned);
        assert!(warned.stderr.is_empty(), "{}", stderr(&warned));
        let text = Command::new("groff")
            .args(["-man", "-Tascii", "-P-cbou"])
            .arg(page)
            .output()
            .unwrap();
        assert_ok(&text);
        stdout(&text)
    };
    let dir = tempfile::tempdir().unwrap();
    let main = dir.path().join("printed.1");
    let out = bin().arg("man").output().unwrap();
    assert_ok(&out);
    std::fs::write(&main, &out.stdout).unwrap();
    let text = render(&main);
    assert!(text.contains("ducksafe"), "{text}");
    for name in commands() {
        assert!(
            text.contains(&name),
            "`{name}` missing from ducksafe(1):\n{text}"
        );
    }

    let pages = dir.path().join("man1");
    let out = bin().args(["man", "--dir"]).arg(&pages).output().unwrap();
    assert_ok(&out);
    let listed = stdout(&out);
    assert_eq!(
        std::fs::read(pages.join("ducksafe.1")).unwrap(),
        std::fs::read(&main).unwrap()
    );
    // A symlink planted where a page goes is not written through; a file as --dir is refused.
    let victim = dir.path().join("victim");
    std::fs::write(&victim, "untouched").unwrap();
    let trap = dir.path().join("trap");
    std::fs::create_dir(&trap).unwrap();
    std::os::unix::fs::symlink(&victim, trap.join("ducksafe-list.1")).unwrap();
    let out = bin().args(["man", "--dir"]).arg(&trap).output().unwrap();
    assert_exit(&out, 74);
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched");
    let out = bin().args(["man", "--dir"]).arg(&victim).output().unwrap();
    assert!(assert_exit(&out, 64).contains("is not a directory"));
    for name in commands() {
        let page = pages.join(format!("ducksafe-{name}.1"));
        assert!(listed.contains(&page.display().to_string()), "{listed}");
        let text = render(&page);
        assert!(text.contains(&format!("ducksafe-{name}")), "{text}");
    }
}

/// `--version` names the DuckDB that backups record in their manifests.
#[test]
fn version_names_the_bundled_duckdb_that_manifests_record() {
    let p = Project::new("");
    let out = bin().arg("--version").output().unwrap();
    assert_ok(&out);
    let line = stdout(&out);
    assert!(
        line.starts_with(&format!("ducksafe {} (DuckDB v", env!("CARGO_PKG_VERSION"))),
        "{line}"
    );
    let out = p.run(&["--json", "backup"]);
    assert_ok(&out);
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = r["backup"]["id"].as_str().unwrap();
    let manifest = p.backups().join(format!("{id}.manifest.json"));
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(manifest).unwrap()).unwrap();
    let recorded = manifest["duckdb_version"].as_str().unwrap();
    assert!(
        line.contains(&format!("DuckDB {recorded}, bundled")),
        "{line} against {recorded}"
    );
}

/// `-v` logs each step of a backup (DEBUG), `-q` logs nothing below ERROR, and an explicit
/// `--set LOG_LEVEL` has the last word.
#[test]
fn quiet_and_verbose_are_log_levels() {
    let p = Project::new("");
    let phases = |out: &Output| stderr(out).contains("DEBUG phase");
    let out = p.run(&["-v", "backup"]);
    assert!(phases(&out), "{}", assert_exit(&out, 0));
    let out = p.run(&["backup"]);
    assert!(!phases(&out), "{}", assert_exit(&out, 0));
    let out = p.run(&["--verbose", "--set", "LOG_LEVEL=INFO", "backup"]);
    assert!(!phases(&out), "{}", assert_exit(&out, 0));
    let out = p.run(&["-q", "-v", "backup"]);
    assert_exit(&out, 64);
    let out = p.run(&["-vv", "backup"]);
    assert!(phases(&out), "{}", assert_exit(&out, 0));
    let out = p.run(&["-q", "--set", "LOG_LEVEL=DEBUG", "backup"]);
    assert!(phases(&out), "{}", assert_exit(&out, 0));
    let out = p.run(&["-q", "backup"]);
    assert_ok(&out);
    assert!(!stderr(&out).contains("INFO"), "{}", stderr(&out));
}

/// On a terminal the operator commands draw a bar; piped, with `-q`, or in the hook's forms,
/// none; `NO_COLOR` takes the colours out of the log and nothing else.
#[test]
fn a_progress_bar_on_a_terminal_only() {
    let p = Project::new("");
    let dir = p.dir.path();
    let config = p.config();
    let cmd = |args: &str| format!("{} --config {} {args}", exe(), config.display());
    let Some(seen) = on_a_terminal(dir, &cmd("backup"), &[]) else {
        return;
    };
    assert!(seen.contains("copying simulation.duckdb ["), "{seen:?}");
    let Some(seen) = on_a_terminal(dir, &cmd("verify --all"), &[]) else {
        return;
    };
    assert!(seen.contains("checking simulation_"), "{seen:?}");

    // Piped: no bar, and no control sequence at all.
    let out = p.run(&["backup"]);
    assert_ok(&out);
    assert!(!stderr(&out).contains('\u{1b}'), "{:?}", stderr(&out));
    assert!(!stderr(&out).contains("copying"), "{:?}", stderr(&out));
    for quiet in [
        cmd("-q backup"),
        cmd("pre-run"),
        cmd("restore --dry-run -q"),
    ] {
        let seen = on_a_terminal(dir, &quiet, &[]).unwrap();
        assert!(!seen.contains("copying"), "{quiet}: {seen:?}");
        assert!(!seen.contains("checking"), "{quiet}: {seen:?}");
    }

    // The log's level in colour on a terminal, without colour under NO_COLOR.
    let seen = on_a_terminal(dir, &cmd("-v list"), &[]).unwrap();
    assert!(seen.contains("\u{1b}[34mDEBUG\u{1b}[0m"), "{seen:?}");
    let seen = on_a_terminal(dir, &cmd("-v list"), &[("NO_COLOR", "1")]).unwrap();
    assert!(
        seen.contains("DEBUG") && !seen.contains("\u{1b}[3"),
        "{seen:?}"
    );
}
