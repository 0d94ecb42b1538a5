//! The `rolecall` binary: parses the command line, sets up logging, loads the configuration,
//! binds the listeners and hands them to the library.
//!
//! Exit codes: 0 clean stop; 64 bad configuration or command line (before anything is bound);
//! 1 runtime initialisation error. `rolecall check`: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use rolecall::config::{Config, EXAMPLE};

const EX_USAGE: u8 = 64;

#[derive(Parser)]
#[command(
    version,
    about = "Tells HAProxy and Kubernetes whether a node's live Redis connections go to Sentinel's writable master"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon.
    Run {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Run one complete check and print a Nagios-style line (exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN).
    Check {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Configuration tools.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate a configuration file.
    Check {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Print an annotated example configuration.
    Example,
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("ROLECALL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

fn load(path: &std::path::Path) -> Result<Config, ExitCode> {
    Config::load(path).map_err(|e| {
        eprintln!("rolecall: {e}");
        ExitCode::from(EX_USAGE)
    })
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { EX_USAGE } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    match cli.command {
        Command::Config {
            command: ConfigCommand::Example,
        } => {
            print!("{EXAMPLE}");
            ExitCode::SUCCESS
        }
        Command::Config {
            command: ConfigCommand::Check { config },
        } => match load(&config) {
            Ok(c) => {
                if let Err(e) = c.check_runnable() {
                    eprintln!("rolecall: warning: {e}");
                }
                println!(
                    "{}: ok (node {} by {}; {} group(s); {})",
                    config.display(),
                    c.node.name,
                    c.node.selector,
                    c.groups.len(),
                    c.check
                );
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        Command::Check { config } => {
            let config = match load(&config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            one_check(config)
        }
        Command::Run { config: path } => {
            let config = match load(&path) {
                Ok(c) => c,
                Err(code) => return code,
            };
            if let Err(e) = config.check_runnable() {
                eprintln!("rolecall: {}: {e}", path.display());
                return ExitCode::from(EX_USAGE);
            }
            init_tracing();
            match daemon(config) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = format!("{e:#}"), "rolecall failed to start");
                    eprintln!("rolecall: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    // Two worker threads: the check loop and the servers never need more, and rolecall must
    // cost nothing beside the node.
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn one_check(config: Config) -> ExitCode {
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            println!("ROLECALL UNKNOWN - {e:#}");
            return ExitCode::from(3);
        }
    };
    let s = rt.block_on(rolecall::check_once(config));
    let code = s.observed.nagios_code();
    let label = ["OK", "WARNING", "CRITICAL", "UNKNOWN"][usize::from(code)];
    println!("ROLECALL {label} - {}: {}", s.observed, s.observed_reason);
    ExitCode::from(code)
}

fn daemon(config: Config) -> anyhow::Result<()> {
    let rt = runtime()?;
    rt.block_on(async move {
        let agent = match &config.agent {
            Some(a) => Some(
                tokio::net::TcpListener::bind(a.listen)
                    .await
                    .with_context(|| format!("cannot listen for agent checks on {}", a.listen))?,
            ),
            None => None,
        };
        let http = match &config.http {
            Some(h) => Some(
                tokio::net::TcpListener::bind(h.listen)
                    .await
                    .with_context(|| format!("cannot listen for http on {}", h.listen))?,
            ),
            None => None,
        };
        if let Some(l) = &agent {
            tracing::info!(addr = %l.local_addr()?, "agent listening");
        }
        if let Some(l) = &http {
            tracing::info!(addr = %l.local_addr()?, "http listening");
        }
        tracing::info!(
            node = %config.node.name,
            selector = %config.node.selector,
            groups = config.groups.len(),
            check = %config.check,
            "rolecall started"
        );
        let shutdown = CancellationToken::new();
        let signals = shutdown.clone();
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("cannot install the SIGTERM handler")?;
        tokio::spawn(async move {
            tokio::select! {
                _ = term.recv() => tracing::info!(signal = "SIGTERM", "stopping"),
                _ = tokio::signal::ctrl_c() => tracing::info!(signal = "SIGINT", "stopping"),
            }
            signals.cancel();
        });
        rolecall::run(config, rolecall::Listeners { agent, http }, shutdown).await;
        tracing::info!("stopped");
        Ok(())
    })
}
