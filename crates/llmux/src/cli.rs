//! The command line: `serve`, `demo`, `mock`, `config check`, `migrate`, `secrets rotate`,
//! `completions` (and the hidden `man`, for packaging), `backup`, `restore`, `export`,
//! `import`.

use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "llmux",
    version,
    about = "An LLM gateway: one address for OpenAI, Anthropic, Ollama and Gemini clients, in front of \
             ollama, openai (and OpenAI-compatible), anthropic, gemini and azure upstreams."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the gateway: clients speak OpenAI, Anthropic, Ollama or Gemini; upstreams are of kind
    /// ollama, openai, anthropic, gemini or azure.
    Serve {
        /// Config file (TOML). Default: ./llmux.toml if present, else built-in defaults.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Address to listen on, e.g. 0.0.0.0:4000 (overrides server.listen).
        #[arg(long)]
        listen: Option<SocketAddr>,
    },
    /// Run the gateway with two mock Ollama nodes and a mock OpenAI provider, ready to try with
    /// OpenAI, Anthropic, Ollama or Gemini clients.
    Demo {
        /// Address the gateway listens on.
        #[arg(long, default_value = "127.0.0.1:4000")]
        listen: SocketAddr,
    },
    /// Run a mock upstream that speaks the Ollama, OpenAI, Anthropic, Gemini and Azure APIs, with
    /// fault injection.
    #[command(after_help = MOCK_HELP)]
    Mock(Box<MockArgs>),
    /// Work with config files.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Apply the store's migrations (`store.url`) and exit.
    Migrate {
        /// Config file (TOML). Default: ./llmux.toml if present, else built-in defaults.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Manage the master key that encrypts provider keys at rest.
    Secrets {
        #[command(subcommand)]
        action: SecretsAction,
    },
    /// Print a shell completion script: `llmux completions bash > /etc/bash_completion.d/llmux`.
    Completions {
        /// The shell: bash, zsh, fish (also elvish, powershell).
        shell: clap_complete::Shell,
    },
    /// Print the man page llmux(1) (roff), generated from this command line; with `--dir`,
    /// write it and one page per subcommand (llmux-serve.1, …) there. Used to build packages.
    #[command(hide = true)]
    Man {
        /// Directory to write every page to.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Write one encrypted archive of the store (a consistent snapshot, taken while llmux
    /// serves) and its master key; the passphrase comes from an environment variable.
    Backup {
        #[command(flatten)]
        with: Passphrase,
        /// The archive to write (atomically, mode 0600).
        #[arg(long, value_name = "PATH")]
        to: PathBuf,
    },
    /// Restore an archive of `llmux backup` into an empty store, with its master key.
    Restore {
        #[command(flatten)]
        with: Passphrase,
        /// The archive to read.
        #[arg(long, value_name = "PATH")]
        from: PathBuf,
    },
    /// Write the API-made configuration as one document (JSON, or TOML for a .toml name);
    /// provider keys sealed under the passphrase.
    Export {
        #[command(flatten)]
        with: Passphrase,
        /// The document to write.
        #[arg(long, value_name = "PATH")]
        to: PathBuf,
    },
    /// Import a document of `llmux export`: prints what would change; --apply applies it in one
    /// transaction (nothing at all when there is a conflict).
    Import {
        #[command(flatten)]
        with: Passphrase,
        /// The document to read.
        #[arg(long, value_name = "PATH")]
        from: PathBuf,
        /// Apply the changes (default: a dry run).
        #[arg(long)]
        apply: bool,
    },
}

/// The config and passphrase options of backup, restore, export and import.
#[derive(Args, Debug, Clone)]
pub struct Passphrase {
    /// Config file (TOML). Default: ./llmux.toml if present, else built-in defaults.
    #[arg(long, short, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The environment variable that holds the passphrase (default LLMUX_BACKUP_PASSPHRASE).
    #[arg(long, value_name = "VAR")]
    pub passphrase_env: Option<String>,
}

/// What `llmux mock --help` says besides its options: the test endpoints.
const MOCK_HELP: &str = "\
Test endpoints:
  GET  /_mock/stats    what the node saw (requests, last body, last x-* headers, hook calls)
  POST /_mock/faults   change fault injection (JSON: fail_rate, fail_status, hang, ...)
  POST /_mock/models   change the served models (a JSON array of names)
  POST /hook           an external hook for llmux's [[hooks]] (docs/hooks.md); the answer
                       follows a marker in the prompt: deny-me (deny), modify-me (modify:
                       the marker becomes modified-by-hook and max_tokens 5), slow-hook (no
                       answer for 30 s), garbage-hook (not JSON), error-hook (500); any
                       other prompt is allowed";

#[derive(Subcommand, Debug)]
pub enum SecretsAction {
    /// Generate a new master key, keep the old one for decryption, re-encrypt every provider key.
    Rotate {
        /// Config file (TOML). Default: ./llmux.toml if present, else built-in defaults.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
pub enum ConfigAction {
    /// Validate a config file and print the routing table it compiles to; exit 1 with the reason
    /// if invalid. Upstream URLs that look wrong for their kind get a warning on stderr.
    Check {
        /// Config file (TOML). Default: ./llmux.toml.
        #[arg(conflicts_with = "config")]
        file: Option<PathBuf>,
        /// The same, as an option (like `serve --config`).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
}

#[derive(Args, Debug, Clone)]
pub struct MockArgs {
    /// Port to listen on (0 picks a free one).
    #[arg(long, default_value_t = 11434)]
    pub port: u16,
    /// Address to bind.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: std::net::IpAddr,
    /// Node name, shown in replies and in the x-mock-node header.
    #[arg(long, default_value = "mock")]
    pub name: String,
    /// Models served, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "llama3:latest")]
    pub models: Vec<String>,
    /// Models shown as loaded in /api/ps at start, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub loaded: Vec<String>,
    /// Seconds before the first chunk (fractions allowed).
    #[arg(long, default_value_t = 0.0)]
    pub ttft: f64,
    /// Seconds between chunks.
    #[arg(long, default_value_t = 0.0)]
    pub chunk_delay: f64,
    /// Tokens per reply.
    #[arg(long, default_value_t = 8)]
    pub chunks: usize,
    /// Embedding dimensions.
    #[arg(long, default_value_t = 8)]
    pub dims: usize,
    /// Require `Authorization: Bearer KEY`.
    #[arg(long)]
    pub api_key: Option<String>,
    /// More accepted keys, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub keys: Vec<String>,
    /// Keys answered with 401, as revoked keys are, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub revoked_keys: Vec<String>,
    /// Keys answered with 429 and Retry-After, as rate-limited keys are, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub limited_keys: Vec<String>,
    /// Fraction of generation calls that fail with --fail-status (deterministic spacing).
    #[arg(long, default_value_t = 0.0)]
    pub fail_rate: f64,
    /// HTTP status of injected failures.
    #[arg(long, default_value_t = 500)]
    pub fail_status: u16,
    /// Retry-After seconds on injected failures.
    #[arg(long)]
    pub retry_after: Option<u64>,
    /// Cut the connection after N streamed chunks.
    #[arg(long)]
    pub drop_after: Option<usize>,
    /// Stop sending (but keep the connection) after N streamed chunks.
    #[arg(long)]
    pub stall_after: Option<usize>,
    /// End streams cleanly after N chunks, without the dialect's final event.
    #[arg(long)]
    pub truncate_after: Option<usize>,
    /// Accept generation calls and never answer.
    #[arg(long)]
    pub hang: bool,
    /// Models `/api/pull` can fetch, comma-separated (default: common Ollama library names).
    #[arg(long, value_delimiter = ',')]
    pub registry: Vec<String>,
    /// Seconds between two `/api/pull` progress lines.
    #[arg(long, default_value_t = 0.0)]
    pub pull_step: f64,
}
