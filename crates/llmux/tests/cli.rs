//! End-to-end: the command line — `config check`, `--version`, graceful stop on SIGTERM.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

fn llmux(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_llmux"))
        .args(args)
        .output()
        .unwrap()
}

fn write(dir: &tempfile::TempDir, text: &str) -> String {
    let path = dir.path().join("llmux.toml");
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

#[test]
fn version() {
    let out = llmux(&["--version"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("llmux "));
}

#[test]
fn config_check_prints_the_routing_table() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        &dir,
        r#"
[routing]
strategy = "lowest_latency"
fallbacks = { "gpt-4o" = ["llama3:70b"] }

[[upstreams]]
name = "gpu-a"
kind = "ollama"
url = "http://10.0.0.5:11434"

[[upstreams]]
name = "openai"
kind = "openai"
url = "https://api.openai.com/v1"
keys = ["sk-abcdefghijklmnop1234"]
models = ["gpt-4o", "gpt-4o-mini"]
"#,
    );
    let out = llmux(&["config", "check", &path]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("strategy:  lowest_latency"));
    assert!(text.contains("gpu-a (ollama) http://10.0.0.5:11434"));
    assert!(text.contains("discovered from /api/tags"));
    assert!(text.contains("gpt-4o, gpt-4o-mini"));
    assert!(text.contains("gpt-4o -> llama3:70b"));
    // The key is masked, never printed.
    assert!(!text.contains("sk-abcdefghijklmnop1234"));
}

#[test]
fn config_check_rejects_bad_files_with_the_key_and_reason() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("[server]\nlisten = \"127.0.0.1:4000\"\nbogus = 1\n", "server.bogus"),
        (
            "[[upstreams]]\nname = \"a\"\nkind = \"ollama\"\nurl = \"http://x:1\"\n[[upstreams]]\nname = \"a\"\nkind = \"ollama\"\nurl = \"http://y:1\"\n",
            "upstreams[1].name",
        ),
        ("[[upstreams]]\nname = \"a\"\nkind = \"ollama\"\nurl = \"not a url\"\n", "upstreams[0].url"),
        (
            "[[upstreams]]\nname = \"a\"\nkind = \"ollama\"\nurl = \"http://x:1\"\ntimeouts = { connect = \"5 parsecs\" }\n",
            "upstreams[0].timeouts.connect",
        ),
        ("[admin]\ntoken = \"${LLMUX_TEST_SURELY_UNSET_VAR}\"\n", "LLMUX_TEST_SURELY_UNSET_VAR"),
    ];
    for (text, expected) in cases {
        let path = write(&dir, text);
        let out = llmux(&["config", "check", &path]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{text}");
        assert!(err.contains(expected), "expected {expected:?} in {err:?}");
    }
    let out = llmux(&["config", "check", "/nonexistent/llmux.toml"]);
    assert_eq!(out.status.code(), Some(1));
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_an_open_stream_finish_then_exits_zero() {
    use futures_util::StreamExt;
    use std::io::{BufRead, BufReader};
    use std::time::{Duration, Instant};

    let up = llmux_mock::MockServer::start(llmux_mock::MockConfig {
        name: "slow".into(),
        chunks: 15,
        chunk_delay: Duration::from_millis(200),
        ..llmux_mock::MockConfig::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        &dir,
        &format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[[upstreams]]\nname = \"slow\"\nkind = \"ollama\"\nurl = \"{}\"\n",
            up.url()
        ),
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_llmux"))
        .args(["serve", "--config", &path])
        // The default store (`llmux-data/` under the working directory) lands in the temp dir.
        .current_dir(dir.path())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = loop {
        let line = lines.next().unwrap().unwrap();
        if let Some(a) = line.strip_prefix("llmux listening on ") {
            break a.trim().to_string();
        }
    };
    std::thread::spawn(move || for _ in lines {});

    let started = Instant::now();
    let resp = reqwest::Client::new()
        .post(format!("{addr}/api/chat"))
        .json(
            &serde_json::json!({"model": "llama3", "messages": [{"role": "user", "content": "x"}]}),
        )
        .send()
        .await
        .unwrap();
    let mut body = resp.bytes_stream();
    body.next().await.unwrap().unwrap();
    // The scenario (not a wait for something): SIGTERM one second into a three-second stream.
    tokio::time::sleep(Duration::from_secs(1).saturating_sub(started.elapsed())).await;
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());

    let mut text = Vec::new();
    while let Some(chunk) = body.next().await {
        text.extend_from_slice(&chunk.unwrap());
    }
    let last = String::from_utf8_lossy(&text)
        .lines()
        .last()
        .unwrap_or_default()
        .to_string();
    assert!(
        last.contains("\"done\":true"),
        "stream did not finish: {last}"
    );
    assert!(started.elapsed() >= Duration::from_millis(2500));
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
}

#[test]
fn config_check_takes_config_option_or_the_local_file_and_warns_on_url_shapes() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        &dir,
        "[[upstreams]]\nname = \"oai\"\nkind = \"openai\"\nurl = \"https://api.openai.com\"\nmodels = [\"gpt-4o\"]\n\
         [[upstreams]]\nname = \"node\"\nkind = \"ollama\"\nurl = \"http://10.0.0.5:11434/v1\"\n",
    );
    for args in [
        vec!["config", "check", path.as_str()],
        vec!["config", "check", "--config", path.as_str()],
        vec!["config", "check"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_llmux"))
            .args(&args)
            .current_dir(dir.path())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{args:?}: {err}");
        assert!(text.contains("config OK"), "{args:?}: {text}");
        assert!(
            err.contains("warning: upstream 'oai' (openai)"),
            "{args:?}: {err}"
        );
        assert!(
            err.contains("warning: upstream 'node' (ollama)"),
            "{args:?}: {err}"
        );
    }
    // No file named and none here: says what to do.
    let empty = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_llmux"))
        .args(["config", "check"])
        .current_dir(empty.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no llmux.toml in this directory") && err.contains("config check FILE"),
        "{err}"
    );
    // A clean file: no warning.
    let path = write(
        &dir,
        "[[upstreams]]\nname = \"oai\"\nkind = \"openai\"\nurl = \"https://api.openai.com/v1\"\nmodels = [\"gpt-4o\"]\n",
    );
    let out = llmux(&["config", "check", &path]);
    assert!(out.status.success());
    assert!(!String::from_utf8_lossy(&out.stderr).contains("warning"));
}

#[test]
fn help_names_every_dialect_and_upstream_kind() {
    for args in [vec!["--help"], vec!["serve", "--help"]] {
        let out = llmux(&args);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        for word in [
            "OpenAI",
            "Anthropic",
            "Ollama",
            "Gemini",
            "ollama",
            "openai",
            "anthropic",
            "gemini",
            "azure",
        ] {
            assert!(text.contains(word), "{args:?} lacks {word}: {text}");
        }
    }
    let text = String::from_utf8_lossy(&llmux(&["serve", "--help"]).stdout).to_string();
    assert!(text.contains("--listen"), "{text}");
}

#[test]
fn serve_listen_overrides_the_config_file() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, "[server]\nlisten = \"127.0.0.1:1\"\n");
    // Port 0: the OS picks the port, and the listening line reports it.
    let mut child = Command::new(env!("CARGO_BIN_EXE_llmux"))
        .args(["serve", "--config", &path, "--listen", "127.0.0.1:0"])
        .current_dir(dir.path())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    let addr = loop {
        let Some(Ok(line)) = lines.next() else {
            let _ = child.kill();
            panic!("no listening line: {seen:#?}");
        };
        if let Some(a) = line.strip_prefix("llmux listening on ") {
            break a.trim().to_string();
        }
        seen.push(line);
    };
    let _ = child.kill();
    let _ = child.wait();
    let port: u16 = addr
        .strip_prefix("http://127.0.0.1:")
        .unwrap_or_else(|| panic!("not the --listen address: {addr}"))
        .parse()
        .unwrap();
    assert!(port > 1, "{addr}");
}

#[test]
fn completions_for_bash_zsh_and_fish_name_the_subcommands() {
    for shell in ["bash", "zsh", "fish"] {
        let out = llmux(&["completions", shell]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{shell}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        for sub in [
            "serve",
            "config",
            "migrate",
            "secrets",
            "completions",
            "listen",
            "backup",
            "restore",
            "export",
            "import",
            "passphrase-env",
        ] {
            assert!(text.contains(sub), "{shell} completion lacks {sub}");
        }
    }
    // The bash script loads and registers itself.
    let script = llmux(&["completions", "bash"]).stdout;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("llmux.bash");
    std::fs::write(&path, script).unwrap();
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!("source {} && complete -p llmux", path.display()))
        .output()
        .unwrap();
    let registered = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && registered.contains("llmux"),
        "{registered}"
    );

    let out = llmux(&["completions", "tcsh"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("tcsh") && err.contains("bash"), "{err}");
}

#[test]
fn the_man_page_is_generated_from_the_command_line() {
    let out = llmux(&["man"]);
    let page = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(
        page.starts_with(".ie") || page.contains(".TH llmux 1"),
        "{page}"
    );
    for text in ["llmux", "serve", "completions", env!("CARGO_PKG_VERSION")] {
        assert!(page.contains(text), "the man page lacks {text}");
    }
    // Hidden from the help, so it does not crowd the list of what operators run.
    let help = String::from_utf8_lossy(&llmux(&["--help"]).stdout).to_string();
    assert!(
        help.contains("completions") && !help.contains("\n  man "),
        "{help}"
    );
}

/// The man pages and completion scripts the Debian package ships are committed under
/// `packaging/` (so `cargo deb` needs no build step); they must be what the binary generates.
#[test]
fn the_packaged_man_pages_and_completions_match_the_command_line() {
    let packaging = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../packaging");
    let regenerate = "regenerate them: scripts/deb-test --regenerate";
    let dir = tempfile::tempdir().unwrap();
    let out = llmux(&["man", "--dir", &dir.path().to_string_lossy()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut pages: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    pages.sort();
    let mut shipped: Vec<String> = std::fs::read_dir(packaging.join("man"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    shipped.sort();
    assert_eq!(pages, shipped, "{regenerate}");
    assert!(pages.contains(&"llmux-serve.1".to_string()));
    for page in &pages {
        let fresh = std::fs::read(dir.path().join(page)).unwrap();
        let committed = std::fs::read(packaging.join("man").join(page)).unwrap();
        assert!(
            fresh == committed,
            "packaging/man/{page} is stale: {regenerate}"
        );
    }
    for (shell, file) in [
        ("bash", "llmux.bash"),
        ("zsh", "_llmux"),
        ("fish", "llmux.fish"),
    ] {
        let fresh = llmux(&["completions", shell]).stdout;
        let committed = std::fs::read(packaging.join("completions").join(file)).unwrap();
        assert!(
            fresh == committed,
            "packaging/completions/{file} is stale: {regenerate}"
        );
    }
}

/// The passphrase of backup, restore, export and import comes from an environment variable:
/// `LLMUX_BACKUP_PASSPHRASE`, or the one `--passphrase-env` names. Unset or empty is an error
/// naming the variable, and nothing is written; export refuses a store that does not exist.
#[test]
fn the_passphrase_comes_from_the_named_variable_and_a_missing_one_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        &dir,
        &format!(
            "[store]\nurl = \"sqlite://{}/data/llmux.db\"\n",
            dir.path().display()
        ),
    );
    let archive = dir.path().join("a.llmux");
    let to = archive.to_string_lossy().into_owned();
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_llmux"));
        cmd.args(args)
            .current_dir(dir.path())
            .env_remove("LLMUX_BACKUP_PASSPHRASE")
            .env_remove("LLMUX_MASTER_KEY");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    for sub in ["backup", "export"] {
        let (ok, err) = run(&[sub, "--config", &config, "--to", &to], &[]);
        assert!(
            !ok && err.contains("LLMUX_BACKUP_PASSPHRASE") && err.contains("--passphrase-env"),
            "{sub}: {err}"
        );
        let (ok, err) = run(
            &[
                sub,
                "--config",
                &config,
                "--to",
                &to,
                "--passphrase-env",
                "OPS_PASS",
            ],
            &[
                ("OPS_PASS", ""),
                ("LLMUX_BACKUP_PASSPHRASE", "not this one"),
            ],
        );
        assert!(!ok && err.contains("OPS_PASS"), "{sub}: {err}");
        assert!(!archive.exists(), "{sub}: nothing written");
    }
    // With the named variable set, the next check speaks: there is no store to read.
    for sub in ["backup", "export"] {
        let (ok, err) = run(
            &[
                sub,
                "--config",
                &config,
                "--to",
                &to,
                "--passphrase-env",
                "OPS_PASS",
            ],
            &[("OPS_PASS", "correct horse")],
        );
        assert!(!ok && err.contains("no SQLite store at"), "{sub}: {err}");
        assert!(
            !archive.exists() && !dir.path().join("data").exists(),
            "{sub}"
        );
    }
    let (ok, err) = run(
        &[
            "restore",
            "--config",
            &config,
            "--from",
            &to,
            "--passphrase-env",
            "OPS_PASS",
        ],
        &[("OPS_PASS", "correct horse")],
    );
    assert!(!ok && err.contains("a.llmux"), "restore of nothing: {err}");
}
