//! The two expositions `/metrics` serves, and which one a scrape gets.
//!
//! Prometheus reads a body with the parser its `Content-Type` names and falls back to the
//! classic text parser for anything else, so a body must always carry its own type: OpenMetrics
//! labelled `text/plain; version=0.0.4` loses its counters' types (the `# TYPE` line names
//! `x`, the sample `x_total`), and `promtool check metrics` rejects it.
//!
//! - **OpenMetrics 1.0.0** (`application/openmetrics-text; version=1.0.0; charset=utf-8`) when
//!   the scrape's `Accept` names `application/openmetrics-text` at least as high as plain text.
//!   Prometheus asks for it first by default: before 2.49 with the fixed header
//!   `application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,
//!   text/plain;version=0.0.4;q=0.5,*/*;q=0.1`; since, one range per `scrape_protocols` entry
//!   in falling q (`q=0.6`, `q=0.5`…, then `*/*`), OpenMetrics first in the default list
//!   (Prometheus `scrape/scrape.go`, `acceptHeader`).
//! - **Prometheus text 0.0.4** (`text/plain; version=0.0.4; charset=utf-8`) otherwise: no
//!   `Accept`, `*/*` (curl, a browser), or a scraper that only lists the classic format. It is
//!   what every scraper understands, and what a person reading `/metrics` expects.
//!
//! Both are written by `prometheus-client` from the same registry (`encoding::text` and
//! `encoding::prometheus_text`), so they carry the same metrics.

/// An exposition format of `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    OpenMetrics,
    Text,
}

impl Format {
    /// The format for a request's `Accept` header (pure).
    pub fn negotiate(accept: Option<&str>) -> Format {
        let (mut openmetrics, mut text) = (0.0_f64, 0.0_f64);
        for range in accept.unwrap_or("").split(',') {
            let mut parts = range.split(';').map(str::trim);
            let media = parts.next().unwrap_or("").to_ascii_lowercase();
            let params: Vec<(&str, &str)> = parts.filter_map(|p| p.split_once('=')).collect();
            let param = |name: &str| {
                params
                    .iter()
                    .find(|(k, _)| k.trim().eq_ignore_ascii_case(name))
                    .map(|(_, v)| v.trim())
            };
            // The weight is 1 when absent (RFC 9110 §12.4.2); an unreadable one is taken as 0.
            let q = param("q").map_or(1.0, |v| v.parse::<f64>().unwrap_or(0.0).clamp(0.0, 1.0));
            match media.as_str() {
                // Prometheus reads 0.0.1 and 1.0.0 with one parser; a later version may differ.
                "application/openmetrics-text"
                    if matches!(param("version"), None | Some("1.0.0" | "0.0.1")) =>
                {
                    openmetrics = openmetrics.max(q)
                }
                "text/plain" | "text/*" | "*/*" => text = text.max(q),
                _ => {}
            }
        }
        if openmetrics > 0.0 && openmetrics >= text {
            Format::OpenMetrics
        } else {
            Format::Text
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Format::Text => prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openmetrics_only_when_the_scraper_prefers_it() {
        let cases = [
            (None, Format::Text),
            (Some(""), Format::Text),
            (Some("*/*"), Format::Text),
            (Some("text/plain"), Format::Text),
            // Prometheus 2.x's default scrape.
            (
                Some(
                    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
                ),
                Format::OpenMetrics,
            ),
            // Prometheus 3.x's default scrape.
            (
                Some(
                    "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,application/openmetrics-text;version=0.0.1;q=0.5,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2",
                ),
                Format::OpenMetrics,
            ),
            // Prometheus with `scrape_protocols: [PrometheusText0.0.4]`.
            (
                Some("text/plain;version=0.0.4;q=0.6,*/*;q=0.5"),
                Format::Text,
            ),
            // A scraper that wants protobuf first and text next gets text.
            (
                Some(
                    "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.7,text/plain;version=0.0.4;q=0.3",
                ),
                Format::Text,
            ),
            (Some("Application/OpenMetrics-Text"), Format::OpenMetrics),
            (Some("application/openmetrics-text; q=0"), Format::Text),
            (
                Some("application/openmetrics-text;q=0.2, text/plain"),
                Format::Text,
            ),
            (
                Some("text/plain;q=0.2, application/openmetrics-text"),
                Format::OpenMetrics,
            ),
            (Some("application/openmetrics-text;q=oops"), Format::Text),
            (
                Some("application/openmetrics-text;version=2.0.0"),
                Format::Text,
            ),
            (
                Some("application/openmetrics-text; Version=0.0.1"),
                Format::OpenMetrics,
            ),
        ];
        for (accept, want) in cases {
            assert_eq!(Format::negotiate(accept), want, "{accept:?}");
        }
    }

    #[test]
    fn each_format_has_its_own_content_type() {
        assert_eq!(
            Format::OpenMetrics.content_type(),
            "application/openmetrics-text; version=1.0.0; charset=utf-8"
        );
        assert_eq!(
            Format::Text.content_type(),
            "text/plain; version=0.0.4; charset=utf-8"
        );
    }
}
