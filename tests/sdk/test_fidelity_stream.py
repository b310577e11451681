"""Fidelity, response side (issue #17): what the upstream says reaches the client through its
official SDK — a stream the upstream ends early is an error the SDK raises, never a whole answer;
usage details, retry hints, tool ids and finish reasons survive translation."""

import json
import time
import urllib.request

import pytest

import anthropic
import openai

from conftest import ADMIN, Stack

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
        ups = []
        for kind, (model, suffix) in KINDS.items():
            url = s.mock(f"{kind}-fid", [model], "--chunks", "6", "--api-key", f"key-{kind}")
            s.mocks[kind] = url
            ups.append((f"{kind}-fid", kind, url + suffix, f"key-{kind}", [model], ""))
        s.serve_upstreams(ups, "fidelity.toml")
        yield s
    finally:
        s.close()


def model_of(kind):
    return KINDS[kind][0].removesuffix(":latest")


def admin_get(url, path):
    req = urllib.request.Request(f"{url}/admin/v1{path}", headers={"authorization": f"Bearer {ADMIN}"})
    return json.loads(urllib.request.urlopen(req).read())


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


def script(node_url, *replies):
    """Queues exact answers for the node's next generation calls (`/_mock/script`)."""
    req = urllib.request.Request(
        f"{node_url}/_mock/script",
        data=json.dumps(list(replies)).encode(),
        headers={"content-type": "application/json"},
        method="POST",
    )
    urllib.request.urlopen(req).read()


def last_body(node_url):
    return json.loads(urllib.request.urlopen(f"{node_url}/_mock/stats").read())["last_body"]


def sse(*events):
    return [f"data: {json.dumps(e)}\n\n" for e in events]


def test_openai_sdk_sees_anthropic_cache_tokens(fid):
    script(fid.mocks["anthropic"], {"dialect": "anthropic", "body": json.dumps({
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4",
        "content": [{"type": "text", "text": "hi"}], "stop_reason": "end_turn", "stop_sequence": None,
        "usage": {"input_tokens": 60, "cache_read_input_tokens": 30, "cache_creation_input_tokens": 10, "output_tokens": 5}})})
    c = openai.OpenAI(base_url=f"{fid.url}/v1", api_key="unused", max_retries=0)
    r = c.chat.completions.create(model="claude-sonnet-4", messages=MESSAGES)
    assert r.usage.prompt_tokens == 100
    assert r.usage.prompt_tokens_details.cached_tokens == 30


def test_anthropic_sdk_sees_openai_cached_tokens_in_a_stream(fid):
    chunk = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-mini"}
    script(fid.mocks["openai"], {"dialect": "openai", "chunks": sse(
        {**chunk, "choices": [{"index": 0, "delta": {"role": "assistant", "content": "hi"}, "finish_reason": None}]},
        {**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
        {**chunk, "choices": [], "usage": {"prompt_tokens": 100, "completion_tokens": 50, "total_tokens": 150,
                                           "prompt_tokens_details": {"cached_tokens": 40},
                                           "completion_tokens_details": {"reasoning_tokens": 20}}},
    ) + ["data: [DONE]\n\n"]})
    c = anthropic.Anthropic(base_url=fid.url, api_key="unused", max_retries=0)
    with c.messages.stream(model="gpt-4o-mini", max_tokens=256, messages=MESSAGES) as s:
        m = s.get_final_message()
    assert m.usage.output_tokens == 50
    assert m.usage.cache_read_input_tokens == 40
    assert m.usage.input_tokens == 60


def test_anthropic_sdk_stream_from_gemini_reports_input_tokens_in_message_start(fid):
    script(fid.mocks["gemini"], {"dialect": "gemini", "chunks": sse(
        {"candidates": [{"content": {"role": "model", "parts": [{"text": "Hel"}]}}],
         "usageMetadata": {"promptTokenCount": 42}, "modelVersion": "gemini-2.0-flash"},
        {"candidates": [{"content": {"role": "model", "parts": [{"text": "lo"}]}, "finishReason": "STOP"}],
         "usageMetadata": {"promptTokenCount": 42, "candidatesTokenCount": 3, "thoughtsTokenCount": 4}},
    )})
    c = anthropic.Anthropic(base_url=fid.url, api_key="unused", max_retries=0)
    with c.messages.stream(model="gemini-2.0-flash", max_tokens=256, messages=MESSAGES) as s:
        events = list(s)
    start = next(e for e in events if e.type == "message_start")
    assert start.message.usage.input_tokens == 42
    assert s.get_final_message().usage.output_tokens == 7


@pytest.mark.parametrize("sdk", ["openai", "anthropic"])
def test_a_gemini_retry_delay_reaches_the_sdk_as_retry_after(fid, sdk):
    script(fid.mocks["gemini"], {"dialect": "gemini", "status": 429, "body": json.dumps({"error": {
        "code": 429, "message": "Resource has been exhausted", "status": "RESOURCE_EXHAUSTED",
        "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "13s"}]}})})
    if sdk == "openai":
        c = openai.OpenAI(base_url=f"{fid.url}/v1", api_key="unused", max_retries=0)
        with pytest.raises(openai.RateLimitError) as e:
            c.chat.completions.create(model="gemini-2.0-flash", messages=MESSAGES)
    else:
        c = anthropic.Anthropic(base_url=fid.url, api_key="unused", max_retries=0)
        with pytest.raises(anthropic.RateLimitError) as e:
            c.messages.create(model="gemini-2.0-flash", max_tokens=64, messages=MESSAGES)
    assert e.value.response.headers["retry-after"] == "13"


def test_gemini_ids_and_thought_signatures_survive_an_openai_tool_turn(fid):
    node = fid.mocks["gemini"]
    script(node, {"dialect": "gemini", "body": json.dumps({"candidates": [{"content": {"role": "model", "parts": [
        {"functionCall": {"id": "fc_a", "name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": "c2lnLWE="},
        {"functionCall": {"id": "fc_b", "name": "get_weather", "args": {"city": "Rome"}}, "thoughtSignature": "c2lnLWI="},
    ]}, "finishReason": "STOP"}]})})
    c = openai.OpenAI(base_url=f"{fid.url}/v1", api_key="unused", max_retries=0)
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
    r = c.chat.completions.create(model="gemini-2.0-flash", messages=MESSAGES, tools=tools)
    calls = r.choices[0].message.tool_calls
    assert [json.loads(x.function.arguments)["city"] for x in calls] == ["Paris", "Rome"]
    # Results sent back in the other order, matched by id.
    history = MESSAGES + [r.choices[0].message.model_dump(exclude_none=True)] + [
        {"role": "tool", "tool_call_id": calls[1].id, "content": "rainy"},
        {"role": "tool", "tool_call_id": calls[0].id, "content": "sunny"},
    ]
    c.chat.completions.create(model="gemini-2.0-flash", messages=history, tools=tools)
    sent = last_body(node)["contents"]
    model_parts = sent[1]["parts"]
    assert [(p["functionCall"]["id"], p["thoughtSignature"]) for p in model_parts] == [("fc_a", "c2lnLWE="), ("fc_b", "c2lnLWI=")]
    results = [p["functionResponse"] for p in sent[2]["parts"]]
    assert [(x["id"], x["response"]["result"]) for x in results] == [("fc_b", "rainy"), ("fc_a", "sunny")]


def test_malformed_function_call_and_pause_turn_are_not_a_plain_stop(fid):
    script(fid.mocks["gemini"], {"dialect": "gemini", "body": json.dumps({"candidates": [{
        "content": {"role": "model", "parts": [{"text": ""}]}, "finishReason": "MALFORMED_FUNCTION_CALL"}]})})
    c = openai.OpenAI(base_url=f"{fid.url}/v1", api_key="unused", max_retries=0)
    r = c.chat.completions.create(model="gemini-2.0-flash", messages=MESSAGES)
    assert r.choices[0].finish_reason == "length"
    script(fid.mocks["anthropic"], {"dialect": "anthropic", "body": json.dumps({
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4",
        "content": [{"type": "text", "text": "working"}], "stop_reason": "pause_turn", "stop_sequence": None,
        "usage": {"input_tokens": 5, "output_tokens": 5}})})
    r = c.chat.completions.create(model="claude-sonnet-4", messages=MESSAGES)
    assert r.choices[0].finish_reason == "length"


def test_tool_arguments_cut_by_length_reach_the_anthropic_sdk_as_the_partial_text(fid):
    script(fid.mocks["openai"], {"dialect": "openai", "body": json.dumps({
        "id": "c1", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini",
        "choices": [{"index": 0, "finish_reason": "length", "message": {"role": "assistant", "content": None,
            "tool_calls": [{"id": "call_1", "type": "function",
                            "function": {"name": "get_weather", "arguments": "{\"city\": \"Par"}}]}}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 8, "total_tokens": 13}})})
    c = anthropic.Anthropic(base_url=fid.url, api_key="unused", max_retries=0)
    r = c.messages.create(model="gpt-4o-mini", max_tokens=8, messages=MESSAGES)
    assert r.stop_reason == "max_tokens"
    block = next(b for b in r.content if b.type == "tool_use")
    assert block.input == {"arguments": '{"city": "Par'}, block
