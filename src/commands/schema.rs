//! `ducksafe schema NAME`: prints a JSON Schema exactly as committed under `schemas/`.

use crate::cli::{SchemaArgs, SchemaName};
use crate::schemas;

pub fn run(a: &SchemaArgs) -> i32 {
    let name = match a.name {
        SchemaName::Config => "config",
        SchemaName::Request => "request",
        SchemaName::Response => "response",
        SchemaName::Manifest => "manifest",
    };
    match schemas::by_name(name) {
        Some(v) => {
            print!("{}", schemas::render(&v));
            0
        }
        None => crate::protocol::ErrorCode::Internal.exit_code(),
    }
}
