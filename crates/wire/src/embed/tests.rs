//! Unit tests of the embedding codecs of every dialect.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::{json, Value};

use crate::canonical::EmbedResponse;
use crate::json::{base64_decode, base64_encode};
use crate::openai::embed::{base64_to_floats, floats_to_base64};
use crate::testing::prefixes;

use super::*;

// Shaped after the public API references' examples.
const OPENAI_RESPONSE: &str = r#"{
      "object": "list",
      "data": [
        {"object": "embedding", "embedding": [0.5, -0.25, 0.125], "index": 1},
        {"object": "embedding", "embedding": [0.0023064255, -0.009327292, -0.0028842222], "index": 0}
      ],
      "model": "text-embedding-3-small",
      "usage": {"prompt_tokens": 8, "total_tokens": 8}
    }"#;
const OLLAMA_EMBED_RESPONSE: &str = r#"{
      "model": "all-minilm",
      "embeddings": [[0.010071029, -0.0017594862, 0.05007221], [-0.0098027075, 0.06042469, 0.025453766]],
      "total_duration": 14143917,
      "load_duration": 1019500,
      "prompt_eval_count": 8
    }"#;
const OLLAMA_LEGACY_RESPONSE: &str =
    r#"{"embedding": [0.5670403838157654, 0.009260174818336964, 0.23178744316101074]}"#;
const GEMINI_REQUEST: &str = r#"{"model": "models/text-embedding-004", "content": {"parts": [{"text": "What is the meaning of life?"}]}, "taskType": "RETRIEVAL_QUERY", "outputDimensionality": 256}"#;
const GEMINI_BATCH_REQUEST: &str = r#"{"requests": [
      {"model": "models/text-embedding-004", "content": {"parts": [{"text": "What is the meaning of life?"}]}},
      {"model": "models/text-embedding-004", "content": {"parts": [{"text": "How much wood would a woodchuck chuck?"}]}}
    ]}"#;
const GEMINI_RESPONSE: &str =
    r#"{"embedding": {"values": [0.013168523, -0.008711934, -0.046782676]}}"#;
const GEMINI_BATCH_RESPONSE: &str =
    r#"{"embeddings": [{"values": [0.1, 0.2]}, {"values": [0.3, 0.4]}]}"#;

fn resp() -> EmbedResponse {
    EmbedResponse {
        model: "m".into(),
        vectors: vec![vec![1.0, -0.5, 0.1], vec![0.25, 3.5, -2.0]],
        input_tokens: 6,
    }
}

fn json_of(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap()
}

#[test]
fn base64_known_values_and_round_trip() {
    assert_eq!(floats_to_base64(&[1.0]), "AACAPw==");
    assert_eq!(base64_encode(b""), "");
    assert_eq!(base64_encode(b"f"), "Zg==");
    assert_eq!(base64_encode(b"fo"), "Zm8=");
    assert_eq!(base64_encode(b"foo"), "Zm9v");
    assert_eq!(base64_encode(b"foobar"), "Zm9vYmFy");
    for s in ["", "f", "fo", "foo", "foob", "fooba", "foobar"] {
        assert_eq!(
            base64_decode(&base64_encode(s.as_bytes())).unwrap(),
            s.as_bytes()
        );
    }
    let v = vec![0.1f32, -3.25, f32::MAX, 0.0];
    assert_eq!(base64_to_floats(&floats_to_base64(&v), "x").unwrap(), v);
    assert!(base64_decode("a*b").is_none());
    assert!(base64_to_floats("Zg==", "x").is_err());
}

#[test]
fn openai() {
    let (req, fmt) = decode_openai_request(
            br#"{"model":"text-embedding-3-small","input":"The food was delicious","encoding_format":"base64","dimensions":256,"user":"u"}"#,
        )
        .unwrap();
    assert_eq!(fmt, EncodingFormat::Base64);
    assert_eq!(req.model, "text-embedding-3-small");
    assert_eq!(req.inputs, ["The food was delicious"]);
    assert_eq!(req.dimensions, Some(256));
    let (req, fmt) = decode_openai_request(br#"{"model":"m","input":["a","b"]}"#).unwrap();
    assert_eq!(fmt, EncodingFormat::Float);
    assert_eq!(req.inputs, ["a", "b"]);

    for (body, field) in [
        (r#"{"model":"m","input":[1,2,3]}"#, "input"),
        (r#"{"model":"m","input":[[1,2],[3]]}"#, "input"),
        (r#"{"model":"m","input":[]}"#, "input"),
        (r#"{"model":"m"}"#, "input"),
        (r#"{"model":"m","input":["a",null]}"#, "input[1]"),
        (
            r#"{"model":"m","input":"a","encoding_format":"int8"}"#,
            "encoding_format",
        ),
        (r#"{"model":"m","input":"a","dimensions":-1}"#, "dimensions"),
    ] {
        assert_eq!(
            decode_openai_request(body.as_bytes()).unwrap_err().field,
            field,
            "{body}"
        );
    }

    let v = json_of(&encode_openai_request(&req).unwrap());
    assert_eq!(
        v,
        json!({"model": "m", "input": ["a", "b"], "encoding_format": "float"})
    );

    let r = decode_openai_response(OPENAI_RESPONSE.as_bytes()).unwrap();
    assert_eq!(r.model, "text-embedding-3-small");
    assert_eq!(r.input_tokens, 8);
    // Ordered by `index`.
    assert_eq!(r.vectors[0], [0.0023064255, -0.009327292, -0.0028842222]);
    assert_eq!(r.vectors[1], [0.5, -0.25, 0.125]);

    let float = encode_openai_response(&resp(), EncodingFormat::Float);
    let text = std::str::from_utf8(&float).unwrap();
    assert!(text.contains("[1.0,-0.5,0.1]"), "shortest f32 form: {text}");
    let v = json_of(&float);
    assert_eq!(v["object"], "list");
    assert_eq!(v["data"][1]["object"], "embedding");
    assert_eq!(v["data"][1]["index"], 1);
    assert_eq!(v["usage"], json!({"prompt_tokens": 6, "total_tokens": 6}));
    assert_eq!(decode_openai_response(&float).unwrap(), resp());

    let b64 = encode_openai_response(&resp(), EncodingFormat::Base64);
    let v = json_of(&b64);
    assert!(v["data"][0]["embedding"].is_string());
    assert_eq!(decode_openai_response(&b64).unwrap(), resp());
}

#[test]
fn ollama() {
    let req = decode_ollama_request(br#"{"model":"all-minilm","input":["Why is the sky blue?","Why is the grass green?"],"truncate":true,"keep_alive":"5m"}"#).unwrap();
    assert_eq!(req.model, "all-minilm");
    assert_eq!(req.inputs.len(), 2);
    let req1 = decode_ollama_request(br#"{"model":"all-minilm","input":"one"}"#).unwrap();
    assert_eq!(req1.inputs, ["one"]);
    let back = decode_ollama_request(&encode_ollama_request(&req).unwrap()).unwrap();
    assert_eq!(back, req);

    let r = decode_ollama_response(OLLAMA_EMBED_RESPONSE.as_bytes()).unwrap();
    assert_eq!(r.model, "all-minilm");
    assert_eq!(r.vectors.len(), 2);
    assert_eq!(r.vectors[1][1], 0.060_424_69);
    assert_eq!(r.input_tokens, 8);
    let v = json_of(&encode_ollama_response(&resp()));
    assert_eq!(v["prompt_eval_count"], 6);
    assert_eq!(
        decode_ollama_response(&encode_ollama_response(&resp())).unwrap(),
        resp()
    );

    let legacy = decode_ollama_legacy_request(
        br#"{"model":"all-minilm","prompt":"Here is an article about llamas..."}"#,
    )
    .unwrap();
    assert_eq!(legacy.inputs, ["Here is an article about llamas..."]);
    assert_eq!(
        json_of(&encode_ollama_legacy_request(&legacy).unwrap()),
        json!({"model": "all-minilm", "prompt": "Here is an article about llamas..."})
    );
    assert_eq!(
        encode_ollama_legacy_request(&req).unwrap_err().field,
        "input"
    );
    assert_eq!(
        decode_ollama_legacy_request(br#"{"model":"m"}"#)
            .unwrap_err()
            .field,
        "prompt"
    );
    let r = decode_ollama_legacy_response(OLLAMA_LEGACY_RESPONSE.as_bytes()).unwrap();
    assert_eq!(r.vectors, [vec![0.567_040_4, 0.009_260_175, 0.231_787_44]]);
    let out = encode_ollama_legacy_response(&resp());
    assert_eq!(out, br#"{"embedding":[1.0,-0.5,0.1]}"#);
    assert!(decode_ollama_response(br#"{"error":"model not found"}"#)
        .unwrap_err()
        .message
        .contains("model not found"));
}

#[test]
fn gemini() {
    let req = decode_gemini_request(GEMINI_REQUEST.as_bytes()).unwrap();
    assert_eq!(req.model, "text-embedding-004");
    assert_eq!(req.inputs, ["What is the meaning of life?"]);
    assert_eq!(req.dimensions, Some(256));
    let snake = decode_gemini_request(
        br#"{"content":{"parts":[{"text":"a"},{"text":"b"}]},"output_dimensionality":8}"#,
    )
    .unwrap();
    assert_eq!(snake.model, "");
    assert_eq!(snake.inputs, ["a\nb"]);
    assert_eq!(snake.dimensions, Some(8));
    let v = json_of(&encode_gemini_request(&req).unwrap());
    assert_eq!(
        v,
        json!({"content": {"parts": [{"text": "What is the meaning of life?"}]}, "outputDimensionality": 256})
    );
    let back = decode_gemini_request(&encode_gemini_request(&req).unwrap()).unwrap();
    assert_eq!(back.inputs, req.inputs);
    assert_eq!(
        decode_gemini_request(
            br#"{"content":{"parts":[{"inlineData":{"mimeType":"image/png","data":"AA"}}]}}"#
        )
        .unwrap_err()
        .field,
        "content.parts[0]"
    );

    let batch = decode_gemini_batch_request(GEMINI_BATCH_REQUEST.as_bytes()).unwrap();
    assert_eq!(batch.model, "text-embedding-004");
    assert_eq!(
        batch.inputs,
        [
            "What is the meaning of life?",
            "How much wood would a woodchuck chuck?"
        ]
    );
    assert_eq!(encode_gemini_request(&batch).unwrap_err().field, "input");
    let v = json_of(&encode_gemini_batch_request(&batch).unwrap());
    assert_eq!(v["requests"][1]["model"], "models/text-embedding-004");
    assert_eq!(
        v["requests"][1]["content"]["parts"][0]["text"],
        "How much wood would a woodchuck chuck?"
    );
    assert_eq!(
        decode_gemini_batch_request(&encode_gemini_batch_request(&batch).unwrap()).unwrap(),
        batch
    );
    assert_eq!(
            decode_gemini_batch_request(br#"{"requests":[{"content":{"parts":[{"text":"a"}]},"outputDimensionality":4},{"content":{"parts":[{"text":"b"}]}}]}"#).unwrap_err().field,
            "requests[1].outputDimensionality"
        );

    let r = decode_gemini_response(GEMINI_RESPONSE.as_bytes()).unwrap();
    assert_eq!(
        r.vectors,
        [vec![0.013_168_523, -0.008_711_934, -0.046_782_676]]
    );
    let r = decode_gemini_batch_response(GEMINI_BATCH_RESPONSE.as_bytes()).unwrap();
    assert_eq!(r.vectors, [vec![0.1, 0.2], vec![0.3, 0.4]]);
    let one = EmbedResponse {
        vectors: vec![vec![0.5, 1.5]],
        ..EmbedResponse::default()
    };
    assert_eq!(
        json_of(&encode_gemini_response(&one)),
        json!({"embedding": {"values": [0.5, 1.5]}})
    );
    assert_eq!(
        decode_gemini_batch_response(&encode_gemini_batch_response(&resp()))
            .unwrap()
            .vectors,
        resp().vectors
    );
    assert!(decode_gemini_response(br#"{"error":{"code":400,"message":"bad"}}"#).is_err());
}

#[test]
fn never_panics_on_truncated_or_garbage_input() {
    let samples = [
        OPENAI_RESPONSE,
        OLLAMA_EMBED_RESPONSE,
        OLLAMA_LEGACY_RESPONSE,
        GEMINI_REQUEST,
        GEMINI_BATCH_REQUEST,
        GEMINI_RESPONSE,
        GEMINI_BATCH_RESPONSE,
        r#"{"data":[{"embedding":"AACAPw=="}],"model":"m"}"#,
        r#"{"data":[{"embedding":[1,"x"]},5],"requests":[5],"embeddings":[5,{"values":5}],"embedding":{"values":[null]}}"#,
        "\u{0}\u{ffff}",
    ];
    for p in prefixes(&samples) {
        let _ = decode_openai_request(p);
        let _ = decode_openai_response(p);
        let _ = decode_ollama_request(p);
        let _ = decode_ollama_response(p);
        let _ = decode_ollama_legacy_request(p);
        let _ = decode_ollama_legacy_response(p);
        let _ = decode_gemini_request(p);
        let _ = decode_gemini_response(p);
        let _ = decode_gemini_batch_request(p);
        let _ = decode_gemini_batch_response(p);
    }
}
