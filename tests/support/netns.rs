//! [`PodNetns`]: two network namespaces the test makes, standing for a Kubernetes pod and the
//! rest of its cluster, each with its own loopback, joined by a veth pair: `eth0` in the pod,
//! `veth-pod` in the cluster namespace. Servers listening on the cluster end
//! ([`TopologyBuilder::ip`](super::TopologyBuilder::ip)) are reachable from the pod while their
//! own connections stay in the cluster namespace; the host's namespace holds neither end, so no
//! address or traffic of the test shows there. [`Netns::run`] ([`PodNetns::run`],
//! [`PodNetns::run_in_cluster`]) runs code with the calling thread inside one of them: processes
//! it spawns start in that namespace, and sockets it opens are that namespace's. Needs root
//! (`ip netns add`); both namespaces are deleted on drop.

use std::fs::File;
use std::io::{Read, Seek};
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use super::process::{Proc, find_binary};

/// One `ip` command (it returns at once; generous for a loaded machine).
const IP_TIMEOUT: Duration = Duration::from_secs(20);
/// The names of the namespaces of test processes: `rolecall-test-PID-...`.
const PREFIX: &str = "rolecall-test-";
/// The cluster end of the veth pair (the pod end is `eth0`).
const CLUSTER_LINK: &str = "veth-pod";

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A way into one network namespace (its `/run/netns/NAME` file, kept open): cheap to clone, so
/// a harness part that must talk from inside (a timeout dump, say) can keep one.
#[derive(Clone)]
pub struct Netns {
    name: String,
    file: Arc<File>,
}

impl Netns {
    fn open(name: &str) -> Netns {
        let path = format!("/run/netns/{name}");
        let file = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
        Netns {
            name: name.to_owned(),
            file: Arc::new(file),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `f` with this thread in the namespace, then puts the thread back where it was (also
    /// when `f` panics). Children spawned and threads started in `f` stay in the namespace.
    pub fn run<T>(&self, f: impl FnOnce() -> T) -> T {
        let back_path = "/proc/thread-self/ns/net";
        let back = File::open(back_path).unwrap_or_else(|e| panic!("open {back_path}: {e}"));
        setns(&self.file).unwrap_or_else(|e| panic!("setns into {}: {e}", self.name));
        let _back = Back(back);
        f()
    }
}

/// Two network namespaces, `rolecall-test-PID-N-pod` and `rolecall-test-PID-N-cluster`, each
/// with `lo` up, linked by a veth pair on a /30 of 198.18.0.0/15 (the benchmarking range):
/// `.1` on the cluster end (`veth-pod`), `.2` on the pod's `eth0`. On drop both namespaces are
/// deleted, and the veth pair with them (the processes inside are the caller's to kill first).
pub struct PodNetns {
    ip_bin: PathBuf,
    pod_name: String,
    cluster_name: String,
    cluster_ip: Ipv4Addr,
    pod_ip: Ipv4Addr,
    /// Open once both namespaces are set up.
    pod: Option<Netns>,
    cluster: Option<Netns>,
}

impl PodNetns {
    /// Creates the namespaces and their link. Panics (never skips) when not root or `ip` is
    /// missing.
    pub fn create() -> PodNetns {
        assert_root();
        let ip_bin = find_binary("IP_BIN", "ip", "apt-get install -y iproute2");
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        if n == 0 {
            remove_leftovers(&ip_bin);
        }
        let (cluster_ip, pod_ip) = subnet(pid, n);
        let mut netns = PodNetns {
            ip_bin,
            pod_name: format!("{PREFIX}{pid}-{n}-pod"),
            cluster_name: format!("{PREFIX}{pid}-{n}-cluster"),
            cluster_ip,
            pod_ip,
            pod: None,
            cluster: None,
        };
        // From here on, drop deletes whatever was made.
        let (pod, cluster) = (netns.pod_name.clone(), netns.cluster_name.clone());
        netns.ip(&["netns", "add", &cluster]);
        netns.ip(&["netns", "add", &pod]);
        // Made inside the cluster namespace with its peer in the pod: no end is ever on the host.
        netns.ip(&[
            "-n",
            &cluster,
            "link",
            "add",
            CLUSTER_LINK,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &pod,
        ]);
        for (name, link, addr) in [(&cluster, CLUSTER_LINK, cluster_ip), (&pod, "eth0", pod_ip)] {
            let cidr = format!("{addr}/30");
            netns.ip(&["-n", name, "link", "set", "lo", "up"]);
            netns.ip(&["-n", name, "addr", "add", &cidr, "dev", link]);
            netns.ip(&["-n", name, "link", "set", link, "up"]);
        }
        netns.cluster = Some(Netns::open(&cluster));
        netns.pod = Some(Netns::open(&pod));
        netns
    }

    /// The pod's namespace: the node and rolecall run here.
    pub fn pod(&self) -> &Netns {
        self.pod.as_ref().expect("the pod namespace is open")
    }

    /// The cluster's namespace: the Redis servers and sentinels, and clients of theirs that are
    /// not the node's.
    pub fn cluster(&self) -> &Netns {
        self.cluster
            .as_ref()
            .expect("the cluster namespace is open")
    }

    /// The cluster end of the link: where servers listen for the pod.
    pub fn cluster_ip(&self) -> IpAddr {
        IpAddr::V4(self.cluster_ip)
    }

    /// The pod's `eth0` address: the local address of the pod's connections to the cluster.
    pub fn pod_ip(&self) -> IpAddr {
        IpAddr::V4(self.pod_ip)
    }

    /// [`Netns::run`] in the pod.
    pub fn run<T>(&self, f: impl FnOnce() -> T) -> T {
        self.pod().run(f)
    }

    /// [`Netns::run`] in the cluster namespace.
    pub fn run_in_cluster<T>(&self, f: impl FnOnce() -> T) -> T {
        self.cluster().run(f)
    }

    /// Runs `ip ARGS`; panics with its output unless it exits 0.
    fn ip(&self, args: &[&str]) {
        let (ok, out) = try_ip(&self.ip_bin, args);
        assert!(ok, "ip {} failed:\n{out}", args.join(" "));
    }
}

impl Drop for PodNetns {
    fn drop(&mut self) {
        self.pod = None;
        self.cluster = None;
        for name in [&self.pod_name, &self.cluster_name] {
            let path = Path::new("/run/netns").join(name);
            if !path.exists() {
                continue;
            }
            let (ok, out) = try_ip(&self.ip_bin, &["netns", "delete", name]);
            if !ok {
                eprintln!("could not delete network namespace {name}: {out}");
            }
        }
    }
}

/// The /30 of 198.18.0.0/15 for the `n`th link of process `pid`: its `.1` (cluster end) and `.2`
/// (pod end). Neither end is in the host's namespace, so no other interface can collide with
/// them; picking by pid and counter only keeps different tests' addresses apart in their logs.
fn subnet(pid: u32, n: u32) -> (Ipv4Addr, Ipv4Addr) {
    let base = u32::from(Ipv4Addr::new(198, 18, 0, 0));
    let subnets = 1u32 << 15; // a /15 holds 2^15 subnets of 4 addresses
    let index = pid.wrapping_mul(8).wrapping_add(n) % subnets;
    (
        Ipv4Addr::from(base + index * 4 + 1),
        Ipv4Addr::from(base + index * 4 + 2),
    )
}

/// Runs `ip ARGS` (bounded): whether it exited 0, and its stdout and stderr.
fn try_ip(ip_bin: &Path, args: &[&str]) -> (bool, String) {
    let out = tempfile::tempfile().expect("create a temp file");
    let mut cmd = Command::new(ip_bin);
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

/// Deletes the namespaces of test processes that are gone (pod and cluster alike, and those of
/// older layouts): one killed with SIGKILL had no chance to drop its [`PodNetns`].
fn remove_leftovers(ip_bin: &Path) {
    let Ok(entries) = std::fs::read_dir("/run/netns") else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some((pid, _)) = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split_once('-'))
        else {
            continue;
        };
        if pid.parse::<u32>().is_err() || Path::new("/proc").join(pid).exists() {
            continue;
        }
        let _ = try_ip(ip_bin, &["netns", "delete", &name]);
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
