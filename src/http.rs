//! The HTTP server for Kubernetes probes and monitoring.
//!
//! | path | answer |
//! |---|---|
//! | `/` | a page for a person (`console::page`): the verdict, the groups, the recent changes |
//! | `/livez` | always `200 ok` while the process serves: liveness never depends on Redis |
//! | `/readyz` | `200 ready` in rotation, `503 not ready` otherwise and until the first complete check; `?verbose` lists each check |
//! | `/status` | the snapshot as JSON (never a secret), with the maintenance switch and the last verdict changes (`changes`) |
//! | `/metrics` | Prometheus text 0.0.4, or OpenMetrics 1.0.0 when `Accept` prefers it, each with its own content type |
//! | `/maintenance` | `POST` on (the body, if any, is the operator's note), `DELETE` off, with `Authorization: Bearer <token>`; only when `[maintenance] token_file` is set (404 otherwise) |
//!
//! GET and HEAD only (405 otherwise); any other path is 404. Every answer comes from the
//! published snapshot. Connections are capped and each has a header-read timeout, so slow or
//! idle clients cannot starve the probes.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{ALLOW, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::console;
use crate::maintenance::{Maintenance, MaintenanceState};
use crate::metrics::{Format, Metrics};
use crate::snapshot::{History, Snapshot};

const MAX_CONNECTIONS: usize = 1024;
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// An idle keep-alive connection is closed after this long.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest body of `POST /maintenance` (the note), and how long it may take to arrive.
const NOTE_BODY_MAX: usize = 1024;
const NOTE_BODY_TIMEOUT: Duration = Duration::from_secs(5);
/// The page allows no script, no frame, nothing from elsewhere: only its own inline style.
const PAGE_POLICY: &str = "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// What the answers are made of, as of one request: the published snapshot, the maintenance
/// switch, and the history of verdict changes.
pub struct Published<'a> {
    pub snapshot: &'a Snapshot,
    pub maintenance: &'a MaintenanceState,
    pub history: &'a History,
}

impl Published<'_> {
    /// The JSON of `/status`: the snapshot as of `now`, the maintenance switch, the changes.
    fn status_json(&self, now: Instant) -> serde_json::Value {
        let mut json = self.snapshot.to_json(now);
        if let Some(o) = json.as_object_mut() {
            o.insert(
                "maintenance".into(),
                serde_json::to_value(self.maintenance).unwrap_or_default(),
            );
            o.insert(
                "changes".into(),
                serde_json::to_value(self.history.changes()).unwrap_or_default(),
            );
        }
        json
    }
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// `/readyz?verbose`: one line per check, as kube-apiserver prints them.
fn readyz_verbose(s: &Snapshot, now: Instant, maintenance: &MaintenanceState) -> String {
    let mut e = s.at(now);
    e.in_rotation &= !maintenance.on;
    let mark = |ok: bool| if ok { "[+]" } else { "[-]" };
    let mut out = String::new();
    out.push_str(&format!(
        "{}first-check {}\n",
        mark(s.checked),
        if s.checked { "ok" } else { "pending" }
    ));
    out.push_str(&format!(
        "{}snapshot {}\n",
        mark(!e.stale),
        if e.stale { "stale" } else { "fresh" }
    ));
    for g in &s.groups {
        out.push_str(&format!(
            "{}group {} {}: {}\n",
            mark(g.in_rotation),
            g.name,
            g.verdict,
            g.reason
        ));
    }
    out.push_str(&format!(
        "{}maintenance {}\n",
        mark(!maintenance.on),
        if maintenance.on {
            format!("on: {}", maintenance.reason())
        } else {
            "off".to_string()
        }
    ));
    out.push_str(&format!(
        "{}node {}: {}\n",
        mark(e.in_rotation),
        e.verdict,
        e.reason
    ));
    out.push_str(if e.in_rotation {
        "readyz check passed\n"
    } else {
        "readyz check failed\n"
    });
    out
}

/// `/readyz`: 200 in rotation, 503 out (and in maintenance); `?verbose` lists each check.
fn readyz(
    snapshot: &Snapshot,
    now: Instant,
    maintenance: &MaintenanceState,
    query: Option<&str>,
) -> Response<Full<Bytes>> {
    let mut e = snapshot.at(now);
    e.in_rotation &= !maintenance.on;
    let status = if e.in_rotation {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let verbose = query.is_some_and(|q| {
        q.split('&')
            .any(|p| p == "verbose" || p.starts_with("verbose="))
    });
    if verbose {
        text(status, readyz_verbose(snapshot, now, maintenance))
    } else if e.in_rotation {
        text(status, "ready\n")
    } else if maintenance.on {
        text(status, "not ready: maintenance\n")
    } else {
        text(status, "not ready\n")
    }
}

/// `/metrics` in the format the request's `Accept` asks for, labelled with that format's own
/// content type (see `metrics::Format`); `Vary: Accept` tells caches the body depends on it.
fn metrics_page(
    metrics: &Metrics,
    maintenance: &MaintenanceState,
    accept: Option<&str>,
) -> Response<Full<Bytes>> {
    metrics.set_maintenance(maintenance.on);
    let format = Format::negotiate(accept);
    let mut r = text(StatusCode::OK, metrics.encode(format));
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    r.headers_mut()
        .insert(hyper::header::VARY, HeaderValue::from_static("accept"));
    r
}

/// `/`: the page, rendered from the `/status` document (see `console::page` for why on the
/// server).
fn page(p: &Published, now: Instant) -> Response<Full<Bytes>> {
    let wall = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default();
    let html = match console::view::Status::from_json(p.status_json(now)) {
        Ok(view) => console::page::render(&view, wall),
        Err(e) => return text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
    };
    let mut r = text(StatusCode::OK, html);
    let headers = r.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(
        "content-security-policy",
        HeaderValue::from_static(PAGE_POLICY),
    );
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    r
}

/// Answers one request from the published state (in maintenance `/readyz` is 503, and
/// `/status` shows it as `maintenance`); `accept` picks the format of `/metrics`. Pure apart
/// from reading the clock.
pub fn respond(
    method: &Method,
    path: &str,
    query: Option<&str>,
    accept: Option<&str>,
    published: &Published,
    metrics: &Metrics,
) -> Response<Full<Bytes>> {
    let (snapshot, maintenance) = (published.snapshot, published.maintenance);
    let known = matches!(path, "/" | "/livez" | "/readyz" | "/status" | "/metrics");
    if !known {
        return text(StatusCode::NOT_FOUND, "not found\n");
    }
    if method != Method::GET && method != Method::HEAD {
        let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        r.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    let now = crate::runclock::now();
    let mut r = match path {
        "/livez" => text(StatusCode::OK, "ok\n"),
        "/readyz" => readyz(snapshot, now, maintenance, query),
        "/" => page(published, now),
        "/status" => {
            let body = serde_json::to_vec_pretty(&published.status_json(now)).unwrap_or_default();
            let mut r = text(StatusCode::OK, body);
            r.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            r
        }
        _ => metrics_page(metrics, maintenance, accept),
    };
    r.headers_mut()
        .insert("cache-control", HeaderValue::from_static("no-store"));
    r
}

/// `POST /maintenance` (on, with the operator's `note`: the request's body) and
/// `DELETE /maintenance` (off) with `Authorization: Bearer <token>`; answers the resulting
/// state as JSON. Without a configured token the endpoint does not exist (404); a missing or
/// wrong token is 401.
pub fn maintenance_endpoint(
    method: &Method,
    authorization: Option<&[u8]>,
    note: Option<String>,
    maintenance: &Maintenance,
) -> Response<Full<Bytes>> {
    if !maintenance.api_enabled() {
        return text(StatusCode::NOT_FOUND, "not found\n");
    }
    let on = match *method {
        Method::POST => true,
        Method::DELETE => false,
        _ => {
            let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
            r.headers_mut()
                .insert(ALLOW, HeaderValue::from_static("POST, DELETE"));
            return r;
        }
    };
    if !maintenance.authorized(authorization) {
        let mut r = text(StatusCode::UNAUTHORIZED, "unauthorized\n");
        r.headers_mut().insert(
            hyper::header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"rolecall\""),
        );
        return r;
    }
    let state = maintenance.set_api(on, note);
    let body = serde_json::to_vec_pretty(&state).unwrap_or_default();
    let mut r = text(StatusCode::OK, body);
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r.headers_mut()
        .insert("cache-control", HeaderValue::from_static("no-store"));
    r
}

/// What every request is answered from.
struct Sources {
    rx: watch::Receiver<Arc<Snapshot>>,
    metrics: Arc<Metrics>,
    maintenance: Arc<Maintenance>,
    history: Arc<History>,
}

impl Sources {
    async fn answer(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let head = req.method() == Method::HEAD;
        let mut r = if req.uri().path() == "/maintenance" {
            self.maintenance_request(req).await
        } else {
            let snapshot = self.rx.borrow().clone();
            let maintenance = self.maintenance.state();
            let published = Published {
                snapshot: &snapshot,
                maintenance: &maintenance,
                history: &self.history,
            };
            respond(
                req.method(),
                req.uri().path(),
                req.uri().query(),
                req.headers()
                    .get(hyper::header::ACCEPT)
                    .and_then(|v| v.to_str().ok()),
                &published,
                &self.metrics,
            )
        };
        if head {
            *r.body_mut() = Full::new(Bytes::new());
        }
        r
    }

    /// `/maintenance`, with the note a `POST` carries in its body.
    async fn maintenance_request(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let method = req.method().clone();
        let authorization = req
            .headers()
            .get(hyper::header::AUTHORIZATION)
            .map(|v| v.as_bytes().to_vec());
        let mut note = None;
        if method == Method::POST && self.maintenance.api_enabled() {
            match read_note(req.into_body()).await {
                Ok(n) => note = n,
                Err(r) => return r,
            }
        }
        maintenance_endpoint(&method, authorization.as_deref(), note, &self.maintenance)
    }
}

/// The body of `POST /maintenance`, at most [`NOTE_BODY_MAX`] bytes within
/// [`NOTE_BODY_TIMEOUT`].
async fn read_note(body: Incoming) -> Result<Option<String>, Response<Full<Bytes>>> {
    let limited = http_body_util::Limited::new(body, NOTE_BODY_MAX);
    match tokio::time::timeout(NOTE_BODY_TIMEOUT, http_body_util::BodyExt::collect(limited)).await {
        Ok(Ok(b)) => Ok(Some(String::from_utf8_lossy(&b.to_bytes()).into_owned())),
        Ok(Err(_)) => Err(text(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the note is at most {NOTE_BODY_MAX} bytes\n"),
        )),
        Err(_) => Err(text(
            StatusCode::REQUEST_TIMEOUT,
            "the body did not arrive in time\n",
        )),
    }
}

/// Serves HTTP on `listener` until `shutdown` (`/readyz`, `/status` and `/maintenance` with the
/// maintenance switch; `/status` and `/` with the `history` of verdict changes, which the check
/// loop keeps), then drains open connections for a bounded time.
pub async fn serve(
    listener: TcpListener,
    rx: watch::Receiver<Arc<Snapshot>>,
    (metrics, history): (Arc<Metrics>, Arc<History>),
    maintenance: Arc<Maintenance>,
    shutdown: CancellationToken,
) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let slots = crate::listen::Slots::new(crate::listen::cap(MAX_CONNECTIONS));
    let sources = Arc::new(Sources {
        rx,
        metrics,
        maintenance,
        history,
    });
    while let Some((stream, slot)) =
        crate::listen::accept("http", &listener, &slots, &shutdown).await
    {
        let sources = sources.clone();
        let service = hyper::service::service_fn(move |req: Request<Incoming>| {
            let sources = sources.clone();
            async move { Ok::<_, Infallible>(sources.answer(req).await) }
        });
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_TIMEOUT)
            .max_buf_size(16 * 1024)
            .serve_connection(TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            // Bound a connection's whole life, so idle keep-alive clients give their slot back;
            // and close it at once when a newer connection needs the place.
            tokio::select! {
                _ = tokio::time::timeout(IDLE_TIMEOUT, conn) => {}
                _ = slot.shed.cancelled() => {}
            }
        });
    }
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(timeout = ?DRAIN_TIMEOUT, "http connections still open at shutdown; closing them");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::NodeStatus;
    use crate::verdict::Verdict;

    fn snapshot(in_rotation: bool, checked: bool) -> Snapshot {
        let mut s = Snapshot::starting(
            NodeStatus {
                name: "n".into(),
                selector: "pid 1".into(),
                pids: vec![1],
                running: true,
            },
            Duration::from_secs(60),
            Duration::from_secs(60),
        );
        s.checked = checked;
        s.in_rotation = in_rotation;
        s.verdict = if in_rotation {
            Verdict::Ok
        } else {
            Verdict::StuckOnReplica
        };
        if checked {
            s.completed = Some(Instant::now());
        }
        s
    }

    fn published<'a>(
        snapshot: &'a Snapshot,
        maintenance: &'a MaintenanceState,
        history: &'a History,
    ) -> Published<'a> {
        Published {
            snapshot,
            maintenance,
            history,
        }
    }

    fn status(m: Method, path: &str, q: Option<&str>, s: &Snapshot) -> (u16, String) {
        let (maintenance, history) = (MaintenanceState::default(), History::default());
        let r = respond(
            &m,
            path,
            q,
            None,
            &published(s, &maintenance, &history),
            &Metrics::new(),
        );
        let code = r.status().as_u16();
        let body =
            futures_util::FutureExt::now_or_never(http_body_util::BodyExt::collect(r.into_body()))
                .unwrap()
                .unwrap()
                .to_bytes();
        (code, String::from_utf8(body.to_vec()).unwrap())
    }

    #[test]
    fn endpoints_answer_from_the_snapshot() {
        let ready = snapshot(true, true);
        let out = snapshot(false, true);
        let starting = snapshot(false, false);
        assert_eq!(
            status(Method::GET, "/livez", None, &out),
            (200, "ok\n".into())
        );
        assert_eq!(
            status(Method::GET, "/readyz", None, &ready),
            (200, "ready\n".into())
        );
        assert_eq!(
            status(Method::GET, "/readyz", None, &out),
            (503, "not ready\n".into())
        );
        assert_eq!(status(Method::GET, "/readyz", None, &starting).0, 503);
        let (code, body) = status(Method::GET, "/readyz", Some("verbose"), &out);
        assert_eq!(code, 503);
        assert!(
            body.contains("[-]node stuck_on_replica") && body.ends_with("readyz check failed\n"),
            "{body}"
        );
        let (code, body) = status(Method::GET, "/status", None, &out);
        assert_eq!(code, 200);
        let j: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(j["verdict"], "stuck_on_replica");
        assert_eq!(j["in_rotation"], false);
        let (code, body) = status(Method::GET, "/metrics", None, &out);
        assert_eq!(code, 200);
        assert!(body.contains("# TYPE rolecall_in_rotation gauge"), "{body}");
    }

    #[test]
    fn maintenance_makes_readyz_503_and_shows_in_status() {
        let ready = snapshot(true, true);
        let m = MaintenanceState {
            on: true,
            by_file: true,
            by_api: false,
            file: Some("/run/rolecall/maintenance".into()),
            since_unix_ms: Some(1),
            note: None,
        };
        let history = History::default();
        let get = |path: &str, q: Option<&str>| {
            let r = respond(
                &Method::GET,
                path,
                q,
                None,
                &published(&ready, &m, &history),
                &Metrics::new(),
            );
            let code = r.status().as_u16();
            let body = futures_util::FutureExt::now_or_never(http_body_util::BodyExt::collect(
                r.into_body(),
            ))
            .unwrap()
            .unwrap()
            .to_bytes();
            (code, String::from_utf8(body.to_vec()).unwrap())
        };
        assert_eq!(
            get("/readyz", None),
            (503, "not ready: maintenance\n".into())
        );
        let (code, body) = get("/readyz", Some("verbose"));
        assert_eq!(code, 503);
        assert!(
            body.contains("[-]maintenance on: flag file /run/rolecall/maintenance exists"),
            "{body}"
        );
        let (_, body) = get("/status", None);
        let j: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(j["maintenance"]["on"], true);
        assert_eq!(j["maintenance"]["by_file"], true);
        assert_eq!(j["verdict"], "ok");
    }

    #[test]
    fn the_maintenance_endpoint_needs_a_configured_token_and_presents_it() {
        use crate::config::MaintenanceConfig;
        let off = Maintenance::new(MaintenanceConfig::default());
        assert_eq!(
            maintenance_endpoint(&Method::POST, Some(b"Bearer x"), None, &off).status(),
            404
        );
        let m = Maintenance::new(MaintenanceConfig {
            file: None,
            token: Some(crate::secret::Secret::new("t0ken".into())),
            state_file: None,
        });
        let r = maintenance_endpoint(&Method::POST, None, None, &m);
        assert_eq!(r.status(), 401);
        assert!(r.headers().contains_key("www-authenticate"));
        assert_eq!(
            maintenance_endpoint(&Method::POST, Some(b"Bearer nope"), None, &m).status(),
            401
        );
        assert!(!m.state().on);
        assert_eq!(
            maintenance_endpoint(&Method::GET, Some(b"Bearer t0ken"), None, &m).status(),
            405
        );
        assert_eq!(
            maintenance_endpoint(&Method::POST, Some(b"Bearer t0ken"), None, &m).status(),
            200
        );
        assert!(m.state().on && m.state().by_api);
        assert_eq!(
            maintenance_endpoint(&Method::DELETE, Some(b"Bearer t0ken"), None, &m).status(),
            200
        );
        assert!(!m.state().on);
    }

    #[test]
    fn metrics_answer_in_the_format_accept_asks_for_under_its_own_content_type() {
        let s = snapshot(true, true);
        let metrics = Metrics::new();
        let (maintenance, history) = (MaintenanceState::default(), History::default());
        let get = |method: &Method, accept: Option<&str>| {
            let r = respond(
                method,
                "/metrics",
                None,
                accept,
                &published(&s, &maintenance, &history),
                &metrics,
            );
            let header = |h| r.headers().get(h).map(|v| v.to_str().unwrap().to_string());
            let (ct, vary) = (header(CONTENT_TYPE), header(hyper::header::VARY));
            let body = futures_util::FutureExt::now_or_never(http_body_util::BodyExt::collect(
                r.into_body(),
            ))
            .unwrap()
            .unwrap()
            .to_bytes();
            (ct.unwrap(), vary, String::from_utf8(body.to_vec()).unwrap())
        };
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        let (ct, vary, body) = get(&Method::GET, Some(prometheus));
        assert_eq!(
            ct,
            "application/openmetrics-text; version=1.0.0; charset=utf-8"
        );
        assert_eq!(vary.as_deref(), Some("accept"));
        assert!(body.contains("# TYPE rolecall_checks counter\n"), "{body}");
        assert!(body.ends_with("# EOF\n"), "{body}");
        for accept in [None, Some("*/*")] {
            let (ct, _, body) = get(&Method::GET, accept);
            assert_eq!(ct, "text/plain; version=0.0.4; charset=utf-8");
            assert!(
                body.contains("# TYPE rolecall_checks_total counter\n"),
                "{body}"
            );
            assert!(!body.contains("# EOF"), "{body}");
        }
        let (ct, _, _) = get(&Method::HEAD, Some(prometheus));
        assert!(ct.starts_with("application/openmetrics-text"), "{ct}");
    }

    #[test]
    fn wrong_methods_and_paths_are_refused() {
        let s = snapshot(true, true);
        assert_eq!(status(Method::POST, "/readyz", None, &s).0, 405);
        assert_eq!(status(Method::DELETE, "/status", None, &s).0, 405);
        assert_eq!(status(Method::GET, "/nope", None, &s).0, 404);
        assert_eq!(status(Method::HEAD, "/livez", None, &s).0, 200);
    }

    #[test]
    fn the_page_at_the_root_is_html_that_is_never_cached_and_runs_no_script() {
        let mut out = snapshot(false, true);
        out.reason = "on a replica <b>".into();
        let (maintenance, history) = (MaintenanceState::default(), History::default());
        history.record(&out, SystemTime::now());
        let r = respond(
            &Method::GET,
            "/",
            None,
            None,
            &published(&out, &maintenance, &history),
            &Metrics::new(),
        );
        assert_eq!(r.status(), 200);
        let header = |h: &str| r.headers().get(h).unwrap().to_str().unwrap().to_string();
        assert_eq!(header("content-type"), "text/html; charset=utf-8");
        assert_eq!(header("cache-control"), "no-store");
        assert!(header("content-security-policy").starts_with("default-src 'none'"));
        let body =
            futures_util::FutureExt::now_or_never(http_body_util::BodyExt::collect(r.into_body()))
                .unwrap()
                .unwrap()
                .to_bytes();
        let page = String::from_utf8(body.to_vec()).unwrap();
        assert!(
            page.contains("<span id=\"verdict\">stuck_on_replica</span>"),
            "{page}"
        );
        assert!(page.contains("on a replica &lt;b&gt;"), "{page}");
        assert_eq!(status(Method::POST, "/", None, &out).0, 405);
    }

    #[test]
    fn status_lists_the_verdict_changes_with_their_times_and_causes() {
        let mut s = snapshot(true, true);
        s.reason = "all on the master".into();
        let history = History::default();
        let t0 = UNIX_EPOCH + Duration::from_secs(1_796_049_000);
        history.record(&s, t0);
        s.verdict = Verdict::StuckOnReplica;
        s.in_rotation = false;
        s.reason = "on a replica".into();
        history.record(&s, t0 + Duration::from_secs(12));
        let maintenance = MaintenanceState::default();
        let r = respond(
            &Method::GET,
            "/status",
            None,
            None,
            &published(&s, &maintenance, &history),
            &Metrics::new(),
        );
        let body =
            futures_util::FutureExt::now_or_never(http_body_util::BodyExt::collect(r.into_body()))
                .unwrap()
                .unwrap()
                .to_bytes();
        let j: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let changes = j["changes"].as_array().unwrap();
        assert_eq!(changes.len(), 2);
        assert_eq!(changes[0]["at"], "2026-11-30T14:30:00.000Z");
        assert_eq!(changes[0]["verdict"], "ok");
        assert_eq!(changes[0]["reason"], "all on the master");
        assert_eq!(changes[1]["at"], "2026-11-30T14:30:12.000Z");
        assert_eq!(changes[1]["in_rotation"], false);
        assert_eq!(changes[1]["reason"], "on a replica");
    }
}
