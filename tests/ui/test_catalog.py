"""The catalogue in the console: rename a served model (keeping the old name as an alias or
not), switch many stored settings off or delete them in one batch, see name collisions, and
revoke many virtual keys at once."""

import json
import urllib.request

import pytest
from playwright.sync_api import expect

from conftest import USERS, Console, Stack, admin_api, shot


@pytest.fixture(scope="module")
def catalog_stack():
    s = Stack()
    try:
        _, gpu = s.mock("gpu-a", ["llama3:latest", "mistral:latest"])
        _, snap = s.mock("snap", ["gpt-4o-2024-08-06", "gpt-4o-2024-05-13"])
        s.serve([("gpu-a", gpu), ("snap", snap)])
        for name, (password, role) in USERS.items():
            status, _ = admin_api(s.url, "POST", "/users", {"username": name, "password": password, "role": role})
            assert status == 201
        yield s
    finally:
        s.close()


@pytest.fixture
def con(browser, catalog_stack):
    c = Console(browser, catalog_stack.url)
    try:
        c.sign_in("ann")
        yield c
    finally:
        c.close()


@pytest.fixture
def page(con):
    return con.page


def listed(base):
    with urllib.request.urlopen(f"{base}/v1/models") as r:
        return sorted(m["id"] for m in json.loads(r.read())["data"])


def test_rename_keeping_the_old_name_as_an_alias(page, catalog_stack):
    page.goto("/ui/#models")
    row = page.locator('#served-table tr[data-model="mistral:latest"]')
    row.get_by_role("button", name="Rename").click()
    row.get_by_label("New name for mistral:latest").fill("house-model")
    row.get_by_label("Keep the old name as an alias").check()
    row.get_by_role("button", name="Save name").click()
    expect(page.locator("#notice")).to_contain_text("renamed to house-model (mistral:latest kept as an alias)")
    expect(page.locator('#served-table tr[data-model="house-model"]')).to_contain_text("gpu-a")
    expect(page.locator('#stored-models tr[data-stored="house-model"]')).to_contain_text("(was mistral:latest)")
    expect(page.locator('tr[data-alias="mistral:latest"]')).to_contain_text("house-model")
    assert "house-model" in listed(catalog_stack.url)
    _, models = admin_api(catalog_stack.url, "GET", "/models")
    row = next(m for m in models if m["name"] == "house-model")
    assert row["original_name"] == "mistral:latest" and row["renamed"] is True


def test_a_refused_rename_says_why_and_changes_nothing(con, page, catalog_stack):
    con.expected_statuses.add(400)
    page.goto("/ui/#models")
    row = page.locator('#served-table tr[data-model="llama3:latest"]')
    row.get_by_role("button", name="Rename").click()
    row.get_by_label("New name for llama3:latest").fill("x" * 201)
    row.get_by_role("button", name="Save name").click()
    expect(page.locator("#notice")).to_contain_text("must be 1 to 200 characters")
    _, models = admin_api(catalog_stack.url, "GET", "/models")
    assert not any(m["name"] == "llama3:latest" and m["id"] for m in models), "the row made for the rename stays"
    row.get_by_role("button", name="Cancel").click()
    expect(page.locator('#served-table tr[data-model="llama3:latest"]').get_by_role("button", name="Rename")).to_be_visible()
    assert "llama3:latest" in listed(catalog_stack.url)


def test_batch_switch_off_and_delete_stored_settings(page, catalog_stack):
    for name in ["gpt-4o-2024-08-06", "gpt-4o-2024-05-13"]:
        status, _ = admin_api(catalog_stack.url, "POST", "/models", {"name": name})
        assert status in (200, 201)
    page.goto("/ui/#models")
    bar = page.locator("#model-batch")
    expect(bar.get_by_role("button", name="Switch off selected")).to_be_disabled()
    page.get_by_label("Select gpt-4o-2024-08-06").check()
    page.get_by_label("Select gpt-4o-2024-05-13").check()
    expect(bar).to_contain_text("2 selected")
    bar.get_by_role("button", name="Switch off selected").click()
    expect(page.locator("#notice")).to_contain_text("2 model settings switched off")
    for name in ["gpt-4o-2024-08-06", "gpt-4o-2024-05-13"]:
        expect(page.locator(f'#stored-models tr[data-stored="{name}"]')).to_contain_text("off")
    assert not any(m.startswith("gpt-4o") for m in listed(catalog_stack.url))
    expect(page.locator("#collisions-table")).to_contain_text("No collision.")  # switched-off models take no call
    shot(page, "models-batch")
    page.get_by_label("Select gpt-4o-2024-08-06").check()
    page.get_by_label("Select gpt-4o-2024-05-13").check()
    bar.get_by_role("button", name="Delete selected").click()
    bar.get_by_role("button", name="Delete 2 model settings").click()
    expect(page.locator("#notice")).to_contain_text("2 model settings deleted")
    expect(page.locator('#stored-models tr[data-stored="gpt-4o-2024-08-06"]')).to_have_count(0)
    assert {"gpt-4o-2024-08-06", "gpt-4o-2024-05-13"} <= set(listed(catalog_stack.url))


def test_collisions_are_listed_with_where_they_route(page):
    page.goto("/ui/#models")
    row = page.locator('#collisions-table tr[data-collision="gpt-4o"]')
    expect(row).to_contain_text("dated_snapshots")
    expect(row).to_contain_text("snap: gpt-4o-2024-05-13")
    expect(row.locator("td").nth(3)).to_have_text("gpt-4o-2024-08-06")


def test_revoke_and_delete_many_keys_at_once(page, catalog_stack):
    status, app = admin_api(catalog_stack.url, "POST", "/apps", {"name": "batchapp"})
    assert status == 201
    for name in ["k-one", "k-two", "k-three"]:
        status, _ = admin_api(catalog_stack.url, "POST", "/keys", {"name": name, "app": app["id"]})
        assert status == 201
    page.goto("/ui/#apps")
    bar = page.locator("#key-batch")
    page.get_by_label("Select key k-one").check()
    page.get_by_label("Select key k-three").check()
    bar.get_by_role("button", name="Revoke selected").click()
    bar.get_by_role("button", name="Revoke 2 keys").click()
    expect(page.locator("#notice")).to_contain_text("2 keys revoked")
    expect(page.locator('tr[data-key="k-one"]')).to_contain_text("revoked")
    expect(page.locator('tr[data-key="k-three"]')).to_contain_text("revoked")
    expect(page.locator('tr[data-key="k-two"]')).to_contain_text("active")
    expect(page.get_by_label("Select key k-one")).to_have_count(0)
    # Deleted in one batch: the key leaves the list.
    page.get_by_label("Select key k-two").check()
    bar.get_by_role("button", name="Delete selected").click()
    bar.get_by_role("button", name="Delete 1 key").click()
    expect(page.locator("#notice")).to_contain_text("1 key deleted")
    expect(page.locator('tr[data-key="k-two"]')).to_have_count(0)
    expect(page.locator('tr[data-key="k-one"]')).to_contain_text("revoked")
