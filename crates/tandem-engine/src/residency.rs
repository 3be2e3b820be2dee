//! Residency and pinning, enforced by the node whatever the router did. A pure
//! decision over the config, the record's subject and its home region, and the
//! failover marker of the request:
//!
//! - a personal record is written only in a region of its subject's
//!   jurisdiction (403 `residency_violation`, counted);
//! - a pinned (`home-region`) record is written only in its subject's home
//!   region, or in another region of the same jurisdiction when the router
//!   marked the request as a failover for that home (421 `misdirected_write`
//!   with `home_region` otherwise);
//! - a record with subjects needs a registered subject when it is personal or
//!   pinned (422 `unknown_subject`).
//!
//! Refusals are typed (`Refusal`); the node renders them.

use tandem_config::{Config, EntityConfig, WritePolicy};

use crate::error::Refusal;

/// Decide whether `region` may take this write.
#[allow(clippy::result_large_err)] // refusals are the cold path: not worth a box
pub fn check_write(
    config: &Config,
    region: &str,
    entity: &str,
    cfg: &EntityConfig,
    subject: Option<&str>,
    home_region: Option<&str>,
    failover_for: Option<&str>,
) -> Result<(), Refusal> {
    let needs_home = cfg.personal || cfg.writes == WritePolicy::HomeRegion;
    if !cfg.subjects || !needs_home {
        return Ok(());
    }
    let subject = subject.unwrap_or("");
    let Some(home) = home_region else {
        return Err(Refusal::UnknownSubject { subject: subject.to_owned() });
    };
    let here = config.jurisdiction_of(region).unwrap_or("");
    let theirs = config.jurisdiction_of(home).unwrap_or("");
    if cfg.personal && here != theirs {
        return Err(Refusal::ResidencyViolation {
            entity: entity.to_owned(),
            subject: subject.to_owned(),
            region: region.to_owned(),
            here: here.to_owned(),
            theirs: theirs.to_owned(),
            home: home.to_owned(),
        });
    }
    if cfg.writes == WritePolicy::HomeRegion && home != region {
        let valid_failover = failover_for == Some(home) && here == theirs;
        if !valid_failover {
            return Err(Refusal::Misdirected {
                entity: entity.to_owned(),
                subject: subject.to_owned(),
                home: home.to_owned(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(
        region: &str,
        entity: &str,
        home: Option<&str>,
        failover: Option<&str>,
    ) -> Result<(), &'static str> {
        let c = Config::example();
        let cfg = c.entity(entity).unwrap().clone();
        check_write(&c, region, entity, &cfg, Some("alice"), home, failover).map_err(|r| match r {
            Refusal::UnknownSubject { .. } => "unknown_subject",
            Refusal::ResidencyViolation { .. } => "residency_violation",
            Refusal::Misdirected { .. } => "misdirected_write",
            _ => "other",
        })
    }

    #[test]
    fn a_type_with_subjects_that_is_neither_personal_nor_pinned_needs_no_home() {
        let c = Config::example();
        let mut cfg = c.entity("article").unwrap().clone();
        cfg.subjects = true;
        assert_eq!(check_write(&c, "us-east", "notes", &cfg, Some("zed"), None, None), Ok(()));
    }

    #[test]
    fn table() {
        use Result::Ok as Allowed;
        type Case<'a> = (&'a str, &'a str, Option<&'a str>, Option<&'a str>, Result<(), &'a str>);
        let cases: &[Case] = &[
            // personal + pinned (credential)
            ("eu-west", "credential", Some("eu-west"), None, Allowed(())),
            ("eu-central", "credential", Some("eu-west"), None, Err("misdirected_write")),
            ("eu-central", "credential", Some("eu-west"), Some("eu-west"), Allowed(())),
            (
                "eu-central",
                "credential",
                Some("eu-west"),
                Some("eu-central"),
                Err("misdirected_write"),
            ),
            ("us-east", "credential", Some("eu-west"), Some("eu-west"), Err("residency_violation")),
            ("us-east", "credential", Some("eu-west"), None, Err("residency_violation")),
            ("eu-west", "credential", None, None, Err("unknown_subject")),
            // personal, any region (cart): any region of the jurisdiction
            ("eu-central", "cart", Some("eu-west"), None, Allowed(())),
            ("us-east", "cart", Some("eu-west"), None, Err("residency_violation")),
            ("us-east", "cart", None, None, Err("unknown_subject")),
            // pinned, not personal (settings): home or failover in the jurisdiction
            ("eu-west", "settings", Some("eu-west"), None, Allowed(())),
            ("us-east", "settings", Some("eu-west"), None, Err("misdirected_write")),
            ("us-east", "settings", Some("eu-west"), Some("eu-west"), Err("misdirected_write")),
            ("eu-central", "settings", Some("eu-west"), Some("eu-west"), Allowed(())),
            // neither (article): anywhere
            ("us-east", "article", None, None, Allowed(())),
        ];
        for (region, entity, home, failover, want) in cases {
            assert_eq!(
                &check(region, entity, *home, *failover),
                want,
                "{region} {entity} {home:?} {failover:?}"
            );
        }
    }
}
