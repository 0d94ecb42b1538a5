//! The `rolecall` binary: parses the command line, sets up logging, loads the configuration,
//! binds the listeners and hands them to the library.
//!
//! Exit codes: 0 clean stop; 64 bad configuration or command line (before anything is bound);
//! 1 runtime initialisation error. `rolecall check`: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN;
//! `rolecall status` the same for the running daemon's verdict (3 when it cannot be reached);
//! `rolecall maint`: 0 done, 1 failed, 3 the daemon did not answer (`maint status`).
//!
//! Signals of `rolecall run`: SIGTERM and SIGINT stop it; SIGHUP reads the configuration file
//! again and applies what may change while it runs (`config::reload`), or, when the file does
//! not load, logs why and changes nothing.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use rolecall::config::{Config, EXAMPLE};
use rolecall::console::{MaintAction, StatusOptions, Target};
use rolecall::logs::{LevelHandle, LogFormat};

const EX_USAGE: u8 = 64;

/// `rolecall 0.1.0 (abc123def456)`: the version and the commit it was built from (see
/// build.rs).
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("ROLECALL_REVISION"),
    ")"
);

#[derive(Parser)]
#[command(
    version = VERSION,
    about = "Tells HAProxy and Kubernetes whether a node's live Redis connections go to Sentinel's writable master"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The configuration file every command but `config example` reads.
#[derive(Args)]
struct ConfigFile {
    /// The configuration file (TOML; `rolecall config example` prints an annotated one).
    #[arg(
        long,
        short,
        value_name = "FILE",
        env = "ROLECALL_CONFIG",
        default_value = "/etc/rolecall/rolecall.toml"
    )]
    config: PathBuf,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon (SIGHUP reloads the log level, thresholds, sentinels, [maintenance] and [repair]).
    Run {
        #[command(flatten)]
        file: ConfigFile,
        /// How log lines are written to stderr: `auto` is the journal's format (a syslog
        /// priority prefix, no timestamp) when stderr is the journal, else `plain`.
        #[arg(
            long,
            value_enum,
            value_name = "FORMAT",
            env = "ROLECALL_LOG_FORMAT",
            default_value = "auto"
        )]
        log_format: LogFormat,
    },
    /// Run one complete check and print a Nagios-style line (exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN).
    Check {
        #[command(flatten)]
        file: ConfigFile,
    },
    /// Show what the running daemon decided (its /status): a line for the node, a row per group, the recent changes (exit as `check`).
    Status(StatusArgs),
    /// Put the node in maintenance or take it out, through the flag file or the token endpoint.
    Maint {
        #[command(subcommand)]
        command: MaintCommand,
    },
    /// Configuration tools.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

/// `rolecall generate man|completions --out DIR`, for packagers: writes the man pages or the
/// shell completions of [`Cli`] as built now. It is kept out of [`Cli`] (parsed when it is the
/// first argument) so that what it writes names only the commands a user runs.
#[derive(Parser)]
#[command(
    name = "rolecall generate",
    about = "Write the man pages or the shell completions of rolecall into a directory"
)]
struct GenerateCli {
    /// What to write: `man` (one page per command) or `completions` (bash, zsh, fish).
    #[arg(value_enum)]
    what: Generated,
    /// The directory to write into (created if missing).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
}

/// What `rolecall generate` writes.
#[derive(Clone, Copy, clap::ValueEnum)]
enum Generated {
    Man,
    Completions,
}

/// `rolecall status`.
#[derive(Args)]
struct StatusArgs {
    /// The configuration file: the daemon is asked on its `[http] listen` (only that key is read).
    #[arg(
        long,
        short,
        value_name = "FILE",
        env = "ROLECALL_CONFIG",
        default_value = "/etc/rolecall/rolecall.toml"
    )]
    config: PathBuf,
    /// Ask the daemon at this URL instead of the file's listener (`http://127.0.0.1:7071`, or its /status URL).
    #[arg(long, value_name = "URL")]
    url: Option<String>,
    /// Print the /status document itself (JSON); with --watch, one document per line.
    #[arg(long)]
    json: bool,
    /// Look again every --interval until interrupted (or --count looks); a terminal is redrawn.
    #[arg(long)]
    watch: bool,
    /// The time between two looks with --watch.
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = humantime::parse_duration)]
    interval: Duration,
    /// Stop after this many looks with --watch.
    #[arg(long, value_name = "N", requires = "watch", value_parser = clap::value_parser!(u64).range(1..))]
    count: Option<u64>,
}

#[derive(Subcommand)]
enum MaintCommand {
    /// Put the node in maintenance: the flag file if configured, else POST /maintenance.
    On {
        #[command(flatten)]
        file: ConfigFile,
        /// Why, shown in /status, the page, /readyz?verbose and the agent's description.
        #[arg(long, value_name = "TEXT")]
        reason: Option<String>,
    },
    /// Take the node out of maintenance: remove the flag file, and DELETE /maintenance with a token.
    Off {
        #[command(flatten)]
        file: ConfigFile,
    },
    /// Show whether the node is in maintenance, by which switch, since when and why.
    Status {
        #[command(flatten)]
        file: ConfigFile,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate a configuration file.
    Check {
        #[command(flatten)]
        file: ConfigFile,
    },
    /// Print the effective configuration (defaults applied, secrets redacted).
    Show {
        #[command(flatten)]
        file: ConfigFile,
    },
    /// Print an annotated example configuration.
    Example,
}

/// Installs the logs at the level [`log_level`] says.
fn init_logs(format: LogFormat, config: &Config) -> Result<LevelHandle, ExitCode> {
    let (level, ignored) = log_level(config);
    let (_, levels) = rolecall::logs::init(format, &level).map_err(|e| {
        eprintln!("rolecall: cannot set up logging: {e}");
        ExitCode::from(EX_USAGE)
    })?;
    if let Some(error) = ignored {
        tracing::warn!(%error, "ROLECALL_LOG not understood; logging at info");
    }
    Ok(levels)
}

/// The level `rolecall run` logs at: `[log] level` (validated with the file), else
/// `ROLECALL_LOG`, else info. A `ROLECALL_LOG` tracing cannot read is skipped, its error
/// returned: worth a warning, not a daemon that does not start.
fn log_level(config: &Config) -> (String, Option<String>) {
    let env = std::env::var("ROLECALL_LOG").ok();
    let level = config.log.effective_level(env.as_deref());
    match rolecall::logs::parse_level(&level) {
        Err(e) if config.log.level.is_none() => {
            (rolecall::logs::DEFAULT_LEVEL.to_string(), Some(e))
        }
        _ => (level, None),
    }
}

fn load(path: &Path) -> Result<Config, ExitCode> {
    Config::load(path).map_err(|e| {
        eprintln!("rolecall: {e}");
        ExitCode::from(EX_USAGE)
    })
}

fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == "generate") {
        return match GenerateCli::try_parse_from(&args[1..]) {
            Ok(g) => generate(g.what, &g.out),
            Err(e) => {
                let _ = e.print();
                ExitCode::from(if e.use_stderr() { EX_USAGE } else { 0 })
            }
        };
    }
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { EX_USAGE } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let result = match cli.command {
        Command::Config { command } => config_command(command),
        Command::Check { file } => load(&file.config).map(one_check),
        Command::Status(args) => Ok(status(args)),
        Command::Maint { command } => Ok(maint(command)),
        Command::Run { file, log_format } => run(&file.config, log_format),
    };
    result.unwrap_or_else(|code| code)
}

fn config_command(command: ConfigCommand) -> Result<ExitCode, ExitCode> {
    match command {
        ConfigCommand::Example => print!("{EXAMPLE}"),
        ConfigCommand::Show { file } => {
            let c = load(&file.config)?;
            print!(
                "# The effective configuration of {} (defaults applied, secrets redacted).\n{}",
                file.config.display(),
                c.show()
            );
        }
        ConfigCommand::Check { file } => {
            let c = load(&file.config)?;
            if let Err(e) = c.check_runnable() {
                eprintln!("rolecall: warning: {e}");
            }
            println!(
                "{}: ok (node {} by {}; {} group(s); {})",
                file.config.display(),
                c.node.name,
                c.node.selector,
                c.groups.len(),
                c.check
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes the man pages or completions from the command line as built now, so every command
/// and option is in them (the Debian package ships what this writes).
fn generate(what: Generated, out: &Path) -> ExitCode {
    use clap::CommandFactory;
    let written = std::fs::create_dir_all(out).and_then(|()| match what {
        Generated::Man => clap_mangen::generate_to(Cli::command(), out),
        Generated::Completions => {
            use clap_complete::Shell;
            for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
                clap_complete::generate_to(shell, &mut Cli::command(), "rolecall", out)?;
            }
            Ok(())
        }
    });
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rolecall: cannot write into {}: {e}", out.display());
            ExitCode::FAILURE
        }
    }
}

fn run(path: &Path, log_format: LogFormat) -> Result<ExitCode, ExitCode> {
    let config = load(path)?;
    if let Err(e) = config.check_runnable() {
        eprintln!("rolecall: {}: {e}", path.display());
        return Err(ExitCode::from(EX_USAGE));
    }
    let levels = init_logs(log_format, &config)?;
    match daemon(path.to_path_buf(), config, levels) {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) => {
            // The log goes to stderr: printing the error again would show it twice.
            tracing::error!(error = format!("{e:#}"), "rolecall failed to start");
            Ok(ExitCode::FAILURE)
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    // One worker thread: the check loop and the servers never need more (a check waits on the
    // network, a dump runs on the blocking pool, probes are answered from the published
    // snapshot), and a second worker costs CPU in wakeups handed across threads
    // (BENCHMARKS.md). A multi-thread runtime all the same, for that blocking pool.
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
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

/// `rolecall status`: exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN (as `check`; also when the
/// daemon cannot be reached), 64 when the command line or the file cannot tell where it is.
fn status(args: StatusArgs) -> ExitCode {
    let target = match args.url {
        Some(url) => Target::Url(url),
        None => Target::Config(args.config),
    };
    let options = StatusOptions {
        target,
        json: args.json,
        watch: args.watch,
        interval: args.interval,
        count: args.count,
    };
    match runtime() {
        Ok(rt) => ExitCode::from(rt.block_on(rolecall::console::status(options))),
        Err(e) => {
            println!("UNKNOWN - {e:#}");
            ExitCode::from(3)
        }
    }
}

/// `rolecall maint`: exit 0 done, 1 failed, 3 the daemon did not answer (`maint status`), 64
/// bad configuration or no switch configured.
fn maint(command: MaintCommand) -> ExitCode {
    let (path, action) = match command {
        MaintCommand::On { file, reason } => (file.config, MaintAction::On { reason }),
        MaintCommand::Off { file } => (file.config, MaintAction::Off),
        MaintCommand::Status { file } => (file.config, MaintAction::Status),
    };
    match runtime() {
        Ok(rt) => ExitCode::from(rt.block_on(rolecall::console::maint(&path, action))),
        Err(e) => {
            eprintln!("rolecall: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn daemon(path: PathBuf, config: Config, levels: LevelHandle) -> anyhow::Result<()> {
    let rt = runtime()?;
    rt.block_on(async move {
        let listeners = bind(&config).await?;
        tracing::info!(
            version = VERSION,
            node = %config.node.name,
            selector = %config.node.selector,
            groups = config.groups.len(),
            check = %config.check,
            "rolecall started"
        );
        let shutdown = CancellationToken::new();
        stop_on_signals(shutdown.clone())?;
        let (reloads, reloaded) = watch::channel(Arc::new(config.clone()));
        let hup = signal(SignalKind::hangup()).context("cannot install the SIGHUP handler")?;
        let reloader = Reloader {
            path,
            running: Arc::new(config.clone()),
            reloads,
            levels,
        };
        tokio::spawn(reloader.run(hup, shutdown.clone()));
        rolecall::run(config, listeners, reloaded, shutdown).await;
        tracing::info!("stopped");
        Ok(())
    })
}

/// The listeners, bound before anything starts; each bound address is logged once.
async fn bind(config: &Config) -> anyhow::Result<rolecall::Listeners> {
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
    Ok(rolecall::Listeners { agent, http })
}

/// SIGTERM and SIGINT stop rolecall.
fn stop_on_signals(shutdown: CancellationToken) -> anyhow::Result<()> {
    let mut term = signal(SignalKind::terminate()).context("cannot install the SIGTERM handler")?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!(signal = "SIGTERM", "stopping"),
            _ = tokio::signal::ctrl_c() => tracing::info!(signal = "SIGINT", "stopping"),
        }
        shutdown.cancel();
    });
    Ok(())
}

/// SIGHUP: reads the configuration file again and applies what may change while rolecall
/// runs (`config::reload`). A file that does not load changes nothing.
struct Reloader {
    path: PathBuf,
    running: Arc<Config>,
    reloads: watch::Sender<Arc<Config>>,
    levels: LevelHandle,
}

impl Reloader {
    async fn run(mut self, mut hup: tokio::signal::unix::Signal, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                Some(()) = hup.recv() => self.reload(),
            }
        }
    }

    fn reload(&mut self) {
        let path = self.path.display().to_string();
        let new = match Config::load(&self.path).and_then(|c| c.check_runnable().map(|()| c)) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(
                    file = %path,
                    error = %e,
                    "reload refused; running on the configuration as it was"
                );
                return;
            }
        };
        let plan = rolecall::config::reload(&self.running, &new);
        if !plan.refused.is_empty() {
            tracing::warn!(
                file = %path,
                keys = plan.refused.join(", "),
                "reload: these changes need a restart and are not applied"
            );
        }
        let (level, _) = log_level(&plan.config);
        if let Err(e) = self.levels.set(&level) {
            tracing::error!(level = %level, error = %e, "reload: log level not applied");
        }
        tracing::info!(
            file = %path,
            applied = plan.applied.join(", "),
            level = %level,
            check = %plan.config.check,
            "configuration reloaded"
        );
        self.running = Arc::new(plan.config);
        self.reloads.send_replace(self.running.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// Every argument of every command, and every command, says what it is for.
    #[test]
    fn every_argument_and_command_has_help() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                if arg.get_help().is_none() && arg.get_long_help().is_none() {
                    missing.push(format!("{path} --{}", arg.get_id()));
                }
            }
            for sub in cmd.get_subcommands() {
                let path = format!("{path} {}", sub.get_name());
                if sub.get_about().is_none() {
                    missing.push(path.clone());
                }
                walk(sub, &path, missing);
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "rolecall", &mut missing);
        walk(&GenerateCli::command(), "rolecall generate", &mut missing);
        assert!(missing.is_empty(), "no help text: {missing:?}");
        Cli::command().debug_assert();
        GenerateCli::command().debug_assert();
    }

    /// The package's man pages and completions: one page per command, completions for bash, zsh
    /// and fish that name every command, and nothing about `generate` itself.
    #[test]
    fn generate_writes_a_man_page_per_command_and_completions() {
        fn visible(cmd: &clap::Command, prefix: &str, out: &mut Vec<String>) {
            for sub in cmd.get_subcommands() {
                let name = format!("{prefix}-{}", sub.get_name());
                visible(sub, &name, out);
                out.push(name);
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let man = dir.path().join("man");
        assert_eq!(generate(Generated::Man, &man), ExitCode::SUCCESS);
        let mut pages = vec!["rolecall".to_string()];
        visible(&Cli::command(), "rolecall", &mut pages);
        let mut written: Vec<String> = std::fs::read_dir(&man)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        written.sort();
        let mut expected: Vec<String> = pages.iter().map(|p| format!("{p}.1")).collect();
        expected.sort();
        assert_eq!(written, expected);
        let top = std::fs::read_to_string(man.join("rolecall.1")).unwrap();
        assert!(top.contains(".TH rolecall 1"), "{top}");
        assert!(!top.contains("rolecall\\-generate"), "{top}");

        let completions = dir.path().join("completions");
        assert_eq!(
            generate(Generated::Completions, &completions),
            ExitCode::SUCCESS
        );
        // How each shell's script offers a command named `generate`.
        for (file, offered) in [
            ("rolecall.bash", " generate "),
            ("_rolecall", "'generate:"),
            ("rolecall.fish", "-a \"generate\""),
        ] {
            let text = std::fs::read_to_string(completions.join(file)).unwrap();
            for sub in Cli::command().get_subcommands() {
                assert!(text.contains(sub.get_name()), "{file}: {}", sub.get_name());
            }
            assert!(!text.contains(offered), "{file}: {text}");
        }
    }

    #[test]
    fn the_config_file_defaults_to_etc_and_reads_rolecall_config() {
        let cli = Cli::command();
        let run = cli.find_subcommand("run").unwrap();
        let config = run
            .get_arguments()
            .find(|a| a.get_id() == "config")
            .unwrap();
        assert_eq!(
            config.get_env(),
            Some(std::ffi::OsStr::new("ROLECALL_CONFIG"))
        );
        assert_eq!(config.get_default_values(), ["/etc/rolecall/rolecall.toml"]);
        assert!(VERSION.starts_with(env!("CARGO_PKG_VERSION")));
    }
}
