"""Conformance matrix: each official SDK (OpenAI, Anthropic, Ollama, Gemini) against each upstream kind
(Ollama, OpenAI, Anthropic, Gemini, Azure) through llmux — plain, streaming and tool calls."""

import json
import time

import pytest

import anthropic
import ollama
import openai
from google import genai
from google.genai import types

# model served by each upstream kind in the matrix stack (see conftest.matrix)
UPSTREAMS = {
    "ollama": "llama3",
    "openai": "gpt-4o-mini",
    "anthropic": "claude-sonnet-4",
    "gemini": "gemini-2.0-flash",
    "azure": "gpt-4o-azure",
}
INGRESS = ["openai", "anthropic", "ollama", "gemini"]
MODES = ["plain", "stream", "tools"]

WEATHER_SCHEMA = {
    "type": "object",
    "properties": {"location": {"type": "string"}},
    "required": ["location"],
}
MESSAGES = [{"role": "user", "content": "What is the weather in Paris?"}]


def call_openai(url, model, mode):
    c = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
    if mode == "plain":
        r = c.chat.completions.create(model=model, messages=MESSAGES)
        return r.choices[0].message.content, None
    if mode == "stream":
        parts = []
        for chunk in c.chat.completions.create(model=model, messages=MESSAGES, stream=True):
            for ch in chunk.choices:
                if ch.delta.content:
                    parts.append(ch.delta.content)
        return "".join(parts), len(parts)
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": WEATHER_SCHEMA}}]
    r = c.chat.completions.create(model=model, messages=MESSAGES, tools=tools)
    call = r.choices[0].message.tool_calls[0]
    return call.function.name, json.loads(call.function.arguments)


def call_anthropic(url, model, mode):
    c = anthropic.Anthropic(base_url=url, api_key="unused", max_retries=0)
    if mode == "plain":
        r = c.messages.create(model=model, max_tokens=256, messages=MESSAGES)
        return "".join(b.text for b in r.content if b.type == "text"), None
    if mode == "stream":
        parts = []
        with c.messages.stream(model=model, max_tokens=256, messages=MESSAGES) as s:
            for text in s.text_stream:
                parts.append(text)
            final = s.get_final_message()
        assert final.stop_reason == "end_turn"
        return "".join(parts), len(parts)
    tools = [{"name": "get_weather", "description": "weather", "input_schema": WEATHER_SCHEMA}]
    r = c.messages.create(model=model, max_tokens=256, messages=MESSAGES, tools=tools)
    block = next(b for b in r.content if b.type == "tool_use")
    assert r.stop_reason == "tool_use"
    return block.name, block.input


def call_ollama(url, model, mode):
    c = ollama.Client(host=url)
    if mode == "plain":
        r = c.chat(model=model, messages=MESSAGES)
        return r.message.content, None
    if mode == "stream":
        parts = [p.message.content for p in c.chat(model=model, messages=MESSAGES, stream=True)]
        return "".join(parts), len([p for p in parts if p])
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": WEATHER_SCHEMA}}]
    r = c.chat(model=model, messages=MESSAGES, tools=tools)
    call = r.message.tool_calls[0]
    return call.function.name, dict(call.function.arguments)


def call_gemini(url, model, mode):
    c = genai.Client(api_key="unused", http_options=types.HttpOptions(base_url=url, api_version="v1beta"))
    prompt = MESSAGES[0]["content"]
    if mode == "plain":
        r = c.models.generate_content(model=model, contents=prompt)
        return r.text, None
    if mode == "stream":
        parts = [ch.text for ch in c.models.generate_content_stream(model=model, contents=prompt) if ch.text]
        return "".join(parts), len(parts)
    decl = types.FunctionDeclaration(name="get_weather", description="weather", parameters_json_schema=WEATHER_SCHEMA)
    cfg = types.GenerateContentConfig(tools=[types.Tool(function_declarations=[decl])])
    r = c.models.generate_content(model=model, contents=prompt, config=cfg)
    fc = r.function_calls[0]
    return fc.name, dict(fc.args)


CALLERS = {"openai": call_openai, "anthropic": call_anthropic, "ollama": call_ollama, "gemini": call_gemini}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("upstream", list(UPSTREAMS))
@pytest.mark.parametrize("ingress", INGRESS)
def test_matrix(matrix, compat, ingress, upstream, mode):
    key = (ingress, upstream, mode)
    compat[key] = "fail"
    a, b = CALLERS[ingress](matrix.url, UPSTREAMS[upstream], mode)
    if mode == "tools":
        assert a == "get_weather"
        assert b.get("location") == "Paris"
    else:
        # The mock's first token names the node that answered: the call reached the right upstream.
        assert f"[{upstream}-up]" in a, a
        assert len(a.split()) >= 3
        if mode == "stream":
            assert b >= 3, f"only {b} streamed pieces"
    compat[key] = "pass"


@pytest.mark.parametrize(
    "ingress,upstream", [("anthropic", "openai"), ("openai", "anthropic"), ("gemini", "ollama"), ("ollama", "gemini")]
)
def test_translated_streams_arrive_as_produced(matrix, ingress, upstream):
    """Tokens reach the client as the upstream produces them: the first piece long before the last."""
    model = "slow-" + UPSTREAMS[upstream]
    times = []
    start = time.monotonic()
    if ingress == "anthropic":
        c = anthropic.Anthropic(base_url=matrix.url, api_key="unused", max_retries=0)
        with c.messages.stream(model=model, max_tokens=256, messages=MESSAGES) as s:
            for _ in s.text_stream:
                times.append(time.monotonic() - start)
    elif ingress == "openai":
        c = openai.OpenAI(base_url=f"{matrix.url}/v1", api_key="unused", max_retries=0)
        for chunk in c.chat.completions.create(model=model, messages=MESSAGES, stream=True):
            if chunk.choices and chunk.choices[0].delta.content:
                times.append(time.monotonic() - start)
    elif ingress == "gemini":
        c = genai.Client(api_key="unused", http_options=types.HttpOptions(base_url=matrix.url, api_version="v1beta"))
        for ch in c.models.generate_content_stream(model=model, contents="hi"):
            if ch.text:
                times.append(time.monotonic() - start)
    else:
        c = ollama.Client(host=matrix.url)
        for p in c.chat(model=model, messages=MESSAGES, stream=True):
            if p.message.content:
                times.append(time.monotonic() - start)
    # The slow mock sends 8 tokens 150 ms apart: about 1.05 s from first to last.
    assert len(times) >= 6, times
    assert times[-1] - times[0] > 0.8, times
    assert times[0] < times[-1] / 2, times


@pytest.mark.parametrize("ingress", ["openai", "anthropic"])
def test_tool_call_streams_intact(matrix, ingress):
    if ingress == "anthropic":
        c = anthropic.Anthropic(base_url=matrix.url, api_key="unused", max_retries=0)
        tools = [{"name": "get_weather", "description": "weather", "input_schema": WEATHER_SCHEMA}]
        with c.messages.stream(model="gpt-4o-mini", max_tokens=256, messages=MESSAGES, tools=tools) as s:
            final = s.get_final_message()
        block = next(b for b in final.content if b.type == "tool_use")
        assert block.name == "get_weather" and block.input["location"] == "Paris"
    else:
        c = openai.OpenAI(base_url=f"{matrix.url}/v1", api_key="unused", max_retries=0)
        tools = [{"type": "function", "function": {"name": "get_weather", "parameters": WEATHER_SCHEMA}}]
        name, args = None, ""
        for chunk in c.chat.completions.create(model="claude-sonnet-4", messages=MESSAGES, tools=tools, stream=True):
            for ch in chunk.choices:
                for tc in ch.delta.tool_calls or []:
                    name = tc.function.name or name
                    args += tc.function.arguments or ""
        assert name == "get_weather"
        assert json.loads(args)["location"] == "Paris"


def test_inexpressible_field_is_a_clear_400(matrix):
    c = openai.OpenAI(base_url=f"{matrix.url}/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.BadRequestError) as e:
        c.chat.completions.create(model="claude-sonnet-4", messages=MESSAGES, n=2)
    assert "n" in str(e.value)
