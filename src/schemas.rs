//! The JSON Schemas ducksafe publishes, generated from the Rust types. `schemas/*.json` in the
//! repository are these, committed; a test fails when they drift apart.

use serde_json::Value;

use crate::engine::manifest::Manifest;
use crate::protocol::{Request, Response};

/// The schemas by name, in the order `ducksafe schema` lists them, with their committed files.
pub const NAMES: [(&str, &str); 4] = [
    ("config", "config.schema.json"),
    ("request", "hook-request.schema.json"),
    ("response", "hook-response.schema.json"),
    ("manifest", "manifest.schema.json"),
];

/// The schema called `name`.
pub fn by_name(name: &str) -> Option<Value> {
    let schema = match name {
        "config" => return Some(crate::config::schema()),
        "request" => schemars::schema_for!(Request),
        "response" => schemars::schema_for!(Response),
        "manifest" => schemars::schema_for!(Manifest),
        _ => return None,
    };
    serde_json::to_value(schema).ok()
}

/// The schema as committed: pretty JSON with a final newline.
pub fn render(value: &Value) -> String {
    let mut s = serde_json::to_string_pretty(value).unwrap_or_default();
    s.push('\n');
    s
}
