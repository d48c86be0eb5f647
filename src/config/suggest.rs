//! Did-you-mean for configuration keys: the closest known key to a misspelt one.

use super::KEYS;

/// The closest known key, when one is close enough to be a likely typo.
pub fn did_you_mean(key: &str) -> Option<&'static str> {
    let upper = key.to_ascii_uppercase().replace(['-', ' ', '.'], "_");
    if let Some(k) = KEYS.iter().find(|k| **k == upper) {
        return Some(k);
    }
    KEYS.iter()
        .map(|k| (levenshtein(&upper, k), *k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lowercase_keys_get_a_did_you_mean() {
        assert_eq!(did_you_mean("db_path"), Some("DB_PATH"));
        assert_eq!(did_you_mean("BACKUP_KEEP_LST"), Some("BACKUP_KEEP_LAST"));
        assert_eq!(did_you_mean("COMPLETELY_DIFFERENT"), None);
    }
}
