//! [`PrivateHosts`]: a hosts file of the test's own that children see as `/etc/hosts`, in a
//! private mount namespace each, so that names like Kubernetes pod names
//! (`rc-node-0.rc-headless.default.svc.cluster.local`) resolve for them through the ordinary
//! system resolver (`getaddrinfo`), while the machine's `/etc/hosts` is never touched and the
//! test process itself (and everything else on the machine) never sees those names.
//!
//! # How a child gets it
//!
//! [`PrivateHosts::command`] builds a [`Command`] that runs
//!
//! ```text
//! unshare --mount --propagation private -- \
//!     sh -c 'mount --bind "$0" /etc/hosts && exec "$@"' HOSTS_FILE PROGRAM ARGS...
//! ```
//!
//! `unshare` (without `--fork`) makes a new mount namespace for itself and execs `sh`, which
//! bind-mounts the file over `/etc/hosts` and execs the program: one process all along, so
//! the pid the harness holds (to signal it, or for rolecall's `[node] pid`) is the program's.
//! Propagation is private, so the bind mount never shows in the machine's namespace; it ends
//! with the last process of the namespace. If the mount fails, the program does not run and
//! the child exits with `mount`'s error on its stderr. Needs root (`CAP_SYS_ADMIN`).
//!
//! A copy of the machine's `/etc/nsswitch.conf` with `hosts: files` is bind-mounted over it
//! as well: a name the file does not hold fails at once as "not found", instead of going on
//! to DNS (a query that would leave loopback, and that could hang on a machine without a
//! resolver). Nothing else in it changes.
//!
//! # Changing names while children run
//!
//! glibc's `files` backend reads `/etc/hosts` afresh on every lookup, so [`PrivateHosts::set`]
//! and [`PrivateHosts::remove`] are seen at the next lookup of every child. The file is
//! rewritten **in place** (same inode): a bind mount pins the inode it was made with, so a
//! new file renamed over the old one would never be seen by the children. To keep a lookup
//! racing a rewrite from seeing a half-written file, the layout is stable: each name keeps its
//! line, the address column has a fixed width, and a removed name becomes a comment line of
//! the same length; a rewrite is then one `pwrite` at offset 0 of a buffer at least as long as
//! before (it only grows when a name is added).
//!
//! The harness itself never resolves these names through the system: [`PrivateHosts::lookup`]
//! reads its own table, and the harness talks to servers by address.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs::File;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tempfile::TempDir;

use super::process::{find_binary, run_bounded};

/// Width of the address column: the longest IPv6 text form.
const ADDR_WIDTH: usize = 39;
/// One `getent` run inside the namespace (milliseconds normally).
const GETENT_TIMEOUT: Duration = Duration::from_secs(20);

/// A private hosts file, shared by every clone (a cheap handle): children started through
/// [`PrivateHosts::command`] / [`PrivateHosts::wrap`] see it as `/etc/hosts`. The temp dir is
/// deleted when the last handle is dropped; children still running keep the file they mounted
/// (and stop seeing changes, as nothing can change it any more).
#[derive(Clone)]
pub struct PrivateHosts {
    inner: Arc<Inner>,
}

struct Inner {
    dir: TempDir,
    path: PathBuf,
    /// The private `nsswitch.conf` (`hosts: files`), if the machine has one to cover.
    nsswitch: Option<PathBuf>,
    /// The file, open for the in-place rewrites.
    file: File,
    /// The machine's `/etc/hosts` as it was when this was made (read, never written), so that
    /// `localhost` and the machine's own name keep resolving inside.
    header: String,
    /// Every name ever set, in the order first set: `None` once removed. Lines never move.
    entries: Mutex<Vec<(String, Option<IpAddr>)>>,
    unshare: PathBuf,
    mount: PathBuf,
}

impl PrivateHosts {
    /// A hosts file in its own temp dir holding a copy of the machine's `/etc/hosts` and no
    /// name of the test's yet. Panics unless root, or when `unshare`/`mount` are missing.
    pub fn new() -> PrivateHosts {
        assert_root();
        let unshare = find_binary("UNSHARE_BIN", "unshare", "apt-get install -y util-linux");
        let mount = find_binary("MOUNT_BIN", "mount", "apt-get install -y mount");
        let dir = tempfile::Builder::new()
            .prefix("rolecall-test-hosts-")
            .tempdir()
            .expect("create a temp dir");
        let path = dir.path().join("hosts");
        let machine = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
        let mut header = String::from(
            "# rolecall test harness: a private hosts file, bind-mounted over /etc/hosts in the\n\
             # mount namespaces of the test's children only. The machine's entries:\n",
        );
        for line in machine.lines() {
            header.push_str(line);
            header.push('\n');
        }
        let has_localhost = machine.lines().any(|l| {
            let fields = l.split('#').next().unwrap_or("");
            fields.split_whitespace().skip(1).any(|n| n == "localhost")
        });
        if !has_localhost {
            header.push_str("127.0.0.1 localhost\n::1 localhost\n");
        }
        header.push_str("# The test's names:\n");
        std::fs::write(&path, &header).expect("write the hosts file");
        let nsswitch = std::fs::read_to_string("/etc/nsswitch.conf")
            .ok()
            .map(|text| {
                let private = dir.path().join("nsswitch.conf");
                std::fs::write(&private, files_only(&text)).expect("write nsswitch.conf");
                private
            });
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .expect("open the hosts file");
        PrivateHosts {
            inner: Arc::new(Inner {
                dir,
                path,
                nsswitch,
                file,
                header,
                entries: Mutex::new(Vec::new()),
                unshare,
                mount,
            }),
        }
    }

    /// The file children see as `/etc/hosts`.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The directory holding it (for other files of the test's, if wanted).
    pub fn dir(&self) -> &Path {
        self.inner.dir.path()
    }

    /// Makes `name` resolve to `ip` (adding it, re-pointing it, or bringing it back after
    /// [`PrivateHosts::remove`]); children see it at their next lookup. `name` must be a
    /// plain host name: no whitespace, no `#`.
    pub fn set(&self, name: &str, ip: IpAddr) {
        check_name(name);
        let mut entries = self.inner.entries.lock().unwrap();
        match entries.iter_mut().find(|(n, _)| n == name) {
            Some(entry) => entry.1 = Some(ip),
            None => entries.push((name.to_owned(), Some(ip))),
        }
        self.write(&entries);
    }

    /// Makes `name` stop resolving (as a Kubernetes pod's name does while the pod is down);
    /// a name never set is left alone.
    pub fn remove(&self, name: &str) {
        let mut entries = self.inner.entries.lock().unwrap();
        if let Some(entry) = entries.iter_mut().find(|(n, _)| n == name) {
            entry.1 = None;
            self.write(&entries);
        }
    }

    /// The address the file gives `name` now (the harness's own table: no system lookup).
    pub fn lookup(&self, name: &str) -> Option<IpAddr> {
        let entries = self.inner.entries.lock().unwrap();
        entries.iter().find(|(n, _)| n == name).and_then(|e| e.1)
    }

    /// Every name that resolves now, with its address.
    pub fn names(&self) -> BTreeMap<String, IpAddr> {
        let entries = self.inner.entries.lock().unwrap();
        entries
            .iter()
            .filter_map(|(n, ip)| Some((n.clone(), (*ip)?)))
            .collect()
    }

    /// `HOST:PORT` (a name of this file, or an IP address) as a socket address, by the
    /// harness's own table; `None` when the name does not resolve now.
    pub fn resolve(&self, host_port: &str) -> Option<SocketAddr> {
        let (host, port) = host_port.rsplit_once(':')?;
        let port: u16 = port.parse().ok()?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let ip = match host.parse::<IpAddr>() {
            Ok(ip) => ip,
            Err(_) => self.lookup(host)?,
        };
        Some(SocketAddr::new(ip, port))
    }

    /// The file's text now.
    pub fn contents(&self) -> String {
        std::fs::read_to_string(&self.inner.path).unwrap_or_else(|e| format!("(unreadable: {e})"))
    }

    /// A [`Command`] that runs `program` with this file as its `/etc/hosts`, in a private mount
    /// namespace: use it as `Command::new(program)`. Arguments, environment, working directory
    /// and stdio set on it afterwards are the program's (they pass through `unshare` and `sh`,
    /// which exec). The child's pid is the program's once it has exec'd (a few milliseconds
    /// after the spawn; a signal before then goes to `unshare`/`sh`, whose default action ends
    /// them just as it would end the program).
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new(&self.inner.unshare);
        // `$0` is the hosts file, `"$@"` the program and its arguments (after the private
        // nsswitch.conf, shifted off first): no quoting of ours touches any of them. The mount
        // binary's path is quoted into the script.
        let mount = shell_quote(&self.inner.mount.display().to_string());
        let script = match &self.inner.nsswitch {
            Some(_) => format!(
                "ns=$1; shift; {mount} --bind \"$0\" /etc/hosts && \
                 {mount} --bind \"$ns\" /etc/nsswitch.conf && exec \"$@\""
            ),
            None => format!("{mount} --bind \"$0\" /etc/hosts && exec \"$@\""),
        };
        cmd.args(["--mount", "--propagation", "private", "--", "/bin/sh", "-c"])
            .arg(script)
            .arg(&self.inner.path);
        if let Some(ns) = &self.inner.nsswitch {
            cmd.arg(ns);
        }
        cmd.arg(program.as_ref());
        cmd
    }

    /// `cmd` (program, arguments, environment variables set or removed on it, working
    /// directory) as a [`PrivateHosts::command`]. Stdio cannot be read back from a `Command`,
    /// and neither can `env_clear`: set those on the result.
    pub fn wrap(&self, cmd: &Command) -> Command {
        let mut out = self.command(cmd.get_program());
        out.args(cmd.get_args());
        for (k, v) in cmd.get_envs() {
            match v {
                Some(v) => out.env(k, v),
                None => out.env_remove(k),
            };
        }
        if let Some(dir) = cmd.get_current_dir() {
            out.current_dir(dir);
        }
        out
    }

    /// What `getent hosts NAME` answers inside a private namespace with this file: the first
    /// address, or `None` when the name does not resolve there. Bounded (20 s).
    pub fn getent(&self, name: &str) -> Option<IpAddr> {
        let mut cmd = self.command("getent");
        cmd.args(["hosts", name]);
        let out = run_bounded(
            cmd,
            &format!("getent hosts {name} (private hosts)"),
            GETENT_TIMEOUT,
        )
        .unwrap_or_else(|| panic!("getent hosts {name} did not finish within {GETENT_TIMEOUT:?}"));
        match out.status.code() {
            Some(0) => String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .next()
                .and_then(|ip| ip.parse().ok()),
            // getent: 2 is "not found".
            Some(2) => None,
            _ => panic!(
                "getent hosts {name} under private hosts failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ),
        }
    }

    fn write(&self, entries: &[(String, Option<IpAddr>)]) {
        let mut text = self.inner.header.clone();
        for (name, ip) in entries {
            // The same length whether the name resolves or not, so lines never move.
            let addr = match ip {
                Some(ip) => ip.to_string(),
                None => "#".to_owned(),
            };
            text.push_str(&format!("{addr:<ADDR_WIDTH$} {name}\n"));
        }
        // Never shorter than before (entries only ever grow), so no truncation is needed; one
        // write at offset 0 replaces the old text.
        let file = &self.inner.file;
        file.write_all_at(text.as_bytes(), 0)
            .and_then(|()| file.set_len(text.len() as u64))
            .unwrap_or_else(|e| panic!("rewrite {}: {e}", self.inner.path.display()));
    }
}

impl Default for PrivateHosts {
    fn default() -> Self {
        PrivateHosts::new()
    }
}

/// Whether the test process itself resolves `name` through the system resolver (it should
/// not, for a name only a [`PrivateHosts`] holds).
pub fn resolves_here(name: &str) -> bool {
    (name, 0)
        .to_socket_addrs()
        .is_ok_and(|mut a| a.next().is_some())
}

/// Whether process `pid` runs in a mount namespace other than the test process's (as a child
/// started under a [`PrivateHosts`] does once it has exec'd).
pub fn has_own_mount_ns(pid: u32) -> bool {
    let ours = std::fs::read_link("/proc/self/ns/mnt").expect("read /proc/self/ns/mnt");
    std::fs::read_link(format!("/proc/{pid}/ns/mnt")).is_ok_and(|theirs| theirs != ours)
}

fn check_name(name: &str) {
    assert!(
        !name.is_empty()
            && !name.contains('#')
            && !name.chars().any(|c| c.is_whitespace() || c.is_control()),
        "not a host name for a hosts file: {name:?}"
    );
}

/// `nsswitch.conf` with its `hosts:` line (if any) replaced by `hosts: files`.
fn files_only(text: &str) -> String {
    let mut out = String::new();
    let mut replaced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("hosts:") {
            out.push_str("hosts: files\n");
            replaced = true;
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    if !replaced {
        out.push_str("hosts: files\n");
    }
    out
}

/// `s` in single quotes for `sh`.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Panics unless the effective user is root: `unshare --mount` and `mount --bind` need
/// `CAP_SYS_ADMIN`.
fn assert_root() {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .unwrap_or("?");
    assert_eq!(
        euid, "0",
        "private hosts files are bind-mounted over /etc/hosts in a new mount namespace \
         (`unshare --mount`, `mount --bind`): run the test as root (effective uid is {euid})"
    );
}

/// `command_for(hosts, program)`: [`PrivateHosts::command`] with hosts, else
/// `Command::new(program)`: how the harness's process types start their children.
pub(crate) fn command_for(hosts: Option<&PrivateHosts>, program: impl AsRef<OsStr>) -> Command {
    match hosts {
        Some(h) => h.command(program),
        None => Command::new(program),
    }
}
