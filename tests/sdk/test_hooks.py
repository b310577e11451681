"""`[[hooks]]` seen through the official SDKs (docs/hooks.md): a call an external hook denies
raises the SDK's permission error carrying the code `hook_denied` (OpenAI and Anthropic), a
call the hook modifies is served as modified, and a built-in cap holds max_tokens down."""

from pathlib import Path

import anthropic
import openai
import pytest

from conftest import Stack
from harness import wait_line


@pytest.fixture(scope="module")
def hooked():
    s = Stack()
    try:
        node = s.mock("gpu-a", ["llama3:latest"], "--chunks", "8")
        hook = s.mock("hook", ["none"])
        cfg = Path(s.dir.name) / "hooks.toml"
        cfg.write_text(
            f"""
[server]
listen = "127.0.0.1:0"
[[upstreams]]
name = "gpu-a"
kind = "ollama"
url = "{node}"
[[hooks]]
name = "guard"
url = "{hook}/hook"
timeout = "10s"
[[hooks]]
name = "cap"
set = {{ max_tokens = 6 }}
"""
        )
        gw = s.spawn("serve", "--config", str(cfg))
        s.url = wait_line(gw, r"llmux listening on (http://\S+)").group(1)
        yield s
    finally:
        s.close()


def test_openai_sdk_gets_permission_denied_with_hook_denied(hooked):
    client = openai.OpenAI(base_url=f"{hooked.url}/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.PermissionDeniedError) as e:
        client.chat.completions.create(model="llama3", messages=[{"role": "user", "content": "deny-me"}])
    assert e.value.status_code == 403
    assert e.value.code == "hook_denied"
    assert "deny-me" in e.value.message


def test_anthropic_sdk_gets_permission_denied_with_hook_denied(hooked):
    client = anthropic.Anthropic(base_url=hooked.url, api_key="unused", max_retries=0)
    with pytest.raises(anthropic.PermissionDeniedError) as e:
        client.messages.create(model="llama3", max_tokens=50, messages=[{"role": "user", "content": "deny-me"}])
    assert e.value.status_code == 403
    assert e.value.body["error"]["type"] == "permission_error"
    assert e.value.body["error"]["code"] == "hook_denied"


def test_a_modified_and_capped_call_is_served_as_changed(hooked):
    client = openai.OpenAI(base_url=f"{hooked.url}/v1", api_key="unused", max_retries=0)
    # The cap (6) holds the client's 100 down; the mock answers one token per max_tokens.
    r = client.chat.completions.create(model="llama3", max_tokens=100, messages=[{"role": "user", "content": "hi"}])
    assert r.usage.completion_tokens == 6
    assert r.choices[0].finish_reason == "length"
    # The external hook runs first (file order): its modify sets max_tokens 5, under the cap; streamed too.
    stream = client.chat.completions.create(
        model="llama3", max_tokens=100, stream=True, stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "modify-me"}],
    )
    usage = [c.usage for c in stream if c.usage]
    assert usage and usage[-1].completion_tokens == 5
