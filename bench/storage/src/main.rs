//! `storage-layout`: the storage-layout measurement of issue 15 item 3. For
//! each layout of [`layouts`] (redb as tandem-store uses it, fjall, an
//! append-only log with group fdatasync) and each batch size, it runs the
//! node's group-commit pattern for `--secs` seconds on a fresh directory:
//! pick `batch` random counter ids out of `--keys`, read their records, apply
//! an increment to each (decode, apply, encode, as the engine does), write
//! every record and its log entry, durable before the next batch starts.
//! The store is prefilled with every id first, so the timed part updates
//! existing records (the steady state of a node) rather than inserting.
//!
//! Per run: writes/s, the time of one batch (median, p99), CPU per write
//! (`/proc/self/stat`, all threads: fjall's flushes count), bytes written per
//! write by this process (`/proc/self/io` `write_bytes`: page-granular, what
//! the page cache sends to the disk), the same after the layout settled
//! (fjall's memtable flushes of the timed writes), and the device's bytes per
//! write (`/sys/dev/block/.../stat`: with the file system's journal, and with
//! whatever else wrote to that disk meanwhile). Rounds are interleaved;
//! the table shows medians (min–max for writes/s). The raw runs go to
//! `--json` when given.
//!
//!     storage-layout --dir /tmp --secs 5 --rounds 3 --batches 1,16,128

mod layouts;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use layouts::{Layout, ENTITY, REGION};
use tandem_clock::Hlc;
use tandem_engine::model::{ChangeOrigin, StoredRecord};
use tandem_engine::store::Put;
use tandem_merge::{MergeKind, Op, State};

/// Puts per commit while prefilling (the node's `commit_batch_max`).
const PREFILL_BATCH: usize = 1024;

#[derive(Parser, Debug)]
#[command(
    about = "The node's batch-then-durable write pattern on redb, fjall and an append-only log"
)]
struct Args {
    /// A directory on the disk to measure (fresh subdirectories, removed after).
    #[arg(long, default_value = "/tmp")]
    dir: PathBuf,
    /// Timed seconds per run.
    #[arg(long, default_value_t = 5)]
    secs: u64,
    /// Interleaved rounds (medians are of these).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Writes per durable batch, comma-separated.
    #[arg(long, default_value = "1,16,128", value_delimiter = ',')]
    batches: Vec<usize>,
    /// Layouts, comma-separated: redb, fjall, log, redb-wal.
    #[arg(long, default_value = "redb,fjall,log,redb-wal", value_delimiter = ',')]
    layouts: Vec<String>,
    /// Distinct counter ids.
    #[arg(long, default_value_t = 10_000)]
    keys: u64,
    /// Write every run's numbers here as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// splitmix64: a fixed, portable sequence per seed (a benchmark's ids need
/// no more than that).
struct Ids(u64);

impl Ids {
    fn next(&mut self, keys: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) % keys
    }
}

/// A local HLC: wall time, with a logical counter while it stands still.
struct Clock {
    last: Hlc,
}

impl Clock {
    fn tick(&mut self) -> Hlc {
        let wall_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        self.last = if wall_ms > self.last.wall_ms {
            Hlc::new(wall_ms, 0)
        } else {
            Hlc::new(self.last.wall_ms, self.last.logical + 1)
        };
        self.last
    }
}

/// One batch as the writer makes it: read, apply `incr 1` to each id (later
/// ids seeing earlier ones of the same batch), commit.
fn write_batch(layout: &mut dyn Layout, ids: &[String], clock: &mut Clock) -> anyhow::Result<()> {
    let found = layout.get(ids)?;
    let mut view: BTreeMap<&str, StoredRecord> = BTreeMap::new();
    let mut puts = Vec::with_capacity(ids.len());
    for (id, stored) in ids.iter().zip(found) {
        let mut record = match view.remove(id.as_str()).or(stored) {
            Some(r) => r,
            None => StoredRecord { state: State::new(MergeKind::PnCounter), updated_at_ms: 0 },
        };
        let hlc = clock.tick();
        record.state.apply(&Op::Incr(1), REGION, hlc).context("apply incr")?;
        record.updated_at_ms = hlc.wall_ms;
        puts.push(Put {
            entity: ENTITY.to_owned(),
            id: id.clone(),
            record: record.clone(),
            origin: ChangeOrigin {
                origin: REGION.to_owned(),
                origin_seq: None,
                committed_at_ms: hlc.wall_ms,
                logged_at_ms: hlc.wall_ms,
            },
            delta: None,
        });
        view.insert(id, record);
    }
    layout.commit(&puts)
}

// ---- /proc and /sys ---------------------------------------------------------

/// CPU seconds (user + system, every thread) of this process.
fn cpu_s() -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    let fields: Vec<&str> =
        stat.rsplit_once(')').context("/proc/self/stat")?.1.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    // USER_HZ is 100 on every Linux the project runs on (sysconf needs libc).
    Ok(ticks as f64 / 100.0)
}

fn write_bytes() -> anyhow::Result<u64> {
    let io = std::fs::read_to_string("/proc/self/io")?;
    let line = io.lines().find_map(|l| l.strip_prefix("write_bytes: ")).context("/proc/self/io")?;
    Ok(line.trim().parse()?)
}

/// `/sys/.../stat` of the whole disk holding `dir`.
fn device_stat(dir: &Path) -> Option<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let dev = std::fs::metadata(dir).ok()?.dev();
    let (major, minor) =
        ((dev >> 8) & 0xfff | ((dev >> 32) & !0xfff), (dev & 0xff) | ((dev >> 12) & !0xff));
    let mut base = std::fs::canonicalize(format!("/sys/dev/block/{major}:{minor}")).ok()?;
    if base.join("partition").exists() {
        base.pop();
    }
    Some(base.join("stat")).filter(|p| p.exists())
}

fn device_written(stat: Option<&Path>) -> u64 {
    stat.and_then(|p| std::fs::read_to_string(p).ok())
        .and_then(|s| s.split_whitespace().nth(6).and_then(|v| v.parse::<u64>().ok()))
        .map_or(0, |sectors| sectors * 512)
}

// ---- runs ---------------------------------------------------------------------

#[derive(Debug, Clone, serde::Serialize)]
struct Run {
    layout: String,
    batch: usize,
    round: usize,
    writes: u64,
    writes_per_sec: f64,
    batch_us_median: u64,
    batch_us_p99: u64,
    cpu_us_per_write: f64,
    bytes_per_write: f64,
    bytes_per_write_settled: f64,
    device_bytes_per_write: f64,
}

fn percentile(sorted: &[u64], q: f64) -> u64 {
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn run_one(args: &Args, name: &str, batch: usize, round: usize) -> anyhow::Result<Run> {
    let dir = args.dir.join(format!("storage-layout-{}-{name}-{batch}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let device = device_stat(&args.dir);
    let mut layout = layouts::open(name, &dir)?;
    let mut clock = Clock { last: Hlc::new(0, 0) };
    let all: Vec<String> = (0..args.keys).map(|n| format!("load:{n}")).collect();
    for chunk in all.chunks(PREFILL_BATCH) {
        write_batch(layout.as_mut(), chunk, &mut clock)?;
    }
    layout.settle()?;

    let mut rng = Ids(0x5eed ^ ((round as u64) << 32) ^ batch as u64);
    let mut ids = Vec::with_capacity(batch);
    let mut batch_us = Vec::new();
    let (cpu0, wb0, dev0) = (cpu_s()?, write_bytes()?, device_written(device.as_deref()));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.secs);
    let mut writes = 0u64;
    while Instant::now() < deadline {
        ids.clear();
        ids.extend((0..batch).map(|_| all[rng.next(args.keys) as usize].clone()));
        let t = Instant::now();
        write_batch(layout.as_mut(), &ids, &mut clock)?;
        batch_us.push(t.elapsed().as_micros() as u64);
        writes += batch as u64;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let (cpu1, wb1, dev1) = (cpu_s()?, write_bytes()?, device_written(device.as_deref()));
    layout.settle()?;
    let wb2 = write_bytes()?;
    drop(layout);
    std::fs::remove_dir_all(&dir).with_context(|| format!("remove {}", dir.display()))?;
    batch_us.sort_unstable();
    let per = |x: f64| x / writes as f64;
    Ok(Run {
        layout: name.to_owned(),
        batch,
        round,
        writes,
        writes_per_sec: writes as f64 / elapsed,
        batch_us_median: percentile(&batch_us, 0.5),
        batch_us_p99: percentile(&batch_us, 0.99),
        cpu_us_per_write: per((cpu1 - cpu0) * 1e6),
        bytes_per_write: per((wb1 - wb0) as f64),
        bytes_per_write_settled: per((wb2 - wb0) as f64),
        device_bytes_per_write: per((dev1 - dev0) as f64),
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn table(args: &Args, runs: &[Run]) -> String {
    let mut out = String::from(
        "| layout | batch | writes/s | batch µs p50 / p99 | CPU µs/write | B written/write | \
         … after settling | device B/write |\n|---|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for &batch in &args.batches {
        for name in &args.layouts {
            let rs: Vec<&Run> =
                runs.iter().filter(|r| r.batch == batch && &r.layout == name).collect();
            if rs.is_empty() {
                continue;
            }
            let m = |f: &dyn Fn(&Run) -> f64| median(rs.iter().map(|r| f(r)).collect());
            let w: Vec<f64> = rs.iter().map(|r| r.writes_per_sec).collect();
            let (lo, hi) =
                (w.iter().copied().fold(f64::MAX, f64::min), w.iter().copied().fold(0.0, f64::max));
            out += &format!(
                "| {name} | {batch} | {:.0} ({lo:.0}–{hi:.0}) | {:.0} / {:.0} | {:.1} | {:.0} | {:.0} | {:.0} |\n",
                m(&|r| r.writes_per_sec),
                m(&|r| r.batch_us_median as f64),
                m(&|r| r.batch_us_p99 as f64),
                m(&|r| r.cpu_us_per_write),
                m(&|r| r.bytes_per_write),
                m(&|r| r.bytes_per_write_settled),
                m(&|r| r.device_bytes_per_write),
            );
        }
    }
    out
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(
        args.keys > 0 && args.rounds > 0 && args.secs > 0,
        "--keys, --rounds and --secs must be positive"
    );
    anyhow::ensure!(args.batches.iter().all(|&b| b > 0), "batch sizes must be positive");
    let mut runs = Vec::new();
    for round in 1..=args.rounds {
        for &batch in &args.batches {
            for name in &args.layouts {
                let run = run_one(&args, name, batch, round)?;
                eprintln!(
                    "round {round} {name} batch {batch}: {:.0} writes/s, {:.0} B/write ({:.0} settled), {:.1} µs CPU/write",
                    run.writes_per_sec, run.bytes_per_write, run.bytes_per_write_settled, run.cpu_us_per_write
                );
                runs.push(run);
            }
        }
    }
    print!("{}", table(&args, &runs));
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&runs)?)
            .with_context(|| format!("write {}", path.display()))?;
    }
    Ok(())
}
