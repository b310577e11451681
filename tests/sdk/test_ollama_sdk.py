"""The official `ollama` Python library against llmux, unchanged: llmux looks like one Ollama server holding every node's models."""

import ollama
import pytest

from conftest import set_faults


@pytest.fixture()
def client(stack):
    return ollama.Client(host=stack.url)


def test_chat(client):
    r = client.chat(model="llama3", messages=[{"role": "user", "content": "hello"}])
    assert r.message.role == "assistant"
    assert r.message.content
    assert r.done and r.eval_count > 0


def test_chat_stream(client):
    parts = list(client.chat(model="mistral", messages=[{"role": "user", "content": "hi"}], stream=True))
    assert len(parts) > 2
    assert parts[-1].done
    assert "".join(p.message.content for p in parts).strip()


def test_generate(client):
    r = client.generate(model="llama3", prompt="hi")
    assert r.response and r.done
    parts = list(client.generate(model="llama3:latest", prompt="hi", stream=True))
    assert parts[-1].done


def test_embed(client):
    r = client.embed(model="nomic-embed-text", input=["a", "b"])
    assert len(r.embeddings) == 2
    r = client.embeddings(model="nomic-embed-text", prompt="a")
    assert len(r.embedding) > 0


def test_list_is_the_union_of_nodes(client):
    names = {m.model for m in client.list().models}
    assert {"llama3:latest", "mistral:latest", "nomic-embed-text:latest", "flaky-model:latest"} <= names
    # Models of the OpenAI-kind upstream are reachable too (translated), so they are listed.
    assert "gpt-4o-mini" in names


def test_ps_and_show(client):
    client.chat(model="llama3", messages=[{"role": "user", "content": "x"}])
    assert isinstance(client.ps().models, list)
    info = client.show("mistral")
    assert info.details is not None


def test_unknown_model(client):
    with pytest.raises(ollama.ResponseError) as e:
        client.chat(model="no-such-model", messages=[{"role": "user", "content": "x"}])
    assert e.value.status_code == 404


def test_dropped_stream_raises(client, stack):
    set_faults(stack.flaky, drop_after=3)
    try:
        got = 0
        with pytest.raises(ollama.ResponseError):
            for _ in client.chat(model="flaky-model", messages=[{"role": "user", "content": "x"}], stream=True):
                got += 1
        assert got >= 1
    finally:
        set_faults(stack.flaky)
