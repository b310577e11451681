"""Runs `llmux` processes for the Python test suites (tests/sdk, tests/ui): one temp dir, its processes, their addresses."""

import os
import re
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = os.environ.get("LLMUX_BIN", str(ROOT / "target" / "debug" / "llmux"))


def wait_line(proc, pattern, timeout=20):
    """The first line of `proc`'s stderr matching `pattern` (a regex match), within `timeout` s."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        line = proc.stderr.readline()
        if not line:
            if proc.poll() is not None:
                raise RuntimeError(f"{proc.args} exited early")
            continue
        m = re.search(pattern, line)
        if m:
            return m
    raise RuntimeError(f"{proc.args}: no line matching {pattern!r}")


class Stack:
    """The processes of one test stack, run in a temp dir (where the default store lands)."""

    def __init__(self):
        self.procs = []
        self.dir = tempfile.TemporaryDirectory()

    def spawn(self, *args):
        proc = subprocess.Popen([BIN, *args], cwd=self.dir.name, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
        self.procs.append(proc)
        return proc

    def start_mock(self, name, models, *extra):
        """A `llmux mock` on a port the OS picks: (process, its base URL as it printed it)."""
        proc = self.spawn("mock", "--port", "0", "--name", name, "--models", ",".join(models), *extra)
        return proc, wait_line(proc, r"listening on (http://\S+)").group(1)

    def close(self):
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        self.dir.cleanup()
