"""The official `openai` Python SDK against llmux, unchanged: Ollama nodes and an OpenAI upstream behind one base URL."""

import openai
import pytest

from conftest import set_faults


@pytest.fixture()
def client(stack):
    return openai.OpenAI(base_url=f"{stack.url}/v1", api_key="unused", max_retries=0)


@pytest.mark.parametrize("model", ["llama3", "mistral", "gpt-4o-mini", "gpu-a/llama3"])
def test_chat(client, model):
    r = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hello"}])
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content
    assert r.choices[0].finish_reason == "stop"
    assert r.usage.completion_tokens > 0


@pytest.mark.parametrize("model", ["llama3", "gpt-4o-mini"])
def test_chat_stream(client, model):
    stream = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "hello"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    text, finish, usage = "", None, None
    for chunk in stream:
        if chunk.usage:
            usage = chunk.usage
        for choice in chunk.choices:
            text += choice.delta.content or ""
            finish = choice.finish_reason or finish
    assert text.strip()
    assert finish == "stop"
    assert usage is not None and usage.completion_tokens > 0


def test_headers_name_the_upstream(client):
    raw = client.chat.completions.with_raw_response.create(
        model="mistral", messages=[{"role": "user", "content": "hi"}]
    )
    assert raw.headers["x-llmux-upstream"] == "gpu-b"
    assert raw.headers["x-request-id"]


def test_tools(client):
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {"type": "object", "properties": {"location": {"type": "string"}}},
            },
        }
    ]
    r = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "weather?"}], tools=tools
    )
    call = r.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert r.choices[0].finish_reason == "tool_calls"


def test_completions(client):
    r = client.completions.create(model="llama3", prompt="say hi")
    assert r.choices[0].text


def test_embeddings_default_base64(client):
    # The SDK asks for base64 by default and decodes it; the float form must match.
    r = client.embeddings.create(model="text-embedding-3-small", input=["a", "b"])
    assert len(r.data) == 2 and len(r.data[0].embedding) > 0
    f = client.embeddings.create(model="text-embedding-3-small", input=["a", "b"], encoding_format="float")
    assert [round(x, 5) for x in f.data[0].embedding] == [round(x, 5) for x in r.data[0].embedding]


def test_models_list(client):
    ids = {m.id for m in client.models.list()}
    assert {"llama3:latest", "mistral:latest", "gpt-4o-mini", "text-embedding-3-small"} <= ids


def test_unknown_model_is_not_found(client):
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])


def test_bad_request(client):
    with pytest.raises(openai.BadRequestError):
        client.post("/chat/completions", body={"messages": []}, cast_to=object)


def test_dropped_stream_raises_not_a_normal_finish(client, stack):
    set_faults(stack.flaky, drop_after=3)
    try:
        stream = client.chat.completions.create(
            model="flaky-model", messages=[{"role": "user", "content": "x"}], stream=True
        )
        got = 0
        with pytest.raises(openai.APIError):
            for _ in stream:
                got += 1
        assert got >= 1
    finally:
        set_faults(stack.flaky)
