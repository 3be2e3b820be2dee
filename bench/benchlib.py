"""The pieces of bench/run: processes we start (and only those we stop),
free loopback ports, /proc sampling of server CPU and bytes written, the
deployments under test (the HTTP floor, a lone tandem node, `tandem up` with
or without the router, Redis with an append-only file), and the clients
(wrk with bench/wrk-incr.lua, `tandem load`, redis-benchmark, the fdatasync
probe). Everything listens on 127.0.0.1; every data directory is a fresh
temporary directory on the disk under test, removed when its server stops.
"""

import json
import os
import re
import resource
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.request

STARTUP_TIMEOUT_S = 60
STOP_TIMEOUT_S = 15
CLK_TCK = os.sysconf("SC_CLK_TCK")
ENTITY = "likes"  # pn-counter, not personal, any-region: every region holds it
KEYS = 10000


def log(msg):
    print(f"[bench] {msg}", flush=True, file=__import__("sys").stderr)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- /proc ---------------------------------------------------------------


def children(pid):
    """Direct children of `pid` (every thread's list)."""
    out = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out += [int(c) for c in f.read().split()]
    except FileNotFoundError:
        pass
    return sorted(set(out))


def proc_sample(pids):
    """Summed CPU seconds (user+system) and write_bytes of `pids`."""
    cpu_s, written = 0.0, 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        cpu_s += (int(fields[11]) + int(fields[12])) / CLK_TCK
        with open(f"/proc/{pid}/io") as f:
            io = dict(line.split(": ") for line in f.read().splitlines())
        written += int(io["write_bytes"])
    return cpu_s, written


def device_stat_path(directory):
    """/sys/dev/block/M:N/stat of the block device holding `directory` (its
    whole disk when that is a partition), or None."""
    dev = os.stat(directory).st_dev
    base = os.path.realpath(f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}")
    if os.path.exists(f"{base}/partition"):
        base = os.path.realpath(f"{base}/..")
    return f"{base}/stat" if os.path.exists(f"{base}/stat") else None


def device_written(stat_path):
    """Bytes the device has written (sectors are 512 bytes in this file)."""
    if stat_path is None:
        return 0
    with open(stat_path) as f:
        return int(f.read().split()[6]) * 512


def children_cpu_s():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


# ---- processes -----------------------------------------------------------


class Proc:
    """A process we started, its output in files under `workdir`."""

    def __init__(self, name, argv, workdir, env=None):
        self.name = name
        self.out_path = os.path.join(workdir, f"{name}.out")
        self.err_path = os.path.join(workdir, f"{name}.err")
        with open(self.out_path, "w") as out, open(self.err_path, "w") as err:
            self.popen = subprocess.Popen(
                argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                env={**os.environ, **(env or {})})

    @property
    def pid(self):
        return self.popen.pid

    def wait_line(self, pattern, timeout_s=STARTUP_TIMEOUT_S):
        """The first match of `pattern` on stdout (group 1)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with open(self.out_path) as f:
                m = re.search(pattern, f.read())
            if m:
                return m.group(1)
            if self.popen.poll() is not None:
                raise RuntimeError(f"{self.name} exited at start: {self.tail()}")
            time.sleep(0.05)
        raise RuntimeError(f"{self.name}: no line matching {pattern!r} in {timeout_s}s")

    def tail(self):
        with open(self.err_path) as f:
            return f.read()[-800:]

    def stop(self):
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                log(f"{self.name} (pid {self.pid}) ignored SIGTERM; killing it")
                self.popen.kill()
                self.popen.wait()


# ---- systems under test --------------------------------------------------


class Server:
    """A running system: its URL (or Redis port), auth, the pids whose CPU
    and writes are its cost, and what stops it."""

    def __init__(self, kind, workdir):
        self.kind = kind
        self.workdir = workdir
        self.procs = []
        self.url = None
        self.auth = None  # API key (TLS runs)
        self.up = None  # tandem up's up.json
        self.config = None  # the deployment config a `tandem load` reads
        self.source_config = None  # the config as written (link latencies)
        self.redis_port = None

    def pids(self):
        pids = []
        for p in self.procs:
            pids.append(p.pid)
            pids += children(p.pid)  # tandem up's nodes and router
        return pids

    def stop(self):
        for p in reversed(self.procs):
            p.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)


def single_region_config(data_dir):
    """A deployment of one region (eu-west) with the benchmark's entity."""
    return f"""[deployment]
name = "bench"
data_dir = "{data_dir}"

[[regions]]
name = "eu-west"
jurisdiction = "EU"
listen = "127.0.0.1:{free_port()}"

[router]
listen = "127.0.0.1:{free_port()}"
default_region = "eu-west"

[entities.{ENTITY}]
merge = "pn-counter"
data_class = "content"
"""


def example_config(tandem, data_dir):
    """The built-in example deployment on free ports, data under `data_dir`."""
    text = subprocess.run([tandem, "config", "example"], check=True,
                          capture_output=True, text=True).stdout
    text = re.sub(r'(?m)^data_dir = .*$', f'data_dir = "{data_dir}"', text)
    text = re.sub(r'(?m)^listen = "127\.0\.0\.1:\d+"',
                  lambda _: f'listen = "127.0.0.1:{free_port()}"', text)
    return text


def write_api_key(data_dir):
    key = secrets.token_hex(24)
    path = os.path.join(data_dir, "api-keys")
    with open(path, "w") as f:
        f.write(f"default {key}\n")
    os.chmod(path, 0o600)
    return key


def start_floor(binary, bench_tmp):
    s = Server("floor", tempfile.mkdtemp(prefix="bench-floor.", dir=bench_tmp))
    p = Proc("http-floor", [binary, "--listen", "127.0.0.1:0"], s.workdir)
    s.procs.append(p)
    s.url = p.wait_line(r"listening on (http://\S+)")
    return s


def start_node(tandem, bench_tmp, tls):
    """One region alone (no peers), TLS with an API key or --insecure."""
    s = Server("node", tempfile.mkdtemp(prefix="bench-node.", dir=bench_tmp))
    data = os.path.join(s.workdir, "data")
    os.makedirs(data)
    cfg = os.path.join(s.workdir, "tandem.toml")
    with open(cfg, "w") as f:
        f.write(single_region_config(data))
    s.config = cfg
    argv = [tandem, "node", "--config", cfg, "--region", "eu-west", "--listen", "127.0.0.1:0"]
    if tls:
        subprocess.run([tandem, "certs", "init", "--config", cfg], check=True,
                       capture_output=True)
        s.auth = write_api_key(data)
    else:
        argv.append("--insecure")
    p = Proc("node", argv, s.workdir)
    s.procs.append(p)
    s.url = p.wait_line(r"listening on (https?://\S+)")
    return s


def start_up(tandem, bench_tmp, tls, router):
    """`tandem up`: three regions (the example deployment, its simulated link
    latencies) and, with `router`, the router; the target is the router, or
    eu-west without it."""
    s = Server("up", tempfile.mkdtemp(prefix="bench-up.", dir=bench_tmp))
    data = os.path.join(s.workdir, "data")
    os.makedirs(data)
    cfg = os.path.join(s.workdir, "tandem.toml")
    with open(cfg, "w") as f:
        f.write(example_config(tandem, data))
    s.source_config = cfg
    argv = [tandem, "up", "--config", cfg, "--data-dir", data,
            "--control", f"127.0.0.1:{free_port()}"]
    if not tls:
        argv.append("--insecure")
    if not router:
        argv.append("--no-router")
    p = Proc("up", argv, s.workdir)
    s.procs.append(p)
    up_json = os.path.join(data, "up.json")
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while not os.path.exists(up_json):
        if p.popen.poll() is not None or time.monotonic() > deadline:
            s.stop()
            raise RuntimeError(f"tandem up did not start: {p.tail()}")
        time.sleep(0.1)
    with open(up_json) as f:
        s.up = json.load(f)
    s.config = s.up["config"]
    s.url = s.up["router"] if router else s.up["regions"]["eu-west"]["url"]
    if tls:
        with open(s.up["api_keys_file"]) as f:
            s.auth = f.read().split()[1]
    return s


def start_redis(bench_tmp, fsync):
    s = Server(f"redis-{fsync}", tempfile.mkdtemp(prefix="bench-redis.", dir=bench_tmp))
    s.redis_port = free_port()
    p = Proc("redis", ["redis-server", "--port", str(s.redis_port), "--bind", "127.0.0.1",
                       "--daemonize", "no", "--appendonly", "yes", "--appendfsync", fsync,
                       "--save", "", "--dir", s.workdir], s.workdir)
    s.procs.append(p)
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while True:
        ping = subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(s.redis_port), "ping"],
                              capture_output=True, text=True)
        if ping.stdout.strip() == "PONG":
            return s
        if p.popen.poll() is not None or time.monotonic() > deadline:
            s.stop()
            raise RuntimeError(f"redis-server did not start: {p.tail()}")
        time.sleep(0.1)


# ---- clients -------------------------------------------------------------


def measured(server, device, run):
    """Runs `run()` (a client run returning a dict with `requests`) and adds
    the server's CPU and bytes written over it, the client's CPU (this
    script's waited-for children) and the device's bytes written."""
    pids = server.pids()
    cpu0, wb0 = proc_sample(pids)
    dev0, client0 = device_written(device), children_cpu_s()
    r = run()
    cpu1, wb1 = proc_sample(pids)
    dev1, client1 = device_written(device), children_cpu_s()
    n = max(r["requests"], 1)
    r.update(server_cpu_us_per_write=(cpu1 - cpu0) * 1e6 / n,
             server_cores=(cpu1 - cpu0) / r["seconds"],
             bytes_per_write=(wb1 - wb0) / n,
             device_bytes_per_write=(dev1 - dev0) / n,
             client_cpu_us_per_request=(client1 - client0) * 1e6 / n)
    return r


def wrk(url, conns, secs, lua, auth=None, threads=2):
    env = {**os.environ, "BENCH_ENTITY": ENTITY, "BENCH_KEYS": str(KEYS),
           "BENCH_AUTH": auth or ""}
    out = subprocess.run(["wrk", f"-t{threads}", f"-c{conns}", f"-d{secs}s", "--timeout", "10s",
                          "-s", lua, url], check=True, capture_output=True, text=True, env=env)
    m = re.search(r"^WRKJSON (\{.*\})$", out.stdout, re.M)
    if not m:
        raise RuntimeError(f"no WRKJSON line from wrk: {out.stdout[-500:]} {out.stderr[-500:]}")
    w = json.loads(m.group(1))
    errors = sum(w[k] for k in w if k.startswith("errors_"))
    seconds = w["duration_us"] / 1e6
    return {"requests": w["requests"] - errors, "errors": errors, "seconds": seconds,
            "writes_per_sec": (w["requests"] - errors) / seconds,
            "p50_ms": w["p50_us"] / 1e3, "p99_ms": w["p99_us"] / 1e3}


def tandem_load(tandem, server, conns, secs, warmup_s=0, rate=0):
    argv = [tandem, "load", "--target", server.url, "--clients", str(conns),
            "--duration-secs", str(secs), "--warmup-secs", str(warmup_s),
            "--workload", "incr", "--entity", ENTITY, "--keys", str(KEYS), "--json"]
    if rate:
        argv += ["--rate", str(rate)]
    if server.config:
        argv += ["--config", server.config]
    if server.auth:
        argv += ["--api-key", server.auth]
    started = time.monotonic()
    out = subprocess.run(argv, check=True, capture_output=True, text=True)
    elapsed = time.monotonic() - started
    rep = json.loads(out.stdout[out.stdout.index("{"):])
    return {"requests": rep["requests_ok"], "errors": rep["requests_failed"],
            "seconds": elapsed, "measured_seconds": secs,
            "writes_per_sec": rep["throughput_per_sec"],
            "p50_ms": rep["latency_ms_p50"], "p99_ms": rep["latency_ms_p99"]}


REDIS_CSV = re.compile(r'^"INCR","([\d.]+)","[\d.]+","[\d.]+","([\d.]+)","[\d.]+","([\d.]+)"', re.M)


def redis_benchmark(port, conns, requests):
    started = time.monotonic()
    out = subprocess.run(["redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-c", str(conns),
                          "-n", str(requests), "-t", "incr", "-r", str(KEYS), "--csv"],
                         check=True, capture_output=True, text=True)
    elapsed = time.monotonic() - started
    m = REDIS_CSV.search(out.stdout)
    if not m:
        raise RuntimeError(f"unexpected redis-benchmark output: {out.stdout[-400:]}")
    return {"requests": requests, "errors": 0, "seconds": elapsed,
            "writes_per_sec": float(m.group(1)), "p50_ms": float(m.group(2)),
            "p99_ms": float(m.group(3))}


def fsync_probe(binary, directory, iterations):
    out = subprocess.run([binary, "--dir", directory, "--iterations", str(iterations)],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


# ---- replication lag -----------------------------------------------------


def get_json(url, cafile=None):
    ctx = ssl.create_default_context(cafile=cafile) if url.startswith("https") else None
    with urllib.request.urlopen(url, timeout=10, context=ctx) as r:
        return json.load(r)


def link_lags(server):
    """Per link that carried changes: commit at the origin to durable apply
    at the peer (`/v1/status`, `commit_to_apply_ms_*`, one machine's clock)."""
    out = []
    for region, info in server.up["regions"].items():
        status = get_json(f"{info['url']}/v1/status", server.up.get("ca_file"))
        for link in status.get("peers", []):
            if link.get("commit_to_apply_samples", 0) > 0:
                out.append({"from": link["peer"], "to": region,
                            "p50_ms": link["commit_to_apply_ms_p50"],
                            "p99_ms": link["commit_to_apply_ms_p99"],
                            "samples": link["commit_to_apply_samples"]})
    return out


def link_latency_ms(config_path, a, b):
    """The simulated one-way latency between regions `a` and `b`."""
    with open(config_path) as f:
        text = f.read()
    for m in re.finditer(r'between = \["([\w-]+)", "([\w-]+)"\]\s*latency_ms = (\d+)', text):
        if {m.group(1), m.group(2)} == {a, b}:
            return int(m.group(3))
    return 0
