"""More translation fidelity through the official SDKs (the gaps an audit of #17 found), against
recording `llmux mock` upstreams (`/_mock/script` for exact answers, `/_mock/stats` for what the
upstream received):

1. streams the upstream cuts before its final event are an error for google-genai and ollama
   clients too, and on the Ollama-native `/api/chat` path;
2. a Gemini client's parallel tool calls keep their ids through an OpenAI upstream;
3. cached / reasoning token counts reach google-genai and the OpenAI SDK;
4. embeddings report their model and input tokens;
5. `MALFORMED_FUNCTION_CALL` and `pause_turn` reach the Anthropic, Gemini and Ollama clients;
6. Ollama answers carry tool-call ids, and a `tool_call_id` sent back reaches the upstream;
7. a Gemini thought signature riding in a tool-call id never reaches other upstream kinds."""

import base64
import json
import urllib.request

import anthropic
import httpx
import ollama
import openai
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types

from conftest import Stack

# model served by each upstream kind (one `llmux mock` each, every dialect on it)
KINDS = {
    "ollama": ("llama3:latest", ""),
    "openai": ("gpt-4o-mini", "/v1"),
    "anthropic": ("claude-sonnet-4", ""),
    "gemini": ("gemini-2.0-flash", ""),
}
EMBED = {"openai": "text-embedding-3-small", "gemini": "gemini-embedding-001"}
HI = [{"role": "user", "content": "Weather in Paris and Rome?"}]
WEATHER = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
OAI_TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": WEATHER}}]


@pytest.fixture(scope="module")
def fid():
    s = Stack()
    try:
        s.mocks = {}
        ups = []
        for kind, (model, suffix) in KINDS.items():
            models = [model] + ([EMBED[kind]] if kind in EMBED else [])
            url = s.mock(f"{kind}-more", models, "--chunks", "6", "--api-key", f"key-{kind}")
            s.mocks[kind] = url
            ups.append((f"{kind}-more", kind, url + suffix, f"key-{kind}", models, ""))
        s.serve_upstreams(ups, "fidelity-more.toml")
        yield s
    finally:
        s.close()


@pytest.fixture(autouse=True)
def clean_script(fid):
    """No scripted answer a failed test left queued leaks into the next test."""
    yield
    for url in fid.mocks.values():
        script(url)


def model_of(kind):
    return KINDS[kind][0].removesuffix(":latest")


def script(node_url, *replies):
    """Queues exact answers for the node's next generation calls; none clears the queue."""
    req = urllib.request.Request(
        f"{node_url}/_mock/script",
        data=json.dumps(list(replies)).encode(),
        headers={"content-type": "application/json"},
        method="POST",
    )
    urllib.request.urlopen(req, timeout=30).read()


def stats(node_url):
    with urllib.request.urlopen(f"{node_url}/_mock/stats", timeout=30) as r:
        return json.loads(r.read())


def last_body(node_url):
    return stats(node_url)["last_body"]


def sse(*events):
    """SSE frames; an event given as (name, data) gets an `event:` line (Anthropic's streams)."""
    out = []
    for e in events:
        if isinstance(e, tuple):
            out.append(f"event: {e[0]}\ndata: {json.dumps(e[1])}\n\n")
        else:
            out.append(f"data: {json.dumps(e)}\n\n")
    return out


def oai(fid):
    return openai.OpenAI(base_url=f"{fid.url}/v1", api_key="unused", max_retries=0, timeout=30)


def ant(fid):
    return anthropic.Anthropic(base_url=fid.url, api_key="unused", max_retries=0, timeout=30)


def gem(fid):
    return genai.Client(
        api_key="unused", http_options=types.HttpOptions(base_url=fid.url, api_version="v1beta", timeout=30_000)
    )


def oll(fid):
    return ollama.Client(host=fid.url, timeout=30)


def anthropic_message(stop_reason, usage, text="working"):
    return {
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4",
        "content": [{"type": "text", "text": text}], "stop_reason": stop_reason, "stop_sequence": None,
        "usage": usage,
    }


def openai_completion(message, finish_reason, usage=None):
    return {
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini",
        "choices": [{"index": 0, "finish_reason": finish_reason, "message": {"role": "assistant", **message}}],
        "usage": usage or {"prompt_tokens": 9, "completion_tokens": 7, "total_tokens": 16},
    }


TWO_CALLS = {"content": None, "tool_calls": [
    {"id": "call_abc", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
    {"id": "call_def", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'}},
]}


# --- 1. streams cut before their final event ---


@pytest.mark.parametrize("kind", list(KINDS))
def test_gemini_sdk_raises_on_a_stream_cut_short(truncated, kind):
    node = truncated.mocks[kind]
    before = stats(node)["generations"]
    finishes, text = [], []
    c = gem(truncated)  # kept: a google-genai Client closes its connections when collected
    with pytest.raises(genai_errors.APIError) as e:
        for chunk in c.models.generate_content_stream(model=model_of(kind), contents="hello there"):
            text.append(chunk.text or "")
            finishes += [c.finish_reason for c in chunk.candidates or [] if c.finish_reason]
    assert "final event" in str(e.value), e.value
    assert finishes == []
    # What the upstream sent before the cut arrived (Anthropic's first three events hold no text).
    assert "".join(text) == "" if kind == "anthropic" else "".join(text).startswith(f"[{kind}-more]")
    assert stats(node)["generations"] == before + 1


@pytest.mark.parametrize("kind", list(KINDS))
def test_ollama_sdk_raises_on_a_stream_cut_short(truncated, kind):
    node = truncated.mocks[kind]
    before = stats(node)["generations"]
    parts = []
    with pytest.raises(ollama.ResponseError) as e:
        for part in oll(truncated).chat(model=model_of(kind), messages=HI, stream=True):
            assert not part.done, f"a cut stream ended normally: {part}"
            parts.append(part.message.content or "")
    assert "final event" in str(e.value), e.value
    assert "".join(parts) == "" if kind == "anthropic" else "".join(parts).startswith(f"[{kind}-more]")
    assert stats(node)["generations"] == before + 1


def test_anthropic_sdk_raises_on_a_cut_native_ollama_stream(truncated):
    node = truncated.mocks["ollama"]
    native = stats(node)["by_path"].get("/api/chat", 0)
    v1 = stats(node)["by_path"].get("/v1/chat/completions", 0)
    stop_reasons = []
    with pytest.raises(anthropic.APIError) as e:
        with ant(truncated).messages.stream(
            model="llama3", max_tokens=64, messages=HI, extra_body={"top_k": 5}
        ) as s:
            for ev in s:
                if ev.type == "message_delta":
                    stop_reasons.append(ev.delta.stop_reason)
            s.get_final_message()
    assert "final event" in str(e.value), e.value
    assert stop_reasons == []
    after = stats(node)
    assert after["by_path"].get("/api/chat", 0) == native + 1, after["by_path"]
    assert after["by_path"].get("/v1/chat/completions", 0) == v1
    assert after["last_body"]["options"]["top_k"] == 5


# --- 2. a Gemini client's parallel tool calls through an OpenAI upstream ---


def test_gemini_sdk_tool_ids_match_results_through_openai(fid):
    node = fid.mocks["openai"]
    script(node, {"dialect": "openai", "body": json.dumps(openai_completion(TWO_CALLS, "tool_calls"))})
    tools = [types.Tool(function_declarations=[types.FunctionDeclaration(name="get_weather", parameters_json_schema=WEATHER)])]
    cfg = types.GenerateContentConfig(tools=tools, automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True))
    c = gem(fid)
    r = c.models.generate_content(model="gpt-4o-mini", contents="Weather in Paris and Rome?", config=cfg)
    calls = r.function_calls
    assert [(fc.id, fc.name, fc.args) for fc in calls] == [
        ("call_abc", "get_weather", {"city": "Paris"}),
        ("call_def", "get_weather", {"city": "Rome"}),
    ]
    # The results go back in the other order; each must reach its own call.
    contents = [
        types.Content(role="user", parts=[types.Part(text="Weather in Paris and Rome?")]),
        r.candidates[0].content,
        types.Content(role="user", parts=[
            types.Part(function_response=types.FunctionResponse(id="call_def", name="get_weather", response={"result": "rainy"})),
            types.Part(function_response=types.FunctionResponse(id="call_abc", name="get_weather", response={"result": "sunny"})),
        ]),
    ]
    c.models.generate_content(model="gpt-4o-mini", contents=contents, config=cfg)
    msgs = last_body(node)["messages"]
    asst = next(m for m in msgs if m["role"] == "assistant")
    assert [(t["id"], json.loads(t["function"]["arguments"])) for t in asst["tool_calls"]] == [
        ("call_abc", {"city": "Paris"}),
        ("call_def", {"city": "Rome"}),
    ]
    results = [(m["tool_call_id"], m["content"]) for m in msgs if m["role"] == "tool"]
    assert results == [("call_def", "rainy"), ("call_abc", "sunny")]


# --- 3. usage detail ---


def test_gemini_sdk_sees_anthropic_cache_reads(fid):
    script(fid.mocks["anthropic"], {"dialect": "anthropic", "body": json.dumps(anthropic_message("end_turn", {
        "input_tokens": 60, "cache_read_input_tokens": 30, "cache_creation_input_tokens": 10, "output_tokens": 5}))})
    c = gem(fid)
    u = c.models.generate_content(model="claude-sonnet-4", contents="hello").usage_metadata
    # Anthropic's input_tokens leaves out cache reads and writes: the prompt is all three.
    assert u.prompt_token_count == 100
    assert u.cached_content_token_count == 30
    assert u.candidates_token_count == 5
    assert u.total_token_count == 105
    assert not u.thoughts_token_count


def test_gemini_sdk_sees_openai_cached_and_reasoning_tokens(fid):
    usage = {"prompt_tokens": 100, "completion_tokens": 50, "total_tokens": 150,
             "prompt_tokens_details": {"cached_tokens": 40},
             "completion_tokens_details": {"reasoning_tokens": 20}}
    script(fid.mocks["openai"], {"dialect": "openai", "body": json.dumps(
        openai_completion({"content": "hi"}, "stop", usage))})
    c = gem(fid)
    u = c.models.generate_content(model="gpt-4o-mini", contents="hello").usage_metadata
    assert u.prompt_token_count == 100
    assert u.cached_content_token_count == 40
    assert u.thoughts_token_count == 20
    # Gemini counts thoughts apart from the candidates; the total stays the upstream's.
    assert u.candidates_token_count == 30
    assert u.total_token_count == 150


def test_gemini_sdk_stream_sees_openai_cached_and_reasoning_tokens(fid):
    chunk = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-mini"}
    script(fid.mocks["openai"], {"dialect": "openai", "chunks": sse(
        {**chunk, "choices": [{"index": 0, "delta": {"role": "assistant", "content": "hi"}, "finish_reason": None}]},
        {**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
        {**chunk, "choices": [], "usage": {"prompt_tokens": 100, "completion_tokens": 50, "total_tokens": 150,
                                           "prompt_tokens_details": {"cached_tokens": 40},
                                           "completion_tokens_details": {"reasoning_tokens": 20}}},
    ) + ["data: [DONE]\n\n"]})
    c = gem(fid)
    chunks = list(c.models.generate_content_stream(model="gpt-4o-mini", contents="hello"))
    u = chunks[-1].usage_metadata
    assert chunks[-1].candidates[0].finish_reason == types.FinishReason.STOP
    assert (u.prompt_token_count, u.cached_content_token_count, u.thoughts_token_count) == (100, 40, 20)
    assert u.total_token_count == 150


def test_openai_sdk_sees_gemini_thoughts_as_reasoning_tokens(fid):
    script(fid.mocks["gemini"], {"dialect": "gemini", "body": json.dumps({
        "candidates": [{"content": {"role": "model", "parts": [{"text": "hi"}]}, "finishReason": "STOP"}],
        "usageMetadata": {"promptTokenCount": 10, "cachedContentTokenCount": 4, "candidatesTokenCount": 5,
                          "thoughtsTokenCount": 7, "totalTokenCount": 22},
        "modelVersion": "gemini-2.0-flash"})})
    u = oai(fid).chat.completions.create(model="gemini-2.0-flash", messages=HI).usage
    assert u.prompt_tokens == 10
    assert u.prompt_tokens_details.cached_tokens == 4
    assert u.completion_tokens == 12
    assert u.completion_tokens_details.reasoning_tokens == 7
    assert u.total_tokens == 22


# --- 4. embeddings ---


def test_openai_sdk_embeddings_from_gemini_report_model_and_usage(fid):
    node = fid.mocks["gemini"]
    r = oai(fid).embeddings.create(model=EMBED["gemini"], input=["the quick brown fox", "jumps"])
    assert r.model == EMBED["gemini"]
    assert len(r.data) == 2 and len(r.data[0].embedding) == 8
    assert r.usage.prompt_tokens > 0
    assert r.usage.total_tokens == r.usage.prompt_tokens
    assert stats(node)["by_path"].get(f"/v1beta/models/{EMBED['gemini']}:batchEmbedContents", 0) >= 1, stats(node)["by_path"]


def test_openai_sdk_embeddings_from_gemini_report_upstream_token_count(fid):
    script(fid.mocks["gemini"], {"dialect": "gemini", "body": json.dumps({
        "embeddings": [{"values": [0.5, 0.25, -0.125]}], "usageMetadata": {"promptTokenCount": 17}})})
    r = oai(fid).embeddings.create(model=EMBED["gemini"], input=["one two"])
    assert r.model == EMBED["gemini"]
    assert r.data[0].embedding == [0.5, 0.25, -0.125]  # exact in f32, which llmux keeps vectors in
    assert r.usage.prompt_tokens == 17


def test_ollama_sdk_embed_from_gemini_reports_model_and_prompt_eval_count(fid):
    r = oll(fid).embed(model=EMBED["gemini"], input=["the quick brown fox", "jumps"])
    assert r.model == EMBED["gemini"]
    assert len(r.embeddings) == 2 and len(r.embeddings[0]) == 8
    assert r.prompt_eval_count and r.prompt_eval_count > 0


def test_ollama_sdk_embed_from_openai_reports_model_and_prompt_eval_count(fid):
    r = oll(fid).embed(model=EMBED["openai"], input="the quick brown fox")
    assert r.model == EMBED["openai"]
    assert len(r.embeddings) == 1 and len(r.embeddings[0]) == 8
    assert r.prompt_eval_count and r.prompt_eval_count > 0
    assert last_body(fid.mocks["openai"])["input"] in ("the quick brown fox", ["the quick brown fox"])


# --- 5. finish reasons with no exact twin ---

MALFORMED = {"candidates": [{"content": {"role": "model", "parts": [{"text": ""}]},
                             "finishReason": "MALFORMED_FUNCTION_CALL"}],
             "usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 1, "totalTokenCount": 6}}


def test_anthropic_sdk_sees_malformed_function_call_as_pause_turn(fid):
    script(fid.mocks["gemini"], {"dialect": "gemini", "body": json.dumps(MALFORMED)})
    r = ant(fid).messages.create(model="gemini-2.0-flash", max_tokens=64, messages=HI)
    assert r.stop_reason == "pause_turn"


def test_anthropic_sdk_stream_sees_malformed_function_call_as_pause_turn(fid):
    script(fid.mocks["gemini"], {"dialect": "gemini", "chunks": sse(
        {"candidates": [{"content": {"role": "model", "parts": [{"text": "Let me"}]}}],
         "usageMetadata": {"promptTokenCount": 5}},
        MALFORMED,
    )})
    with ant(fid).messages.stream(model="gemini-2.0-flash", max_tokens=64, messages=HI) as s:
        m = s.get_final_message()
    assert m.stop_reason == "pause_turn"
    assert m.content[0].text == "Let me"


def test_gemini_sdk_sees_pause_turn_as_max_tokens(fid):
    script(fid.mocks["anthropic"], {"dialect": "anthropic", "body": json.dumps(
        anthropic_message("pause_turn", {"input_tokens": 5, "output_tokens": 5}))})
    c = gem(fid)
    r = c.models.generate_content(model="claude-sonnet-4", contents="hello")
    assert r.candidates[0].finish_reason == types.FinishReason.MAX_TOKENS
    assert r.text == "working"


def test_gemini_sdk_stream_sees_pause_turn_as_max_tokens(fid):
    msg = anthropic_message(None, {"input_tokens": 5, "output_tokens": 1})
    msg["content"] = []
    script(fid.mocks["anthropic"], {"dialect": "anthropic", "chunks": sse(
        ("message_start", {"type": "message_start", "message": msg}),
        ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "working"}}),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "pause_turn", "stop_sequence": None},
                           "usage": {"output_tokens": 5}}),
        ("message_stop", {"type": "message_stop"}),
    )})
    c = gem(fid)
    chunks = list(c.models.generate_content_stream(model="claude-sonnet-4", contents="hello"))
    finishes = [c.finish_reason for ch in chunks for c in ch.candidates or [] if c.finish_reason]
    assert finishes == [types.FinishReason.MAX_TOKENS]
    assert "".join(ch.text or "" for ch in chunks) == "working"


def test_ollama_sdk_sees_pause_turn_and_malformed_function_call_as_length(fid):
    script(fid.mocks["anthropic"], {"dialect": "anthropic", "body": json.dumps(
        anthropic_message("pause_turn", {"input_tokens": 5, "output_tokens": 5}))})
    r = oll(fid).chat(model="claude-sonnet-4", messages=HI, stream=False)
    assert (r.done, r.done_reason) == (True, "length")
    script(fid.mocks["gemini"], {"dialect": "gemini", "chunks": sse(MALFORMED)})
    last = list(oll(fid).chat(model="gemini-2.0-flash", messages=HI, stream=True))[-1]
    assert (last.done, last.done_reason) == (True, "length")


# --- 6. Ollama clients and tool-call ids ---


def raw_chat(fid, body):
    return httpx.post(f"{fid.url}/api/chat", json=body, timeout=30)


def test_ollama_answers_carry_tool_call_ids(fid):
    node = fid.mocks["openai"]
    script(node, {"dialect": "openai", "body": json.dumps(openai_completion(TWO_CALLS, "tool_calls"))})
    r = raw_chat(fid, {"model": "gpt-4o-mini", "messages": HI, "tools": OAI_TOOLS, "stream": False})
    assert r.status_code == 200, r.text
    calls = r.json()["message"]["tool_calls"]
    assert [(c["id"], c["function"]["name"], c["function"]["arguments"]) for c in calls] == [
        ("call_abc", "get_weather", {"city": "Paris"}),
        ("call_def", "get_weather", {"city": "Rome"}),
    ]


def test_ollama_stream_answers_carry_tool_call_ids(fid):
    chunk = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-mini"}

    def call_delta(i, cid):
        return {**chunk, "choices": [{"index": 0, "finish_reason": None, "delta": {"tool_calls": [
            {"index": i, "id": cid, "type": "function", "function": {"name": "get_weather", "arguments": ""}}]}}]}

    def args_delta(i, text):
        return {**chunk, "choices": [{"index": 0, "finish_reason": None, "delta": {"tool_calls": [
            {"index": i, "function": {"arguments": text}}]}}]}

    script(fid.mocks["openai"], {"dialect": "openai", "chunks": sse(
        {**chunk, "choices": [{"index": 0, "delta": {"role": "assistant"}, "finish_reason": None}]},
        call_delta(0, "call_abc"), args_delta(0, '{"city": '), args_delta(0, '"Paris"}'),
        call_delta(1, "call_def"), args_delta(1, '{"city": "Rome"}'),
        {**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
    ) + ["data: [DONE]\n\n"]})
    r = raw_chat(fid, {"model": "gpt-4o-mini", "messages": HI, "tools": OAI_TOOLS, "stream": True})
    assert r.status_code == 200, r.text
    lines = [json.loads(line) for line in r.text.splitlines() if line.strip()]
    assert lines[-1]["done"] is True
    calls = [c for line in lines for c in line["message"].get("tool_calls", [])]
    assert [(c.get("id"), c["function"]["arguments"]) for c in calls] == [
        ("call_abc", {"city": "Paris"}),
        ("call_def", {"city": "Rome"}),
    ]


def test_ollama_tool_call_ids_sent_back_reach_the_upstream(fid):
    node = fid.mocks["openai"]
    history = HI + [
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": "call_abc", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}},
            {"id": "call_def", "function": {"name": "get_weather", "arguments": {"city": "Rome"}}},
        ]},
        # In the other order: the ids, not the order or the name, say which call each answers.
        {"role": "tool", "tool_call_id": "call_def", "tool_name": "get_weather", "content": "rainy"},
        {"role": "tool", "tool_call_id": "call_abc", "tool_name": "get_weather", "content": "sunny"},
    ]
    r = raw_chat(fid, {"model": "gpt-4o-mini", "messages": history, "tools": OAI_TOOLS, "stream": False})
    assert r.status_code == 200, r.text
    msgs = last_body(node)["messages"]
    asst = next(m for m in msgs if m["role"] == "assistant")
    assert [t["id"] for t in asst["tool_calls"]] == ["call_abc", "call_def"]
    assert [(m["tool_call_id"], m["content"]) for m in msgs if m["role"] == "tool"] == [
        ("call_def", "rainy"), ("call_abc", "sunny"),
    ]


def test_ollama_sdk_tool_turn_through_openai(fid):
    """The ollama SDK's `Message.ToolCall` (0.6.3) has no `id` field, so it drops the id llmux
    sends; results go back by `tool_name` and answer the earliest unanswered call of that name."""
    node = fid.mocks["openai"]
    script(node, {"dialect": "openai", "body": json.dumps(openai_completion(TWO_CALLS, "tool_calls"))})
    c = oll(fid)
    r = c.chat(model="gpt-4o-mini", messages=HI, tools=OAI_TOOLS, stream=False)
    calls = r.message.tool_calls
    assert [(t.function.name, dict(t.function.arguments)) for t in calls] == [
        ("get_weather", {"city": "Paris"}), ("get_weather", {"city": "Rome"}),
    ]
    sdk_keeps_ids = "id" in ollama.Message.ToolCall.model_fields
    if sdk_keeps_ids:
        assert [t.id for t in calls] == ["call_abc", "call_def"]
    history = HI + [r.message, {"role": "tool", "tool_name": "get_weather", "content": "sunny"},
                    {"role": "tool", "tool_name": "get_weather", "content": "rainy"}]
    c.chat(model="gpt-4o-mini", messages=history, tools=OAI_TOOLS, stream=False)
    msgs = last_body(node)["messages"]
    ids = [t["id"] for t in next(m for m in msgs if m["role"] == "assistant")["tool_calls"]]
    if sdk_keeps_ids:
        assert ids == ["call_abc", "call_def"]
    assert len(set(ids)) == 2
    assert [(m["tool_call_id"], m["content"]) for m in msgs if m["role"] == "tool"] == [
        (ids[0], "sunny"), (ids[1], "rainy"),
    ]


# --- 7. Gemini thought signatures stay with Gemini ---

SIGNED = "fc_1__gts_" + base64.urlsafe_b64encode(b"sig-bytes").decode().rstrip("=")


def signed_history():
    return HI + [
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": SIGNED, "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
        {"role": "tool", "tool_call_id": SIGNED, "content": "sunny"},
    ]


def test_signature_in_a_call_id_does_not_reach_an_openai_upstream(fid):
    assert SIGNED == "fc_1__gts_c2lnLWJ5dGVz"
    oai(fid).chat.completions.create(model="gpt-4o-mini", messages=signed_history(), tools=OAI_TOOLS)
    msgs = last_body(fid.mocks["openai"])["messages"]
    assert msgs[1]["tool_calls"][0]["id"] == "fc_1"
    assert msgs[2]["tool_call_id"] == "fc_1"


def test_signature_in_a_translated_call_id_does_not_reach_an_openai_upstream(fid):
    turns = [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": SIGNED, "name": "get_weather", "input": {"city": "Paris"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": SIGNED, "content": "sunny"}]},
    ]
    tools = [{"name": "get_weather", "input_schema": WEATHER}]
    ant(fid).messages.create(model="gpt-4o-mini", max_tokens=32, messages=turns, tools=tools)
    msgs = last_body(fid.mocks["openai"])["messages"]
    assert msgs[1]["tool_calls"][0]["id"] == "fc_1"
    assert msgs[2]["tool_call_id"] == "fc_1"


def test_signature_in_a_call_id_does_not_reach_an_anthropic_upstream(fid):
    oai(fid).chat.completions.create(model="claude-sonnet-4", messages=signed_history(), tools=OAI_TOOLS)
    msgs = last_body(fid.mocks["anthropic"])["messages"]
    use = next(b for b in msgs[1]["content"] if b["type"] == "tool_use")
    result = next(b for b in msgs[2]["content"] if b["type"] == "tool_result")
    assert (use["id"], result["tool_use_id"]) == ("fc_1", "fc_1")


# --- 8. the listed drops: the call succeeds and the dropped field does not arrive ---

PIXEL = (
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)


def test_openai_metadata_and_image_detail_are_dropped_as_listed_for_anthropic(fid):
    """docs/compatibility.md lists OpenAI `metadata` and image `detail` as dropped for
    Anthropic (which has neither); `user` is carried as `metadata.user_id`."""
    r = oai(fid).chat.completions.create(
        model="claude-sonnet-4",
        messages=[{"role": "user", "content": [
            {"type": "text", "text": "what is this?"},
            {"type": "image_url", "image_url": {"url": PIXEL, "detail": "high"}},
        ]}],
        metadata={"team": "search"},
        store=True,
        user="u-42",
    )
    assert r.choices[0].message.content
    body = last_body(fid.mocks["anthropic"])
    assert body["metadata"] == {"user_id": "u-42"}, body
    image = next(b for b in body["messages"][0]["content"] if b["type"] == "image")
    assert image["source"]["type"] == "base64" and "detail" not in json.dumps(image), image
    assert "store" not in body, body
