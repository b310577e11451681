"""The official `openai` SDK against the response cache (`[cache]`, docs/cache.md): the second
identical call is answered from the cache (`x-llmux-cache: hit`, seen through
`with_raw_response`), the upstream mock counts one generation, and a streamed call of the same
question is replayed as a stream the SDK reads to its end."""

import json
import urllib.request
from pathlib import Path

import openai
import pytest

from conftest import PROVIDER_KEY, Stack
from harness import wait_line


@pytest.fixture(scope="module")
def cache_stack():
    s = Stack()
    try:
        s.node = s.mock("openai", ["gpt-4o-mini"], "--api-key", PROVIDER_KEY)
        cfg = Path(s.dir.name) / "cache.toml"
        cfg.write_text(
            f"""
[server]
listen = "127.0.0.1:0"
[[upstreams]]
name = "openai"
kind = "openai"
url = "{s.node}/v1"
keys = ["{PROVIDER_KEY}"]
[cache]
enabled = true
"""
        )
        gw = s.spawn("serve", "--config", str(cfg))
        s.url = wait_line(gw, r"llmux listening on (http://\S+)").group(1)
        yield s
    finally:
        s.close()


def generations(node):
    with urllib.request.urlopen(f"{node}/_mock/stats") as r:
        return json.load(r)["generations"]


def test_openai_sdk_sees_hits_and_reads_a_replayed_stream(cache_stack):
    client = openai.OpenAI(base_url=cache_stack.url + "/v1", api_key="unused", max_retries=0)
    messages = [{"role": "user", "content": "is this cached?"}]
    first = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=messages, temperature=0)
    assert first.headers["x-llmux-cache"] == "miss"
    answer = first.parse().choices[0].message.content
    second = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=messages, temperature=0)
    assert second.headers["x-llmux-cache"] == "hit"
    assert second.parse().choices[0].message.content == answer
    assert generations(cache_stack.node) == 1

    with client.chat.completions.with_streaming_response.create(
        model="gpt-4o-mini", messages=messages, temperature=0, stream=True,
        stream_options={"include_usage": True},
    ) as resp:
        assert resp.headers["x-llmux-cache"] == "hit"
        chunks = list(resp.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == answer
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    assert generations(cache_stack.node) == 1

    bypass = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=messages, temperature=0, extra_headers={"cache-control": "no-cache"}
    )
    assert bypass.headers["x-llmux-cache"] == "bypass"
    assert generations(cache_stack.node) == 2
