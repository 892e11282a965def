#!/usr/bin/env python3
"""Capacity per relay core, measured to saturation (issue #11). Run through loadtest/capacity.sh.

For each shape the load is stepped up until the knee: the first step with loss >= 0.1 %, a
missing stream, a participant that failed to join or was closed by the relay, or a relay p99 of
5 ms or more. Each step starts a fresh relay pinned to one core (one media worker) and runs
callrelay-loadgen pinned to another core, so that the relay, not the load generator, is what
saturates. A step whose load generator used >= 90 % of its core is *invalid*: it says nothing
about the relay, and stepping stops there (the knee is then "not reached").

Shapes (the issue's):
  meeting  R rooms x 5 publishers, audio + 3 simulcast layers, receivers ask for h
  webinar  R rooms x 1 publisher (audio + 3 layers) + 30 subscribers asking for h
  voice    R rooms x 30 audio-only participants

Reported per shape: forwarded packets/s per relay core at the knee; relay CPU-us per forwarded
packet at 25/50/80/100 % of the knee (interpolated between the measured steps, by forwarded/s);
relay and wire p50/p99/p99.9; memory per participant (relay RSS peak during the step minus its
RSS before the first join, over the participants), and beside it what one more participant
costs (the slope of that RSS growth across the steps, `memory_fit`) beyond a fixed part; the
load generator's CPU-us per packet it received. Writes capacity.json and one SVG chart per
shape (forwarded/s against relay CPU and p99) into the output directory.

Only the Python standard library: the charts are plain SVG written here.
`capacity.py --self-test` checks the arithmetic that needs no relay.
"""

import argparse
import statistics
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RELAY = os.path.join(ROOT, "target", "release", "callrelay")
LOADGEN = os.path.join(ROOT, "target", "release", "callrelay-loadgen")

# The knee: the first step that breaks one of these.
MAX_LOSS = 0.001
MAX_RELAY_P99_MS = 5.0
# A step whose load generator used this much of its core is invalid.
LOADGEN_SATURATED = 0.90

SHAPES = {
    "meeting": {
        "args": ["--publishers", "5", "--video-layers", "3", "--subscribe-layer", "h"],
        "per_room": 5,
        "rooms": [1, 2, 3, 4, 6, 8, 11, 15, 20, 27, 36],
    },
    "webinar": {
        "args": ["--publishers", "1", "--subscribers", "30", "--video-layers", "3",
                 "--subscribe-layer", "h"],
        "per_room": 31,
        "rooms": [1, 2, 3, 4, 6, 8, 11, 15, 20, 27],
    },
    "voice": {
        "args": ["--publishers", "30", "--audio-only"],
        "per_room": 30,
        "rooms": [1, 2, 3, 4, 5, 6, 8, 10, 13, 16],
    },
    # Not in the default set: voice rooms as they are, 3 of 30 talking and the others' silent
    # microphones at the DTX rate (~5 packets/s) the relay asks browsers for.
    "voice-3-talking": {
        "args": ["--publishers", "30", "--audio-only", "--talkers", "3"],
        "per_room": 30,
        "rooms": [1, 2, 4, 6, 8, 11, 15, 20, 25, 33],
    },
}


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


class RssSampler(threading.Thread):
    """Samples a process's RSS every 200 ms; keeps the peak."""

    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid = pid
        self.peak = 0
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set():
            v = rss_kib(self.pid)
            if v is None:
                return
            self.peak = max(self.peak, v)
            self.stop.wait(0.2)


def wait_http(url, proc, what, body=None):
    for _ in range(200):
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited at start (status {proc.returncode})")
        try:
            req = urllib.request.Request(url, data=body, method="POST" if body else "GET")
            with urllib.request.urlopen(req, timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not answer {url} within 20 s")


class Callrelay:
    name = "callrelay"

    def __init__(self, core, workdir):
        self.core = core
        self.workdir = workdir

    def start(self):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.data = tempfile.mkdtemp(dir=self.workdir)
        env = dict(os.environ)
        env.update({
            "CALLRELAY_MEDIA_WORKERS": "1",
            "CALLRELAY_MEDIA_PORTS": "0",
            "CALLRELAY_MEDIA_BIND_IP": "127.0.0.1",
            "CALLRELAY_LIMITS_JOIN_PER_IP_PER_MINUTE": "1000000",
            # Every participant of the loadgen comes from 127.0.0.1 and holds a signaling
            # WebSocket: the default cap of 256 connections per address would hold the 257th
            # join back until others leave (the webinar's 11-room step, 341 people).
            "CALLRELAY_HTTP_MAX_CONNECTIONS_PER_IP": "0",
            "CALLRELAY_LIMITS_JOIN_PER_USER_PER_MINUTE": "1000000",
            "CALLRELAY_LIMITS_CREATE_PER_USER_PER_MINUTE": "1000000",
            "CALLRELAY_LOG_LEVEL": os.environ.get("CALLRELAY_LOG_LEVEL", "warn"),
        })
        self.log = open(os.path.join(self.data, "relay.log"), "wb")
        self.proc = subprocess.Popen(
            ["taskset", "-c", str(self.core), RELAY, "serve", "--dev",
             "--http-addr", f"127.0.0.1:{self.port}", "--public-url", self.base,
             "--data-dir", self.data],
            env=env, stdout=subprocess.DEVNULL, stderr=self.log)
        wait_http(self.base + "/healthz", self.proc, "the relay")
        return self.proc.pid

    def loadgen_args(self):
        return ["--url", self.base, "--dev", "--relay-pid", str(self.proc.pid)]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: a drain, which ends at once with no call left
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        shutil.rmtree(self.data, ignore_errors=True)


class Janus:
    """Janus VideoRoom with one event loop on one core (capacity.sh runs this in a private
    network namespace: Janus gathers no ICE candidates on a loopback interface)."""

    name = "janus"

    def __init__(self, core, workdir):
        self.core = core
        self.workdir = workdir

    def start(self):
        lib = "/usr/lib/x86_64-linux-gnu/janus"
        conf = tempfile.mkdtemp(dir=self.workdir)
        self.conf = conf
        plugins = [p for p in os.listdir(f"{lib}/plugins")
                   if p.startswith("libjanus_") and p != "libjanus_videoroom.so"]
        transports = [p for p in os.listdir(f"{lib}/transports")
                      if p.startswith("libjanus_") and p != "libjanus_http.so"]
        self.port = free_port()
        with open(f"{conf}/janus.jcfg", "w") as f:
            f.write(f"""general: {{
	configs_folder = "{conf}"
	plugins_folder = "{lib}/plugins"
	transports_folder = "{lib}/transports"
	events_folder = "{lib}/events"
	loggers_folder = "{lib}/loggers"
	debug_level = 3
	session_timeout = 60
	# One event loop, like callrelay's one media worker on its one core.
	event_loops = 1
}}
media: {{
	rtp_port_range = "20000-60000"
}}
nat: {{
	nice_debug = false
	full_trickle = false
	ice_enforce_list = "127.0.0.1"
}}
plugins: {{
	disable = "{','.join(plugins)}"
}}
transports: {{
	disable = "{','.join(transports)}"
}}
events: {{
	broadcast = false
}}
loggers: {{
}}
""")
        with open(f"{conf}/janus.transport.http.jcfg", "w") as f:
            f.write(f"""general: {{
	json = "compact"
	base_path = "/janus"
	http = true
	ip = "127.0.0.1"
	port = {self.port}
	https = false
}}
admin: {{
	admin_http = false
}}
""")
        with open(f"{conf}/janus.plugin.videoroom.jcfg", "w") as f:
            f.write("general: {\n}\n")
        self.base = f"http://127.0.0.1:{self.port}/janus"
        self.log = open(f"{conf}/janus.log", "wb")
        self.proc = subprocess.Popen(
            ["taskset", "-c", str(self.core), "janus", "-F", conf, "-C", f"{conf}/janus.jcfg"],
            stdout=self.log, stderr=subprocess.STDOUT)
        wait_http(self.base, self.proc, "janus", body=b'{"janus":"info","transaction":"up"}')
        return self.proc.pid

    def loadgen_args(self):
        return ["--target", "janus", "--url", self.base, "--relay-pid", str(self.proc.pid)]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        shutil.rmtree(self.conf, ignore_errors=True)


def run_step(target, shape, rooms, seconds, loadgen_core, outdir):
    """One step: a fresh target, one loadgen run; returns the step's figures."""
    spec = SHAPES[shape]
    pid = target.start()
    try:
        time.sleep(0.3)
        rss_before = rss_kib(pid)
        sampler = RssSampler(pid)
        sampler.start()
        report_path = os.path.join(outdir, f"{target.name}-{shape}-{rooms}.json")
        participants = rooms * spec["per_room"]
        cmd = ["taskset", "-c", str(loadgen_core), LOADGEN, *target.loadgen_args(),
               "--rooms", str(rooms), *spec["args"], "--duration", f"{seconds}s",
               "--join-rate", "100", "--quiet", "--json", report_path]
        cmd += os.environ.get("CAPACITY_LOADGEN_ARGS", "").split()
        t0 = time.monotonic()
        done = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        wall = time.monotonic() - t0
        sampler.stop.set()
        sampler.join()
        if not os.path.exists(report_path):
            raise RuntimeError(f"loadgen wrote no report (status {done.returncode}):\n"
                               f"{done.stderr[-2000:]}")
        with open(report_path) as f:
            r = json.load(f)
    finally:
        target.stop()
    return figures(r, shape, rooms, participants, rss_before, sampler.peak, wall)


def steady_util(lg):
    st = lg.get("steady") or {}
    if st.get("relay_cpu") is not None and st.get("seconds"):
        return st["relay_cpu"] / st["seconds"]
    return None


def steady_rate(lg):
    st = lg.get("steady") or {}
    if st.get("relay_forwarded") is not None and st.get("seconds"):
        return st["relay_forwarded"] / st["seconds"]
    return None


def figures(r, shape, rooms, participants, rss_before, rss_peak, wall):
    secs = r.get("traffic_seconds") or 0.0
    relay = r.get("relay") or {}
    packets = r.get("packets") or {}
    lat = r.get("latency_ms") or {}
    loss = r.get("loss") or {}
    parts = r.get("participants") or {}
    forwarded = relay.get("packets_forwarded")
    received = packets.get("received") or 0
    # Janus reports no forwarded count: what the receivers got is what it forwarded.
    if forwarded is None:
        forwarded = received
    relay_cpu = relay.get("cpu_seconds")
    loadgen_cpu = r.get("loadgen_cpu_seconds")
    lg = r.get("loadgen") or {}
    f = {
        "shape": shape,
        "rooms": rooms,
        "participants": participants,
        "traffic_seconds": secs,
        "forwarded_per_s": forwarded / secs if secs else None,
        "received_per_s": received / secs if secs else None,
        # Over the loadgen's steady window (after the last join: no DTLS handshakes in it)
        # when there was one, else over the whole run.
        "relay_cpu_util": steady_util(lg) or (relay_cpu / secs
                                              if (relay_cpu is not None and secs) else None),
        "relay_cpu_us_per_forwarded": lg.get("relay_cpu_us_per_forwarded") or (
            relay_cpu * 1e6 / forwarded if (relay_cpu is not None and forwarded) else None),
        "forwarded_per_s_steady": steady_rate(lg),
        "relay_p50_ms": relay.get("forward_latency_ms_p50"),
        "relay_p99_ms": relay.get("forward_latency_ms_p99"),
        "relay_p999_ms": relay.get("forward_latency_ms_p999"),
        "wire_p50_ms": lat.get("p50"),
        "wire_p99_ms": lat.get("p99"),
        "wire_p999_ms": lat.get("p999"),
        "loss": loss.get("ratio"),
        "missing_streams": packets.get("missing_streams"),
        "failed_joins": parts.get("failed"),
        "closed_by_relay": sum((parts.get("closed_by_relay") or {}).values()),
        # The loadgen's own figures, over its steady window (after the joins) when it had one.
        "loadgen_cpu_util": lg.get("utilisation", (loadgen_cpu / secs)
                                   if (loadgen_cpu is not None and secs) else None),
        "loadgen_cpu_us_per_received": lg.get("cpu_us_per_received", (
            loadgen_cpu * 1e6 / received if (loadgen_cpu is not None and received) else None)),
        "loadgen_basis": lg.get("basis", "whole run"),
        "decrypt_sample": lg.get("decrypt_sample"),
        "rss_before_kib": rss_before,
        "rss_peak_kib": rss_peak,
        "kib_per_participant": ((rss_peak - rss_before) / participants
                                if (rss_before and rss_peak) else None),
        "wall_seconds": round(wall, 1),
    }
    if f["forwarded_per_s_steady"]:
        f["forwarded_per_s"] = f["forwarded_per_s_steady"]
    # Latencies over the steady window (the joins' DTLS handshakes run on the media worker and
    # put up to ~100 ms on a few packets then; the knee is about the load, not the joins),
    # the whole run's kept beside them.
    st = lg.get("steady") or {}
    # Copies per session drive (callrelay only): str0m's housekeeping is paid per drive.
    if st.get("relay_session_drives") and st.get("relay_forwarded"):
        f["copies_per_drive"] = st["relay_forwarded"] / st["relay_session_drives"]
    for src, key in ((st.get("relay_forward_latency_ms"), "relay"),
                     (st.get("wire_latency_ms"), "wire")):
        if not src:
            continue
        for p in ("p50", "p99", "p999"):
            f[f"{key}_{p}_ms_whole_run"] = f[f"{key}_{p}_ms"]
            f[f"{key}_{p}_ms"] = src.get(p)
        f["latency_basis"] = "steady"
    if f["relay_cpu_us_per_forwarded"] and f["loadgen_cpu_us_per_received"]:
        f["loadgen_to_relay_cpu_ratio"] = (f["loadgen_cpu_us_per_received"]
                                           / f["relay_cpu_us_per_forwarded"])
    f["invalid"] = (f["loadgen_cpu_util"] or 0) >= LOADGEN_SATURATED or r.get("valid") is False
    # Why, in the loadgen's words (its CPU, or connections the relay refused at its cap).
    f["invalid_reasons"] = (r.get("invalid") or ["the load generator saturated"]) \
        if f["invalid"] else []
    reasons = []
    if (f["loss"] or 0) >= MAX_LOSS:
        reasons.append(f"loss {f['loss']:.4%}")
    if f["missing_streams"]:
        reasons.append(f"{f['missing_streams']} missing streams")
    if f["failed_joins"]:
        reasons.append(f"{f['failed_joins']} failed joins")
    if f["closed_by_relay"]:
        reasons.append(f"{f['closed_by_relay']} sessions closed by the relay")
    if (f["relay_p99_ms"] or 0) >= MAX_RELAY_P99_MS:
        reasons.append(f"relay p99 {f['relay_p99_ms']:.2f} ms")
    f["over_knee"] = reasons
    return f


def interpolate(steps, fraction, knee_rate, key):
    """`key` at `fraction` of the knee's forwarded/s, linear between the measured steps."""
    want = knee_rate * fraction
    pts = sorted((s["forwarded_per_s"], s[key]) for s in steps
                 if s.get("forwarded_per_s") and s.get(key) is not None)
    if not pts:
        return None
    if want <= pts[0][0]:
        return pts[0][1]
    for (x0, y0), (x1, y1) in zip(pts, pts[1:]):
        if x0 <= want <= x1:
            return y0 + (y1 - y0) * (want - x0) / (x1 - x0) if x1 > x0 else y0
    return pts[-1][1]


def memory_fit(steps):
    """The relay's RSS growth against the participants of the steps (each step a fresh relay;
    least squares): the slope is what one more participant costs, the intercept what the relay
    touched for its first joins whatever their number (the runtime threads' heaps and huge
    pages, receive buffers, the first sessions' code paths). `kib_per_participant` of one step
    divides both by its participants, so it falls as rooms are added; the slope does not.

    Steps count if their participants all joined and their loadgen kept up; of those, the ones
    up to the knee, because past it the relay's queues hold more. When they have fewer than two
    sizes (a knee at the first step), the step past the knee is taken too, and the fit says so.
    None with fewer than two sizes even then."""
    usable = [s for s in steps
              if not s.get("invalid") and not s.get("failed_joins")
              and s.get("rss_peak_kib") and s.get("rss_before_kib")]
    under = [s for s in usable if not s.get("over_knee")]
    past_knee = len({s["participants"] for s in under}) < 2
    pts = [(s["participants"], s["rss_peak_kib"] - s["rss_before_kib"])
           for s in (usable if past_knee else under)]
    if len({x for x, _ in pts}) < 2:
        return None
    n = len(pts)
    mx = sum(x for x, _ in pts) / n
    my = sum(y for _, y in pts) / n
    slope = (sum((x - mx) * (y - my) for x, y in pts)
             / sum((x - mx) ** 2 for x, _ in pts))
    return {"marginal_kib_per_participant": slope,
            "fixed_mib": (my - slope * mx) / 1024, "steps": n,
            "includes_step_past_knee": past_knee}


def self_test():
    """Checks of the arithmetic that needs no relay (run by the CI's capacity smoke)."""
    def step(participants, delta_kib, **kw):
        return {"participants": participants, "rss_before_kib": 30_000,
                "rss_peak_kib": 30_000 + delta_kib, **kw}
    # 8 MiB touched anyway, 500 KiB per participant: the slope finds both, where the
    # per-step division gives 773 and 637 KiB.
    fit = memory_fit([step(30, 8192 + 15_000), step(60, 8192 + 30_000)])
    assert abs(fit["marginal_kib_per_participant"] - 500) < 1e-6, fit
    assert abs(fit["fixed_mib"] - 8) < 1e-6, fit
    # A step past the knee counts only when the steps under it have one size.
    past = step(90, 8192 + 60_000, over_knee=["loss"])
    fit = memory_fit([step(30, 8192 + 15_000), step(60, 8192 + 30_000), past])
    assert abs(fit["marginal_kib_per_participant"] - 500) < 1e-6, fit
    assert not fit["includes_step_past_knee"], fit
    fit = memory_fit([step(30, 8192 + 15_000), step(60, 8192 + 40_000, over_knee=["p99"])])
    assert abs(fit["marginal_kib_per_participant"] - 25_000 / 30) < 1e-6, fit
    assert fit["includes_step_past_knee"], fit
    # Steps whose loadgen saturated or whose joins failed do not count; one size is no fit.
    assert memory_fit([step(30, 20_000), step(60, 90_000, invalid=True)]) is None
    assert memory_fit([step(30, 20_000), step(60, 90_000, failed_joins=3)]) is None
    assert memory_fit([step(30, 20_000), step(30, 21_000)]) is None
    assert interpolate([{"forwarded_per_s": 100.0, "k": 10.0},
                        {"forwarded_per_s": 200.0, "k": 6.0}], 0.75, 200.0, "k") == 8.0
    print("capacity.py: self-test passed")


def search(target, shape, seconds, loadgen_core, outdir, max_steps, deadline):
    steps = []
    knee = None
    status = "not reached"
    for rooms in SHAPES[shape]["rooms"][:max_steps]:
        if time.monotonic() > deadline:
            status = "not reached (time budget)"
            break
        log(f"{target.name} {shape}: {rooms} rooms ...")
        s = run_step(target, shape, rooms, seconds, loadgen_core, outdir)
        steps.append(s)
        log(f"  forwarded {fmt(s['forwarded_per_s'], 0)}/s, relay core "
            f"{fmt_pct(s['relay_cpu_util'])}, {fmt(s['relay_cpu_us_per_forwarded'], 2)} us/pkt, "
            f"relay p99 {fmt(s['relay_p99_ms'], 2)} ms, wire p99 {fmt(s['wire_p99_ms'], 1)} ms, "
            f"loss {fmt_pct(s['loss'], 3)}, loadgen core {fmt_pct(s['loadgen_cpu_util'])}"
            + (f" INVALID ({'; '.join(s['invalid_reasons'])})" if s["invalid"] else "")
            + (f" OVER: {', '.join(s['over_knee'])}" if s["over_knee"] else ""))
        if s["invalid"]:
            status = ("not reached (the load generator saturated first)"
                      if (s["loadgen_cpu_util"] or 0) >= LOADGEN_SATURATED
                      else f"not reached (invalid step: {'; '.join(s['invalid_reasons'])})")
            break
        if s["over_knee"]:
            status = "reached"
            break
        knee = s
    result = {"shape": shape, "target": target.name, "steps": steps, "knee_status": status}
    fit = memory_fit(steps)
    if fit:
        result["memory"] = fit
        log(f"  {target.name} {shape}: relay RSS grows {fit['marginal_kib_per_participant']:,.0f} "
            f"KiB per participant beyond {fit['fixed_mib']:,.1f} MiB (over {fit['steps']} steps"
            + (", one past the knee)" if fit["includes_step_past_knee"] else ")"))
    if knee:
        rate = knee["forwarded_per_s"]
        result["knee"] = {
            "rooms": knee["rooms"],
            "participants": knee["participants"],
            "forwarded_per_s_per_core": rate,
            "relay_cpu_util": knee["relay_cpu_util"],
            "relay_p50_ms": knee["relay_p50_ms"],
            "relay_p99_ms": knee["relay_p99_ms"],
            "relay_p999_ms": knee["relay_p999_ms"],
            "wire_p50_ms": knee["wire_p50_ms"],
            "wire_p99_ms": knee["wire_p99_ms"],
            "wire_p999_ms": knee["wire_p999_ms"],
            "kib_per_participant": knee["kib_per_participant"],
            "marginal_kib_per_participant": fit and fit["marginal_kib_per_participant"],
            "fixed_mib": fit and fit["fixed_mib"],
            "loadgen_cpu_us_per_received": knee["loadgen_cpu_us_per_received"],
            "forwarded_per_cpu_second": (rate / knee["relay_cpu_util"]
                                         if knee["relay_cpu_util"] else None),
            "relay_cpu_us_per_forwarded_at": {
                f"{int(p * 100)}%": interpolate(
                    [s for s in steps if not s["over_knee"]], p, rate,
                    "relay_cpu_us_per_forwarded")
                for p in (0.25, 0.5, 0.8, 1.0)
            },
        }
    return result


def fmt(v, digits=1):
    return "-" if v is None else f"{v:,.{digits}f}"


def fmt_pct(v, digits=0):
    return "-" if v is None else f"{v * 100:.{digits}f} %"


def chart(results, shape, path):
    """forwarded/s (x) against relay CPU % (left axis, solid) and relay p99 ms (right axis,
    dashed), one colour per target."""
    series = [r for r in results if r["shape"] == shape and r["steps"]]
    if not series:
        return
    w, h, ml, mr, mt, mb = 720, 420, 70, 70, 40, 60
    pw, ph = w - ml - mr, h - mt - mb
    xmax = max(s["forwarded_per_s"] or 0 for r in series for s in r["steps"]) * 1.1 or 1
    p99max = max((s["relay_p99_ms"] or 0) for r in series for s in r["steps"])
    p99max = max(p99max * 1.1, MAX_RELAY_P99_MS * 1.2)
    colours = {"callrelay": "#1f77b4", "janus": "#d62728"}

    def x(v):
        return ml + pw * v / xmax

    def y_cpu(v):
        return mt + ph * (1 - min(v, 1.0))

    def y_p99(v):
        return mt + ph * (1 - min(v / p99max, 1.0))

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
           f'font-family="sans-serif" font-size="12">',
           f'<rect width="{w}" height="{h}" fill="white"/>',
           f'<text x="{w / 2}" y="20" text-anchor="middle" font-size="15">'
           f'{shape}: relay core busy and relay p99 against forwarded packets/s (one core)</text>',
           f'<rect x="{ml}" y="{mt}" width="{pw}" height="{ph}" fill="none" stroke="#888"/>']
    for i in range(6):
        v = xmax * i / 5
        out.append(f'<text x="{x(v)}" y="{mt + ph + 18}" text-anchor="middle">{v:,.0f}</text>')
        out.append(f'<line x1="{x(v)}" y1="{mt}" x2="{x(v)}" y2="{mt + ph}" stroke="#eee"/>')
        c = i / 5
        out.append(f'<text x="{ml - 6}" y="{y_cpu(c) + 4}" text-anchor="end">{c * 100:.0f} %</text>')
        p = p99max * i / 5
        out.append(f'<text x="{ml + pw + 6}" y="{y_p99(p) + 4}">{p:.1f} ms</text>')
    out.append(f'<text x="{ml + pw / 2}" y="{h - 15}" text-anchor="middle">'
               'forwarded packets/s</text>')
    out.append(f'<text x="16" y="{mt + ph / 2}" transform="rotate(-90 16 {mt + ph / 2})" '
               'text-anchor="middle">relay core busy (solid)</text>')
    out.append(f'<text x="{w - 12}" y="{mt + ph / 2}" transform="rotate(90 {w - 12} '
               f'{mt + ph / 2})" text-anchor="middle">relay p99, ms (dashed)</text>')
    y5 = y_p99(MAX_RELAY_P99_MS)
    out.append(f'<line x1="{ml}" y1="{y5}" x2="{ml + pw}" y2="{y5}" stroke="#aaa" '
               'stroke-dasharray="2,4"/>')
    out.append(f'<text x="{ml + 4}" y="{y5 - 4}" fill="#888">p99 knee (5 ms)</text>')
    for k, r in enumerate(series):
        col = colours.get(r["target"], "#2ca02c")
        pts = [s for s in r["steps"] if s["forwarded_per_s"]]
        cpu = [(x(s["forwarded_per_s"]), y_cpu(s["relay_cpu_util"] or 0)) for s in pts]
        p99 = [(x(s["forwarded_per_s"]), y_p99(s["relay_p99_ms"] or 0)) for s in pts
               if s["relay_p99_ms"] is not None]
        if cpu:
            out.append('<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>' % (
                col, " ".join(f"{a:.1f},{b:.1f}" for a, b in cpu)))
            for (a, b), s in zip(cpu, pts):
                mark = "#000" if s["over_knee"] or s["invalid"] else col
                out.append(f'<circle cx="{a:.1f}" cy="{b:.1f}" r="3.5" fill="{mark}"/>')
        if p99:
            out.append('<polyline fill="none" stroke="%s" stroke-width="2" '
                       'stroke-dasharray="6,4" points="%s"/>' % (
                           col, " ".join(f"{a:.1f},{b:.1f}" for a, b in p99)))
        knee = r.get("knee")
        label = (f"{r['target']}: knee {knee['forwarded_per_s_per_core']:,.0f}/s"
                 if knee else f"{r['target']}: knee {r['knee_status']}")
        out.append(f'<text x="{ml + 10}" y="{mt + 16 + 16 * k}" fill="{col}">{label}</text>')
    out.append(f'<text x="{ml + pw - 4}" y="{mt + ph - 6}" text-anchor="end" fill="#555">'
               'black dots: steps past the knee or invalid</text>')
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


def table(results):
    lines = []
    head = ("| shape | target | knee | forwarded/s per core | relay CPU-µs/pkt at 25/50/80/100 % "
            "| relay p50/p99/p99.9 ms | wire p50/p99/p99.9 ms | RSS KiB per participant (each "
            "one more, beyond MiB) "
            "| loadgen CPU-µs per received pkt |")
    lines.append(head)
    lines.append("|" + " --- |" * 9)
    for r in results:
        k = r.get("knee")
        if not k:
            lines.append(f"| {r['shape']} | {r['target']} | {r['knee_status']} | | | | | | |")
            continue
        at = k["relay_cpu_us_per_forwarded_at"]
        lines.append(
            f"| {r['shape']} | {r['target']} | {k['rooms']} rooms, {k['participants']} people "
            f"({r['knee_status']}) | {fmt(k['forwarded_per_s_per_core'], 0)} | "
            + " / ".join(fmt(at[p], 2) for p in ("25%", "50%", "80%", "100%")) + " | "
            + " / ".join(fmt(k[f"relay_{q}_ms"], 2) for q in ("p50", "p99", "p999")) + " | "
            + " / ".join(fmt(k[f"wire_{q}_ms"], 1) for q in ("p50", "p99", "p999")) + " | "
            + f"{fmt(k['kib_per_participant'], 0)} ({fmt(k.get('marginal_kib_per_participant'), 0)}"
            + f" beyond {fmt(k.get('fixed_mib'), 1)}) | {fmt(k['loadgen_cpu_us_per_received'], 2)} |")
    return "\n".join(lines)


def median_of_runs(dirs, out):
    """Medians over repeated runs: each run's capacity.json (`--out` of an earlier run), per
    shape and target the median of every knee figure, the callrelay/Janus ratio taken within
    each run (side by side) and then its median. Writes capacity-median.json to `out`."""
    runs = []
    for d in dirs:
        with open(os.path.join(d, "capacity.json")) as f:
            runs.append(json.load(f))
    keys = {(r["shape"], r["target"]) for run in runs for r in run["results"]}
    order = [(r["shape"], r["target"]) for r in runs[0]["results"]]
    order += sorted(keys - set(order))
    results = []
    for shape, target in order:
        knees = [r.get("knee") for run in runs for r in run["results"]
                 if r["shape"] == shape and r["target"] == target]
        reached = [k for k in knees if k]
        if not reached:
            results.append({"shape": shape, "target": target, "knee_status": "no knee",
                            "runs": len(knees)})
            continue
        med = {}
        for k in dict.fromkeys(k for x in reached for k in x):
            if any(isinstance(x.get(k), dict) for x in reached):
                subs = [x[k] for x in reached if isinstance(x.get(k), dict)]
                med[k] = {}
                for p in dict.fromkeys(p for d in subs for p in d):
                    vals = [d[p] for d in subs if isinstance(d.get(p), (int, float))]
                    med[k][p] = statistics.median(vals) if vals else None
            else:
                vals = [x[k] for x in reached if isinstance(x.get(k), (int, float))]
                m = statistics.median(vals) if vals else None
                med[k] = int(m) if all(isinstance(v, int) for v in vals) and m == int(m or 0) \
                    else m
        rates = [k["forwarded_per_s_per_core"] for k in reached]
        results.append({"shape": shape, "target": target,
                        "knee_status": f"median of {len(reached)} of {len(knees)} runs",
                        "knee": med,
                        "forwarded_per_s_per_core_runs": rates})
    ratios = {}
    for shape in {s for s, _ in order}:
        per_run = [r["ratios"][shape]["forwarded_per_cpu_second_callrelay_over_janus"]
                   for r in runs if shape in r.get("ratios", {})]
        if per_run:
            ratios[shape] = {"forwarded_per_cpu_second_callrelay_over_janus": {
                "median": statistics.median(per_run), "runs": per_run}}
    summary = {"runs": dirs, "machine": runs[0].get("machine"), "results": results,
               "ratios": ratios}
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "capacity-median.json"), "w") as f:
        json.dump(summary, f, indent=2)
    print(table(results))
    for r in results:
        if r.get("forwarded_per_s_per_core_runs"):
            runs_s = ", ".join(fmt(v, 0) for v in r["forwarded_per_s_per_core_runs"])
            print(f"{r['shape']} {r['target']}: forwarded/s per core in each run: {runs_s}")
    for shape, r in sorted(ratios.items()):
        v = r["forwarded_per_cpu_second_callrelay_over_janus"]
        each = ", ".join(f"{x:.2f}" for x in v["runs"])
        print(f"{shape}: callrelay forwards {v['median']:.2f}x Janus's packets per CPU-second "
              f"(median; each run: {each})")


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--self-test":
        self_test()
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--median":
        if len(sys.argv) < 4:
            sys.exit("usage: capacity.py --median OUT RUN_DIR...")
        median_of_runs(sys.argv[3:], sys.argv[2])
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shapes", default="meeting,webinar,voice")
    ap.add_argument("--targets", default="callrelay")
    ap.add_argument("--step-seconds", type=int, default=8)
    ap.add_argument("--max-steps", type=int, default=20)
    ap.add_argument("--budget-seconds", type=int, default=540,
                    help="stop stepping after this long (the whole run stays under 10 min)")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()

    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        sys.exit("capacity.py: needs two cores (one for the relay, one for the load generator)")
    relay_core, loadgen_core = cores[0], cores[1]
    os.makedirs(a.out, exist_ok=True)
    work = tempfile.mkdtemp(prefix="capacity-")
    deadline = time.monotonic() + a.budget_seconds
    results = []
    try:
        for shape in a.shapes.split(","):
            if shape not in SHAPES:
                sys.exit(f"capacity.py: unknown shape {shape} ({', '.join(SHAPES)})")
            for t in a.targets.split(","):
                target = {"callrelay": Callrelay, "janus": Janus}[t](relay_core, work)
                results.append(search(target, shape, a.step_seconds, loadgen_core, a.out,
                                      a.max_steps, deadline))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    summary = {
        "machine": {"cores": os.cpu_count(), "relay_core": relay_core,
                    "loadgen_core": loadgen_core},
        "knee_rules": {"max_loss": MAX_LOSS, "max_relay_p99_ms": MAX_RELAY_P99_MS,
                       "loadgen_saturated": LOADGEN_SATURATED},
        "step_seconds": a.step_seconds,
        "results": results,
    }
    for shape in a.shapes.split(","):
        cr = next((r.get("knee") for r in results
                   if r["shape"] == shape and r["target"] == "callrelay"), None)
        ja = next((r.get("knee") for r in results
                   if r["shape"] == shape and r["target"] == "janus"), None)
        if cr and ja and cr.get("forwarded_per_cpu_second") and ja.get("forwarded_per_cpu_second"):
            summary.setdefault("ratios", {})[shape] = {
                "forwarded_per_cpu_second_callrelay_over_janus":
                    cr["forwarded_per_cpu_second"] / ja["forwarded_per_cpu_second"],
            }
        chart(results, shape, os.path.join(a.out, f"capacity-{shape}.svg"))
    with open(os.path.join(a.out, "capacity.json"), "w") as f:
        json.dump(summary, f, indent=2)
    print(table(results))
    for shape, r in summary.get("ratios", {}).items():
        v = r["forwarded_per_cpu_second_callrelay_over_janus"]
        print(f"{shape}: callrelay forwards {v:.2f}x Janus's packets per CPU-second")
    print(f"\nJSON and charts: {a.out}")


if __name__ == "__main__":
    main()
