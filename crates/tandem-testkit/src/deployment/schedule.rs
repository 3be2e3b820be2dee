//! A seeded fault schedule over a running deployment under `tandem up`: on a
//! seeded pace, partitions of a pair, one-way cuts, heals, latency spikes
//! (restored later), `kill -9` and restart of a region or the router, drains
//! and restores, a region isolated from its peers and rejoining. The seed
//! fixes the schedule; the operating system still decides the interleaving.

use std::time::{Duration, Instant};

use tandem_sim::rng::Rng;

use super::Deployment;

/// What a fault schedule may do.
#[derive(Debug, Clone)]
pub struct FaultPlan {
    /// Pause between two faults, ms.
    pub every_ms: (u64, u64),
    /// Kill only this region (and never the router), nothing else.
    pub only_kill: Option<String>,
}

impl Deployment {
    /// Inject seeded faults until `until`, telling `record` what each step
    /// did (or why it failed); every fault is undone by
    /// [`Deployment::heal_everything`] afterwards.
    pub fn inject_faults(
        &self,
        mut rng: Rng,
        plan: &FaultPlan,
        until: Instant,
        mut record: impl FnMut(String),
    ) {
        let d = self;
        // In name order: the seed picks the same regions whatever the config's order.
        let mut regions = self.region_names();
        regions.sort_unstable();
        // Restarts and restores that are due, `(due, action, target)`.
        let mut pending: Vec<(Instant, &'static str, String)> = Vec::new();
        while Instant::now() < until {
            let now = Instant::now();
            let (due, later): (Vec<_>, Vec<_>) =
                pending.into_iter().partition(|(t, _, _)| *t <= now);
            pending = later;
            for (_, action, target) in due {
                let r = match action {
                    "start" => d.try_process(&target, "start"),
                    "restore" => d.try_router_admin(&target, "restore"),
                    "rejoin" => d.try_node_admin(&target, "rejoin").map(|_| ()),
                    "unslow" => {
                        let (a, b) = target.split_once('>').expect("link");
                        d.try_latency(a, b, d.config().link_latency_ms(a, b))
                    }
                    _ => unreachable!("action {action}"),
                };
                record(format!(
                    "{action} {target}{}",
                    r.err().map(|e| format!(" ({e})")).unwrap_or_default()
                ));
            }
            let a = *rng.pick(&regions);
            let b = loop {
                let b = *rng.pick(&regions);
                if b != a {
                    break b;
                }
            };
            let down_now = pending.iter().any(|(_, act, _)| *act == "start");
            let result = if let Some(victim) = &plan.only_kill {
                if down_now {
                    Ok("(waiting for the restart)".to_string())
                } else {
                    d.try_process(victim, "kill").map(|()| {
                        pending.push((
                            Instant::now() + ms(rng.range(800, 2_000)),
                            "start",
                            victim.clone(),
                        ));
                        format!("kill -9 {victim}")
                    })
                }
            } else {
                match rng.below(12) {
                    0 | 1 => d
                        .try_link(a, b, "cut")
                        .and_then(|()| d.try_link(b, a, "cut"))
                        .map(|()| format!("partition {a} <-> {b}")),
                    2 => d.try_link(a, b, "cut").map(|()| format!("cut one way {a} -> {b}")),
                    3 => d.try_link(a, b, "heal").map(|()| format!("heal {a} -> {b}")),
                    4 => d.try_link("*", "*", "heal").map(|()| "heal every link".to_string()),
                    5 => {
                        let extra = rng.range(200, 1_500);
                        d.try_latency(a, b, extra).map(|()| {
                            pending.push((
                                Instant::now() + ms(rng.range(1_000, 4_000)),
                                "unslow",
                                format!("{a}>{b}"),
                            ));
                            format!("latency {a} -> {b} {extra} ms")
                        })
                    }
                    6 | 7 if !down_now => d.try_process(a, "kill").map(|()| {
                        pending.push((
                            Instant::now() + ms(rng.range(1_000, 4_000)),
                            "start",
                            a.to_string(),
                        ));
                        format!("kill -9 {a}")
                    }),
                    8 if !down_now => d.try_process("router", "kill").map(|()| {
                        pending.push((
                            Instant::now() + ms(rng.range(500, 2_500)),
                            "start",
                            "router".into(),
                        ));
                        "kill -9 router".to_string()
                    }),
                    9 | 10 => d.try_router_admin(a, "drain").map(|()| {
                        pending.push((
                            Instant::now() + ms(rng.range(1_000, 5_000)),
                            "restore",
                            a.to_string(),
                        ));
                        format!("drain {a}")
                    }),
                    11 => d.try_node_admin(a, "isolate").map(|_| {
                        pending.push((
                            Instant::now() + ms(rng.range(1_000, 4_000)),
                            "rejoin",
                            a.to_string(),
                        ));
                        format!("isolate {a}")
                    }),
                    _ => Ok("(nothing)".to_string()),
                }
            };
            match result {
                Ok(what) => record(what),
                Err(e) => record(format!("fault failed: {e}")),
            }
            std::thread::sleep(ms(rng.range(plan.every_ms.0, plan.every_ms.1)));
        }
        for (_, action, target) in pending {
            record(format!("(left to the heal: {action} {target})"));
        }
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}
