//! `ducksafe man`: the man page, generated from the same clap definitions as the parser and
//! `--help`. Without `--dir`, ducksafe(1) on stdout (`ducksafe man | man -l -`); with `--dir
//! DIR`, ducksafe.1 and one ducksafe-COMMAND.1 per command, written into DIR (created when
//! missing) for a package to install under `share/man/man1`.

use std::path::Path;

use clap::CommandFactory;
use serde::Serialize;

use super::completions::Script;
use crate::cli::{Cli, ManArgs};
use crate::error::Error;
use crate::output::{self, Report};

/// The pages `--dir` wrote.
#[derive(Serialize)]
struct Written {
    dir: String,
    pages: Vec<String>,
}

impl Report for Written {
    fn text(&self, out: &mut dyn std::io::Write) -> std::io::Result<()> {
        for p in &self.pages {
            writeln!(out, "{}", Path::new(&self.dir).join(p).display())?;
        }
        Ok(())
    }
}

pub fn run(json: bool, a: &ManArgs) -> i32 {
    let cmd = Cli::command();
    match &a.dir {
        None => match page(&cmd) {
            Ok(roff) => output::finish(false, Ok(Script(roff))),
            Err(e) => output::fail(json, e),
        },
        Some(dir) => output::finish(json, write_pages(&cmd, dir).map_err(Into::into)),
    }
}

/// One command's page.
fn page(cmd: &clap::Command) -> Result<String, Error> {
    let mut roff = Vec::new();
    clap_mangen::Man::new(cmd.clone())
        .render(&mut roff)
        .map_err(|e| Error::Internal(format!("rendering the man page failed: {e}")))?;
    Ok(String::from_utf8_lossy(&roff).into_owned())
}

/// ducksafe.1, then ducksafe-COMMAND.1 for every command, into `dir`.
fn write_pages(cmd: &clap::Command, dir: &Path) -> Result<Written, Error> {
    match std::fs::metadata(dir) {
        Ok(m) if !m.is_dir() => {
            return Err(Error::Usage(format!(
                "`{}` is not a directory: --dir names the folder the pages go into",
                dir.display()
            )))
        }
        Ok(_) => {}
        Err(_) => std::fs::create_dir_all(dir).map_err(|e| Error::io("create", dir, e))?,
    }
    let mut pages = vec![("ducksafe.1".to_owned(), page(cmd)?)];
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        // A subcommand's page is named and titled after the whole command line.
        let name = format!("ducksafe-{}", sub.get_name());
        let sub = sub
            .clone()
            .name(name.clone())
            .bin_name(format!("ducksafe {}", sub.get_name()));
        pages.push((format!("{name}.1"), page(&sub)?));
    }
    for (name, roff) in &pages {
        let path = dir.join(name);
        write_page(&path, roff).map_err(|e| Error::io("write", &path, e))?;
    }
    Ok(Written {
        dir: dir.display().to_string(),
        pages: pages.into_iter().map(|(n, _)| n).collect(),
    })
}

/// Writes a page in place, never through a symlink planted where it goes (`O_NOFOLLOW`: the
/// write fails instead).
fn write_page(path: &Path, roff: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)?;
    f.write_all(roff.as_bytes())
}
