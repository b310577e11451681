#!/usr/bin/env python3
"""llmux benchmark driver (started by bench/run): starts the upstreams and every target,
measures them interleaved in rounds, writes bench/results/.

Targets are entries of TARGETS below (built in `build_targets`); each gives, per kind of call
("fast" = non-streaming, "stream" = 100-event SSE, "slow" = long SSE for held-open streams),
the URL and headers a client uses. A second llmux config is one more file:
bench/configs/llmux-NAME.toml.in becomes target `llmux-NAME` (lines `# bench-header: K: V`
in it add request headers, e.g. a virtual key).
"""

import argparse
import csv
import glob
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from string import Template

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import procs as P  # noqa: E402
import report  # noqa: E402
import stages  # noqa: E402
from stats import quantile  # noqa: E402

MODELS = {"fast": "bench-model", "stream": "bench-stream", "slow": "bench-slow"}
STREAM_CHUNKS, STREAM_DELAY = 100, 0.01  # streaming test: 100 chunks, 10 ms apart
SLOW_CHUNKS, SLOW_DELAY = 30, 1.0  # held-open streams: 30 chunks, 1 s apart

# A fixed reply the size of a small real one (the mock's is ~370 bytes).
REPLY = json.dumps({
    "id": "chatcmpl-bench0000000000000000000000",
    "object": "chat.completion",
    "created": 1700000000,
    "model": "bench-model",
    "system_fingerprint": "fp_bench",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "tok1 tok2 tok3 tok4 tok5 tok6 tok7 tok8"},
                 "logprobs": None, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 1, "completion_tokens": 8, "total_tokens": 9},
}, separators=(",", ":"))
MODELS_REPLY = json.dumps({"object": "list", "data": [
    {"id": "bench-model", "object": "model", "created": 0, "owned_by": "bench"}]}, separators=(",", ":"))


def body(kind):
    b = {"model": MODELS[kind], "messages": [{"role": "user", "content": "Say hello."}]}
    if kind != "fast":
        b["stream"] = True
    return json.dumps(b, separators=(",", ":"))


def log(msg):
    sys.stderr.write(f"\033[1m[bench {time.strftime('%H:%M:%S')}]\033[0m {msg}\n")
    sys.stderr.flush()


def setup_virtual_key(t):
    """Creates an app and a virtual key with limits far above the load (so they are checked on
    every call but never refuse) through llmux's admin API, and sends the key on every request."""
    import json
    base = t.urls["fast"][0].split("/v1/")[0]
    admin = {"authorization": f"Bearer {getattr(t, 'admin_token', '')}"}
    ok, why = P.wait_ready(t.proc, base + "/healthz", None, {}, timeout=t.ready_timeout)
    if not ok:
        return why
    try:
        st, b = P.http(base + "/admin/v1/apps", json.dumps({"name": "bench", "credits": 1e9}).encode(), admin)
        if st not in (200, 201):
            return f"create app: HTTP {st} {b[:200]!r}"
        key_body = {"name": "bench", "app": "bench", "models": [],
                    "limits": {"rpm": 100_000_000, "tpm": 10_000_000_000, "concurrency": 100_000}}
        st, b = P.http(base + "/admin/v1/keys", json.dumps(key_body).encode(), admin)
        if st not in (200, 201):
            return f"create key: HTTP {st} {b[:200]!r}"
        key = json.loads(b)["key"]
    except Exception as e:  # the report says why the variant was skipped
        return str(e)
    for kind, (url, hdrs) in list(t.urls.items()):
        t.urls[kind] = (url, {**hdrs, "authorization": f"Bearer {key}"})
    return True


class Target:
    """One thing measured. `urls[kind]` = (url, headers dict); `proc` = its server (None: direct)."""

    def __init__(self, name, label, note=""):
        self.name = name
        self.label = label
        self.note = note
        self.urls = {}
        self.proc = None
        self.start = None  # callable(procs) -> Proc, or None for direct
        self.ready_timeout = 30.0
        self.available = True
        self.reason = ""
        self.version = ""


def render(template_path, out_path, **kw):
    with open(template_path) as f:
        text = Template(f.read()).substitute(**kw)
    with open(out_path, "w") as f:
        f.write(text)
    return text


def sqlite_url(raw, name):
    """A file-backed SQLite store for one llmux target: RAW/store-NAME/llmux.db (created by llmux)."""
    return "sqlite://" + os.path.join(os.path.abspath(raw), f"store-{name}", "llmux.db") + "?mode=rwc"


def which_nginx():
    return shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)


def tool_in_cargo_bin(name):
    """A tool `cargo install` put in ~/.cargo/bin (often not on a fresh shell's PATH)."""
    p = os.path.expanduser(f"~/.cargo/bin/{name}")
    return p if os.access(p, os.X_OK) else None


def which_oha():
    return tool_in_cargo_bin("oha") or shutil.which("oha")


def cmd_version(argv):
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=20)
        return (r.stdout + r.stderr).strip().splitlines()[0] if (r.stdout + r.stderr).strip() else ""
    except Exception:
        return ""


# ------------------------------------------------------------------------------------ setup

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", required=True)
    ap.add_argument("--run-dir", required=True)
    ap.add_argument("--pidfile", required=True)
    ap.add_argument("--install-status", required=True)
    ap.add_argument("--only", default="direct,nginx,llmux,llmux-features,litellm,portkey")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--upstream", choices=["nginx", "mock"], default="nginx")
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--duration", type=float, default=None)
    ap.add_argument("--port-base", type=int, default=18100)
    ap.add_argument("--setup-seconds", type=int, default=0)
    ap.add_argument("--baseline", default=None,
                    help="another llmux binary: each llmux target is also measured on it, as NAME@base")
    ap.add_argument("--profile", action="store_true",
                    help="perf record llmux under a c=32 load and report where the time goes")
    a = ap.parse_args()

    cfg = {
        "quick": a.quick,
        # interleaved rounds: latency at c=1, and throughput
        "lat_rounds": a.rounds or (1 if a.quick else 3),
        "thr_rounds": a.rounds or (1 if a.quick else 2),
        "duration": a.duration or (1.5 if a.quick else 3.0),
        "rate_duration": (a.duration or (2.0 if a.quick else 4.0)),
        "rates": [1000, 5000],
        "concurrencies": [32, 128],
        # the scaling curve: closed-loop throughput at each concurrency for direct, nginx and
        # every llmux target (the others run only the `concurrencies` above)
        "scaling": [1, 8, 32, 128, 512],
        "startup_runs": 5,
        "profile": a.profile,
        "profile_seconds": 5,
        "stream_rounds": a.rounds or (1 if a.quick else 3),
        "streams_per_round": 16 if a.quick else 32,
        "stream_concurrency": 8,
        "hold_streams": 5000,
        "hold_targets": ["nginx", "llmux"],
    }

    t_start = time.time()
    root = a.root
    results_dir = os.path.join(root, "bench", "results")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    raw = os.path.join(results_dir, "raw", stamp)
    os.makedirs(raw, exist_ok=True)
    logs = os.path.join(raw, "logs")
    os.makedirs(logs, exist_ok=True)
    procs = P.Procs(a.pidfile, logs)

    def on_signal(signum, _frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    install_notes = {}
    try:
        with open(a.install_status) as f:
            for line in f:
                if "=" in line:
                    k, v = line.rstrip("\n").split("=", 1)
                    install_notes[k] = v
    except OSError:
        pass

    run = {
        "stamp": stamp,
        "cfg": cfg,
        "setup_seconds": a.setup_seconds,
        "notes": [],
        "targets": [],
        "unavailable": {},
    }
    try:
        measure(a, cfg, root, raw, procs, run, install_notes)
    finally:
        procs.stop_all()
    run["measure_seconds"] = round(time.time() - t_start)
    with open(os.path.join(raw, "summary.json"), "w") as f:
        json.dump(run, f, indent=1, default=str)
    md = report.write(run, results_dir, raw)
    log(f"wrote {md} (raw data in {raw})")


def measure(a, cfg, root, raw, procs, run, install_notes):
    bin_llmux = os.path.join(root, "target", "release", "llmux")
    bin_client = os.path.join(root, "target", "release", "bench-client")
    tools = os.path.join(root, "target", "bench-tools")
    nginx = which_nginx()
    oha = which_oha()
    wrk = shutil.which("wrk")
    loadgen = "oha" if oha else ("wrk" if wrk else None)
    if os.environ.get("BENCH_LOADGEN") == "wrk" and wrk:  # to exercise the fallback
        loadgen = "wrk"
    if loadgen is None:
        raise SystemExit("bench: neither oha nor wrk is available: " + install_notes.get("oha", "") + " " + install_notes.get("wrk", ""))
    if loadgen == "wrk":
        run["notes"].append("oha could not be installed (" + install_notes.get("oha", "?") + "); wrk from apt is used: "
                            "no open-loop fixed-rate tests, c=1 percentiles are per round (median over rounds).")
    nofile = int(subprocess.run(["bash", "-c", "ulimit -n"], capture_output=True, text=True).stdout.strip() or "1024")
    if nofile < 2 * cfg["hold_streams"] + 1000:
        new = max(100, (nofile - 1000) // 2)
        run["notes"].append(f"open-files limit is {nofile}: held-open streams reduced from {cfg['hold_streams']} to {new}.")
        cfg["hold_streams"] = new
    run["nofile"] = nofile

    base = a.port_base
    ports = {
        "up_nginx": base + 1, "up_mock_fast": base + 2, "up_stream": base + 3, "up_slow": base + 4,
        "up_dead": base + 5, "startup": base + 61,
        "nginx_fast": base + 11, "nginx_stream": base + 12, "nginx_slow": base + 13,
        "litellm": base + 31, "portkey": base + 41,
    }
    variants = sorted(glob.glob(os.path.join(root, "bench", "configs", "llmux*.toml.in")))
    for i, v in enumerate(variants):
        ports["llmux:" + os.path.basename(v)] = base + 21 + i
        if a.baseline:
            ports["llmux@base:" + os.path.basename(v)] = base + 51 + i
    busy = [f"{k}={p}" for k, p in ports.items() if not P.port_free(p)]
    if busy:
        raise SystemExit(f"bench: ports in use: {', '.join(busy)} (pick others with --port-base)")

    workers = os.cpu_count() or 2
    os.chmod(a.run_dir, 0o755)  # nginx workers (user nobody) reach their temp dirs in it
    wc = max(1024, min(nofile, 65536))
    upstream = a.upstream
    if upstream == "nginx" and not nginx:
        run["notes"].append("nginx is not installed: the mock in fast mode is the upstream for non-streaming tests.")
        upstream = "mock"
    run["upstream"] = upstream
    up_fast = ports["up_nginx"] if upstream == "nginx" else ports["up_mock_fast"]

    # ---- upstreams
    log("starting upstreams")
    ups = []
    mock_fast = procs.start("mock-fast", [bin_llmux, "mock", "--port", str(ports["up_mock_fast"]), "--models",
                                          MODELS["fast"], "--chunks", "8", "--name", "fast"], env={"LLMUX_LOG": "warn"})
    ups.append((mock_fast, f"http://127.0.0.1:{ports['up_mock_fast']}/v1/models"))
    mock_stream = procs.start("mock-stream", [bin_llmux, "mock", "--port", str(ports["up_stream"]), "--models",
                                              MODELS["stream"], "--chunks", str(STREAM_CHUNKS), "--chunk-delay",
                                              str(STREAM_DELAY), "--name", "stream"], env={"LLMUX_LOG": "warn"})
    ups.append((mock_stream, f"http://127.0.0.1:{ports['up_stream']}/v1/models"))
    mock_slow = procs.start("mock-slow", [bin_llmux, "mock", "--port", str(ports["up_slow"]), "--models",
                                          MODELS["slow"], "--chunks", str(SLOW_CHUNKS), "--chunk-delay",
                                          str(SLOW_DELAY), "--name", "slow"], env={"LLMUX_LOG": "warn"})
    ups.append((mock_slow, f"http://127.0.0.1:{ports['up_slow']}/v1/models"))
    if nginx:
        ngdir = os.path.join(a.run_dir, "nginx-upstream")
        os.makedirs(ngdir, exist_ok=True)
        conf = os.path.join(ngdir, "nginx.conf")
        text = render(os.path.join(root, "bench", "configs", "nginx-upstream.conf.in"), conf, workers=workers,
                      nofile=nofile, prefix=ngdir, worker_connections=wc, port=ports["up_nginx"], reply=REPLY,
                      models=MODELS_REPLY)
        with open(os.path.join(raw, "nginx-upstream.conf"), "w") as f:
            f.write(text)
        ng_up = procs.start("nginx-upstream", [nginx, "-c", conf, "-p", ngdir, "-e", os.path.join(ngdir, "error.log")])
        ups.append((ng_up, f"http://127.0.0.1:{ports['up_nginx']}/v1/models"))
    for proc, url in ups:
        ok, why = P.wait_ready(proc, url, timeout=20)
        if not ok:
            raise SystemExit(f"bench: upstream {proc.name} did not start: {why}")

    # ---- targets
    only = [t.strip() for t in a.only.split(",") if t.strip()]
    targets = build_targets(only, root, a, ports, up_fast, nginx, bin_llmux, tools, workers, nofile, wc, variants,
                            install_notes, raw)
    for t in targets:
        if not t.available:
            log(f"{t.name}: unavailable: {t.reason}")
    log("starting targets: " + ", ".join(t.name for t in targets if t.available))
    for t in targets:
        if t.available and t.start:
            try:
                t.proc = t.start(procs)
            except Exception as e:  # e.g. executable missing
                t.available, t.reason = False, f"could not start: {e}"
    for t in targets:
        if not t.available:
            continue
        if getattr(t, "setup_key", False):
            made = setup_virtual_key(t)
            if made is not True:
                t.available, t.reason = False, f"virtual key setup failed: {made}"
                log(f"{t.name}: {t.reason}")
                continue
        url, hdrs = t.urls["fast"]
        ok, why = P.wait_ready(t.proc, url, body(("fast")).encode(), hdrs, timeout=t.ready_timeout)
        if ok and "stream" in t.urls:
            # streaming must work too (checked once; failures are reported, not fatal)
            try:
                su, sh = t.urls["stream"]
                st, b = P.http(su, body("stream").encode(), sh, timeout=10)
                if st != 200:
                    t.stream_error = f"HTTP {st}: {b[:160].decode('utf-8', 'replace')}"
            except Exception as e:
                t.stream_error = str(e)
        if not ok:
            t.available, t.reason = False, f"did not become ready: {why}"
            log(f"{t.name}: {t.reason}")
            if t.proc:
                procs.stop(t.proc)
                t.proc = None
    live = [t for t in targets if t.available]
    if not any(t.name == "nginx" for t in live):
        run["notes"].append("nginx (the floor) is not measured in this run: ratios to nginx are not available.")
    for t in targets:
        run["targets"].append(t.name)
        run.setdefault("labels", {})[t.name] = t.label
        run.setdefault("target_notes", {})[t.name] = t.note
        run.setdefault("versions", {})[t.name] = t.version
        if not t.available:
            run["unavailable"][t.name] = t.reason
        if getattr(t, "stream_error", None):
            run.setdefault("stream_errors", {})[t.name] = t.stream_error

    time.sleep(1.0)
    mem = run.setdefault("memory", {})
    for t in live:
        if t.proc:
            mem.setdefault(t.name, {})["idle_kib"] = t.proc.rss_kib()
            mem[t.name]["processes"] = len(t.proc.pids())
    run["machine"] = machine(root, nginx, oha, wrk, loadgen, tools)
    run["loadgen"] = loadgen
    run["setup"] = {"nginx_workers": workers, "nginx_worker_connections": wc}

    lg = LoadGen(loadgen, oha, wrk, raw, a.run_dir)

    # ---- warm-up (discarded)
    log("warm-up")
    for t in live:
        url, hdrs = t.urls["fast"]
        lg.run(f"warmup-{t.name}", url, hdrs, body("fast"), conns=8, duration=1.0)

    # ---- latency at c=1, interleaved rounds
    lat = run.setdefault("latency_c1", {t.name: {"samples_us": [], "rounds": []} for t in live})
    for r in range(cfg["lat_rounds"]):
        log(f"latency c=1, round {r + 1}/{cfg['lat_rounds']}")
        for t in rotate(live, r):
            url, hdrs = t.urls["fast"]
            res = lg.run(f"c1-r{r}-{t.name}", url, hdrs, body("fast"), conns=1, duration=cfg["duration"], raw_samples=True)
            lat[t.name]["rounds"].append({k: v for k, v in res.items() if k != "samples_us"})
            lat[t.name]["samples_us"].extend(res.get("samples_us", []))
    for t in live:
        s = sorted(lat[t.name].pop("samples_us"))
        d = lat[t.name]
        d["n"] = len(s) or sum(x.get("ok", 0) for x in d["rounds"])
        d["errors"] = sum(x.get("errors", 0) for x in d["rounds"])
        if s:
            d.update(p50=quantile(s, 0.5), p99=quantile(s, 0.99), p999=quantile(s, 0.999), mean=sum(s) / len(s))
        elif d["rounds"] and "p50" in d["rounds"][0]:  # wrk: per-round percentiles only
            for k in ("p50", "p99", "p999"):
                vals = sorted(x[k] for x in d["rounds"] if k in x)
                d[k] = quantile(vals, 0.5) if vals else None

    # ---- throughput (closed loop), interleaved: c=32 and c=128 for every target, and the
    # scaling curve (c=1 … 512) for direct, nginx and the llmux targets. RSS is sampled every
    # 100 ms during every run (the series is kept, the c=128 peak is "under load"); during c=128
    # the gateways' connections to the upstream are sampled too (connection reuse).
    thr = run.setdefault("throughput", {t.name: {} for t in live})
    scaled = {t.name for t in live if t.name in ("direct", "nginx") or t.name.startswith("llmux")}
    run["scaling_targets"] = [t.name for t in live if t.name in scaled]
    levels = sorted(set(cfg["concurrencies"]) | set(cfg["scaling"]))
    top = max(cfg["concurrencies"])
    conns = run.setdefault("connections", {})
    t_measure = time.time()
    for r in range(cfg["thr_rounds"]):
        for c in levels:
            log(f"throughput c={c}, round {r + 1}/{cfg['thr_rounds']}")
            for t in rotate(live, r):
                if c not in cfg["concurrencies"] and t.name not in scaled:
                    continue
                url, hdrs = t.urls["fast"]
                sampler = RssSampler(t.proc, t_measure) if t.proc else None
                csamp = ConnSampler(t.proc, up_fast) if (t.proc and c == top) else None
                cpu0 = cpu_ticks(t.proc) if t.proc else None
                res = lg.run(f"thr-c{c}-r{r}-{t.name}", url, hdrs, body("fast"), conns=c, duration=cfg["duration"])
                if cpu0 is not None:
                    res.update(cpu_per_call(cpu0, cpu_ticks(t.proc), res))
                if csamp:
                    cr = csamp.stop()
                    cr["round"] = r
                    conns.setdefault(t.name, []).append(cr)
                if sampler:
                    peak = sampler.stop()
                    m = mem.setdefault(t.name, {})
                    m.setdefault("series", []).append({"c": c, "round": r, "samples": sampler.series})
                    if c == top:
                        m["load_kib"] = max(m.get("load_kib", 0), peak)
                thr[t.name].setdefault(str(c), []).append(res)
    for t in live:  # RSS at the start of the first c=128 run and at the end of the last one
        segs = [sg for sg in get_series(mem, t.name) if sg["c"] == top and sg["samples"]]
        if segs:
            mem[t.name]["load_start_kib"] = segs[0]["samples"][0][1]
            mem[t.name]["load_end_kib"] = segs[-1]["samples"][-1][1]
    for t in live:
        for c, rs in thr[t.name].items():
            ok = [x for x in rs if x.get("rps") is not None]
            thr[t.name][c] = {
                "rounds": rs,
                "rps": quantile(sorted(x["rps"] for x in ok), 0.5) if ok else None,
                "errors": sum(x.get("errors", 0) + x.get("non200", 0) for x in rs),
                "p50": quantile(sorted(x["p50"] for x in ok if x.get("p50") is not None), 0.5) if ok else None,
                "p99": quantile(sorted(x["p99"] for x in ok if x.get("p99") is not None), 0.5) if ok else None,
                "cpu_user_us": median_of(ok, "cpu_user_us"),
                "cpu_sys_us": median_of(ok, "cpu_sys_us"),
            }

    # ---- fixed rates, open loop (oha -q with latency correction)
    rates = run.setdefault("rates", {t.name: {} for t in live})
    for rate in cfg["rates"]:
        log(f"fixed rate {rate}/s")
        for t in live:
            if loadgen != "oha":
                rates[t.name][str(rate)] = {"skipped": "wrk has no open-loop fixed-rate mode"}
                continue
            cap = max([v["rps"] or 0 for v in thr[t.name].values()] or [0])
            if cap < 0.9 * rate:
                rates[t.name][str(rate)] = {"skipped": f"saturated: its closed-loop maximum is {cap:,.0f} calls/s"}
                continue
            url, hdrs = t.urls["fast"]
            res = lg.run(f"rate{rate}-{t.name}", url, hdrs, body("fast"), conns=64, duration=cfg["rate_duration"], rate=rate)
            rates[t.name][str(rate)] = res

    # ---- streaming: TTFT and inter-event gaps, interleaved rounds
    st = run.setdefault("streaming", {})
    stream_targets = [t for t in live if "stream" in t.urls]
    for r in range(cfg["stream_rounds"]):
        log(f"streaming ({STREAM_CHUNKS} chunks, {STREAM_DELAY * 1000:.0f} ms apart), round {r + 1}/{cfg['stream_rounds']}")
        for t in rotate(stream_targets, r):
            url, hdrs = t.urls["stream"]
            out = os.path.join(raw, f"stream-r{r}-{t.name}.json")
            res = client(bin_client, "stream", url, hdrs, body("stream"), out,
                         ["--streams", str(cfg["streams_per_round"]), "--concurrency", str(cfg["stream_concurrency"]),
                          "--warmup", str(cfg["stream_concurrency"])], timeout=60)
            d = st.setdefault(t.name, {"ttft_us": [], "gaps_us": [], "events": [], "failed": 0, "ok": 0, "errors": [],
                                       "without_done": 0})
            if "error" in res:
                d["errors"].append(res["error"])
                continue
            for k in ("ttft_us", "gaps_us", "events"):
                d[k].extend(res.get(k, []))
            d["failed"] += res.get("failed", 0)
            d["ok"] += res.get("ok", 0)
            d["without_done"] += res.get("without_done", 0)
            d["errors"].extend(res.get("errors", [])[:3])
    for name, d in st.items():
        ttft, gaps = sorted(d.pop("ttft_us")), sorted(d.pop("gaps_us"))
        ev = d.pop("events")
        d["n_streams"], d["n_gaps"] = len(ttft), len(gaps)
        d["events_per_stream"] = (sum(ev) / len(ev)) if ev else None
        for q, k in ((0.5, "p50"), (0.99, "p99")):
            d["ttft_" + k] = quantile(ttft, q) if ttft else None
        for q, k in ((0.01, "p1"), (0.5, "p50"), (0.99, "p99"), (0.999, "p999")):
            d["gap_" + k] = quantile(gaps, q) if gaps else None
        d["errors"] = d["errors"][:5]

    # ---- memory with N held-open streams
    hold = run.setdefault("hold", {})
    for t in live:
        if t.name not in cfg["hold_targets"] or not t.proc:
            continue
        n = cfg["hold_streams"]
        log(f"{t.name}: holding {n} streams open")
        url, hdrs = t.urls["slow"]
        out = os.path.join(raw, f"hold-{t.name}.json")
        pids = t.proc.pids()
        fds_before = sum((P.fd_count(p) or 0) for p in pids)
        extra = ["--streams", str(n), "--open-concurrency", "256"]
        for pid in pids:
            extra += ["--pid", str(pid)]
        res = client(bin_client, "hold", url, hdrs, body("slow"), out, extra, timeout=90)
        res["fds_before"] = fds_before
        hold[t.name] = res
        if "rss_kib" in res:
            mem.setdefault(t.name, {})["hold_kib"] = res["rss_kib"]
        # let the closed streams drain before the next target
        deadline = time.time() + 15
        while time.time() < deadline and sum((P.fd_count(p) or 0) for p in t.proc.pids()) > fds_before + 100:
            time.sleep(0.25)
    run["hold_streams"] = cfg["hold_streams"]

    # ---- start-up with one unresponsive upstream
    if any(t.name == "llmux" for t in live):
        log(f"start-up with one unresponsive upstream ({cfg['startup_runs']} starts)")
        run["startup"] = measure_startup(cfg, root, raw, a.run_dir, procs, bin_llmux, ports, up_fast)

    # ---- where the time goes (perf), last, so it disturbs nothing else
    if cfg["profile"]:
        t = next((t for t in live if t.name == "llmux"), None)
        if t is None:
            run["profile"] = {"error": "llmux is not measured in this run"}
        else:
            log(f"profile: perf record on llmux under c=32 for {cfg['profile_seconds']} s")
            run["profile"] = profile(cfg, raw, lg, t, os.path.join(root, "bench", "results"))


class DeadUpstream:
    """An upstream that accepts TCP connections and never answers (nor closes them)."""

    def __init__(self, port):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(128)
        self.sock.settimeout(0.2)
        self.held, self.done = [], threading.Event()
        self.th = threading.Thread(target=self.loop, daemon=True)
        self.th.start()

    def loop(self):
        while not self.done.is_set():
            try:
                c, _ = self.sock.accept()
                self.held.append(c)
            except OSError:  # timeout: look at `done` again
                continue

    def close(self):
        self.done.set()
        self.th.join(timeout=2)
        for c in self.held:
            c.close()
        self.sock.close()
        return len(self.held)


def measure_startup(cfg, root, raw, run_dir, procs, bin_llmux, ports, up_fast):
    """Median over N starts of `llmux serve` with one unresponsive upstream (health.timeout 5 s)
    and one good one: time from spawning the process to its port accepting a TCP connection, and
    to the first 200 on /v1/chat/completions for the good model. Polls every 1 ms (TCP) and 2 ms
    (HTTP). The store is a file; the first start creates it, the others reuse it."""
    port = ports["startup"]
    cfg_path = os.path.join(run_dir, "startup.toml")
    text = render(os.path.join(root, "bench", "configs", "startup.toml.in"), cfg_path, port=port,
                  up_dead=ports["up_dead"], up_fast=up_fast, store=sqlite_url(raw, "startup"))
    with open(os.path.join(raw, "startup.toml"), "w") as f:
        f.write(text)
    dead = DeadUpstream(ports["up_dead"])
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    runs = []
    try:
        for i in range(cfg["startup_runs"]):
            if not P.port_free(port):
                runs.append({"error": f"port {port} still in use"})
                break
            t0 = time.perf_counter()
            proc = procs.start(f"startup-{i}", [bin_llmux, "serve", "--config", cfg_path], env={"LLMUX_LOG": "warn"})
            res, deadline = {}, t0 + 15
            while time.perf_counter() < deadline and proc.alive():
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.05).close()
                    res["listen_ms"] = (time.perf_counter() - t0) * 1000
                    break
                except OSError:
                    time.sleep(0.001)
            last = ""
            while "listen_ms" in res and time.perf_counter() < deadline and proc.alive():
                try:
                    st, b = P.http(url, body("fast").encode(), {}, timeout=6.0)
                    if st == 200:
                        res["first_200_ms"] = (time.perf_counter() - t0) * 1000
                        break
                    last = f"HTTP {st}: {b[:160].decode('utf-8', 'replace')}"
                except Exception as e:  # noqa: BLE001 — kept as the reason
                    last = str(e)
                time.sleep(0.002)
            if "first_200_ms" not in res:
                res["error"] = ("exited: " + proc.log_tail(5)) if not proc.alive() else (
                    f"no 200 within 15 s ({last})" if "listen_ms" in res else "not listening within 15 s")
            ts = time.perf_counter()
            procs.stop(proc)  # SIGTERM, SIGKILL after 5 s
            res["stop_ms"] = (time.perf_counter() - ts) * 1000
            res["killed"] = proc.popen.returncode == -signal.SIGKILL
            runs.append(res)
    finally:
        held = dead.close()
    out = {"runs": runs, "dead_connections": held, "health_timeout_s": 5}
    for k in ("listen_ms", "first_200_ms", "stop_ms"):
        vals = sorted(r[k] for r in runs if k in r)
        out[k] = quantile(vals, 0.5) if vals else None
        out[k + "_max"] = vals[-1] if vals else None
    errs = [r["error"] for r in runs if "error" in r]
    if errs:
        out["errors"] = errs[:3]
    return out


PROFILE_HZ = 499
PERF_LINE = re.compile(r"^\s*([0-9.]+)%\s+(\S+)\s+\[(.)\]\s+(.*?)\s*$")


def profile(cfg, raw, lg, t, results_dir):
    """`perf record -F PROFILE_HZ --call-graph dwarf` on the target's processes while an oha c=32
    load runs; saves the report to the raw dir and returns the top symbols with user/kernel
    shares, and (with inferno) the by-stage table and a flame graph."""
    perf = shutil.which("perf")
    if not perf:
        return {"error": "perf is not installed (linux-perf)"}
    if lg.kind != "oha":
        return {"error": "needs oha"}
    secs = cfg["profile_seconds"]
    data = os.path.join(raw, "perf.data")
    url, hdrs = t.urls["fast"]
    pids = ",".join(str(p) for p in t.proc.pids())
    box = {}
    th = threading.Thread(target=lambda: box.update(lg.run(f"profile-{t.name}", url, hdrs, body("fast"), conns=32,
                                                             duration=secs + 2.0)), daemon=True)
    th.start()
    time.sleep(1.0)
    # DWARF call graphs: the release build has no frame pointers, so `-g` alone cut most stacks
    # short and left memmove, malloc and the kernel's time unattributed.
    rec = subprocess.run([perf, "record", "-F", str(PROFILE_HZ), "--call-graph", "dwarf,16384", "-p", pids, "-o", data,
                          "--", "sleep", str(secs)],
                         capture_output=True, text=True, timeout=secs + 60)
    th.join(timeout=secs + 70)
    with open(os.path.join(raw, "perf-record.log"), "w") as f:
        f.write(rec.stdout + rec.stderr)
    if rec.returncode != 0 or not os.path.exists(data):
        return {"error": f"perf record exit {rec.returncode}: {rec.stderr.strip()[-300:]}"}
    full = subprocess.run([perf, "report", "-i", data, "--stdio", "--no-children"], capture_output=True, text=True,
                          timeout=300)
    with open(os.path.join(raw, "perf-report.txt"), "w") as f:
        f.write(full.stdout)
    flat = subprocess.run([perf, "report", "-i", data, "--stdio", "--no-children", "--sort", "dso,symbol", "-g", "none"],
                          capture_output=True, text=True, timeout=300)
    with open(os.path.join(raw, "perf-report-flat.txt"), "w") as f:
        f.write(flat.stdout)
    rows, user, kernel, samples = [], 0.0, 0.0, None
    for line in flat.stdout.splitlines():
        if line.startswith("# Samples:"):  # "# Samples: 4K of event 'cpu-clock:pppH'"
            samples = line.split(":", 1)[1].split(" of event")[0].strip()
        m = PERF_LINE.match(line)
        if not m:
            continue
        # the symbol column is padded, and perf may add IPC columns after it ("-      -")
        pct, dso, kind, sym = float(m.group(1)), m.group(2), m.group(3), re.split(r"\s{2,}", m.group(4))[0]
        if kind == "k":
            kernel += pct
        else:
            user += pct
        rows.append({"pct": pct, "dso": dso, "kind": "kernel" if kind == "k" else "user", "symbol": sym})
    rows.sort(key=lambda x: -x["pct"])
    out = {"seconds": secs, "frequency": PROFILE_HZ, "samples": samples, "top": rows[:20], "user_pct": round(user, 2),
           "kernel_pct": round(kernel, 2), "load": {k: box.get(k) for k in ("rps", "p50", "p99", "error") if k in box},
           "report": "perf-report.txt"}
    # A flame graph and the by-stage table when inferno is installed (`bench/run --profile`
    # installs it).
    collapse = shutil.which("inferno-collapse-perf") or tool_in_cargo_bin("inferno-collapse-perf")
    flame = shutil.which("inferno-flamegraph") or tool_in_cargo_bin("inferno-flamegraph")
    if collapse and flame:
        svg = os.path.join(results_dir, "flamegraph.svg")
        try:
            script = subprocess.run([perf, "script", "-i", data, "--no-inline"], capture_output=True, timeout=600)
            folded = subprocess.run([collapse], input=script.stdout, capture_output=True, timeout=300)
            with open(os.path.join(raw, "perf-folded.txt"), "wb") as f:
                f.write(folded.stdout)
            out["stages"] = [{"stage": s, "pct": round(p, 2), "kernel_pct": round(k, 1)}
                             for s, p, k in stages.by_stage(folded.stdout.decode("utf-8", "replace"))]
            graph = subprocess.run([flame, "--minwidth", "0.1", "--deterministic", "--title", f"llmux under oha -c 32 ({secs} s, perf -F {PROFILE_HZ}, DWARF)"],
                                   input=folded.stdout, capture_output=True, timeout=300)
            if graph.returncode == 0 and graph.stdout:
                with open(svg, "wb") as f:
                    f.write(graph.stdout)
                out["flamegraph"] = "flamegraph.svg"
        except (OSError, subprocess.TimeoutExpired) as e:
            out["flamegraph_error"] = str(e)
    else:
        out["flamegraph_error"] = "inferno is not installed (cargo install inferno), so no flame graph or stage table"
    return out


def build_targets(only, root, a, ports, up_fast, nginx, bin_llmux, tools, workers, nofile, wc, variants, notes, raw):
    targets = []
    known = {"direct", "nginx", "litellm", "portkey"} | {
        os.path.basename(v)[: -len(".toml.in")] for v in variants}
    for name in only:
        if name not in known:
            raise SystemExit(f"bench: unknown target {name!r} (known: {', '.join(sorted(known))})")
    up = {"fast": up_fast, "stream": ports["up_stream"], "slow": ports["up_slow"]}
    cc = "/v1/chat/completions"

    if "direct" in only:
        t = Target("direct", "direct (client → upstream)", "no gateway: the baseline the added latency is measured against")
        for k, p in up.items():
            t.urls[k] = (f"http://127.0.0.1:{p}{cc}", {})
        targets.append(t)

    if "nginx" in only:
        t = Target("nginx", "nginx proxy_pass", f"worker_processes {workers}; upstream keepalive 64; proxy_buffering off for streams")
        if not nginx:
            t.available, t.reason = False, notes.get("nginx", "nginx is not installed")
        else:
            t.version = cmd_version([nginx, "-v"])
            for k, pk in (("fast", "nginx_fast"), ("stream", "nginx_stream"), ("slow", "nginx_slow")):
                t.urls[k] = (f"http://127.0.0.1:{ports[pk]}{cc}", {})
            ngdir = os.path.join(a.run_dir, "nginx-proxy")
            os.makedirs(ngdir, exist_ok=True)
            conf = os.path.join(ngdir, "nginx.conf")
            text = render(os.path.join(root, "bench", "configs", "nginx-proxy.conf.in"), conf, workers=workers,
                          nofile=nofile, prefix=ngdir, worker_connections=wc, up_fast=up["fast"], up_stream=up["stream"],
                          up_slow=up["slow"], port_fast=ports["nginx_fast"], port_stream=ports["nginx_stream"],
                          port_slow=ports["nginx_slow"])
            with open(os.path.join(raw, "nginx-proxy.conf"), "w") as f:
                f.write(text)
            t.start = lambda procs, conf=conf, ngdir=ngdir: procs.start(
                "nginx-proxy", [nginx, "-c", conf, "-p", ngdir, "-e", os.path.join(ngdir, "error.log")])
        targets.append(t)

    # With --baseline, every llmux target is measured twice in the same rounds: on this tree's
    # binary and on the baseline binary (NAME@base), so before/after is one run's ratio.
    builds = [("", "llmux:", bin_llmux)] + ([("@base", "llmux@base:", os.path.abspath(a.baseline))] if a.baseline else [])
    for v, (suffix, port_key, exe) in [(v, b) for v in variants for b in builds]:
        vname = os.path.basename(v)[: -len(".toml.in")]
        if vname not in only:
            continue
        name = vname + suffix
        port = ports[port_key + os.path.basename(v)]
        with open(v) as f:
            shared = any(l.strip().replace(" ", "") == "workers=0" for l in f)
        runtime = ("the shared multi-thread tokio runtime (server.workers = 0)" if shared
                   else "one connection worker per core (server.workers default)")
        t = Target(name, name, f"{runtime}; LLMUX_LOG=warn"
                   + (f"; baseline binary {exe}" if suffix else ""))
        t.version = cmd_version([exe, "--version"])
        cfg_path = os.path.join(a.run_dir, f"{name}.toml")
        # A file-backed SQLite store of its own (the master key file sits beside it), under the
        # run's raw dir: what a deployment runs on, and what the RSS targets are measured with.
        text = render(v, cfg_path, port=port, up_fast=up["fast"], up_stream=up["stream"], up_slow=up["slow"],
                      store=sqlite_url(raw, name), raw=raw)
        with open(os.path.join(raw, f"{name}.toml"), "w") as f:
            f.write(text)
        hdrs = {}
        for line in text.splitlines():
            if line.startswith("# bench-header:"):
                k, _, val = line[len("# bench-header:"):].strip().partition(":")
                hdrs[k.strip()] = val.strip()
            if line.startswith("# bench-setup: virtual-key"):
                # The variant needs a virtual key: made through the admin API once llmux is up.
                t.setup_key = True
            if line.strip().startswith("token =") and "admin" in text:
                t.admin_token = line.split("=", 1)[1].strip().strip('"')
        for k in up:
            t.urls[k] = (f"http://127.0.0.1:{port}{cc}", hdrs)
        t.start = lambda procs, name=name, cfg_path=cfg_path, exe=exe: procs.start(
            name, [exe, "serve", "--config", cfg_path], env={"LLMUX_LOG": "warn"})
        targets.append(t)

    if "litellm" in only:
        venv = os.path.join(tools, "venv")
        exe = os.path.join(venv, "bin", "litellm")
        t = Target("litellm", "LiteLLM proxy", f"`--num_workers {workers}` (one per core, like nginx); no master key, no "
                   "database; offline cost map (`LITELLM_LOCAL_MODEL_COST_MAP=True`)")
        t.ready_timeout = 120.0
        if not os.path.exists(exe):
            t.available, t.reason = False, notes.get("litellm", "not installed (bench/run installs it into target/bench-tools/venv)")
        else:
            t.version = "litellm " + (cmd_version([os.path.join(venv, "bin", "python"), "-c",
                                                   "import importlib.metadata as m; print(m.version('litellm'))"]) or "?")
            cfg_path = os.path.join(a.run_dir, "litellm.yaml")
            text = render(os.path.join(root, "bench", "configs", "litellm.yaml.in"), cfg_path, up_fast=up["fast"],
                          up_stream=up["stream"], up_slow=up["slow"])
            with open(os.path.join(raw, "litellm.yaml"), "w") as f:
                f.write(text)
            for k in up:
                t.urls[k] = (f"http://127.0.0.1:{ports['litellm']}{cc}", {})
            env = {
                "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # offline: no fetch of the cost map
                "LITELLM_LOG": "ERROR",
                "LITELLM_DANGEROUSLY_PERMIT_WEAK_OR_UNSET_MASTER_KEY": "true",  # no auth, like llmux here
                "DISABLE_SCHEMA_UPDATE": "true",
                "NO_PROXY": "*", "no_proxy": "*",
            }
            t.start = lambda procs, cfg_path=cfg_path, env=env: procs.start(
                "litellm", [exe, "--config", cfg_path, "--host", "127.0.0.1", "--port", str(ports["litellm"]),
                            "--num_workers", str(workers)],
                env=env, cwd=a.run_dir)
        targets.append(t)

    if "portkey" in only:
        pkdir = os.path.join(tools, "portkey")
        entry = os.path.join(pkdir, "node_modules", "@portkey-ai", "gateway", "build", "start-server.js")
        t = Target("portkey", "Portkey gateway (OSS)", "`node build/start-server.js --headless`, one process (it has no "
                   "worker option); `x-portkey-provider: openai` + `x-portkey-custom-host`; @hono/node-server pinned "
                   "to 1.13.8 (with 1.19.x every streaming call fails: `TypeError: immutable`)")
        node = shutil.which("node")
        if not os.path.exists(entry) or not node:
            t.available, t.reason = False, notes.get("portkey", "not installed (bench/run installs it with npm)")
        else:
            try:
                with open(os.path.join(pkdir, "node_modules", "@portkey-ai", "gateway", "package.json")) as f:
                    t.version = "@portkey-ai/gateway " + json.load(f).get("version", "?")
            except (OSError, ValueError):
                pass
            try:
                with open(os.path.join(pkdir, "node_modules", "@hono", "node-server", "package.json")) as f:
                    t.version += ", @hono/node-server " + json.load(f).get("version", "?")
            except (OSError, ValueError):
                pass
            t.version += ", node " + cmd_version([node, "--version"])
            for k, p in up.items():
                t.urls[k] = (f"http://127.0.0.1:{ports['portkey']}{cc}", {
                    "x-portkey-provider": "openai",
                    "x-portkey-custom-host": f"http://127.0.0.1:{p}/v1",
                    "authorization": "Bearer sk-bench",
                })
            t.start = lambda procs, node=node, entry=entry: procs.start(
                "portkey", [node, entry, f"--port={ports['portkey']}", "--headless"],
                env={"NODE_ENV": "production"}, cwd=pkdir)
        targets.append(t)

    order = {n: i for i, n in enumerate(only)}
    targets.sort(key=lambda t: order.get(t.name, 99))
    return targets


# ------------------------------------------------------------------------------ measuring

def get_series(mem, name):
    return (mem.get(name) or {}).get("series") or []


def rotate(items, r):
    """Round r starts r places further along, so no target always follows the same one."""
    if not items:
        return items
    k = r % len(items)
    return items[k:] + items[:k]


class RssSampler:
    """Samples the group's summed VmRSS every 100 ms in a thread; stop() returns the peak, and
    `series` holds every sample as [seconds since t0, KiB]."""

    def __init__(self, proc, t0=None):
        self.proc, self.peak, self.done = proc, 0, threading.Event()
        self.t0 = time.time() if t0 is None else t0
        self.series = []
        self.th = threading.Thread(target=self.loop, daemon=True)
        self.th.start()

    def loop(self):
        while not self.done.is_set():
            v = self.proc.rss_kib()
            self.series.append([round(time.time() - self.t0, 3), v])
            self.peak = max(self.peak, v)
            self.done.wait(0.1)

    def stop(self):
        self.done.set()
        self.th.join(timeout=2)
        return self.peak


def ss_lines(args):
    """`ss -tnH ARGS` lines split in fields ([] when ss is missing or fails)."""
    try:
        r = subprocess.run(["ss", "-tnH"] + args, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line.split() for line in r.stdout.splitlines() if line.strip()]


def time_wait_to(port):
    """TIME-WAIT sockets whose peer is 127.0.0.1:PORT, as a set of (local, peer)."""
    return {(f[2], f[3]) for f in ss_lines(["state", "time-wait", "(", "dport", "=", f":{port}", ")"]) if len(f) >= 4}


CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_ticks(proc):
    """(user, system) CPU clock ticks used so far by every process of the target (and every
    thread: /proc/PID/stat counts the whole process)."""
    user = system = 0
    for pid in proc.pids():
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                rest = f.read().decode("ascii", "replace").rsplit(")", 1)[1].split()
            user, system = user + int(rest[11]), system + int(rest[12])
        except (OSError, IndexError, ValueError):
            continue
    return user, system


def cpu_per_call(before, after, res):
    """The target's CPU time per call answered during a load run, in µs (user, system): what
    its throughput on shared cores comes down to."""
    calls = res.get("ok")
    if not calls:
        return {}
    per = lambda i: (after[i] - before[i]) / CLK_TCK / calls * 1e6  # noqa: E731
    return {"cpu_user_us": per(0), "cpu_sys_us": per(1)}


def median_of(rows, key):
    vals = sorted(x[key] for x in rows if x.get(key) is not None)
    return quantile(vals, 0.5) if vals else None


class ConnSampler:
    """Connection reuse: every 250 ms, the established TCP connections from the target's
    processes to the upstream port (`ss -tnpH`, filtered by pid). A pool that reuses its
    connections shows as many distinct local (ephemeral) ports as it has open; a churning one
    shows more, and leaves TIME-WAIT sockets to the upstream behind."""

    def __init__(self, proc, port):
        self.proc, self.port = proc, port
        self.pids = set(proc.pids())
        self.tw_before = time_wait_to(port)
        self.counts, self.ports, self.done = [], set(), threading.Event()
        self.tw_during = 0
        self.th = threading.Thread(target=self.loop, daemon=True)
        self.th.start()

    def sample(self):
        seen = set()
        for f in ss_lines(["-p", "state", "established", "(", "dport", "=", f":{self.port}", ")"]):
            if len(f) < 5:
                continue
            users = " ".join(f[4:])
            if any(f"pid={p}," in users for p in self.pids):
                seen.add(f[2].rsplit(":", 1)[-1])
        return seen

    def loop(self):
        self.done.wait(0.3)  # the load generator's connections are up by then
        while not self.done.is_set():
            seen = self.sample()
            self.counts.append(len(seen))
            self.ports |= seen
            # Closed while the load ran: churn. (When the load generator stops, the calls in
            # flight are cut and their upstream connections closed: that is not churn.)
            self.tw_during = len(time_wait_to(self.port) - self.tw_before)
            self.done.wait(0.25)

    def stop(self):
        self.done.set()
        self.th.join(timeout=5)
        after = self.sample()  # once the load has stopped: what the pool keeps
        tw = time_wait_to(self.port) - self.tw_before
        if not self.counts:
            return {"error": "no samples (is `ss` from iproute2 installed?)"}
        peak = max(self.counts)
        return {
            "upstream_port": self.port,
            "samples": len(self.counts),
            "open_peak": peak,
            "open_median": quantile(sorted(self.counts), 0.5),
            "open_after": len(after),
            "distinct": len(self.ports),
            "churn": len(self.ports) - peak,
            "time_wait_new": len(tw),
            "time_wait_during": self.tw_during,
        }


class LoadGen:
    def __init__(self, kind, oha, wrk, raw, run_dir):
        self.kind, self.oha, self.wrk, self.raw, self.run_dir = kind, oha, wrk, raw, run_dir

    def run(self, tag, url, headers, body_s, conns, duration, rate=None, raw_samples=False):
        if self.kind == "oha":
            return self.run_oha(tag, url, headers, body_s, conns, duration, rate, raw_samples)
        return self.run_wrk(tag, url, headers, body_s, conns, duration)

    def run_oha(self, tag, url, headers, body_s, conns, duration, rate, raw_samples):
        fmt = "csv" if raw_samples else "json"
        out = os.path.join(self.raw, f"oha-{tag}.{fmt}")
        argv = [self.oha, "--no-tui", "-z", f"{duration}s", "-c", str(conns), "-m", "POST", "-t", "10s",
                "-H", "content-type: application/json", "-d", body_s, "--output-format", fmt, "-o", out]
        for k, v in headers.items():
            argv += ["-H", f"{k}: {v}"]
        if rate:
            argv += ["-q", str(rate), "--latency-correction"]
        argv.append(url)
        try:
            r = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60)
        except subprocess.TimeoutExpired:
            return {"error": "oha did not finish in time"}
        if r.returncode != 0 or not os.path.exists(out):
            return {"error": f"oha exit {r.returncode}: {r.stderr.strip()[-300:]}"}
        if raw_samples:
            samples, non200, first, last = [], 0, None, None
            with open(out, newline="") as f:
                for row in csv.DictReader(f):
                    try:
                        start, dur, status = float(row["request-start"]), float(row["request-duration"]), row["status"]
                    except (KeyError, ValueError):
                        continue
                    if status == "200":
                        samples.append(dur * 1e6)
                        first = start if first is None else min(first, start)
                        last = start + dur if last is None else max(last, start + dur)
                    else:
                        non200 += 1
            span = (last - first) if samples and last > first else None
            return {"samples_us": samples, "n": len(samples), "non200": non200, "errors": non200,
                    "rps": (len(samples) / span) if span else None}
        with open(out) as f:
            j = json.load(f)
        codes = j.get("statusCodeDistribution", {}) or {}
        ok = codes.get("200", 0)
        total_t = j.get("summary", {}).get("total") or duration
        errs = {k: v for k, v in (j.get("errorDistribution") or {}).items() if "deadline" not in k}
        lp = j.get("latencyPercentiles", {}) or {}
        us = lambda k: (lp.get(k) * 1e6) if lp.get(k) is not None else None  # noqa: E731
        return {
            "rps": ok / total_t if total_t else None,
            "ok": ok,
            "non200": sum(v for k, v in codes.items() if k != "200"),
            "errors": sum(errs.values()),
            "error_kinds": errs,
            "p50": us("p50"), "p99": us("p99"), "p999": us("p99.9"),
            "rate": rate,
        }

    def run_wrk(self, tag, url, headers, body_s, conns, duration):
        script = os.path.join(self.run_dir, f"wrk-{tag}.lua")
        hdr_lines = "".join(f'wrk.headers["{k}"] = {json.dumps(v)}\n' for k, v in headers.items())
        with open(script, "w") as f:
            f.write('wrk.method = "POST"\n'
                    f"wrk.body = {json.dumps(body_s)}\n"
                    'wrk.headers["content-type"] = "application/json"\n'
                    f"{hdr_lines}"
                    "done = function(s, lat, req)\n"
                    "  local e = s.errors\n"
                    '  io.write(string.format("WRKJSON {\\"requests\\":%d,\\"duration_us\\":%d,\\"non200\\":%d,'
                    '\\"errors\\":%d,\\"p50\\":%d,\\"p99\\":%d,\\"p999\\":%d}\\n", s.requests, s.duration, e.status,'
                    " e.connect + e.read + e.write + e.timeout, lat:percentile(50), lat:percentile(99),"
                    " lat:percentile(99.9)))\nend\n")
        threads = min(2, conns)
        argv = [self.wrk, "-t", str(threads), "-c", str(conns), "-d", f"{max(1, int(round(duration)))}s", "-s", script, url]
        try:
            r = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60)
        except subprocess.TimeoutExpired:
            return {"error": "wrk did not finish in time"}
        with open(os.path.join(self.raw, f"wrk-{tag}.txt"), "w") as f:
            f.write(r.stdout + r.stderr)
        for line in r.stdout.splitlines():
            if line.startswith("WRKJSON "):
                j = json.loads(line[8:])
                ok = j["requests"] - j["non200"]
                return {"rps": ok / (j["duration_us"] / 1e6), "ok": ok, "non200": j["non200"], "errors": j["errors"],
                        "p50": j["p50"], "p99": j["p99"], "p999": j["p999"]}
        return {"error": f"wrk exit {r.returncode}: {r.stderr.strip()[-300:]}"}


def client(bin_client, mode, url, headers, body_s, out, extra, timeout):
    argv = [bin_client, mode, "--url", url, "--body", body_s, "--out", out, "--timeout", str(timeout)] + extra
    for k, v in headers.items():
        argv += ["-H", f"{k}: {v}"]
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout + 30)
    except subprocess.TimeoutExpired:
        return {"error": "bench-client did not finish in time"}
    if r.returncode != 0 or not os.path.exists(out):
        return {"error": f"bench-client exit {r.returncode}: {r.stderr.strip()[-300:]}"}
    with open(out) as f:
        return json.load(f)


def machine(root, nginx, oha, wrk, loadgen, tools):
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem_kib = 0
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    mem_kib = int(line.split()[1])
    except OSError:
        pass
    git = cmd_version(["git", "-C", root, "rev-parse", "--short", "HEAD"])
    dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                           text=True).stdout.strip()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kib / 1048576, 1),
        "kernel": platform.release(),
        "os": cmd_version(["bash", "-c", ". /etc/os-release 2>/dev/null && echo $PRETTY_NAME"]),
        "git": git + (" (with uncommitted changes)" if dirty else ""),
        "rustc": cmd_version(["rustc", "--version"]),
        "loadgen": (cmd_version([oha, "--version"]) if loadgen == "oha" else cmd_version([wrk, "-v"])),
        "nginx": cmd_version([nginx, "-v"]) if nginx else "not installed",
        "python": platform.python_version(),
    }


if __name__ == "__main__":
    main()
