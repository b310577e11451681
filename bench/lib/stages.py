"""Where llmux's CPU goes, by stage of a call: the folded stacks of a `perf record
--call-graph dwarf` profile (one line per stack, `thread;root;…;leaf COUNT`, as
`inferno-collapse-perf` writes them) summed into the stages below. A stack counts for the
first stage whose test it meets, in the order listed, so time spent in the kernel is charged
to the stage that made the system call (a `writev` under hyper's client is the upstream
client's; one under hyper's server is the client side's)."""

# (stage, test on the thread name, substrings of any frame); the first match wins.
STAGES = [
    ("call-log writer (SQLite thread)", "sqlx-sqlite", ()),
    ("main runtime (accept loop, call-log task, health)", "tokio-rt-worker", ()),
    ("usage tap and call record", None, ("::accounting::", "llmux_hub::ledger", "UsageTap")),
    ("upstream client (hyper client, its connection task)", None,
     ("hyper_util::client::", "hyper::client::", "llmux_gateway::upstream_http")),
    ("request peek and translation (llmux_wire)", None, ("llmux_wire::",)),
    ("call path (admission, routing, plan, respond, relay)", None,
     ("llmux_gateway::call::", "llmux_gateway::routing", "llmux_gateway::relay", "llmux_gateway::limits",
      "llmux_gateway::auth")),
    ("router and middleware (axum, llmux_gateway::server)", None,
     ("axum::", "llmux_gateway::server::", "tower_http::")),
    ("client-side HTTP/1 (hyper server: parse, write, connection)", None,
     ("hyper_util::server::", "llmux_gateway::listen::")),
    # hyper's client drives each upstream connection in a task of its own, whose frames name
    # only hyper's HTTP/1 dispatcher (the server side's were claimed just above).
    ("upstream client (hyper client, its connection task)", None, ("hyper::proto::h1",)),
    ("runtime: parking, timers, scheduling", None, ("tokio::runtime::",)),
]
OTHER = "other"


def stage_of(stack):
    frames = stack.split(";")
    thread = frames[0] if frames else ""
    for name, thread_test, needles in STAGES:
        if thread_test is not None:
            if thread.startswith(thread_test):
                return name
            continue
        if any(n in f for f in frames[1:] for n in needles):
            return name
    return OTHER


def by_stage(folded_text):
    """[(stage, share %, kernel share % within the stage)] over every sample, largest first."""
    totals, kernel, total = {}, {}, 0
    for line in folded_text.splitlines():
        stack, _, count = line.rpartition(" ")
        try:
            n = int(count)
        except ValueError:
            continue
        s = stage_of(stack)
        totals[s] = totals.get(s, 0) + n
        leaf = stack.rsplit(";", 1)[-1]
        if any(m in stack for m in ("entry_SYSCALL", "asm_exc_", "asm_sysvec_", "irqentry_")):
            kernel[s] = kernel.get(s, 0) + n
        total += n
    if not total:
        return []
    rows = [(s, 100.0 * n / total, 100.0 * kernel.get(s, 0) / n) for s, n in totals.items()]
    return sorted(rows, key=lambda r: -r[1])


if __name__ == "__main__":
    import sys
    for s, pct, k in by_stage(open(sys.argv[1]).read()):
        print(f"{pct:6.2f} %  (kernel {k:4.0f} %)  {s}")
