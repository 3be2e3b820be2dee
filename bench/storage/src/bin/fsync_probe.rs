//! `fsync-probe`: the fdatasync latency of the disk under `--dir`, measured
//! by `bench/run` in the same run as every throughput figure (on these VMs it
//! varies tenfold between runs, so each figure is read beside it). Two loops
//! of `--iterations` each, on a fresh file that is removed afterwards:
//!
//! - `append`: write `--bytes` at the end of the file, then `fdatasync`, as
//!   a log does (the file grows, so the sync also commits its size);
//! - `overwrite`: write `--bytes` over the same block of a preallocated
//!   file, then `fdatasync` (data only, no metadata change).
//!
//! Prints one JSON object: per loop the median, p90, p99 and max in
//! microseconds, and the syncs per second one thread reached.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::Parser;

#[derive(Parser, Debug)]
#[command(about = "fdatasync latency of the disk under --dir")]
struct Args {
    /// Directory on the disk to measure (a file is created and removed there).
    #[arg(long)]
    dir: PathBuf,
    /// Syncs per loop.
    #[arg(long, default_value_t = 500)]
    iterations: usize,
    /// Bytes written before each sync.
    #[arg(long, default_value_t = 4096)]
    bytes: usize,
}

/// Percentile `q` (0..=1) of sorted microsecond samples (nearest rank).
fn percentile(sorted: &[u64], q: f64) -> u64 {
    assert!(!sorted.is_empty(), "percentile of no samples");
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn summary(mut samples: Vec<u64>, elapsed_s: f64) -> serde_json::Value {
    samples.sort_unstable();
    serde_json::json!({
        "iterations": samples.len(),
        "median_us": percentile(&samples, 0.5),
        "p90_us": percentile(&samples, 0.9),
        "p99_us": percentile(&samples, 0.99),
        "max_us": samples[samples.len() - 1],
        "syncs_per_sec": samples.len() as f64 / elapsed_s,
    })
}

/// One loop; `append` grows the file, otherwise the first block is rewritten.
fn run_loop(args: &Args, append: bool) -> anyhow::Result<serde_json::Value> {
    let path = args.dir.join(format!("fsync-probe-{}.dat", std::process::id()));
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&path)
        .with_context(|| format!("create {}", path.display()))?;
    let block = vec![0x5au8; args.bytes];
    if !append {
        file.write_all(&block)?;
        file.sync_all()?;
    }
    let mut samples = Vec::with_capacity(args.iterations);
    let started = Instant::now();
    for _ in 0..args.iterations {
        let t = Instant::now();
        if append {
            file.write_all(&block)?;
        } else {
            file.write_all_at(&block, 0)?;
        }
        file.sync_data()?;
        samples.push(t.elapsed().as_micros() as u64);
    }
    let elapsed_s = started.elapsed().as_secs_f64();
    drop(file);
    std::fs::remove_file(&path).with_context(|| format!("remove {}", path.display()))?;
    Ok(summary(samples, elapsed_s))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(
        args.iterations > 0 && args.bytes > 0,
        "--iterations and --bytes must be positive"
    );
    let append = run_loop(&args, true)?;
    let overwrite = run_loop(&args, false)?;
    let out = serde_json::json!({ "bytes": args.bytes, "append": append, "overwrite": overwrite });
    println!("{out}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::percentile;

    #[test]
    fn nearest_rank_percentiles() {
        let s: Vec<u64> = (1..=100).collect();
        assert_eq!((percentile(&s, 0.5), percentile(&s, 0.99), percentile(&s, 1.0)), (50, 99, 100));
        assert_eq!(percentile(&[7], 0.99), 7);
    }
}
