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
