//! The current time, injectable for tests: `DUCKSAFE_NOW` (RFC 3339) replaces the system clock,
//! so retention and backup names can be tested at any date.

use chrono::{DateTime, Utc};

/// The environment variable that fixes the clock.
pub const ENV_NOW: &str = "DUCKSAFE_NOW";

/// Now, or the instant `DUCKSAFE_NOW` names.
pub fn now() -> DateTime<Utc> {
    std::env::var(ENV_NOW)
        .ok()
        .and_then(|s| DateTime::parse_from_rfc3339(s.trim()).ok())
        .map_or_else(Utc::now, |t| t.with_timezone(&Utc))
}
