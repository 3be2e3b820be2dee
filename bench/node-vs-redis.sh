#!/usr/bin/env bash
# Durable-write benchmark of BENCHMARKS.md: one tandem region (`tandem node`,
# durable before it acknowledges) against Redis with an append-only file, on
# the same machine and the same disk, at the same client counts.
#
#   redis-server --appendfsync always    fsync before the reply (per event-loop batch)
#   redis-server --appendfsync everysec  fsync once a second (up to ~1 s of acked writes lost)
#   tandem node                          fsync before the reply (group commit)
#
# Workload on both: SET / PUT of a 100-byte value over 10 000 random keys,
# closed loop, C clients each with one request in flight (redis-benchmark
# without -P; `tandem load`).
#
# Usage (Debian, as root when Redis must be installed):
#   bench/node-vs-redis.sh
# Environment:
#   TANDEM_BIN=path     use this tandem binary instead of `cargo build --release -p tandem`
#   CLIENTS="16 64"     client counts
#   DURATION_SECS=10    measured seconds per run
#   BENCH_TMPDIR=dir    where data dirs go (default $TMPDIR or /tmp); must be a real
#                       disk, not tmpfs, or fsync costs nothing
#   KEEP_TMP=1          keep the data dirs and logs
# Output: a markdown table on stdout, raw numbers in bench/results/node-vs-redis-<date>.json.
set -euo pipefail

CLIENTS=${CLIENTS:-"16 64"}
DURATION_SECS=${DURATION_SECS:-10}
VALUE_BYTES=100
KEYS=10000
STARTUP_TIMEOUT_SECS=30
STOP_TIMEOUT_SECS=15
# redis-benchmark has no duration flag: a calibration run of this many requests
# measures the rate, then the real run asks for rate x DURATION_SECS requests.
CALIBRATION_REQUESTS=10000
REQUESTS_MAX=20000000
# The CSV header redis-benchmark 7 prints with --csv; anything else is refused
# (older versions print only "test","rps").
REDIS_CSV_HEADER='"test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"'

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

log() { printf '%s\n' "$*" >&2; }
die() { log "node-vs-redis: $*"; exit 1; }

# ---- processes and temp dirs we started, cleaned up on any exit --------------
pids=()
tmpdirs=()
cleanup() {
    local pid dir
    for pid in "${pids[@]}"; do
        if kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid" 2>/dev/null || true
            wait "$pid" 2>/dev/null || true
        fi
    done
    if [[ "${KEEP_TMP:-0}" != 1 ]]; then
        for dir in "${tmpdirs[@]}"; do rm -rf -- "$dir"; done
    elif ((${#tmpdirs[@]} > 0)); then
        log "kept: ${tmpdirs[*]}"
    fi
}
trap cleanup EXIT

forget_pid() {
    local keep=() p
    for p in "${pids[@]}"; do [[ "$p" == "$1" ]] || keep+=("$p"); done
    pids=("${keep[@]}")
}

# Stops a process we started: SIGTERM, then SIGKILL after STOP_TIMEOUT_SECS.
stop_pid() {
    local pid=$1 what=$2 waited=0
    kill -TERM "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null; do
        if ((waited >= STOP_TIMEOUT_SECS * 10)); then
            log "$what (pid $pid) ignored SIGTERM for ${STOP_TIMEOUT_SECS}s; killing it"
            kill -KILL "$pid" 2>/dev/null || true
            break
        fi
        sleep 0.1
        waited=$((waited + 1))
    done
    wait "$pid" 2>/dev/null || true
    forget_pid "$pid"
}

# The helpers below return through globals, not stdout: a command
# substitution is a subshell, where `die` would not stop the script and the
# pids/tmpdirs it records would not reach the cleanup trap.

# Sets $new_dir to a fresh temp dir under $bench_tmp.
new_tmpdir() {
    new_dir=$(mktemp -d "$bench_tmp/node-vs-redis.XXXXXX")
    tmpdirs+=("$new_dir")
}

# Sets $free_port to a loopback TCP port nobody listens on (connecting to it
# is refused). Racy in principle; the server refuses to start if it lost.
free_port() {
    local _ candidate
    for _ in $(seq 1 200); do
        candidate=$((20000 + RANDOM % 40000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$candidate") 2>/dev/null; then
            free_port=$candidate
            return 0
        fi
    done
    die "no free loopback port found"
}

json_string() { # $1 as a JSON string literal
    local s=${1//\\/\\\\}
    s=${s//\"/\\\"}
    printf '"%s"' "$s"
}

# ---- prerequisites -----------------------------------------------------------
if ! command -v redis-server >/dev/null || ! command -v redis-benchmark >/dev/null \
    || ! command -v redis-cli >/dev/null; then
    [[ $EUID -eq 0 ]] || die "redis-server/redis-tools missing; run as root to install them with apt-get"
    log "installing redis-server and redis-tools"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server redis-tools >&2
fi

if [[ -z "${TANDEM_BIN:-}" ]]; then
    log "building tandem (cargo build --release -p tandem)"
    (cd "$repo" && cargo build --release -p tandem >&2)
    TANDEM_BIN="${CARGO_TARGET_DIR:-$repo/target}/release/tandem"
    [[ "$TANDEM_BIN" = /* ]] || TANDEM_BIN="$repo/$TANDEM_BIN"
fi
[[ -x "$TANDEM_BIN" ]] || die "TANDEM_BIN=$TANDEM_BIN is not an executable"

bench_tmp=${BENCH_TMPDIR:-${TMPDIR:-/tmp}}
mkdir -p "$bench_tmp"
fs_type=$(findmnt -n -o FSTYPE -T "$bench_tmp" 2>/dev/null || df --output=fstype "$bench_tmp" | tail -n1)
if [[ "$fs_type" == tmpfs || "$fs_type" == ramfs ]]; then
    log "WARNING: $bench_tmp is on $fs_type: fsync is free there and the numbers mean nothing;"
    log "         set BENCH_TMPDIR to a directory on a real disk"
fi

cpu_model=$(lscpu | sed -n 's/^Model name:[[:space:]]*//p' | head -n1)
cpus=$(nproc)
redis_version=$(redis-server --version | sed -n 's/.*v=\([^ ]*\).*/\1/p')
kernel=$(uname -r)
run_date=$(date -u +%Y-%m-%d)

# ---- Redis -------------------------------------------------------------------
# Sets $csv_rps, $csv_p50, $csv_p99 from one redis-benchmark --csv output file.
parse_redis_csv() {
    local file=$1 header row test max
    header=$(sed -n 1p "$file" | tr -d '\r')
    [[ "$header" == "$REDIS_CSV_HEADER" ]] \
        || die "unexpected redis-benchmark CSV header in $file: $header (want $REDIS_CSV_HEADER)"
    row=$(sed -n 2p "$file" | tr -d '"\r')
    IFS=, read -r test csv_rps _ _ csv_p50 _ csv_p99 max <<<"$row"
    [[ "$test" == SET && -n "$max" ]] || die "unexpected redis-benchmark CSV row in $file: $row"
}

# Runs one Redis configuration; sets $run_rps, $run_p50, $run_p99, $run_requests.
bench_redis() {
    local clients=$1 fsync=$2 dir port pid waited=0 n
    new_tmpdir
    dir=$new_dir
    free_port
    port=$free_port
    redis-server --port "$port" --bind 127.0.0.1 --daemonize no \
        --appendonly yes --appendfsync "$fsync" --save "" --dir "$dir" \
        --logfile "$dir/redis.log" >/dev/null 2>&1 &
    pid=$!
    pids+=("$pid")
    until [[ "$(redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null)" == PONG ]]; do
        kill -0 "$pid" 2>/dev/null || die "redis-server exited at start; see $dir/redis.log"
        ((waited < STARTUP_TIMEOUT_SECS * 10)) || die "redis-server did not answer PING in ${STARTUP_TIMEOUT_SECS}s"
        sleep 0.1
        waited=$((waited + 1))
    done

    # Calibration, which also warms the server up (as tandem load's warm-up does).
    redis-benchmark -h 127.0.0.1 -p "$port" -c "$clients" -n "$CALIBRATION_REQUESTS" \
        -t set -d "$VALUE_BYTES" -r "$KEYS" --csv >"$dir/calibration.csv" 2>"$dir/calibration.err" \
        || die "redis-benchmark failed: $(tail -n5 "$dir/calibration.err")"
    parse_redis_csv "$dir/calibration.csv"
    n=$(awk -v rps="$csv_rps" -v secs="$DURATION_SECS" -v lo="$CALIBRATION_REQUESTS" -v hi="$REQUESTS_MAX" \
        'BEGIN { n = int(rps * secs); if (n < lo) n = lo; if (n > hi) n = hi; print n }')
    log "redis appendfsync=$fsync clients=$clients: $n requests (calibrated at $csv_rps/s)"
    redis-benchmark -h 127.0.0.1 -p "$port" -c "$clients" -n "$n" \
        -t set -d "$VALUE_BYTES" -r "$KEYS" --csv >"$dir/run.csv" 2>"$dir/run.err" \
        || die "redis-benchmark failed: $(tail -n5 "$dir/run.err")"
    parse_redis_csv "$dir/run.csv"
    run_rps=$csv_rps run_p50=$csv_p50 run_p99=$csv_p99 run_requests=$n

    redis-cli -h 127.0.0.1 -p "$port" shutdown nosave >/dev/null 2>&1 || true
    stop_pid "$pid" redis-server
}

# ---- tandem ------------------------------------------------------------------
# Sets $number to a top-level number of the JSON report of `tandem load --json`
# (serde_json's pretty form: one `"key": value,` per line).
report_number() {
    local key=$1 file=$2
    number=$(sed -n "s/^[[:space:]]*\"$key\":[[:space:]]*\([-0-9.eE+]*\),\{0,1\}[[:space:]]*$/\1/p" "$file" | head -n1)
    [[ -n "$number" ]] || die "no number $key in $file: $(head -c 300 "$file")"
}

# Runs one tandem node; sets $run_rps, $run_p50, $run_p99, $run_ok,
# $run_failed and $run_report (the whole JSON report on one line).
bench_tandem() {
    local clients=$1 dir cfg pid waited=0 url
    new_tmpdir
    dir=$new_dir
    cfg="$dir/tandem.toml"
    "$TANDEM_BIN" config example >"$cfg"
    sed -i "s|^data_dir = \"./data\"|data_dir = \"$dir/data\"|" "$cfg"
    grep -qF "data_dir = \"$dir/data\"" "$cfg" || die "could not rewrite data_dir in $cfg"

    : >"$dir/node.out" # exists before the background start races to create it
    "$TANDEM_BIN" node --config "$cfg" --region eu-west --listen 127.0.0.1:0 \
        >"$dir/node.out" 2>"$dir/node.err" &
    pid=$!
    pids+=("$pid")
    url=
    while [[ -z "$url" ]]; do
        url=$(sed -n 's|^tandem node eu-west listening on \(http://[^[:space:]]*\).*$|\1|p' "$dir/node.out" | head -n1)
        [[ -n "$url" ]] && break
        kill -0 "$pid" 2>/dev/null || die "tandem node exited at start; see $dir/node.err: $(tail -n5 "$dir/node.err")"
        ((waited < STARTUP_TIMEOUT_SECS * 10)) || die "tandem node printed no listening line in ${STARTUP_TIMEOUT_SECS}s"
        sleep 0.1
        waited=$((waited + 1))
    done
    log "tandem node at $url, clients=$clients: ${DURATION_SECS}s"

    "$TANDEM_BIN" load --target "$url" --clients "$clients" --duration-secs "$DURATION_SECS" \
        --workload put --entity article --keys "$KEYS" --value-bytes "$VALUE_BYTES" --json \
        >"$dir/load.json" 2>"$dir/load.err" \
        || die "tandem load failed: $(tail -n5 "$dir/load.err")"
    stop_pid "$pid" "tandem node"

    report_number throughput_per_sec "$dir/load.json"; run_rps=$number
    report_number latency_ms_p50 "$dir/load.json"; run_p50=$number
    report_number latency_ms_p99 "$dir/load.json"; run_p99=$number
    report_number requests_ok "$dir/load.json"; run_ok=$number
    report_number requests_failed "$dir/load.json"; run_failed=$number
    # The report is the one JSON object on stdout; anything else is left out.
    run_report=$(sed -n '/^{$/,/^}$/p' "$dir/load.json" | tr -d '\n' | sed 's/[[:space:]][[:space:]]*/ /g')
    [[ -n "$run_report" ]] || die "no JSON report from tandem load in $dir/load.json"
    ((run_ok > 0)) || die "tandem load acknowledged no write: $run_report"
    ((run_failed == 0)) || log "WARNING: tandem load saw $run_failed failed requests: $run_report"
}

# ---- the runs ----------------------------------------------------------------
rows=()     # "system|clients|fsync|writes_per_sec|p50|p99"
json_rows=()
for c in $CLIENTS; do
    for fsync in always everysec; do
        bench_redis "$c" "$fsync"
        rows+=("redis $redis_version|$c|appendfsync $fsync|$run_rps|$run_p50|$run_p99")
        json_rows+=("{\"system\": \"redis\", \"clients\": $c, \"fsync\": \"appendfsync $fsync\", \"writes_per_sec\": $run_rps, \"latency_ms_p50\": $run_p50, \"latency_ms_p99\": $run_p99, \"requests\": $run_requests}")
    done
    bench_tandem "$c"
    rows+=("tandem node|$c|fsync before ack (group commit)|$run_rps|$run_p50|$run_p99")
    json_rows+=("{\"system\": \"tandem\", \"clients\": $c, \"fsync\": \"before ack (group commit)\", \"writes_per_sec\": $run_rps, \"latency_ms_p50\": $run_p50, \"latency_ms_p99\": $run_p99, \"requests_ok\": $run_ok, \"requests_failed\": $run_failed, \"report\": $run_report}")
done

# ---- report ------------------------------------------------------------------
printf '\n## Durable writes: tandem node vs Redis (%s)\n\n' "$run_date"
printf -- '- CPU: %s, %s cores (nproc), kernel %s\n' "$cpu_model" "$cpus" "$kernel"
printf -- '- Redis %s; data on %s (%s)\n' "$redis_version" "$bench_tmp" "$fs_type"
printf -- '- %s-byte values over %s keys, closed loop, %s s per run\n\n' "$VALUE_BYTES" "$KEYS" "$DURATION_SECS"
printf '| system | clients | fsync policy | writes/s | p50 ms | p99 ms |\n'
printf '|---|---:|---|---:|---:|---:|\n'
for row in "${rows[@]}"; do
    IFS='|' read -r system clients fsync rps p50 p99 <<<"$row"
    printf '| %s | %s | %s | %.0f | %.3f | %.3f |\n' "$system" "$clients" "$fsync" "$rps" "$p50" "$p99"
done

mkdir -p "$repo/bench/results"
out="$repo/bench/results/node-vs-redis-$run_date.json"
{
    printf '{\n  "date": "%s",\n' "$run_date"
    printf '  "machine": {"cpu_model": %s, "nproc": %s, "kernel": %s, "filesystem": %s},\n' \
        "$(json_string "$cpu_model")" "$cpus" "$(json_string "$kernel")" "$(json_string "$fs_type")"
    printf '  "redis_version": %s,\n' "$(json_string "$redis_version")"
    printf '  "tandem_bin": %s,\n' "$(json_string "$TANDEM_BIN")"
    printf '  "duration_secs": %s, "value_bytes": %s, "keys": %s,\n' "$DURATION_SECS" "$VALUE_BYTES" "$KEYS"
    printf '  "results": [\n'
    for i in "${!json_rows[@]}"; do
        sep=','
        ((i == ${#json_rows[@]} - 1)) && sep=''
        printf '    %s%s\n' "${json_rows[$i]}" "$sep"
    done
    printf '  ]\n}\n'
} >"$out"
printf '\nraw numbers: %s\n' "${out#"$repo"/}"
