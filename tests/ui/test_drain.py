"""Draining an upstream from the console: the Drain button asks first, the row shows "drained",
calls go to the other node, and Undrain puts it back."""

import json
import urllib.request

from playwright.sync_api import expect

from conftest import USERS, Console, Stack, admin_api


def chat(base, model):
    req = urllib.request.Request(
        f"{base}/v1/chat/completions",
        data=json.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}]}).encode(),
        headers={"content-type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(req) as r:
            return r.status, r.headers.get("x-llmux-upstream")
    except urllib.error.HTTPError as e:
        return e.code, None


def test_drain_and_undrain_an_upstream_from_the_upstreams_page(browser):
    s = Stack()
    try:
        _, one = s.mock("one", ["llama3:latest"])
        _, two = s.mock("two", ["llama3:latest"])
        s.serve([("one", one), ("two", two)])
        for name in ("ann", "vic"):
            password, role = USERS[name]
            assert admin_api(s.url, "POST", "/users", {"username": name, "password": password, "role": role})[0] == 201

        # A viewer sees the state but no button.
        v = Console(browser, s.url)
        page = v.sign_in("vic")
        page.goto("/ui/#upstreams")
        expect(page.locator('tr[data-upstream="one"]')).to_be_visible()
        expect(page.get_by_role("button", name="Drain")).to_have_count(0)
        v.close()

        c = Console(browser, s.url)
        page = c.sign_in("ann")
        page.goto("/ui/#upstreams")
        row = page.locator('tr[data-upstream="one"]')
        row.get_by_role("button", name="Drain").click()
        expect(row).to_contain_text("Sure?")
        row.get_by_role("button", name="Cancel").click()
        assert admin_api(s.url, "GET", "/upstreams/one")[1]["drain"] is None, "Cancel drains nothing"

        row.get_by_role("button", name="Drain").click()
        row.get_by_role("button", name="Drain one").click()
        expect(page.locator("#notice")).to_contain_text("one is drained")
        expect(row.locator(".drain")).to_have_text("drained")
        expect(page.locator('tr[data-upstream="two"] .drain')).to_have_count(0)
        assert admin_api(s.url, "GET", "/upstreams/one")[1]["drain"] == "drained"
        for _ in range(4):
            assert chat(s.url, "llama3") == (200, "two")

        # The overview's card shows it too.
        page.goto("/ui/#overview")
        expect(page.locator('article[data-upstream="one"] .drain')).to_have_text("drained")

        page.goto("/ui/#upstreams")
        row.get_by_role("button", name="Undrain").click()
        expect(page.locator("#notice")).to_contain_text("one is back in rotation")
        expect(row.locator(".drain")).to_have_count(0)
        expect(row.get_by_role("button", name="Drain")).to_be_visible()
        assert admin_api(s.url, "GET", "/upstreams/one")[1]["drain"] is None
        assert chat(s.url, "one/llama3") == (200, "one")
        c.close()
    finally:
        s.close()
