//! The retention policy: which backups to keep and which to delete, and why. Pure: it takes the
//! backups and `now`, and returns a plan; [`Store::rotate`](super::store::Store::rotate) applies
//! it, and [`Store::candidates`](super::store::Store::candidates) says what it weighs.
//!
//! Rules, each a limit on what is kept:
//! 1. keep the newest `BACKUP_KEEP_LAST` unpinned backups; older unpinned ones go;
//! 2. when `BACKUP_RETENTION_DAYS` is set, unpinned backups older than that go;
//! 3. when `BACKUP_MAX_TOTAL_BYTES` is set, the oldest unpinned backups go until everything
//!    (pinned ones included) fits.
//!
//! Invariants, whatever the rules say: a pinned backup is never deleted; nor is the backup just
//! made, the newest verified one, the newest one proven by a full scan (so a run of `quick`
//! backups never rotates the last fully proven one away), the one `latest.duckdb` names, or the
//! last one made (by the order ids were issued, which a clock that steps back cannot reorder).
//! Only backups handed in (ducksafe's own, with manifests) are ever named for deletion.

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

use crate::config::Settings;
use crate::protocol::{Deleted, RotationReport};

/// The order of two ids made in the same second: `_2` … `_9`, `_10`, `_30` by number (as
/// issued), not as text, where `_9` would sort after `_30`.
pub fn id_order(a: &str, b: &str) -> std::cmp::Ordering {
    fn split(id: &str) -> (&str, u64) {
        match id.rsplit_once('_') {
            // `<stem>_YYYYMMDD_HHMMSS_N`: the suffix is the N-th id of that second.
            Some((base, n))
                if n.len() < 6 && !n.is_empty() && n.bytes().all(|c| c.is_ascii_digit()) =>
            {
                (base, n.parse().unwrap_or(0))
            }
            _ => (id, 1),
        }
    }
    split(a).cmp(&split(b))
}

/// What the policy needs to know about one backup.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(clippy::struct_excessive_bools)] // each flag is a fact the rules weigh
pub struct Candidate {
    pub id: String,
    pub created_at: DateTime<Utc>,
    pub bytes: u64,
    pub pinned: bool,
    pub verified: bool,
    /// The backup this run just made: never deleted, even when a clock that went back makes
    /// it look older than the others.
    pub fresh: bool,
    /// Verified by a full scan of every table (`VERIFY_LEVEL: full`).
    pub proven: bool,
    /// `latest.duckdb` names it.
    pub latest: bool,
    /// The last backup made, by the order its id was issued in.
    pub last_made: bool,
    /// The backup a guarded run still in progress was started after (see `lease`).
    pub in_use: bool,
}

/// The configured limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub keep_last: u32,
    pub max_age_days: Option<u32>,
    pub max_total_bytes: Option<u64>,
}

/// The retention policy of a configuration.
pub fn policy(settings: &Settings) -> Policy {
    Policy {
        keep_last: settings.config.backup_keep_last,
        max_age_days: settings.config.backup_retention_days,
        max_total_bytes: settings.config.backup_max_total_bytes,
    }
}

/// Why a backup is kept or deleted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "rule")]
pub enum Reason {
    /// Among the newest `keep_last` (1-based position).
    KeepLast {
        position: usize,
        keep_last: u32,
    },
    Pinned,
    /// The newest verified backup, kept whatever the other rules say.
    NewestVerified,
    /// The newest backup proven by a full scan, kept while every newer one was checked less.
    NewestFullyVerified,
    /// The backup `latest.duckdb` names, kept whatever the other rules say.
    Latest,
    /// The last backup made (by id order, whatever its date says), kept whatever the other
    /// rules say.
    LastMade,
    /// A guarded run still in progress was started after it: its restore may need it.
    InUse,
    /// Beyond the newest `keep_last`.
    BeyondKeepLast {
        position: usize,
        keep_last: u32,
    },
    /// Older than `BACKUP_RETENTION_DAYS`.
    TooOld {
        /// Whole days (floored), and the hours beyond them: a backup 7 days and 3 hours old
        /// is past a 7-day limit, and says so rather than "7 days old".
        age_days: i64,
        age_hours: i64,
        max_age_days: u32,
    },
    /// Deleted to fit `BACKUP_MAX_TOTAL_BYTES`.
    OverBudget {
        total_bytes: u64,
        max_total_bytes: u64,
    },
}

impl Reason {
    /// The rule in words, for reports.
    pub fn describe(&self) -> String {
        match self {
            Reason::KeepLast {
                position,
                keep_last,
            } => format!("newest {position} of {keep_last} kept"),
            Reason::Pinned => "pinned".into(),
            Reason::NewestVerified => "newest verified backup, always kept".into(),
            Reason::NewestFullyVerified => {
                "newest backup verified by a full scan, always kept".into()
            }
            Reason::Latest => "named by latest.duckdb, always kept".into(),
            Reason::LastMade => "the last backup made, always kept".into(),
            Reason::InUse => "a guarded run in progress may restore it, kept until it ends".into(),
            Reason::BeyondKeepLast {
                position,
                keep_last,
            } => format!("number {position}, beyond BACKUP_KEEP_LAST={keep_last}"),
            Reason::TooOld {
                age_days,
                age_hours,
                max_age_days,
            } => {
                let age = match (age_days, age_hours) {
                    (d, 0) => format!("{d} day{}", if *d == 1 { "" } else { "s" }),
                    (d, h) => format!(
                        "{d} day{} {h} hour{}",
                        if *d == 1 { "" } else { "s" },
                        if *h == 1 { "" } else { "s" }
                    ),
                };
                format!("{age} old, beyond BACKUP_RETENTION_DAYS={max_age_days}")
            }
            Reason::OverBudget {
                total_bytes,
                max_total_bytes,
            } => format!(
                "backups use {total_bytes} bytes, over BACKUP_MAX_TOTAL_BYTES={max_total_bytes}"
            ),
        }
    }
}

/// The decision for one backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub id: String,
    pub keep: bool,
    pub reason: Reason,
    pub bytes: u64,
}

/// The whole plan, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Plan {
    pub decisions: Vec<Decision>,
    pub warnings: Vec<String>,
}

impl Plan {
    pub fn deletions(&self) -> impl Iterator<Item = &Decision> {
        self.decisions.iter().filter(|d| !d.keep)
    }
    pub fn kept(&self) -> impl Iterator<Item = &Decision> {
        self.decisions.iter().filter(|d| d.keep)
    }

    /// This plan, then `later`: a plan made once this one's deletions were applied. With the
    /// block store a packed backup weighs a share of chunks other backups also hold, so
    /// deleting it can free less than it weighed, and the budget is weighed again on the bytes
    /// really left (see `Store::apply_retention`). Decisions: `later`'s for the backups still
    /// there, this one's for those it deleted, in this plan's order; warnings: `later`'s, its
    /// keep-last shortfall weighed again over every backup.
    #[must_use]
    pub fn then(self, later: Plan, policy: Policy) -> Plan {
        let own_shortfall = shortfall(&later.decisions, policy);
        let decisions: Vec<Decision> = self
            .decisions
            .into_iter()
            .map(|d| {
                later
                    .decisions
                    .iter()
                    .find(|l| l.id == d.id)
                    .cloned()
                    .unwrap_or(d)
            })
            .collect();
        let mut warnings: Vec<String> = later
            .warnings
            .into_iter()
            .filter(|w| Some(w) != own_shortfall.as_ref())
            .collect();
        warnings.extend(shortfall(&decisions, policy));
        Plan {
            decisions,
            warnings,
        }
    }

    /// The plan in the report's shape: what is kept, and what goes and why.
    pub fn report(&self) -> RotationReport {
        RotationReport {
            kept: self.kept().map(|d| d.id.clone()).collect(),
            deleted: self
                .deletions()
                .map(|d| Deleted {
                    id: d.id.clone(),
                    bytes: d.bytes,
                    reason: d.reason.describe(),
                })
                .collect(),
        }
    }
}

/// The warning that the budget left fewer unpinned backups than `BACKUP_KEEP_LAST` asks for.
fn shortfall(decisions: &[Decision], policy: Policy) -> Option<String> {
    let budget = policy.max_total_bytes?;
    let unpinned_kept = decisions
        .iter()
        .filter(|d| d.keep && d.reason != Reason::Pinned)
        .count();
    let unpinned_total = decisions
        .iter()
        .filter(|d| d.reason != Reason::Pinned)
        .count();
    let wanted = unpinned_total.min(policy.keep_last as usize);
    (decisions
        .iter()
        .any(|d| matches!(d.reason, Reason::OverBudget { .. }))
        && unpinned_kept < wanted)
        .then(|| {
            format!(
                "BACKUP_MAX_TOTAL_BYTES={budget} leaves {unpinned_kept} backup(s), fewer than BACKUP_KEEP_LAST={}",
                policy.keep_last
            )
        })
}

/// Decides, for every backup, whether it stays. `backups` may come in any order.
#[allow(clippy::too_many_lines)] // three rules and their reasons, in the order they apply
pub fn plan(backups: &[Candidate], now: DateTime<Utc>, policy: Policy) -> Plan {
    let mut sorted: Vec<&Candidate> = backups.iter().collect();
    sorted.sort_by(|a, b| {
        b.created_at
            .cmp(&a.created_at)
            .then_with(|| id_order(&b.id, &a.id))
    });
    let newest_verified = sorted.iter().find(|c| c.verified).map(|c| c.id.as_str());
    let newest_proven = sorted.iter().find(|c| c.proven).map(|c| c.id.as_str());
    // Never deleted by any rule, and why (the first reason that applies is the one reported).
    let protection = |c: &Candidate| -> Option<Reason> {
        if c.in_use {
            Some(Reason::InUse)
        } else if c.fresh || c.last_made {
            Some(Reason::LastMade)
        } else if c.latest {
            Some(Reason::Latest)
        } else if newest_verified == Some(c.id.as_str()) {
            Some(Reason::NewestVerified)
        } else if newest_proven == Some(c.id.as_str()) {
            Some(Reason::NewestFullyVerified)
        } else {
            None
        }
    };
    let protected = |id: &str| {
        sorted
            .iter()
            .find(|c| c.id == id)
            .is_some_and(|c| protection(c).is_some())
    };

    let mut decisions = Vec::with_capacity(sorted.len());
    let mut position = 0usize;
    let mut warnings = Vec::new();
    if let Some(pos) = sorted.iter().position(|c| c.fresh) {
        if pos > 0 {
            warnings.push(format!(
                "the backup just made (`{}`) is older than `{}`: did the clock go back? It is kept regardless",
                sorted[pos].id, sorted[0].id
            ));
        }
    }
    for c in &sorted {
        let shield = protection(c);
        let protected = shield.is_some();
        let (keep, reason) = if c.pinned {
            (true, Reason::Pinned)
        } else {
            position += 1;
            let age = now - c.created_at;
            let (age_days, age_hours) = (age.num_days(), age.num_hours() % 24);
            let too_old = policy
                .max_age_days
                .filter(|d| now - c.created_at > Duration::days(i64::from(*d)));
            if position > policy.keep_last as usize {
                (
                    protected,
                    Reason::BeyondKeepLast {
                        position,
                        keep_last: policy.keep_last,
                    },
                )
            } else if let Some(max_age_days) = too_old {
                (
                    protected,
                    Reason::TooOld {
                        age_days,
                        age_hours,
                        max_age_days,
                    },
                )
            } else {
                (
                    true,
                    Reason::KeepLast {
                        position,
                        keep_last: policy.keep_last,
                    },
                )
            }
        };
        let reason = match shield {
            Some(why) if keep && !matches!(reason, Reason::KeepLast { .. } | Reason::Pinned) => why,
            _ => reason,
        };
        decisions.push(Decision {
            id: c.id.clone(),
            keep,
            reason,
            bytes: c.bytes,
        });
    }

    if let Some(budget) = policy.max_total_bytes {
        let mut total: u64 = decisions.iter().filter(|d| d.keep).map(|d| d.bytes).sum();
        let before = total;
        // Oldest first, skipping pinned and the newest verified.
        for d in decisions.iter_mut().rev() {
            if total <= budget {
                break;
            }
            if d.keep && !protected(&d.id) && d.reason != Reason::Pinned {
                d.keep = false;
                d.reason = Reason::OverBudget {
                    total_bytes: before,
                    max_total_bytes: budget,
                };
                total -= d.bytes;
            }
        }
        if total > budget {
            warnings.push(format!(
                "backups still use {total} bytes after rotation, over BACKUP_MAX_TOTAL_BYTES={budget}: pinned backups, the newest verified, the newest fully verified, the one latest.duckdb names and the last one made are never deleted"
            ));
        }
        warnings.extend(shortfall(&decisions, policy));
    }
    Plan {
        decisions,
        warnings,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn at(h: i64) -> DateTime<Utc> {
        DateTime::<Utc>::from_timestamp(1_750_000_000, 0).unwrap() + Duration::hours(h)
    }

    fn c(id: &str, h: i64, bytes: u64) -> Candidate {
        Candidate {
            id: id.into(),
            created_at: at(h),
            bytes,
            pinned: false,
            verified: true,
            fresh: false,
            proven: false,
            latest: false,
            last_made: false,
            in_use: false,
        }
    }

    fn policy(keep_last: u32) -> Policy {
        Policy {
            keep_last,
            max_age_days: None,
            max_total_bytes: None,
        }
    }

    fn deleted(p: &Plan) -> Vec<&str> {
        p.deletions().map(|d| d.id.as_str()).collect()
    }

    #[test]
    fn ids_of_one_second_order_by_their_number() {
        use std::cmp::Ordering::{Greater, Less};
        assert_eq!(
            id_order("s_20261201_100000_9", "s_20261201_100000_30"),
            Less
        );
        assert_eq!(id_order("s_20261201_100000", "s_20261201_100000_2"), Less);
        assert_eq!(
            id_order("s_20261201_100001", "s_20261201_100000_30"),
            Greater
        );
        let mut bs: Vec<_> = [9, 30, 10, 2]
            .iter()
            .map(|n| c(&format!("s_20261201_100000_{n}"), 0, 10))
            .collect();
        bs.push(c("s_20261201_100000", 0, 10));
        let p = plan(&bs, at(1), policy(1));
        assert_eq!(
            p.kept().map(|d| d.id.as_str()).collect::<Vec<_>>(),
            ["s_20261201_100000_30"]
        );
    }

    #[test]
    fn keeps_the_newest_n() {
        let bs: Vec<_> = (0..8).map(|i| c(&format!("b{i}"), i, 10)).collect();
        let p = plan(&bs, at(10), policy(3));
        assert_eq!(deleted(&p), vec!["b4", "b3", "b2", "b1", "b0"]);
        assert_eq!(p.kept().count(), 3);
    }

    #[test]
    fn the_backup_just_made_survives_a_clock_that_went_back() {
        let mut bs = vec![c("later", 48, 10), c("now", 24, 10)];
        bs[1].fresh = true;
        let p = plan(&bs, at(24), policy(1));
        assert!(p.decisions.iter().any(|d| d.id == "now" && d.keep));
        assert!(p.warnings.iter().any(|w| w.contains("clock")));
    }

    /// A second round (the budget weighed again on the bytes left) keeps the first round's
    /// deletions in the plan, takes the later decisions for the backups left, and weighs the
    /// keep-last shortfall over every backup, not only those the later round saw.
    #[test]
    fn a_later_round_joins_the_first() {
        let pol = Policy {
            keep_last: 3,
            max_age_days: None,
            max_total_bytes: Some(25),
        };
        let bs: Vec<_> = (0..4).map(|i| c(&format!("b{i}"), i, 10)).collect();
        let first = plan(&bs, at(10), pol);
        assert_eq!(deleted(&first), vec!["b1", "b0"]);
        // On disk the two left take more than their shares said: b2 goes too.
        let mut left = vec![c("b2", 2, 20), c("b3", 3, 10)];
        left[1].fresh = true;
        let later = plan(&left, at(10), pol);
        assert_eq!(deleted(&later), vec!["b2"]);
        let both = first.then(later, pol);
        assert_eq!(deleted(&both), vec!["b2", "b1", "b0"]);
        assert_eq!(both.decisions.len(), 4);
        let shortfalls: Vec<_> = both
            .warnings
            .iter()
            .filter(|w| w.contains("fewer than BACKUP_KEEP_LAST"))
            .collect();
        assert_eq!(shortfalls.len(), 1, "{:?}", both.warnings);
        assert!(
            shortfalls[0].contains("leaves 1 backup(s)"),
            "{shortfalls:?}"
        );
    }

    #[test]
    fn pinned_do_not_count_and_are_never_deleted() {
        let mut bs: Vec<_> = (0..5).map(|i| c(&format!("b{i}"), i, 10)).collect();
        bs[4].pinned = true; // the newest
        bs[0].pinned = true; // the oldest
        let p = plan(&bs, at(10), policy(2));
        assert_eq!(deleted(&p), vec!["b1"]);
    }

    /// A backup 7 days and 3 hours old is past a 7-day limit: its reason says the hours, never
    /// "7 days old, beyond BACKUP_RETENTION_DAYS=7".
    #[test]
    fn an_age_past_the_limit_by_hours_says_the_hours() {
        let bs = vec![
            c("new", 7 * 24 + 3, 10),
            c("old", 0, 10),
            c("older", -24, 10),
        ];
        let p = plan(
            &bs,
            at(7 * 24 + 3),
            Policy {
                keep_last: 7,
                max_age_days: Some(7),
                max_total_bytes: None,
            },
        );
        let said: Vec<String> = p.deletions().map(|d| d.reason.describe()).collect();
        assert_eq!(
            said,
            vec![
                "7 days 3 hours old, beyond BACKUP_RETENTION_DAYS=7",
                "8 days 3 hours old, beyond BACKUP_RETENTION_DAYS=7"
            ]
        );
    }

    #[test]
    fn age_limit_drops_old_ones_but_never_the_newest_verified() {
        let bs = vec![c("old", 0, 10), c("older", -1, 10)];
        let p = plan(
            &bs,
            at(24 * 30),
            Policy {
                keep_last: 7,
                max_age_days: Some(7),
                max_total_bytes: None,
            },
        );
        assert_eq!(deleted(&p), vec!["older"]);
        assert_eq!(p.decisions[0].reason, Reason::NewestVerified);
    }

    #[test]
    fn unverified_newest_does_not_shield_itself() {
        let mut bs = vec![c("a", 0, 10), c("b", 1, 10), c("c", 2, 10)];
        bs[2].verified = false;
        let p = plan(&bs, at(3), policy(1));
        // c is newest but unverified; b is the newest verified and survives.
        assert_eq!(deleted(&p), vec!["a"]);
        assert!(p.decisions.iter().any(|d| d.id == "b" && d.keep));
    }

    #[test]
    fn budget_deletes_oldest_first_and_warns() {
        let bs: Vec<_> = (0..4).map(|i| c(&format!("b{i}"), i, 100)).collect();
        let p = plan(
            &bs,
            at(5),
            Policy {
                keep_last: 4,
                max_age_days: None,
                max_total_bytes: Some(250),
            },
        );
        assert_eq!(deleted(&p), vec!["b1", "b0"]);
        assert!(p.warnings.iter().any(|w| w.contains("fewer than")));
    }

    #[test]
    fn budget_never_deletes_the_newest_verified() {
        let bs = vec![c("only", 0, 1000)];
        let p = plan(
            &bs,
            at(1),
            Policy {
                keep_last: 1,
                max_age_days: None,
                max_total_bytes: Some(10),
            },
        );
        assert!(deleted(&p).is_empty());
        assert!(p.warnings.iter().any(|w| w.contains("still use")));
    }

    /// Nothing is deleted without a rule that really applies to it, and the budget deletes no
    /// more than it must: deleting too many fails here, not only keeping too many.
    fn every_deletion_has_a_cause(bs: &[Candidate], pol: Policy, p: &Plan) {
        // Nothing is deleted without a rule that really applies to it: deleting too many
        // fails here, not only keeping too many.
        let mut unpinned: Vec<&Candidate> = bs.iter().filter(|b| !b.pinned).collect();
        unpinned.sort_by(|a, b| {
            b.created_at
                .cmp(&a.created_at)
                .then_with(|| id_order(&b.id, &a.id))
        });
        for d in p.deletions() {
            let pos = 1 + unpinned.iter().position(|c| c.id == d.id).unwrap();
            let c = unpinned[pos - 1];
            let ok = match d.reason {
                Reason::BeyondKeepLast { position, .. } => {
                    position == pos && pos > pol.keep_last as usize
                }
                Reason::TooOld { max_age_days, .. } => {
                    at(0) - c.created_at > Duration::days(i64::from(max_age_days))
                }
                Reason::OverBudget {
                    total_bytes,
                    max_total_bytes,
                } => pol.max_total_bytes == Some(max_total_bytes) && total_bytes > max_total_bytes,
                _ => false,
            };
            assert!(ok, "{d:?} deleted without cause: {bs:?} {pol:?}");
        }
        // The budget deletes no more than it must: without the last one it deleted (the
        // newest of them), the kept backups would be over budget.
        if let Some(last) = p
            .decisions
            .iter()
            .filter(|d| matches!(d.reason, Reason::OverBudget { .. }))
            .find(|d| !d.keep)
        {
            let kept: u64 = p.kept().map(|d| d.bytes).sum();
            assert!(
                kept + last.bytes > pol.max_total_bytes.unwrap(),
                "{last:?} need not have gone: {bs:?} {pol:?}"
            );
        }
    }

    /// Property: for every combination of sizes, pins, ages and limits, the newest verified
    /// backup and every pinned backup survive, and no more than keep_last unpinned ones (plus
    /// the protected newest verified) remain.
    #[test]
    #[allow(clippy::cast_possible_truncation, clippy::cast_possible_wrap)]
    fn invariants_hold_over_many_generated_cases() {
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut rnd = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for _ in 0..5000 {
            let n = rnd(12) as usize;
            // At most one backup is named by `latest`, and one is the last made.
            let (latest, last_made) = (rnd(n as u64 + 1), rnd(n as u64 + 1));
            let bs: Vec<Candidate> = (0..n)
                .map(|i| Candidate {
                    id: format!("b{i}"),
                    created_at: at(-(rnd(24 * 40) as i64)),
                    bytes: rnd(500),
                    pinned: rnd(5) == 0,
                    verified: rnd(4) != 0,
                    fresh: false,
                    proven: rnd(3) == 0,
                    latest: latest == i as u64,
                    last_made: last_made == i as u64,
                    in_use: false,
                })
                .collect();
            let pol = Policy {
                keep_last: 1 + rnd(8) as u32,
                max_age_days: (rnd(2) == 0).then(|| 1 + rnd(30) as u32),
                max_total_bytes: (rnd(2) == 0).then(|| rnd(3000)),
            };
            let p = plan(&bs, at(0), pol);
            assert_eq!(p.decisions.len(), n);
            let newest_verified = bs.iter().filter(|c| c.verified).max_by(|a, b| {
                a.created_at
                    .cmp(&b.created_at)
                    .then_with(|| id_order(&a.id, &b.id))
            });
            if let Some(nv) = newest_verified {
                assert!(
                    p.decisions.iter().any(|d| d.id == nv.id && d.keep),
                    "{bs:?} {pol:?}"
                );
            }
            for b in bs.iter().filter(|b| b.pinned) {
                assert!(p.decisions.iter().any(|d| d.id == b.id && d.keep));
            }
            // Every protected backup survives.
            let newest_proven = bs.iter().filter(|c| c.proven).max_by(|a, b| {
                a.created_at
                    .cmp(&b.created_at)
                    .then_with(|| id_order(&a.id, &b.id))
            });
            for b in bs
                .iter()
                .filter(|b| b.latest || b.last_made || newest_proven.is_some_and(|n| n.id == b.id))
            {
                assert!(p.decisions.iter().any(|d| d.id == b.id && d.keep), "{b:?}");
            }
            let protected: BTreeSet<&str> = bs
                .iter()
                .filter(|b| {
                    b.latest
                        || b.last_made
                        || newest_proven.is_some_and(|n| n.id == b.id)
                        || newest_verified.is_some_and(|n| n.id == b.id)
                })
                .map(|b| b.id.as_str())
                .collect();
            let protected = protected.len();
            let unpinned_kept = p
                .decisions
                .iter()
                .filter(|d| d.keep && d.reason != Reason::Pinned)
                .count();
            assert!(unpinned_kept <= pol.keep_last as usize + protected);
            every_deletion_has_a_cause(&bs, pol, &p);
        }
    }
}
