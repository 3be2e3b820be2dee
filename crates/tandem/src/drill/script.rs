//! The drill from start to end: its pieces built from the settings (the
//! context every phase borrows, the traffic, the target's state, the
//! moments and results the phases hand on), the phases run in order until
//! they finish, stop, or ctrl-c interrupts them, the deployment put back when
//! they stopped half-way (a drained, isolated or killed target is restored
//! on the way out), and the outcome written. Returns the exit status.

use std::sync::Arc;

use super::context::{Context, Logbook, Moments, Results};
use super::deployment::Deployment;
use super::http::Http;
use super::journal::{DrillClock, Journal};
use super::measure::Tick;
use super::monitor::Monitor;
use super::outcome;
use super::phases::{self, Stop};
use super::plan::Topology;
use super::progress::{Progress, StatusFn};
use super::target::TargetState;
use super::traffic::Traffic;
use super::workload::{self, Ctx};
use super::{Settings, EXIT_CANNOT_RUN, EXIT_FAIL, EXIT_PASS};

/// Run the drill; returns the exit status.
pub async fn drill(settings: Settings) -> u8 {
    let topo = Topology::from_config(&settings.config).with_scheme(settings.connection.scheme);
    let http = Http::new(&settings.connection);
    let clock = DrillClock::start();
    let run = format!("{:08x}", clock.start_unix_ms as u32);
    let subjects = workload::subjects(&run, &topo);
    let journal = Arc::new(Journal::default());
    let mut traffic = Traffic::new(Arc::new(Ctx {
        http: http.clone(),
        topo: topo.clone(),
        subjects,
        run,
        target: settings.target.clone(),
        clock,
        journal: journal.clone(),
    }));
    let monitor = Monitor::start(http.clone(), topo.clone(), clock);
    let ticks = monitor.ticks.clone();
    let counters = journal.clone();
    let status: StatusFn = Arc::new(move || {
        let lag = ticks.lock().expect("ticks lock").last().and_then(Tick::max_lag).unwrap_or(0.0);
        format!("{} | max lag {lag:.1} s", counters.counters.summary())
    });
    let dep = Deployment {
        http,
        topo,
        target: settings.target.clone(),
        admin_token: settings.admin_token.clone(),
        control: settings.control.clone(),
    };
    let mut cx = Context {
        log: Logbook { progress: Progress::new(status), phases: Vec::new(), findings: Vec::new() },
        settings,
        dep,
        clock,
        journal,
        monitor,
    };
    let mut target = TargetState::default();
    let mut moments = Moments::default();
    let mut results = Results::default();
    let outcome = {
        let fut = phases::run(&mut cx, &mut traffic, &mut target, &mut moments, &mut results);
        tokio::pin!(fut);
        tokio::select! {
            r = &mut fut => r,
            _ = tokio::signal::ctrl_c() => Err(Stop::Error(anyhow::anyhow!("interrupted"))),
        }
    };
    let code = match outcome {
        Ok(()) => None,
        Err(Stop::PreCheck) => {
            cx.log.findings.push(
                "a pre-drill check failed: the drill stopped before touching the target".into(),
            );
            Some(EXIT_CANNOT_RUN)
        }
        Err(Stop::Error(e)) => {
            cx.log.progress.finish(&format!("stopped: {e:#}"));
            cx.log.findings.push(format!("the drill could not go on: {e:#}"));
            traffic.stop().await;
            target.put_back(&cx.dep, &mut cx.log.findings).await;
            Some(EXIT_CANNOT_RUN)
        }
    };
    traffic.stop().await;
    let report = outcome::report(&mut cx, &moments, &results).await;
    let written = outcome::write_outputs(&cx, &moments, &report);
    outcome::print_summary(&report, &cx.settings.out);
    if let Err(e) = written {
        eprintln!("tandem drill: cannot write the report: {e:#}");
        return EXIT_CANNOT_RUN;
    }
    code.unwrap_or(if report.verdict == "pass" { EXIT_PASS } else { EXIT_FAIL })
}
