//! The synthetic workload the drill drives through the router while it runs:
//! subjects homed in every region, writes of every entity type of the config
//! (so every merge type, pinned and unpinned, personal and not), callers in
//! every region (`X-Tandem-Client-Region`), and reads in between. A few
//! tokio tasks, each paced to a fixed rate, each the only writer of its own
//! keys, so that what must survive is exact: `lww` values and `lww-fields`
//! fields count up per key, counters only take `incr 1`, or-set elements are
//! unique. Besides the mixed tasks, one steady task per region keeps writing
//! counters and sets of that region's subjects, so a fault at any moment
//! lands among acknowledged writes that the verification can see.
//!
//! Every request goes to the journal with its answer.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper::Method;
use rand::rngs::ChaCha8Rng;
use rand::seq::SliceRandom;
use rand::{Rng as _, RngExt, SeedableRng};
use serde_json::{json, Value};
use tandem_config::MergeKind;

use super::http::{Answer, Http};
use super::journal::{DrillClock, Journal, RequestRecord, WriteOp};
use super::measure::classify;
use super::plan::Topology;

/// Time-out of one workload request: above the router's upstream time-out
/// (5 s in the example), so a slow region shows as the router's 504.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(6);
/// Subjects registered per region.
pub const SUBJECTS_PER_REGION: usize = 2;
/// Mixed tasks (callers spread over the regions).
pub const MIXED_TASKS: usize = 4;
/// Requests per second of one mixed task.
pub const MIXED_RATE_PER_S: f64 = 8.0;
/// Requests per second of one steady task.
pub const STEADY_RATE_PER_S: f64 = 5.0;
/// Every n-th request of a mixed task is a read.
pub const MIXED_READ_EVERY: u64 = 4;

/// The drill's seeded generator, so a run's choices follow from its seed:
/// rand's `ChaCha8Rng`, a named generator whose stream for a seed rand keeps
/// across releases (`StdRng` may change algorithm in any release).
#[derive(Debug)]
pub struct Rng(ChaCha8Rng);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(ChaCha8Rng::seed_from_u64(seed))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    pub fn below(&mut self, n: usize) -> usize {
        assert!(n > 0);
        self.0.random_range(0..n)
    }

    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        v.shuffle(&mut self.0);
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    pub name: String,
    pub home: String,
}

/// `SUBJECTS_PER_REGION` subjects homed in each region, named after the run.
pub fn subjects(run: &str, topo: &Topology) -> Vec<Subject> {
    topo.regions
        .iter()
        .flat_map(|r| {
            (0..SUBJECTS_PER_REGION).map(move |i| Subject {
                name: format!("drill-{run}-{}-{i}", r.name),
                home: r.name.clone(),
            })
        })
        .collect()
}

/// One record a task writes: an entity type and, for types with subjects, a subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Item {
    pub entity: usize,
    pub subject: Option<usize>,
}

#[derive(Debug, Clone)]
pub struct TaskPlan {
    pub task: usize,
    pub caller: String,
    pub items: Vec<Item>,
    pub rate_per_s: f64,
    /// Every n-th request is a read of a record written before; 0: never.
    pub read_every: u64,
}

/// The tasks: `MIXED_TASKS` over every item with callers round the regions,
/// and one steady task per region over the counters and sets of its subjects.
pub fn plan_tasks(topo: &Topology, subjects: &[Subject], rng: &mut Rng) -> Vec<TaskPlan> {
    let mut all = Vec::new();
    for (e, info) in topo.entities.iter().enumerate() {
        if info.projection {
            continue;
        }
        if info.subjects {
            all.extend((0..subjects.len()).map(|s| Item { entity: e, subject: Some(s) }));
        } else {
            all.push(Item { entity: e, subject: None });
        }
    }
    let mut plans = Vec::new();
    for task in 0..MIXED_TASKS {
        let mut items = all.clone();
        rng.shuffle(&mut items);
        plans.push(TaskPlan {
            task,
            caller: topo.regions[task % topo.regions.len()].name.clone(),
            items,
            rate_per_s: MIXED_RATE_PER_S,
            read_every: MIXED_READ_EVERY,
        });
    }
    for region in &topo.regions {
        let mine = |i: &&Item| i.subject.is_some_and(|s| subjects[s].home == region.name);
        let detectable = |i: &&Item| {
            let e = &topo.entities[i.entity];
            matches!(e.merge, MergeKind::GCounter | MergeKind::PnCounter | MergeKind::OrSet)
                && e.routed_by_home(true)
        };
        let mut items: Vec<Item> = all.iter().filter(mine).filter(detectable).copied().collect();
        if items.is_empty() {
            items = all.iter().filter(mine).copied().collect();
        }
        if items.is_empty() {
            continue;
        }
        rng.shuffle(&mut items);
        plans.push(TaskPlan {
            task: plans.len(),
            caller: region.name.clone(),
            items,
            rate_per_s: STEADY_RATE_PER_S,
            read_every: 0,
        });
    }
    plans
}

/// A request ready to send.
#[derive(Debug, Clone, PartialEq)]
pub struct OpSpec {
    pub method: Method,
    pub path: String,
    pub body: Option<Value>,
    pub entity: String,
    pub id: String,
    pub op: String,
    /// The home region of the record's subject.
    pub home: Option<String>,
    pub write: Option<WriteOp>,
}

/// The id a task writes an item under.
pub fn item_id(
    topo: &Topology,
    subjects: &[Subject],
    run: &str,
    task: usize,
    item: Item,
) -> String {
    let entity = &topo.entities[item.entity].name;
    match item.subject {
        Some(s) => format!("{}:{entity}-t{task}", subjects[s].name),
        None => format!("drill-{run}-{entity}-t{task}"),
    }
}

/// The `seq`-th write (1-based) of a task to an item.
pub fn write_spec(
    topo: &Topology,
    subjects: &[Subject],
    run: &str,
    task: usize,
    item: Item,
    seq: u64,
) -> OpSpec {
    let info = &topo.entities[item.entity];
    let id = item_id(topo, subjects, run, task, item);
    let base = format!("/v1/records/{}/{id}", info.name);
    let (method, path, body, op, write) = match info.merge {
        MergeKind::Lww => (
            Method::PUT,
            base,
            json!({ "value": seq }),
            "put",
            WriteOp::Set { field: None, value: seq },
        ),
        MergeKind::LwwFields => (
            Method::PATCH,
            base,
            json!({ "fields": { "seq": seq } }),
            "patch",
            WriteOp::Set { field: Some("seq".into()), value: seq },
        ),
        MergeKind::GCounter | MergeKind::PnCounter => (
            Method::POST,
            format!("{base}/ops"),
            json!({ "op": "incr", "by": 1 }),
            "incr",
            WriteOp::Incr { by: 1 },
        ),
        MergeKind::OrSet => {
            let element = format!("{run}-t{task}-{seq}");
            (
                Method::POST,
                format!("{base}/ops"),
                json!({ "op": "add", "elements": [element] }),
                "add",
                WriteOp::Add { element },
            )
        }
    };
    OpSpec {
        method,
        path,
        body: Some(body),
        entity: info.name.clone(),
        id,
        op: op.into(),
        home: item.subject.map(|s| subjects[s].home.clone()),
        write: Some(write),
    }
}

/// A read of an item.
pub fn read_spec(
    topo: &Topology,
    subjects: &[Subject],
    run: &str,
    task: usize,
    item: Item,
) -> OpSpec {
    let info = &topo.entities[item.entity];
    let id = item_id(topo, subjects, run, task, item);
    OpSpec {
        method: Method::GET,
        path: format!("/v1/records/{}/{id}", info.name),
        body: None,
        entity: info.name.clone(),
        id,
        op: "get".into(),
        home: item.subject.map(|s| subjects[s].home.clone()),
        write: None,
    }
}

/// What every task shares.
pub struct Ctx {
    pub http: Http,
    pub topo: Topology,
    pub subjects: Vec<Subject>,
    pub run: String,
    pub target: String,
    pub clock: DrillClock,
    pub journal: Arc<Journal>,
}

/// Send one request through the router as a caller in `caller`, and journal it.
pub async fn execute(ctx: &Ctx, caller: &str, spec: &OpSpec) -> (RequestRecord, Option<Answer>) {
    let url = format!("{}{}", ctx.topo.router_url, spec.path);
    let sent_s = ctx.clock.now();
    let answer = ctx
        .http
        .call(
            spec.method.clone(),
            &url,
            &[("x-tandem-client-region", caller)],
            spec.body.as_ref(),
            REQUEST_TIMEOUT,
        )
        .await;
    let done_s = ctx.clock.now();
    let normal = match ctx.topo.entity(&spec.entity) {
        Some(e) => ctx.topo.normal_region(e, spec.write.is_some(), spec.home.as_deref(), caller),
        None => caller.to_owned(),
    };
    let (status, region, route, error) = match &answer {
        Ok(a) => (Some(a.status), a.region.clone(), a.route.clone(), a.error_code()),
        Err(e) => (None, None, None, Some(e.clone())),
    };
    let rec = RequestRecord {
        sent_s,
        done_s,
        entity: spec.entity.clone(),
        id: spec.id.clone(),
        op: spec.op.clone(),
        caller: caller.to_owned(),
        home: spec.home.clone(),
        normal,
        status,
        region,
        route,
        error,
        write: spec.write.clone(),
    };
    ctx.journal.push(rec.clone(), classify(&rec, &ctx.target));
    (rec, answer.ok())
}

async fn task_loop(ctx: Arc<Ctx>, plan: TaskPlan, stop: Arc<AtomicBool>, seed: u64) {
    let mut rng = Rng::new(seed);
    let mut seq = vec![0u64; plan.items.len()];
    let mut written: BTreeSet<usize> = BTreeSet::new();
    let mut cursor = 0usize;
    let period = Duration::from_secs_f64(1.0 / plan.rate_per_s);
    // Spread the tasks' first requests over one period.
    let mut next = tokio::time::Instant::now() + period.mul_f64((seed % 1000) as f64 / 1000.0);
    let mut since_read = 0u64;
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep_until(next).await;
        if stop.load(Ordering::Relaxed) {
            break;
        }
        next += period;
        let now = tokio::time::Instant::now();
        if next < now {
            next = now;
        }
        since_read += 1;
        let read = plan.read_every > 0 && since_read >= plan.read_every && !written.is_empty();
        if read {
            since_read = 0;
        }
        let spec = if read {
            let pick = *written.iter().nth(rng.below(written.len())).expect("non-empty");
            read_spec(&ctx.topo, &ctx.subjects, &ctx.run, plan.task, plan.items[pick])
        } else {
            let i = cursor;
            cursor = (cursor + 1) % plan.items.len();
            seq[i] += 1;
            written.insert(i);
            write_spec(&ctx.topo, &ctx.subjects, &ctx.run, plan.task, plan.items[i], seq[i])
        };
        execute(&ctx, &plan.caller, &spec).await;
    }
}

/// The running tasks.
pub struct Workload {
    stop: Arc<AtomicBool>,
    handles: Vec<tokio::task::JoinHandle<()>>,
}

impl Workload {
    pub fn start(ctx: Arc<Ctx>, plans: Vec<TaskPlan>, seed: u64) -> Workload {
        let stop = Arc::new(AtomicBool::new(false));
        // Each task's seed is drawn from the run's generator.
        let mut seeds = Rng::new(seed);
        let handles = plans
            .into_iter()
            .map(|p| tokio::spawn(task_loop(ctx.clone(), p, stop.clone(), seeds.next_u64())))
            .collect();
        Workload { stop, handles }
    }

    /// Stop sending and wait for the requests in flight (each bounded by its time-out).
    pub async fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for h in &mut self.handles {
            let _ = h.await;
        }
        self.handles.clear();
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        for h in &self.handles {
            h.abort();
        }
    }
}

/// Register every subject through the router (each goes to its home region),
/// then wait until every region knows every subject, so that a failover
/// region accepts their writes. Errors name the subject and the answer.
pub async fn register_subjects(
    http: &Http,
    topo: &Topology,
    subjects: &[Subject],
    wait_max: Duration,
) -> Result<(), String> {
    for s in subjects {
        let url = format!("{}/v1/subjects/{}", topo.router_url, s.name);
        let a = http
            .call(
                Method::PUT,
                &url,
                &[("x-tandem-client-region", s.home.as_str())],
                Some(&json!({ "home_region": s.home })),
                REQUEST_TIMEOUT,
            )
            .await
            .map_err(|e| format!("registering {}: {e}", s.name))?;
        if !a.ok() {
            return Err(format!("registering {} answered {}: {}", s.name, a.status, a.body));
        }
    }
    let deadline = tokio::time::Instant::now() + wait_max;
    loop {
        let mut missing = Vec::new();
        for s in subjects {
            for r in &topo.regions {
                let url = format!("{}/v1/subjects/{}", r.url, s.name);
                let known = http.get(&url, REQUEST_TIMEOUT).await.is_ok_and(|a| a.ok());
                if !known {
                    missing.push(format!("{} at {}", s.name, r.name));
                }
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            return Err(format!(
                "subjects not known everywhere after {wait_max:?}: {}",
                missing.join(", ")
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tandem_config::Config;

    #[test]
    fn tasks_cover_every_entity_subject_and_caller() {
        let topo = Topology::from_config(&Config::example());
        let subjects = subjects("r1", &topo);
        assert_eq!(subjects.len(), 3 * SUBJECTS_PER_REGION);
        let plans = plan_tasks(&topo, &subjects, &mut Rng::new(7));
        let callers: BTreeSet<&str> = plans.iter().map(|p| p.caller.as_str()).collect();
        assert_eq!(callers.len(), 3, "callers in every region");
        for (e, info) in topo.entities.iter().enumerate() {
            let written = plans[0].items.iter().any(|i| i.entity == e);
            assert_eq!(written, !info.projection, "{} written: {written}", info.name);
        }
        // One steady task per region, only over its own subjects' counters and sets.
        let steady: Vec<&TaskPlan> = plans.iter().filter(|p| p.read_every == 0).collect();
        assert_eq!(steady.len(), 3);
        for p in steady {
            for i in &p.items {
                assert_eq!(subjects[i.subject.unwrap()].home, p.caller);
                let e = &topo.entities[i.entity];
                assert!(matches!(
                    e.merge,
                    MergeKind::PnCounter | MergeKind::GCounter | MergeKind::OrSet
                ));
            }
        }
        // Task numbers are unique, so keys have one writer each.
        let tasks: BTreeSet<usize> = plans.iter().map(|p| p.task).collect();
        assert_eq!(tasks.len(), plans.len());
    }

    #[test]
    fn specs_follow_the_merge_type() {
        let topo = Topology::from_config(&Config::example());
        let subjects = subjects("r1", &topo);
        let idx = |n: &str| topo.entities.iter().position(|e| e.name == n).unwrap();
        let eu = Some(0); // drill-r1-eu-west-0
        let cred = write_spec(
            &topo,
            &subjects,
            "r1",
            2,
            Item { entity: idx("credential"), subject: eu },
            5,
        );
        assert_eq!(cred.path, "/v1/records/credential/drill-r1-eu-west-0:credential-t2");
        assert_eq!(cred.body, Some(json!({"value": 5})));
        assert_eq!(cred.home.as_deref(), Some("eu-west"));
        let settings = Item { entity: idx("settings"), subject: eu };
        assert_eq!(read_spec(&topo, &subjects, "r1", 2, settings).home.as_deref(), Some("eu-west"));
        let cart =
            write_spec(&topo, &subjects, "r1", 2, Item { entity: idx("cart"), subject: eu }, 3);
        assert_eq!(cart.write, Some(WriteOp::Add { element: "r1-t2-3".into() }));
        assert!(cart.path.ends_with("/ops"));
        let likes =
            write_spec(&topo, &subjects, "r1", 1, Item { entity: idx("likes"), subject: None }, 3);
        assert_eq!(likes.id, "drill-r1-likes-t1");
        assert_eq!(likes.home, None);
        assert_eq!(likes.write, Some(WriteOp::Incr { by: 1 }));
    }

    #[test]
    fn rng_is_seeded() {
        let a: Vec<u64> = (0..4)
            .map({
                let mut r = Rng::new(1);
                move |_| r.next_u64()
            })
            .collect();
        let b: Vec<u64> = (0..4)
            .map({
                let mut r = Rng::new(1);
                move |_| r.next_u64()
            })
            .collect();
        assert_eq!(a, b);
        let mut v: Vec<u32> = (0..50).collect();
        Rng::new(3).shuffle(&mut v);
        let mut s = v.clone();
        s.sort();
        assert_eq!(s, (0..50).collect::<Vec<u32>>());
        assert_ne!(v, s);
    }
}
