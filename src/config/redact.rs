//! Redaction: values of keys that look like credentials, and passwords inside URLs and DSNs,
//! never appear in a message.

/// True for key names that usually hold credentials.
pub fn looks_secret(key: &str) -> bool {
    let k = key.to_ascii_uppercase();
    [
        "TOKEN",
        "PASSWORD",
        "PASSWD",
        "SECRET",
        "CREDENTIAL",
        "API_KEY",
        "APIKEY",
        "PRIVATE_KEY",
        "DSN",
    ]
    .iter()
    .any(|w| k.contains(w))
}

pub(super) fn redact_key(key: &str) -> String {
    key.chars().take(64).collect()
}

/// Hides passwords inside URLs/DSNs (`scheme://user:secret@host`) and `password=…`-style pairs.
pub fn redact_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    // scheme://user:password@ → scheme://user:***@
    while let Some(pos) = rest.find("://") {
        let (head, tail) = rest.split_at(pos + 3);
        out.push_str(head);
        let end = tail
            .find(|c: char| c.is_whitespace() || c == '"' || c == '\'' || c == '`' || c == '/')
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        if let Some(at) = authority.rfind('@') {
            let userinfo = &authority[..at];
            if let Some(colon) = userinfo.find(':') {
                out.push_str(&userinfo[..=colon]);
                out.push_str("***");
                out.push_str(&authority[at..]);
                rest = &tail[end..];
                continue;
            }
        }
        out.push_str(authority);
        rest = &tail[end..];
    }
    out.push_str(rest);
    // key=value pairs whose key looks secret
    out.split_inclusive(|c: char| c.is_whitespace() || c == '&' || c == ';' || c == '?')
        .map(|part| {
            if let Some(eq) = part.find('=') {
                if looks_secret(&part[..eq]) {
                    let trail = part
                        .chars()
                        .last()
                        .filter(|c| c.is_whitespace() || *c == '&' || *c == ';' || *c == '?');
                    let mut s = format!("{}=***", &part[..eq]);
                    if let Some(t) = trail {
                        s.push(t);
                    }
                    return s;
                }
            }
            part.to_owned()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_in_urls_and_pairs_are_hidden() {
        assert_eq!(
            redact_text("postgres://app:s3cret@db:5432/x and password=abc&x=1"),
            "postgres://app:***@db:5432/x and password=***&x=1"
        );
    }
}
