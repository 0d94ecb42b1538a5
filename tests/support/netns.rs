//! [`PodNetns`]: a network namespace the test makes, like a Kubernetes pod's: its own loopback
//! and an `eth0` (one end of a veth pair) whose other end is on the host, so that servers
//! listening on the host end ([`TopologyBuilder::ip`](super::TopologyBuilder::ip)) are
//! reachable from inside while their own connections stay outside. [`PodNetns::run`] runs code
//! with the calling thread inside: processes it spawns start in the namespace, and sockets it
//! opens are the namespace's. Needs root (`ip netns add`); deleted on drop.

use std::fs::File;
use std::io::{Read, Seek};
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use super::process::{Proc, find_binary};

/// One `ip` command (it returns at once; generous for a loaded machine).
const IP_TIMEOUT: Duration = Duration::from_secs(20);
/// Subnets tried before giving up on finding one no host interface uses.
const SUBNET_ATTEMPTS: u32 = 64;

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A network namespace named `rolecall-test-PID-N` with `lo` up and an `eth0` linked to a
/// host interface `rcPIDxN` by a veth pair, on a /30 of 198.18.0.0/15 (the benchmarking range)
/// that no host interface uses: `.1` on the host end, `.2` on `eth0`. On drop the veth pair
/// and the namespace are deleted (the processes inside are the caller's to kill first).
pub struct PodNetns {
    ip_bin: PathBuf,
    name: String,
    host_link: String,
    host_ip: Ipv4Addr,
    pod_ip: Ipv4Addr,
    /// `/run/netns/NAME`, for `setns`.
    ns: Option<File>,
}

impl PodNetns {
    /// Creates the namespace and its link. Panics (never skips) when not root or `ip` is
    /// missing.
    pub fn create() -> PodNetns {
        assert_root();
        let ip_bin = find_binary("IP_BIN", "ip", "apt-get install -y iproute2");
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        if n == 0 {
            remove_leftovers(&ip_bin);
        }
        let mut pod = PodNetns {
            ip_bin,
            name: format!("rolecall-test-{pid}-{n}"),
            host_link: format!("rc{pid}x{n}"),
            host_ip: Ipv4Addr::UNSPECIFIED,
            pod_ip: Ipv4Addr::UNSPECIFIED,
            ns: None,
        };
        // From here on, drop deletes whatever was made.
        pod.ip(&["netns", "add", &pod.name]);
        let (host_ip, pod_ip) = pod.free_subnet(pid, n);
        pod.host_ip = host_ip;
        pod.pod_ip = pod_ip;
        let (name, link) = (pod.name.clone(), pod.host_link.clone());
        pod.ip(&[
            "link", "add", &link, "type", "veth", "peer", "name", "eth0", "netns", &name,
        ]);
        let (host_cidr, pod_cidr) = (format!("{host_ip}/30"), format!("{pod_ip}/30"));
        pod.ip(&["addr", "add", &host_cidr, "dev", &link]);
        pod.ip(&["link", "set", &link, "up"]);
        pod.ip(&["-n", &name, "link", "set", "lo", "up"]);
        pod.ip(&["-n", &name, "addr", "add", &pod_cidr, "dev", "eth0"]);
        pod.ip(&["-n", &name, "link", "set", "eth0", "up"]);
        let path = format!("/run/netns/{name}");
        pod.ns = Some(File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}")));
        pod
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The host end of the link: where servers listen for the pod.
    pub fn host_ip(&self) -> IpAddr {
        IpAddr::V4(self.host_ip)
    }

    /// The pod's `eth0` address: the local address of the pod's connections to the host.
    pub fn pod_ip(&self) -> IpAddr {
        IpAddr::V4(self.pod_ip)
    }

    /// Runs `f` with this thread in the namespace, then puts the thread back where it was (also
    /// when `f` panics). Children spawned and threads started in `f` stay in the namespace.
    pub fn run<T>(&self, f: impl FnOnce() -> T) -> T {
        let back_path = "/proc/thread-self/ns/net";
        let back = File::open(back_path).unwrap_or_else(|e| panic!("open {back_path}: {e}"));
        let ns = self.ns.as_ref().expect("the namespace file is open");
        setns(ns).unwrap_or_else(|e| panic!("setns into {}: {e}", self.name));
        let _back = Back(back);
        f()
    }

    /// A /30 of 198.18.0.0/15 (its `.1` and `.2`) on no host interface yet: starting from one
    /// picked by pid and counter, so concurrent test processes do not collide.
    fn free_subnet(&self, pid: u32, n: u32) -> (Ipv4Addr, Ipv4Addr) {
        let used = self.ip_output(&["-4", "-o", "addr", "show"]);
        let base = u32::from(Ipv4Addr::new(198, 18, 0, 0));
        let subnets = 1u32 << 15; // a /15 holds 2^15 subnets of 4 addresses
        let first = pid.wrapping_mul(8).wrapping_add(n);
        for i in 0..SUBNET_ATTEMPTS {
            let index = first.wrapping_add(i.wrapping_mul(7919)) % subnets;
            let host = Ipv4Addr::from(base + index * 4 + 1);
            let pod = Ipv4Addr::from(base + index * 4 + 2);
            let taken = [host, pod].iter().any(|a| used.contains(&format!(" {a}/")));
            if !taken {
                return (host, pod);
            }
        }
        panic!("no free /30 in 198.18.0.0/15 after {SUBNET_ATTEMPTS} tries:\n{used}");
    }

    /// Runs `ip ARGS`; panics with its output unless it exits 0.
    fn ip(&self, args: &[&str]) {
        self.ip_output(args);
    }

    fn ip_output(&self, args: &[&str]) -> String {
        let (ok, out) = self.try_ip(args);
        assert!(ok, "ip {} failed:\n{out}", args.join(" "));
        out
    }

    /// Runs `ip ARGS` (bounded): whether it exited 0, and its stdout and stderr.
    fn try_ip(&self, args: &[&str]) -> (bool, String) {
        let out = tempfile::tempfile().expect("create a temp file");
        let mut cmd = Command::new(&self.ip_bin);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("dup a temp file"))
            .stderr(out.try_clone().expect("dup a temp file"));
        let mut proc = Proc::spawn(cmd, format!("ip {}", args.join(" ")));
        let status = proc.wait_exit(IP_TIMEOUT);
        let mut text = String::new();
        let mut out = out;
        let _ = out.rewind().and_then(|()| out.read_to_string(&mut text));
        match status {
            Some(s) => (s.success(), text),
            None => (false, format!("(no exit within {IP_TIMEOUT:?})\n{text}")),
        }
    }
}

impl Drop for PodNetns {
    fn drop(&mut self) {
        self.ns = None;
        // Deleting one end deletes the pair at once; the namespace's own teardown would
        // remove it only later, asynchronously.
        let (link, name) = (self.host_link.clone(), self.name.clone());
        let _ = self.try_ip(&["link", "delete", &link]);
        let (ok, out) = self.try_ip(&["netns", "delete", &name]);
        if !ok {
            eprintln!("could not delete network namespace {name}: {out}");
        }
    }
}

/// Deletes the namespaces (and host links) of test processes that are gone: one killed with
/// SIGKILL had no chance to drop its [`PodNetns`].
fn remove_leftovers(ip_bin: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir("/run/netns") else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some((pid, n)) = name
            .strip_prefix("rolecall-test-")
            .and_then(|rest| rest.split_once('-'))
        else {
            continue;
        };
        if pid.parse::<u32>().is_err() || std::path::Path::new("/proc").join(pid).exists() {
            continue;
        }
        for args in [
            vec!["link", "delete", &format!("rc{pid}x{n}")],
            vec!["netns", "delete", &name],
        ] {
            let mut cmd = Command::new(ip_bin);
            cmd.args(&args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            let mut proc = Proc::spawn(cmd, format!("ip {}", args.join(" ")));
            let _ = proc.wait_exit(IP_TIMEOUT);
        }
    }
}

/// Puts the thread back into the namespace it left, on drop.
struct Back(File);

impl Drop for Back {
    fn drop(&mut self) {
        if let Err(e) = setns(&self.0) {
            // The thread would go on in the test's namespace, and whatever it does next would
            // happen in the wrong place: stop everything.
            eprintln!("cannot return a thread to its network namespace: {e}");
            std::process::abort();
        }
    }
}

/// Moves the calling thread into the network namespace `ns` (a `/proc/.../ns/net` or
/// `/run/netns/NAME` file).
fn setns(ns: &File) -> std::io::Result<()> {
    // SAFETY: setns(2) takes an open file descriptor (borrowed from `ns`, alive for the call)
    // and a flag; it touches no memory of ours. A network namespace may be changed per thread.
    let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Panics unless the effective user is root: making a network namespace and a veth pair needs
/// `CAP_SYS_ADMIN` and `CAP_NET_ADMIN`.
fn assert_root() {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .unwrap_or("?");
    assert_eq!(
        euid, "0",
        "this test makes a network namespace and a veth pair (`ip netns add`, `ip link add`): \
         run it as root (effective uid is {euid})"
    );
}
