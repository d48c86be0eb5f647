//! Where the off-machine copies go: `REMOTE_URL` (`s3://bucket/prefix`) and `REMOTE_ENDPOINT`,
//! parsed and checked without any I/O. The configuration's validation calls these, so a bad
//! value is refused before any work, with every other violation.

/// The bucket and the key prefix (no leading or trailing `/`; empty for the bucket's root).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub bucket: String,
    pub prefix: String,
}

impl Location {
    /// The object key of `name` under the prefix.
    pub fn key(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_owned()
        } else {
            format!("{}/{name}", self.prefix)
        }
    }

    /// `s3://bucket/prefix`, as the operator wrote it (normalised).
    pub fn url(&self) -> String {
        if self.prefix.is_empty() {
            format!("s3://{}", self.bucket)
        } else {
            format!("s3://{}/{}", self.bucket, self.prefix)
        }
    }
}

/// Parses `s3://bucket/prefix`. The error says why, without repeating the value (it may hold a
/// credential someone pasted into it).
pub fn parse_url(url: &str) -> Result<Location, String> {
    let Some(rest) = url.strip_prefix("s3://") else {
        return Err("must start with `s3://` (e.g. `s3://my-bucket/ducksafe/simulation`)".into());
    };
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.contains('@') || bucket.contains(':') {
        return Err("holds credentials or a port; credentials come only from the environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`) and the endpoint from `REMOTE_ENDPOINT`".into());
    }
    let valid_bucket = (3..=63).contains(&bucket.len())
        && bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && !bucket.starts_with(['-', '.'])
        && !bucket.ends_with(['-', '.']);
    if !valid_bucket {
        return Err("names no valid bucket: 3 to 63 lower-case letters, digits, `-` or `.`".into());
    }
    let prefix = prefix.trim_matches('/');
    if prefix.split('/').any(|s| s == "." || s == "..")
        || prefix.contains("//")
        || prefix.chars().any(char::is_control)
    {
        return Err(
            "has an empty, `.` or `..` segment or a control character in its prefix".into(),
        );
    }
    Ok(Location {
        bucket: bucket.to_owned(),
        prefix: prefix.to_owned(),
    })
}

/// What an endpoint is, once checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub url: String,
    /// `http://`: used only because the endpoint says so itself.
    pub plain_http: bool,
    /// The host is this machine (`localhost`, `127.0.0.0/8`, `::1`).
    pub loopback: bool,
}

/// Checks `REMOTE_ENDPOINT`: `https://host[:port]` or `http://host[:port]`, no credentials, no
/// path beyond `/`.
pub fn parse_endpoint(url: &str) -> Result<Endpoint, String> {
    let (plain_http, rest) = if let Some(r) = url.strip_prefix("https://") {
        (false, r)
    } else if let Some(r) = url.strip_prefix("http://") {
        (true, r)
    } else {
        return Err("must start with `https://` (or `http://` for a server on a network you trust, e.g. `http://127.0.0.1:9000`)".into());
    };
    let authority = rest.trim_end_matches('/');
    if authority.contains('@') {
        return Err("holds credentials; they come only from the environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`)".into());
    }
    if authority.is_empty() || authority.contains('/') || authority.contains(char::is_whitespace) {
        return Err("must be a scheme and a host with an optional port, nothing else (e.g. `https://s3.example.com`)".into());
    }
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next().unwrap_or_default()
    } else {
        authority.split(':').next().unwrap_or_default()
    };
    let loopback = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    Ok(Endpoint {
        url: format!(
            "{}://{authority}",
            if plain_http { "http" } else { "https" }
        ),
        plain_http,
        loopback,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_into_bucket_and_prefix() {
        let l = parse_url("s3://my-bucket/ducksafe/sim/").unwrap();
        assert_eq!(
            (l.bucket.as_str(), l.prefix.as_str()),
            ("my-bucket", "ducksafe/sim")
        );
        assert_eq!(l.key("a.duckdb"), "ducksafe/sim/a.duckdb");
        assert_eq!(l.url(), "s3://my-bucket/ducksafe/sim");
        let root = parse_url("s3://bkt").unwrap();
        assert_eq!(root.key("a"), "a");
        for bad in [
            "my-bucket/x",
            "https://bkt/x",
            "s3://AKID:secret@bkt/x",
            "s3://b/x",
            "s3://Upper/x",
            "s3://bkt/../x",
            "s3://bkt/a//b",
        ] {
            let e = parse_url(bad).unwrap_err();
            assert!(!e.contains("secret"), "{e}");
        }
    }

    #[test]
    fn endpoints_say_http_and_loopback() {
        let e = parse_endpoint("http://127.0.0.1:9000/").unwrap();
        assert!(e.plain_http && e.loopback);
        assert_eq!(e.url, "http://127.0.0.1:9000");
        let e = parse_endpoint("http://minio.lan:9000").unwrap();
        assert!(e.plain_http && !e.loopback);
        let e = parse_endpoint("https://[::1]:9000").unwrap();
        assert!(!e.plain_http && e.loopback);
        assert!(parse_endpoint("ftp://x").is_err());
        assert!(parse_endpoint("https://k:s@host").is_err());
        assert!(parse_endpoint("https://host/path").is_err());
    }
}
