#!/usr/bin/env bash
# Replication benchmark for BENCHMARKS.md: lag at a steady write rate over
# 40 ms simulated links, and catch-up after an isolation.
#
#   bench/replication.sh            (builds tandem in release first)
#   TANDEM_BIN=target/release/tandem RATE=200 SECS=20 CLIENTS=8 bench/replication.sh
#   (BACKLOG_KEYS=100000: the records the backlog writes to, at random)
#
# It runs `tandem up --insecure` (every link 40 ms one way), drives `tandem load` at eu-west
# at RATE writes/s of a non-personal pn-counter for SECS seconds, then reads the
# per-link lag percentiles from us-east's and eu-central's /v1/status
# (lag = commit at eu-west to durable apply at the peer, measured on one
# machine's clock). Then it isolates us-east, writes for SECS seconds as fast
# as the clients go, rejoins, and times how long us-east takes to apply the
# backlog. Needs the ports of the built-in example (7100-7103, 7199) free.
set -euo pipefail
cd "$(dirname "$0")/.."
RATE=${RATE:-200}
SECS=${SECS:-20}
LATENCY_MS=${LATENCY_MS:-40}
if [ -z "${TANDEM_BIN:-}" ]; then
  cargo build --release -p tandem >/dev/null
  TANDEM_BIN=target/release/tandem
fi
tmp=$(mktemp -d)
cleanup() { [ -n "${up_pid:-}" ] && kill -TERM "$up_pid" 2>/dev/null && wait "$up_pid" 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
"$TANDEM_BIN" config example | sed -E "s/latency_ms = [0-9]+/latency_ms = $LATENCY_MS/" > "$tmp/bench.toml"
export TANDEM_ADMIN_TOKEN=bench-token
"$TANDEM_BIN" up --config "$tmp/bench.toml" --data-dir "$tmp/data" --no-router --insecure >"$tmp/up.log" 2>&1 &
up_pid=$!
for _ in $(seq 1 300); do [ -f "$tmp/data/up.json" ] && break; sleep 0.1; done
[ -f "$tmp/data/up.json" ] || { echo "tandem up did not start"; tail -20 "$tmp/up.log"; exit 1; }
W=http://127.0.0.1:7101; C=http://127.0.0.1:7102; U=http://127.0.0.1:7103

link() { # region-url peer field
  curl -s "$1/v1/status" | python3 -c "import json,sys; d=json.load(sys.stdin); p=[x for x in d['peers'] if x['peer']=='$2'][0]; print(p['$3'])"
}

echo "== steady load: $RATE writes/s for ${SECS}s at eu-west, links ${LATENCY_MS} ms one way"
"$TANDEM_BIN" load --target $W --clients "${CLIENTS:-8}" --rate "$RATE" --duration-secs "$SECS" --warmup-secs 1 \
  --workload incr --entity likes --keys 1000 --json > "$tmp/steady.json"
sleep 1
steady_rate=$(python3 -c "import json; print(round(json.load(open('$tmp/steady.json'))['throughput_per_sec'],1))")
us_p50=$(link $U eu-west commit_to_apply_ms_p50); us_p99=$(link $U eu-west commit_to_apply_ms_p99)
c_p50=$(link $C eu-west commit_to_apply_ms_p50); c_p99=$(link $C eu-west commit_to_apply_ms_p99)
us_n=$(link $U eu-west commit_to_apply_samples)

catchup() { # label clients rate -> sets backlog_writes write_rate catchup catchup_rate ratio
  echo "== catch-up ($1): us-east isolated, eu-west writes for ${SECS}s"
  curl -s -XPOST -H "Authorization: Bearer $TANDEM_ADMIN_TOKEN" $U/v1/admin/isolate >/dev/null
  "$TANDEM_BIN" load --target $W --clients "$2" --rate "$3" --duration-secs "$SECS" --warmup-secs 0 \
    --workload incr --entity likes --keys "${BACKLOG_KEYS:-100000}" --json > "$tmp/backlog.json"
  backlog_writes=$(python3 -c "import json; print(json.load(open('$tmp/backlog.json'))['requests_ok'])")
  write_rate=$(python3 -c "import json; print(round(json.load(open('$tmp/backlog.json'))['throughput_per_sec'],1))")
  local start end
  start=$(date +%s.%N)
  curl -s -XPOST -H "Authorization: Bearer $TANDEM_ADMIN_TOKEN" $U/v1/admin/rejoin >/dev/null
  while :; do
    done_=$(curl -s $U/v1/status | python3 -c "import json,sys; d=json.load(sys.stdin); p=[x for x in d['peers'] if x['peer']=='eu-west'][0]; print(1 if p['connected'] and p['queue_depth']==0 and p['cursor']>0 else 0)")
    [ "$done_" = 1 ] && break
    sleep 0.05
  done
  end=$(date +%s.%N)
  catchup=$(python3 -c "print(round($end-$start,2))")
  catchup_rate=$(python3 -c "print(round($backlog_writes/max($end-$start,0.001),1))")
  ratio=$(python3 -c "print(round(($backlog_writes/max($end-$start,0.001))/$write_rate,1))")
}
catchup "steady ${BACKLOG_RATE:-1000}/s" 8 "${BACKLOG_RATE:-1000}"
s_writes=$backlog_writes; s_rate=$write_rate; s_catchup=$catchup; s_crate=$catchup_rate; s_ratio=$ratio
catchup "as fast as 32 clients go" 32 0

cat <<MD
| measure | value |
|---|---|
| steady write rate at eu-west | $steady_rate writes/s |
| eu-west -> eu-central lag p50 / p99 | $c_p50 ms / $c_p99 ms |
| eu-west -> us-east lag p50 / p99 | $us_p50 ms / $us_p99 ms ($us_n samples) |
| backlog at a steady rate while us-east was isolated | $s_writes writes in ${SECS} s ($s_rate writes/s) |
| its catch-up after rejoin | $s_catchup s: $s_crate writes/s, $s_ratio x the write rate |
| backlog at the node's full write rate | $backlog_writes writes in ${SECS} s ($write_rate writes/s) |
| its catch-up after rejoin | $catchup s: $catchup_rate writes/s, $ratio x the write rate |
MD
echo "machine: $(lscpu | sed -n 's/^Model name:[[:space:]]*//p'), $(nproc) cores; links ${LATENCY_MS} ms one way"
