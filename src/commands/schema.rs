//! `ducksafe schema NAME`: prints a JSON Schema exactly as committed under `schemas/` (the same
//! text with or without `--json`).

use std::io::{self, Write};

use serde::Serialize;

use crate::cli::{SchemaArgs, SchemaName};
use crate::error::Error;
use crate::output::{self, Report};
use crate::schemas;

#[derive(Serialize)]
#[serde(transparent)]
struct Schema(serde_json::Value);

impl Report for Schema {
    fn text(&self, out: &mut dyn Write) -> io::Result<()> {
        out.write_all(schemas::render(&self.0).as_bytes())
    }
}

pub fn run(json: bool, a: &SchemaArgs) -> i32 {
    let name = match a.name {
        SchemaName::Config => "config",
        SchemaName::Request => "request",
        SchemaName::Response => "response",
        SchemaName::Manifest => "manifest",
    };
    let schema = schemas::by_name(name)
        .map(Schema)
        .ok_or_else(|| Error::Internal(format!("no schema named `{name}`")));
    output::finish(json, schema.map_err(Into::into))
}
