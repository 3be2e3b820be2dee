//! Phase 6, post-drill verification: with the workload stopped, wait until
//! the regions converge (equal digests per entity type where it may be held),
//! read every record the drill wrote back from every region that may hold it
//! and verify the acknowledged writes, scan every personal entity type in
//! every region for records of subjects homed elsewhere, and read the audit
//! logs written during the drill for personal data served in clear across
//! jurisdictions.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use futures_util::StreamExt;

use super::predrill::AuditHeads;
use crate::drill::context::{Context, Results};
use crate::drill::deployment::{Deployment, CALL_TIMEOUT};
use crate::drill::detail::join_or;
use crate::drill::journal::{RequestRecord, WriteOutcome};
use crate::drill::measure;
use crate::drill::plan::Topology;
use crate::drill::report::Check;
use crate::drill::traffic::Traffic;
use crate::drill::verify::{self, ReadBack, ReadResult};
use crate::drill::workload::Subject;

/// Pages read of one scan or audit log (1000 entries each).
const PAGES_MAX: usize = 10_000;
/// Concurrent read-back requests.
const READBACK_CONCURRENCY: usize = 16;
/// Tries of one read-back (503 and transport errors are retried).
const READBACK_TRIES: usize = 5;

/// Regions that must agree on an entity's digest, in groups.
fn digest_groups(topo: &Topology) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    for e in &topo.entities {
        if e.personal {
            let js: BTreeSet<&str> = topo.regions.iter().map(|r| r.jurisdiction.as_str()).collect();
            for j in js {
                let rs: Vec<String> = topo
                    .regions
                    .iter()
                    .filter(|r| r.jurisdiction == j)
                    .map(|r| r.name.clone())
                    .collect();
                if rs.len() > 1 {
                    out.push((e.name.clone(), rs));
                }
            }
        } else {
            out.push((e.name.clone(), topo.region_names()));
        }
    }
    out
}

/// The entity types whose digests differ between regions that must agree.
async fn diverged_types(dep: &Deployment) -> Vec<String> {
    let mut out = Vec::new();
    for (entity, regions) in digest_groups(&dep.topo) {
        let mut digests = BTreeMap::new();
        for r in &regions {
            let url = format!("{}/v1/digest?entity={entity}", dep.region_url(r));
            let d = dep.get_json(&url).await.and_then(|v| v["digest"].as_str().map(str::to_owned));
            digests.insert(r.clone(), d.unwrap_or_else(|| "unreachable".into()));
        }
        let distinct: BTreeSet<&String> = digests.values().collect();
        if distinct.len() > 1 {
            out.push(format!(
                "{entity}: {}",
                digests
                    .iter()
                    .map(|(r, d)| format!("{r} {}", &d[..d.len().min(8)]))
                    .collect::<Vec<_>>()
                    .join(" ")
            ));
        }
    }
    out
}

/// Every record the journal wrote, read from every region that may hold it.
async fn read_back(dep: &Deployment, records: &[RequestRecord]) -> ReadBack {
    let mut keys: BTreeMap<(String, String), Option<String>> = BTreeMap::new();
    for r in records.iter().filter(|r| r.is_write() && r.write_outcome() != WriteOutcome::Rejected)
    {
        keys.insert((r.entity.clone(), r.id.clone()), r.home.clone());
    }
    let jobs: Vec<(String, String, String)> = keys
        .iter()
        .flat_map(|((e, id), home)| {
            dep.topo
                .holders(e, home.as_deref())
                .into_iter()
                .map(move |r| (e.clone(), id.clone(), r))
        })
        .collect();
    let results: Vec<((String, String, String), ReadResult)> = futures_util::stream::iter(jobs)
        .map(|(e, id, r)| async move {
            let url = format!("{}/v1/records/{e}/{id}", dep.region_url(&r));
            let mut result = ReadResult::Unreadable("not tried".into());
            for _ in 0..READBACK_TRIES {
                result = match dep.http.get(&url, CALL_TIMEOUT).await {
                    Ok(a) if a.ok() => ReadResult::Value(a.body["value"].clone()),
                    Ok(a) if a.status == 404 => ReadResult::Missing,
                    Ok(a) => ReadResult::Unreadable(format!(
                        "{} {}",
                        a.status,
                        a.error_code().unwrap_or_default()
                    )),
                    Err(err) => ReadResult::Unreadable(err),
                };
                if !matches!(result, ReadResult::Unreadable(_)) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            ((e, id, r), result)
        })
        .buffer_unordered(READBACK_CONCURRENCY)
        .collect()
        .await;
    let mut out = ReadBack::new();
    for ((e, id, r), result) in results {
        out.entry((e, id)).or_default().insert(r, result);
    }
    out
}

/// Every id of `entity` that `region` holds.
async fn scan_ids(dep: &Deployment, region: &str, entity: &str) -> Result<Vec<String>, String> {
    let mut ids = Vec::new();
    let mut after: Option<String> = None;
    for _ in 0..PAGES_MAX {
        let mut url = format!("{}/v1/records/{entity}?limit=1000", dep.region_url(region));
        if let Some(a) = &after {
            url.push_str(&format!("&after={a}"));
        }
        let a = dep.http.get(&url, CALL_TIMEOUT).await?;
        if !a.ok() {
            return Err(format!("{url} answered {}", a.status));
        }
        for r in a.body["records"].as_array().into_iter().flatten() {
            if let Some(id) = r["id"].as_str() {
                ids.push(id.to_owned());
            }
        }
        match a.body["next"].as_str() {
            Some(n) => after = Some(n.to_owned()),
            None => return Ok(ids),
        }
    }
    Err(format!("{entity} at {region}: more than {PAGES_MAX} pages"))
}

/// Personal records held outside their subject's jurisdiction, in every region.
async fn residency_scan(
    dep: &Deployment,
    subjects: &[Subject],
    results: &mut Results,
    findings: &mut Vec<String>,
) -> Check {
    let mut homes: BTreeMap<String, Option<String>> = subjects
        .iter()
        .map(|s| (s.name.clone(), dep.topo.jurisdiction_of(&s.home).map(str::to_owned)))
        .collect();
    let mut violations = Vec::new();
    let mut scanned = 0usize;
    let mut errors = Vec::new();
    let personal: Vec<String> =
        dep.topo.entities.iter().filter(|e| e.personal).map(|e| e.name.clone()).collect();
    for region in dep.topo.regions.clone() {
        for entity in &personal {
            let ids = match scan_ids(dep, &region.name, entity).await {
                Ok(ids) => ids,
                Err(e) => {
                    errors.push(e);
                    continue;
                }
            };
            scanned += ids.len();
            for id in &ids {
                let Some(subject) = tandem_config::subject_of(id) else { continue };
                if !homes.contains_key(subject) {
                    let url = format!("{}/v1/subjects/{subject}", dep.topo.router_url);
                    let j = dep
                        .get_json(&url)
                        .await
                        .and_then(|v| v["jurisdiction"].as_str().map(str::to_owned));
                    homes.insert(subject.to_owned(), j);
                }
            }
            let lookup = |s: &str| homes.get(s).cloned().flatten();
            violations.extend(verify::scan_violations(
                &region.name,
                &region.jurisdiction,
                entity,
                &ids,
                &lookup,
            ));
        }
    }
    results.residency_violations += violations.len() as u64;
    let mut detail = format!(
        "{scanned} personal records scanned in {} regions: {}",
        dep.topo.regions.len(),
        join_or(&violations, "each in its subject's jurisdiction")
    );
    if !errors.is_empty() {
        detail.push_str(&format!("; scans failed: {}", join_or(&errors, "")));
    }
    if !violations.is_empty() {
        findings.push(format!("residency violations: {}", join_or(&violations, "")));
    }
    Check::new(
        "residency: personal records only in their subject's jurisdiction",
        violations.is_empty() && errors.is_empty(),
        detail,
    )
}

/// Audit entries of the drill that show personal data served in clear to
/// another jurisdiction, in every region from its head before the drill.
async fn audit_scan(
    dep: &Deployment,
    audit_from: &AuditHeads,
    results: &mut Results,
    findings: &mut Vec<String>,
) -> Check {
    let personal: BTreeSet<String> =
        dep.topo.entities.iter().filter(|e| e.personal).map(|e| e.name.clone()).collect();
    let mut violations = Vec::new();
    let mut errors = Vec::new();
    let mut entries_seen = 0usize;
    for region in dep.topo.regions.clone() {
        let mut after = audit_from.get(&region.name).copied().unwrap_or(0);
        let mut entries = Vec::new();
        for _ in 0..PAGES_MAX {
            let url = format!("{}/v1/audit?after={after}&limit=1000", region.url);
            let Some(v) = dep.get_json(&url).await else {
                errors.push(format!("no audit from {}", region.name));
                break;
            };
            let page = v["entries"].as_array().cloned().unwrap_or_default();
            let Some(last) = page.last().and_then(|e| e["seq"].as_u64()) else { break };
            after = last;
            entries.extend(page);
        }
        entries_seen += entries.len();
        violations.extend(verify::audit_violations(
            &region.name,
            &region.jurisdiction,
            &entries,
            &personal,
        ));
    }
    results.residency_violations += violations.len() as u64;
    if !violations.is_empty() {
        findings.push(format!(
            "audit shows personal data served across jurisdictions: {}",
            join_or(&violations, "")
        ));
    }
    let mut detail = format!(
        "{entries_seen} audit entries of the drill checked: {}",
        join_or(&violations, "no personal data served in clear to another jurisdiction")
    );
    if !errors.is_empty() {
        detail.push_str(&format!("; {}", errors.join("; ")));
    }
    Check::new(
        "audit: cross-jurisdiction flows carry no personal data in clear",
        violations.is_empty() && errors.is_empty(),
        detail,
    )
}

pub(super) async fn run(
    cx: &mut Context,
    traffic: &mut Traffic,
    audit_from: &AuditHeads,
    results: &mut Results,
) {
    let start = cx.begin(5);
    let mut checks = Vec::new();
    traffic.stop().await;
    let converge_until = cx.now() + cx.settings.timings.post_max.as_secs_f64() * 0.6;
    let t0 = cx.now();
    let mut diverged;
    loop {
        diverged = diverged_types(&cx.dep).await;
        if diverged.is_empty() || cx.now() > converge_until {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    checks.push(Check::new(
        "regions converged (equal digests)",
        diverged.is_empty(),
        if diverged.is_empty() {
            format!("every entity type equal where it may be held, after {:.2} s", cx.now() - t0)
        } else {
            format!("still different after {:.1} s: {}", cx.now() - t0, join_or(&diverged, ""))
        },
    ));
    let records = cx.journal.snapshot();
    let readback = read_back(&cx.dep, &records).await;
    let v = verify::verify(&records, &readback);
    checks.push(Check::new(
        "every acknowledged write is in every region that may hold it",
        v.lost == 0,
        format!(
            "{} acknowledged, {} verified, {} lost{}",
            v.acknowledged,
            v.verified,
            v.lost,
            if v.lost > 0 { format!(": {}", join_or(&v.lost_details, "")) } else { String::new() }
        ),
    ));
    checks.push(Check::new(
        "no record holds a value no request wrote",
        v.problems.is_empty(),
        join_or(&v.problems, "none"),
    ));
    if v.lost > 0 {
        cx.log.findings.push(format!(
                "{} acknowledged write(s) lost in {} record(s), {} of them missing from every region that may hold them, the others from some only (not replicated there when the drill stopped waiting): {}",
                v.lost,
                v.lost_keys.len(),
                v.lost_everywhere,
                join_or(&v.lost_details, "")
            ));
    }
    results.verification = Some(v);
    checks.push(residency_scan(&cx.dep, traffic.subjects(), results, &mut cx.log.findings).await);
    checks.push(audit_scan(&cx.dep, audit_from, results, &mut cx.log.findings).await);
    let all: Vec<&RequestRecord> = records.iter().collect();
    let landing = measure::landing_violations(&cx.dep.topo, &all);
    checks.push(Check::new(
        "writes landed only in permitted regions (whole drill)",
        landing.is_empty(),
        join_or(
            &landing,
            &format!(
                "{} acknowledged writes checked",
                records.iter().filter(|r| r.is_write() && r.ok()).count()
            ),
        ),
    ));
    cx.end(start, checks);
}
