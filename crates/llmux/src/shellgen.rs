//! `llmux completions SHELL` and the hidden `llmux man`: both generated from the clap
//! definition in `cli.rs`, so they never drift from the real command line.

use clap::CommandFactory;
use std::io::Write;

/// Writes the completion script for `shell` to stdout.
pub fn completions(shell: clap_complete::Shell) -> Result<(), String> {
    let mut cmd = crate::cli::Cli::command();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, "llmux", &mut out);
    write_stdout(&out)
}

/// Writes the man page `llmux(1)` (roff) to stdout, or with `dir` every page (`llmux.1` and
/// one per subcommand, `llmux-serve.1`, …) into that directory; the Debian package ships them.
pub fn man(dir: Option<&std::path::Path>) -> Result<(), String> {
    let cmd = crate::cli::Cli::command();
    if let Some(dir) = dir {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        return clap_mangen::generate_to(cmd, dir)
            .map_err(|e| format!("cannot write the man pages to {}: {e}", dir.display()));
    }
    let mut out = Vec::new();
    clap_mangen::Man::new(cmd)
        .render(&mut out)
        .map_err(|e| format!("cannot render the man page: {e}"))?;
    write_stdout(&out)
}

fn write_stdout(bytes: &[u8]) -> Result<(), String> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(bytes)
        .and_then(|()| stdout.flush())
        .map_err(|e| format!("cannot write to stdout: {e}"))
}
