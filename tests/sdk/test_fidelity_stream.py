"""Fidelity, response side (issue #17): what the upstream says reaches the client through its
official SDK — a stream the upstream ends early is an error the SDK raises, never a whole answer;
usage details, retry hints, tool ids and finish reasons survive translation."""

import json
import time
import urllib.request
from pathlib import Path

import pytest

import anthropic
import openai

from conftest import ADMIN, Stack, set_faults, wait_line

# model served by each upstream kind (one `llmux mock` each, every dialect on it)
KINDS = {
    "ollama": ("llama3:latest", ""),
    "openai": ("gpt-4o-mini", "/v1"),
    "anthropic": ("claude-sonnet-4", ""),
    "gemini": ("gemini-2.0-flash", ""),
}
MESSAGES = [{"role": "user", "content": "hello there"}]


@pytest.fixture(scope="module")
def fid():
    s = Stack()
    try:
        s.mocks = {}
        blocks = []
        for kind, (model, suffix) in KINDS.items():
            url = s.mock(f"{kind}-fid", [model], "--chunks", "6", "--api-key", f"key-{kind}")
            s.mocks[kind] = url
            blocks.append(
                f'[[upstreams]]\nname = "{kind}-fid"\nkind = "{kind}"\nurl = "{url}{suffix}"\nkeys = ["key-{kind}"]\n'
            )
        cfg = Path(s.dir.name) / "fidelity.toml"
        cfg.write_text(f'[server]\nlisten = "127.0.0.1:0"\n[admin]\ntoken = "{ADMIN}"\n' + "".join(blocks))
        gw = s.spawn("serve", "--config", str(cfg))
        s.url = wait_line(gw, r"llmux listening on (http://\S+)").group(1)
        yield s
    finally:
        s.close()


def model_of(kind):
    return KINDS[kind][0].removesuffix(":latest")


def admin_get(url, path):
    req = urllib.request.Request(f"{url}/admin/v1{path}", headers={"authorization": f"Bearer {ADMIN}"})
    return json.loads(urllib.request.urlopen(req).read())


@pytest.fixture
def truncated(fid):
    """Every upstream ends its streams cleanly after 3 chunks, without the final event."""
    for url in fid.mocks.values():
        set_faults(url, truncate_after=3)
    yield fid
    for url in fid.mocks.values():
        set_faults(url)


@pytest.mark.parametrize("kind", list(KINDS))
def test_openai_sdk_raises_on_a_stream_cut_short(truncated, kind):
    c = openai.OpenAI(base_url=f"{truncated.url}/v1", api_key="unused", max_retries=0)
    finishes = []
    with pytest.raises(openai.APIError) as e:
        for chunk in c.chat.completions.create(model=model_of(kind), messages=MESSAGES, stream=True):
            finishes += [ch.finish_reason for ch in chunk.choices if ch.finish_reason]
    assert "final event" in str(e.value), e.value
    assert finishes == []


@pytest.mark.parametrize("kind", list(KINDS))
def test_anthropic_sdk_raises_on_a_stream_cut_short(truncated, kind):
    c = anthropic.Anthropic(base_url=truncated.url, api_key="unused", max_retries=0)
    with pytest.raises(anthropic.APIError) as e:
        with c.messages.stream(model=model_of(kind), max_tokens=256, messages=MESSAGES) as s:
            for _ in s.text_stream:
                pass
            s.get_final_message()
    assert "final event" in str(e.value), e.value


def test_a_cut_stream_is_logged_as_an_upstream_error(truncated):
    c = openai.OpenAI(base_url=f"{truncated.url}/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.APIError):
        for _ in c.chat.completions.create(model=model_of("anthropic"), messages=MESSAGES, stream=True):
            pass
    deadline = time.time() + 15
    while True:
        calls = admin_get(truncated.url, "/calls?limit=1")["calls"]
        if (calls and calls[0]["requested_model"] == model_of("anthropic")) or time.time() > deadline:
            break
        time.sleep(0.1)
    assert calls[0]["error_class"] == "upstream_error", calls[0]
