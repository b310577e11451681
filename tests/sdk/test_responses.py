"""The official `openai` SDK's Responses API (`client.responses.create`), and the other routes
clients call besides chat, against llmux in front of one upstream of every kind."""

import anthropic
import openai
import pytest

KINDS = {
    "ollama": "llama3",
    "openai": "gpt-4o-mini",
    "anthropic": "claude-sonnet-4",
    "gemini": "gemini-2.0-flash",
    "azure": "gpt-4o-azure",
}


@pytest.fixture()
def client(matrix):
    return openai.OpenAI(base_url=f"{matrix.url}/v1", api_key="unused", max_retries=0)


@pytest.mark.parametrize("kind", list(KINDS))
def test_responses_create(client, kind):
    raw = client.responses.with_raw_response.create(
        model=KINDS[kind], input="hello there", instructions="be brief", max_output_tokens=100
    )
    assert raw.headers["x-llmux-upstream"] == f"{kind}-up"
    r = raw.parse()
    assert r.object == "response"
    assert r.status == "completed"
    assert r.output[0].type == "message"
    assert r.output_text.startswith(f"[{kind}-up]")
    assert r.usage.input_tokens > 0 and r.usage.output_tokens > 0
    assert r.usage.total_tokens == r.usage.input_tokens + r.usage.output_tokens


@pytest.mark.parametrize("kind", list(KINDS))
def test_responses_stream(client, kind):
    stream = client.responses.create(
        model=KINDS[kind],
        input=[{"role": "user", "content": [{"type": "input_text", "text": "hello"}]}],
        stream=True,
    )
    types, text, final = [], "", None
    for event in stream:
        types.append(event.type)
        if event.type == "response.output_text.delta":
            text += event.delta
        if event.type == "response.completed":
            final = event.response
    assert types[0] == "response.created"
    assert types[-1] == "response.completed"
    for t in ["response.output_item.added", "response.content_part.added", "response.output_text.done", "response.output_item.done"]:
        assert t in types, (t, types)
    assert text.startswith(f"[{kind}-up]")
    assert final.output_text == text
    assert final.usage.output_tokens > 0


@pytest.mark.parametrize("kind", ["ollama", "openai", "anthropic", "gemini"])
def test_responses_stream_helper_and_tools(client, kind):
    tools = [
        {
            "type": "function",
            "name": "get_weather",
            "parameters": {"type": "object", "properties": {"location": {"type": "string"}}},
        }
    ]
    with client.responses.stream(model=KINDS[kind], input="weather in Paris?", tools=tools) as stream:
        final = stream.get_final_response()
    calls = [o for o in final.output if o.type == "function_call"]
    assert calls and calls[0].name == "get_weather"
    assert '"Paris"' in calls[0].arguments
    r = client.responses.create(model=KINDS[kind], input="weather in Paris?", tools=tools)
    calls = [o for o in r.output if o.type == "function_call"]
    assert calls and calls[0].call_id


def test_untranslatable_field_is_a_400_naming_it(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(model=KINDS["anthropic"], input="x", previous_response_id="resp_1")
    assert "previous_response_id" in str(e.value)


def test_models_retrieve_matches_names_like_chat(client):
    assert client.models.retrieve("llama3").id == "llama3:latest"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")


@pytest.mark.parametrize("kind", ["anthropic", "openai", "ollama"])
def test_anthropic_count_tokens(matrix, kind):
    c = anthropic.Anthropic(base_url=matrix.url, api_key="unused", max_retries=0)
    r = c.messages.count_tokens(
        model=KINDS[kind], messages=[{"role": "user", "content": "how is the weather in Paris today?"}]
    )
    assert r.input_tokens > 0


def test_anthropic_models_retrieve(matrix):
    c = anthropic.Anthropic(base_url=matrix.url, api_key="unused", max_retries=0)
    m = c.models.retrieve("claude-sonnet-4")
    assert m.id == "claude-sonnet-4" and m.type == "model"
    with pytest.raises(anthropic.NotFoundError):
        c.models.retrieve("no-such-model")
