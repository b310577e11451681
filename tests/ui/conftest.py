"""Starts `llmux mock` nodes and `llmux serve` (with a store) and drives the web console in Debian's Chromium."""

import json
import os
import re
import sys
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from harness import Stack as _Stack, wait_line  # noqa: E402

CHROMIUM = os.environ.get("LLMUX_CHROMIUM", "/usr/bin/chromium")
ADMIN_TOKEN = "ui-admin-token"
XSS_MODEL = "<script>alert(1)</script>"
USERS = {"ann": ("ann-password-1", "admin"), "vic": ("vic-password-1", "viewer")}


class Stack(_Stack):
    """A console test stack; the gateway's stderr is drained so it never blocks."""

    def mock(self, name, models):
        return self.start_mock(name, models, "--chunks", "6", "--chunk-delay", "0.02")

    def serve(self, upstreams, extra=""):
        blocks = "".join(f'[[upstreams]]\nname = "{n}"\nkind = "ollama"\nurl = "{u}"\n' for n, u in upstreams)
        cfg = Path(self.dir.name) / "llmux.toml"
        cfg.write_text(
            f"""
[server]
listen = "127.0.0.1:0"
[admin]
token = "{ADMIN_TOKEN}"
allow_private_upstreams = true
[store]
url = "sqlite::memory:"
[health]
interval = "1s"
timeout = "1s"
{extra}{blocks}"""
        )
        gw = self.spawn("serve", "--config", str(cfg))
        self.url = wait_line(gw, r"llmux listening on (http://\S+)").group(1)
        # Nothing reads the log from here on; a thread-free drain keeps the pipe from filling.
        subprocess.Popen(["cat"], stdin=gw.stderr, stdout=subprocess.DEVNULL)
        return self.url


def admin_api(base, method, path, body=None, token=ADMIN_TOKEN):
    req = urllib.request.Request(
        f"{base}/admin/v1{path}",
        data=None if body is None else json.dumps(body).encode(),
        headers={"authorization": f"Bearer {token}", "content-type": "application/json"},
        method=method,
    )
    try:
        with urllib.request.urlopen(req) as r:
            raw = r.read()
            return r.status, (json.loads(raw) if raw else None)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


@pytest.fixture(scope="session")
def stack():
    s = Stack()
    try:
        _, gpu = s.mock("gpu-a", ["llama3:latest", "mistral:latest"])
        _, xss = s.mock("xss", [XSS_MODEL])
        s.serve([("gpu-a", gpu), ("xss", xss)])
        for name, (password, role) in USERS.items():
            status, _ = admin_api(s.url, "POST", "/users", {"username": name, "password": password, "role": role})
            assert status == 201
        yield s
    finally:
        s.close()


@pytest.fixture(scope="session")
def browser():
    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"],
        )
        yield b
        b.close()


class Console:
    """One browser context (its own cookies) on the console, recording every console error."""

    def __init__(self, browser, base, viewport=(1280, 800), color_scheme="light"):
        self.base = base
        self.context = browser.new_context(viewport={"width": viewport[0], "height": viewport[1]}, base_url=base, color_scheme=color_scheme)
        self.page = self.context.new_page()
        self.errors = []
        self.dialogs = []
        # HTTP statuses a test provokes on purpose (Chromium logs every 4xx fetch as an error).
        self.expected_statuses = set()
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("dialog", self._dialog)

    def _dialog(self, d):
        self.dialogs.append(d.message)
        d.dismiss()

    def sign_in(self, username):
        page = self.page
        page.goto("/ui/")
        page.get_by_label("Username").fill(username)
        page.get_by_label("Password").fill(USERS[username][0])
        page.get_by_role("button", name="Sign in").click()
        page.get_by_role("button", name="Sign out").wait_for()
        return page

    def close(self):
        self.context.close()
        provoked = re.compile(r"^Failed to load resource: the server responded with a status of (\d+)")
        errors = [e for e in self.errors if not ((m := provoked.match(e)) and int(m.group(1)) in self.expected_statuses)]
        assert errors == [], f"browser console errors: {errors}"
        assert self.dialogs == [], f"unexpected dialogs (script ran?): {self.dialogs}"


@pytest.fixture
def console(browser, stack):
    made = []

    def make(viewport=(1280, 800), color_scheme="light"):
        c = Console(browser, stack.url, viewport, color_scheme)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


def shot(page, name):
    """With LLMUX_UI_SCREENSHOTS=DIR, saves a screenshot of the page as DIR/NAME.png."""
    out = os.environ.get("LLMUX_UI_SCREENSHOTS")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(out) / f"{name}.png"), full_page=False)
