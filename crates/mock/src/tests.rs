//! End-to-end tests of the mock over real sockets, with a tiny hand-written HTTP/1.1 client.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::{Faults, MockConfig, MockServer};

struct Resp {
    status: u16,
    head: String,
    body: Vec<u8>,
    /// False when a chunked body ended without its terminating chunk (connection cut).
    complete: bool,
}

impl Resp {
    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
        })
    }
    fn text(&self) -> String {
        String::from_utf8(self.body.clone()).unwrap()
    }
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("bad json ({e}): {}", self.text()))
    }
    /// SSE `data:` payloads in order.
    fn events(&self) -> Vec<String> {
        self.text()
            .split("\n\n")
            .filter_map(|e| e.strip_prefix("data: "))
            .map(str::to_owned)
            .collect()
    }
    fn lines(&self) -> Vec<Value> {
        self.text()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

/// Sends one request with `Connection: close` and returns the socket for reading.
async fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&Value>,
) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let body = body.map(Value::to_string).unwrap_or_default();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: mock\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !body.is_empty() {
        req.push_str("Content-Type: application/json\r\n");
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(&body);
    s.write_all(req.as_bytes()).await.unwrap();
    s
}

/// Reads everything until EOF or a reset (keeping what arrived), with a safety timeout.
async fn read_all(s: &mut TcpStream) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        match tokio::time::timeout(Duration::from_secs(10), s.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return buf,
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => panic!("response did not end: {}", String::from_utf8_lossy(&buf)),
        }
    }
}

fn parse(raw: &[u8]) -> Resp {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end: {}", String::from_utf8_lossy(raw)));
    let head = String::from_utf8(raw[..split].to_vec()).unwrap();
    let status = head[9..12].parse().unwrap();
    let rest = &raw[split + 4..];
    let mut resp = Resp {
        status,
        head,
        body: Vec::new(),
        complete: true,
    };
    if resp
        .header("transfer-encoding")
        .is_some_and(|v| v.contains("chunked"))
    {
        let (body, complete) = dechunk(rest);
        resp.body = body;
        resp.complete = complete;
    } else {
        resp.body = rest.to_vec();
    }
    resp
}

fn dechunk(mut rest: &[u8]) -> (Vec<u8>, bool) {
    let mut body = Vec::new();
    loop {
        let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") else {
            return (body, false);
        };
        let size_str = std::str::from_utf8(&rest[..eol]).unwrap();
        let size = usize::from_str_radix(size_str.trim(), 16).unwrap();
        rest = &rest[eol + 2..];
        if size == 0 {
            return (body, true);
        }
        if rest.len() < size {
            body.extend_from_slice(rest);
            return (body, false);
        }
        body.extend_from_slice(&rest[..size]);
        rest = rest.get(size + 2..).unwrap_or(&[]);
    }
}

async fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> Resp {
    let mut s = send(addr, method, path, headers, body.as_ref()).await;
    parse(&read_all(&mut s).await)
}

async fn post(addr: SocketAddr, path: &str, body: Value) -> Resp {
    call(addr, "POST", path, &[], Some(body)).await
}

async fn get(addr: SocketAddr, path: &str) -> Resp {
    call(addr, "GET", path, &[], None).await
}

async fn start(cfg: MockConfig) -> MockServer {
    MockServer::start(cfg).await.unwrap()
}

fn named(name: &str, chunks: usize) -> MockConfig {
    MockConfig {
        name: name.into(),
        chunks,
        ..MockConfig::default()
    }
}

fn b64decode(s: &str) -> Vec<u8> {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let vals: Vec<u32> = s
        .bytes()
        .filter(|b| *b != b'=')
        .map(|b| A.iter().position(|a| *a == b).unwrap() as u32)
        .collect();
    let mut out = Vec::new();
    for c in vals.chunks(4) {
        let n = c
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, v)| n | v << (18 - 6 * i));
        out.extend_from_slice(&n.to_be_bytes()[1..c.len()]);
    }
    out
}

#[tokio::test]
async fn root_version_and_tags() {
    let m = start(MockConfig {
        name: "n1".into(),
        models: vec!["llama3:latest".into(), "qwen2.5:7b".into()],
        ..MockConfig::default()
    })
    .await;
    let r = get(m.addr(), "/").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "Ollama is running");
    assert_eq!(r.header("x-mock-node").as_deref(), Some("n1"));
    let r = call(m.addr(), "HEAD", "/", &[], None).await;
    assert_eq!(r.status, 200);

    let r = get(m.addr(), "/api/version").await;
    assert_eq!(r.json(), json!({"version": "0.12.6"}));

    let r = get(m.addr(), "/api/tags").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-mock-node").as_deref(), Some("n1"));
    let v = r.json();
    let models = v["models"].as_array().unwrap();
    assert_eq!(models.len(), 2);
    assert_eq!(models[0]["name"], "llama3:latest");
    assert_eq!(models[0]["model"], "llama3:latest");
    assert_eq!(models[0]["size"], 4_661_224_676u64);
    assert_eq!(models[0]["digest"].as_str().unwrap().len(), 64);
    assert!(models[0]["modified_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(models[0]["details"]["format"], "gguf");
    assert_eq!(models[0]["details"]["family"], "llama");
    assert_eq!(models[1]["details"]["family"], "qwen");

    let r = get(m.addr(), "/v1/models").await;
    let v = r.json();
    assert_eq!(v["object"], "list");
    assert_eq!(v["data"][1]["id"], "qwen2.5:7b");
    assert_eq!(v["data"][0]["object"], "model");
    assert_eq!(v["data"][0]["owned_by"], "n1");

    m.set_models(vec!["phi3:mini".into()]);
    let v = get(m.addr(), "/api/tags").await.json();
    assert_eq!(v["models"].as_array().unwrap().len(), 1);
    assert_eq!(v["models"][0]["name"], "phi3:mini");
    let r = post(
        m.addr(),
        "/api/chat",
        json!({"model": "llama3", "messages": []}),
    )
    .await;
    assert_eq!(r.status, 404);
    let s = m.stats();
    assert_eq!(s.by_path["/api/tags"], 2);
    assert_eq!(s.requests, 7);
}

#[tokio::test]
async fn ollama_chat_streams_ndjson_lines() {
    let m = start(named("n1", 4)).await;
    let body = json!({"model": "llama3", "messages": [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hello there world"}]});
    let r = post(m.addr(), "/api/chat", body.clone()).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/x-ndjson")
    );
    assert!(r.complete);
    let lines = r.lines();
    assert_eq!(lines.len(), 5);
    let mut text = String::new();
    for l in &lines[..4] {
        assert_eq!(l["done"], false);
        assert_eq!(l["model"], "llama3");
        assert_eq!(l["message"]["role"], "assistant");
        assert!(l["created_at"].as_str().unwrap().ends_with('Z'));
        text.push_str(l["message"]["content"].as_str().unwrap());
    }
    assert_eq!(text, "[n1] tok1 tok2 tok3 ");
    let last = &lines[4];
    assert_eq!(last["done"], true);
    assert_eq!(last["done_reason"], "stop");
    assert_eq!(last["message"]["content"], "");
    assert_eq!(last["prompt_eval_count"], 5);
    assert_eq!(last["eval_count"], 4);
    for k in [
        "total_duration",
        "load_duration",
        "prompt_eval_duration",
        "eval_duration",
    ] {
        assert!(last[k].as_u64().unwrap() > 0, "{k}");
    }
    let s = m.stats();
    assert_eq!(s.generations, 1);
    assert_eq!(s.last_body, Some(body));
    assert_eq!(s.in_flight, 0);
}

#[tokio::test]
async fn ollama_non_stream_chat_and_generate() {
    let m = start(named("n2", 3)).await;
    let r = post(
        m.addr(),
        "/api/chat",
        json!({"model": "llama3:latest", "stream": false,
               "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(r
        .header("content-type")
        .unwrap()
        .starts_with("application/json"));
    let v = r.json();
    assert_eq!(v["message"]["content"], "[n2] tok1 tok2 ");
    assert_eq!(v["done"], true);
    assert_eq!(v["done_reason"], "stop");
    assert_eq!(v["prompt_eval_count"], 1);
    assert_eq!(v["eval_count"], 3);

    let r = post(
        m.addr(),
        "/api/generate",
        json!({"model": "llama3", "prompt": "why is the sky blue", "stream": false, "options": {"num_predict": 2}}),
    )
    .await;
    let v = r.json();
    assert_eq!(v["response"], "[n2] tok1 ");
    assert_eq!(v["done_reason"], "length");
    assert_eq!(v["context"], json!([1, 2, 3]));
    assert_eq!(v["prompt_eval_count"], 5);
    assert_eq!(v["eval_count"], 2);

    let r = post(
        m.addr(),
        "/api/generate",
        json!({"model": "llama3", "prompt": "x"}),
    )
    .await;
    let lines = r.lines();
    assert_eq!(lines.len(), 4);
    assert_eq!(lines[1]["response"], "tok1 ");
    assert_eq!(lines[3]["context"], json!([1, 2, 3]));

    let v = post(m.addr(), "/api/generate", json!({"model": "llama3"}))
        .await
        .json();
    assert_eq!(v["done"], true);
    assert_eq!(v["done_reason"], "load");

    // The used model now shows as loaded, under its configured name.
    let v = get(m.addr(), "/api/ps").await.json();
    assert_eq!(v["models"][0]["name"], "llama3:latest");
    assert!(v["models"][0]["expires_at"]
        .as_str()
        .unwrap()
        .ends_with('Z'));
    assert_eq!(v["models"][0]["context_length"], 4096);

    let v = post(m.addr(), "/api/show", json!({"name": "llama3"}))
        .await
        .json();
    assert_eq!(v["capabilities"], json!(["completion"]));
    assert_eq!(v["details"]["format"], "gguf");
    assert!(v["model_info"].is_object());
}

#[tokio::test]
async fn ps_lists_configured_loaded_models() {
    let m = start(MockConfig {
        models: vec!["a:1".into(), "b:2".into()],
        loaded: vec!["b:2".into()],
        ..MockConfig::default()
    })
    .await;
    let v = get(m.addr(), "/api/ps").await.json();
    assert_eq!(v["models"].as_array().unwrap().len(), 1);
    assert_eq!(v["models"][0]["model"], "b:2");
}

#[tokio::test]
async fn openai_stream_ends_with_done_and_usage_only_when_asked() {
    let m = start(named("n3", 3)).await;
    let req = json!({"model": "llama3", "stream": true,
                     "messages": [{"role": "user", "content": "one two"}]});
    let r = post(m.addr(), "/v1/chat/completions", req.clone()).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("text/event-stream")
    );
    let ev = r.events();
    // role chunk + 3 tokens + finish + [DONE]
    assert_eq!(ev.len(), 6, "{ev:?}");
    assert_eq!(ev.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = ev[..5]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    let first = &chunks[0];
    assert_eq!(first["object"], "chat.completion.chunk");
    assert!(first["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(first["system_fingerprint"], "fp_mock");
    assert_eq!(first["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(first["choices"][0]["delta"]["content"], "");
    let text: String = chunks[1..4]
        .iter()
        .map(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(text, "[n3] tok1 tok2 ");
    assert_eq!(chunks[4]["choices"][0]["delta"], json!({}));
    assert_eq!(chunks[4]["choices"][0]["finish_reason"], "stop");
    assert!(chunks.iter().all(|c| c.get("usage").is_none()));
    assert!(chunks.iter().all(|c| c["id"] == first["id"]));

    let mut req = req;
    req["stream_options"] = json!({"include_usage": true});
    let ev = post(m.addr(), "/v1/chat/completions", req).await.events();
    assert_eq!(ev.len(), 7);
    assert_eq!(ev[6], "[DONE]");
    let usage: Value = serde_json::from_str(&ev[5]).unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(
        usage["usage"],
        json!({"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5})
    );
    let before: Value = serde_json::from_str(&ev[4]).unwrap();
    assert_eq!(before["usage"], Value::Null);
}

#[tokio::test]
async fn openai_non_stream_chat_and_legacy_completions() {
    let m = start(named("n4", 2)).await;
    let v = post(
        m.addr(),
        "/v1/chat/completions",
        json!({"model": "llama3:latest", "messages": [{"role": "user", "content": [{"type": "text", "text": "a b c"}]}]}),
    )
    .await
    .json();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["model"], "llama3:latest");
    assert_eq!(
        v["choices"][0]["message"],
        json!({"role": "assistant", "content": "[n4] tok1 ", "refusal": null})
    );
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(v["choices"][0]["logprobs"], Value::Null);
    assert_eq!(
        v["usage"],
        json!({"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5})
    );

    let v = post(
        m.addr(),
        "/v1/completions",
        json!({"model": "llama3", "prompt": "say hi"}),
    )
    .await
    .json();
    assert_eq!(v["object"], "text_completion");
    assert!(v["id"].as_str().unwrap().starts_with("cmpl-"));
    assert_eq!(v["choices"][0]["text"], "[n4] tok1 ");
    assert_eq!(v["usage"]["prompt_tokens"], 2);

    let r = post(
        m.addr(),
        "/v1/completions",
        json!({"model": "llama3", "prompt": "say hi", "stream": true, "stream_options": {"include_usage": true}}),
    )
    .await;
    let ev = r.events();
    assert_eq!(ev.len(), 5, "{ev:?}");
    let c: Value = serde_json::from_str(&ev[1]).unwrap();
    assert_eq!(c["choices"][0]["text"], "tok1 ");
    let fin: Value = serde_json::from_str(&ev[2]).unwrap();
    assert_eq!(fin["choices"][0]["finish_reason"], "stop");
    let usage: Value = serde_json::from_str(&ev[3]).unwrap();
    assert_eq!(usage["usage"]["completion_tokens"], 2);
    assert_eq!(ev[4], "[DONE]");
}

#[tokio::test]
async fn tools_reply_with_tool_calls() {
    let m = start(named("n5", 4)).await;
    let tools = json!([{"type": "function", "function": {"name": "get_weather",
        "parameters": {"type": "object", "properties": {"location": {"type": "string"}}}}}]);
    let req = json!({"model": "llama3", "tools": tools,
                     "messages": [{"role": "user", "content": "weather in Paris?"}]});

    let v = post(m.addr(), "/v1/chat/completions", req.clone())
        .await
        .json();
    let choice = &v["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert_eq!(choice["message"]["content"], Value::Null);
    let tc = &choice["message"]["tool_calls"][0];
    assert!(tc["id"].as_str().unwrap().starts_with("call_"));
    assert_eq!(tc["type"], "function");
    assert_eq!(tc["function"]["name"], "get_weather");
    let args: Value = serde_json::from_str(tc["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(args, json!({"location": "Paris"}));

    let mut sreq = req.clone();
    sreq["stream"] = json!(true);
    let ev = post(m.addr(), "/v1/chat/completions", sreq).await.events();
    assert_eq!(ev.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = ev[..ev.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    let head = &chunks[0]["choices"][0]["delta"]["tool_calls"][0];
    assert_eq!(head["index"], 0);
    assert!(head["id"].as_str().unwrap().starts_with("call_"));
    assert_eq!(head["function"]["name"], "get_weather");
    assert_eq!(head["function"]["arguments"], "");
    let args: String = chunks[1..chunks.len() - 1]
        .iter()
        .map(|c| {
            let tc = &c["choices"][0]["delta"]["tool_calls"][0];
            assert!(tc.get("id").is_none());
            tc["function"]["arguments"].as_str().unwrap().to_owned()
        })
        .collect();
    assert!(chunks.len() > 3);
    assert_eq!(
        serde_json::from_str::<Value>(&args).unwrap(),
        json!({"location": "Paris"})
    );
    assert_eq!(
        chunks.last().unwrap()["choices"][0]["finish_reason"],
        "tool_calls"
    );

    let mut oreq = req.clone();
    oreq["stream"] = json!(false);
    let v = post(m.addr(), "/api/chat", oreq).await.json();
    assert_eq!(v["done_reason"], "stop");
    assert_eq!(v["message"]["content"], "");
    assert_eq!(
        v["message"]["tool_calls"],
        json!([{"function": {"name": "get_weather", "arguments": {"location": "Paris"}}}])
    );
    let lines = post(m.addr(), "/api/chat", req).await.lines();
    assert_eq!(lines.len(), 2);
    assert_eq!(
        lines[0]["message"]["tool_calls"][0]["function"]["name"],
        "get_weather"
    );
    assert_eq!(lines[1]["done"], true);
}

#[tokio::test]
async fn embeddings_float_base64_and_ollama_agree() {
    let m = start(MockConfig {
        dims: 5,
        ..MockConfig::default()
    })
    .await;
    let float = post(
        m.addr(),
        "/v1/embeddings",
        json!({"model": "llama3", "input": ["hello world", "bye"]}),
    )
    .await
    .json();
    assert_eq!(float["object"], "list");
    assert_eq!(float["model"], "llama3");
    assert_eq!(
        float["usage"],
        json!({"prompt_tokens": 3, "total_tokens": 3})
    );
    assert_eq!(float["data"][1]["index"], 1);
    assert_eq!(float["data"][1]["object"], "embedding");
    let b64 = post(
        m.addr(),
        "/v1/embeddings",
        json!({"model": "llama3", "input": ["hello world", "bye"], "encoding_format": "base64"}),
    )
    .await
    .json();
    for i in 0..2 {
        let floats: Vec<f32> = float["data"][i]["embedding"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect();
        assert_eq!(floats.len(), 5);
        let bytes = b64decode(b64["data"][i]["embedding"].as_str().unwrap());
        let decoded: Vec<f32> = bytes
            .chunks(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(decoded, floats);
    }
    let tokens = post(
        m.addr(),
        "/v1/embeddings",
        json!({"model": "llama3", "input": [[1, 2], [3]]}),
    )
    .await
    .json();
    assert_eq!(tokens["data"].as_array().unwrap().len(), 2);
    assert_eq!(tokens["usage"]["prompt_tokens"], 3);

    let v = post(
        m.addr(),
        "/api/embed",
        json!({"model": "llama3", "input": "hello world"}),
    )
    .await
    .json();
    assert_eq!(v["embeddings"][0], float["data"][0]["embedding"]);
    assert_eq!(v["prompt_eval_count"], 2);
    assert!(v["total_duration"].as_u64().unwrap() > 0);
    let v = post(
        m.addr(),
        "/api/embeddings",
        json!({"model": "llama3", "prompt": "bye"}),
    )
    .await
    .json();
    assert_eq!(v["embedding"], float["data"][1]["embedding"]);
}

#[tokio::test]
async fn unknown_model_and_bad_json_in_each_dialect() {
    let m = start(MockConfig::default()).await;
    let r = post(
        m.addr(),
        "/api/chat",
        json!({"model": "nope", "messages": []}),
    )
    .await;
    assert_eq!(r.status, 404);
    assert_eq!(
        r.json(),
        json!({"error": "model \"nope\" not found, try pulling it first"})
    );
    let r = post(
        m.addr(),
        "/api/embed",
        json!({"model": "nope", "input": "x"}),
    )
    .await;
    assert_eq!(r.status, 404);
    let r = post(m.addr(), "/api/show", json!({"model": "nope"})).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json(), json!({"error": "model 'nope' not found"}));
    let r = post(
        m.addr(),
        "/v1/chat/completions",
        json!({"model": "nope", "messages": []}),
    )
    .await;
    assert_eq!(r.status, 404);
    assert_eq!(
        r.json(),
        json!({"error": {"message": "The model `nope` does not exist or you do not have access to it.",
                         "type": "invalid_request_error", "param": null, "code": "model_not_found"}})
    );
    let r = get(m.addr(), "/v1/models/nope").await;
    assert_eq!(r.status, 404);

    let mut s = send(m.addr(), "POST", "/api/chat", &[], Some(&json!("{"))).await;
    let r = parse(&read_all(&mut s).await);
    assert_eq!(r.status, 400);
    assert!(r.json()["error"].is_string());
    let r = call(
        m.addr(),
        "POST",
        "/v1/chat/completions",
        &[],
        Some(json!([1])),
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["type"], "invalid_request_error");
}

#[tokio::test]
async fn api_key_is_enforced_on_both_dialects() {
    let m = start(MockConfig {
        api_key: Some("sk-secret-key".into()),
        ..MockConfig::default()
    })
    .await;
    let r = get(m.addr(), "/v1/models").await;
    assert_eq!(r.status, 401);
    let v = r.json();
    assert_eq!(v["error"]["code"], "invalid_api_key");
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("Incorrect API key provided"));
    let r = call(
        m.addr(),
        "GET",
        "/v1/models",
        &[("Authorization", "Bearer wrong-key-123")],
        None,
    )
    .await;
    assert_eq!(r.status, 401);
    let r = call(
        m.addr(),
        "GET",
        "/v1/models",
        &[("Authorization", "Bearer sk-secret-key")],
        None,
    )
    .await;
    assert_eq!(r.status, 200);
    let r = get(m.addr(), "/api/tags").await;
    assert_eq!(r.status, 401);
    assert!(r.json()["error"].is_string());
    let r = call(
        m.addr(),
        "GET",
        "/api/tags",
        &[("Authorization", "Bearer sk-secret-key")],
        None,
    )
    .await;
    assert_eq!(r.status, 200);
    // The liveness probe stays open, as on a real Ollama behind an auth proxy.
    assert_eq!(get(m.addr(), "/").await.status, 200);
    let s = m.stats();
    assert_eq!(s.last_authorization, None);
    call(
        m.addr(),
        "GET",
        "/api/tags",
        &[("Authorization", "Bearer sk-secret-key")],
        None,
    )
    .await;
    assert_eq!(
        m.stats().last_authorization.as_deref(),
        Some("Bearer sk-secret-key")
    );
}

#[tokio::test]
async fn fail_rate_half_fails_every_other_call() {
    let m = start(MockConfig::default()).await;
    m.set_faults(Faults {
        fail_rate: 0.5,
        fail_status: 503,
        retry_after: Some(7),
        ..Faults::default()
    });
    let mut statuses = Vec::new();
    for i in 0..6 {
        let r = if i % 2 == 0 {
            post(m.addr(), "/api/chat", json!({"model": "llama3", "stream": false, "messages": [{"role": "user", "content": "x"}]})).await
        } else {
            post(
                m.addr(),
                "/v1/chat/completions",
                json!({"model": "llama3", "messages": [{"role": "user", "content": "x"}]}),
            )
            .await
        };
        if r.status == 503 {
            assert_eq!(r.header("retry-after").as_deref(), Some("7"));
            assert_eq!(r.json()["error"]["type"], "server_error");
        }
        statuses.push(r.status);
    }
    assert_eq!(statuses, [200, 503, 200, 503, 200, 503]);
    // Non-generation calls are never failed and do not advance the sequence.
    assert_eq!(get(m.addr(), "/api/tags").await.status, 200);
    let r = post(
        m.addr(),
        "/api/generate",
        json!({"model": "llama3", "prompt": "x", "stream": false}),
    )
    .await;
    assert_eq!(r.status, 200);
    let r = post(
        m.addr(),
        "/api/generate",
        json!({"model": "llama3", "prompt": "x", "stream": false}),
    )
    .await;
    assert_eq!(r.status, 503);
    assert!(r.json()["error"].is_string());
    let s = m.stats();
    assert_eq!((s.generations, s.failed), (8, 4));
}

#[tokio::test]
async fn drop_after_cuts_the_stream() {
    let m = start(named("n", 8)).await;
    m.set_faults(Faults {
        drop_after: Some(3),
        ..Faults::default()
    });
    let r = post(
        m.addr(),
        "/v1/chat/completions",
        json!({"model": "llama3", "stream": true, "messages": []}),
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(!r.complete, "stream must end without its terminating chunk");
    let ev = r.events();
    assert_eq!(ev.len(), 3, "{ev:?}");
    assert!(!ev.iter().any(|e| e == "[DONE]"));

    let r = post(
        m.addr(),
        "/api/chat",
        json!({"model": "llama3", "messages": [{"role": "user", "content": "x"}]}),
    )
    .await;
    assert!(!r.complete);
    assert!(!r.text().contains("\"done\":true"));
    assert_eq!(m.stats().in_flight, 0);
}

#[tokio::test]
async fn truncate_after_ends_the_stream_cleanly_without_its_final_event() {
    let m = start(named("n", 8)).await;
    m.set_faults(Faults {
        truncate_after: Some(3),
        ..Faults::default()
    });
    let chat = json!({"model": "llama3", "stream": true, "max_tokens": 50,
        "messages": [{"role": "user", "content": "x"}]});
    let cases = [
        ("/v1/chat/completions", "\"finish_reason\":\""),
        ("/v1/messages", "message_stop"),
        ("/api/chat", "\"done\":true"),
        (
            "/v1beta/models/llama3:streamGenerateContent?alt=sse",
            "finishReason",
        ),
    ];
    for (path, last) in cases {
        let body = if path.starts_with("/v1beta") {
            json!({"contents": [{"role": "user", "parts": [{"text": "x"}]}]})
        } else {
            chat.clone()
        };
        let r = post(m.addr(), path, body).await;
        assert_eq!(r.status, 200, "{path}");
        assert!(r.complete, "{path}: the body must end cleanly");
        assert!(!r.text().contains(last), "{path}: {}", r.text());
        assert!(!r.text().contains("[DONE]"), "{path}");
    }
    assert_eq!(m.stats().in_flight, 0);
}

#[tokio::test]
async fn scripted_replies_answer_the_next_calls_of_their_dialect_in_order() {
    let m = start(named("n", 8)).await;
    m.script(vec![
        crate::Scripted {
            dialect: Some("anthropic".into()),
            body: Some("{\"scripted\":1}".into()),
            ..crate::Scripted::default()
        },
        crate::Scripted {
            status: 429,
            headers: vec![("retry-after".into(), "7".into())],
            body: Some("{\"scripted\":2}".into()),
            ..crate::Scripted::default()
        },
    ]);
    let chat = json!({"model": "llama3", "max_tokens": 10,
        "messages": [{"role": "user", "content": "x"}]});
    // The OpenAI call skips the Anthropic-only reply and takes the next one.
    let r = post(m.addr(), "/v1/chat/completions", chat.clone()).await;
    assert_eq!(r.status, 429);
    assert_eq!(r.json()["scripted"], 2);
    let r = post(m.addr(), "/v1/messages", chat.clone()).await;
    assert_eq!((r.status, r.json()["scripted"].clone()), (200, json!(1)));
    // The queue is empty: the mock's own answers again.
    let r = post(m.addr(), "/v1/messages", chat).await;
    assert_eq!(r.json()["type"], "message");
    assert_eq!(m.stats().generations, 3);
}

#[tokio::test]
async fn stall_after_keeps_connection_open_and_silent() {
    let m = start(named("n", 8)).await;
    m.set_faults(Faults {
        stall_after: Some(2),
        ..Faults::default()
    });
    let mut s = send(
        m.addr(),
        "POST",
        "/api/generate",
        &[],
        Some(&json!({"model": "llama3", "prompt": "x"})),
    )
    .await;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    // Collect what arrives until the line count stops growing.
    while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(300), s.read(&mut chunk)).await
    {
        assert!(n > 0, "connection closed during a stall");
        buf.extend_from_slice(&chunk[..n]);
    }
    let r = parse(&buf);
    assert!(!r.complete);
    assert_eq!(r.text().lines().count(), 2);
    assert_eq!(m.stats().in_flight, 1);
    drop(s);
}

#[tokio::test]
async fn stop_refuses_connections_and_cuts_open_streams() {
    let m = start(MockConfig {
        chunks: 1000,
        chunk_delay: Duration::from_millis(20),
        ..MockConfig::default()
    })
    .await;
    let addr = m.addr();
    let mut s = send(
        addr,
        "POST",
        "/v1/chat/completions",
        &[],
        Some(&json!({"model": "llama3", "stream": true, "messages": []})),
    )
    .await;
    let mut first = [0u8; 1024];
    let n = s.read(&mut first).await.unwrap();
    assert!(n > 0);

    // A hung request on a second connection must be cut as well.
    m.set_faults(Faults {
        hang: true,
        ..Faults::default()
    });
    let mut hung = send(
        addr,
        "POST",
        "/api/chat",
        &[],
        Some(&json!({"model": "llama3", "messages": []})),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(50)).await;

    let t = Instant::now();
    m.stop().await;
    assert!(t.elapsed() < Duration::from_secs(1));
    let rest = read_all(&mut s).await;
    let all = [&first[..n], &rest[..]].concat();
    let r = parse(&all);
    assert!(!r.complete);
    assert!(!r.text().contains("[DONE]"));
    assert!(read_all(&mut hung).await.is_empty());
    assert!(TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn drop_stops_the_server() {
    let m = start(MockConfig::default()).await;
    let addr = m.addr();
    assert_eq!(get(addr, "/api/version").await.status, 200);
    drop(m);
    let mut refused = false;
    for _ in 0..100 {
        if TcpStream::connect(addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(refused);
}

#[tokio::test]
async fn ttft_delays_the_first_chunk() {
    let ttft = Duration::from_millis(300);
    let m = start(MockConfig {
        ttft,
        ..MockConfig::default()
    })
    .await;
    let t = Instant::now();
    let mut s = send(
        m.addr(),
        "POST",
        "/v1/chat/completions",
        &[],
        Some(&json!({"model": "llama3", "stream": true, "messages": []})),
    )
    .await;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !String::from_utf8_lossy(&buf).contains("data: ") {
        let n = s.read(&mut chunk).await.unwrap();
        assert!(n > 0);
        buf.extend_from_slice(&chunk[..n]);
    }
    let first = t.elapsed();
    assert!(first >= ttft, "first chunk after {first:?}");
    assert!(first < ttft * 5);

    let t = Instant::now();
    let r = post(
        m.addr(),
        "/api/chat",
        json!({"model": "llama3", "stream": false, "messages": [{"role": "user", "content": "x"}]}),
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(t.elapsed() >= ttft);
}

#[tokio::test]
async fn control_endpoints_drive_a_remote_mock() {
    let m = start(MockConfig::default()).await;
    let r = post(
        m.addr(),
        "/_mock/faults",
        json!({"fail_rate": 1.0, "fail_status": 429}),
    )
    .await;
    assert_eq!(r.status, 204);
    let r = post(
        m.addr(),
        "/v1/chat/completions",
        json!({"model": "llama3", "messages": []}),
    )
    .await;
    assert_eq!(r.status, 429);
    assert_eq!(r.json()["error"]["code"], "rate_limit_exceeded");
    let v = get(m.addr(), "/_mock/stats").await.json();
    assert_eq!(v["failed"], 1);
    assert_eq!(v["generations"], 1);
    assert_eq!(v["by_path"]["/v1/chat/completions"], 1);
    assert!(v["by_path"].get("/_mock/stats").is_none());
    let r = post(m.addr(), "/_mock/faults", json!({"fail_rat": 1.0})).await;
    assert_eq!(r.status, 400);
    let r = call(m.addr(), "POST", "/_mock/faults", &[], None).await;
    assert_eq!(r.status, 204);
    let r = post(
        m.addr(),
        "/v1/chat/completions",
        json!({"model": "llama3", "messages": []}),
    )
    .await;
    assert_eq!(r.status, 200);
    let r = post(m.addr(), "/_mock/models", json!(["x:1"])).await;
    assert_eq!(r.status, 204);
    assert_eq!(
        get(m.addr(), "/v1/models").await.json()["data"][0]["id"],
        "x:1"
    );
}

#[tokio::test]
async fn serve_runs_until_dropped() {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let task = tokio::spawn(crate::serve(l, MockConfig::default()));
    assert_eq!(get(addr, "/").await.text(), "Ollama is running");
    task.abort();
}

#[tokio::test]
async fn client_hang_up_cancels_the_stream() {
    let m = start(MockConfig {
        chunks: 1000,
        chunk_delay: Duration::from_millis(20),
        ..MockConfig::default()
    })
    .await;
    for path in ["/api/chat", "/v1/chat/completions"] {
        let body = json!({"model": "llama3", "stream": true, "messages": [{"role": "user", "content": "x"}]});
        let mut s = send(m.addr(), "POST", path, &[], Some(&body)).await;
        let mut chunk = [0u8; 1024];
        assert!(s.read(&mut chunk).await.unwrap() > 0);
        assert_eq!(m.stats().in_flight, 1);
        drop(s);
        let t = Instant::now();
        while m.stats().in_flight != 0 {
            assert!(
                t.elapsed() < Duration::from_secs(1),
                "{path}: stream kept running"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

// ---- Anthropic Messages API ----

const CLAUDE: &str = "claude-3-5-haiku-latest";
const AV: (&str, &str) = ("anthropic-version", "2023-06-01");

fn claude_node(name: &str, chunks: usize) -> MockConfig {
    MockConfig {
        name: name.into(),
        chunks,
        models: vec![CLAUDE.into(), "gemini-2.0-flash".into()],
        ..MockConfig::default()
    }
}

/// Anthropic SSE as (event name, data) pairs, checking each event's `type` names it.
fn anthropic_events(r: &Resp) -> Vec<(String, Value)> {
    r.text()
        .split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| {
            let (ev, data) = e.split_once('\n').unwrap();
            let name = ev.strip_prefix("event: ").unwrap().to_owned();
            let data: Value = serde_json::from_str(data.strip_prefix("data: ").unwrap()).unwrap();
            assert_eq!(data["type"], name.as_str());
            (name, data)
        })
        .collect()
}

async fn messages(addr: SocketAddr, headers: &[(&str, &str)], body: Value) -> Resp {
    call(addr, "POST", "/v1/messages", headers, Some(body)).await
}

#[tokio::test]
async fn anthropic_non_stream_message() {
    let m = start(claude_node("a1", 3)).await;
    let body = json!({"model": CLAUDE, "max_tokens": 100,
        "system": [{"type": "text", "text": "be brief"}],
        "messages": [{"role": "user", "content": "hello there"}]});
    let r = messages(m.addr(), &[AV], body.clone()).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/json")
    );
    assert_eq!(r.header("x-mock-node").as_deref(), Some("a1"));
    let v = r.json();
    assert!(v["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(v["type"], "message");
    assert_eq!(v["role"], "assistant");
    assert_eq!(v["model"], CLAUDE);
    assert_eq!(
        v["content"],
        json!([{"type": "text", "text": "[a1] tok1 tok2 "}])
    );
    assert_eq!(v["stop_reason"], "end_turn");
    assert_eq!(v["stop_sequence"], Value::Null);
    assert_eq!(v["usage"], json!({"input_tokens": 4, "output_tokens": 3}));

    // A token limit below the reply length stops early.
    let mut short = body.clone();
    short["max_tokens"] = json!(2);
    let v = messages(m.addr(), &[AV], short).await.json();
    assert_eq!(v["content"][0]["text"], "[a1] tok1 ");
    assert_eq!(v["stop_reason"], "max_tokens");

    let r = post(
        m.addr(),
        "/v1/messages/count_tokens",
        json!({"model": CLAUDE, "messages": [{"role": "user", "content": "a b c"}]}),
    )
    .await;
    assert_eq!(r.json(), json!({"input_tokens": 3}));

    let s = m.stats();
    assert_eq!(s.generations, 2);
    assert_eq!(s.by_path["/v1/messages"], 2);
    assert_eq!(s.by_path["/v1/messages/count_tokens"], 1);
}

#[tokio::test]
async fn anthropic_stream_event_order() {
    let m = start(claude_node("a2", 3)).await;
    let r = messages(
        m.addr(),
        &[AV],
        json!({"model": CLAUDE, "max_tokens": 50, "stream": true,
               "messages": [{"role": "user", "content": "one two"}]}),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("text/event-stream; charset=utf-8")
    );
    assert!(r.complete);
    let ev = anthropic_events(&r);
    let names: Vec<&str> = ev.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "message_start",
            "content_block_start",
            "ping",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    let msg = &ev[0].1["message"];
    assert!(msg["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(msg["content"], json!([]));
    assert_eq!(msg["stop_reason"], Value::Null);
    assert_eq!(msg["model"], CLAUDE);
    assert_eq!(msg["usage"], json!({"input_tokens": 2, "output_tokens": 1}));
    assert_eq!(
        ev[1].1,
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})
    );
    let text: String = ev[3..6]
        .iter()
        .map(|(_, d)| {
            assert_eq!(d["index"], 0);
            assert_eq!(d["delta"]["type"], "text_delta");
            d["delta"]["text"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(text, "[a2] tok1 tok2 ");
    assert_eq!(ev[6].1, json!({"type": "content_block_stop", "index": 0}));
    assert_eq!(
        ev[7].1,
        json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null}, "usage": {"output_tokens": 3}})
    );
    assert_eq!(m.stats().in_flight, 0);
}

#[tokio::test]
async fn anthropic_tool_use_streams_input_json_deltas() {
    let m = start(claude_node("a3", 4)).await;
    let tools = json!([{"name": "get_weather", "description": "Weather",
        "input_schema": {"type": "object", "properties": {"location": {"type": "string"}}}},
        {"name": "other", "input_schema": {"type": "object"}}]);
    let req = json!({"model": CLAUDE, "max_tokens": 100, "tools": tools,
                     "messages": [{"role": "user", "content": "weather in Paris?"}]});
    let v = messages(m.addr(), &[AV], req.clone()).await.json();
    assert_eq!(v["stop_reason"], "tool_use");
    let block = &v["content"][0];
    assert_eq!(v["content"].as_array().unwrap().len(), 1);
    assert_eq!(block["type"], "tool_use");
    assert!(block["id"].as_str().unwrap().starts_with("toolu_"));
    assert_eq!(block["name"], "get_weather");
    assert_eq!(block["input"], json!({"location": "Paris"}));

    // A forced tool wins; "none" turns tools off.
    let mut forced = req.clone();
    forced["tool_choice"] = json!({"type": "tool", "name": "other"});
    let v = messages(m.addr(), &[AV], forced).await.json();
    assert_eq!(v["content"][0]["name"], "other");
    let mut off = req.clone();
    off["tool_choice"] = json!({"type": "none"});
    let v = messages(m.addr(), &[AV], off).await.json();
    assert_eq!(v["content"][0]["type"], "text");
    assert_eq!(v["stop_reason"], "end_turn");

    let mut sreq = req;
    sreq["stream"] = json!(true);
    let ev = anthropic_events(&messages(m.addr(), &[AV], sreq).await);
    assert_eq!(ev[0].0, "message_start");
    let start_block = &ev[1].1["content_block"];
    assert_eq!(start_block["type"], "tool_use");
    assert!(start_block["id"].as_str().unwrap().starts_with("toolu_"));
    assert_eq!(start_block["name"], "get_weather");
    assert_eq!(start_block["input"], json!({}));
    assert_eq!(ev[2].0, "ping");
    let deltas: Vec<&Value> = ev
        .iter()
        .filter(|(n, _)| n == "content_block_delta")
        .map(|(_, d)| &d["delta"])
        .collect();
    assert!(deltas.len() > 2);
    let json_text: String = deltas
        .iter()
        .map(|d| {
            assert_eq!(d["type"], "input_json_delta");
            d["partial_json"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(
        serde_json::from_str::<Value>(&json_text).unwrap(),
        json!({"location": "Paris"})
    );
    let n = ev.len();
    assert_eq!(ev[n - 3].0, "content_block_stop");
    assert_eq!(ev[n - 2].1["delta"]["stop_reason"], "tool_use");
    assert_eq!(ev[n - 1].0, "message_stop");
}

#[tokio::test]
async fn anthropic_request_errors() {
    let m = start(MockConfig {
        strict_anthropic_version: true,
        ..claude_node("a4", 2)
    })
    .await;
    let msgs = json!([{"role": "user", "content": "x"}]);
    let r = messages(m.addr(), &[AV], json!({"model": CLAUDE, "messages": msgs})).await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json(),
        json!({"type": "error", "error": {"type": "invalid_request_error", "message": "max_tokens: Field required"}})
    );
    let r = messages(
        m.addr(),
        &[AV],
        json!({"model": "nope", "max_tokens": 5, "messages": msgs}),
    )
    .await;
    assert_eq!(r.status, 404);
    assert_eq!(
        r.json(),
        json!({"type": "error", "error": {"type": "not_found_error", "message": "model: nope"}})
    );
    let r = messages(m.addr(), &[AV], json!({"model": CLAUDE, "max_tokens": 5})).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["message"], "messages: Field required");
    // The version header is required only when the node is strict.
    let r = messages(
        m.addr(),
        &[],
        json!({"model": CLAUDE, "max_tokens": 5, "messages": msgs}),
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json()["error"]["message"],
        "anthropic-version: header is required"
    );
    let lax = start(claude_node("a5", 2)).await;
    let r = messages(
        lax.addr(),
        &[],
        json!({"model": CLAUDE, "max_tokens": 5, "messages": msgs}),
    )
    .await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn anthropic_keys_use_x_api_key() {
    let m = start(MockConfig {
        api_key: Some("sk-ant-good".into()),
        revoked_keys: vec!["sk-ant-revoked".into()],
        limited_keys: vec!["sk-ant-limited".into()],
        ..claude_node("a6", 2)
    })
    .await;
    let body =
        json!({"model": CLAUDE, "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]});
    let r = messages(m.addr(), &[AV], body.clone()).await;
    assert_eq!(r.status, 401);
    assert_eq!(
        r.json(),
        json!({"type": "error", "error": {"type": "authentication_error", "message": "x-api-key header is required"}})
    );
    for bad in ["sk-wrong", "sk-ant-revoked"] {
        let r = messages(m.addr(), &[AV, ("x-api-key", bad)], body.clone()).await;
        assert_eq!(r.status, 401, "{bad}");
        assert_eq!(r.json()["error"]["type"], "authentication_error");
    }
    let r = messages(
        m.addr(),
        &[AV, ("x-api-key", "sk-ant-limited")],
        body.clone(),
    )
    .await;
    assert_eq!(r.status, 429);
    assert_eq!(r.header("retry-after").as_deref(), Some("20"));
    assert_eq!(r.json()["error"]["type"], "rate_limit_error");
    // The key comes in `x-api-key`...
    let r = messages(m.addr(), &[AV, ("x-api-key", "sk-ant-good")], body.clone()).await;
    assert_eq!(r.status, 200);
    let s = m.stats();
    assert_eq!(s.last_authorization.as_deref(), Some("sk-ant-good"));
    assert_eq!(s.by_key["sk-ant-good"], 1);
    assert_eq!(s.by_key["sk-wrong"], 1);
    assert_eq!(s.by_key[""], 1);
    // ...but `Authorization: Bearer` is accepted too.
    let r = messages(
        m.addr(),
        &[AV, ("Authorization", "Bearer sk-ant-good")],
        body,
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(m.stats().by_key["sk-ant-good"], 2);
    assert_eq!(
        m.stats().last_authorization.as_deref(),
        Some("Bearer sk-ant-good")
    );
    // The model list takes the same key and answers in Anthropic's shape.
    let r = call(m.addr(), "GET", "/v1/models", &[AV], None).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["type"], "error");
    let r = call(
        m.addr(),
        "GET",
        "/v1/models",
        &[AV, ("x-api-key", "sk-ant-good")],
        None,
    )
    .await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn anthropic_models_list_shape_with_version_header() {
    let m = start(claude_node("a7", 2)).await;
    let v = call(m.addr(), "GET", "/v1/models", &[AV], None)
        .await
        .json();
    assert_eq!(v["has_more"], false);
    assert_eq!(v["first_id"], CLAUDE);
    assert_eq!(v["last_id"], "gemini-2.0-flash");
    let first = &v["data"][0];
    assert_eq!(first["type"], "model");
    assert_eq!(first["id"], CLAUDE);
    assert_eq!(first["display_name"], "Claude 3 5 Haiku Latest");
    assert!(first["created_at"].as_str().unwrap().ends_with('Z'));
    assert!(v.get("object").is_none());
    let v = call(
        m.addr(),
        "GET",
        &format!("/v1/models/{CLAUDE}"),
        &[AV],
        None,
    )
    .await
    .json();
    assert_eq!(v["id"], CLAUDE);
    assert_eq!(v["type"], "model");
    let r = call(m.addr(), "GET", "/v1/models/nope", &[AV], None).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"]["type"], "not_found_error");
    // Without the header it stays OpenAI-shaped.
    let v = get(m.addr(), "/v1/models").await.json();
    assert_eq!(v["object"], "list");
    assert_eq!(v["data"][0]["object"], "model");
}

#[tokio::test]
async fn anthropic_faults() {
    let m = start(claude_node("a8", 8)).await;
    m.set_faults(Faults {
        drop_after: Some(4),
        ..Faults::default()
    });
    let body = json!({"model": CLAUDE, "max_tokens": 50, "stream": true,
                      "messages": [{"role": "user", "content": "x"}]});
    let r = messages(m.addr(), &[AV], body.clone()).await;
    assert_eq!(r.status, 200);
    assert!(!r.complete, "stream must end without its terminating chunk");
    let ev = anthropic_events(&r);
    assert_eq!(ev.len(), 4);
    assert!(!ev.iter().any(|(n, _)| n == "message_stop"));
    assert_eq!(m.stats().in_flight, 0);

    m.set_faults(Faults {
        fail_rate: 1.0,
        fail_status: 529,
        ..Faults::default()
    });
    let r = messages(m.addr(), &[AV], body.clone()).await;
    assert_eq!(r.status, 529);
    assert_eq!(r.json()["type"], "error");
    assert_eq!(r.json()["error"]["type"], "overloaded_error");
    m.set_faults(Faults {
        fail_rate: 1.0,
        ..Faults::default()
    });
    let r = messages(m.addr(), &[AV], body.clone()).await;
    assert_eq!(r.status, 500);
    assert_eq!(r.json()["error"]["type"], "api_error");
    m.set_faults(Faults {
        fail_rate: 1.0,
        fail_status: 429,
        retry_after: Some(3),
        ..Faults::default()
    });
    let r = messages(m.addr(), &[AV], body).await;
    assert_eq!(r.status, 429);
    assert_eq!(r.header("retry-after").as_deref(), Some("3"));
    assert_eq!(r.json()["error"]["type"], "rate_limit_error");
    let s = m.stats();
    assert_eq!((s.generations, s.failed), (4, 3));
}

// ---- Gemini API ----

const GEMINI: &str = "gemini-2.0-flash";

fn gemini_node(name: &str, chunks: usize) -> MockConfig {
    MockConfig {
        name: name.into(),
        chunks,
        dims: 6,
        models: vec![GEMINI.into(), "text-embedding-004".into()],
        ..MockConfig::default()
    }
}

fn gen_path(model: &str, method: &str) -> String {
    format!("/v1beta/models/{model}:{method}")
}

fn user(text: &str) -> Value {
    json!({"contents": [{"role": "user", "parts": [{"text": text}]}]})
}

/// Gemini SSE `data:` payloads; Google ends its SSE lines with CRLF.
fn gemini_events(r: &Resp) -> Vec<Value> {
    let text = r.text();
    assert!(!text.contains("\n\n"), "{text:?}");
    text.split("\r\n\r\n")
        .filter(|e| !e.is_empty())
        .map(|e| serde_json::from_str(e.strip_prefix("data: ").unwrap()).unwrap())
        .collect()
}

fn part_text(chunk: &Value) -> String {
    chunk["candidates"][0]["content"]["parts"][0]["text"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn gemini_generate_content() {
    let m = start(gemini_node("g1", 3)).await;
    let mut body = user("hello there world");
    body["systemInstruction"] = json!({"parts": [{"text": "be brief"}]});
    let r = post(m.addr(), &gen_path(GEMINI, "generateContent"), body.clone()).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/json; charset=UTF-8")
    );
    assert_eq!(r.header("x-mock-node").as_deref(), Some("g1"));
    let v = r.json();
    let cand = &v["candidates"][0];
    assert_eq!(
        cand["content"],
        json!({"role": "model", "parts": [{"text": "[g1] tok1 tok2 "}]})
    );
    assert_eq!(cand["finishReason"], "STOP");
    assert_eq!(cand["index"], 0);
    assert_eq!(
        v["usageMetadata"],
        json!({"promptTokenCount": 5, "candidatesTokenCount": 3, "totalTokenCount": 8})
    );
    assert_eq!(v["modelVersion"], GEMINI);
    assert!(!v["responseId"].as_str().unwrap().is_empty());

    body["generationConfig"] = json!({"maxOutputTokens": 2});
    let v = post(m.addr(), &gen_path(GEMINI, "generateContent"), body)
        .await
        .json();
    assert_eq!(part_text(&v), "[g1] tok1 ");
    assert_eq!(v["candidates"][0]["finishReason"], "MAX_TOKENS");

    let r = post(m.addr(), &gen_path(GEMINI, "countTokens"), user("a b c")).await;
    assert_eq!(r.json(), json!({"totalTokens": 3}));

    // google-genai defaults to API version v1: the same calls under /v1/models.
    let v = post(
        m.addr(),
        &format!("/v1/models/{GEMINI}:generateContent"),
        user("x"),
    )
    .await
    .json();
    assert_eq!(part_text(&v), "[g1] tok1 tok2 ");

    let r = post(m.addr(), &gen_path(GEMINI, "generateContent"), json!({})).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["status"], "INVALID_ARGUMENT");
    let s = m.stats();
    assert_eq!(s.generations, 4);
    assert_eq!(s.by_path[&gen_path(GEMINI, "generateContent")], 3);
}

#[tokio::test]
async fn gemini_stream_sse_ends_with_finish_and_usage() {
    let m = start(gemini_node("g2", 3)).await;
    let r = post(
        m.addr(),
        &format!("{}?alt=sse", gen_path(GEMINI, "streamGenerateContent")),
        user("one two"),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("text/event-stream")
    );
    assert!(r.complete);
    let chunks = gemini_events(&r);
    assert_eq!(chunks.len(), 3);
    let text: String = chunks.iter().map(part_text).collect();
    assert_eq!(text, "[g2] tok1 tok2 ");
    for c in &chunks[..2] {
        assert!(c["candidates"][0].get("finishReason").is_none());
        assert!(c.get("usageMetadata").is_none());
        assert_eq!(c["candidates"][0]["content"]["role"], "model");
        assert_eq!(c["modelVersion"], GEMINI);
        assert_eq!(c["responseId"], chunks[2]["responseId"]);
    }
    let last = &chunks[2];
    assert_eq!(last["candidates"][0]["finishReason"], "STOP");
    assert_eq!(
        last["usageMetadata"],
        json!({"promptTokenCount": 2, "candidatesTokenCount": 3, "totalTokenCount": 5})
    );
}

#[tokio::test]
async fn gemini_stream_without_alt_sse_is_a_json_array() {
    let m = start(gemini_node("g3", 3)).await;
    let r = post(
        m.addr(),
        &gen_path(GEMINI, "streamGenerateContent"),
        user("hi"),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/json; charset=UTF-8")
    );
    assert!(r.complete);
    let Value::Array(chunks) = r.json() else {
        panic!("not an array: {}", r.text());
    };
    assert_eq!(chunks.len(), 3);
    let text: String = chunks.iter().map(part_text).collect();
    assert_eq!(text, "[g3] tok1 tok2 ");
    assert_eq!(chunks[2]["candidates"][0]["finishReason"], "STOP");
    assert_eq!(chunks[2]["usageMetadata"]["totalTokenCount"], 4);
}

#[tokio::test]
async fn gemini_function_call_reply() {
    let m = start(gemini_node("g4", 3)).await;
    let mut body = user("weather in Paris?");
    body["tools"] = json!([{"functionDeclarations": [
        {"name": "get_weather", "parameters": {"type": "object", "properties": {"location": {"type": "string"}}}},
        {"name": "other"}]}]);
    let v = post(m.addr(), &gen_path(GEMINI, "generateContent"), body.clone())
        .await
        .json();
    let cand = &v["candidates"][0];
    assert_eq!(
        cand["content"]["parts"],
        json!([{"functionCall": {"name": "get_weather", "args": {"location": "Paris"}}}])
    );
    assert_eq!(cand["finishReason"], "STOP");

    let chunks = gemini_events(
        &post(
            m.addr(),
            &format!("{}?alt=sse", gen_path(GEMINI, "streamGenerateContent")),
            body.clone(),
        )
        .await,
    );
    assert_eq!(chunks.len(), 1);
    assert_eq!(
        chunks[0]["candidates"][0]["content"]["parts"][0]["functionCall"]["name"],
        "get_weather"
    );
    assert_eq!(chunks[0]["candidates"][0]["finishReason"], "STOP");

    let mut allowed = body.clone();
    allowed["toolConfig"] =
        json!({"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["other"]}});
    let v = post(m.addr(), &gen_path(GEMINI, "generateContent"), allowed)
        .await
        .json();
    assert_eq!(
        v["candidates"][0]["content"]["parts"][0]["functionCall"]["name"],
        "other"
    );
    let mut none = body;
    none["toolConfig"] = json!({"functionCallingConfig": {"mode": "NONE"}});
    let v = post(m.addr(), &gen_path(GEMINI, "generateContent"), none)
        .await
        .json();
    assert_eq!(part_text(&v), "[g4] tok1 tok2 ");
}

#[tokio::test]
async fn gemini_embeddings_match_the_other_dialects() {
    let m = start(gemini_node("g5", 3)).await;
    let model = "text-embedding-004";
    let v = post(
        m.addr(),
        &gen_path(model, "embedContent"),
        json!({"content": {"parts": [{"text": "hello world"}]}}),
    )
    .await
    .json();
    let single = &v["embedding"]["values"];
    assert_eq!(single.as_array().unwrap().len(), 6);
    let openai = post(
        m.addr(),
        "/v1/embeddings",
        json!({"model": model, "input": ["hello world", "bye"]}),
    )
    .await
    .json();
    assert_eq!(*single, openai["data"][0]["embedding"]);

    let v = post(
        m.addr(),
        &gen_path(model, "batchEmbedContents"),
        json!({"requests": [
            {"model": format!("models/{model}"), "content": {"parts": [{"text": "hello world"}]}},
            {"model": format!("models/{model}"), "content": {"parts": [{"text": "bye"}]}, "outputDimensionality": 3}]}),
    )
    .await
    .json();
    let embeddings = v["embeddings"].as_array().unwrap();
    assert_eq!(embeddings.len(), 2);
    assert_eq!(embeddings[0]["values"], *single);
    assert_eq!(embeddings[1]["values"].as_array().unwrap().len(), 3);

    let r = post(
        m.addr(),
        &gen_path(model, "batchEmbedContents"),
        json!({"requests": []}),
    )
    .await;
    assert_eq!(r.status, 400);
    let s = m.stats();
    assert_eq!(s.generations, 4);
    assert_eq!(s.by_path[&gen_path(model, "embedContent")], 1);
}

#[tokio::test]
async fn gemini_models_and_unknown_model() {
    let m = start(gemini_node("g6", 3)).await;
    let v = get(m.addr(), "/v1beta/models").await.json();
    let models = v["models"].as_array().unwrap();
    assert_eq!(models.len(), 2);
    assert_eq!(models[0]["name"], format!("models/{GEMINI}"));
    assert_eq!(models[0]["displayName"], "Gemini 2.0 Flash");
    assert!(models[0]["supportedGenerationMethods"]
        .as_array()
        .unwrap()
        .contains(&json!("generateContent")));
    let v = get(m.addr(), &format!("/v1beta/models/{GEMINI}"))
        .await
        .json();
    assert_eq!(v["name"], format!("models/{GEMINI}"));
    // google-genai's default v1 listing shares OpenAI's path; its key header tells them apart.
    let v = call(
        m.addr(),
        "GET",
        "/v1/models",
        &[("x-goog-api-key", "k")],
        None,
    )
    .await
    .json();
    assert_eq!(v["models"][1]["name"], "models/text-embedding-004");
    // A colon in a model name does not make an OpenAI retrieve a Gemini call.
    m.set_models(vec![GEMINI.into(), "llama3:latest".into()]);
    let v = get(m.addr(), "/v1/models/llama3:latest").await.json();
    assert_eq!(v["object"], "model");
    assert_eq!(v["id"], "llama3:latest");
    let r = post(
        m.addr(),
        "/v1/models/llama3:latest:generateContent",
        user("x"),
    )
    .await;
    assert_eq!(r.json()["modelVersion"], "llama3:latest");

    let r = post(m.addr(), &gen_path("nope", "generateContent"), user("x")).await;
    assert_eq!(r.status, 404);
    let v = r.json();
    assert_eq!(v["error"]["code"], 404);
    assert_eq!(v["error"]["status"], "NOT_FOUND");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("models/nope is not found"));
    let r = get(m.addr(), "/v1beta/models/nope").await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"]["status"], "NOT_FOUND");
    let r = post(m.addr(), &gen_path(GEMINI, "fooBar"), user("x")).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"]["status"], "NOT_FOUND");
}

#[tokio::test]
async fn gemini_keys_in_header_or_query() {
    let m = start(MockConfig {
        api_key: Some("AIza-good".into()),
        revoked_keys: vec!["AIza-revoked".into()],
        limited_keys: vec!["AIza-limited".into()],
        ..gemini_node("g7", 2)
    })
    .await;
    let path = gen_path(GEMINI, "generateContent");
    let r = call(
        m.addr(),
        "POST",
        &path,
        &[("x-goog-api-key", "AIza-bad")],
        Some(user("x")),
    )
    .await;
    assert_eq!(r.status, 400);
    let v = r.json();
    assert_eq!(v["error"]["code"], 400);
    assert_eq!(v["error"]["status"], "INVALID_ARGUMENT");
    assert_eq!(
        v["error"]["message"],
        "API key not valid. Please pass a valid API key."
    );
    assert_eq!(v["error"]["details"][0]["reason"], "API_KEY_INVALID");
    let r = call(
        m.addr(),
        "POST",
        &path,
        &[("x-goog-api-key", "AIza-revoked")],
        Some(user("x")),
    )
    .await;
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["error"]["status"], "PERMISSION_DENIED");
    let r = call(
        m.addr(),
        "POST",
        &path,
        &[("x-goog-api-key", "AIza-limited")],
        Some(user("x")),
    )
    .await;
    assert_eq!(r.status, 429);
    assert_eq!(r.json()["error"]["status"], "RESOURCE_EXHAUSTED");
    assert_eq!(r.header("retry-after").as_deref(), Some("20"));
    // No key at all, or an API key sent as a bearer token (Gemini wants OAuth there).
    let r = post(m.addr(), &path, user("x")).await;
    assert_eq!(r.status, 403);
    let r = call(
        m.addr(),
        "POST",
        &path,
        &[("Authorization", "Bearer AIza-good")],
        Some(user("x")),
    )
    .await;
    assert_eq!(r.status, 403);

    let r = call(
        m.addr(),
        "POST",
        &path,
        &[("x-goog-api-key", "AIza-good")],
        Some(user("x")),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(m.stats().last_authorization.as_deref(), Some("AIza-good"));
    let r = post(m.addr(), &format!("{path}?key=AIza-good"), user("x")).await;
    assert_eq!(r.status, 200);
    let r = post(
        m.addr(),
        &format!("/v1beta/models/{GEMINI}:streamGenerateContent?alt=sse&key=AIza-good"),
        user("x"),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(gemini_events(&r).len(), 2);
    let s = m.stats();
    assert_eq!(s.last_authorization.as_deref(), Some("AIza-good"));
    assert_eq!(s.by_key["AIza-good"], 3);
    assert_eq!(s.by_key["AIza-bad"], 1);
    assert_eq!(s.by_key[""], 2);
}

#[tokio::test]
async fn gemini_faults() {
    let m = start(gemini_node("g8", 8)).await;
    m.set_faults(Faults {
        drop_after: Some(3),
        ..Faults::default()
    });
    let sse = format!("{}?alt=sse", gen_path(GEMINI, "streamGenerateContent"));
    let r = post(m.addr(), &sse, user("x")).await;
    assert_eq!(r.status, 200);
    assert!(!r.complete, "stream must end without its terminating chunk");
    let chunks = gemini_events(&r);
    assert_eq!(chunks.len(), 3);
    assert!(chunks
        .iter()
        .all(|c| c["candidates"][0].get("finishReason").is_none()));
    let r = post(
        m.addr(),
        &gen_path(GEMINI, "streamGenerateContent"),
        user("x"),
    )
    .await;
    assert!(!r.complete);
    assert!(!r.text().ends_with(']'));
    assert_eq!(m.stats().in_flight, 0);

    for (status, name) in [
        (429, "RESOURCE_EXHAUSTED"),
        (500, "INTERNAL"),
        (503, "UNAVAILABLE"),
    ] {
        m.set_faults(Faults {
            fail_rate: 1.0,
            fail_status: status,
            retry_after: Some(9),
            ..Faults::default()
        });
        let r = post(m.addr(), &gen_path(GEMINI, "generateContent"), user("x")).await;
        assert_eq!(r.status, status);
        assert_eq!(r.header("retry-after").as_deref(), Some("9"));
        let v = r.json();
        assert_eq!(v["error"]["code"], status);
        assert_eq!(v["error"]["status"], name);
    }
    let s = m.stats();
    assert_eq!((s.generations, s.failed), (5, 3));
}

#[tokio::test]
async fn azure_deployment_paths_with_api_key_header() {
    let m = start(MockConfig {
        api_key: Some("az-key".into()),
        models: vec!["gpt-4o".into()],
        ..MockConfig::default()
    })
    .await;
    let body = json!({"messages": [{"role": "user", "content": "hi"}]});
    let path = "/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21";
    let r = call(
        m.addr(),
        "POST",
        path,
        &[("api-key", "az-key")],
        Some(body.clone()),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["model"], "gpt-4o");
    let r = call(
        m.addr(),
        "POST",
        path,
        &[("api-key", "wrong")],
        Some(body.clone()),
    )
    .await;
    assert_eq!(r.status, 401);
    let r = call(
        m.addr(),
        "POST",
        "/openai/deployments/gpt-4o/chat/completions",
        &[("api-key", "az-key")],
        Some(body.clone()),
    )
    .await;
    assert_eq!(r.status, 404, "api-version is required");
    let r = call(
        m.addr(),
        "GET",
        "/openai/models?api-version=2024-10-21",
        &[("api-key", "az-key")],
        None,
    )
    .await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn responses_api_whole_and_streamed_like_openai() {
    let m = start(named("ra", 3)).await;
    let r = post(
        m.addr(),
        "/v1/responses",
        json!({"model": "llama3", "input": "say hi to me", "instructions": "be brief"}),
    )
    .await;
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["object"], "response");
    assert_eq!(v["status"], "completed");
    assert!(v["id"].as_str().unwrap().starts_with("resp_"));
    assert_eq!(v["output"][0]["type"], "message");
    assert_eq!(v["output"][0]["content"][0]["type"], "output_text");
    assert_eq!(v["output"][0]["content"][0]["text"], "[ra] tok1 tok2 ");
    assert_eq!(v["usage"]["input_tokens"], 6);
    assert_eq!(v["usage"]["output_tokens"], 3);
    assert_eq!(v["usage"]["total_tokens"], 9);

    let r = post(
        m.addr(),
        "/v1/responses",
        json!({"model": "llama3", "input": "hi", "stream": true, "max_output_tokens": 2}),
    )
    .await;
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("text/event-stream")
    );
    let text = r.text();
    let types: Vec<&str> = text
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("event: "))
        .map(|e| e.split('\n').next().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.incomplete",
        ]
    );
    assert!(!text.contains("[DONE]"));
    let last: Value = serde_json::from_str(
        text.trim_end()
            .rsplit('\n')
            .next()
            .unwrap()
            .strip_prefix("data: ")
            .unwrap(),
    )
    .unwrap();
    assert_eq!(last["sequence_number"], 9);
    assert_eq!(
        last["response"]["incomplete_details"]["reason"],
        "max_output_tokens"
    );

    let r = post(
        m.addr(),
        "/v1/responses",
        json!({"model": "llama3", "input": "weather?", "stream": true,
               "tools": [{"type": "function", "name": "get_weather", "parameters": {}}]}),
    )
    .await;
    let text = r.text();
    assert!(text.contains("event: response.function_call_arguments.delta"));
    assert!(text.contains(r#""name":"get_weather""#));
    m.stop().await;
}

/// As OpenAI streams: tokens come `chunk_delay` apart, and the usage chunk and `[DONE]` follow
/// the finish chunk at once (a gateway that drops the usage chunk must not look as if it held
/// `[DONE]` back for a token's time).
#[tokio::test]
async fn openai_usage_chunk_and_done_follow_the_finish_chunk_at_once() {
    let m = start(MockConfig {
        chunks: 2,
        chunk_delay: Duration::from_millis(150),
        ..MockConfig::default()
    })
    .await;
    let body = json!({"model": "llama3", "stream": true, "messages": [],
        "stream_options": {"include_usage": true}});
    let mut s = send(m.addr(), "POST", "/v1/chat/completions", &[], Some(&body)).await;
    let started = Instant::now();
    let mut seen: Vec<(Duration, String)> = Vec::new();
    let mut buf = [0u8; 4096];
    let mut text = String::new();
    while !text.contains("[DONE]") {
        let n = s.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed before [DONE]: {text}");
        text.push_str(&String::from_utf8_lossy(&buf[..n]));
        for line in text.lines().filter(|l| l.starts_with("data: ")) {
            if !seen.iter().any(|(_, l)| l == line) {
                seen.push((started.elapsed(), line.to_string()));
            }
        }
    }
    let at = |needle: &str| {
        seen.iter()
            .find(|(_, l)| l.contains(needle))
            .map(|(t, _)| *t)
            .unwrap()
    };
    let (finish, usage, done) = (
        at("\"finish_reason\":\"stop\""),
        at("\"choices\":[],"),
        at("[DONE]"),
    );
    assert!(usage - finish < Duration::from_millis(100), "{seen:?}");
    assert!(done - finish < Duration::from_millis(100), "{seen:?}");
    // The finish chunk itself still comes a token's time after the last token.
    assert!(finish >= Duration::from_millis(3 * 150), "{seen:?}");
}
