"""Translation fidelity, request side (#17 items 2, 3, 4, 8, 9, 12): the official SDK of the client's
dialect → llmux → a recording mock upstream of another kind; each test asserts on what arrived there
(`/_mock/stats` → `last_body`)."""

import json
import urllib.request

import pytest

import anthropic
import ollama
import openai
from google import genai
from google.genai import types

from conftest import Stack

SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "temp": {"type": "number"}},
    "required": ["city", "temp"],
    "additionalProperties": False,
}
WEATHER = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
HI = [{"role": "user", "content": "Weather in Paris?"}]

GPT = "gpt-5-mini"  # kind openai, default max_tokens_field
LOCAL = "local-llm"  # kind openai, max_tokens_field = "max_tokens" (a vLLM-style server)
CLAUDE = "claude-sonnet-4-5"  # kind anthropic, from the shipped table: 64,000
CUSTOM = "claude-custom"  # kind anthropic, max_output_tokens override: 12,345
GEMINI = "gemini-2.5-flash"
LLAMA = "llama3:latest"


@pytest.fixture(scope="module")
def fid():
    s = Stack()
    try:
        s.nodes = {}
        ups = [
            ("openai-up", "openai", [GPT], "/v1", ""),
            ("vllm-up", "openai", [LOCAL], "/v1", 'max_tokens_field = "max_tokens"\n'),
            ("anthropic-up", "anthropic", [CLAUDE, CUSTOM], "", f'max_output_tokens = {{ "{CUSTOM}" = 12345 }}\n'),
            ("gemini-up", "gemini", [GEMINI], "", ""),
            ("ollama-up", "ollama", [LLAMA], "", ""),
        ]
        tables = []
        for name, kind, models, suffix, extra in ups:
            url = s.mock(name, models, "--chunks", "3")
            s.nodes[name] = url
            tables.append((name, kind, url + suffix, "k", models, extra))
        s.serve_upstreams(tables, "fidelity.toml")
        yield s
    finally:
        s.close()


def last_body(fid, node):
    with urllib.request.urlopen(f"{fid.nodes[node]}/_mock/stats", timeout=30) as r:
        return json.loads(r.read())["last_body"]


def oai(fid):
    return openai.OpenAI(base_url=f"{fid.url}/v1", api_key="unused", max_retries=0, timeout=60)


def ant(fid):
    return anthropic.Anthropic(base_url=fid.url, api_key="unused", max_retries=0, timeout=60)


def gem(fid):
    return genai.Client(api_key="unused", http_options=types.HttpOptions(base_url=fid.url, api_version="v1beta"))


def oll(fid):
    return ollama.Client(host=fid.url, timeout=60)


def openai_format(body):
    """The structured-output request as an Ollama node got it, via /api/chat or its OpenAI API."""
    return body.get("format", body.get("response_format"))


# --- item 2: structured output ---


def test_anthropic_output_config_reaches_openai_as_response_format(fid):
    fmt = {"format": {"type": "json_schema", "schema": SCHEMA}}
    ant(fid).messages.create(model=GPT, max_tokens=200, messages=HI, output_config=fmt)
    rf = last_body(fid, "openai-up")["response_format"]
    assert rf["type"] == "json_schema"
    assert rf["json_schema"]["schema"] == SCHEMA
    assert rf["json_schema"]["name"] == "response"


def assert_gemini_schema(g):
    """SCHEMA as Gemini received it: whole as `responseJsonSchema`, or in the OpenAPI subset as
    `responseSchema` with the same properties and required fields."""
    if "responseJsonSchema" in g:
        assert g["responseJsonSchema"] == SCHEMA, g
        return
    s = g["responseSchema"]
    assert s["type"].lower() == "object", g
    assert {k: v["type"].lower() for k, v in s["properties"].items()} == {"city": "string", "temp": "number"}, g
    assert s["required"] == ["city", "temp"], g


def test_anthropic_output_config_reaches_gemini_and_ollama(fid):
    fmt = {"format": {"type": "json_schema", "schema": SCHEMA}}
    ant(fid).messages.create(model=GEMINI, max_tokens=200, messages=HI, output_config=fmt)
    g = last_body(fid, "gemini-up")["generationConfig"]
    assert g["responseMimeType"] == "application/json"
    assert_gemini_schema(g)
    ant(fid).messages.create(model=LLAMA, max_tokens=200, messages=HI, output_config=fmt)
    f = openai_format(last_body(fid, "ollama-up"))
    assert f == SCHEMA or f["json_schema"]["schema"] == SCHEMA


def test_unknown_output_config_key_is_a_400(fid):
    with pytest.raises(anthropic.BadRequestError) as e:
        ant(fid).messages.create(model=GPT, max_tokens=20, messages=HI, output_config={"effort": "low"})
    assert "output_config.effort" in str(e.value)


def test_openai_response_format_reaches_anthropic_as_output_config(fid):
    rf = {"type": "json_schema", "json_schema": {"name": "weather", "schema": SCHEMA, "strict": True}}
    oai(fid).chat.completions.create(model=CLAUDE, messages=HI, response_format=rf)
    body = last_body(fid, "anthropic-up")
    assert body["output_config"] == {"format": {"type": "json_schema", "schema": SCHEMA}}


def test_openai_json_object_to_anthropic_is_a_400_naming_the_field(fid):
    with pytest.raises(openai.BadRequestError) as e:
        oai(fid).chat.completions.create(model=CLAUDE, messages=HI, response_format={"type": "json_object"})
    assert "response_format" in str(e.value)


def test_openai_json_schema_reaches_gemini(fid):
    rf = {"type": "json_schema", "json_schema": {"name": "weather", "schema": SCHEMA}}
    oai(fid).chat.completions.create(model=GEMINI, messages=HI, response_format=rf)
    g = last_body(fid, "gemini-up")["generationConfig"]
    assert g["responseMimeType"] == "application/json"
    assert_gemini_schema(g)


def test_gemini_response_schema_reaches_openai_and_anthropic(fid):
    cfg = types.GenerateContentConfig(response_mime_type="application/json", response_json_schema=SCHEMA)
    c = gem(fid)
    c.models.generate_content(model=GPT, contents="Weather in Paris?", config=cfg)
    rf = last_body(fid, "openai-up")["response_format"]
    assert rf["type"] == "json_schema" and rf["json_schema"]["schema"] == SCHEMA
    c.models.generate_content(model=CLAUDE, contents="Weather in Paris?", config=cfg)
    assert last_body(fid, "anthropic-up")["output_config"]["format"]["schema"] == SCHEMA


def test_ollama_format_json_and_schema(fid):
    oll(fid).chat(model=GPT, messages=HI, format="json")
    assert last_body(fid, "openai-up")["response_format"] == {"type": "json_object"}
    oll(fid).chat(model=CLAUDE, messages=HI, format=SCHEMA)
    assert last_body(fid, "anthropic-up")["output_config"]["format"]["schema"] == SCHEMA
    with pytest.raises(ollama.ResponseError) as e:
        oll(fid).chat(model=CLAUDE, messages=HI, format="json")
    # Named as the Ollama client wrote it, not as OpenAI would.
    assert e.value.status_code == 400 and "`format`" in str(e.value), str(e.value)


# --- item 3: no silent 4,096 cap ---


def test_no_limit_reaches_anthropic_as_the_models_maximum(fid):
    oai(fid).chat.completions.create(model=CLAUDE, messages=HI)
    assert last_body(fid, "anthropic-up")["max_tokens"] == 64000
    oai(fid).chat.completions.create(model=CUSTOM, messages=HI)
    assert last_body(fid, "anthropic-up")["max_tokens"] == 12345


def test_ollama_num_predict_minus_one_reaches_anthropic_as_the_maximum(fid):
    oll(fid).chat(model=CLAUDE, messages=HI, options={"num_predict": -1})
    assert last_body(fid, "anthropic-up")["max_tokens"] == 64000
    oll(fid).chat(model=CUSTOM, messages=HI, options={"num_predict": 77})
    assert last_body(fid, "anthropic-up")["max_tokens"] == 77


def test_gemini_without_limit_reaches_anthropic_as_the_maximum(fid):
    c = gem(fid)
    c.models.generate_content(model=CUSTOM, contents="hi")
    assert last_body(fid, "anthropic-up")["max_tokens"] == 12345


# --- item 4: max_completion_tokens to OpenAI ---


def test_openai_upstream_gets_max_completion_tokens(fid):
    ant(fid).messages.create(model=GPT, max_tokens=100, messages=HI)
    body = last_body(fid, "openai-up")
    assert body["max_completion_tokens"] == 100 and "max_tokens" not in body
    c = gem(fid)
    c.models.generate_content(
        model=GPT, contents="hi", config=types.GenerateContentConfig(max_output_tokens=33)
    )
    body = last_body(fid, "openai-up")
    assert body["max_completion_tokens"] == 33 and "max_tokens" not in body


def test_max_tokens_field_switch_sends_max_tokens(fid):
    ant(fid).messages.create(model=LOCAL, max_tokens=100, messages=HI)
    body = last_body(fid, "vllm-up")
    assert body["max_tokens"] == 100 and "max_completion_tokens" not in body


# --- item 8: is_error and strict ---


def tool_turns(is_error):
    return [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Paris"}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": "city not found", "is_error": is_error}
        ]},
    ]


TOOLS = [{"name": "weather", "description": "weather", "input_schema": WEATHER}]


def test_anthropic_is_error_is_marked_for_openai(fid):
    ant(fid).messages.create(model=GPT, max_tokens=50, messages=tool_turns(True), tools=TOOLS)
    tool = [m for m in last_body(fid, "openai-up")["messages"] if m["role"] == "tool"][0]
    assert tool["content"] == "[tool error] city not found"
    ant(fid).messages.create(model=GPT, max_tokens=50, messages=tool_turns(False), tools=TOOLS)
    tool = [m for m in last_body(fid, "openai-up")["messages"] if m["role"] == "tool"][0]
    assert tool["content"] == "city not found"


def test_anthropic_is_error_reaches_gemini_as_error_response(fid):
    ant(fid).messages.create(model=GEMINI, max_tokens=50, messages=tool_turns(True), tools=TOOLS)
    parts = [p for c in last_body(fid, "gemini-up")["contents"] for p in c["parts"]]
    fr = next(p["functionResponse"] for p in parts if "functionResponse" in p)
    assert fr["response"] == {"error": "city not found"}


def test_anthropic_is_error_is_marked_for_ollama(fid):
    ant(fid).messages.create(model=LLAMA, max_tokens=50, messages=tool_turns(True), tools=TOOLS)
    tool = [m for m in last_body(fid, "ollama-up")["messages"] if m["role"] == "tool"][0]
    assert tool["content"] == "[tool error] city not found"


def test_strict_tools_map_between_openai_and_anthropic(fid):
    tools = [{"type": "function", "function": {"name": "weather", "parameters": WEATHER, "strict": True}}]
    oai(fid).chat.completions.create(model=CLAUDE, messages=HI, tools=tools)
    assert last_body(fid, "anthropic-up")["tools"][0]["strict"] is True
    ant(fid).messages.create(model=GPT, max_tokens=50, messages=HI, tools=[dict(TOOLS[0], strict=True)])
    assert last_body(fid, "openai-up")["tools"][0]["function"]["strict"] is True
    ant(fid).messages.create(model=GPT, max_tokens=50, messages=HI, tools=TOOLS)
    assert "strict" not in last_body(fid, "openai-up")["tools"][0]["function"]


# --- item 9: system messages in the middle ---

MIDDLE = [
    {"role": "system", "content": "Be terse."},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello."},
    {"role": "system", "content": "From now on answer in French."},
    {"role": "user", "content": "Weather?"},
]


def test_mid_system_keeps_its_place_for_openai_and_ollama(fid):
    oll(fid).chat(model=GPT, messages=MIDDLE)
    roles = [(m["role"], m["content"]) for m in last_body(fid, "openai-up")["messages"]]
    assert roles[0] == ("system", "Be terse.")
    assert roles[3] == ("system", "From now on answer in French.")
    oai(fid).chat.completions.create(model=LLAMA, messages=MIDDLE)
    roles = [m["role"] for m in last_body(fid, "ollama-up")["messages"]]
    assert roles == ["system", "user", "assistant", "system", "user"]


def test_mid_system_becomes_a_marked_user_turn_for_anthropic_and_gemini(fid):
    oai(fid).chat.completions.create(model=CLAUDE, messages=MIDDLE)
    body = last_body(fid, "anthropic-up")
    assert body["system"] == "Be terse."
    last = body["messages"][-1]
    assert last["role"] == "user"
    texts = [b["text"] for b in last["content"]]
    assert texts == ["<system>\nFrom now on answer in French.\n</system>", "Weather?"]
    oai(fid).chat.completions.create(model=GEMINI, messages=MIDDLE)
    body = last_body(fid, "gemini-up")
    assert body["systemInstruction"]["parts"][0]["text"] == "Be terse."
    last = body["contents"][-1]
    assert last["role"] == "user"
    assert last["parts"][0]["text"] == "<system>\nFrom now on answer in French.\n</system>"


# --- item 12 (request side): user ---


def test_openai_user_reaches_anthropic_metadata(fid):
    oai(fid).chat.completions.create(model=CLAUDE, messages=HI, user="alice")
    assert last_body(fid, "anthropic-up")["metadata"] == {"user_id": "alice"}
    ant(fid).messages.create(model=GPT, max_tokens=20, messages=HI, metadata={"user_id": "bob"})
    assert last_body(fid, "openai-up")["user"] == "bob"
