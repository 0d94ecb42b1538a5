//! Kubernetes ClusterIPs, as kube-proxy makes them: a virtual IP per service that the kernel
//! rewrites (DNAT) to a backend's address, so the backend sees the client's own address. Here
//! the rules are nftables rules in the cluster namespace of a [`PodNetns`], and the pod routes
//! the service range over its link; nothing is added to the host's namespace.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::{Command, Stdio};

use super::PodNetns;
use super::process::find_binary;

/// The service range the virtual IPs are taken from (Kubernetes' default is 10.96.0.0/12).
const SERVICE_RANGE: &str = "10.96.0.0/16";

/// The `i`th virtual IP of a pod's cluster.
fn vip(i: usize) -> IpAddr {
    let i = u8::try_from(i + 1).expect("fewer than 255 services");
    IpAddr::V4(Ipv4Addr::new(10, 96, 0, i))
}

/// Makes one ClusterIP per service in `pod`'s cluster namespace: the `i`th, `10.96.0.(i+1)` on
/// port `services[i].0`, goes to the backend `services[i].1`. Returns the virtual addresses in
/// order.
pub fn cluster_ips(pod: &PodNetns, services: &[(u16, SocketAddr)]) -> Vec<SocketAddr> {
    let nft = find_binary("NFT_BIN", "nft", "apt-get install -y nftables");
    let ip = find_binary("IP_BIN", "ip", "apt-get install -y iproute2");
    let vips: Vec<SocketAddr> = services
        .iter()
        .enumerate()
        .map(|(i, (port, _))| SocketAddr::new(vip(i), *port))
        .collect();
    let mut rules = String::from(
        "table ip rolecall_test_services {\n  chain prerouting {\n    type nat hook prerouting priority dstnat; policy accept;\n",
    );
    for (v, (_, b)) in vips.iter().zip(services) {
        rules.push_str(&format!(
            "    ip daddr {} tcp dport {} dnat to {}\n",
            v.ip(),
            v.port(),
            b
        ));
    }
    rules.push_str("  }\n}\n");
    let mut child = Command::new(&ip)
        .args(["netns", "exec", pod.cluster().name()])
        .arg(&nft)
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run nft: {e}"));
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(rules.as_bytes())
        .expect("write the nft rules");
    let out = child.wait_with_output().expect("wait for nft");
    assert!(
        out.status.success(),
        "nft -f failed ({}):\n{rules}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let cluster = pod.cluster_ip().to_string();
    let out = Command::new(&ip)
        .args(["-n", pod.pod().name(), "route", "add", SERVICE_RANGE, "via"])
        .arg(&cluster)
        .output()
        .expect("run ip route add");
    assert!(
        out.status.success(),
        "ip route add {SERVICE_RANGE} via {cluster} in the pod: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    vips
}
