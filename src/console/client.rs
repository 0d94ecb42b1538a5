//! The command-line side of the console: `rolecall status` and `rolecall maint`, talking to the
//! running daemon over its HTTP listener (and, for `maint`, through its flag file).
//!
//! `status` reads `/status`, from the `--url` given or from the `[http] listen` of the
//! configuration file (only that key is read, so a person who may not read the password files
//! can still look); an unspecified listen address (`0.0.0.0`, `::`) is reached on loopback.
//! `maint` (in `maint.rs`) loads the whole configuration: it needs the flag file's path or the
//! token.

use std::io::{IsTerminal, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;

use super::text;
use super::view::Status;

/// Connect, send and read one answer, together.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// `/status` is a few kilobytes; anything near this is not rolecall.
const MAX_ANSWER: usize = 4 << 20;

/// Exit codes: `rolecall check`'s UNKNOWN, and a bad configuration or command line.
pub(super) const UNKNOWN: u8 = 3;
pub(super) const EX_USAGE: u8 = 64;

/// Where `rolecall status` finds the daemon.
pub enum Target {
    /// The `[http] listen` of this configuration file.
    Config(PathBuf),
    /// The daemon's base URL (`http://127.0.0.1:7071`), or its `/status` URL.
    Url(String),
}

pub struct StatusOptions {
    pub target: Target,
    /// Print the `/status` document itself.
    pub json: bool,
    /// Look again every `interval`, `count` times (`None`: until interrupted).
    pub watch: bool,
    pub interval: Duration,
    pub count: Option<u64>,
}

/// The daemon's HTTP listener: where to connect, and the path `/status` is under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Endpoint {
    host: String,
    port: u16,
    /// A path prefix without a trailing `/` (empty for the root).
    base: String,
}

impl Endpoint {
    pub(super) fn listen(addr: SocketAddr) -> Endpoint {
        let ip = match addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        Endpoint {
            host: ip.to_string(),
            port: addr.port(),
            base: String::new(),
        }
    }

    /// `http://HOST[:PORT][/PREFIX][/status]`.
    fn from_url(url: &str) -> Result<Endpoint, String> {
        let uri: hyper::Uri = url
            .parse()
            .map_err(|e| format!("--url {url:?}: not a URL: {e}"))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some(other) => {
                return Err(format!(
                    "--url {url:?}: rolecall serves plain http, not {other}"
                ));
            }
            None => return Err(format!("--url {url:?}: give http://HOST:PORT")),
        }
        let host = uri
            .host()
            .ok_or_else(|| format!("--url {url:?}: no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let path = uri.path().trim_end_matches('/');
        Ok(Endpoint {
            host,
            port: uri.port_u16().unwrap_or(80),
            base: path.strip_suffix("/status").unwrap_or(path).to_string(),
        })
    }

    /// `[http] listen` of the file at `path`, read as plain TOML.
    fn from_config(path: &Path) -> Result<Endpoint, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let table: toml::Table =
            toml::from_str(&text).map_err(|e| format!("{}: {}", path.display(), e.message()))?;
        let listen = table
            .get("http")
            .and_then(|h| h.get("listen"))
            .and_then(|l| l.as_str())
            .ok_or_else(|| {
                format!(
                    "{}: no [http] listen: rolecall status reads /status there (or give --url)",
                    path.display()
                )
            })?;
        let addr: SocketAddr = listen
            .parse()
            .map_err(|e| format!("{}: http.listen {listen:?}: {e}", path.display()))?;
        Ok(Endpoint::listen(addr))
    }

    /// `HOST:PORT`, an IPv6 address in brackets: the `Host` header and the URL's authority.
    fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    pub(super) fn url(&self, path: &str) -> String {
        format!("http://{}{}{path}", self.authority(), self.base)
    }
}

/// One request, bounded by [`REQUEST_TIMEOUT`] as a whole; the answer's status and body.
pub(super) async fn request(
    ep: &Endpoint,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<String>,
) -> Result<(StatusCode, Bytes), String> {
    let url = ep.url(path);
    let exchange = async {
        let stream = tokio::net::TcpStream::connect((ep.host.as_str(), ep.port))
            .await
            .map_err(|e| e.to_string())?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}{path}", ep.base))
            .header(hyper::header::HOST, ep.authority());
        if body.is_some() {
            req = req.header(hyper::header::CONTENT_TYPE, "text/plain; charset=utf-8");
        }
        if let Some(token) = token {
            req = req.header(hyper::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| e.to_string())?;
        let answer = sender.send_request(req).await.map_err(|e| e.to_string())?;
        let status = answer.status();
        let body = Limited::new(answer.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok::<_, String>((status, body))
    };
    match tokio::time::timeout(REQUEST_TIMEOUT, exchange).await {
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(e)) => Err(format!("cannot reach rolecall at {url}: {e}")),
        Err(_) => Err(format!(
            "rolecall at {url} did not answer within {REQUEST_TIMEOUT:?}"
        )),
    }
}

/// `GET /status` as JSON.
pub(super) async fn fetch_status(ep: &Endpoint) -> Result<serde_json::Value, String> {
    let (status, body) = request(ep, Method::GET, "/status", None, None).await?;
    if status != StatusCode::OK {
        return Err(format!(
            "{} answered {status}: {}",
            ep.url("/status"),
            String::from_utf8_lossy(&body).trim()
        ));
    }
    serde_json::from_slice(&body).map_err(|e| format!("{}: not JSON: {e}", ep.url("/status")))
}

/// Wall-clock now, in Unix milliseconds.
pub(super) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

/// One look: what to print, whether it goes to stderr, and the exit code.
async fn look(ep: &Endpoint, json: bool, compact: bool) -> (String, bool, u8) {
    let fetched = fetch_status(ep)
        .await
        .and_then(|j| Status::from_json(j.clone()).map(|s| (j, s)));
    match fetched {
        Ok((j, s)) if json => {
            let text = if compact {
                serde_json::to_string(&j)
            } else {
                serde_json::to_string_pretty(&j)
            };
            (text.unwrap_or_default() + "\n", false, s.nagios_code())
        }
        Ok((_, s)) => (text::render(&s, now_ms()), false, s.nagios_code()),
        // In JSON mode stdout stays JSON: the error goes to stderr.
        Err(e) => (format!("UNKNOWN - {e}\n"), json, UNKNOWN),
    }
}

/// `rolecall status`: prints the daemon's verdict, once or every `interval`; returns the exit
/// code of the last look (`rolecall check`'s: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN).
pub async fn status(o: StatusOptions) -> u8 {
    let ep = match &o.target {
        Target::Url(url) => Endpoint::from_url(url),
        Target::Config(path) => Endpoint::from_config(path),
    };
    let ep = match ep {
        Ok(ep) => ep,
        Err(e) => {
            eprintln!("rolecall: {e}");
            return EX_USAGE;
        }
    };
    let looks = if o.watch {
        o.count.unwrap_or(u64::MAX)
    } else {
        1
    };
    // On a terminal each look replaces the last; elsewhere (a pipe, a log) they follow each
    // other, a blank line apart (JSON: one document per line).
    let redraw = o.watch && std::io::stdout().is_terminal();
    let mut code = UNKNOWN;
    for i in 0..looks {
        if i > 0 {
            tokio::time::sleep(o.interval).await;
        }
        let (text, to_stderr, c) = look(&ep, o.json, o.watch).await;
        code = c;
        let mut out = std::io::stdout().lock();
        if redraw {
            let _ = write!(out, "\x1b[H\x1b[2J");
        } else if i > 0 && !o.json {
            let _ = writeln!(out);
        }
        if to_stderr {
            eprint!("{text}");
        } else {
            let _ = write!(out, "{text}");
        }
        let _ = out.flush();
    }
    code
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(host: &str, port: u16, base: &str) -> Endpoint {
        Endpoint {
            host: host.into(),
            port,
            base: base.into(),
        }
    }

    #[test]
    fn a_url_names_the_listener_and_an_optional_prefix() {
        let cases = [
            ("http://127.0.0.1:7071", ep("127.0.0.1", 7071, "")),
            ("http://127.0.0.1:7071/", ep("127.0.0.1", 7071, "")),
            ("http://127.0.0.1:7071/status", ep("127.0.0.1", 7071, "")),
            (
                "http://node-1.example/rolecall/",
                ep("node-1.example", 80, "/rolecall"),
            ),
            (
                "http://[::1]:7071/rolecall/status",
                ep("::1", 7071, "/rolecall"),
            ),
        ];
        for (url, want) in cases {
            assert_eq!(Endpoint::from_url(url).unwrap(), want, "{url}");
        }
        assert_eq!(
            ep("::1", 7071, "/rolecall").url("/status"),
            "http://[::1]:7071/rolecall/status"
        );
        for bad in ["https://127.0.0.1:7071", "127.0.0.1:7071", "http://"] {
            assert!(Endpoint::from_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_config_gives_its_http_listener_reached_on_loopback_when_unspecified() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("rolecall.toml");
        for (listen, want) in [
            ("0.0.0.0:7071", ep("127.0.0.1", 7071, "")),
            ("[::]:7071", ep("::1", 7071, "")),
            ("10.0.0.5:9000", ep("10.0.0.5", 9000, "")),
        ] {
            std::fs::write(
                &file,
                format!("[node]\nname = \"n\"\n[http]\nlisten = \"{listen}\"\n"),
            )
            .unwrap();
            assert_eq!(Endpoint::from_config(&file).unwrap(), want, "{listen}");
        }
        std::fs::write(&file, "[node]\nname = \"n\"\n").unwrap();
        let e = Endpoint::from_config(&file).unwrap_err();
        assert!(e.contains("no [http] listen"), "{e}");
        let e = Endpoint::from_config(&dir.path().join("missing.toml")).unwrap_err();
        assert!(e.starts_with("cannot read "), "{e}");
    }
}
