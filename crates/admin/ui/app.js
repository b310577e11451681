// llmux console: hand-written ES module, no build step. Talks only to /admin/v1 (and /ui/session,
// /v1/chat/completions for the playground). Every user-controlled string reaches the page through
// textContent / DOM APIs, never innerHTML, so a model named <script>… shows as text.

const $ = (sel) => document.querySelector(sel);

// h("div", {class: "x", onclick: f}, child, "text", [more]) → element. Strings become text nodes.
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else if (k === "text") el.textContent = v;
    else if (k === "for") el.htmlFor = v;
    else if (k === "value") el.value = v;
    else if (v === true) el.setAttribute(k, "");
    else el.setAttribute(k, String(v));
  }
  append(el, children);
  return el;
}
function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

// One call to the admin API; the session cookie goes along (same origin), JSON both ways.
async function api(method, path, body) {
  const init = { method, headers: {}, credentials: "same-origin" };
  if (body !== undefined) {
    init.headers["content-type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const res = await fetch(path.startsWith("/ui/") ? path : "/admin/v1" + path, init);
  if (res.status === 401 && !path.startsWith("/ui/")) {
    me = null;
    showSignIn("Your session ended: sign in again.");
    throw new ApiError(401, "signed out");
  }
  if (res.status === 204) return null;
  const text = await res.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = null; }
  if (!res.ok) {
    const msg = data && data.error && data.error.message ? data.error.message : `HTTP ${res.status}`;
    throw new ApiError(res.status, msg);
  }
  return data;
}

let me = null; // {username, role}
const isAdmin = () => me && me.role === "admin";
let cleanups = [];
function onLeave(fn) { cleanups.push(fn); }
function every(ms, fn) { const t = setInterval(fn, ms); onLeave(() => clearInterval(t)); }

const PAGES = [
  { id: "overview", title: "Overview", render: overviewPage },
  { id: "upstreams", title: "Upstreams", render: upstreamsPage },
  { id: "apps", title: "Apps & keys", render: appsPage },
  { id: "models", title: "Models", render: modelsPage },
  { id: "calls", title: "Calls", render: callsPage },
  { id: "playground", title: "Playground", render: playgroundPage },
  { id: "log", title: "Gateway log", render: logPage },
  { id: "cluster", title: "Cluster", render: clusterPage },
  { id: "usage", title: "Usage", render: usagePage },
  { id: "config", title: "Config", render: configPage },
  { id: "audit", title: "Audit", render: auditPage },
  { id: "users", title: "Users", render: usersPage, adminOnly: true },
];

function fmtMs(v) { return v === null || v === undefined ? "—" : `${Math.round(v)} ms`; }
function fmtNum(v, d = 0) { return v === null || v === undefined ? "—" : Number(v).toFixed(d); }
function fmtTime(v) {
  if (!v) return "—";
  const d = typeof v === "number" ? new Date(v < 1e12 ? v * 1000 : v) : new Date(v);
  return isNaN(d) ? String(v) : d.toLocaleString();
}
function badge(text, tone) { return h("span", { class: "badge " + (tone || ""), text }); }
const POOL_TONE = { active: "ok", standby: "warn", disabled: "bad" };
const BREAKER_TONE = { closed: "ok", half_open: "warn", open: "bad" };
const KEY_TONE = { ok: "ok", cooling: "warn", disabled: "bad" };
const DRAIN_TONE = { draining: "warn", drained: "bad" };
// "draining" / "drained" beside the pool of an upstream taken out of rotation, else nothing.
function drainBadge(u) { return u.drain ? h("span", { class: "drain", title: "drained for maintenance: no new call goes to it" }, badge(u.drain, DRAIN_TONE[u.drain])) : null; }
function list(s) { return String(s || "").split(/[\n,]/).map((x) => x.trim()).filter(Boolean); }
function alertBox(message, tone) { return h("div", { class: "alert " + (tone || ""), role: "alert", text: message }); }

// A form field: <label for> + control + hint + an error slot the API's message can land in.
function field(id, label, control, hint, wide) {
  control.id = id;
  control.name = id;
  return h("div", { class: "field" + (wide ? " wide" : "") },
    h("label", { for: id, text: label }), control,
    hint ? h("span", { class: "hint", text: hint }) : null,
    h("span", { class: "field-error", id: id + "-error", role: "status" }));
}

// Shows an API error beside the field it names ("url: refused: …"), or above the form.
function showFormError(form, prefix, err, fields, explain) {
  form.querySelectorAll(".field-error").forEach((e) => (e.textContent = ""));
  form.querySelectorAll(".invalid").forEach((e) => e.classList.remove("invalid"));
  const general = form.querySelector(".form-error");
  general.replaceChildren();
  if (!err.message) return;
  let msg = err.message.replace(/^invalid JSON body: /, "");
  const named = fields.find((f) => msg.startsWith(f + ":") || msg.includes("`" + f + "`"));
  const extra = explain ? explain(msg) : null;
  const id = named ? prefix + named.replace(/\./g, "-") : null; // "timeouts.idle" → #ed-timeouts-idle
  if (named && form.querySelector(`#${id}`)) {
    form.querySelector(`#${id}-error`).textContent = msg.startsWith(named + ":") ? msg.slice(named.length + 1).trim() : msg;
    form.querySelector(`#${id}`).classList.add("invalid");
    if (extra) general.append(alertBox(extra, "info"));
  } else {
    general.append(alertBox(err.status === 403 ? "Not allowed: " + msg : msg));
    if (extra) general.append(alertBox(extra, "info"));
  }
}

// ---------- shell: sign-in, navigation, routing ----------

async function start() {
  $("#signout").addEventListener("click", signOut);
  window.addEventListener("hashchange", route);
  me = await whoAmI();
  if (me) route(); else showSignIn();
}

async function whoAmI() {
  try {
    const s = await api("GET", "/ui/session");
    return s && s.signed_in ? s : null;
  } catch {
    return null;
  }
}

async function signOut() {
  await fetch("/ui/session", { method: "DELETE", credentials: "same-origin" });
  me = null;
  showSignIn("Signed out.");
}

function leave() { cleanups.forEach((f) => f()); cleanups = []; }

async function showSignIn(notice) {
  leave();
  $("#bar").hidden = true;
  const main = $("#main");
  const box = h("div", { class: "panel signin" }, h("h1", { text: "Sign in to llmux" }));
  main.replaceChildren(box);
  if (notice) box.append(alertBox(notice, "info"));
  let state = { users: true };
  try { state = await api("GET", "/ui/setup-state"); } catch { /* assume users exist */ }
  if (!state.users) {
    const cmd = `curl -X POST ${location.origin}/admin/v1/users \\\n  -H "authorization: Bearer $ADMIN_TOKEN" -H 'content-type: application/json' \\\n  -d '{"username":"admin","password":"choose-a-long-one","role":"admin"}'`;
    box.append(
      h("p", { text: "No user exists yet. Create the first admin with the bootstrap token (the admin.token of your config file; it is never typed into this page), then sign in here:" }),
      h("pre", { id: "setup-command", class: "cmd", text: cmd }));
  }
  const err = h("div", { class: "form-error" });
  const form = h("form", { autocomplete: "on" },
    field("username", "Username", h("input", { autocomplete: "username", required: true })),
    field("password", "Password", h("input", { type: "password", autocomplete: "current-password", required: true })),
    err,
    h("button", { class: "primary", type: "submit", text: "Sign in" }));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    err.replaceChildren();
    try {
      await api("POST", "/ui/session", { username: form.username.value, password: form.password.value });
      me = await whoAmI();
      if (!location.hash) location.hash = "#overview";
      route();
    } catch (e) {
      err.append(alertBox(e.status === 401 ? "Wrong username or password." : e.message));
    }
  });
  box.append(form);
  form.username.focus();
}

function route() {
  if (!me) return showSignIn();
  leave();
  const id = (location.hash || "#overview").slice(1);
  const pages = PAGES.filter((p) => !p.adminOnly || isAdmin());
  const page = pages.find((p) => p.id === id) || pages[0];
  $("#bar").hidden = false;
  $("#who").textContent = `${me.username} (${me.role})`;
  $("#nav").replaceChildren(...pages.map((p) =>
    h("a", { href: "#" + p.id, text: p.title, "aria-current": p === page ? "page" : null })));
  document.title = `${page.title} · llmux`;
  const main = $("#main");
  main.replaceChildren(h("h1", { text: page.title }));
  page.render(main);
}

// ---------- Overview ----------

function upstreamCard(u) {
  const warm = new Set(u.loaded_models || []);
  const models = (u.models || []).map((m) =>
    h("span", { class: "chip" + (warm.has(m) ? " warm" : ""), title: warm.has(m) ? "loaded (warm)" : null },
      m, warm.has(m) ? " ●" : ""));
  const keys = (u.keys || []).map((k) =>
    h("span", { class: "chip" }, k.masked || k.id, " ", badge(k.state, KEY_TONE[k.state])));
  const pool = u.pool || (u.enabled === false ? "disabled" : "—");
  return h("article", { class: "card", "data-upstream": u.name },
    h("h3", {}, h("span", { text: u.name }), badge(u.kind), h("span", { class: "pool" }, badge(pool, POOL_TONE[pool])),
      drainBadge(u), u.source === "file" ? badge("config file") : null),
    h("dl", { class: "kv" },
      h("dt", { text: "breaker" }), h("dd", {}, badge(u.breaker || "—", BREAKER_TONE[u.breaker])),
      h("dt", { text: "latency" }), h("dd", { text: fmtMs(u.latency_ms) + (u.ttft_ms ? ` · TTFT ${fmtMs(u.ttft_ms)}` : "") }),
      h("dt", { text: "in flight" }), h("dd", { text: String(u.active_requests ?? 0) }),
      h("dt", { text: "served / failed" }), h("dd", { text: `${u.served ?? 0} / ${u.failed ?? 0}` }),
      h("dt", { text: "url" }), h("dd", { class: "muted", text: u.url || "" }),
      u.last_error ? h("dt", { text: "last error" }) : null,
      u.last_error ? h("dd", { class: "muted", text: u.last_error }) : null),
    h("div", { class: "chips", "aria-label": "models" }, models.length ? models : h("span", { class: "muted", text: "no models" })),
    keys.length ? h("div", { class: "chips", "aria-label": "provider keys" }, keys) : null);
}

function percentile(sorted, p) {
  if (!sorted.length) return null;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

async function metricsStrip(strip) {
  const from = new Date(Date.now() - 15 * 60 * 1000).toISOString();
  let calls = [];
  try {
    const page = await api("GET", `/calls?from=${encodeURIComponent(from)}&limit=1000`);
    calls = page.calls || [];
  } catch { return; }
  const n = calls.length;
  const errors = calls.filter((c) => (c.status || 0) >= 400 || c.error_class).length;
  const dur = calls.map((c) => c.latency_ms).filter((x) => x != null).sort((a, b) => a - b);
  const ttft = calls.map((c) => c.ttft_ms).filter((x) => x != null).sort((a, b) => a - b);
  const tokens = calls.reduce((s, c) => s + (c.input_tokens || 0) + (c.output_tokens || 0), 0);
  const stat = (label, value) => h("div", { class: "stat" }, h("b", { text: value }), h("span", { text: label }));
  strip.replaceChildren(
    stat("calls / min", fmtNum(n / 15, 1)),
    stat("error rate", n ? `${fmtNum((100 * errors) / n, 1)} %` : "—"),
    stat("latency p50 / p99", dur.length ? `${Math.round(percentile(dur, 50))} / ${Math.round(percentile(dur, 99))} ms` : "—"),
    stat("TTFT p50 / p99", ttft.length ? `${Math.round(percentile(ttft, 50))} / ${Math.round(percentile(ttft, 99))} ms` : "—"),
    stat("tokens / min", fmtNum(tokens / 15, 0)));
}

function overviewPage(main) {
  const strip = h("div", { class: "strip", id: "metrics" });
  const grid = h("div", { class: "grid", id: "upstream-cards" });
  const status = h("p", { class: "muted", id: "overview-status" });
  main.append(strip, grid, status,
    h("p", { class: "muted hint", text: "● marks a model loaded in memory (warm). Calls, errors and latencies are over the last 15 minutes of the call log." }));
  let busy = false;
  async function refresh() {
    if (busy) return;
    busy = true;
    try {
      const ups = await api("GET", "/upstreams");
      grid.replaceChildren(...ups.map(upstreamCard));
      if (!ups.length) grid.append(h("p", { class: "muted", text: "No upstream yet: add one on the Upstreams page." }));
      status.textContent = `Updated ${new Date().toLocaleTimeString()} · refreshes every 2 s`;
    } catch (e) {
      if (e.status !== 401) status.textContent = "Cannot reach the admin API: " + e.message;
    } finally { busy = false; }
  }
  refresh();
  metricsStrip(strip);
  every(2000, refresh);
  every(10000, () => metricsStrip(strip));
}

// ---------- Upstreams ----------

const URL_HINTS = {
  ollama: "http://host:11434",
  openai: "https://api.openai.com/v1",
  anthropic: "https://api.anthropic.com",
  gemini: "https://generativelanguage.googleapis.com",
  azure: "https://NAME.openai.azure.com",
};

function explainSsrf(msg) {
  if (!/refused:/.test(msg)) return null;
  return "llmux refuses upstream URLs that point at loopback, private or link-local addresses, so the admin API cannot be used to reach internal services. If this upstream really lives on your network, set admin.allow_private_upstreams = true in the config file.";
}

// The timeouts an API upstream's editor shows: [key, label, default].
const TIMEOUTS = [["connect", "Connect timeout", "5s"], ["first_byte", "First-byte timeout", "60s"], ["idle", "Idle timeout", "30s"]];

function upstreamForm(onDone) {
  const kind = h("select", {}, Object.keys(URL_HINTS).map((k) => h("option", { value: k, text: k })));
  const url = h("input", { placeholder: URL_HINTS.ollama, required: true });
  // The field that carries the output limit, for OpenAI-style APIs (older compatible servers
  // know only max_tokens).
  const limitField = h("select", {},
    h("option", { value: "", text: "the kind's default" }),
    h("option", { value: "max_completion_tokens", text: "max_completion_tokens" }),
    h("option", { value: "max_tokens", text: "max_tokens" }));
  const openaiStyle = () => ["openai", "azure", "ollama"].includes(kind.value);
  kind.addEventListener("change", () => {
    url.placeholder = URL_HINTS[kind.value];
    form.querySelector("#up-keys").closest(".field").hidden = kind.value === "ollama";
    form.querySelector("#up-max_tokens_field").closest(".field").hidden = !openaiStyle();
  });
  const form = h("form", { class: "stack", id: "upstream-form" },
    field("up-name", "Name", h("input", { required: true, placeholder: "gpu-c" })),
    field("up-kind", "Kind", kind),
    field("up-url", "URL", url, "Where the provider's API lives"),
    field("up-weight", "Weight", h("input", { type: "number", min: "1", placeholder: "1" }), "For the weighted strategy"),
    field("up-models", "Models", h("input", { placeholder: "llama3, mistral" }), "Comma-separated; empty: discovered from the upstream"),
    field("up-keys", "Provider keys", h("textarea", { placeholder: "one per line" }), "Stored encrypted; never shown again in full", true),
    field("up-max_tokens_field", "Limit field", limitField, "How translated calls send the output limit: max_tokens for OpenAI-compatible servers that know no other"),
    h("div", { class: "form-error wide" }),
    h("div", { class: "actions wide" }, h("button", { class: "primary", type: "submit", text: "Add upstream" })));
  form.querySelector("#up-keys").closest(".field").hidden = true;
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const body = { name: form["up-name"].value.trim(), kind: kind.value, url: url.value.trim() };
    const keys = list(form["up-keys"].value);
    if (keys.length && kind.value !== "ollama") body.keys = keys;
    const models = list(form["up-models"].value);
    if (models.length) body.models = models;
    if (form["up-weight"].value) body.weight = Number(form["up-weight"].value);
    if (openaiStyle() && limitField.value) body.max_tokens_field = limitField.value;
    const btn = form.querySelector("button[type=submit]");
    btn.disabled = true;
    try {
      await api("POST", "/upstreams", body);
      form.reset();
      showFormError(form, "up-", { message: "" }, [], null);
      onDone(`Upstream ${body.name} added.`);
    } catch (e) {
      showFormError(form, "up-", e, ["name", "kind", "url", "weight", "models", "keys", "max_tokens_field"], explainSsrf);
    } finally { btn.disabled = false; }
  });
  return form;
}

function upstreamsPage(main) {
  const notice = h("div", { id: "notice", "aria-live": "polite" });
  const body = h("tbody");
  main.append(notice);
  if (isAdmin()) main.append(h("section", { class: "panel" }, h("h2", { text: "Add an upstream" }), upstreamForm(done)));
  const editor = h("div", { id: "upstream-editor" });
  main.append(h("h2", { text: "Upstreams" }),
    h("div", { class: "scroll" }, h("table", {}, h("thead", {}, h("tr", {},
      ["Name", "Kind", "Source", "Pool", "URL", "Models", "Keys", ""].map((t) => h("th", { text: t })))), body)),
    editor);
  main.append(h("p", { class: "hint", text: "Upstreams from the config file are read-only here: change them in the file (llmux reloads it on change or SIGHUP). Drain takes any upstream out of rotation for maintenance: new calls go elsewhere, its calls in flight finish (draining, then drained)." }));
  // While an upstream is draining, follow it to "drained" (not while a confirmation is open).
  let draining = false;
  every(2000, () => { if (draining && !body.textContent.includes("Sure?")) load(); });

  // Edit an API upstream: url, weight, models, timeouts, enabled; provider keys added, disabled, re-enabled, removed.
  async function openEditor(summary) {
    let u;
    try { u = await api("GET", `/upstreams/${encodeURIComponent(summary.name)}`); } catch (e) { done(e.message, ""); return; }
    const path = `/upstreams/${encodeURIComponent(u.name)}`;
    const fileUp = u.source === "file";
    const keyRow = (k, cell) => h("tr", { "data-key": k.masked }, h("td", {}, h("code", { text: k.masked })), h("td", {}, badge(k.state, KEY_TONE[k.state])),
      h("td", { class: "muted", text: k.disabled_reason || "" }), cell);
    const enabled = h("input", { type: "checkbox" });
    enabled.checked = u.enabled !== false;
    const timeouts = u.timeouts && typeof u.timeouts === "object" ? u.timeouts : {};
    const form = h("form", { class: "stack", id: "edit-form" },
      field("ed-url", "URL", h("input", { value: u.url || "", required: true })),
      field("ed-weight", "Weight", h("input", { type: "number", value: String(u.weight ?? 1) })),
      field("ed-models", "Models", h("input", { value: (u.declared_models || []).join(", ") }), "Comma-separated; empty: discovered"),
      TIMEOUTS.map(([k, label, dflt]) => field(`ed-timeouts-${k}`, label,
        h("input", { value: timeouts[k] == null ? "" : String(timeouts[k]), placeholder: dflt }), `Like 5s, 2m; empty: ${dflt}; at most 24h`)),
      h("div", { class: "field" }, h("label", { for: "ed-enabled", text: "Enabled" }), enabled, h("span", { class: "hint", text: "A disabled upstream gets no calls" })),
      h("div", { class: "form-error wide" }),
      h("div", { class: "actions wide" }, h("button", { class: "primary", type: "submit", text: "Save changes" })));
    enabled.id = "ed-enabled";
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const patch = { url: form["ed-url"].value.trim(), weight: Number(form["ed-weight"].value || 1), enabled: enabled.checked };
      const models = list(form["ed-models"].value);
      // Unchanged "discovered" stays out of the patch (the API refuses an empty list).
      if (models.length || (u.declared_models || []).length) patch.models = models;
      // The API replaces the whole map: keep what the form does not show (total).
      const t = { ...timeouts };
      for (const [k] of TIMEOUTS) { const v = form[`ed-timeouts-${k}`].value.trim(); if (v) t[k] = v; else delete t[k]; }
      if (JSON.stringify(t) !== JSON.stringify(timeouts)) patch.timeouts = t;
      try {
        await api("PATCH", path, patch);
        editor.replaceChildren();
        done(`Upstream ${u.name} saved.`);
      } catch (e) { showFormError(form, "ed-", e, ["url", "weight", "models", "enabled", ...TIMEOUTS.map(([k]) => "timeouts." + k)], explainSsrf); }
    });
    const keyRows = (u.keys || []).map((k) => {
      const cell = h("td", { class: "actions" });
      if (k.state !== "ok") {
        const en = h("button", { type: "button", text: "Enable now" });
        en.addEventListener("click", async () => {
          try { await api("POST", `${path}/keys/${encodeURIComponent(k.id)}/enable`); openEditor(u); } catch (e) { done(e.message, ""); }
        });
        cell.append(en);
      }
      if (k.state !== "disabled") {
        // Out of rotation now, until enabled again (the automatic re-check leaves it alone).
        const dis = h("button", { type: "button", text: "Disable" });
        dis.addEventListener("click", async () => {
          try { await api("POST", `${path}/keys/${encodeURIComponent(k.id)}/disable`); openEditor(u); load(); } catch (e) { done(e.message, ""); }
        });
        cell.append(dis);
      }
      if (fileUp) return keyRow(k, cell);
      const rm = h("button", { type: "button", class: "danger", text: "Remove" });
      rm.addEventListener("click", () => {
        const yes = h("button", { type: "button", class: "danger", text: `Remove key ${k.masked}` });
        const no = h("button", { type: "button", text: "Cancel" });
        yes.addEventListener("click", async () => {
          try { await api("DELETE", `${path}/keys/${encodeURIComponent(k.id)}`); openEditor(u); load(); } catch (e) { done(e.message, ""); }
        });
        no.addEventListener("click", () => openEditor(u));
        cell.replaceChildren(yes, no);
      });
      cell.append(rm);
      return keyRow(k, cell);
    });
    const keyTable = () => keyRows.length ? h("div", { class: "scroll" }, h("table", { id: "provider-keys" }, h("tbody", {}, keyRows))) : h("p", { class: "muted", text: "No key." });
    if (fileUp) {
      // A config-file upstream: its keys can be taken out of rotation (gateway state), nothing else.
      const close = h("button", { type: "button", text: "Close" });
      close.addEventListener("click", () => editor.replaceChildren());
      editor.replaceChildren(h("section", { class: "panel" }, h("h2", { text: `Provider keys of ${u.name} (config file)` }),
        h("p", { class: "hint", text: "Disabling a key is the gateway's state, not the file's: it lasts until the key is enabled again or llmux restarts." }),
        keyTable(), h("div", { class: "actions" }, close)));
      editor.scrollIntoView({ block: "nearest" });
      return;
    }
    const keyForm = h("form", { class: "stack", id: "key-add-form" },
      field("pk-key", "New provider key", h("input", { type: "password", autocomplete: "off", required: true }), "Stored encrypted; shown masked from now on"),
      h("div", { class: "form-error wide" }),
      h("div", { class: "actions wide" }, h("button", { type: "submit", text: "Add key" })));
    keyForm.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      try { await api("POST", `${path}/keys`, { key: keyForm["pk-key"].value }); openEditor(u); load(); }
      catch (e) { showFormError(keyForm, "pk-", e, ["key"]); }
    });
    const close = h("button", { type: "button", text: "Close" });
    close.addEventListener("click", () => editor.replaceChildren());
    editor.replaceChildren(h("section", { class: "panel" },
      h("h2", { text: `Edit ${u.name} (${u.kind})` }), form,
      u.kind === "ollama" ? null : [h("h2", { text: "Provider keys" }),
        keyTable(), keyForm],
      h("div", { class: "actions" }, close)));
    editor.scrollIntoView({ block: "nearest" });
  }
  function done(msg, tone) {
    notice.replaceChildren(alertBox(msg, tone || "ok"));
    load();
  }
  async function load() {
    let ups;
    try { ups = await api("GET", "/upstreams"); } catch (e) { notice.replaceChildren(alertBox(e.message)); return; }
    draining = ups.some((u) => u.drain === "draining");
    body.replaceChildren(...ups.map((u) => {
      const actions = h("td", { class: "actions" });
      if (isAdmin()) {
        const check = h("button", { type: "button", text: "Check now" });
        check.addEventListener("click", async () => {
          check.disabled = true;
          try {
            const r = await api("POST", `/upstreams/${encodeURIComponent(u.name)}/refresh`);
            done(`${u.name} checked: ${r.pool}${r.last_error ? " — " + r.last_error : ""}.`, r.pool === "active" ? "ok" : "info");
          } catch (e) { done(`Check of ${u.name} failed: ${e.message}`, ""); }
        });
        if (u.pool) actions.append(check);
        actions.append(drainButton(u, actions, done, load));
        if (u.source === "api") {
          const edit = h("button", { type: "button", text: "Edit" });
          edit.addEventListener("click", () => openEditor(u));
          actions.append(edit);
          const del = h("button", { type: "button", class: "danger", text: "Delete" });
          del.addEventListener("click", () => {
            const really = h("button", { type: "button", class: "danger", text: `Delete ${u.name} for good` });
            const cancel = h("button", { type: "button", text: "Cancel" });
            really.addEventListener("click", async () => {
              try { await api("DELETE", `/upstreams/${encodeURIComponent(u.name)}`); done(`Upstream ${u.name} deleted.`); }
              catch (e) { done(e.message, ""); }
            });
            cancel.addEventListener("click", load);
            actions.replaceChildren(h("span", { text: "Sure? " }), really, cancel);
          });
          actions.append(del);
        } else {
          if ((u.keys || []).length) {
            const keys = h("button", { type: "button", text: "Keys" });
            keys.addEventListener("click", () => openEditor(u));
            actions.append(keys);
          }
          actions.append(h("span", { class: "muted", text: "read-only (config file)" }));
        }
      }
      const pool = u.pool || (u.enabled === false ? "disabled" : "—");
      return h("tr", { "data-upstream": u.name },
        h("td", { text: u.name }), h("td", { text: u.kind }),
        h("td", { text: u.source === "file" ? "config file" : "admin API" }),
        h("td", {}, badge(pool, POOL_TONE[pool]), " ", drainBadge(u)),
        h("td", { text: u.url || "" }),
        h("td", { text: (u.models || u.declared_models || []).join(", ") }),
        h("td", { text: (u.keys || []).map((k) => `${k.masked} (${k.state})`).join(", ") }),
        actions);
    }));
  }
  load();
}

// "Drain" (asks first: new calls stop going to the upstream, its calls in flight finish) or
// "Undrain" for an upstream of either source.
function drainButton(u, actions, done, load) {
  const path = `/upstreams/${encodeURIComponent(u.name)}`;
  if (u.drain) {
    const undrain = h("button", { type: "button", text: "Undrain" });
    undrain.addEventListener("click", async () => {
      undrain.disabled = true;
      try { await api("POST", `${path}/undrain`); done(`${u.name} is back in rotation.`); }
      catch (e) { done(e.message, ""); }
    });
    return undrain;
  }
  const drain = h("button", { type: "button", text: "Drain" });
  drain.addEventListener("click", () => {
    const really = h("button", { type: "button", class: "danger", text: `Drain ${u.name}` });
    const cancel = h("button", { type: "button", text: "Cancel" });
    really.addEventListener("click", async () => {
      really.disabled = true;
      try {
        const r = await api("POST", `${path}/drain`);
        done(r.drain === "drained" ? `${u.name} is drained: no call is left on it.`
          : `${u.name} is draining: no new call goes to it, ${r.active_requests} still running.`, "info");
      } catch (e) { done(e.message, ""); }
    });
    cancel.addEventListener("click", load);
    actions.replaceChildren(h("span", { text: "New calls stop going to it; calls in flight finish. Sure? " }), really, cancel);
  });
  return drain;
}

// ---------- Apps & keys ----------

function money(v) { return v === null || v === undefined ? "—" : `$${Number(v).toFixed(2)}`; }

function appsPage(main) {
  const notice = h("div", { id: "notice", "aria-live": "polite" });
  const secretBox = h("div", { id: "secret-box" });
  const appsBody = h("tbody");
  const keysBody = h("tbody");
  const appSelect = h("select", { required: true });
  main.append(notice, secretBox);
  const say = (msg, tone) => notice.replaceChildren(alertBox(msg, tone || "ok"));
  const keySel = new Set();
  const keyBar = isAdmin() ? h("div", { class: "actions", id: "key-batch" }) : null;
  function drawKeyBar() {
    if (!keyBar) return;
    const n = keySel.size;
    const keys = `${n} key${n === 1 ? "" : "s"}`;
    // One confirmed batch call: revoke (kept, listed as revoked) or delete (gone).
    const action = (label, verb, done, body, warning) => {
      const b = h("button", { type: "button", class: "danger", text: label });
      b.disabled = n === 0;
      b.addEventListener("click", () => {
        const yes = h("button", { type: "button", class: "danger", text: `${verb} ${keys}` });
        const no = h("button", { type: "button", text: "Cancel" });
        yes.addEventListener("click", async () => {
          try {
            const r = await api("POST", "/keys/batch", { ids: [...keySel], ...body });
            say(`${r.count} key${r.count === 1 ? "" : "s"} ${done}.`);
            keySel.clear();
            load();
          } catch (e) { say(e.message, ""); }
        });
        no.addEventListener("click", drawKeyBar);
        keyBar.replaceChildren(h("span", { text: warning }), yes, no);
      });
      return b;
    };
    const revoke = action("Revoke selected", "Revoke", "revoked", { revoke: true }, "Calls with them stop at once. ");
    const del = action("Delete selected", "Delete", "deleted", { delete: true }, "Calls with them stop at once, and the keys leave the list. ");
    keyBar.replaceChildren(h("span", { class: "muted", text: n ? `${n} selected: ` : "Select keys below to revoke or delete many at once. " }), revoke, del);
  }

  if (isAdmin()) {
    const appForm = h("form", { class: "stack", id: "app-form" },
      field("app-name", "App name", h("input", { required: true })),
      field("app-credits", "Credits (USD)", h("input", { type: "number", step: "0.01" }), "Empty: not metered (no credit limit; budgets still apply)"),
      field("app-daily_budget", "Daily budget (USD)", h("input", { type: "number", step: "0.01", min: "0" })),
      field("app-monthly_budget", "Monthly budget (USD)", h("input", { type: "number", step: "0.01", min: "0" })),
      h("div", { class: "form-error wide" }),
      h("div", { class: "actions wide" }, h("button", { class: "primary", type: "submit", text: "Create app" })));
    appForm.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const body = { name: appForm["app-name"].value.trim() };
      for (const k of ["credits", "daily_budget", "monthly_budget"]) {
        const v = appForm["app-" + k].value;
        if (v !== "") body[k] = Number(v);
      }
      try {
        await api("POST", "/apps", body);
        appForm.reset();
        showFormError(appForm, "app-", { message: "" }, [], null);
        say(`App ${body.name} created.`);
        load();
      } catch (e) { showFormError(appForm, "app-", e, ["name", "credits", "daily_budget", "monthly_budget"]); }
    });

    const keyForm = h("form", { class: "stack", id: "key-form" },
      field("key-name", "Key name", h("input", { required: true })),
      field("key-app", "App", appSelect),
      field("key-models", "Models", h("input", { placeholder: "llama3, gpt-4o" }), "Comma-separated; empty: every model"),
      field("key-rpm", "Requests / min", h("input", { type: "number", min: "1" })),
      field("key-tpm", "Tokens / min", h("input", { type: "number", min: "1" })),
      field("key-concurrency", "Concurrency", h("input", { type: "number", min: "1" })),
      field("key-expires_at", "Expires", h("input", { type: "datetime-local" }), "Empty: never"),
      h("div", { class: "form-error wide" }),
      h("div", { class: "actions wide" }, h("button", { class: "primary", type: "submit", text: "Create key" })));
    keyForm.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const body = { name: keyForm["key-name"].value.trim(), app: appSelect.value };
      const models = list(keyForm["key-models"].value);
      if (models.length) body.models = models;
      const limits = {};
      for (const k of ["rpm", "tpm", "concurrency"]) if (keyForm["key-" + k].value) limits[k] = Number(keyForm["key-" + k].value);
      if (Object.keys(limits).length) body.limits = limits;
      if (keyForm["key-expires_at"].value) body.expires_at = new Date(keyForm["key-expires_at"].value).toISOString();
      try {
        const k = await api("POST", "/keys", body);
        keyForm.reset();
        showFormError(keyForm, "key-", { message: "" }, [], null);
        showSecret(k);
        load();
      } catch (e) { showFormError(keyForm, "key-", e, ["name", "app", "models", "limits", "rpm", "tpm", "concurrency", "expires_at"]); }
    });
    main.append(h("section", { class: "panel" }, h("h2", { text: "Create an app" }), appForm),
      h("section", { class: "panel" }, h("h2", { text: "Create a virtual key" }), keyForm));
  }

  // Credits (set, e.g. after a top-up) and budgets of one app, edited in its row.
  function editApp(a, cell) {
    const form = h("form", { class: "stack", id: "app-edit-form" },
      field("ae-credits", "Credits (USD)", h("input", { type: "number", step: "0.01", value: a.credits ?? "" })),
      field("ae-daily_budget", "Daily budget (USD)", h("input", { type: "number", step: "0.01", value: a.daily_budget ?? "" })),
      field("ae-monthly_budget", "Monthly budget (USD)", h("input", { type: "number", step: "0.01", value: a.monthly_budget ?? "" })),
      h("div", { class: "form-error wide" }),
      h("div", { class: "actions wide" }, h("button", { type: "submit", class: "primary", text: "Save" }), h("button", { type: "button", text: "Cancel", onclick: load })));
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const body = {};
      for (const k of ["credits", "daily_budget", "monthly_budget"]) if (form["ae-" + k].value !== "") body[k] = Number(form["ae-" + k].value);
      try { await api("PATCH", `/apps/${encodeURIComponent(a.id)}`, body); say(`App ${a.name} saved.`); load(); }
      catch (e) { showFormError(form, "ae-", e, ["credits", "daily_budget", "monthly_budget"]); }
    });
    cell.replaceChildren(form);
  }

  // Top-up: POST /apps/{app}/credits {"add"} adds atomically to what calls meanwhile left
  // (setting the value in Edit would overwrite their spend).
  function topUp(a, cell) {
    const form = h("form", { class: "stack", id: "topup-form" },
      field("tu-add", "Add credits (USD)", h("input", { type: "number", step: "0.01", required: true }),
        a.credits == null ? "This app is not metered: a top-up starts metering it from this amount" : "Negative takes credits back"),
      h("div", { class: "form-error wide" }),
      h("div", { class: "actions wide" }, h("button", { type: "submit", class: "primary", text: "Add credits" }), h("button", { type: "button", text: "Cancel", onclick: load })));
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      try {
        const after = await api("POST", `/apps/${encodeURIComponent(a.id)}/credits`, { add: Number(form["tu-add"].value) });
        say(`App ${a.name}: credits now ${money(after.credits)}.`);
        load();
      } catch (e) { showFormError(form, "tu-", e, ["add"]); }
    });
    cell.replaceChildren(form);
    form["tu-add"].focus();
  }

  function showSecret(k) {
    const copy = h("button", { type: "button", class: "primary", text: "Copy" });
    const secret = h("div", { class: "secret", id: "new-secret", text: k.key });
    copy.addEventListener("click", async () => {
      try { await navigator.clipboard.writeText(k.key); copy.textContent = "Copied"; }
      catch { copy.textContent = "Select the key and copy it"; }
    });
    const dismiss = h("button", { type: "button", text: "I have stored it" });
    dismiss.addEventListener("click", () => secretBox.replaceChildren());
    secretBox.replaceChildren(h("section", { class: "panel" },
      h("h2", { text: `Key ${k.name} created` }),
      alertBox("This is the only time the full key is shown. Copy it now; llmux keeps only a hash.", "info"),
      secret, h("div", { class: "actions" }, copy, dismiss)));
    secretBox.scrollIntoView({ block: "start" });
  }

  main.append(h("h2", { text: "Apps" }),
    h("div", { class: "scroll" }, h("table", { id: "apps-table" }, h("thead", {}, h("tr", {},
      ["Name", "Credits", "Daily budget", "Monthly budget", "Spent today (UTC)", "Spent this month", "Created", ""].map((t) => h("th", { text: t })))), appsBody)),
    h("h2", { text: "Virtual keys" }),
    keyBar,
    h("div", { class: "scroll" }, h("table", { id: "keys-table" }, h("thead", {}, h("tr", {},
      ["", "Name", "App", "Key", "Models", "Limits", "Expires", "Last used", "State", ""].map((t) => h("th", { text: t })))), keysBody)));

  async function load() {
    let apps, keys, today, month;
    const now = new Date();
    const dayStart = new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), now.getUTCDate())).toISOString();
    const monthStart = new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), 1)).toISOString();
    try {
      [apps, keys, today, month] = await Promise.all([api("GET", "/apps"), api("GET", "/keys"),
        api("GET", `/usage?group_by=app&from=${encodeURIComponent(dayStart)}`), api("GET", `/usage?group_by=app&from=${encodeURIComponent(monthStart)}`)]);
    } catch (e) { if (e.status !== 401) say(e.message, ""); return; }
    const spent = (u) => Object.fromEntries((u.rows || []).map((r) => [r.app_id, r.cost]));
    const spentToday = spent(today), spentMonth = spent(month);
    const appName = Object.fromEntries(apps.map((a) => [a.id, a.name]));
    const chosen = appSelect.value;
    appSelect.replaceChildren(...apps.map((a) => h("option", { value: a.name, text: a.name })));
    if (chosen) appSelect.value = chosen;
    appsBody.replaceChildren(...apps.map((a) => {
      const cell = h("td", { class: "actions" });
      if (isAdmin()) {
        const edit = h("button", { type: "button", text: "Edit" });
        edit.addEventListener("click", () => editApp(a, cell));
        const top = h("button", { type: "button", text: "Top up" });
        top.addEventListener("click", () => topUp(a, cell));
        cell.append(edit, top);
      }
      return h("tr", { "data-app": a.name },
        h("td", { text: a.name }), h("td", {}, a.credits == null ? h("span", { class: "muted", text: "not metered" }) : money(a.credits)),
        h("td", { text: money(a.daily_budget) }), h("td", { text: money(a.monthly_budget) }),
        h("td", { text: money(spentToday[a.id] || 0) }), h("td", { text: money(spentMonth[a.id] || 0) }),
        h("td", { text: fmtTime(a.created_at) }), cell);
    }));
    if (!apps.length) appsBody.append(h("tr", {}, h("td", { colspan: "8", class: "muted", text: "No app yet." })));
    keysBody.replaceChildren(...keys.map((k) => {
      const revoked = Boolean(k.revoked_at) || k.status === "revoked";
      const act = h("td", { class: "actions" });
      if (isAdmin() && !revoked) {
        const b = h("button", { type: "button", class: "danger", text: "Revoke" });
        b.addEventListener("click", () => {
          const yes = h("button", { type: "button", class: "danger", text: `Revoke ${k.name}` });
          const no = h("button", { type: "button", text: "Cancel" });
          yes.addEventListener("click", async () => {
            try { await api("POST", `/keys/${encodeURIComponent(k.id)}/revoke`); say(`Key ${k.name} revoked.`); load(); }
            catch (e) { say(e.message, ""); }
          });
          no.addEventListener("click", load);
          act.replaceChildren(yes, no);
        });
        act.append(b);
      }
      const limits = k.limits ? Object.entries(k.limits).filter(([, v]) => typeof v === "number").map(([n, v]) => `${n} ${v}`).join(", ") : "";
      const pick = h("td", {});
      if (isAdmin() && !revoked) {
        const box = h("input", { type: "checkbox", "aria-label": `Select key ${k.name}` });
        box.checked = keySel.has(k.id);
        box.addEventListener("change", () => { if (box.checked) keySel.add(k.id); else keySel.delete(k.id); drawKeyBar(); });
        pick.append(box);
      }
      return h("tr", { "data-key": k.name }, pick,
        h("td", { text: k.name }), h("td", { text: appName[k.app] || k.app || "" }),
        h("td", {}, h("code", { text: k.prefix ? k.prefix + "…" : (k.masked || "") })),
        h("td", { text: (k.models || []).join(", ") || "all" }), h("td", { text: limits || "—" }),
        h("td", { text: fmtTime(k.expires_at) }), h("td", { text: fmtTime(k.last_used_at) }),
        h("td", {}, badge(k.status || (revoked ? "revoked" : "active"), k.status === "active" ? "ok" : "bad")), act);
    }));
    const live = new Set(keys.filter((k) => !k.revoked_at && k.status !== "revoked").map((k) => k.id));
    for (const id of [...keySel]) if (!live.has(id)) keySel.delete(id);
    drawKeyBar();
    if (!keys.length) keysBody.append(h("tr", {}, h("td", { colspan: "10", class: "muted", text: "No key yet." })));
  }
  load();
}

// ---------- Models ----------

function modelsPage(main) {
  const notice = h("div", { id: "notice", "aria-live": "polite" });
  const servedBody = h("tbody");
  const storedBody = h("tbody");
  const aliasBody = h("tbody");
  const collisionBody = h("tbody");
  const selected = new Set();
  const batchBar = isAdmin() ? h("div", { class: "actions", id: "model-batch" }) : null;
  main.append(notice);
  const say = (msg, tone) => notice.replaceChildren(alertBox(msg, tone || "ok"));
  let aliasForm = null;
  if (isAdmin()) {
    aliasForm = h("form", { class: "stack", id: "alias-form" },
      field("al-name", "Alias", h("input", { required: true, placeholder: "fast" })),
      field("al-targets", "Targets", h("input", { required: true, placeholder: "llama3, mistral" }), "Tried in this order"),
      h("div", { class: "form-error wide" }),
      h("div", { class: "actions wide" }, h("button", { class: "primary", type: "submit", text: "Create alias" })));
    aliasForm.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const body = { name: aliasForm["al-name"].value.trim(), targets: list(aliasForm["al-targets"].value) };
      try { await api("POST", "/aliases", body); aliasForm.reset(); showFormError(aliasForm, "al-", { message: "" }, [], null); say(`Alias ${body.name} created.`); load(); }
      catch (e) { showFormError(aliasForm, "al-", e, ["name", "targets"]); }
    });
  }
  main.append(
    h("h2", { text: "Served now" }),
    h("div", { class: "scroll" }, h("table", { id: "served-table" }, h("thead", {}, h("tr", {},
      ["Model", "Upstreams (● warm)", "State", ""].map((t) => h("th", { text: t })))), servedBody)),
    h("h2", { text: "Aliases" }),
    aliasForm ? h("section", { class: "panel" }, aliasForm) : null,
    h("div", { class: "scroll" }, h("table", { id: "alias-table" }, h("thead", {}, h("tr", {},
      ["Alias", "Targets", ""].map((t) => h("th", { text: t })))), aliasBody)),
    h("h2", { text: "Stored model settings" }),
    batchBar,
    h("div", { class: "scroll" }, h("table", { id: "stored-models" }, h("thead", {}, h("tr", {},
      ["", "Model", "Upstream", "State", "Origin"].map((t) => h("th", { text: t })))), storedBody)),
    h("h2", { text: "Name collisions" }),
    h("p", { class: "muted", text: "Served names that normalise alike; a request by the normalised name goes to the one shown. Rename or switch one off to settle it." }),
    h("div", { class: "scroll" }, h("table", { id: "collisions-table" }, h("thead", {}, h("tr", {},
      ["Normalised name", "Rule", "Models", "Routes to"].map((t) => h("th", { text: t })))), collisionBody)));

  async function rename(name, stored, to, keepAlias) {
    let made = null;
    try {
      // A discovered model has no row yet: one is made for the rename, and removed again if
      // the rename is refused, so a refusal changes nothing.
      if (!stored) made = (await api("POST", "/models", { name })).id;
      await api("PATCH", `/models/${encodeURIComponent(stored ? stored.id : made)}`, { name: to, keep_alias: keepAlias });
      say(`Model ${name} renamed to ${to}${keepAlias ? ` (${name} kept as an alias)` : ""}.`);
      load();
    } catch (e) {
      if (made) await api("DELETE", `/models/${encodeURIComponent(made)}`).catch(() => {});
      say(e.message, "");
    }
  }
  function renameForm(cell, name, stored) {
    const input = h("input", { required: true, value: name, "aria-label": `New name for ${name}` });
    const keep = h("input", { type: "checkbox", id: `keep-${name}` });
    const save = h("button", { type: "submit", class: "primary", text: "Save name" });
    const cancel = h("button", { type: "button", text: "Cancel" });
    const form = h("form", { class: "inline" }, input,
      h("label", { class: "check" }, keep, " Keep the old name as an alias"), save, cancel);
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      const to = input.value.trim();
      if (to && to !== name) rename(name, stored, to, keep.checked); else load();
    });
    cancel.addEventListener("click", load);
    cell.replaceChildren(form);
    input.focus();
  }
  async function batch(body, what) {
    try {
      const r = await api("POST", "/models/batch", { ids: [...selected], ...body });
      say(`${r.count} model setting${r.count === 1 ? "" : "s"} ${what}.`);
      selected.clear();
      load();
    } catch (e) { say(e.message, ""); }
  }
  function drawBatchBar() {
    if (!batchBar) return;
    const n = selected.size;
    const off = h("button", { type: "button", text: "Switch off selected" });
    const on = h("button", { type: "button", text: "Switch on selected" });
    const del = h("button", { type: "button", class: "danger", text: "Delete selected" });
    for (const b of [off, on, del]) b.disabled = n === 0;
    off.addEventListener("click", () => batch({ enabled: false }, "switched off"));
    on.addEventListener("click", () => batch({ enabled: true }, "switched on"));
    del.addEventListener("click", () => {
      const yes = h("button", { type: "button", class: "danger", text: `Delete ${n} model setting${n === 1 ? "" : "s"}` });
      const no = h("button", { type: "button", text: "Cancel" });
      yes.addEventListener("click", () => batch({ delete: true }, "deleted"));
      no.addEventListener("click", drawBatchBar);
      batchBar.replaceChildren(h("span", { text: "Their names answer as discovered again. " }), yes, no);
    });
    batchBar.replaceChildren(h("span", { class: "muted", text: n ? `${n} selected: ` : "Select settings below to change many at once. " }), off, on, del);
  }
  async function setEnabled(name, stored, enabled) {
    try {
      if (stored) await api("PATCH", `/models/${encodeURIComponent(stored.id)}`, { enabled });
      else await api("POST", "/models", { name, enabled });
      say(`Model ${name} switched ${enabled ? "on" : "off"}.`);
      load();
    } catch (e) { say(e.message, ""); }
  }
  async function load() {
    let ups, models, aliases, collisions;
    try {
      [ups, models, aliases, collisions] = await Promise.all([api("GET", "/upstreams"), api("GET", "/models"),
        api("GET", "/aliases"), api("GET", "/models/collisions")]);
    }
    catch (e) { if (e.status !== 401) say(e.message, ""); return; }
    const stored = models.filter((m) => m.origin !== "discovered");
    // Upstreams list their own names; a renamed model is served under its new name.
    const shownAs = (upstream, name) => {
      const r = stored.find((m) => m.renamed && m.original_name === name && (!m.upstream || m.upstream === upstream));
      return r ? r.name : name;
    };
    const served = new Map();
    for (const u of ups) for (const orig of u.models || []) {
      const m = shownAs(u.name, orig);
      if (!served.has(m)) served.set(m, []);
      served.get(m).push({ name: u.name, warm: (u.loaded_models || []).includes(orig), pool: u.pool });
    }
    const global = new Map(stored.filter((m) => !m.upstream).map((m) => [m.name, m]));
    for (const m of global.keys()) if (!served.has(m)) served.set(m, []);
    servedBody.replaceChildren(...[...served.keys()].sort().map((name) => {
      const st = global.get(name);
      const on = !st || st.enabled !== false;
      const cell = h("td", { class: "actions" });
      if (isAdmin()) {
        const b = h("button", { type: "button", text: on ? "Switch off" : "Switch on" });
        b.addEventListener("click", () => setEnabled(name, st, !on));
        const r = h("button", { type: "button", text: "Rename" });
        r.addEventListener("click", () => renameForm(cell, name, st));
        cell.append(b, r);
      }
      return h("tr", { "data-model": name }, h("td", {}, h("code", { text: name })),
        h("td", {}, h("div", { class: "chips" }, served.get(name).map((x) =>
          h("span", { class: "chip" + (x.warm ? " warm" : "") }, x.name, x.warm ? " ●" : "", x.pool !== "active" ? ` (${x.pool})` : "")))),
        h("td", {}, on ? badge("on", "ok") : badge("off", "bad")), cell);
    }));
    aliasBody.replaceChildren(...aliases.map((a) => {
      const cell = h("td", { class: "actions" });
      if (isAdmin()) {
        const del = h("button", { type: "button", class: "danger", text: "Remove" });
        del.addEventListener("click", () => {
          const yes = h("button", { type: "button", class: "danger", text: `Remove alias ${a.name}` });
          const no = h("button", { type: "button", text: "Cancel" });
          yes.addEventListener("click", async () => {
            try { await api("DELETE", `/aliases/${encodeURIComponent(a.name)}`); say(`Alias ${a.name} removed.`); load(); } catch (e) { say(e.message, ""); }
          });
          no.addEventListener("click", load);
          cell.replaceChildren(yes, no);
        });
        cell.append(del);
      }
      return h("tr", { "data-alias": a.name }, h("td", {}, h("code", { text: a.name })), h("td", { text: (a.targets || []).join(" → ") }), cell);
    }));
    if (!aliases.length) aliasBody.append(h("tr", {}, h("td", { colspan: "3", class: "muted", text: "No alias." })));
    const ids = new Set(stored.map((m) => m.id));
    for (const id of [...selected]) if (!ids.has(id)) selected.delete(id);
    storedBody.replaceChildren(...stored.map((m) => {
      const pick = h("td", {});
      if (isAdmin()) {
        const box = h("input", { type: "checkbox", "aria-label": `Select ${m.name}${m.upstream ? " on " + m.upstream : ""}` });
        box.checked = selected.has(m.id);
        box.addEventListener("change", () => { if (box.checked) selected.add(m.id); else selected.delete(m.id); drawBatchBar(); });
        pick.append(box);
      }
      const label = m.renamed ? [h("code", { text: m.name }), h("span", { class: "muted", text: ` (was ${m.original_name})` })] : [h("code", { text: m.name })];
      return h("tr", { "data-stored": m.name }, pick, h("td", {}, ...label), h("td", { text: m.upstream || "everywhere" }),
        h("td", {}, m.enabled === false ? badge("off", "bad") : badge("on", "ok")), h("td", { text: m.origin || "" }));
    }));
    if (!stored.length) storedBody.append(h("tr", {}, h("td", { colspan: "5", class: "muted", text: "None: every served model is on." })));
    drawBatchBar();
    collisionBody.replaceChildren(...collisions.map((c) => h("tr", { "data-collision": c.normalized },
      h("td", {}, h("code", { text: c.normalized })), h("td", { text: c.rule }),
      h("td", { text: (c.models || []).map((m) => `${m.upstream}: ${m.name}`).join(", ") }),
      h("td", {}, h("code", { text: c.routes_to || "" })))));
    if (!collisions.length) collisionBody.append(h("tr", {}, h("td", { colspan: "4", class: "muted", text: "No collision." })));
  }
  load();
}

// ---------- Gateway log ----------

function logPage(main) {
  const level = h("select", {}, h("option", { value: "", text: "all" }),
    ["error", "warn", "info", "debug"].map((l) => h("option", { value: l, text: `${l} and worse` })));
  const live = h("input", { type: "checkbox", id: "log-live" });
  live.checked = true;
  const lines = h("div", { class: "log", id: "log-lines", role: "log", "aria-live": "off" });
  main.append(h("section", { class: "panel" }, h("div", { class: "stack" }, field("log-level", "Level", level),
    h("div", { class: "actions" }, live, h("label", { for: "log-live", text: "Live (every 2 s)" })))),
    h("p", { class: "hint", text: "The newest of the last 10,000 lines the gateway wrote to stderr; newest at the bottom." }), lines);
  let after = 0;
  const KEEP = 2000;
  async function poll() {
    let page;
    try { page = await api("GET", `/logs?after=${after}&limit=${KEEP}` + (level.value ? `&level=${level.value}` : "")); } catch { return; }
    after = page.next;
    const stick = lines.scrollTop + lines.clientHeight >= lines.scrollHeight - 4;
    for (const l of page.lines) lines.append(h("div", { class: "line " + (l.level || "").toLowerCase(), text: l.text }));
    while (lines.childElementCount > KEEP) lines.firstElementChild.remove();
    const empty = lines.querySelector(".muted");
    if (empty && page.lines.length) empty.remove();
    if (!lines.childElementCount) lines.append(h("div", { class: "muted", text: "No line at this level." }));
    if (stick) lines.scrollTop = lines.scrollHeight;
  }
  level.addEventListener("change", () => { after = 0; lines.replaceChildren(); poll(); });
  every(2000, () => { if (live.checked) poll(); });
  poll();
}

// ---------- Cluster ----------

const STATE_TONE = { live: "ok", lost: "bad" };

function clusterPage(main) {
  const summary = h("p", { id: "cluster-summary", "aria-live": "polite" });
  const warning = h("div", { id: "cluster-warning" });
  const body = h("tbody");
  const hint = h("p", { class: "hint" });
  main.append(summary, warning,
    h("div", { class: "scroll" }, h("table", { id: "cluster-table" }, h("thead", {}, h("tr", {},
      ["ID", "Address", "Version", "Started", "Last heartbeat", "In flight", "Calls/s", "Prober", "State"].map((t) => h("th", { text: t })))), body)),
    hint);
  async function poll() {
    let v;
    try { v = await api("GET", "/cluster"); } catch (e) { warning.replaceChildren(alertBox(e.message)); return; }
    const live = v.instances.filter((i) => i.state === "live").length;
    summary.textContent = v.mode === "single"
      ? "Single instance: no cluster (cluster mode needs a PostgreSQL store and a Redis URL)."
      : `Cluster of ${v.instances.length} instance${v.instances.length === 1 ? "" : "s"}, ${live} live.`;
    hint.textContent = v.mode === "single"
      ? "Refreshes every 2 s."
      : "Every instance writes its record to Redis at each heartbeat; one silent for three heartbeats is lost, and is dropped after 10 minutes. A clean stop leaves the list at once. Refreshes every 2 s.";
    warning.replaceChildren(...(v.warning ? [alertBox(v.warning, "info")] : []));
    body.replaceChildren(...v.instances.map((i) => h("tr", { "data-instance": i.id },
      h("td", {}, h("code", { text: i.id }), i.id === v.instance ? h("span", { class: "muted", text: " (this one)" }) : null),
      h("td", { text: i.address }),
      h("td", { text: i.version }),
      h("td", { text: fmtTime(i.started) }),
      h("td", { text: fmtTime(i.last_heartbeat) }),
      h("td", { text: String(i.in_flight) }),
      h("td", { text: fmtNum(i.calls_per_s, 2) }),
      h("td", {}, i.prober ? badge("prober", "ok") : h("span", { class: "muted", text: "—" })),
      h("td", {}, badge(i.state, STATE_TONE[i.state])))));
  }
  every(2000, poll);
  poll();
}

// ---------- Usage ----------

const SVG = "http://www.w3.org/2000/svg";
function svg(tag, attrs, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  return append(el, children);
}

function usagePage(main) {
  const by = h("select", {}, ["model", "app", "upstream"].map((x) => h("option", { value: x, text: x })));
  const bucket = h("select", {}, h("option", { value: "hour", text: "hour" }), h("option", { value: "day", text: "day" }));
  const from = h("input", { type: "datetime-local" });
  const to = h("input", { type: "datetime-local" });
  const csv = h("a", { id: "usage-csv", download: "llmux-usage.csv", text: "Export CSV" });
  const form = h("form", { class: "stack", id: "usage-form" },
    field("us-by", "Group by", by), field("us-bucket", "Per", bucket),
    field("us-from", "From", from, "Empty: the last 7 days"), field("us-to", "To", to),
    h("div", { class: "form-error wide" }),
    h("div", { class: "actions wide" }, h("button", { class: "primary", type: "submit", text: "Show" }), csv));
  const strip = h("div", { class: "strip", id: "usage-totals" });
  const chart = h("div", { class: "panel", id: "usage-chart" });
  const body = h("tbody");
  const head = h("tr");
  main.append(h("section", { class: "panel" }, form), strip, chart,
    h("div", { class: "scroll" }, h("table", { id: "usage-table" }, h("thead", {}, head), body)));
  function query(format) {
    const q = new URLSearchParams({ group_by: `${by.value},${bucket.value}` });
    q.set("from", from.value ? new Date(from.value).toISOString() : new Date(Date.now() - 7 * 86400e3).toISOString());
    if (to.value) q.set("to", new Date(to.value).toISOString());
    if (format) q.set("format", format);
    return q;
  }
  async function load() {
    csv.href = "/admin/v1/usage?" + query("csv");
    let u;
    try { u = await api("GET", "/usage?" + query()); }
    catch (e) { showFormError(form, "us-", e, ["from", "to", "group_by"]); return; }
    showFormError(form, "us-", { message: "" }, [], null);
    const t = u.totals || {};
    const stat = (label, value) => h("div", { class: "stat" }, h("b", { text: value }), h("span", { text: label }));
    strip.replaceChildren(stat("calls", String(t.calls ?? 0)), stat("errors", String(t.errors ?? 0)),
      stat("tokens in / out", `${t.input_tokens ?? 0} / ${t.output_tokens ?? 0}`), stat("cost", `$${Number(t.cost || 0).toFixed(4)}`));
    const rows = u.rows || [];
    const key = by.value === "app" ? "app_id" : by.value;
    let names = {};
    if (by.value === "app") {
      try { names = Object.fromEntries((await api("GET", "/apps")).map((a) => [a.id, a.name])); } catch { names = {}; }
    }
    head.replaceChildren(...["Start", by.value, "Calls", "Errors", "Tokens in", "Tokens out", "Cost"].map((x) => h("th", { text: x })));
    body.replaceChildren(...rows.map((r) => h("tr", {},
      h("td", { text: fmtTime(r.start) }), h("td", { text: names[r[key]] || r[key] || "—" }), h("td", { text: String(r.calls) }),
      h("td", { text: String(r.errors) }), h("td", { text: String(r.input_tokens) }), h("td", { text: String(r.output_tokens) }),
      h("td", { text: `$${Number(r.cost || 0).toFixed(6)}` }))));
    if (!rows.length) body.append(h("tr", {}, h("td", { colspan: "7", class: "muted", text: "No usage in this range." })));
    // Calls per bucket, one bar each (SVG attributes, so the CSP needs no inline style).
    const buckets = new Map();
    for (const r of rows) buckets.set(r.start, (buckets.get(r.start) || 0) + (r.calls || 0));
    const entries = [...buckets.entries()].sort(([a], [b]) => String(a).localeCompare(String(b)));
    const max = Math.max(1, ...entries.map(([, v]) => v));
    const w = 640, hgt = 140, room = hgt - 40;
    const bw = entries.length ? Math.min(40, Math.max(2, Math.floor((w - 20) / entries.length) - 2)) : 0;
    const bars = entries.map(([start, v], i) => svg("rect", {
      x: 10 + i * (bw + 2), y: hgt - 20 - Math.round((v / max) * room), width: bw,
      height: Math.max(1, Math.round((v / max) * room)), class: "bar",
    }, svg("title", {}, `${fmtTime(start)}: ${v} calls`)));
    chart.replaceChildren(h("h2", { text: `Calls per ${bucket.value}` }),
      entries.length ? svg("svg", { viewBox: `0 0 ${w} ${hgt}`, role: "img", "aria-label": `calls per ${bucket.value}`, class: "chart" },
        svg("line", { x1: 10, y1: hgt - 19, x2: w - 10, y2: hgt - 19, class: "axis" }), bars,
        svg("text", { x: 10, y: hgt - 4, class: "tick" }, entries.length ? fmtTime(entries[0][0]) : ""),
        svg("text", { x: w - 10, y: hgt - 4, class: "tick end" }, entries.length ? fmtTime(entries[entries.length - 1][0]) : ""),
        svg("text", { x: 10, y: 12, class: "tick" }, `max ${max}`))
        : h("p", { class: "muted", text: "Nothing to chart yet." }));
  }
  form.addEventListener("submit", (ev) => { ev.preventDefault(); load(); });
  load();
}

// ---------- Config ----------

function configPage(main) {
  const notice = h("div", { id: "notice", "aria-live": "polite" });
  const info = h("dl", { class: "kv", id: "config-info" });
  const routing = h("div", { id: "routing" });
  const body = h("tbody");
  const diff = h("div", { id: "revision-diff" });
  const say = (msg, tone) => notice.replaceChildren(alertBox(msg, tone || "ok"));
  const reload = h("button", { type: "button", text: "Reload the config file now" });
  reload.addEventListener("click", async () => {
    try { await api("POST", "/reload"); say("Config file reloaded."); load(); } catch (e) { say("Reload refused: " + e.message, ""); }
  });
  main.append(notice, h("section", { class: "panel" }, h("h2", { text: "Source" }), info, isAdmin() ? h("div", { class: "actions" }, reload) : null),
    h("section", { class: "panel" }, h("h2", { text: "Routing" }), routing),
    h("h2", { text: "Revisions" }), diff,
    h("div", { class: "scroll" }, h("table", { id: "revisions-table" }, h("thead", {}, h("tr", {},
      ["#", "Time", "Actor", "Source", "Note", "Strategy", "Compare", ""].map((t) => h("th", { text: t })))), body)));
  let picked = [];
  function showDiff(a, b) {
    const keys = [...new Set([...Object.keys(a), ...Object.keys(b)])].filter((k) => !["id", "at", "current", "actor", "note"].includes(k));
    const rows = keys.filter((k) => JSON.stringify(a[k]) !== JSON.stringify(b[k])).map((k) => h("tr", {},
      h("td", { text: k }), h("td", {}, h("pre", { text: JSON.stringify(a[k], null, 2) })), h("td", {}, h("pre", { text: JSON.stringify(b[k], null, 2) }))));
    const close = h("button", { type: "button", text: "Close" });
    close.addEventListener("click", () => { diff.replaceChildren(); picked = []; load(); });
    diff.replaceChildren(h("section", { class: "panel" }, h("h2", { text: `Revision ${a.id} → ${b.id}` }),
      rows.length ? h("table", {}, h("thead", {}, h("tr", {}, h("th", { text: "setting" }), h("th", { text: `#${a.id}` }), h("th", { text: `#${b.id}` }))), h("tbody", {}, rows))
        : h("p", { class: "muted", text: "Same routing settings." }), close));
  }
  async function load() {
    let cfg, rt, revs;
    try { [cfg, rt, revs] = await Promise.all([api("GET", "/config"), api("GET", "/routing"), api("GET", "/config/revisions?limit=50")]); }
    catch (e) { if (e.status !== 401) say(e.message, ""); return; }
    info.replaceChildren(...[["config file", cfg.file || "none"], ["store", cfg.store], ["revision", cfg.revision], ["upstreams", cfg.upstreams],
      ["client keys required", cfg.auth_required ? "yes" : "no"], ["last reload", cfg.last_reload_at ? fmtTime(cfg.last_reload_at) : "—"],
      ["last reload error", cfg.last_reload_error || "none"]].flatMap(([k, v]) => [h("dt", { text: k }), h("dd", { text: String(v ?? "—") })]));
    const strategy = h("select", {}, h("option", { value: "", text: `the file's (${rt.file_strategy})` }),
      (rt.strategies || []).map((x) => h("option", { value: x, text: x })));
    strategy.value = rt.source === "api" ? rt.strategy : "";
    const save = h("button", { type: "submit", class: "primary", text: "Set strategy" });
    const form = h("form", { class: "stack", id: "routing-form" },
      field("rt-strategy", "Strategy", strategy, `In force: ${rt.strategy} (from the ${rt.source === "api" ? "admin API" : "config file"}); ${rt.max_attempts} attempts per call`),
      h("div", { class: "form-error wide" }),
      isAdmin() ? h("div", { class: "actions wide" }, save) : null);
    if (!isAdmin()) strategy.disabled = true;
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      try { await api("PUT", "/routing", { strategy: strategy.value || null }); say("Routing strategy set."); load(); }
      catch (e) { showFormError(form, "rt-", e, ["strategy"]); }
    });
    routing.replaceChildren(form);
    body.replaceChildren(...revs.map((r) => {
      const cell = h("td", { class: "actions" });
      if (isAdmin() && !r.current) {
        const rb = h("button", { type: "button", text: "Roll back to this" });
        rb.addEventListener("click", () => {
          const yes = h("button", { type: "button", class: "danger", text: `Roll back to #${r.id}` });
          const no = h("button", { type: "button", text: "Cancel" });
          yes.addEventListener("click", async () => {
            try { await api("POST", "/config/rollback", { revision: r.id }); say(`Rolled back to revision ${r.id}.`); load(); } catch (e) { say(e.message, ""); }
          });
          no.addEventListener("click", load);
          cell.replaceChildren(yes, no);
        });
        cell.append(rb);
      }
      if (r.current) cell.append(badge("current", "ok"));
      const cmp = h("input", { type: "checkbox", id: `cmp-${r.id}` });
      cmp.checked = picked.some((p) => p.id === r.id);
      cmp.addEventListener("change", () => {
        picked = cmp.checked ? picked.concat([r]).slice(-2) : picked.filter((p) => p.id !== r.id);
        if (picked.length === 2) { const [a, b] = [...picked].sort((x, y) => x.id - y.id); showDiff(a, b); }
      });
      return h("tr", { "data-revision": String(r.id) }, h("td", { text: String(r.id) }), h("td", { text: fmtTime(r.at) }), h("td", { text: r.actor }),
        h("td", { text: r.source }), h("td", { text: r.note || "" }), h("td", { text: r.strategy || "(file's)" }),
        h("td", {}, cmp, h("label", { for: cmp.id, class: "hint", text: " compare" })), cell);
    }));
  }
  load();
}

// ---------- Audit ----------

function auditPage(main) {
  const filter = h("input", { type: "search", placeholder: "actor, action or target" });
  const body = h("tbody");
  const more = h("button", { type: "button", text: "Load older entries", hidden: true });
  const detail = h("div", { id: "audit-detail" });
  main.append(h("section", { class: "panel" }, h("div", { class: "stack" }, field("au-filter", "Filter", filter, "Matches the entries loaded so far"))),
    detail,
    h("div", { class: "scroll" }, h("table", { id: "audit-table" }, h("thead", {}, h("tr", {},
      ["Time", "Actor", "Action", "Target"].map((t) => h("th", { text: t })))), body)),
    h("div", { class: "actions" }, more));
  let entries = [];
  function render() {
    const q = filter.value.trim().toLowerCase();
    const shown = entries.filter((e) => !q || [e.actor, e.action, e.target_type, e.target_id].some((x) => String(x || "").toLowerCase().includes(q)));
    body.replaceChildren(...shown.map((e) => {
      const tr = h("tr", { class: "clickable", tabindex: "0" }, h("td", { text: fmtTime(e.at) }), h("td", { text: e.actor }),
        h("td", {}, h("code", { text: e.action })), h("td", { text: `${e.target_type || ""} ${e.target_id || ""}` }));
      const open = () => {
        const close = h("button", { type: "button", text: "Close" });
        close.addEventListener("click", () => detail.replaceChildren());
        detail.replaceChildren(h("section", { class: "panel" }, h("h2", { text: `${e.action} by ${e.actor}` }),
          h("dl", { class: "kv" }, h("dt", { text: "before" }), h("dd", {}, h("pre", { text: JSON.stringify(e.before, null, 2) })),
            h("dt", { text: "after" }), h("dd", {}, h("pre", { text: JSON.stringify(e.after, null, 2) }))), close));
      };
      tr.addEventListener("click", open);
      tr.addEventListener("keydown", (k) => { if (k.key === "Enter") open(); });
      return tr;
    }));
    if (!shown.length) body.append(h("tr", {}, h("td", { colspan: "4", class: "muted", text: "No entry." })));
  }
  async function load(before) {
    let page;
    try { page = await api("GET", "/audit?limit=100" + (before ? `&before=${before}` : "")); } catch { return; }
    entries = entries.concat(page);
    more.hidden = page.length < 100;
    render();
  }
  filter.addEventListener("input", render);
  more.addEventListener("click", () => load(entries.length ? entries[entries.length - 1].id : null));
  load(null);
}

// ---------- Users (admins only) ----------

function usersPage(main) {
  const notice = h("div", { id: "notice", "aria-live": "polite" });
  const body = h("tbody");
  const say = (msg, tone) => notice.replaceChildren(alertBox(msg, tone || "ok"));
  const role = () => h("select", {}, h("option", { value: "viewer", text: "viewer" }), h("option", { value: "admin", text: "admin" }));
  const roleSel = role();
  const form = h("form", { class: "stack", id: "user-form" },
    field("us-username", "Username", h("input", { required: true, autocomplete: "off" })),
    field("us-password", "Password", h("input", { type: "password", required: true, autocomplete: "new-password" })),
    field("us-role", "Role", roleSel),
    h("div", { class: "form-error wide" }),
    h("div", { class: "actions wide" }, h("button", { class: "primary", type: "submit", text: "Create user" })));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const b = { username: form["us-username"].value.trim(), password: form["us-password"].value, role: roleSel.value };
    try { await api("POST", "/users", b); form.reset(); showFormError(form, "us-", { message: "" }, [], null); say(`User ${b.username} created.`); load(); }
    catch (e) { showFormError(form, "us-", e, ["username", "password", "role"]); }
  });
  main.append(notice, h("section", { class: "panel" }, h("h2", { text: "Create a user" }), form),
    h("div", { class: "scroll" }, h("table", { id: "users-table" }, h("thead", {}, h("tr", {},
      ["Username", "Role", "Created", ""].map((t) => h("th", { text: t })))), body)));
  async function load() {
    let users;
    try { users = await api("GET", "/users"); } catch (e) { if (e.status !== 401) say(e.message, ""); return; }
    body.replaceChildren(...users.map((u) => {
      const cell = h("td", { class: "actions" });
      const path = `/users/${encodeURIComponent(u.username)}`;
      const other = u.role === "admin" ? "viewer" : "admin";
      const change = h("button", { type: "button", text: `Make ${other}` });
      change.addEventListener("click", async () => {
        try { await api("PATCH", path, { role: other }); say(`${u.username} is now ${other}.`); load(); } catch (e) { say(e.message, ""); }
      });
      const reset = h("button", { type: "button", text: "Reset password" });
      reset.addEventListener("click", () => {
        const pw = h("input", { type: "password", autocomplete: "new-password", id: "reset-" + u.id });
        const save = h("button", { type: "button", class: "primary", text: "Set password" });
        save.addEventListener("click", async () => {
          try { await api("PATCH", path, { password: pw.value }); say(`Password of ${u.username} changed.`); load(); } catch (e) { say(e.message, ""); }
        });
        cell.replaceChildren(h("label", { for: pw.id, text: "New password" }), pw, save);
      });
      const del = h("button", { type: "button", class: "danger", text: "Delete" });
      del.addEventListener("click", () => {
        const yes = h("button", { type: "button", class: "danger", text: `Delete ${u.username}` });
        const no = h("button", { type: "button", text: "Cancel" });
        yes.addEventListener("click", async () => {
          try { await api("DELETE", path); say(`User ${u.username} deleted.`); load(); } catch (e) { say(e.message, ""); }
        });
        no.addEventListener("click", load);
        cell.replaceChildren(yes, no);
      });
      if (u.username !== me.username) cell.append(change, reset, del); else cell.append(reset, h("span", { class: "muted", text: "(you)" }));
      return h("tr", { "data-user": u.username }, h("td", { text: u.username }), h("td", {}, badge(u.role)), h("td", { text: fmtTime(u.created_at) }), cell);
    }));
  }
  load();
}

// ---------- Calls ----------

// Every error class the call log records (see accounting::status_class and the relay).
const ERROR_CLASSES = ["invalid_request", "authentication", "permission", "not_found", "payload_too_large",
  "rate_limited", "client_error", "insufficient_quota", "upstream_error", "unavailable", "timeout", "server_error",
  "client_closed", "shutdown", "hook_denied", "hook_failed"];

// A call's attempts, in order: where each went, with which provider key, and how it ended.
function attemptsTable(log) {
  if (!log || !log.length) return h("p", { class: "muted", text: "No attempt reached an upstream." });
  return h("div", { class: "scroll" }, h("table", { id: "call-attempts" },
    h("thead", {}, h("tr", {}, ["#", "Upstream", "Provider key", "Status", "Error class", "Time"].map((t) => h("th", { text: t })))),
    h("tbody", {}, log.map((a, i) => h("tr", {},
      h("td", { text: String(i + 1) }), h("td", { text: a.upstream || "—" }), h("td", {}, a.key_id ? h("code", { text: a.key_id }) : "—"),
      h("td", {}, badge(a.status == null ? "no answer" : String(a.status), a.error_class ? "bad" : "ok")),
      h("td", { text: a.error_class || "—" }), h("td", { text: fmtMs(a.ms) }))))));
}

// A logged body ([logs] bodies = true) as text; JSON is indented for reading.
function bodyBlock(id, title, text) {
  if (text == null || text === "") return null;
  let shown = String(text);
  try { shown = JSON.stringify(JSON.parse(shown), null, 2); } catch { /* a stream or plain text: as logged */ }
  return [h("h3", { text: title }), h("pre", { class: "body", id, text: shown })];
}

function callsPage(main) {
  const classSel = h("select", {}, h("option", { value: "", text: "any" }), ERROR_CLASSES.map((c) => h("option", { value: c, text: c })));
  const streamSel = h("select", {}, h("option", { value: "", text: "either" }), h("option", { value: "true", text: "streamed" }),
    h("option", { value: "false", text: "whole answer" }));
  const form = h("form", { class: "stack", id: "calls-filter" },
    field("f-app", "App (name or id)", h("input", {})),
    field("f-key", "Key id", h("input", {})),
    field("f-model", "Model", h("input", {})),
    field("f-upstream", "Upstream", h("input", {})),
    field("f-status", "HTTP status", h("input", { type: "number", min: "100", max: "599", placeholder: "429" })),
    field("f-error_class", "Error class", classSel),
    field("f-stream", "Streamed", streamSel),
    field("f-from", "From", h("input", { type: "datetime-local" })),
    field("f-to", "To", h("input", { type: "datetime-local" })),
    h("div", { class: "form-error wide" }),
    h("div", { class: "actions wide" }, h("button", { class: "primary", type: "submit", text: "Apply filters" })));
  const body = h("tbody");
  const more = h("button", { type: "button", text: "Load older calls", hidden: true });
  const detail = h("div", { id: "call-detail" });
  const live = h("input", { type: "checkbox", id: "f-live" });
  live.checked = true;
  form.querySelector(".actions").append(live, h("label", { for: "f-live", text: "Live tail (every 3 s)" }));
  main.append(h("section", { class: "panel" }, form), detail,
    h("div", { class: "scroll" }, h("table", { id: "calls-table" }, h("thead", {}, h("tr", {},
      ["Time", "App", "Model", "Upstream", "Status", "Latency", "TTFT", "Tokens in/out", "Cost"].map((t) => h("th", { text: t })))), body)),
    h("div", { class: "actions" }, more));
  let cursor = null;
  function query() {
    const q = new URLSearchParams({ limit: "50" });
    for (const k of ["app", "key", "model", "upstream", "status", "error_class", "stream"]) if (form["f-" + k].value.trim()) q.set(k, form["f-" + k].value.trim());
    for (const k of ["from", "to"]) if (form["f-" + k].value) q.set(k, new Date(form["f-" + k].value).toISOString());
    if (cursor) q.set("cursor", cursor);
    return q;
  }
  function showDetail(c) {
    const own = new Set(["attempt_log", "request_body", "response_body"]);
    const rows = Object.entries(c).filter(([k]) => !own.has(k)).map(([k, v]) => [h("dt", { text: k }),
      h("dd", {}, v !== null && typeof v === "object" ? h("pre", { text: JSON.stringify(v, null, 2) }) : String(v ?? "—"))]);
    const close = h("button", { type: "button", text: "Close" });
    close.addEventListener("click", () => detail.replaceChildren());
    detail.replaceChildren(h("section", { class: "panel" }, h("h2", { text: `Call ${c.request_id || c.id || ""}` }), h("dl", { class: "kv" }, rows),
      h("h3", { text: `Attempts (${(c.attempt_log || []).length})` }), attemptsTable(c.attempt_log),
      bodyBlock("call-request-body", "Request body", c.request_body), bodyBlock("call-response-body", "Response body", c.response_body),
      c.request_body == null && c.response_body == null ? h("p", { class: "hint", text: "Bodies are logged only with [logs] bodies = true." }) : null,
      close));
  }
  async function load(reset) {
    if (reset) { cursor = null; body.replaceChildren(); }
    let page;
    try { page = await api("GET", "/calls?" + query()); }
    catch (e) { showFormError(form, "f-", e, ["app", "key", "model", "upstream", "status", "error_class", "stream", "from", "to"]); return; }
    showFormError(form, "f-", { message: "" }, [], null);
    const calls = page.calls || [];
    for (const c of calls) {
      const tr = h("tr", { class: "clickable", tabindex: "0", "data-call": c.request_id },
        h("td", { text: fmtTime(c.time) }), h("td", { text: c.app_id || "—" }),
        h("td", { text: c.requested_model || "" }), h("td", { text: c.cache_hit ? "cache hit" : (c.upstream || "—") }),
        h("td", {}, badge(String(c.status ?? "") + (c.error_class ? " " + c.error_class : "") + (c.hook ? ` (hook ${c.hook})` : ""), (c.status || 0) >= 400 ? "bad" : "ok")),
        h("td", { text: fmtMs(c.latency_ms) }), h("td", { text: fmtMs(c.ttft_ms) }),
        h("td", { text: `${c.input_tokens ?? "—"} / ${c.output_tokens ?? "—"}` }),
        h("td", { text: c.cost != null ? `$${Number(c.cost).toFixed(6)}` : "—" }));
      tr.addEventListener("click", () => showDetail(c));
      tr.addEventListener("keydown", (e) => { if (e.key === "Enter") showDetail(c); });
      body.append(tr);
    }
    if (reset && !calls.length) body.append(h("tr", {}, h("td", { colspan: "9", class: "muted", text: "No call matches." })));
    cursor = page.next_cursor || null;
    more.hidden = !cursor;
  }
  let older = false; // once older pages are loaded, the live tail stops replacing them
  form.addEventListener("submit", (ev) => { ev.preventDefault(); older = false; load(true); });
  more.addEventListener("click", () => { older = true; load(false); });
  every(3000, () => { if (live.checked && !older) load(true); });
  load(true);
}

// ---------- Playground ----------

function playgroundPage(main) {
  const model = h("select", {});
  const vkey = h("input", { type: "password", autocomplete: "off", placeholder: "sk-llmux-… (only if auth.required)" });
  const prompt = h("textarea", { required: true, text: "Say hello in five words." });
  const form = h("form", { class: "stack", id: "playground-form" },
    field("pg-model", "Model", model),
    field("pg-key", "Virtual key", vkey, "Sent with this request only; never stored"),
    field("pg-prompt", "Message", prompt, null, true),
    h("div", { class: "form-error wide" }),
    h("div", { class: "actions wide" }, h("button", { class: "primary", type: "submit", text: "Send" })));
  const out = h("div", { class: "panel output", id: "pg-output", "aria-live": "polite" });
  const facts = h("dl", { class: "kv", id: "pg-facts" });
  main.append(h("section", { class: "panel" }, form), out, facts);
  (async () => {
    // From the admin API (what active upstreams serve), so it works when client keys are required.
    try {
      const ups = await api("GET", "/upstreams");
      const ids = [...new Set(ups.filter((u) => u.pool === "active").flatMap((u) => u.models || []))].sort();
      model.replaceChildren(...ids.map((id) => h("option", { value: id, text: id })));
    } catch { /* the select stays empty */ }
  })();
  const fact = (k, v) => facts.append(h("dt", { text: k }), h("dd", { text: v }));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    out.textContent = "";
    facts.replaceChildren();
    const btn = form.querySelector("button[type=submit]");
    btn.disabled = true;
    const t0 = performance.now();
    let ttft = null;
    let usage = null;
    try {
      const headers = { "content-type": "application/json" };
      if (vkey.value) headers.authorization = "Bearer " + vkey.value;
      const res = await fetch("/v1/chat/completions", {
        method: "POST", headers, credentials: "omit",
        body: JSON.stringify({ model: model.value, stream: true, stream_options: { include_usage: true },
          messages: [{ role: "user", content: prompt.value }] }),
      });
      fact("upstream", res.headers.get("x-llmux-upstream") || "—");
      fact("request id", res.headers.get("x-request-id") || "—");
      fact("attempts", res.headers.get("x-llmux-attempts") || "—");
      if (!res.ok) {
        const text = await res.text();
        let msg = text;
        try { msg = JSON.parse(text).error.message; } catch { /* not JSON */ }
        throw new ApiError(res.status, `HTTP ${res.status}: ${msg}`);
      }
      const reader = res.body.getReader();
      const dec = new TextDecoder();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += dec.decode(value, { stream: true });
        let i;
        while ((i = buf.indexOf("\n")) >= 0) {
          const line = buf.slice(0, i).trim();
          buf = buf.slice(i + 1);
          if (!line.startsWith("data:")) continue;
          const data = line.slice(5).trim();
          if (data === "[DONE]") continue;
          let chunk;
          try { chunk = JSON.parse(data); } catch { continue; }
          if (chunk.usage) usage = chunk.usage;
          const delta = chunk.choices && chunk.choices[0] && chunk.choices[0].delta;
          if (delta && delta.content) {
            if (ttft === null) ttft = performance.now() - t0;
            out.append(document.createTextNode(delta.content));
          }
        }
      }
      fact("TTFT", ttft === null ? "—" : `${Math.round(ttft)} ms`);
      fact("duration", `${Math.round(performance.now() - t0)} ms`);
      if (usage) fact("tokens in / out", `${usage.prompt_tokens} / ${usage.completion_tokens}`);
    } catch (e) {
      form.querySelector(".form-error").replaceChildren(alertBox(e.message));
    } finally { btn.disabled = false; }
  });
}

start();
