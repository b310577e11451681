"""The Cluster page: a single instance lists itself; two instances on one PostgreSQL and one Redis list each other, and one killed with SIGKILL turns lost."""

import os
import re
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from playwright.sync_api import expect

from conftest import ADMIN_TOKEN, USERS, Console, Stack, admin_api, shot

from harness import wait_line

COLUMNS = ["ID", "Address", "Version", "Started", "Last heartbeat", "In flight", "Calls/s", "Prober", "State"]


def test_a_single_instance_lists_itself_as_the_prober(console, stack):
    c = console()
    page = c.sign_in("vic")  # viewers may read it
    page.get_by_role("link", name="Cluster").click()
    expect(page.locator("h1")).to_have_text("Cluster")
    expect(page.locator("#cluster-summary")).to_contain_text("Single instance")
    headers = page.locator("#cluster-table th")
    expect(headers).to_have_text(COLUMNS)
    rows = page.locator("#cluster-table tbody tr")
    expect(rows).to_have_count(1)
    row = rows.first
    address = re.sub(r"^http://", "", stack.url)
    expect(row).to_contain_text(address)
    expect(row).to_contain_text("(this one)")
    expect(row.locator("td").nth(7)).to_have_text("prober")
    expect(row.locator("td").nth(8)).to_have_text("live")
    shot(page, "cluster-single")


def _psql(url, sql):
    subprocess.run(["psql", url, "-v", "ON_ERROR_STOP=1", "-qc", sql], check=True, capture_output=True)


@pytest.fixture
def pg_and_redis():
    pg = os.environ.get("LLMUX_TEST_POSTGRES_URL")
    redis = os.environ.get("LLMUX_TEST_REDIS_URL")
    if not pg or not redis:
        pytest.skip("LLMUX_TEST_POSTGRES_URL and LLMUX_TEST_REDIS_URL are needed for the cluster page in cluster mode")
    schema = f"llmux_ui_{uuid.uuid4().hex[:12]}"
    _psql(pg, f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in pg else "?"
    try:
        yield f"{pg}{sep}options=-csearch_path%3D{schema}", redis, schema.replace("_", "-")
    finally:
        _psql(pg, f"DROP SCHEMA {schema} CASCADE")


def _serve(stack, store, redis, prefix):
    cfg = Path(stack.dir.name) / "llmux.toml"
    cfg.write_text(
        f"""
[server]
listen = "127.0.0.1:0"
[admin]
token = "{ADMIN_TOKEN}"
[store]
url = "{store}"
[limits]
redis_url = "{redis}"
[cluster]
prefix = "{prefix}"
heartbeat = "500ms"
lease = "3s"
"""
    )
    proc = stack.spawn("serve", "--config", str(cfg))
    url = wait_line(proc, r"llmux listening on (http://\S+)").group(1)
    subprocess.Popen(["cat"], stdin=proc.stderr, stdout=subprocess.DEVNULL)
    return proc, url


def test_two_instances_list_each_other_and_a_killed_one_turns_lost(browser, pg_and_redis):
    store, redis, prefix = pg_and_redis
    s = Stack()
    try:
        # One after the other: the first runs the migrations and writes the master key file
        # the second (same working directory) reads.
        _, a = _serve(s, store, redis, prefix)
        b_proc, b = _serve(s, store, redis, prefix)
        password, role = USERS["ann"]
        assert admin_api(a, "POST", "/users", {"username": "ann", "password": password, "role": role})[0] == 201
        c = Console(browser, a)
        page = c.sign_in("ann")
        page.goto("/ui/#cluster")
        expect(page.locator("#cluster-summary")).to_contain_text("Cluster of 2 instances, 2 live")
        rows = page.locator("#cluster-table tbody tr")
        expect(rows).to_have_count(2)
        expect(page.locator("#cluster-table")).to_contain_text(re.sub(r"^http://", "", b))
        expect(rows.filter(has_text="(this one)")).to_contain_text(re.sub(r"^http://", "", a))
        shot(page, "cluster")
        b_proc.kill()  # SIGKILL: its record stays, and turns lost after three heartbeats
        b_proc.wait()
        killed = time.monotonic()
        lost = rows.filter(has_text=re.sub(r"^http://", "", b))
        expect(lost.locator("td").nth(8)).to_have_text("lost", timeout=10_000)
        took = time.monotonic() - killed
        print(f"cluster page: the killed instance shown lost after {took:.2f} s (3 heartbeats = 1.5 s, page refresh 2 s)")
        assert took <= 4.5, took
        expect(page.locator("#cluster-summary")).to_contain_text("Cluster of 2 instances, 1 live")
        c.close()
    finally:
        s.close()
