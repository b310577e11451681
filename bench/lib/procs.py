"""Processes the benchmark starts: each is the leader of its own process group, recorded in a
pid file (bench/run's trap kills what is left), and stopped by group id, never by name."""

import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request


class Proc:
    def __init__(self, name, popen, log_path):
        self.name = name
        self.popen = popen
        self.pgid = popen.pid
        self.log_path = log_path

    def alive(self):
        return self.popen.poll() is None

    def pids(self):
        """Every live process of this process group (nginx master and workers, uvicorn workers)."""
        out = []
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            try:
                with open(f"/proc/{d}/stat", "rb") as f:
                    stat = f.read().decode("ascii", "replace")
                # fields after the command name ")": state ppid pgrp ...
                rest = stat[stat.rindex(")") + 2:].split()
                if int(rest[2]) == self.pgid and rest[0] != "Z":
                    out.append(int(d))
            except (OSError, ValueError, IndexError):
                continue
        return sorted(out)

    def rss_kib(self):
        """Sum of VmRSS over the group (shared pages of forked workers count once per process)."""
        total = 0
        for pid in self.pids():
            total += rss_kib(pid) or 0
        return total

    def log_tail(self, n=15):
        try:
            with open(self.log_path, "rb") as f:
                lines = f.read().decode("utf-8", "replace").splitlines()
            return "\n".join(lines[-n:])
        except OSError:
            return ""


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def fd_count(pid):
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


class Procs:
    def __init__(self, pidfile, log_dir):
        self.pidfile = pidfile
        self.log_dir = log_dir
        self.procs = []

    def start(self, name, argv, env=None, cwd=None):
        log_path = os.path.join(self.log_dir, f"{name}.log")
        full_env = dict(os.environ)
        full_env.update(env or {})
        with open(log_path, "wb") as log:
            p = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=full_env,
                cwd=cwd,
                start_new_session=True,
            )
        with open(self.pidfile, "a") as f:
            f.write(f"{p.pid}\n")
        proc = Proc(name, p, log_path)
        self.procs.append(proc)
        return proc

    def stop(self, proc, grace=5.0):
        if proc not in self.procs:
            return
        try:
            os.killpg(proc.pgid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        deadline = time.time() + grace
        while time.time() < deadline and (proc.alive() or proc.pids()):
            time.sleep(0.05)
        try:
            os.killpg(proc.pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            proc.popen.wait(timeout=2)
        except subprocess.TimeoutExpired:
            pass
        self.procs.remove(proc)

    def stop_all(self):
        for proc in list(reversed(self.procs)):
            self.stop(proc, grace=3.0)


def port_free(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # Like the servers: connections of a previous run in TIME_WAIT do not make a port busy.
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def http(url, body=None, headers=None, timeout=5.0):
    """One request; returns (status, body bytes). Errors raise."""
    req = urllib.request.Request(url, data=body, method="POST" if body is not None else "GET")
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    if body is not None:
        req.add_header("content-type", "application/json")
    handler = urllib.request.ProxyHandler({})  # never through a proxy: load stays on loopback
    opener = urllib.request.build_opener(handler)
    try:
        with opener.open(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def wait_ready(proc, url, body=None, headers=None, timeout=30.0, ok=lambda st, b: st == 200):
    """Polls until the request succeeds; returns (True, None) or (False, reason). Bounded."""
    deadline = time.time() + timeout
    last = "no answer"
    while time.time() < deadline:
        if proc is not None and not proc.alive():
            return False, f"exited with code {proc.popen.returncode}: {proc.log_tail(8)}"
        try:
            st, b = http(url, body, headers, timeout=3.0)
            if ok(st, b):
                return True, None
            last = f"HTTP {st}: {b[:200].decode('utf-8', 'replace')}"
        except Exception as e:  # connection refused while starting, etc.
            last = str(e)
        time.sleep(0.2)
    return False, f"not ready after {timeout:.0f}s ({last})"
