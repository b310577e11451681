# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_llmux_global_optspecs
    string join \n h/help V/version
end

function __fish_llmux_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_llmux_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_llmux_using_subcommand
    set -l cmd (__fish_llmux_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c llmux -n "__fish_llmux_needs_command" -s h -l help -d 'Print help'
complete -c llmux -n "__fish_llmux_needs_command" -s V -l version -d 'Print version'
complete -c llmux -n "__fish_llmux_needs_command" -f -a "serve" -d 'Run the gateway: clients speak OpenAI, Anthropic, Ollama or Gemini; upstreams are of kind ollama, openai, anthropic, gemini or azure'
complete -c llmux -n "__fish_llmux_needs_command" -f -a "demo" -d 'Run the gateway with two mock Ollama nodes and a mock OpenAI provider, ready to try with OpenAI, Anthropic, Ollama or Gemini clients'
complete -c llmux -n "__fish_llmux_needs_command" -f -a "mock" -d 'Run a mock upstream that speaks the Ollama, OpenAI, Anthropic, Gemini and Azure APIs, with fault injection'
complete -c llmux -n "__fish_llmux_needs_command" -f -a "config" -d 'Work with config files'
complete -c llmux -n "__fish_llmux_needs_command" -f -a "migrate" -d 'Apply the store\'s migrations (`store.url`) and exit'
complete -c llmux -n "__fish_llmux_needs_command" -f -a "secrets" -d 'Manage the master key that encrypts provider keys at rest'
complete -c llmux -n "__fish_llmux_needs_command" -f -a "completions" -d 'Print a shell completion script: `llmux completions bash > /etc/bash_completion.d/llmux`'
complete -c llmux -n "__fish_llmux_needs_command" -f -a "man" -d 'Print the man page llmux(1) (roff), generated from this command line; with `--dir`, write it and one page per subcommand (llmux-serve.1, …) there. Used to build packages'
complete -c llmux -n "__fish_llmux_needs_command" -f -a "backup" -d 'Write one encrypted archive of the store (a consistent snapshot, taken while llmux serves) and its master key; the passphrase comes from an environment variable'
complete -c llmux -n "__fish_llmux_needs_command" -f -a "restore" -d 'Restore an archive of `llmux backup` into an empty store, with its master key'
complete -c llmux -n "__fish_llmux_needs_command" -f -a "export" -d 'Write the API-made configuration as one document (JSON, or TOML for a .toml name); provider keys sealed under the passphrase'
complete -c llmux -n "__fish_llmux_needs_command" -f -a "import" -d 'Import a document of `llmux export`: prints what would change; --apply applies it in one transaction (nothing at all when there is a conflict)'
complete -c llmux -n "__fish_llmux_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c llmux -n "__fish_llmux_using_subcommand serve" -s c -l config -d 'Config file (TOML). Default: ./llmux.toml if present, else built-in defaults' -r -F
complete -c llmux -n "__fish_llmux_using_subcommand serve" -l listen -d 'Address to listen on, e.g. 0.0.0.0:4000 (overrides server.listen)' -r
complete -c llmux -n "__fish_llmux_using_subcommand serve" -s h -l help -d 'Print help'
complete -c llmux -n "__fish_llmux_using_subcommand demo" -l listen -d 'Address the gateway listens on' -r
complete -c llmux -n "__fish_llmux_using_subcommand demo" -s h -l help -d 'Print help'
complete -c llmux -n "__fish_llmux_using_subcommand mock" -l port -d 'Port to listen on (0 picks a free one)' -r
complete -c llmux -n "__fish_llmux_using_subcommand mock" -l host -d 'Address to bind' -r
complete -c llmux -n "__fish_llmux_using_subcommand mock" -l name -d 'Node name, shown in replies and in the x-mock-node header' -r
complete -c llmux -n "__fish_llmux_using_subcommand mock" -l models -d 'Models served, comma-separated' -r
complete -c llmux -n "__fish_llmux_using_subcommand mock" -l loaded -d 'Models shown as loaded in /api/ps at start, comma-separated' -r
complete -c llmux -n "__fish_llmux_using_subcommand mock" -l ttft -d 'Seconds before the first chunk (fractions allowed)' -r
complete -c llmux -n "__fish_llmux_using_subcommand mock" -l chunk-delay -d 'Seconds between chunks' -r
complete -c llmux -n "__fish_llmux_using_subcommand mock" -l chunks -d 'Tokens per reply' -r
complete -c llmux -n "__fish_llmux_using_subcommand mock" -l dims -d 'Embedding dimensions' -r
complete -c llmux -n "__fish_llmux_using_subcommand mock" -l api-key -d 'Require `Authorization: Bearer KEY`' -r
complete -c llmux -n "__fish_llmux_using_subcommand mock" -l keys -d 'More accepted keys, comma-separated' -r
complete -c llmux -n "__fish_llmux_using_subcommand mock" -l revoked-keys -d 'Keys answered with 401, as revoked keys are, comma-separated' -r
complete -c llmux -n "__fish_llmux_using_subcommand mock" -l limited-keys -d 'Keys answered with 429 and Retry-After, as rate-limited keys are, comma-separated' -r
complete -c llmux -n "__fish_llmux_using_subcommand mock" -l fail-rate -d 'Fraction of generation calls that fail with --fail-status (deterministic spacing)' -r
complete -c llmux -n "__fish_llmux_using_subcommand mock" -l fail-status -d 'HTTP status of injected failures' -r
complete -c llmux -n "__fish_llmux_using_subcommand mock" -l retry-after -d 'Retry-After seconds on injected failures' -r
complete -c llmux -n "__fish_llmux_using_subcommand mock" -l drop-after -d 'Cut the connection after N streamed chunks' -r
complete -c llmux -n "__fish_llmux_using_subcommand mock" -l stall-after -d 'Stop sending (but keep the connection) after N streamed chunks' -r
complete -c llmux -n "__fish_llmux_using_subcommand mock" -l truncate-after -d 'End streams cleanly after N chunks, without the dialect\'s final event' -r
complete -c llmux -n "__fish_llmux_using_subcommand mock" -l registry -d 'Models `/api/pull` can fetch, comma-separated (default: common Ollama library names)' -r
complete -c llmux -n "__fish_llmux_using_subcommand mock" -l pull-step -d 'Seconds between two `/api/pull` progress lines' -r
complete -c llmux -n "__fish_llmux_using_subcommand mock" -l hang -d 'Accept generation calls and never answer'
complete -c llmux -n "__fish_llmux_using_subcommand mock" -s h -l help -d 'Print help'
complete -c llmux -n "__fish_llmux_using_subcommand config; and not __fish_seen_subcommand_from check help" -s h -l help -d 'Print help'
complete -c llmux -n "__fish_llmux_using_subcommand config; and not __fish_seen_subcommand_from check help" -f -a "check" -d 'Validate a config file and print the routing table it compiles to; exit 1 with the reason if invalid. Upstream URLs that look wrong for their kind get a warning on stderr'
complete -c llmux -n "__fish_llmux_using_subcommand config; and not __fish_seen_subcommand_from check help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c llmux -n "__fish_llmux_using_subcommand config; and __fish_seen_subcommand_from check" -s c -l config -d 'The same, as an option (like `serve --config`)' -r -F
complete -c llmux -n "__fish_llmux_using_subcommand config; and __fish_seen_subcommand_from check" -s h -l help -d 'Print help'
complete -c llmux -n "__fish_llmux_using_subcommand config; and __fish_seen_subcommand_from help" -f -a "check" -d 'Validate a config file and print the routing table it compiles to; exit 1 with the reason if invalid. Upstream URLs that look wrong for their kind get a warning on stderr'
complete -c llmux -n "__fish_llmux_using_subcommand config; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c llmux -n "__fish_llmux_using_subcommand migrate" -s c -l config -d 'Config file (TOML). Default: ./llmux.toml if present, else built-in defaults' -r -F
complete -c llmux -n "__fish_llmux_using_subcommand migrate" -s h -l help -d 'Print help'
complete -c llmux -n "__fish_llmux_using_subcommand secrets; and not __fish_seen_subcommand_from rotate help" -s h -l help -d 'Print help'
complete -c llmux -n "__fish_llmux_using_subcommand secrets; and not __fish_seen_subcommand_from rotate help" -f -a "rotate" -d 'Generate a new master key, keep the old one for decryption, re-encrypt every provider key'
complete -c llmux -n "__fish_llmux_using_subcommand secrets; and not __fish_seen_subcommand_from rotate help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c llmux -n "__fish_llmux_using_subcommand secrets; and __fish_seen_subcommand_from rotate" -s c -l config -d 'Config file (TOML). Default: ./llmux.toml if present, else built-in defaults' -r -F
complete -c llmux -n "__fish_llmux_using_subcommand secrets; and __fish_seen_subcommand_from rotate" -s h -l help -d 'Print help'
complete -c llmux -n "__fish_llmux_using_subcommand secrets; and __fish_seen_subcommand_from help" -f -a "rotate" -d 'Generate a new master key, keep the old one for decryption, re-encrypt every provider key'
complete -c llmux -n "__fish_llmux_using_subcommand secrets; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c llmux -n "__fish_llmux_using_subcommand completions" -s h -l help -d 'Print help'
complete -c llmux -n "__fish_llmux_using_subcommand man" -l dir -d 'Directory to write every page to' -r -F
complete -c llmux -n "__fish_llmux_using_subcommand man" -s h -l help -d 'Print help'
complete -c llmux -n "__fish_llmux_using_subcommand backup" -s c -l config -d 'Config file (TOML). Default: ./llmux.toml if present, else built-in defaults' -r -F
complete -c llmux -n "__fish_llmux_using_subcommand backup" -l passphrase-env -d 'The environment variable that holds the passphrase (default LLMUX_BACKUP_PASSPHRASE)' -r
complete -c llmux -n "__fish_llmux_using_subcommand backup" -l to -d 'The archive to write (atomically, mode 0600)' -r -F
complete -c llmux -n "__fish_llmux_using_subcommand backup" -s h -l help -d 'Print help'
complete -c llmux -n "__fish_llmux_using_subcommand restore" -s c -l config -d 'Config file (TOML). Default: ./llmux.toml if present, else built-in defaults' -r -F
complete -c llmux -n "__fish_llmux_using_subcommand restore" -l passphrase-env -d 'The environment variable that holds the passphrase (default LLMUX_BACKUP_PASSPHRASE)' -r
complete -c llmux -n "__fish_llmux_using_subcommand restore" -l from -d 'The archive to read' -r -F
complete -c llmux -n "__fish_llmux_using_subcommand restore" -s h -l help -d 'Print help'
complete -c llmux -n "__fish_llmux_using_subcommand export" -s c -l config -d 'Config file (TOML). Default: ./llmux.toml if present, else built-in defaults' -r -F
complete -c llmux -n "__fish_llmux_using_subcommand export" -l passphrase-env -d 'The environment variable that holds the passphrase (default LLMUX_BACKUP_PASSPHRASE)' -r
complete -c llmux -n "__fish_llmux_using_subcommand export" -l to -d 'The document to write' -r -F
complete -c llmux -n "__fish_llmux_using_subcommand export" -s h -l help -d 'Print help'
complete -c llmux -n "__fish_llmux_using_subcommand import" -s c -l config -d 'Config file (TOML). Default: ./llmux.toml if present, else built-in defaults' -r -F
complete -c llmux -n "__fish_llmux_using_subcommand import" -l passphrase-env -d 'The environment variable that holds the passphrase (default LLMUX_BACKUP_PASSPHRASE)' -r
complete -c llmux -n "__fish_llmux_using_subcommand import" -l from -d 'The document to read' -r -F
complete -c llmux -n "__fish_llmux_using_subcommand import" -l apply -d 'Apply the changes (default: a dry run)'
complete -c llmux -n "__fish_llmux_using_subcommand import" -s h -l help -d 'Print help'
complete -c llmux -n "__fish_llmux_using_subcommand help; and not __fish_seen_subcommand_from serve demo mock config migrate secrets completions man backup restore export import help" -f -a "serve" -d 'Run the gateway: clients speak OpenAI, Anthropic, Ollama or Gemini; upstreams are of kind ollama, openai, anthropic, gemini or azure'
complete -c llmux -n "__fish_llmux_using_subcommand help; and not __fish_seen_subcommand_from serve demo mock config migrate secrets completions man backup restore export import help" -f -a "demo" -d 'Run the gateway with two mock Ollama nodes and a mock OpenAI provider, ready to try with OpenAI, Anthropic, Ollama or Gemini clients'
complete -c llmux -n "__fish_llmux_using_subcommand help; and not __fish_seen_subcommand_from serve demo mock config migrate secrets completions man backup restore export import help" -f -a "mock" -d 'Run a mock upstream that speaks the Ollama, OpenAI, Anthropic, Gemini and Azure APIs, with fault injection'
complete -c llmux -n "__fish_llmux_using_subcommand help; and not __fish_seen_subcommand_from serve demo mock config migrate secrets completions man backup restore export import help" -f -a "config" -d 'Work with config files'
complete -c llmux -n "__fish_llmux_using_subcommand help; and not __fish_seen_subcommand_from serve demo mock config migrate secrets completions man backup restore export import help" -f -a "migrate" -d 'Apply the store\'s migrations (`store.url`) and exit'
complete -c llmux -n "__fish_llmux_using_subcommand help; and not __fish_seen_subcommand_from serve demo mock config migrate secrets completions man backup restore export import help" -f -a "secrets" -d 'Manage the master key that encrypts provider keys at rest'
complete -c llmux -n "__fish_llmux_using_subcommand help; and not __fish_seen_subcommand_from serve demo mock config migrate secrets completions man backup restore export import help" -f -a "completions" -d 'Print a shell completion script: `llmux completions bash > /etc/bash_completion.d/llmux`'
complete -c llmux -n "__fish_llmux_using_subcommand help; and not __fish_seen_subcommand_from serve demo mock config migrate secrets completions man backup restore export import help" -f -a "man" -d 'Print the man page llmux(1) (roff), generated from this command line; with `--dir`, write it and one page per subcommand (llmux-serve.1, …) there. Used to build packages'
complete -c llmux -n "__fish_llmux_using_subcommand help; and not __fish_seen_subcommand_from serve demo mock config migrate secrets completions man backup restore export import help" -f -a "backup" -d 'Write one encrypted archive of the store (a consistent snapshot, taken while llmux serves) and its master key; the passphrase comes from an environment variable'
complete -c llmux -n "__fish_llmux_using_subcommand help; and not __fish_seen_subcommand_from serve demo mock config migrate secrets completions man backup restore export import help" -f -a "restore" -d 'Restore an archive of `llmux backup` into an empty store, with its master key'
complete -c llmux -n "__fish_llmux_using_subcommand help; and not __fish_seen_subcommand_from serve demo mock config migrate secrets completions man backup restore export import help" -f -a "export" -d 'Write the API-made configuration as one document (JSON, or TOML for a .toml name); provider keys sealed under the passphrase'
complete -c llmux -n "__fish_llmux_using_subcommand help; and not __fish_seen_subcommand_from serve demo mock config migrate secrets completions man backup restore export import help" -f -a "import" -d 'Import a document of `llmux export`: prints what would change; --apply applies it in one transaction (nothing at all when there is a conflict)'
complete -c llmux -n "__fish_llmux_using_subcommand help; and not __fish_seen_subcommand_from serve demo mock config migrate secrets completions man backup restore export import help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c llmux -n "__fish_llmux_using_subcommand help; and __fish_seen_subcommand_from config" -f -a "check" -d 'Validate a config file and print the routing table it compiles to; exit 1 with the reason if invalid. Upstream URLs that look wrong for their kind get a warning on stderr'
complete -c llmux -n "__fish_llmux_using_subcommand help; and __fish_seen_subcommand_from secrets" -f -a "rotate" -d 'Generate a new master key, keep the old one for decryption, re-encrypt every provider key'
