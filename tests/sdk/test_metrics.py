"""`/metrics` is valid Prometheus text: the reference parser reads every family."""

import urllib.request

import openai
from prometheus_client.parser import text_string_to_metric_families


def test_metrics_parse_with_the_prometheus_parser(stack):
    c = openai.OpenAI(base_url=f"{stack.url}/v1", api_key="unused", max_retries=0)
    c.chat.completions.create(model="llama3", messages=[{"role": "user", "content": "hi"}])
    text = urllib.request.urlopen(f"{stack.url}/metrics").read().decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    for name in ["llmux_calls", "llmux_call_duration_seconds", "llmux_ttft_seconds", "llmux_upstream_up",
                 "llmux_upstream_in_flight", "llmux_breaker_state", "llmux_provider_keys", "llmux_rejections"]:
        assert name in families, sorted(families)
    calls = sum(s.value for s in families["llmux_calls"].samples if s.labels.get("outcome") == "ok")
    assert calls >= 1
    hist = families["llmux_call_duration_seconds"]
    assert hist.type == "histogram"
    assert any(s.name.endswith("_bucket") and s.labels["le"] == "+Inf" for s in hist.samples)
