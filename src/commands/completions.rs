//! `ducksafe completions SHELL`: the completion script for a shell, generated from the same clap
//! definitions as the parser and `--help`, so it offers exactly the commands and flags that
//! exist. Printed as is, with or without `--json`.

use std::io::{self, Write};

use clap::CommandFactory;
use serde::Serialize;

use crate::cli::{Cli, CompletionsArgs};
use crate::output::{self, Report};

/// Generated text, printed byte for byte.
#[derive(Serialize)]
#[serde(transparent)]
pub struct Script(pub String);

impl Report for Script {
    fn text(&self, out: &mut dyn Write) -> io::Result<()> {
        out.write_all(self.0.as_bytes())
    }
}

pub fn run(a: &CompletionsArgs) -> i32 {
    let mut script = Vec::new();
    clap_complete::generate(a.shell, &mut Cli::command(), "ducksafe", &mut script);
    output::finish(
        false,
        Ok(Script(String::from_utf8_lossy(&script).into_owned())),
    )
}
