//! Reading a request: raw stdin bytes become a typed [`Request`], or the response that refuses
//! them. The checks run in the order docs/protocol.md gives, and the first failing step
//! answers: size → not empty → JSON → an object → `protocol_version` → `event` → the request
//! schema (every problem at once) → the typed request. Unknown top-level fields are ignored, each
//! with a warning.
//!
//! The request schema is the one `ducksafe schema request` prints, compiled once per process;
//! the fields this version knows are that schema's properties.

use std::sync::LazyLock;

use serde_json::Value;

use super::response::Ctx;
use crate::config;
use crate::error::Error;
use crate::protocol::{
    generated_request_id, Decision, Request, Response, MAX_REQUEST_BYTES, SUPPORTED_VERSIONS,
};

/// The request schema as JSON.
static SCHEMA: LazyLock<Value> =
    LazyLock::new(|| serde_json::to_value(schemars::schema_for!(Request)).unwrap_or(Value::Null));

/// The request schema, compiled once.
static VALIDATOR: LazyLock<Option<jsonschema::Validator>> =
    LazyLock::new(|| jsonschema::validator_for(&SCHEMA).ok());

/// The request fields this version knows: the schema's properties. Others are ignored with a
/// warning.
pub fn known_fields() -> impl Iterator<Item = &'static str> {
    SCHEMA["properties"]
        .as_object()
        .into_iter()
        .flat_map(|p| p.keys().map(String::as_str))
}

/// Reads raw stdin bytes as one request. `Ok` carries the typed request and the context its
/// response starts from (the request id, the event, warnings about unknown fields); `Err` is
/// the response that refuses the request.
pub fn read(raw: &[u8]) -> Result<(Request, Ctx), Box<Response>> {
    let ctx = Ctx::new(generated_request_id(), None);
    let invalid =
        |ctx: &Ctx, msg: String| Box::new(ctx.fail(Decision::Abort, &Error::InvalidRequest(msg)));
    if raw.len() > MAX_REQUEST_BYTES {
        return Err(invalid(
            &ctx,
            format!("stdin is larger than {MAX_REQUEST_BYTES} bytes"),
        ));
    }
    if raw.iter().all(u8::is_ascii_whitespace) {
        return Err(invalid(
            &ctx,
            "stdin is empty: expected one JSON object".into(),
        ));
    }
    let value: Value = match serde_json::from_slice(raw) {
        Ok(v) => v,
        Err(e) => return Err(invalid(&ctx, format!("stdin is not valid JSON: {e}"))),
    };
    let Some(obj) = value.as_object() else {
        return Err(invalid(
            &ctx,
            "stdin must be one JSON object, e.g. {\"protocol_version\": 1, \"event\": \"pre_run\"}"
                .into(),
        ));
    };
    let mut ctx = Ctx::new(
        obj.get("request_id")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty() && s.chars().count() <= 200)
            .map_or_else(generated_request_id, str::to_owned),
        obj.get("event").and_then(Value::as_str),
    );
    let decision = decision_on_error(obj.get("event").and_then(Value::as_str));

    if let Some(v) = obj.get("protocol_version") {
        if v.is_number() && v.as_u64() != Some(1) {
            let mut r = ctx.fail(decision, &Error::UnsupportedProtocol(v.to_string()));
            r.supported_versions = Some(SUPPORTED_VERSIONS.to_vec());
            return Err(Box::new(r));
        }
    }
    if let Some(Value::String(e)) = obj.get("event") {
        if !["pre_run", "post_run", "validate"].contains(&e.as_str()) {
            return Err(Box::new(ctx.fail(
                decision,
                &Error::UnsupportedEvent(e.chars().take(64).collect()),
            )));
        }
    }
    let violations = schema_violations(&value);
    if !violations.is_empty() {
        return Err(Box::new(
            ctx.fail(decision, &Error::RequestViolations(violations)),
        ));
    }
    for k in obj.keys() {
        if !known_fields().any(|f| f == k) {
            ctx.warnings.push(format!(
                "unknown request field `{}` ignored",
                k.chars().take(64).collect::<String>()
            ));
        }
    }
    match serde_json::from_value(value) {
        Ok(request) => Ok((request, ctx)),
        Err(e) => Err(Box::new(ctx.fail(
            decision,
            &Error::InvalidRequest(format!("request does not fit protocol v1: {e}")),
        ))),
    }
}

/// The decision a failure gets, by event.
pub fn decision_on_error(event: Option<&str>) -> Decision {
    match event {
        Some("post_run") => Decision::Skipped,
        Some("validate") => Decision::Invalid,
        _ => Decision::Abort,
    }
}

/// The request's `set` pairs, each a known configuration key.
pub fn set_pairs(request: &Request) -> Result<Vec<(String, String)>, Error> {
    let set: Vec<(String, String)> = request
        .set
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if let Some((k, _)) = set
        .iter()
        .find(|(k, _)| !config::KEYS.contains(&k.as_str()))
    {
        return Err(Error::InvalidRequest(format!(
            "`set`: unknown key `{}`; known keys: {}",
            k.chars().take(64).collect::<String>(),
            config::KEYS.join(", ")
        )));
    }
    Ok(set)
}

/// Every way `v` breaks the request schema, one message each.
fn schema_violations(v: &Value) -> Vec<String> {
    let Some(validator) = &*VALIDATOR else {
        return vec!["internal: the request schema does not compile".into()];
    };
    validator
        .iter_errors(v)
        .map(|e| {
            let at = e.instance_path().as_str().to_owned();
            let msg = config::redact_text(&e.to_string());
            let msg: String = msg.chars().take(300).collect();
            if at.is_empty() {
                msg
            } else {
                format!("`{at}`: {msg}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::protocol::{ConfigSource, Event, OnFailure, Outcome, RunInfo};

    /// A field added to [`Request`] is a field the hook knows: no "unknown request field"
    /// warning for it. Every field is set here, so a new one must be added to this literal.
    #[test]
    fn every_field_of_a_request_is_a_known_field() {
        let full = Request {
            protocol_version: 1,
            event: Event::PostRun,
            request_id: Some("r".into()),
            config: Some(ConfigSource::Path { path: "c".into() }),
            set: Some(BTreeMap::from([("DB_PATH".into(), "x".into())])),
            dry_run: true,
            backup_id: Some("b".into()),
            backup_sha256: Some("0".repeat(64)),
            run: Some(RunInfo {
                outcome: Outcome::Failure,
                exit_code: Some(1),
            }),
            on_failure: Some(OnFailure::Keep),
        };
        let value = serde_json::to_value(&full).unwrap();
        let mut fields: Vec<&str> = value
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut known: Vec<&str> = known_fields().collect();
        fields.sort_unstable();
        known.sort_unstable();
        assert_eq!(fields, known);
        let (_, ctx) = read(value.to_string().as_bytes()).unwrap();
        assert_eq!(ctx.warnings, Vec::<String>::new());
    }

    #[test]
    fn an_unknown_field_is_ignored_with_a_warning() {
        let (_, ctx) =
            read(br#"{"protocol_version":1,"event":"validate","caller":"make"}"#).unwrap();
        assert_eq!(ctx.warnings, ["unknown request field `caller` ignored"]);
    }
}
