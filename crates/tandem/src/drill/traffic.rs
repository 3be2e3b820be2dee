//! The drill's traffic through the router, all of it journaled: the synthetic
//! workload (started in the pre-drill phase, stopped before the post-drill
//! checks), the Time-to-Route probes (from the isolation on), and the checks'
//! own smoke writes, each read back once it was acknowledged.

use std::sync::Arc;
use std::time::Duration;

use super::journal::RequestRecord;
use super::probes;
use super::workload::{self, Ctx, Item, Subject, TaskPlan, Workload};

pub(super) struct Traffic {
    /// What the workload's tasks, the probes and the smoke writes share.
    pub(super) ctx: Arc<Ctx>,
    workload: Option<Workload>,
    /// The Time-to-Route probes, from the isolation on.
    probes: Option<tokio::task::JoinHandle<()>>,
    /// Smoke writes so far (each one is a task of its own).
    smoke_n: usize,
}

impl Traffic {
    pub(super) fn new(ctx: Arc<Ctx>) -> Traffic {
        Traffic { ctx, workload: None, probes: None, smoke_n: 0 }
    }

    /// The drill's subjects, homed in every region.
    pub(super) fn subjects(&self) -> &[Subject] {
        &self.ctx.subjects
    }

    pub(super) fn start_workload(&mut self, plans: Vec<TaskPlan>, seed: u64) {
        self.workload = Some(Workload::start(self.ctx.clone(), plans, seed));
    }

    /// Probe the target's traffic every 100 ms until a surviving region
    /// serves it (Time-to-Route), for at most `window` from now.
    pub(super) fn start_probes(&mut self, window: Duration) {
        let ctx = &self.ctx;
        let specs = probes::probe_specs(&ctx.topo, &ctx.subjects, &ctx.run, &ctx.target);
        let until_s = ctx.clock.now() + window.as_secs_f64();
        self.probes =
            Some(tokio::spawn(probes::probe_until_rerouted(self.ctx.clone(), specs, until_s)));
    }

    /// Stop the workload (waiting for the requests in flight) and the probes.
    pub(super) async fn stop(&mut self) {
        if let Some(w) = self.workload.as_mut() {
            w.stop().await;
        }
        if let Some(p) = self.probes.take() {
            p.abort();
        }
    }

    /// A smoke write (and read back) through the router for a subject homed
    /// in `home`, by a caller in `caller`. Returns the write's and the read's
    /// records; `None` when the config has no subject or entity to try.
    pub(super) async fn smoke(
        &mut self,
        home: &str,
        caller: &str,
    ) -> Option<(RequestRecord, Option<RequestRecord>)> {
        let ctx = &self.ctx;
        let subject = ctx.subjects.iter().position(|s| s.home == home)?;
        let entity = ctx
            .topo
            .entities
            .iter()
            .position(|e| e.subjects && e.pinned && e.merge == tandem_config::MergeKind::Lww)
            .or_else(|| ctx.topo.entities.iter().position(|e| e.subjects && !e.projection))?;
        self.smoke_n += 1;
        // Task numbers from 1000 on are the checks' own: one writer per key.
        let task = 1000 + self.smoke_n;
        let item = Item { entity, subject: Some(subject) };
        let mut spec = workload::write_spec(&ctx.topo, &ctx.subjects, &ctx.run, task, item, 1);
        spec.op = format!("smoke-{}", spec.op);
        let (w, _) = workload::execute(ctx, caller, &spec).await;
        if !w.ok() {
            return Some((w, None));
        }
        let mut read = workload::read_spec(&ctx.topo, &ctx.subjects, &ctx.run, task, item);
        read.op = "smoke-get".into();
        let (r, _) = workload::execute(ctx, caller, &read).await;
        Some((w, Some(r)))
    }
}
