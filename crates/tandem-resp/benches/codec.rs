//! Request parsing: tandem's bounded parser (`tandem_resp::codec::parse`)
//! against the `redis-protocol` crate (6.x, RESP2 decoder) on the same bytes,
//! the choice issue 18 asked to make by measurement. Two workloads, both as
//! redis-benchmark sends them: a pipeline of 16 `SET key:<n> <3 bytes>`
//! (`-P 16`), and one `MGET` of 100 keys. Each side parses every command of
//! the buffer into owned arguments (`redis-protocol`: owned frames, then the
//! bulk strings taken out, which is what a server needs); before timing, the
//! setup asserts that both read the same arguments.
//!
//! `cargo bench -p tandem-resp --bench codec`; results in BENCHMARKS.md.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use redis_protocol::resp2::decode::decode;
use redis_protocol::resp2::types::OwnedFrame;
use tandem_resp::codec::{encode_command, parse, Args, Limits};

const LIMITS: Limits = Limits {
    bulk_bytes_max: 1 << 20,
    args_max: 4096,
    inline_bytes_max: 64 << 10,
    command_bytes_max: 2 << 20,
};

fn pipeline_of_sets(n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..n {
        encode_command(
            &[b"SET".to_vec(), format!("key:{i:012}").into_bytes(), b"xxx".to_vec()],
            &mut out,
        );
    }
    out
}

fn mget(keys: usize) -> Vec<u8> {
    let mut args = vec![b"MGET".to_vec()];
    args.extend((0..keys).map(|i| format!("key:{i:012}").into_bytes()));
    let mut out = Vec::new();
    encode_command(&args, &mut out);
    out
}

fn with_tandem(buf: &[u8]) -> Vec<Args> {
    let (mut at, mut out) = (0, Vec::new());
    while let Some((args, used)) = parse(&buf[at..], &LIMITS).expect("valid") {
        out.push(args);
        at += used;
    }
    out
}

fn with_redis_protocol(buf: &[u8]) -> Vec<Args> {
    let (mut at, mut out) = (0, Vec::new());
    while let Some((frame, used)) = decode(&buf[at..]).expect("valid") {
        let OwnedFrame::Array(items) = frame else { panic!("a command is an array") };
        let args = items
            .into_iter()
            .map(|f| match f {
                OwnedFrame::BulkString(b) => b,
                other => panic!("an argument is a bulk string: {other:?}"),
            })
            .collect();
        out.push(args);
        at += used;
    }
    out
}

fn bench(c: &mut Criterion) {
    for (name, buf, commands) in
        [("pipeline of 16 SET", pipeline_of_sets(16), 16u64), ("MGET of 100 keys", mget(100), 1)]
    {
        assert_eq!(with_tandem(&buf), with_redis_protocol(&buf), "{name}: both read the same");
        let mut g = c.benchmark_group(name);
        g.throughput(Throughput::Elements(commands));
        g.bench_function("tandem-resp", |b| b.iter(|| with_tandem(std::hint::black_box(&buf))));
        g.bench_function("redis-protocol 6", |b| {
            b.iter(|| with_redis_protocol(std::hint::black_box(&buf)));
        });
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
