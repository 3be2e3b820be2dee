//! The live display while the drill runs: one indicatif bar per phase (its
//! elapsed time against its planned length, and what is left), with live
//! counters of the workload and the worst replication lag. It draws to
//! stderr and hides itself when stderr is not a terminal; then each phase's
//! start and outcome are printed as plain lines instead, for logs.

use std::io::IsTerminal;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How often the bar of the running phase is redrawn.
pub const REDRAW_INTERVAL: Duration = Duration::from_millis(250);

struct Current {
    bar: ProgressBar,
    started: Instant,
    planned: Duration,
}

/// A source of the live status line.
pub type StatusFn = Arc<dyn Fn() -> String + Send + Sync>;

pub struct Progress {
    multi: MultiProgress,
    current: Arc<Mutex<Option<Current>>>,
    plain: bool,
    ticker: tokio::task::JoinHandle<()>,
}

fn style() -> ProgressStyle {
    ProgressStyle::with_template(
        "{prefix:>12.bold} [{bar:24.cyan/blue}] {elapsed:>4} of {len_h:>4}, {eta:>4} left  {msg}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .with_key("len_h", |s: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
        let _ = write!(w, "{}s", s.len().unwrap_or(0) / 1000);
    })
    .progress_chars("=> ")
}

impl Progress {
    /// A display whose running bar shows `status()` as its message.
    pub fn new(status: StatusFn) -> Progress {
        let plain = !std::io::stderr().is_terminal();
        let target =
            if plain { ProgressDrawTarget::hidden() } else { ProgressDrawTarget::stderr() };
        let multi = MultiProgress::with_draw_target(target);
        let current: Arc<Mutex<Option<Current>>> = Arc::new(Mutex::new(None));
        let c = current.clone();
        let ticker = tokio::spawn(async move {
            let mut interval = tokio::time::interval(REDRAW_INTERVAL);
            loop {
                interval.tick().await;
                let msg = status();
                if let Some(cur) = c.lock().expect("progress lock").as_ref() {
                    let elapsed = cur.started.elapsed().min(cur.planned);
                    cur.bar.set_position(elapsed.as_millis() as u64);
                    cur.bar.set_message(msg);
                }
            }
        });
        Progress { multi, current, plain, ticker }
    }

    /// Start the bar of a phase; the previous one must be finished.
    pub fn phase(&self, index: usize, name: &str, planned: Duration, capped: bool) {
        let bar = self.multi.add(ProgressBar::new(planned.as_millis().max(1) as u64));
        bar.set_style(style());
        bar.set_prefix(format!("{}. {name}", index + 1));
        if self.plain {
            let how = if capped { "at most" } else { "for" };
            eprintln!("drill: phase {} {name}: {how} {:.1} s", index + 1, planned.as_secs_f64());
        }
        *self.current.lock().expect("progress lock") =
            Some(Current { bar, started: Instant::now(), planned });
    }

    /// Finish the running phase's bar with its outcome.
    pub fn finish(&self, summary: &str) {
        if let Some(cur) = self.current.lock().expect("progress lock").take() {
            cur.bar.set_position(cur.planned.as_millis() as u64);
            cur.bar.finish_with_message(summary.to_owned());
        }
        if self.plain {
            eprintln!("drill:   {summary}");
        }
    }

    /// A line above the bars (or on stderr when they are hidden).
    pub fn println(&self, line: &str) {
        if self.plain {
            eprintln!("drill:   {line}");
        } else {
            let _ = self.multi.println(line);
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.ticker.abort();
        if let Some(cur) = self.current.lock().expect("progress lock").take() {
            cur.bar.abandon();
        }
    }
}
