"""The official `openai` SDK over HTTPS: llmux serves a certificate the test makes with `openssl`,
and the SDK verifies it against that CA (httpx `verify=`). HTTP/2 by ALPN is checked in
crates/llmux/tests/listener.rs (reqwest and curl); httpx would need the `h2` package for it."""

import ssl
import subprocess
from pathlib import Path

import httpx
import openai
import pytest

from conftest import Stack
from harness import wait_line


def _openssl(cwd, *args):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_certs(d: Path):
    """A CA and a server certificate for localhost / 127.0.0.1 signed by it: (ca, cert, key) paths."""
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl(d, "req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
             "-subj", "/CN=llmux sdk test CA", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    _openssl(d, "req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost")
    (d / "server.ext").write_text(
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"
    )
    _openssl(d, "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
             "-CAcreateserial", "-days", "2", "-out", "server.pem", "-extfile", "server.ext")
    return d / "ca.pem", d / "server.pem", d / "server.key"


@pytest.fixture(scope="module")
def tls_stack():
    s = Stack()
    try:
        node = s.mock("gpu-a", ["llama3:latest"], "--chunks", "4")
        ca, cert, key = make_certs(Path(s.dir.name))
        cfg = Path(s.dir.name) / "tls.toml"
        cfg.write_text(
            f"""
[server]
listen = "127.0.0.1:0"
[server.tls]
cert = "{cert}"
key = "{key}"
[[upstreams]]
name = "gpu-a"
kind = "ollama"
url = "{node}"
"""
        )
        gw = s.spawn("serve", "--config", str(cfg))
        s.url = wait_line(gw, r"llmux listening on (https://\S+)").group(1)
        s.ca = str(ca)
        yield s
    finally:
        s.close()


def test_openai_sdk_over_https_with_the_test_ca(tls_stack):
    # The CA the test made, and nothing else: the system's trust store does not know it.
    http = httpx.Client(verify=ssl.create_default_context(cafile=tls_stack.ca))
    client = openai.OpenAI(base_url=f"{tls_stack.url}/v1", api_key="unused", max_retries=0, http_client=http)
    r = client.chat.completions.create(model="llama3", messages=[{"role": "user", "content": "hello"}])
    assert r.choices[0].message.content
    text = ""
    for chunk in client.chat.completions.create(
        model="llama3", messages=[{"role": "user", "content": "hello"}], stream=True
    ):
        for c in chunk.choices:
            text += c.delta.content or ""
    assert text.strip()
    assert [m.id for m in client.models.list()] == ["llama3:latest"]


def test_a_client_without_the_ca_is_refused(tls_stack):
    client = openai.OpenAI(base_url=f"{tls_stack.url}/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.APIConnectionError):
        client.models.list()
