"""Starts `llmux mock` nodes and `llmux serve` in front of them for the official-SDK conformance tests."""

import json
import os
import sys
import urllib.request
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from harness import Stack as _Stack, wait_line  # noqa: E402

PROVIDER_KEY = "sk-provider-test"
ADMIN = "sdk-admin-token"


class Stack(_Stack):
    def mock(self, name, models, *extra):
        return self.start_mock(name, models, *extra)[1]

    def serve_upstreams(self, upstreams, file="llmux.toml"):
        """Starts `llmux serve` with the admin token and one `[[upstreams]]` table per
        `(name, kind, url, key, models, extra TOML lines)`; sets and returns `self.url`."""
        blocks = []
        for name, kind, url, key, models, extra in upstreams:
            listed = ", ".join(f'"{m}"' for m in models)
            blocks.append(
                f'[[upstreams]]\nname = "{name}"\nkind = "{kind}"\nurl = "{url}"\n'
                f'keys = ["{key}"]\nmodels = [{listed}]\n{extra}'
            )
        cfg = Path(self.dir.name) / file
        cfg.write_text(f'[server]\nlisten = "127.0.0.1:0"\n[admin]\ntoken = "{ADMIN}"\n' + "".join(blocks))
        gw = self.spawn("serve", "--config", str(cfg))
        self.url = wait_line(gw, r"llmux listening on (http://\S+)").group(1)
        return self.url


@pytest.fixture(scope="session")
def stack():
    s = Stack()
    try:
        s.gpu_a = s.mock("gpu-a", ["llama3:latest", "nomic-embed-text:latest"], "--chunks", "6", "--chunk-delay", "0.01")
        s.gpu_b = s.mock("gpu-b", ["llama3:latest", "mistral:latest"], "--chunks", "6", "--chunk-delay", "0.01")
        s.flaky = s.mock("flaky", ["flaky-model:latest"], "--chunks", "10", "--chunk-delay", "0.01")
        s.openai = s.mock("openai", ["gpt-4o-mini", "text-embedding-3-small"], "--api-key", PROVIDER_KEY)
        cfg = Path(s.dir.name) / "llmux.toml"
        cfg.write_text(
            f"""
[server]
listen = "127.0.0.1:0"
[admin]
token = "{ADMIN}"
[[upstreams]]
name = "gpu-a"
kind = "ollama"
url = "{s.gpu_a}"
[[upstreams]]
name = "gpu-b"
kind = "ollama"
url = "{s.gpu_b}"
[[upstreams]]
name = "flaky"
kind = "ollama"
url = "{s.flaky}"
[[upstreams]]
name = "openai"
kind = "openai"
url = "{s.openai}/v1"
keys = ["{PROVIDER_KEY}"]
"""
        )
        gw = s.spawn("serve", "--config", str(cfg))
        m = wait_line(gw, r"llmux listening on (http://\S+)")
        s.url = m.group(1)
        yield s
    finally:
        s.close()


@pytest.fixture(scope="session")
def matrix():
    """One upstream of every kind (each a `llmux mock` speaking all dialects), plus slow twins."""
    s = Stack()
    try:
        kinds = {
            "ollama": ("llama3:latest", ""),
            "openai": ("gpt-4o-mini", "/v1"),
            "anthropic": ("claude-sonnet-4", ""),
            "gemini": ("gemini-2.0-flash", ""),
            "azure": ("gpt-4o-azure", ""),
        }
        blocks = []
        for kind, (model, suffix) in kinds.items():
            name = f"{kind}-up"
            url = s.mock(name, [model], "--chunks", "6", "--api-key", f"key-{kind}")
            slow = s.mock(f"{kind}-slow", [f"slow-{model}"], "--chunks", "8", "--chunk-delay", "0.15", "--api-key", f"key-{kind}")
            for n, u, m in [(name, url, model), (f"{kind}-slow", slow, f"slow-{model}")]:
                models = f'models = ["{m}"]' if kind == "azure" else ""
                blocks.append(
                    f'[[upstreams]]\nname = "{n}"\nkind = "{kind}"\nurl = "{u}{suffix}"\nkeys = ["key-{kind}"]\n{models}\n'
                )
        cfg = Path(s.dir.name) / "matrix.toml"
        cfg.write_text(f'[server]\nlisten = "127.0.0.1:0"\n[admin]\ntoken = "{ADMIN}"\n' + "".join(blocks))
        gw = s.spawn("serve", "--config", str(cfg))
        m = wait_line(gw, r"llmux listening on (http://\S+)")
        s.url = m.group(1)
        yield s
    finally:
        s.close()


_COMPAT = {}


@pytest.fixture(scope="session")
def compat():
    return _COMPAT


def pytest_sessionfinish(session, exitstatus):
    """With LLMUX_COMPAT_OUT set, writes the conformance matrix as a Markdown table there."""
    out = os.environ.get("LLMUX_COMPAT_OUT")
    if not out or not _COMPAT:
        return
    ingresses = ["openai", "anthropic", "ollama", "gemini"]
    upstreams = ["ollama", "openai", "anthropic", "gemini", "azure"]
    lines = [
        "| client SDK ↓ / upstream kind → | " + " | ".join(upstreams) + " |",
        "|---|" + "---|" * len(upstreams),
    ]
    for i in ingresses:
        cells = []
        for u in upstreams:
            modes = [m for m in ("plain", "stream", "tools") if _COMPAT.get((i, u, m)) == "pass"]
            cells.append(" · ".join(modes) if len(modes) < 3 else "plain · stream · tools ✅")
        lines.append(f"| {i} | " + " | ".join(cells) + " |")
    table = "\n".join(lines) + "\n"
    path = Path(out)
    # In a page that marks its matrix, only the matrix is replaced: the rest is prose.
    text = path.read_text() if path.exists() else ""
    start, end = "<!-- matrix:start -->\n", "<!-- matrix:end -->"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        table = head + start + table + end + rest.split(end, 1)[1]
    path.write_text(table)


def set_faults(node_url, **faults):
    req = urllib.request.Request(
        f"{node_url}/_mock/faults",
        data=json.dumps(faults).encode(),
        headers={"content-type": "application/json"},
        method="POST",
    )
    urllib.request.urlopen(req).read()


@pytest.fixture
def truncated(fid):
    """Every upstream of the module's `fid` stack (its `mocks`) ends its streams cleanly after
    3 chunks, without the final event."""
    for url in fid.mocks.values():
        set_faults(url, truncate_after=3)
    yield fid
    for url in fid.mocks.values():
        set_faults(url)
