//! How a check's detail, or a finding, quotes what the drill saw: one
//! request with its answer, one conflict with its two versions, a list capped
//! at [`QUOTE_MAX`] items. Pure: formatting only.

use super::journal::RequestRecord;
use super::measure::ConflictSeen;

/// Lines of detail quoted in one finding.
pub(super) const QUOTE_MAX: usize = 20;

/// `items` joined with "; ", at most [`QUOTE_MAX`] of them; `none` when empty.
pub(super) fn join_or(items: &[String], none: &str) -> String {
    if items.is_empty() {
        none.to_owned()
    } else if items.len() > QUOTE_MAX {
        format!("{} … and {} more", items[..QUOTE_MAX].join("; "), items.len() - QUOTE_MAX)
    } else {
        items.join("; ")
    }
}

/// One request, for check details.
pub(super) fn describe_request(r: &RequestRecord) -> String {
    format!(
        "{} {}/{} from {} at +{:.2} s: {}{}{}",
        r.op,
        r.entity,
        r.id,
        r.caller,
        r.sent_s,
        r.status.map_or_else(|| "no answer".to_owned(), |s| s.to_string()),
        r.region
            .as_deref()
            .map(|g| format!(" by {g} ({})", r.route.as_deref().unwrap_or("?")))
            .unwrap_or_default(),
        r.error.as_deref().map(|e| format!(" {e}")).unwrap_or_default()
    )
}

pub(super) fn describe_conflict(c: &ConflictSeen) -> String {
    format!(
        "{}/{} at {}: {}@{} vs {}@{}",
        c.entity,
        c.id,
        c.region,
        c.local.origin,
        c.local.wall_ms,
        c.remote.origin,
        c.remote.wall_ms
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_are_capped() {
        assert_eq!(join_or(&[], "none"), "none");
        let two = vec!["a".to_owned(), "b".to_owned()];
        assert_eq!(join_or(&two, "none"), "a; b");
        let many: Vec<String> = (0..QUOTE_MAX + 3).map(|i| i.to_string()).collect();
        let joined = join_or(&many, "");
        assert!(joined.starts_with("0; 1; "), "{joined}");
        assert!(joined.ends_with(&format!("{} … and 3 more", QUOTE_MAX - 1)), "{joined}");
    }

    #[test]
    fn a_request_shows_its_answer() {
        let r = crate::drill::measure::tests::rec(
            1.5,
            Some("eu-west"),
            "eu-west",
            Some(200),
            Some("eu-central"),
            Some("failover"),
        );
        assert_eq!(
            describe_request(&r),
            "put credential/s:cred from eu-west at +1.50 s: 200 by eu-central (failover)"
        );
        let unanswered = RequestRecord { status: None, region: None, ..r };
        assert_eq!(
            describe_request(&unanswered),
            "put credential/s:cred from eu-west at +1.50 s: no answer"
        );
    }
}
