"""Writes bench/results/latest.md and the SVG plots from a run's summary (stdlib only)."""

import html
import math
import os
import time

MB = 1_000_000  # targets are stated in MB (decimal)


# ------------------------------------------------------------------------------ formatting

def us(v):
    if v is None:
        return "—"
    if abs(v) >= 1000:
        return f"{v / 1000:.2f} ms"
    return f"{v:.0f} µs"


def signed_us(v):
    if v is None:
        return "—"
    s = "+" if v >= 0 else "−"
    return s + us(abs(v))


def rps(v):
    return "—" if v is None else f"{v:,.0f}"


def mb(kib):
    return "—" if not kib else f"{kib * 1024 / MB:.1f} MB"


def xfmt(x):
    return f"{x:.2f}×" if x >= 0.1 else f"{x:.2g}×"


def ratio(v, ref):
    if v is None or ref in (None, 0):
        return "—"
    return xfmt(v / ref)


def verdict(ok):
    if ok == "info":
        return "info"
    return "n/a" if ok is None else ("**PASS**" if ok else "**MISS**")


def get(d, *path):
    for p in path:
        if not isinstance(d, dict) or p not in d:
            return None
        d = d[p]
    return d


# ------------------------------------------------------------------------------ report

def write(run, results_dir, raw):
    names = run["targets"]
    live = [n for n in names if n not in run["unavailable"]]
    label = run.get("labels", {})
    lat = run.get("latency_c1", {})
    thr = run.get("throughput", {})
    rates = run.get("rates", {})
    st = run.get("streaming", {})
    mem = run.get("memory", {})
    hold = run.get("hold", {})
    conns = run.get("connections", {})
    cfg = run["cfg"]
    N = run.get("hold_streams", cfg.get("hold_streams"))
    ref = "nginx" if "nginx" in live else None
    L = []
    w = L.append

    m = run.get("machine", {})
    mode = "quick (`bench/run --quick`: smoke run, short and few rounds)" if cfg["quick"] else "full (`bench/run`)"
    w(f"# llmux benchmark — {time.strftime('%Y-%m-%d %H:%M', time.strptime(run['stamp'], '%Y%m%d-%H%M%S'))}")
    w("")
    w(f"Mode: {mode}. Setup (installs, build) {run.get('setup_seconds', 0)} s, measuring "
      f"{run.get('measure_seconds', 0)} s. Raw data: `bench/results/raw/{run['stamp']}/` (git-ignored).")
    w("")
    w("| machine | |")
    w("|---|---|")
    w(f"| CPU | {m.get('cpu', '?')} |")
    w(f"| cores | {m.get('cores', '?')} (shared by load generator, upstream and target) |")
    w(f"| memory | {m.get('memory_gib', '?')} GiB |")
    w(f"| kernel / OS | {m.get('kernel', '?')} / {m.get('os', '?')} |")
    w(f"| llmux | {run.get('versions', {}).get('llmux', '') or '?'}, git {m.get('git', '?')}, {m.get('rustc', '')} |")
    w(f"| load generator | {m.get('loadgen', '?')} |")
    w(f"| nginx | {m.get('nginx', '?')} |")
    for n in names:
        if n in ("litellm", "portkey"):
            w(f"| {n} | {run.get('versions', {}).get(n) or run['unavailable'].get(n, '?')} |")
    w(f"| Python (report) | {m.get('python', '?')} |")
    w("")
    up = run.get("upstream", "nginx")
    w("Upstream for non-streaming calls: " + (
        "**nginx returning a fixed chat-completion JSON** (`return 200 '…'`, neutral, zero delay)." if up == "nginx"
        else "**`llmux mock` in fast mode** (zero delay).") +
      f" Streaming: `llmux mock --chunks 100 --chunk-delay 0.01`. Held-open streams: `llmux mock --chunks 30 --chunk-delay 1`."
      " Every request is `POST /v1/chat/completions` with a small JSON body, over loopback, HTTP/1.1 keep-alive.")
    w("")
    w("| target | setup |")
    w("|---|---|")
    for n in names:
        why = run["unavailable"].get(n)
        w(f"| {label.get(n, n)} | " + (f"**not measured: {why}**" if why else run.get("target_notes", {}).get(n, "")) + " |")
    w("")

    # -------------------------------------------------------------- targets
    # Issue #15's targets ("at nginx's floor"), each a ratio or value from this run. Rows with
    # ok = "info" are shown for information and carry no verdict.
    checks = []

    def lat_q(n, q):
        return get(lat, n, q)

    def why_not(n):
        return f"{n} not measured" + (f": {run['unavailable'][n]}" if n in run["unavailable"] else "")

    lx, ng = "llmux", ref
    if lx in live:
        for c in ("32", "128"):
            a, b = get(thr, lx, c, "rps"), get(thr, ng, c, "rps") if ng else None
            checks.append((f"throughput at c={c} ≥ 1.0× nginx's", f"{rps(a)} vs {rps(b)} calls/s ({ratio(a, b)})",
                           None if a is None or b is None else a >= b))
        for q in ("p50", "p99"):
            a, b = lat_q(lx, q), lat_q(ng, q) if ng else None
            checks.append((f"latency at c=1, {q} ≤ 1.0× nginx's", f"{us(a)} vs {us(b)} ({ratio(a, b)})",
                           None if a is None or b is None else a <= b))
        a, b = get(rates, lx, "5000", "p99"), get(rates, ng, "5000", "p99") if ng else None
        why = get(rates, lx, "5000", "skipped") or get(rates, lx, "5000", "error")
        checks.append(("open loop at 5,000 calls/s, p99 ≤ 1.0× nginx's",
                       f"not measured: {why}" if why else f"{us(a)} vs {us(b)} ({ratio(a, b)})",
                       None if a is None or b is None else a <= b))
        h = hold.get(lx, {})
        hk = h.get("rss_kib")
        all_open = h.get("open_at_sample") == h.get("requested") and h.get("requested") == N
        checks.append((f"RSS with {N:,} open streams ≤ 150 MB",
                       (f"{mb(hk)} with {h.get('open_at_sample', 0):,} of {h.get('requested', N):,} streams open"
                        if hk else f"not measured: {h.get('error', 'no data')}"),
                       None if not hk else (hk * 1024 <= 150 * MB and all_open)))
        parts, oks = [], []
        for n in [x for x in live if x == lx or x.startswith("llmux-")]:
            pk = get(mem, n, "load_kib")
            if pk:
                parts.append(f"{n} {mb(pk)} (start → end {mb(get(mem, n, 'load_start_kib'))} → "
                             f"{mb(get(mem, n, 'load_end_kib'))})")
                oks.append(pk * 1024 <= 60 * MB)
        checks.append(("RSS under load (c=128), file-backed SQLite store, peak ≤ 60 MB (llmux and every llmux-NAME)",
                       "; ".join(parts) or "not measured", all(oks) if oks else None))
        plain = get(thr, lx, "32", "rps")
        featured = get(thr, "llmux-features", "32", "rps")
        if plain and featured:
            checks.append(("auth + limits + call log on (llmux-features) ≥ 0.95× plain llmux (c=32 throughput)",
                           f"{featured:,.0f} vs {plain:,.0f} calls/s ({featured / plain:.2f}×)",
                           featured >= 0.95 * plain))
        else:
            checks.append(("auth + limits + call log on (llmux-features) ≥ 0.95× plain llmux",
                           "not measured (needs the llmux-features target)", None))
        t_l, t_d = get(st, lx, "ttft_p99"), get(st, "direct", "ttft_p99")
        add = (t_l - t_d) if t_l is not None and t_d is not None else None
        checks.append(("added time to first token, p99 ≤ +150 µs", f"{signed_us(add)} ({us(t_l)} vs direct {us(t_d)})",
                       None if add is None else add <= 150))
        su = run.get("startup") or {}
        if su.get("listen_ms") is not None:
            checks.append(("start-up with one unresponsive upstream (health.timeout 5 s): listening ≤ 100 ms",
                           f"listening after {su['listen_ms']:.0f} ms, first 200 after "
                           + (f"{su['first_200_ms']:.0f} ms" if su.get("first_200_ms") is not None else "— (none)")
                           + f" (median of {len(su.get('runs', []))} starts)",
                           su["listen_ms"] <= 100))
        else:
            checks.append(("start-up with one unresponsive upstream: listening ≤ 100 ms",
                           "not measured" + (f": {'; '.join(su['errors'])}" if su.get("errors") else ""), None))
        # information rows
        for other in ("litellm", "portkey"):
            b = get(thr, other, "32", "rps")
            checks.append((f"throughput at c=32 vs {other}",
                           f"{rps(plain)} vs {rps(b)} calls/s ({ratio(plain, b)})" if plain and b else why_not(other),
                           "info"))
        gd = gap_deltas(st, lx)
        if gd:
            ev_l, ev_d = get(st, lx, "events_per_stream"), get(st, "direct", "events_per_stream")
            checks.append(("inter-chunk gaps vs direct (Δ p1 · p50 · p99; events per stream)",
                           ", ".join(f"Δ{k} {signed_us(v)}" for k, v in gd.items()) +
                           f"; {ev_l:.1f} vs {ev_d:.1f} events/stream", "info"))
        checks.append(("RSS idle", mb(get(mem, lx, "idle_kib")), "info"))
        cl, cn = get(thr, lx, "32") or {}, get(thr, "nginx", "32") or {}
        if cl.get("cpu_user_us") is not None and cn.get("cpu_user_us") is not None:
            tl = cl["cpu_user_us"] + (cl.get("cpu_sys_us") or 0)
            tn = cn["cpu_user_us"] + (cn.get("cpu_sys_us") or 0)
            checks.append(("CPU per call at c=32 (user + system) vs nginx's",
                           f"{tl:.0f} µs ({cl['cpu_user_us']:.0f} + {cl.get('cpu_sys_us') or 0:.0f}) vs {tn:.0f} µs "
                           f"({cn['cpu_user_us']:.0f} + {cn.get('cpu_sys_us') or 0:.0f}) ({ratio(tl, tn)})", "info"))
        cr = (conns.get(lx) or [None])[0]
        if cr and "error" not in cr:
            checks.append(("upstream connection reuse at c=128", conn_line(cr) + (" — the pool churns" if churns(cr)
                                                                                  else " — no churn"), "info"))
    w("## Targets (issue #15: llmux at nginx's floor; ratios measured in this run)")
    w("")
    if not checks:
        w("llmux was not measured in this run.")
    else:
        w("| target | measured | result |")
        w("|---|---|---|")
        for name, meas, ok in checks:
            w(f"| {name} | {meas} | {verdict(ok)} |")
        judged = [ok for _, _, ok in checks if ok in (True, False)]
        w("")
        w(f"{sum(judged)} of {len(judged)} measured targets met"
          + (f"; {sum(1 for _, _, ok in checks if ok is None)} not measured." if any(ok is None for _, _, ok in checks)
             else "."))
        if not all(judged):
            w("")
            w("What a miss comes from is measured below (CPU per call in the throughput table, the by-stage profile "
              "with `--profile`, RSS over time) and explained target by target, with the counts and profiles behind "
              "each, in `docs/performance.md` (\"Targets missed, and why\").")
    w("")

    # -------------------------------------------------------------- latency c=1
    w("## Latency at concurrency 1")
    w("")
    lg = run.get("loadgen", "oha")
    w(f"`{lg} -c 1`, {cfg['lat_rounds']} interleaved round(s) of {cfg['duration']} s per target; percentiles over all "
      "calls of all rounds. *Added* = this target's percentile minus direct's.")
    w("")
    w("| target | p50 | p99 | p99.9 | added p50 | added p99 | added p99.9 | p50 ÷ nginx | p99 ÷ nginx | calls |")
    w("|---|---|---|---|---|---|---|---|---|---|")
    for n in live:
        d = lat.get(n, {})
        dd = lat.get("direct", {})
        add = lambda q: (d[q] - dd[q]) if d.get(q) is not None and dd.get(q) is not None and n != "direct" else None  # noqa
        w(f"| {label.get(n, n)} | {us(d.get('p50'))} | {us(d.get('p99'))} | {us(d.get('p999'))} | "
          f"{signed_us(add('p50'))} | {signed_us(add('p99'))} | {signed_us(add('p999'))} | "
          f"{ratio(d.get('p50'), lat_q(ref, 'p50') if ref else None)} | {ratio(d.get('p99'), lat_q(ref, 'p99') if ref else None)} | "
          f"{d.get('n', 0):,}" + (f" ({d['errors']} errors)" if d.get("errors") else "") + " |")
    w("")

    # -------------------------------------------------------------- throughput
    w("## Throughput (closed loop)")
    w("")
    w(f"`{lg} -c 32` and `-c 128`, {cfg['thr_rounds']} interleaved round(s) of {cfg['duration']} s; calls/s answered 200 "
      "(median over rounds), latency percentiles of the median round.")
    w("")
    w("*CPU per call*: the target's own processes' CPU time (`/proc/PID/stat`, user + system) during the c=32 runs "
      "divided by the calls answered (median over rounds); on cores shared with the load generator and the upstream, "
      "throughput comes down to it.")
    w("")
    w("| target | c=32 calls/s | ÷ nginx | c=32 p99 | CPU per call (c=32): user + system | ÷ nginx | c=128 calls/s | ÷ nginx "
      "| c=128 p99 | errors |")
    w("|---|---|---|---|---|---|---|---|---|---|")

    def cpu(n):
        r = get(thr, n, "32") or {}
        if r.get("cpu_user_us") is None:
            return None, "—"
        u, k = r["cpu_user_us"], r.get("cpu_sys_us") or 0
        return u + k, f"{u + k:.0f} µs ({u:.0f} + {k:.0f})"
    for n in live:
        r32, r128 = get(thr, n, "32") or {}, get(thr, n, "128") or {}
        errs = (r32.get("errors") or 0) + (r128.get("errors") or 0)
        total, shown = cpu(n)
        w(f"| {label.get(n, n)} | {rps(r32.get('rps'))} | {ratio(r32.get('rps'), get(thr, ref, '32', 'rps') if ref else None)} | "
          f"{us(r32.get('p99'))} | {shown} | {ratio(total, cpu(ref)[0] if ref else None)} | {rps(r128.get('rps'))} | "
          f"{ratio(r128.get('rps'), get(thr, ref, '128', 'rps') if ref else None)} | {us(r128.get('p99'))} | {errs} |")
    w("")

    # -------------------------------------------------------------- scaling
    sc_names = [n for n in run.get("scaling_targets", []) if n in live]
    levels = run["cfg"].get("scaling") or []
    if sc_names and levels:
        w("## Scaling: throughput by concurrency")
        w("")
        w(f"`{lg} -c N` for N in {', '.join(map(str, levels))}, the same interleaved rounds and duration as above; "
          "calls/s answered 200 (median over rounds) and the ratio to nginx at the same concurrency. The c=512 point "
          "needs the raised open-files limit `bench/run` sets.")
        w("")
        w("| target | " + " | ".join(f"c={c}" for c in levels) + " |")
        w("|---|" + "---|" * len(levels))
        for n in sc_names:
            cells = []
            for c in levels:
                v = get(thr, n, str(c), "rps")
                r = ratio(v, get(thr, ref, str(c), "rps")) if ref and n != ref else ""
                errs = get(thr, n, str(c), "errors")
                cells.append(rps(v) + (f" ({r})" if r and r != "—" else "") + (f", {errs} errors" if errs else ""))
            w(f"| {label.get(n, n)} | " + " | ".join(cells) + " |")
        w("")

    # -------------------------------------------------------------- rates
    w("## Latency at fixed rates (open loop)")
    w("")
    w(f"`oha -q RATE --latency-correction -c 64`, {cfg['rate_duration']} s per target (latency counted from when each "
      "call was due, so queueing is not hidden). A target whose closed-loop maximum is below 90 % of the rate is not run.")
    w("")
    w("| target | " + " | ".join(f"{r:,}/s: p50 · p99 · p99.9 | achieved | p99 ÷ nginx" for r in cfg["rates"]) + " |")
    w("|---|" + "---|---|---|" * len(cfg["rates"]))
    for n in live:
        cells = []
        for r in cfg["rates"]:
            d = get(rates, n, str(r)) or {}
            if "skipped" in d or "error" in d:
                cells += [d.get("skipped") or d.get("error"), "—", "—"]
            else:
                cells += [f"{us(d.get('p50'))} · {us(d.get('p99'))} · {us(d.get('p999'))}", rps(d.get("rps")) + "/s",
                          ratio(d.get("p99"), get(rates, ref, str(r), "p99") if ref else None)]
        w(f"| {label.get(n, n)} | " + " | ".join(cells) + " |")
    w("")

    # -------------------------------------------------------------- streaming
    w("## Streaming: time to first token and inter-chunk gaps")
    w("")
    w(f"`bench-client stream` (bench/client): {cfg['stream_rounds']} interleaved round(s) of {cfg['streams_per_round']} "
      f"streams, {cfg['stream_concurrency']} at a time, after {cfg['stream_concurrency']} warm-up streams (so the "
      "connections are pooled: TTFT is the warm path); upstream sends 100 chunks 10 ms apart. Times are taken per SSE "
      "event (split on the blank line), not per TCP read. TTFT = request sent → first event. Δ = this target's gap "
      "percentile minus direct's (coalesced events show as a lower p1, delayed ones as a higher p99).")
    w("")
    w("| target | streams | events/stream | TTFT p50 | TTFT p99 | added TTFT p50 | added TTFT p99 | TTFT p99 ÷ nginx | "
      "gap p1 · p50 · p99 | Δgap p1 · p50 · p99 |")
    w("|---|---|---|---|---|---|---|---|---|---|")
    for n in live:
        d = st.get(n)
        if not d:
            continue
        dd = st.get("direct", {})
        add = lambda q: (d[q] - dd[q]) if d.get(q) is not None and dd.get(q) is not None and n != "direct" else None  # noqa
        gd = gap_deltas(st, n) if n != "direct" else None
        fails = d.get("failed", 0) + len([e for e in d.get("errors", []) if e.startswith("bench-client")])
        streams = f"{d.get('n_streams', 0)}" + (f" ({d.get('failed')} failed)" if d.get("failed") else "")
        if not d.get("n_streams"):
            err = (d.get("errors") or ["no stream completed"])[0]
            err = err[:200].replace("|", "/").replace("\n", " ")
            w(f"| {label.get(n, n)} | 0{f' ({fails} failed)' if fails else ''} | **failed: {err}** "
              "| — | — | — | — | — | — | — |")
            continue
        ev = d.get("events_per_stream")
        w(f"| {label.get(n, n)} | {streams} | {ev:.1f} | {us(d.get('ttft_p50'))} | {us(d.get('ttft_p99'))} | "
          f"{signed_us(add('ttft_p50'))} | {signed_us(add('ttft_p99'))} | "
          f"{ratio(d.get('ttft_p99'), get(st, ref, 'ttft_p99') if ref else None)} | "
          f"{us(d.get('gap_p1'))} · {us(d.get('gap_p50'))} · {us(d.get('gap_p99'))} | "
          + (" · ".join(signed_us(v) for v in gd.values()) if gd else "—") + " |")
    w("")

    # -------------------------------------------------------------- memory
    w("## Memory (VmRSS)")
    w("")
    w("From `/proc/PID/status`, summed over the target's processes (nginx: master + workers; LiteLLM: every "
      "process it started). llmux targets run on a file-backed SQLite store. *Idle*: after start-up and one call. "
      "*Under load*: peak sampled every 100 ms during the c=128 runs; *start → end*: the first sample of the first "
      "c=128 run and the last of the last, so growth shows (every load test's series is in "
      "`memory_over_time.svg` and `summary.json`). "
      f"*{N:,} open streams*: `bench-client hold` opens {N:,} slow streams (30 chunks, 1 s apart), "
      "waits until every one has delivered its first event, counts them, then reads RSS and the target's open "
      "descriptors while they are all open.")
    w("")
    w(f"| target | idle | ÷ nginx | under load (c=128), peak | ÷ nginx | c=128 start → end | {N:,} open streams | ÷ nginx | streams open at sample | target fds | time to open all |")
    w("|---|---|---|---|---|---|---|---|---|---|---|")
    for n in live:
        if n == "direct":
            continue
        d = mem.get(n, {})
        h = hold.get(n, {})
        rk = lambda k: get(mem, ref, k) if ref else None  # noqa
        open_s = (f"{h.get('open_at_sample', 0):,} / {h.get('requested', 0):,}" if "requested" in h
                  else ("—" if n not in hold else f"failed: {h.get('error', '')[:120]}"))
        if h.get("fds") and h.get("fds_before") is not None:
            fds = f"{h['fds']:,} (before: {h['fds_before']:,})"
        else:
            fds = f"{h['fds']:,}" if h.get("fds") else "—"
        to_open = f"{h['seconds_to_open']:.1f} s" if h.get("seconds_to_open") else "—"
        w(f"| {label.get(n, n)} | {mb(d.get('idle_kib'))} | {ratio(d.get('idle_kib'), rk('idle_kib'))} | "
          f"{mb(d.get('load_kib'))} | {ratio(d.get('load_kib'), rk('load_kib'))} | "
          f"{growth(d.get('load_start_kib'), d.get('load_end_kib'))} | {mb(d.get('hold_kib'))} | "
          f"{ratio(d.get('hold_kib'), rk('hold_kib'))} | {open_s} | {fds} | {to_open} |")
    w("")

    # -------------------------------------------------------------- connection reuse
    w("## Upstream connection reuse (c=128)")
    w("")
    w("During each c=128 run, every 250 ms, `ss -tnp` lists the established connections from the target's "
      "processes to the non-streaming upstream's port. *Open*: the most seen at once; *distinct*: local "
      "(ephemeral) ports seen across all samples — a pool that reuses its connections shows about as many as it "
      "holds open; *churn* = distinct − open; *TIME-WAIT*: sockets to the upstream port left in TIME-WAIT that were "
      "not there before the run (connections the target closed), at the last sample while the load ran and once it "
      "stopped — the calls in flight when the load generator stops are cut, and their upstream connections closed, "
      "so only the first figure says the pool churns. Idle pooled connections count as open: in "
      "rounds after the first, the pool may still hold what the c=512 run opened. The summary lines and the "
      "targets table use the first round.")
    w("")
    cnames = [n for n in live if conns.get(n)]
    if not cnames:
        w("Not measured in this run.")
    else:
        w("| target | round | open (peak · median · after the run) | distinct seen | churn | new TIME-WAIT (during · after the run) | samples | pool |")
        w("|---|---|---|---|---|---|---|---|")
        for n in cnames:
            for cr in conns[n]:
                rnd = cr.get("round", 0) + 1
                if "error" in cr:
                    w(f"| {label.get(n, n)} | {rnd} | {cr['error']} | — | — | — | — | — |")
                    continue
                w(f"| {label.get(n, n)} | {rnd} | {cr['open_peak']} · {cr['open_median']:.0f} · {cr['open_after']} | "
                  f"{cr['distinct']} | {cr['churn']} | {cr.get('time_wait_during', '—')} · {cr['time_wait_new']} | {cr['samples']} | "
                  f"{'**churns**' if churns(cr) else 'reused'} |")
        w("")
        for n in cnames:
            cr = conns[n][0]
            if "error" not in cr:
                w(f"- upstream connections at c=128 ({n}): {conn_line(cr)}; "
                  + ("**the pool churns**." if churns(cr) else "the pool does not churn."))
    w("")

    # -------------------------------------------------------------- start-up
    su = run.get("startup")
    w("## Start-up with one unresponsive upstream")
    w("")
    if not su:
        w("Not measured in this run (needs the llmux target).")
    else:
        w(f"`llmux serve` with `bench/configs/startup.toml.in`: one upstream that accepts TCP connections and never "
          f"answers (a socket of the harness), one good one, `[health] timeout = \"{su.get('health_timeout_s', 5)}s\"`. "
          "Time from spawning the process to its port accepting a TCP connection (polled every 1 ms), and to the "
          "first 200 on `/v1/chat/completions` for the good model (polled every 2 ms). File-backed store, created by "
          "the first start. Target: listening ≤ 100 ms.")
        w("")
        w("| | median | max | per start |")
        w("|---|---|---|---|")
        for k, lab in (("listen_ms", "listening"), ("first_200_ms", "first 200 (good model)"),
                       ("stop_ms", "stop: SIGTERM → exit (SIGKILL after 5 s)")):
            per = ", ".join(f"{r[k]:.0f}" if k in r else "—" for r in su.get("runs", []))
            med, mx = su.get(k), su.get(k + "_max")
            w(f"| {lab} | {'—' if med is None else f'{med:.1f} ms'} | {'—' if mx is None else f'{mx:.1f} ms'} | {per} ms |")
        slow = [r["first_200_ms"] for r in su.get("runs", []) if r.get("first_200_ms", 0) >= 1000]
        if slow:
            w("")
            w(f"**{len(slow)} of {len(su.get('runs', []))} starts answered the good model only after "
              f"{', '.join(f'{x / 1000:.2f} s' for x in slow)}** (close to `health.timeout`).")
        killed = sum(1 for r in su.get("runs", []) if r.get("killed"))
        if killed:
            w("")
            w(f"**{killed} of {len(su.get('runs', []))} starts did not exit within 5 s of SIGTERM** and were killed.")
        if su.get("errors"):
            w("")
            w("Errors: " + "; ".join(e.replace("|", "/").replace("\n", " ")[:200] for e in su["errors"]))
        w(f"\nThe unresponsive upstream held {su.get('dead_connections', 0)} connection(s) from llmux over the starts.")
    w("")

    # -------------------------------------------------------------- features
    w("## Price of features (auth + limits + call log, on vs off)")
    w("")
    variants = [n for n in live if n.startswith("llmux-")]
    if not variants:
        w("| llmux config | result |")
        w("|---|---|")
        w("| auth + limits + call log on vs off | **not measured in this run** (run with the `llmux-features` target) |")
        w("")
        w("`bench/configs/llmux-features.toml.in` turns the features on (a virtual key made through the admin API "
          "before the run, per-IP/global/per-key limits far above the load, the call log); every test runs against "
          "it too, and this section compares it with `llmux`.")
    else:
        w("| llmux config | c=1 p50 | c=1 p99 | c=32 calls/s | ÷ llmux | TTFT p99 | idle RSS | RSS, open streams |")
        w("|---|---|---|---|---|---|---|---|")
        for n in ["llmux"] + variants:
            if n not in live:
                continue
            w(f"| {n} | {us(lat_q(n, 'p50'))} | {us(lat_q(n, 'p99'))} | {rps(get(thr, n, '32', 'rps'))} | "
              f"{ratio(get(thr, n, '32', 'rps'), get(thr, 'llmux', '32', 'rps'))} | {us(get(st, n, 'ttft_p99'))} | "
              f"{mb(get(mem, n, 'idle_kib'))} | {mb(get(mem, n, 'hold_kib'))} |")
    w("")

    # -------------------------------------------------------------- profile
    pr = run.get("profile")
    if pr:
        w("## Where the time goes (`--profile`)")
        w("")
        if "error" in pr:
            w(f"Not profiled: {pr['error']}")
        else:
            ld = pr.get("load") or {}
            w(f"`perf record -F {pr['frequency']} --call-graph dwarf -p PID` on llmux for {pr['seconds']} s while `oha -c 32` runs "
              f"({rps(ld.get('rps'))} calls/s, p99 {us(ld.get('p99'))}); {pr.get('samples') or '?'} samples. "
              f"**User {user_share(pr):.0f} %, kernel {100 - user_share(pr):.0f} %** of the samples. Self time "
              f"(`perf report --no-children --sort dso,symbol`); the full report with call graphs is "
              f"`raw/{run['stamp']}/{pr.get('report', 'perf-report.txt')}`"
              + (f", the flame graph `{pr['flamegraph']}`." if pr.get("flamegraph") else
                 f" ({pr.get('flamegraph_error', 'no flame graph')})."))
            w("")
            w("| # | self % | where | object | symbol |")
            w("|---|---|---|---|---|")
            for i, row in enumerate(pr.get("top", []), 1):
                sym = row["symbol"].replace("|", "\\|")
                if len(sym) > 110:
                    sym = sym[:107] + "…"
                w(f"| {i} | {row['pct']:.2f} % | {row['kind']} | {row['dso']} | `{sym}` |")
            if pr.get("stages"):
                w("")
                w("**By stage of a call** (`bench/lib/stages.py` over the profile's stacks): each stack counts "
                  "for the first stage it passes through, so a system call's kernel time is charged to the stage "
                  "that made it; *kernel* is that part of the stage's own share.")
                w("")
                w("| stage | share of llmux's samples | of which kernel |")
                w("|---|---|---|")
                for row in pr["stages"]:
                    w(f"| {row['stage']} | {row['pct']:.1f} % | {row['kernel_pct']:.0f} % |")
        w("")

    # -------------------------------------------------------------- plots + notes
    plots = make_plots(run, live, results_dir, ref)
    if plots:
        w("## Plots")
        w("")
        for fname, title in plots:
            w(f"![{title}]({fname})")
            w("")
    w("## Notes")
    w("")
    notes = list(run.get("notes", []))
    for n, why in run["unavailable"].items():
        notes.append(f"{n} not measured: {why}")
    for n, e in (run.get("stream_errors") or {}).items():
        notes.append(f"{n}: a streaming call failed at start-up check: {e}")
    notes.append(f"nginx runs `worker_processes {get(run, 'setup', 'nginx_workers')}` (one per core, the same parallelism "
                 "as llmux's 2-thread tokio runtime), both as proxy and as the neutral upstream.")
    notes.append("All processes share the machine's cores: the load generator and the upstream take CPU from the "
                 "target, so absolute numbers are lower than on separate machines; the ratios are what carries over.")
    notes.append("Summed VmRSS counts pages shared between forked processes (nginx workers, uvicorn workers) once per process.")
    for x in notes:
        w(f"- {x}")
    w("")
    path = os.path.join(results_dir, "latest.md")
    with open(path, "w") as f:
        f.write("\n".join(L))
    with open(os.path.join(raw, "report.md"), "w") as f:
        f.write("\n".join(L))
    return path


def user_share(pr):
    tot = (pr.get("user_pct") or 0) + (pr.get("kernel_pct") or 0)
    return 100 * (pr.get("user_pct") or 0) / tot if tot else 0


def growth(a, b):
    if not a or not b:
        return "—"
    d = (b - a) * 1024 / MB
    return f"{mb(a)} → {mb(b)} ({'+' if d >= 0 else '−'}{abs(d):.1f} MB)"


def conn_line(cr):
    during = (f"{cr['time_wait_during']} new TIME-WAIT to the upstream while the load ran, "
              if cr.get("time_wait_during") is not None else "")
    return (f"{cr['open_peak']} open, {cr['distinct']} distinct seen (churn = {cr['churn']}), "
            f"{during}{cr['time_wait_new']} after it (calls cut when the load stopped)")


def churns(cr):
    """The pool churns when it used clearly more connections than it held open at once, or left
    connections to the upstream in TIME-WAIT while the load ran (a small slack for sampling every
    250 ms). The calls in flight when the load generator stops are cut, and their upstream
    connections closed: TIME-WAIT after the run counts only when the in-run figure is unknown."""
    slack = max(2, cr["open_peak"] // 10)
    tw = cr.get("time_wait_during", cr["time_wait_new"])
    return cr["churn"] > slack or tw > slack


def gap_deltas(st, n):
    d, dd = st.get(n, {}), st.get("direct", {})
    out = {}
    for k in ("p1", "p50", "p99"):
        a, b = d.get("gap_" + k), dd.get("gap_" + k)
        if a is None or b is None:
            return None
        out[k] = a - b
    return out


# ------------------------------------------------------------------------------ SVG

COLORS = ["#4878d0", "#ee854a", "#6acc64", "#d65f5f", "#956cb4", "#8c613c", "#dc7ec0"]


def hbar_svg(path, title, subtitle, cats, series, values, fmt, ref=None, log=True, vfmt=None):
    """Horizontal grouped bars. values[cat][series] may be None. Each bar is labelled with its
    value and, when `ref` (a category) has a value for that series, the ratio to it."""
    vals = [v for c in cats for s in series if (v := values.get(c, {}).get(s)) is not None and v > 0]
    if not vals:
        return False
    left, right, top, bar_h, gap, group_gap, plot_w = 190, 260, 62, 15, 3, 14, 460
    rows = sum(len(series) for _ in cats)
    height = top + rows * (bar_h + gap) + len(cats) * group_gap + 40
    width = left + plot_w + right
    if log:
        lo = 10 ** math.floor(math.log10(min(vals)))
        hi = 10 ** math.ceil(math.log10(max(vals)))
        if hi <= lo:
            hi = lo * 10
        xpos = lambda v: plot_w * (math.log10(max(v, lo)) - math.log10(lo)) / (math.log10(hi) - math.log10(lo))  # noqa
        ticks = [lo * 10 ** i for i in range(int(round(math.log10(hi / lo))) + 1)]
    else:
        hi = max(vals) * 1.1
        lo = 0
        xpos = lambda v: plot_w * max(v, 0) / hi  # noqa
        step = 10 ** math.floor(math.log10(hi))
        if hi / step < 3:
            step /= 5
        ticks = [i * step for i in range(int(hi / step) + 1)]
    o = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
         'font-family="sans-serif" font-size="12">',
         f'<rect width="{width}" height="{height}" fill="white"/>',
         f'<text x="{left}" y="20" font-size="15" font-weight="bold">{html.escape(title)}</text>',
         f'<text x="{left}" y="38" fill="#555">{html.escape(subtitle)}{" (log scale)" if log else ""}</text>']
    axis_y = height - 30
    for t in ticks:
        x = left + xpos(t)
        o.append(f'<line x1="{x:.1f}" y1="{top - 6}" x2="{x:.1f}" y2="{axis_y}" stroke="#ddd"/>')
        o.append(f'<text x="{x:.1f}" y="{axis_y + 14}" text-anchor="middle" fill="#555">{html.escape(fmt(t))}</text>')
    lx = left
    for i, s in enumerate(series):
        o.append(f'<rect x="{lx}" y="{top - 18}" width="10" height="10" fill="{COLORS[i % len(COLORS)]}"/>')
        o.append(f'<text x="{lx + 14}" y="{top - 9}">{html.escape(s)}</text>')
        lx += 30 + 7 * len(s)
    y = top
    for c in cats:
        gy = y
        for i, s in enumerate(series):
            v = values.get(c, {}).get(s)
            if v is not None and v > 0:
                bw = max(1.0, xpos(v))
                o.append(f'<rect x="{left}" y="{y}" width="{bw:.1f}" height="{bar_h}" fill="{COLORS[i % len(COLORS)]}"/>')
                r = values.get(ref, {}).get(s) if ref else None
                lab = (vfmt or fmt)(v) + (f"  ({xfmt(v / r)} nginx)" if r and c != ref else "")
                o.append(f'<text x="{left + bw + 5:.1f}" y="{y + bar_h - 3}">{html.escape(lab)}</text>')
            else:
                o.append(f'<text x="{left + 5}" y="{y + bar_h - 3}" fill="#999">not measured / not run</text>')
            y += bar_h + gap
        o.append(f'<text x="{left - 8}" y="{(gy + y) / 2 + 3:.1f}" text-anchor="end" font-weight="bold">{html.escape(c)}</text>')
        y += group_gap
    o.append(f'<line x1="{left}" y1="{top - 6}" x2="{left}" y2="{axis_y}" stroke="#333"/>')
    o.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(o))
    return True


def nice_ticks(hi, n=5):
    """0 … ≥ hi in about n round steps."""
    if hi <= 0:
        hi = 1
    raw = hi / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    return [i * step for i in range(int(math.ceil(hi / step)) + 1)]


def line_svg(path, title, subtitle, lines, xfmt, yfmt, xlog=False, xticks=None, vlines=(), ylabel="", xlabel="",
             markers=False, colors=None, vfmt=None):
    """Line plot in the style of hbar_svg. lines = [(name, [segment, …])], a segment being a list of
    (x, y); segments of one line share its colour (colors[name], else by position) and are not
    joined. vlines = [(x, label)]. Without markers the legend gives each line's last value (vfmt)."""
    pts = [p for _, segs in lines for sg in segs for p in sg if p[1] is not None]
    if xlog:
        pts = [p for p in pts if p[0] > 0]
    if not pts:
        return False
    left, right, top, bottom, plot_w, plot_h = 80, 240, 62, 50, 560, 300
    width, height = left + plot_w + right, top + plot_h + bottom
    xs = [p[0] for p in pts]
    x_lo, x_hi = min(xs), max(xs)
    if xlog:
        x_lo, x_hi = math.log10(x_lo), math.log10(x_hi)
    if x_hi <= x_lo:
        x_hi = x_lo + 1
    yt = nice_ticks(max(p[1] for p in pts) * 1.05)
    y_hi = yt[-1]

    def X(x):
        v = math.log10(x) if xlog else x
        return left + plot_w * (v - x_lo) / (x_hi - x_lo)

    def Y(y):
        return top + plot_h - plot_h * y / y_hi

    o = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
         'font-family="sans-serif" font-size="12">',
         f'<rect width="{width}" height="{height}" fill="white"/>',
         f'<text x="{left}" y="20" font-size="15" font-weight="bold">{html.escape(title)}</text>',
         f'<text x="{left}" y="38" fill="#555">{html.escape(subtitle)}{" (log scale)" if xlog else ""}</text>']
    for t in yt:
        o.append(f'<line x1="{left}" y1="{Y(t):.1f}" x2="{left + plot_w}" y2="{Y(t):.1f}" stroke="#ddd"/>')
        o.append(f'<text x="{left - 6}" y="{Y(t) + 4:.1f}" text-anchor="end" fill="#555">{html.escape(yfmt(t))}</text>')
    if xticks is None:
        xticks = nice_ticks(max(xs))
    for t in xticks:
        if (xlog and t <= 0) or X(t) < left - 0.5 or X(t) > left + plot_w + 0.5:
            continue
        o.append(f'<line x1="{X(t):.1f}" y1="{top}" x2="{X(t):.1f}" y2="{top + plot_h}" stroke="#ddd"/>')
        o.append(f'<text x="{X(t):.1f}" y="{top + plot_h + 15}" text-anchor="middle" fill="#555">'
                 f'{html.escape(xfmt(t))}</text>')
    for x, lab in vlines:
        o.append(f'<line x1="{X(x):.1f}" y1="{top}" x2="{X(x):.1f}" y2="{top + plot_h}" stroke="#999" '
                 'stroke-dasharray="3,3"/>')
        o.append(f'<text x="{X(x) + 3:.1f}" y="{top + 11}" fill="#777" font-size="10">{html.escape(lab)}</text>')
    if xlabel:
        o.append(f'<text x="{left + plot_w / 2:.1f}" y="{height - 8}" text-anchor="middle" fill="#333">'
                 f'{html.escape(xlabel)}</text>')
    if ylabel:
        o.append(f'<text x="16" y="{top + plot_h / 2:.1f}" text-anchor="middle" fill="#333" '
                 f'transform="rotate(-90 16 {top + plot_h / 2:.1f})">{html.escape(ylabel)}</text>')
    for i, (name, segs) in enumerate(lines):
        col = (colors or {}).get(name) or COLORS[i % len(COLORS)]
        last = None
        for sg in segs:
            sg = [p for p in sg if p[1] is not None and (not xlog or p[0] > 0)]
            if not sg:
                continue
            o.append(f'<polyline fill="none" stroke="{col}" stroke-width="1.8" points="'
                     + " ".join(f"{X(x):.1f},{Y(y):.1f}" for x, y in sg) + '"/>')
            if markers:
                for x, y in sg:
                    o.append(f'<circle cx="{X(x):.1f}" cy="{Y(y):.1f}" r="3" fill="{col}"/>')
            last = sg[-1]
        ly = top + 8 + i * 18
        o.append(f'<rect x="{left + plot_w + 12}" y="{ly - 9}" width="10" height="10" fill="{col}"/>')
        o.append(f'<text x="{left + plot_w + 26}" y="{ly}">{html.escape(name)}'
                 + (f' ({html.escape((vfmt or yfmt)(last[1]))} at end)' if last and not markers else "") + '</text>')
    o.append(f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" stroke="#333"/>')
    o.append(f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + plot_h}" stroke="#333"/>')
    o.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(o))
    return True


def rss_lines(run, names):
    """Each target's RSS samples on one time axis: its load tests back to back in the order they
    ran (seconds under load), in MB; the first target's test boundaries are marked."""
    mem = run.get("memory", {})
    lines, vlines = [], []
    for n in names:
        segs, marks, off = [], [], 0.0
        for sg in get(mem, n, "series") or []:
            s = sg.get("samples") or []
            if not s:
                continue
            t0 = s[0][0]
            marks.append((off, f"c={sg['c']}"))
            segs.append([(off + t - t0, kib * 1024 / MB) for t, kib in s])
            off += (s[-1][0] - t0) + 0.1
        if segs:
            lines.append((n, segs))
            vlines = vlines or marks
    return lines, vlines


def fmt_us_axis(v):
    if v >= 1e6:
        return f"{v / 1e6:g} s"
    if v >= 1000:
        return f"{v / 1000:g} ms"
    return f"{v:g} µs"


def fmt_rps(v):
    return f"{v / 1000:g}k" if v >= 1000 else f"{v:g}"


def fmt_mb(v):
    return f"{v:g} MB"


def make_plots(run, live, results_dir, ref):
    out = []
    lat, thr, rates, st, mem = (run.get(k, {}) for k in ("latency_c1", "throughput", "rates", "streaming", "memory"))
    if hbar_svg(os.path.join(results_dir, "latency_c1.svg"), "Latency at concurrency 1",
                "non-streaming POST /v1/chat/completions; lower is better",
                live, ["p50", "p99", "p99.9"],
                {n: {"p50": get(lat, n, "p50"), "p99": get(lat, n, "p99"), "p99.9": get(lat, n, "p999")} for n in live},
                fmt_us_axis, ref, vfmt=us):
        out.append(("latency_c1.svg", "Latency at concurrency 1"))
    if hbar_svg(os.path.join(results_dir, "throughput.svg"), "Throughput (closed loop)",
                "calls/s answered 200; higher is better", live, ["c=32", "c=128"],
                {n: {"c=32": get(thr, n, "32", "rps"), "c=128": get(thr, n, "128", "rps")} for n in live},
                fmt_rps, ref, vfmt=lambda v: rps(v) + "/s"):
        out.append(("throughput.svg", "Throughput"))
    rl = [f"{r:,}/s" for r in run["cfg"]["rates"]]
    if hbar_svg(os.path.join(results_dir, "rates.svg"), "p99 latency at fixed rates (open loop)",
                "oha -q with latency correction; lower is better", live, [f"p99 @ {x}" for x in rl],
                {n: {f"p99 @ {x}": get(rates, n, str(r), "p99") for x, r in zip(rl, run["cfg"]["rates"])} for n in live},
                fmt_us_axis, ref, vfmt=us):
        out.append(("rates.svg", "Latency at fixed rates"))
    sl = [n for n in live if n in st]
    if hbar_svg(os.path.join(results_dir, "streaming_ttft.svg"), "Streaming: time to first token",
                "request sent → first SSE event; lower is better", sl, ["p50", "p99"],
                {n: {"p50": get(st, n, "ttft_p50"), "p99": get(st, n, "ttft_p99")} for n in sl}, fmt_us_axis, ref, vfmt=us):
        out.append(("streaming_ttft.svg", "Time to first token"))
    if hbar_svg(os.path.join(results_dir, "streaming_gaps.svg"), "Streaming: gaps between SSE events",
                "upstream sends one event every 10 ms; closer to direct is better", sl, ["p1", "p50", "p99"],
                {n: {"p1": get(st, n, "gap_p1"), "p50": get(st, n, "gap_p50"), "p99": get(st, n, "gap_p99")} for n in sl},
                fmt_us_axis, ref, log=False, vfmt=us):
        out.append(("streaming_gaps.svg", "Inter-event gaps"))
    ml = [n for n in live if n != "direct"]
    N = run.get("hold_streams", 5000)
    if hbar_svg(os.path.join(results_dir, "memory.svg"), "Memory (VmRSS)", "lower is better", ml,
                ["idle", "under load (c=128)", f"{N:,} open streams"],
                {n: {"idle": (get(mem, n, "idle_kib") or 0) * 1024 / MB or None,
                     "under load (c=128)": (get(mem, n, "load_kib") or 0) * 1024 / MB or None,
                     f"{N:,} open streams": (get(mem, n, "hold_kib") or 0) * 1024 / MB or None} for n in ml},
                fmt_mb, ref, vfmt=lambda v: f"{v:.1f} MB"):
        out.append(("memory.svg", "Memory"))
    cmap = {n: COLORS[i % len(COLORS)] for i, n in enumerate(run["targets"])}  # one colour per target
    sc = [n for n in run.get("scaling_targets", []) if n in live]
    levels = run["cfg"].get("scaling") or []
    if sc and levels and line_svg(
            os.path.join(results_dir, "scaling.svg"), "Scaling: throughput by concurrency",
            "closed loop, calls/s answered 200 (median over rounds); higher is better; concurrency",
            [(n, [[(c, get(thr, n, str(c), "rps")) for c in levels]]) for n in sc],
            lambda v: f"{v:g}", fmt_rps, xlog=True, xticks=levels, ylabel="calls/s", xlabel="concurrency (oha -c)",
            markers=True, colors=cmap):
        out.append(("scaling.svg", "Scaling"))
    rl_names = [n for n in live if n != "direct" and get(mem, n, "series")]
    lines, vlines = rss_lines(run, rl_names)
    if lines and line_svg(
            os.path.join(results_dir, "memory_over_time.svg"), "Memory (VmRSS) over time under load",
            "sampled every 100 ms during each closed-loop load test; tests back to back in the order run",
            lines, lambda v: f"{v:g} s", fmt_mb, vlines=vlines, ylabel="VmRSS",
            xlabel="seconds under load (this target's load tests, back to back)", colors=cmap,
            vfmt=lambda v: f"{v:.1f} MB"):
        out.append(("memory_over_time.svg", "Memory over time"))
    return out


if __name__ == "__main__":
    # Re-render a finished run: python3 bench/lib/report.py bench/results/raw/STAMP/summary.json
    import json
    import sys

    summary = sys.argv[1]
    with open(summary) as f:
        data = json.load(f)
    raw_dir = os.path.dirname(os.path.abspath(summary))
    print(write(data, os.path.dirname(os.path.dirname(raw_dir)), raw_dir))
