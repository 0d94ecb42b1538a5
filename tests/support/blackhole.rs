//! [`BlackHole`]: an nftables rule in the pod namespace of a [`PodNetns`] that silently drops
//! every packet the pod sends to some ports of one address (connection attempts go unanswered,
//! established connections stop hearing back), as a partition or a firewall that drops rather
//! than rejects. Nothing is added to the host's namespace; the rule goes on drop.

use std::io::Write;
use std::net::IpAddr;
use std::process::{Command, Stdio};

use super::PodNetns;
use super::process::find_binary;

/// The table the rule lives in, in the pod's namespace.
const TABLE: &str = "rolecall_test_blackhole";

/// Packets from the pod to `to` on `ports` are dropped while this lives.
pub struct BlackHole {
    pod: String,
}

impl BlackHole {
    /// Drops, in `pod`, every packet to `to` on one of `ports`.
    pub fn start(pod: &PodNetns, to: IpAddr, ports: &[u16]) -> BlackHole {
        let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
        let rules = format!(
            "table inet {TABLE} {{\n  chain output {{\n    type filter hook output priority 0; policy accept;\n    ip daddr {to} tcp dport {{ {} }} drop\n  }}\n}}\n",
            ports.join(", ")
        );
        let hole = BlackHole {
            pod: pod.pod().name().to_owned(),
        };
        if let Err(e) = hole.nft(&["-f", "-"], Some(&rules)) {
            panic!("{e}\n{rules}");
        }
        hole
    }

    /// `nft ARGS` in the pod's namespace, with `stdin` fed to it.
    fn nft(&self, args: &[&str], stdin: Option<&str>) -> Result<(), String> {
        let nft = find_binary("NFT_BIN", "nft", "apt-get install -y nftables");
        let ip = find_binary("IP_BIN", "ip", "apt-get install -y iproute2");
        let mut child = Command::new(&ip)
            .args(["netns", "exec", &self.pod])
            .arg(&nft)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run nft: {e}"))?;
        let mut input = child.stdin.take().expect("piped stdin");
        if let Some(text) = stdin {
            input
                .write_all(text.as_bytes())
                .map_err(|e| format!("write the nft rules: {e}"))?;
        }
        drop(input);
        let out = child
            .wait_with_output()
            .map_err(|e| format!("wait for nft: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "nft {args:?} in {} failed ({}): {}",
                self.pod,
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }
}

impl Drop for BlackHole {
    /// Lifts the rule (best effort: the namespace and its rules go with the test anyway).
    fn drop(&mut self) {
        let _ = self.nft(&["delete", "table", "inet", TABLE], None);
    }
}
