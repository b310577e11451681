//! The fuzz targets' seed corpus as an ordinary test: every recorded provider sample, each of
//! its prefixes and a few hostile inputs go through every parser (`llmux_wire::fuzzing`) without a panic.

use std::path::Path;

fn corpus() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut dirs = vec![root];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if let Ok(bytes) = std::fs::read(&path) {
                out.push(bytes);
            }
        }
    }
    out.extend(
        [
            &b""[..],
            b"{",
            b"[]",
            b"null",
            b"{\"model\":\"\\ud800\"}",
            b"data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":18446744073709551615}]}}]}\n\n",
            b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":999999999}\n\n",
            b"\xff\xfe\x00\x00",
            &[b'['; 4096],
        ]
        .map(<[u8]>::to_vec),
    );
    out
}

#[test]
fn every_parser_survives_the_corpus_and_its_prefixes() {
    let corpus = corpus();
    assert!(corpus.len() > 30, "fixtures missing: {}", corpus.len());
    for sample in &corpus {
        // Every prefix of short samples; a spread of prefixes of long ones.
        let step = (sample.len() / 64).max(1);
        for end in (0..=sample.len()).step_by(step) {
            let data = &sample[..end];
            llmux_wire::fuzzing::peek(data);
            llmux_wire::fuzzing::decoders(data);
            llmux_wire::fuzzing::streams(data);
        }
    }
}
