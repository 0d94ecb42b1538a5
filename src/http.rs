//! The HTTP server for Kubernetes probes and monitoring.
//!
//! | path | answer |
//! |---|---|
//! | `/livez` | always `200 ok` while the process serves: liveness never depends on Redis |
//! | `/readyz` | `200 ready` in rotation, `503 not ready` otherwise and until the first complete check; `?verbose` lists each check |
//! | `/status` | the snapshot as JSON (never a secret) |
//! | `/metrics` | Prometheus text 0.0.4, or OpenMetrics 1.0.0 when `Accept` prefers it, each with its own content type |
//! | `/maintenance` | `POST` on, `DELETE` off, with `Authorization: Bearer <token>`; only when `[maintenance] token_file` is set (404 otherwise) |
//!
//! GET and HEAD only (405 otherwise); any other path is 404. Every answer comes from the
//! published snapshot. Connections are capped and each has a header-read timeout, so slow or
//! idle clients cannot starve the probes.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{ALLOW, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::maintenance::{Maintenance, MaintenanceState};
use crate::metrics::{Format, Metrics};
use crate::snapshot::Snapshot;

const MAX_CONNECTIONS: usize = 1024;
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// An idle keep-alive connection is closed after this long.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

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

/// Answers one request from the snapshot and the maintenance switch (in maintenance `/readyz` is
/// 503, and `/status` shows it as `maintenance`); `accept` picks the format of `/metrics`. Pure
/// apart from reading the clock.
pub fn respond(
    method: &Method,
    path: &str,
    query: Option<&str>,
    accept: Option<&str>,
    snapshot: &Snapshot,
    metrics: &Metrics,
    maintenance: &MaintenanceState,
) -> Response<Full<Bytes>> {
    let known = matches!(path, "/livez" | "/readyz" | "/status" | "/metrics");
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
        "/status" => {
            let mut json = snapshot.to_json(now);
            if let Some(o) = json.as_object_mut() {
                o.insert(
                    "maintenance".into(),
                    serde_json::to_value(maintenance).unwrap_or_default(),
                );
            }
            let body = serde_json::to_vec_pretty(&json).unwrap_or_default();
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

/// `POST /maintenance` (on) and `DELETE /maintenance` (off) with
/// `Authorization: Bearer <token>`; answers the resulting state as JSON. Without a configured
/// token the endpoint does not exist (404); a missing or wrong token is 401.
pub fn maintenance_endpoint(
    method: &Method,
    authorization: Option<&[u8]>,
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
    let state = maintenance.set_api(on);
    let body = serde_json::to_vec_pretty(&state).unwrap_or_default();
    let mut r = text(StatusCode::OK, body);
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r.headers_mut()
        .insert("cache-control", HeaderValue::from_static("no-store"));
    r
}

/// Serves HTTP on `listener` until `shutdown` (`/readyz`, `/status` and `/maintenance` with the
/// maintenance switch), then drains open connections for a bounded time.
pub async fn serve(
    listener: TcpListener,
    rx: watch::Receiver<Arc<Snapshot>>,
    metrics: Arc<Metrics>,
    maintenance: Arc<Maintenance>,
    shutdown: CancellationToken,
) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let slots = crate::listen::Slots::new(crate::listen::cap(MAX_CONNECTIONS));
    while let Some((stream, slot)) =
        crate::listen::accept("http", &listener, &slots, &shutdown).await
    {
        let (rx, metrics, maintenance) = (rx.clone(), metrics.clone(), maintenance.clone());
        let service = hyper::service::service_fn(move |req: Request<Incoming>| {
            let r = if req.uri().path() == "/maintenance" {
                maintenance_endpoint(
                    req.method(),
                    req.headers()
                        .get(hyper::header::AUTHORIZATION)
                        .map(HeaderValue::as_bytes),
                    &maintenance,
                )
            } else {
                let snapshot = rx.borrow().clone();
                respond(
                    req.method(),
                    req.uri().path(),
                    req.uri().query(),
                    req.headers()
                        .get(hyper::header::ACCEPT)
                        .and_then(|v| v.to_str().ok()),
                    &snapshot,
                    &metrics,
                    &maintenance.state(),
                )
            };
            let head = req.method() == Method::HEAD;
            async move {
                let mut r = r;
                if head {
                    *r.body_mut() = Full::new(Bytes::new());
                }
                Ok::<_, Infallible>(r)
            }
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

    fn status(m: Method, path: &str, q: Option<&str>, s: &Snapshot) -> (u16, String) {
        let r = respond(
            &m,
            path,
            q,
            None,
            s,
            &Metrics::new(),
            &MaintenanceState::default(),
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
        };
        let get = |path: &str, q: Option<&str>| {
            let r = respond(&Method::GET, path, q, None, &ready, &Metrics::new(), &m);
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
            maintenance_endpoint(&Method::POST, Some(b"Bearer x"), &off).status(),
            404
        );
        let m = Maintenance::new(MaintenanceConfig {
            file: None,
            token: Some(crate::secret::Secret::new("t0ken".into())),
            state_file: None,
        });
        let r = maintenance_endpoint(&Method::POST, None, &m);
        assert_eq!(r.status(), 401);
        assert!(r.headers().contains_key("www-authenticate"));
        assert_eq!(
            maintenance_endpoint(&Method::POST, Some(b"Bearer nope"), &m).status(),
            401
        );
        assert!(!m.state().on);
        assert_eq!(
            maintenance_endpoint(&Method::GET, Some(b"Bearer t0ken"), &m).status(),
            405
        );
        assert_eq!(
            maintenance_endpoint(&Method::POST, Some(b"Bearer t0ken"), &m).status(),
            200
        );
        assert!(m.state().on && m.state().by_api);
        assert_eq!(
            maintenance_endpoint(&Method::DELETE, Some(b"Bearer t0ken"), &m).status(),
            200
        );
        assert!(!m.state().on);
    }

    #[test]
    fn metrics_answer_in_the_format_accept_asks_for_under_its_own_content_type() {
        let s = snapshot(true, true);
        let metrics = Metrics::new();
        let get = |method: &Method, accept: Option<&str>| {
            let r = respond(
                method,
                "/metrics",
                None,
                accept,
                &s,
                &metrics,
                &MaintenanceState::default(),
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
}
