"""Fidelity (#17 items 10 and 11) through the official SDKs, against recording mock upstreams:
- options only Ollama's native API carries (top_k, num_ctx, keep_alive, think) sent by OpenAI,
  Anthropic and Gemini clients reach an Ollama node's /api/chat; plain calls keep /v1;
- images given by URL to Gemini or Ollama upstreams are fetched by llmux and inlined, or refused
  with a 400 naming the URL and the reason (private addresses only with the config's knob)."""

import base64
import http.server
import json
import threading
import urllib.request
from pathlib import Path

import anthropic
import openai
import pytest
from google import genai
from google.genai import types

from conftest import ADMIN, Stack, wait_line

PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR sdk fidelity image"
PNG_B64 = base64.b64encode(PNG).decode()


class _Images(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's name)
        routes = {
            "/cat.png": (200, "image/png", PNG),
            "/page.html": (200, "text/html", b"<p>not an image</p>"),
        }
        status, ctype, body = routes.get(self.path, (404, "text/plain", b"missing"))
        self.send_response(status)
        self.send_header("content-type", ctype)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def _gateway(s, name, blocks, allow_private):
    cfg = Path(s.dir.name) / f"{name}.toml"
    cfg.write_text(
        f'[server]\nlisten = "127.0.0.1:0"\n[admin]\ntoken = "{ADMIN}"\n'
        f"allow_private_upstreams = {'true' if allow_private else 'false'}\n" + blocks
    )
    gw = s.spawn("serve", "--config", str(cfg))
    return wait_line(gw, r"llmux listening on (http://\S+)").group(1)


@pytest.fixture(scope="module")
def fetch_stack():
    """An Ollama node and a Gemini upstream behind two gateways (private image addresses allowed
    or not), and an image server on 127.0.0.1."""
    s = Stack()
    images = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Images)
    threading.Thread(target=images.serve_forever, daemon=True).start()
    try:
        s.ollama = s.mock("fid-ollama", ["llama3:latest"], "--chunks", "4")
        s.gemini = s.mock("fid-gemini", ["gemini-2.0-flash"], "--chunks", "4")
        blocks = (
            f'[[upstreams]]\nname = "fid-ollama"\nkind = "ollama"\nurl = "{s.ollama}"\n'
            f'[[upstreams]]\nname = "fid-gemini"\nkind = "gemini"\nurl = "{s.gemini}"\n'
            '[translation]\nimage_fetch_max = "1MiB"\nimage_fetch_timeout = "20s"\n'
        )
        s.url = _gateway(s, "open", blocks, True)
        s.guarded = _gateway(s, "guarded", blocks, False)
        s.images = f"http://127.0.0.1:{images.server_address[1]}"
        yield s
    finally:
        images.shutdown()
        s.close()


def stats(node):
    with urllib.request.urlopen(f"{node}/_mock/stats") as r:
        return json.loads(r.read())


def calls(node, path):
    return stats(node)["by_path"].get(path, 0)


def oai(url):
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)


def claude(url):
    return anthropic.Anthropic(base_url=url, api_key="unused", max_retries=0)


def gem(url):
    return genai.Client(api_key="unused", http_options=types.HttpOptions(base_url=url, api_version="v1beta"))


HELLO = [{"role": "user", "content": "hello"}]


# --- item 11: Ollama-only options from other dialects ---


def test_openai_sdk_extra_body_options_reach_native_ollama(fetch_stack):
    s = fetch_stack
    native_before = calls(s.ollama, "/api/chat")
    v1_before = calls(s.ollama, "/v1/chat/completions")
    r = oai(s.url).chat.completions.create(model="llama3", messages=HELLO)
    assert r.choices[0].message.content
    assert calls(s.ollama, "/v1/chat/completions") == v1_before + 1, "plain calls keep the /v1 passthrough"
    r = oai(s.url).chat.completions.create(
        model="llama3",
        messages=HELLO,
        temperature=0.2,
        reasoning_effort="high",
        extra_body={"top_k": 40, "options": {"num_ctx": 8192}, "keep_alive": "5m"},
    )
    assert r.choices[0].message.content.startswith("[fid-ollama]")
    assert calls(s.ollama, "/api/chat") == native_before + 1
    body = stats(s.ollama)["last_body"]
    assert body["options"]["top_k"] == 40
    assert body["options"]["num_ctx"] == 8192
    assert body["options"]["temperature"] == 0.2
    assert body["keep_alive"] == "5m"
    assert body["think"] == "high"
    # Streamed too.
    parts = []
    stream = oai(s.url).chat.completions.create(
        model="llama3", messages=HELLO, stream=True, extra_body={"options": {"num_ctx": 4096}}
    )
    for chunk in stream:
        parts += [c.delta.content for c in chunk.choices if c.delta.content]
    assert "".join(parts).startswith("[fid-ollama]")
    assert stats(s.ollama)["last_body"]["options"]["num_ctx"] == 4096
    assert stats(s.ollama)["last_body"]["stream"] is True


def test_anthropic_sdk_top_k_and_thinking_reach_native_ollama(fetch_stack):
    s = fetch_stack
    before = calls(s.ollama, "/api/chat")
    r = claude(s.url).messages.create(
        model="llama3",
        max_tokens=64,
        thinking={"type": "enabled", "budget_tokens": 1024},
        messages=HELLO,
        # Anthropic's API has top_k; this SDK version no longer names it as a parameter.
        extra_body={"top_k": 7},
    )
    assert r.content[0].text.startswith("[fid-ollama]")
    assert calls(s.ollama, "/api/chat") == before + 1
    body = stats(s.ollama)["last_body"]
    assert body["options"]["top_k"] == 7
    assert body["options"]["num_predict"] == 64
    assert body["think"] is True


def test_gemini_sdk_top_k_reaches_native_ollama(fetch_stack):
    s = fetch_stack
    before = calls(s.ollama, "/api/chat")
    client = gem(s.url)
    r = client.models.generate_content(
        model="llama3", contents="hello", config=types.GenerateContentConfig(top_k=5, temperature=0.4)
    )
    assert r.text.startswith("[fid-ollama]")
    assert calls(s.ollama, "/api/chat") == before + 1
    body = stats(s.ollama)["last_body"]
    assert body["options"]["top_k"] == 5
    assert body["options"]["temperature"] == 0.4


# --- item 10: images by URL ---


def test_openai_sdk_image_url_is_inlined_for_gemini(fetch_stack):
    s = fetch_stack
    content = [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": f"{s.images}/cat.png"}},
    ]
    r = oai(s.url).chat.completions.create(model="gemini-2.0-flash", messages=[{"role": "user", "content": content}])
    assert r.choices[0].message.content
    part = stats(s.gemini)["last_body"]["contents"][0]["parts"][1]
    assert part == {"inlineData": {"mimeType": "image/png", "data": PNG_B64}}


def test_anthropic_sdk_url_image_is_inlined_for_ollama(fetch_stack):
    s = fetch_stack
    r = claude(s.url).messages.create(
        model="llama3",
        max_tokens=32,
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "image", "source": {"type": "url", "url": f"{s.images}/cat.png"}},
                    {"type": "text", "text": "what is this?"},
                ],
            }
        ],
    )
    assert r.content[0].text
    body = stats(s.ollama)["last_body"]
    urls = [p["image_url"]["url"] for p in body["messages"][0]["content"] if p.get("type") == "image_url"]
    assert urls == [f"data:image/png;base64,{PNG_B64}"]


def test_gemini_sdk_file_uri_is_inlined_for_ollama(fetch_stack):
    s = fetch_stack
    parts = [types.Part.from_uri(file_uri=f"{s.images}/cat.png", mime_type="image/png"), "what is this?"]
    client = gem(s.url)
    r = client.models.generate_content(model="llama3", contents=parts)
    assert r.text
    body = stats(s.ollama)["last_body"]
    urls = [p["image_url"]["url"] for p in body["messages"][0]["content"] if p.get("type") == "image_url"]
    assert urls == [f"data:image/png;base64,{PNG_B64}"]


def test_unfetchable_images_are_400_in_the_clients_dialect(fetch_stack):
    s = fetch_stack
    before = stats(s.gemini)["generations"]
    page = f"{s.images}/page.html"
    with pytest.raises(openai.BadRequestError) as e:
        oai(s.url).chat.completions.create(
            model="gemini-2.0-flash",
            messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": page}}]}],
        )
    assert page in str(e.value) and "not an image" in str(e.value)
    missing = f"{s.images}/gone.png"
    with pytest.raises(anthropic.BadRequestError) as e:
        claude(s.url).messages.create(
            model="gemini-2.0-flash",
            max_tokens=16,
            messages=[{"role": "user", "content": [{"type": "image", "source": {"type": "url", "url": missing}}]}],
        )
    assert missing in str(e.value) and "HTTP 404" in str(e.value)
    assert stats(s.gemini)["generations"] == before, "never forwarded to fail upstream"


def test_private_image_address_is_refused_without_the_knob(fetch_stack):
    s = fetch_stack
    before = stats(s.ollama)["generations"]
    cat = f"{s.images}/cat.png"
    with pytest.raises(openai.BadRequestError) as e:
        oai(s.guarded).chat.completions.create(
            model="llama3",
            messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": cat}}]}],
        )
    msg = str(e.value)
    assert cat in msg and "loopback" in msg and "allow_private_upstreams" in msg
    assert stats(s.ollama)["generations"] == before
