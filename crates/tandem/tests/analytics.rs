//! Anonymize-and-replicate, end to end against the real binary: a `tandem up`
//! deployment of the example config (three regions plus the router, every
//! listen on a free loopback port, data in a temporary directory) proves that
//! analytics projections of EU subjects reach us-east without a personal
//! field, a subject name or an id part, under a pseudonym that is stable per
//! subject, and disappear with their source; and that each jurisdiction's
//! pseudonym key stays in it.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::json;
use tandem_testkit::config::ALL;
use tandem_testkit::search::{files_under, find_in_files, unique_tag};
use tandem_testkit::{Deployment, Method, Tandem, CONVERGE_TIMEOUT};

const TANDEM: Tandem = Tandem::at(env!("CARGO_BIN_EXE_tandem"));
/// Pseudonym key variables of the example config: never inherited from the
/// test's environment, so `tandem up` generates the keys.
const PSEUDONYM_VARS: [&str; 2] = ["TANDEM_PSEUDONYM_KEY_EU", "TANDEM_PSEUDONYM_KEY_US"];

#[test]
fn analytics_projection_is_anonymous_everywhere_and_stable() {
    let d = deployment();
    let tag = unique_tag();
    // Subject names are markers too: none may reach a projection.
    let [ana, bert, cora] = ["ana", "bert", "cora"].map(|n| format!("qzsubj{n}{tag}"));
    for (subject, home) in [(&ana, "eu-west"), (&bert, "eu-central"), (&cora, "us-east")] {
        d.register(subject, home);
    }

    let sub = |subject: &str, n: u32, plan: &'static str, country: &'static str| {
        let rest = format!("qzrec{n}{tag}");
        Sub {
            subject: subject.to_owned(),
            id: format!("{subject}:{rest}"),
            rest,
            plan,
            country,
            personal: [
                format!("QZNAME{n}{tag}"),
                format!("qzmail{n}{tag}@example.com"),
                format!("QZCARD{n}{tag}"),
                format!("QZNICK{n}{tag}"),
            ],
        }
    };
    // Plans and countries are unique per record: they tell the projections apart.
    let subs = [
        sub(&ana, 1, "pro", "DE"),
        sub(&ana, 2, "team", "FR"),
        sub(&bert, 3, "free", "IT"),
        sub(&cora, 4, "basic", "US"),
    ];
    for s in &subs {
        let [name, email, card, nick] = &s.personal;
        let fields = json!({
            "plan": s.plan, "country": s.country,
            "name": name, "email": email, "card": card, "nickname": nick,
        });
        // From a US caller: the router sends each write to the subject's home.
        d.routed_ok(
            Method::PATCH,
            &format!("/v1/records/subscription/{}", s.id),
            &json!({ "fields": fields }),
            "us-east",
        );
    }

    // The projections reach us-east.
    let in_us = || d.scan("us-east", "subscription_stats");
    assert!(
        d.wait_until(CONVERGE_TIMEOUT, || in_us().len() == subs.len()),
        "us-east has {} subscription_stats records, expected {}: {:?}",
        in_us().len(),
        subs.len(),
        in_us()
    );
    let projections = in_us();
    let eu_subs: Vec<&Sub> = subs.iter().filter(|s| s.subject != cora).collect();
    let mut markers: Vec<String> = Vec::new();
    for s in &subs {
        markers.extend([s.subject.clone(), s.rest.clone(), s.id.clone()]);
        markers.extend(s.personal.iter().cloned());
    }
    let mut pseudonym_of: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut projection_id_of: BTreeMap<String, String> = BTreeMap::new();
    for p in &projections {
        let text = p.to_string();
        let id = p["id"].as_str().expect("id");
        let leaked: Vec<&String> = markers
            .iter()
            .filter(|m| id.contains(m.as_str()) || text.contains(m.as_str()))
            .collect();
        assert!(leaked.is_empty(), "projection in us-east carries {leaked:?}: {p}");
        let value = p["value"].as_object().unwrap_or_else(|| panic!("an object value: {p}"));
        let keys: BTreeSet<&str> = value.keys().map(String::as_str).collect();
        assert_eq!(keys, BTreeSet::from(["country", "plan", "pseudonym"]), "fields of {p}");
        let s = subs
            .iter()
            .find(|s| value["plan"] == s.plan && value["country"] == s.country)
            .unwrap_or_else(|| panic!("a projection of no record of this test: {p}"));
        let pseudonym = value["pseudonym"].as_str().expect("pseudonym is a string").to_owned();
        assert!(
            pseudonym.len() >= 16 && pseudonym.bytes().all(|b| b.is_ascii_hexdigit()),
            "pseudonym {pseudonym:?} is not a keyed hash"
        );
        assert!(
            id.starts_with(&format!("{pseudonym}.")),
            "projection id {id} is <pseudonym>.<hash>"
        );
        pseudonym_of.entry(s.subject.clone()).or_default().insert(pseudonym);
        assert!(
            projection_id_of.insert(s.id.clone(), id.to_owned()).is_none(),
            "two projections of {}",
            s.id
        );
    }
    // Stable per subject, different between subjects.
    for (subject, ps) in &pseudonym_of {
        assert_eq!(ps.len(), 1, "{subject} has several pseudonyms: {ps:?}");
    }
    let distinct: BTreeSet<&String> = pseudonym_of.values().flatten().collect();
    assert_eq!(distinct.len(), 3, "three subjects, three pseudonyms: {pseudonym_of:?}");

    // Stable across updates too: a new plan keeps the subject's pseudonym and the id.
    let first = &subs[0];
    d.routed_ok(
        Method::PATCH,
        &format!("/v1/records/subscription/{}", first.id),
        &json!({"fields": {"plan": "enterprise", "name": format!("{}x", first.personal[0])}}),
        "eu-west",
    );
    let pid = &projection_id_of[&first.id];
    let updated =
        || d.value("us-east", "subscription_stats", pid).is_some_and(|v| v["plan"] == "enterprise");
    assert!(d.wait_until(CONVERGE_TIMEOUT, updated), "the update of {pid} never reached us-east");
    let v = d.value("us-east", "subscription_stats", pid).expect("present");
    assert_eq!(
        json!(pseudonym_of[&first.subject].iter().next()),
        v["pseudonym"],
        "pseudonym after an update: {v}"
    );

    // The projection type is readable everywhere and identical everywhere.
    let everywhere_same = || {
        ALL.iter().map(|r| d.digest(r, "subscription_stats")).collect::<BTreeSet<_>>().len() == 1
    };
    assert!(
        d.wait_until(CONVERGE_TIMEOUT, everywhere_same),
        "subscription_stats differs between regions"
    );
    for r in ALL {
        assert_eq!(d.digest(r, "subscription_stats").1, subs.len() as u64, "projections at {r}");
    }

    // us-east holds no subscription of an EU subject, and its whole store holds
    // none of their personal values (the US subject's do appear: the search works).
    for s in &eu_subs {
        assert_eq!(d.value("us-east", "subscription", &s.id), None, "us-east serves {}", s.id);
        assert!(d
            .value(if s.subject == ana { "eu-west" } else { "eu-central" }, "subscription", &s.id)
            .is_some());
    }
    let eu_personal: Vec<String> =
        eu_subs.iter().flat_map(|s| s.personal.iter().cloned()).collect();
    let us_files = files_under(&d.region_dir("us-east"));
    assert!(!us_files.is_empty(), "us-east has files");
    let leaks = find_in_files(&us_files, &eu_personal);
    assert!(leaks.is_empty(), "EU personal values in us-east's data dir: {leaks:?}");
    let cora_name = subs[3].personal[0].clone();
    assert!(
        !find_in_files(&us_files, std::slice::from_ref(&cora_name)).is_empty(),
        "the search finds nothing at all: the US subject's name is not in us-east's files"
    );
    assert!(
        !find_in_files(&files_under(&d.region_dir("eu-west")), &[subs[0].personal[0].clone()])
            .is_empty(),
        "the EU subject's name is in its home region's files"
    );

    // Each jurisdiction's pseudonym key stays in it: in its regions' environment
    // only, and nowhere in the other jurisdiction's data.
    for (process, own, foreign) in [
        ("eu-west", Some("TANDEM_PSEUDONYM_KEY_EU"), "TANDEM_PSEUDONYM_KEY_US"),
        ("eu-central", Some("TANDEM_PSEUDONYM_KEY_EU"), "TANDEM_PSEUDONYM_KEY_US"),
        ("us-east", Some("TANDEM_PSEUDONYM_KEY_US"), "TANDEM_PSEUDONYM_KEY_EU"),
        ("router", None, "TANDEM_PSEUDONYM_KEY_EU"),
        ("router", None, "TANDEM_PSEUDONYM_KEY_US"),
    ] {
        let names = d.env_names(process);
        assert!(!names.contains(foreign), "{process} has {foreign}");
        if let Some(own) = own {
            assert!(names.contains(own), "{process} lacks {own}");
        }
    }
    let eu_key = std::fs::read_to_string(d.data_dir().join("pseudonym-EU.key")).expect("EU key");
    assert_eq!(eu_key.trim().len(), 64, "a 32-byte key in hex");
    assert!(
        find_in_files(&us_files, &[eu_key.trim().to_owned()]).is_empty(),
        "the EU pseudonym key is in us-east's data"
    );

    // Removing the source removes its projection everywhere; the others stay.
    let gone = &subs[2];
    let r =
        d.routed(Method::DELETE, &format!("/v1/records/subscription/{}", gone.id), None, "us-east");
    assert_eq!(r.status, 200, "DELETE {} via the router: {r}", gone.id);
    let gone_pid = &projection_id_of[&gone.id];
    for region in ALL {
        let absent = || d.value(region, "subscription_stats", gone_pid).is_none();
        assert!(d.wait_until(CONVERGE_TIMEOUT, absent), "projection {gone_pid} still at {region}");
    }
    assert_eq!(d.value("eu-central", "subscription", &gone.id), None, "the source is gone");
    for s in subs.iter().filter(|s| s.id != gone.id) {
        for region in ALL {
            assert!(
                d.value(region, "subscription_stats", &projection_id_of[&s.id]).is_some(),
                "the projection of {} is still at {region}",
                s.id
            );
        }
    }
    let remaining = d.scan("us-east", "subscription_stats");
    assert_eq!(remaining.len(), subs.len() - 1, "after the delete: {remaining:?}");
}

/// One `subscription` record of the analytics test.
struct Sub {
    subject: String,
    id: String,
    /// The `rest` of the id (after `<subject>:`): a marker too.
    rest: String,
    plan: &'static str,
    country: &'static str,
    /// name, email, card and an undeclared field: none may be projected.
    personal: [String; 4],
}

/// The example deployment under `tandem up` with the router, no pseudonym
/// key inherited (so that `tandem up` generates each jurisdiction's).
fn deployment() -> Deployment {
    let mut b = TANDEM.deployment().prefix("tandem-an-");
    for var in PSEUDONYM_VARS {
        b = b.env_remove(var);
    }
    b.start()
}
