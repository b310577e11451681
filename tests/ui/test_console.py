"""The web console in a real browser: sign-in, roles, CSRF, live overview, upstreams, apps and keys, calls, playground."""

import json
import re
import time
import urllib.request

from playwright.sync_api import expect

from conftest import ADMIN_TOKEN, USERS, XSS_MODEL, Console, Stack, admin_api, shot


def test_browsers_are_sent_to_the_console_and_ollama_clients_keep_the_banner(stack):
    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *a, **k):
            return None

    opener = urllib.request.build_opener(NoRedirect)
    req = urllib.request.Request(stack.url + "/", headers={"accept": "text/html,application/xhtml+xml,*/*;q=0.8"})
    try:
        opener.open(req)
        raise AssertionError("no redirect")
    except urllib.error.HTTPError as e:
        assert e.code == 303 and e.headers["location"] == "/ui/"
    with urllib.request.urlopen(stack.url + "/") as r:
        assert r.read() == b"Ollama is running"
    with urllib.request.urlopen(stack.url + "/ui/") as r:
        h = r.headers
        assert h["content-security-policy"].startswith("default-src 'self'")
        assert h["x-frame-options"] == "DENY"
        assert h["x-content-type-options"] == "nosniff"
        assert h["referrer-policy"] == "same-origin"


def test_first_run_explains_how_to_create_the_first_admin(browser):
    s = Stack()
    try:
        s.serve([])
        c = Console(browser, s.url)
        c.page.goto("/ui/")
        cmd = c.page.locator("#setup-command")
        expect(cmd).to_contain_text("/admin/v1/users")
        expect(cmd).to_contain_text('"role":"admin"')
        assert ADMIN_TOKEN not in c.page.content()
        shot(c.page, "first-run")
        c.close()
    finally:
        s.close()


def test_sign_in_wrong_password_then_in_and_out(console):
    c = console()
    c.expected_statuses = {401}
    page = c.page
    page.goto("/ui/")
    page.get_by_label("Username").fill("ann")
    page.get_by_label("Password").fill("wrong")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("Wrong username or password")
    shot(page, "sign-in")
    page.get_by_label("Password").fill("ann-password-1")
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#who")).to_have_text("ann (admin)")
    cookie = [k for k in c.context.cookies() if k["name"] == "llmux_session"][0]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert page.evaluate("document.cookie") == ""  # JS cannot read the session
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("button", name="Sign in")).to_be_visible()
    assert not [k for k in c.context.cookies() if k["name"] == "llmux_session"]
    page.reload()
    expect(page.get_by_role("button", name="Sign in")).to_be_visible()


def test_viewer_sees_no_write_control_and_writes_are_refused(console, stack):
    c = console()
    page = c.sign_in("vic")
    expect(page.get_by_role("link", name="Users")).to_have_count(0)  # admins only
    for hash_ in ["#overview", "#upstreams", "#apps", "#models", "#calls", "#playground", "#log", "#cluster", "#usage", "#config", "#audit"]:
        page.goto("/ui/" + hash_)
        expect(page.locator("h1")).to_be_visible()
        page.wait_for_load_state("networkidle")
        for label in ["Add upstream", "Edit", "Save", "Delete", "Check now", "Create app", "Create key", "Revoke", "Top up", "Disable", "Enable now", "Keys",
                      "Create alias", "Switch off", "Switch on", "Remove", "Set strategy", "Roll back to this",
                      "Reload the config file now"]:
            expect(page.get_by_role("button", name=label, exact=True)).to_have_count(0)
    page.goto("/ui/#apps")
    expect(page.locator("#keys-table")).to_be_visible()
    # The viewer's cookie, same origin: the server still refuses the write.
    r = c.context.request.post(stack.url + "/admin/v1/apps", data={"name": "viewer-app"}, headers={"origin": stack.url})
    assert r.status == 403, r.text()
    # Reads work through the cookie.
    assert c.context.request.get(stack.url + "/admin/v1/upstreams").status == 200


def test_a_forged_cross_origin_write_with_the_admin_cookie_is_refused(console, stack):
    c = console()
    c.sign_in("ann")
    req = c.context.request
    forged = req.post(stack.url + "/admin/v1/apps", data={"name": "forged"}, headers={"origin": "http://evil.example"})
    assert forged.status == 403, forged.text()
    no_origin = req.post(stack.url + "/admin/v1/apps", data={"name": "forged"}, headers={"origin": ""})
    assert no_origin.status == 403
    status, apps = admin_api(stack.url, "GET", "/apps")
    assert "forged" not in [a["name"] for a in apps]
    same = req.post(stack.url + "/admin/v1/apps", data={"name": "same-origin-app"}, headers={"origin": stack.url})
    assert same.status == 201, same.text()
    # The audit log records the user, as for any API write.
    _, audit = admin_api(stack.url, "GET", "/audit?limit=5")
    entries = audit if isinstance(audit, list) else audit.get("entries", audit.get("audit", []))
    assert any(e.get("actor") == "ann" for e in entries), audit


def test_add_an_upstream_see_it_active_then_standby_when_it_dies(console, stack):
    proc, url = stack.mock("gpu-new", ["phi3:latest"])
    c = console()
    c.expected_statuses = {400}
    page = c.sign_in("ann")
    page.goto("/ui/#upstreams")
    page.get_by_label("Name").fill("gpu-new")
    page.get_by_label("Kind").select_option("ollama")
    page.get_by_label("URL").fill("ftp://nowhere")
    page.get_by_role("button", name="Add upstream").click()
    expect(page.locator("#up-url-error")).not_to_be_empty()
    expect(page.get_by_label("Name")).to_have_value("gpu-new")  # what was typed stays
    page.get_by_label("URL").fill("http://169.254.169.254")
    page.get_by_role("button", name="Add upstream").click()
    expect(page.locator("#upstream-form")).to_contain_text("refuses upstream URLs")
    page.get_by_label("URL").fill(url)
    page.get_by_label("Limit field").select_option("max_tokens")
    page.get_by_role("button", name="Add upstream").click()
    expect(page.locator("#notice")).to_contain_text("Upstream gpu-new added")
    _, made = admin_api(stack.url, "GET", "/upstreams/gpu-new")
    assert made["max_tokens_field"] == "max_tokens", made
    page.get_by_label("Kind").select_option("anthropic")
    expect(page.get_by_label("Limit field")).to_be_hidden()  # Anthropic takes max_tokens only
    page.get_by_label("Kind").select_option("ollama")
    row = page.locator('tr[data-upstream="gpu-new"]')
    expect(row).to_be_visible()
    expect(page.locator('tr[data-upstream="gpu-a"]')).to_contain_text("read-only (config file)")
    row.get_by_role("button", name="Check now").click()
    expect(page.locator("#notice")).to_contain_text("gpu-new checked: active")
    shot(page, "upstreams")

    page.goto("/ui/#overview")
    card = page.locator('article[data-upstream="gpu-new"]')
    expect(card.locator(".pool")).to_have_text("active", timeout=10000)
    expect(card).to_contain_text("phi3:latest")
    page.evaluate("window.__same_document = true")
    proc.terminate()
    proc.wait()
    expect(card.locator(".pool")).to_have_text("standby", timeout=15000)
    assert page.evaluate("window.__same_document") is True  # no reload happened

    page.goto("/ui/#upstreams")
    row = page.locator('tr[data-upstream="gpu-new"]')
    row.get_by_role("button", name="Delete").click()
    row.get_by_role("button", name="Delete gpu-new for good").click()
    expect(page.locator("#notice")).to_contain_text("Upstream gpu-new deleted")
    expect(page.locator('tr[data-upstream="gpu-new"]')).to_have_count(0)


def test_create_an_app_and_a_key_whose_secret_is_shown_once(console, stack):
    c = console()
    c.expected_statuses = {400}
    page = c.sign_in("ann")
    page.goto("/ui/#apps")
    page.get_by_label("App name").fill("web-shop")
    page.get_by_label("Credits (USD)").fill("-5")
    page.get_by_role("button", name="Create app").click()
    expect(page.locator("#app-credits-error")).not_to_be_empty()
    page.get_by_label("Credits (USD)").fill("25")
    page.get_by_label("Daily budget (USD)").fill("5")
    page.get_by_role("button", name="Create app").click()
    expect(page.locator("#apps-table")).to_contain_text("web-shop")
    expect(page.locator("#apps-table")).to_contain_text("$25.00")
    expect(page.locator('tr[data-app="web-shop"]')).to_contain_text("$0.00")  # spent today
    shop = page.locator('tr[data-app="web-shop"]')
    shop.get_by_role("button", name="Edit").click()
    shop.get_by_label("Credits (USD)").fill("40")
    shop.get_by_role("button", name="Save").click()
    expect(page.locator('tr[data-app="web-shop"]')).to_contain_text("$40.00")
    page.get_by_label("Key name").fill("checkout")
    page.get_by_label("App", exact=True).select_option("web-shop")
    page.get_by_label("Models").fill("llama3")
    page.get_by_label("Requests / min").fill("60")
    page.get_by_role("button", name="Create key").click()
    secret = page.locator("#new-secret")
    expect(secret).to_have_text(re.compile(r"^sk-llmux-\S{20,}$"))
    full = secret.text_content()
    expect(page.get_by_role("button", name="Copy")).to_be_visible()
    row = page.locator('tr[data-key="checkout"]')
    expect(row).to_contain_text("rpm 60")
    shot(page, "apps-keys")
    page.reload()
    expect(page.locator('tr[data-key="checkout"]')).to_be_visible()
    assert full not in page.content()
    assert full[:21] in page.content()  # the prefix identifies it
    row = page.locator('tr[data-key="checkout"]')
    row.get_by_role("button", name="Revoke").click()
    row.get_by_role("button", name="Revoke checkout").click()
    expect(page.locator('tr[data-key="checkout"]')).to_contain_text("revoked")


def test_top_up_adds_to_the_credits_left_and_unmetered_apps_say_so(console, stack):
    assert admin_api(stack.url, "POST", "/apps", {"name": "topped", "credits": 10})[0] == 201
    assert admin_api(stack.url, "POST", "/apps", {"name": "free-app"})[0] == 201
    c = console()
    c.expected_statuses = {400}
    page = c.sign_in("ann")
    page.goto("/ui/#apps")
    expect(page.locator('tr[data-app="free-app"] td').nth(1)).to_have_text("not metered")
    row = page.locator('tr[data-app="topped"]')
    expect(row).to_contain_text("$10.00")
    row.get_by_role("button", name="Top up").click()
    row.get_by_label("Add credits (USD)").fill("0")
    row.get_by_role("button", name="Add credits").click()
    expect(page.locator("#tu-add-error")).to_contain_text("other than 0")
    # Calls (here: another admin) change the credits while the form is open: the top-up adds to them.
    _, apps = admin_api(stack.url, "GET", "/apps")
    app_id = [a["id"] for a in apps if a["name"] == "topped"][0]
    assert admin_api(stack.url, "PATCH", f"/apps/{app_id}", {"credits": 3})[0] == 200
    row.get_by_label("Add credits (USD)").fill("5")
    row.get_by_role("button", name="Add credits").click()
    expect(page.locator("#notice")).to_contain_text("credits now $8.00")
    expect(page.locator('tr[data-app="topped"] td').nth(1)).to_have_text("$8.00")
    page.locator('tr[data-app="topped"]').scroll_into_view_if_needed()
    shot(page, "apps-top-up")
    _, apps = admin_api(stack.url, "GET", "/apps")
    assert [a["credits"] for a in apps if a["name"] == "topped"] == [8]


def test_a_hostile_model_name_renders_as_text(console):
    c = console()
    page = c.sign_in("ann")
    card = page.locator('article[data-upstream="xss"]')
    expect(card).to_contain_text(XSS_MODEL, timeout=10000)
    assert page.locator("article script").count() == 0
    shot(page, "overview")
    c.dialogs and None  # Console.close asserts no alert() ran


def test_every_page_fits_a_phone(console):
    c = console(viewport=(390, 844))
    page = c.sign_in("ann")
    expect(page.locator('article[data-upstream="gpu-a"]')).to_be_visible()
    shot(page, "overview-390")
    for hash_ in ["#overview", "#upstreams", "#apps", "#models", "#calls", "#playground", "#log", "#cluster", "#usage", "#config", "#audit", "#users"]:
        page.goto("/ui/" + hash_)
        page.wait_for_load_state("networkidle")
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, f"{hash_} is {width}px wide on a 390px screen (tables scroll inside their box)"


def test_playground_streams_and_the_call_shows_in_the_log(console):
    c = console()
    page = c.sign_in("ann")
    page.goto("/ui/#playground")
    expect(page.get_by_label("Model")).to_contain_text("llama3")
    page.get_by_label("Model").select_option("llama3:latest")
    page.get_by_role("button", name="Send").click()
    out = page.locator("#pg-output")
    expect(out).to_contain_text("tok5", timeout=10000)
    facts = page.locator("#pg-facts")
    expect(facts).to_contain_text("gpu-a")
    expect(facts).to_contain_text("TTFT")
    expect(facts).to_contain_text("attempts")
    shot(page, "playground")
    page.goto("/ui/#calls")
    table = page.locator("#calls-table")
    expect(table).to_contain_text("llama3", timeout=10000)
    page.get_by_label("Upstream").fill("nope")
    page.get_by_role("button", name="Apply filters").click()
    expect(table).to_contain_text("No call matches")
    page.get_by_label("Upstream").fill("gpu-a")
    page.get_by_role("button", name="Apply filters").click()
    table.locator("tbody tr").first.click()
    expect(page.locator("#call-detail")).to_contain_text("request_id")


def test_edit_an_api_upstream_and_its_provider_keys(console, stack):
    _, url = stack.mock("oa", ["gpt-4o-mini"])
    status, _ = admin_api(stack.url, "POST", "/upstreams", {"name": "oa", "kind": "openai", "url": url + "/v1", "keys": ["sk-first-key-1111"]})
    assert status == 201
    c = console()
    page = c.sign_in("ann")
    page.goto("/ui/#upstreams")
    page.locator('tr[data-upstream="oa"]').get_by_role("button", name="Edit").click()
    editor = page.locator("#upstream-editor")
    expect(editor).to_contain_text("Edit oa (openai)")
    expect(editor.locator("#provider-keys")).to_contain_text("…1111")
    assert "sk-first-key-1111" not in page.content()
    page.get_by_label("New provider key").fill("sk-second-key-2222")
    page.get_by_role("button", name="Add key").click()
    expect(editor.locator("#provider-keys")).to_contain_text("…2222")
    editor.locator("#provider-keys tr", has_text="…1111").get_by_role("button", name="Remove").click()
    page.get_by_role("button", name="Remove key …1111").click()
    expect(editor.locator("#provider-keys")).not_to_contain_text("…1111")
    # Disabled by hand: out of rotation (calls use the other key), back with "Enable now".
    second = editor.locator('#provider-keys tr[data-key="…2222"]')
    page.get_by_label("New provider key").fill("sk-third-key-3333")
    page.get_by_role("button", name="Add key").click()
    expect(editor.locator("#provider-keys")).to_contain_text("…3333")
    second.get_by_role("button", name="Disable").click()
    expect(second).to_contain_text("disabled")
    expect(second).to_contain_text("disabled by ann")
    _, up = admin_api(stack.url, "GET", "/upstreams/oa")
    assert {k["masked"]: k["state"] for k in up["keys"]} == {"…2222": "disabled", "…3333": "ok"}, up["keys"]
    _, audit = admin_api(stack.url, "GET", "/audit?limit=5")
    assert any(e["action"] == "upstream.key.disable" and e["actor"] == "ann" for e in audit), audit
    second.get_by_role("button", name="Enable now").click()
    expect(second.get_by_role("button", name="Disable")).to_be_visible()
    expect(second).to_contain_text("ok")
    third = editor.locator('#provider-keys tr[data-key="…3333"]')
    third.get_by_role("button", name="Remove").click()
    page.get_by_role("button", name="Remove key …3333").click()
    expect(editor.locator("#provider-keys")).not_to_contain_text("…3333")
    # Timeouts: the API's 400 (bounded at 24h) shows beside the field, then a good value is saved.
    c.expected_statuses = {400}
    editor.get_by_label("First-byte timeout").fill("25h")
    page.get_by_role("button", name="Save changes").click()
    expect(page.locator("#ed-timeouts-first_byte-error")).to_contain_text("24h")
    expect(editor.get_by_label("First-byte timeout")).to_have_value("25h")  # what was typed stays
    editor.get_by_label("First-byte timeout").fill("90s")
    editor.get_by_label("Connect timeout").fill("3s")
    editor.get_by_label("Weight").fill("7")
    page.get_by_role("button", name="Save changes").click()
    expect(page.locator("#notice")).to_contain_text("Upstream oa saved")
    _, up = admin_api(stack.url, "GET", "/upstreams/oa")
    assert up["weight"] == 7 and [k["masked"] for k in up["keys"]] == ["…2222"]
    assert up["timeouts"] == {"connect": "3s", "first_byte": "90s"}, up["timeouts"]
    page.locator('tr[data-upstream="oa"]').get_by_role("button", name="Edit").click()
    expect(editor.get_by_label("First-byte timeout")).to_have_value("90s")
    expect(editor.get_by_label("Idle timeout")).to_have_value("")
    shot(page, "upstream-edit")
    admin_api(stack.url, "DELETE", "/upstreams/oa")


def test_models_switched_off_and_on_and_aliases(console, stack):
    c = console()
    page = c.sign_in("ann")
    page.goto("/ui/#models")
    row = page.locator('#served-table tr[data-model="mistral:latest"]')
    expect(row).to_contain_text("gpu-a")
    row.get_by_role("button", name="Switch off").click()
    expect(row).to_contain_text("off")
    _, models = admin_api(stack.url, "GET", "/models")
    assert any(m["name"] == "mistral:latest" and m["enabled"] is False for m in models)
    row.get_by_role("button", name="Switch on").click()
    expect(row.get_by_role("button", name="Switch off")).to_be_visible()
    page.get_by_label("Alias").fill("quick")
    page.get_by_label("Targets").fill("llama3, mistral")
    page.get_by_role("button", name="Create alias").click()
    alias = page.locator('tr[data-alias="quick"]')
    expect(alias).to_contain_text("llama3 → mistral")
    shot(page, "models")
    alias.get_by_role("button", name="Remove").click()
    alias.get_by_role("button", name="Remove alias quick").click()
    expect(page.locator('tr[data-alias="quick"]')).to_have_count(0)


def test_users_page_and_the_audit_it_leaves(console, stack):
    c = console()
    page = c.sign_in("ann")
    page.goto("/ui/#users")
    page.get_by_label("Username").fill("tmp-user")
    page.get_by_label("Password").fill("tmp-password-1")
    page.get_by_label("Role").select_option("viewer")
    page.get_by_role("button", name="Create user").click()
    row = page.locator('tr[data-user="tmp-user"]')
    expect(row).to_contain_text("viewer")
    row.get_by_role("button", name="Make admin").click()
    expect(row).to_contain_text("admin")
    row.get_by_role("button", name="Reset password").click()
    row.get_by_label("New password").fill("tmp-password-2")
    row.get_by_role("button", name="Set password").click()
    expect(page.locator("#notice")).to_contain_text("Password of tmp-user changed")
    shot(page, "users")
    page.locator('tr[data-user="tmp-user"]').get_by_role("button", name="Delete").click()
    page.get_by_role("button", name="Delete tmp-user").click()
    expect(page.locator('tr[data-user="tmp-user"]')).to_have_count(0)
    page.goto("/ui/#audit")
    table = page.locator("#audit-table")
    expect(table).to_contain_text("user.delete")
    page.get_by_label("Filter").fill("user.create")
    expect(table).not_to_contain_text("user.delete")
    table.locator("tbody tr").first.click()
    expect(page.locator("#audit-detail")).to_contain_text("after")
    shot(page, "audit")


def test_overview_weight_and_first_paint(console):
    c = console()
    page = c.sign_in("ann")
    page.goto("/ui/#overview")
    page.reload()  # a fresh load of the Overview, signed in
    expect(page.locator('article[data-upstream="gpu-a"]')).to_be_visible()
    sizes = page.evaluate(
        """() => performance.getEntriesByType('navigation').concat(performance.getEntriesByType('resource'))
            .map(e => [new URL(e.name).pathname, e.decodedBodySize])
            .filter(([p]) => /^\\/ui\\/(app\\.(js|css)|favicon\\.svg)?$/.test(p))"""
    )
    total = sum(size for _, size in sizes)
    paint = page.evaluate("performance.getEntriesByName('first-contentful-paint')[0]?.startTime")
    print(f"overview: {total} bytes of HTML+JS+CSS ({sizes}); first contentful paint {paint:.0f} ms")
    assert total <= 150 * 1024, sizes
    assert paint is not None and paint < 2000


def test_dark_scheme(console):
    c = console(color_scheme="dark")
    page = c.sign_in("ann")
    expect(page.locator('article[data-upstream="gpu-a"]')).to_be_visible()
    bg = page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert bg == "rgb(18, 21, 27)", bg
    shot(page, "overview-dark")


def test_usage_chart_table_and_csv(console, stack):
    body = json.dumps({"model": "llama3", "messages": [{"role": "user", "content": "hi"}]}).encode()
    urllib.request.urlopen(urllib.request.Request(stack.url + "/v1/chat/completions", data=body, headers={"content-type": "application/json"})).read()
    deadline = time.time() + 10
    while admin_api(stack.url, "GET", "/usage?group_by=model")[1]["totals"]["calls"] == 0:
        assert time.time() < deadline, "the call never reached the rollups"
        time.sleep(0.2)
    c = console()
    page = c.sign_in("ann")
    page.goto("/ui/#usage")
    expect(page.locator("#usage-table")).to_contain_text("llama3")
    expect(page.locator("#usage-chart rect.bar").first).to_be_attached()
    shot(page, "usage")
    href = page.locator("#usage-csv").get_attribute("href")
    assert "format=csv" in href
    csv = c.context.request.get(stack.url + href)
    assert csv.status == 200 and csv.text().startswith("start,model,calls"), csv.text()[:200]


def test_with_client_keys_required_the_playground_key_and_app_spend(browser):
    """[auth] required: the playground sends the virtual key typed in; the app's spend shows."""
    s = Stack()
    try:
        _, url = s.mock("gpu-k", ["mistral:latest"])
        s.serve([("gpu-k", url)], extra="[auth]\nrequired = true\n")
        password, role = USERS["ann"]
        assert admin_api(s.url, "POST", "/users", {"username": "ann", "password": password, "role": role})[0] == 201
        assert admin_api(s.url, "PUT", "/pricing/mistral", {"input_per_mtok": 1000000, "output_per_mtok": 1000000})[0] == 200
        assert admin_api(s.url, "POST", "/apps", {"name": "spender", "credits": 1000})[0] == 201
        _, key = admin_api(s.url, "POST", "/keys", {"name": "spender-key", "app": "spender"})
        c = Console(browser, s.url)
        c.expected_statuses = {401}
        page = c.sign_in("ann")
        page.goto("/ui/#playground")
        expect(page.get_by_label("Model")).to_contain_text("mistral")
        page.get_by_role("button", name="Send").click()
        expect(page.get_by_role("alert")).to_contain_text("HTTP 401")  # no key typed
        page.get_by_label("Virtual key").fill(key["key"])
        page.get_by_role("button", name="Send").click()
        expect(page.locator("#pg-output")).to_contain_text("tok5", timeout=10000)
        deadline = time.time() + 10
        while admin_api(s.url, "GET", "/usage?group_by=app")[1]["totals"]["cost"] == 0:
            assert time.time() < deadline, "the call never reached the rollups"
            time.sleep(0.2)
        page.goto("/ui/#apps")
        spent = page.locator('tr[data-app="spender"] td').nth(4)  # spent today
        expect(spent).to_have_text(re.compile(r"^\$\d+\.\d\d$"))
        expect(spent).not_to_have_text("$0.00")
        page.goto("/ui/#usage")
        page.get_by_label("Group by").select_option("app")
        page.get_by_role("button", name="Show").click()
        expect(page.locator("#usage-table")).to_contain_text("spender")
        c.close()
    finally:
        s.close()


def test_config_strategy_revisions_diff_and_rollback(console, stack):
    c = console()
    page = c.sign_in("ann")
    page.goto("/ui/#config")
    expect(page.locator("#config-info")).to_contain_text("sqlite")
    page.get_by_label("Strategy").select_option("round_robin")
    page.get_by_role("button", name="Set strategy").click()
    expect(page.locator("#notice")).to_contain_text("Routing strategy set")
    _, rt = admin_api(stack.url, "GET", "/routing")
    assert rt["strategy"] == "round_robin" and rt["source"] == "api"
    rows = page.locator("#revisions-table tbody tr")
    expect(rows.first).to_contain_text("round_robin")
    newest = rows.nth(0).get_attribute("data-revision")
    older = rows.nth(1).get_attribute("data-revision")
    page.locator(f"#cmp-{older}").check()
    page.locator(f"#cmp-{newest}").check()
    expect(page.locator("#revision-diff")).to_contain_text("strategy")
    shot(page, "config")
    row = page.locator(f'tr[data-revision="{older}"]')
    row.get_by_role("button", name="Roll back to this").click()
    row.get_by_role("button", name=f"Roll back to #{older}").click()
    expect(page.locator("#notice")).to_contain_text(f"Rolled back to revision {older}")
    _, rt = admin_api(stack.url, "GET", "/routing")
    assert rt["strategy"] != "round_robin", rt


def test_gateway_log_live_with_a_level_filter(console, stack):
    c = console()
    page = c.sign_in("ann")
    page.goto("/ui/#log")
    lines = page.locator("#log-lines")
    expect(lines).to_contain_text("admin login", timeout=10000)  # the sign-in just now
    # A new line shows up without a reload: an upstream that fails its probe is logged.
    proc, url = stack.mock("short-lived", ["tiny:latest"])
    assert admin_api(stack.url, "POST", "/upstreams", {"name": "short-lived", "kind": "ollama", "url": url})[0] == 201
    proc.terminate()
    proc.wait()
    expect(lines).to_contain_text("short-lived", timeout=15000)
    shot(page, "log")
    page.get_by_label("Level").select_option("warn")
    expect(lines).not_to_contain_text("admin login")
    expect(lines.locator(".line.info")).to_have_count(0)
    admin_api(stack.url, "DELETE", "/upstreams/short-lived")


def test_call_detail_shows_every_attempt_and_the_bodies_and_calls_filter_on_error_class_and_stream(browser):
    """A call that failed over shows both attempts; bodies ([logs] bodies) show as text; the filters work."""
    s = Stack()
    try:
        _, bad = s.mock("bad", ["llama3:latest", "solo:latest"])
        _, good = s.mock("good", ["llama3:latest"])
        faults = urllib.request.Request(bad + "/_mock/faults", data=json.dumps({"fail_rate": 1.0, "fail_status": 500}).encode(),
                                        headers={"content-type": "application/json"}, method="POST")
        urllib.request.urlopen(faults).read()
        s.serve([("bad", bad), ("good", good)], extra='[logs]\nbodies = true\n[routing]\nstrategy = "round_robin"\n')
        password, role = USERS["ann"]
        assert admin_api(s.url, "POST", "/users", {"username": "ann", "password": password, "role": role})[0] == 201
        hostile = "<img src=x onerror=alert(1)> hello"

        def call(model, stream):
            body = json.dumps({"model": model, "stream": stream, "messages": [{"role": "user", "content": hostile}]}).encode()
            req = urllib.request.Request(s.url + "/v1/chat/completions", data=body, headers={"content-type": "application/json"})
            try:
                with urllib.request.urlopen(req) as r:
                    r.read()
            except urllib.error.HTTPError as e:
                e.read()

        call("llama3", False)
        call("llama3", True)
        call("solo", False)
        deadline = time.time() + 10
        while len(calls := admin_api(s.url, "GET", "/calls")[1]["calls"]) < 3:
            assert time.time() < deadline, calls
            time.sleep(0.2)
        failed_over = [c for c in calls if c["requested_model"] == "llama3" and c["attempts"] == 2]
        assert failed_over, calls
        c = Console(browser, s.url)
        page = c.sign_in("ann")
        page.goto("/ui/#calls")
        table = page.locator("#calls-table")
        expect(table.locator("tbody tr")).to_have_count(3)
        page.locator(f'tr[data-call="{failed_over[0]["request_id"]}"]').click()
        detail = page.locator("#call-detail")
        attempts = detail.locator("#call-attempts tbody tr")
        expect(attempts).to_have_count(2)
        expect(attempts.nth(0)).to_contain_text("bad")
        expect(attempts.nth(0)).to_contain_text("500")
        expect(attempts.nth(0)).to_contain_text("server_error")
        expect(attempts.nth(1)).to_contain_text("good")
        expect(attempts.nth(1)).to_contain_text("200")
        expect(detail.locator("#call-request-body")).to_contain_text(hostile)
        expect(detail.locator("#call-response-body")).not_to_be_empty()
        assert detail.locator("img").count() == 0  # the body is text, never markup
        detail.locator("#call-attempts").evaluate("e => { e.scrollIntoView({block: 'start'}); window.scrollBy(0, -150); }")
        shot(page, "calls")

        page.get_by_label("Error class").select_option("server_error")
        page.get_by_role("button", name="Apply filters").click()
        expect(table.locator("tbody tr")).to_have_count(1)
        expect(table).to_contain_text("solo")
        page.get_by_label("Error class").select_option("")
        page.get_by_label("Streamed").select_option("true")
        page.get_by_role("button", name="Apply filters").click()
        expect(table.locator("tbody tr")).to_have_count(1)
        expect(table).to_contain_text("llama3")
        expect(table).not_to_contain_text("solo")
        c.close()
    finally:
        s.close()


def test_a_config_file_upstreams_key_is_disabled_and_enabled_by_hand(browser):
    s = Stack()
    try:
        _, url = s.mock("fk", ["gpt-4o-mini"])
        block = f'[[upstreams]]\nname = "fk"\nkind = "openai"\nurl = "{url}/v1"\nkeys = ["sk-file-key-1111", "sk-file-key-2222"]\n'
        s.serve([], extra=block)
        password, role = USERS["ann"]
        assert admin_api(s.url, "POST", "/users", {"username": "ann", "password": password, "role": role})[0] == 201
        c = Console(browser, s.url)
        page = c.sign_in("ann")
        page.goto("/ui/#upstreams")
        row = page.locator('tr[data-upstream="fk"]')
        expect(row).to_contain_text("read-only (config file)")
        row.get_by_role("button", name="Keys").click()
        editor = page.locator("#upstream-editor")
        expect(editor).to_contain_text("Provider keys of fk (config file)")
        expect(editor.get_by_role("button", name="Remove")).to_have_count(0)  # the file owns the keys
        key = editor.locator('#provider-keys tr[data-key="…2222"]')
        key.get_by_role("button", name="Disable").click()
        expect(key).to_contain_text("disabled by ann")
        _, up = admin_api(s.url, "GET", "/upstreams/fk")
        assert {k["masked"]: k["state"] for k in up["keys"]} == {"…1111": "ok", "…2222": "disabled"}, up["keys"]
        key.get_by_role("button", name="Enable now").click()
        expect(key.get_by_role("button", name="Disable")).to_be_visible()
        _, up = admin_api(s.url, "GET", "/upstreams/fk")
        assert all(k["state"] == "ok" for k in up["keys"]), up["keys"]
        c.close()
    finally:
        s.close()
