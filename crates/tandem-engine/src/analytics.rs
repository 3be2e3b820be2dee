//! Anonymize-and-replicate: an entity type may declare an analytics
//! projection. On every local write of such a record the region derives, in
//! the same transaction, a record of the projection's type that keeps only the
//! declared fields and replaces the subject with a keyed pseudonym
//! (HMAC-SHA256 with the jurisdiction's key, which never leaves it). The
//! projection is not personal, so it replicates to every region; removing the
//! source record removes its projection.

use std::collections::BTreeMap;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use tandem_config::AnalyticsProjection;
use tandem_merge::{Op, State};

/// The keyed pseudonym function of one jurisdiction.
#[derive(Clone)]
pub struct Pseudonymizer {
    key: [u8; 32],
}

impl std::fmt::Debug for Pseudonymizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pseudonymizer(<key>)")
    }
}

impl Pseudonymizer {
    pub fn new(key: [u8; 32]) -> Self {
        Pseudonymizer { key }
    }

    /// Parse a key of 64 hex digits.
    pub fn from_hex(hex_key: &str) -> Option<Self> {
        let bytes: [u8; 32] = hex::decode(hex_key.trim()).ok()?.try_into().ok()?;
        Some(Self::new(bytes))
    }

    fn mac(&self, domain: &str, input: &str) -> String {
        let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.key).expect("any key length");
        m.update(domain.as_bytes());
        m.update(&[0]);
        m.update(input.as_bytes());
        hex::encode(&m.finalize().into_bytes()[..16])
    }

    /// The subject's pseudonym: stable for one subject and key, meaningless without the key.
    pub fn pseudonym(&self, subject: &str) -> String {
        self.mac("subject", subject)
    }

    /// The projection's id for a source id `<subject>:<rest>` (or `<subject>`).
    pub fn projection_id(&self, source_id: &str) -> Option<String> {
        let subject = tandem_config::subject_of(source_id)?;
        let rest = tandem_config::rest_of(source_id);
        Some(format!("{}.{}", self.pseudonym(subject), self.mac("record", rest)))
    }
}

/// The operation that brings the projection in line with the source's new
/// state: the kept fields (absent ones removed) and the pseudonym, or a delete
/// when the source is gone.
pub fn projection_op(source: &State, projection: &AnalyticsProjection, pseudonym: &str) -> Op {
    let Some(serde_json::Value::Object(fields)) = source.value() else { return Op::Delete };
    let mut changes: BTreeMap<String, Option<String>> = projection
        .keep
        .iter()
        .map(|f| (f.clone(), fields.get(f).map(|v| serde_json::to_string(v).expect("encodes"))))
        .collect();
    changes.insert("pseudonym".into(), Some(serde_json::to_string(pseudonym).expect("encodes")));
    Op::Patch(changes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tandem_clock::Hlc;
    use tandem_merge::MergeKind;

    #[test]
    fn keys_come_from_64_hex_digits_and_are_never_printed() {
        let k = Pseudonymizer::from_hex(&"0f".repeat(32)).expect("a key");
        assert_eq!(k.pseudonym("a"), Pseudonymizer::new([0x0f; 32]).pseudonym("a"));
        assert!(Pseudonymizer::from_hex(&"0f".repeat(31)).is_none());
        assert!(Pseudonymizer::from_hex("zz").is_none());
        assert_eq!(format!("{k:?}"), "Pseudonymizer(<key>)");
    }

    #[test]
    fn projections_keep_only_declared_fields_under_a_stable_pseudonym() {
        let p = Pseudonymizer::new([3; 32]);
        let other = Pseudonymizer::new([4; 32]);
        assert_eq!(p.pseudonym("alice"), p.pseudonym("alice"));
        assert_ne!(p.pseudonym("alice"), p.pseudonym("bob"));
        assert_ne!(
            p.pseudonym("alice"),
            other.pseudonym("alice"),
            "another jurisdiction's key, another pseudonym"
        );
        let id = p.projection_id("alice:main").unwrap();
        assert!(!id.contains("alice") && !id.contains("main"));
        assert!(id.starts_with(&p.pseudonym("alice")));
        // The subject's own record (an id without `:`) has a projection of its own.
        let own = p.projection_id("alice").unwrap();
        assert!(own.starts_with(&p.pseudonym("alice")) && own != id);
        assert!(p.projection_id(":main").is_none());

        let proj = AnalyticsProjection {
            into: "subscription_stats".into(),
            keep: vec!["plan".into(), "country".into()],
            drop: vec!["name".into()],
        };
        let mut source = State::new(MergeKind::LwwFields);
        let patch = Op::Patch(BTreeMap::from([
            ("plan".to_string(), Some("\"pro\"".to_string())),
            ("name".to_string(), Some("\"Alice MARKER\"".to_string())),
        ]));
        source.apply(&patch, "eu-west", Hlc::new(1, 0)).unwrap();
        let Op::Patch(changes) = projection_op(&source, &proj, "p1") else { panic!("a patch") };
        assert_eq!(changes["plan"].as_deref(), Some("\"pro\""));
        assert_eq!(changes["country"], None, "absent kept fields are removed");
        assert!(!changes.contains_key("name"));
        assert!(!format!("{changes:?}").contains("MARKER"));
        source.apply(&Op::Delete, "eu-west", Hlc::new(2, 0)).unwrap();
        assert_eq!(projection_op(&source, &proj, "p1"), Op::Delete);
    }
}
