//! The `wa-sip-bridge` binary: parses the command line and starts.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use wa_sip_bridge::config::{load_settings, ENV_CONFIG_FILE};

#[derive(Parser)]
#[command(
    version,
    about = "Bridges WhatsApp voice calls (Wati) to a SIP PBX trunk"
)]
struct Cli {
    /// Configuration file (TOML); every key can be overridden by WSB_<SECTION>__<KEY>.
    #[arg(long, short, global = true, env = ENV_CONFIG_FILE, default_value = "bridge.toml")]
    config: PathBuf,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the bridge (the default).
    Run,
    /// Check the configuration: print every problem with its key, exit 1 if any.
    CheckConfig,
    /// Run one whole call through the real stack on loopback, with no accounts needed.
    Demo,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Run) {
        Command::CheckConfig => check_config(&cli.config),
        Command::Demo => demo(),
        Command::Run => run(&cli.config),
    }
}

fn check_config(path: &std::path::Path) -> ExitCode {
    match load_settings(path, std::env::vars()) {
        Ok(settings) => {
            println!("{}: OK: {}", path.display(), settings.summary());
            ExitCode::SUCCESS
        }
        Err(e) => {
            for p in &e.problems {
                println!("{p}");
            }
            eprintln!("{}: {} problem(s)", path.display(), e.problems.len());
            ExitCode::from(1)
        }
    }
}

fn demo() -> ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(wa_sip_bridge::demo::run::run()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("demo: {e}");
            ExitCode::from(1)
        }
    }
}

fn run(path: &std::path::Path) -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // No colour codes into journald or a file, only on a terminal.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let settings = match wa_sip_bridge::config::Settings::load(path) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{}: invalid configuration:\n{e}", path.display());
            return ExitCode::from(1);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(wa_sip_bridge::run(settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wa-sip-bridge: {e}");
            ExitCode::from(1)
        }
    }
}
