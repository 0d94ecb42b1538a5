//! Logs for where they go: the line format (`--log-format`) and the level, which can change
//! while rolecall runs (SIGHUP re-reads `[log] level`) without touching any other state.
//!
//! - `plain`: tracing's usual line, with a timestamp (a terminal, a file, `docker logs`).
//! - `journal`: what `auto` picks when stderr is the journal (`JOURNAL_STREAM` names stderr's
//!   device and inode, systemd.exec(5) "Environment Variables Set or Propagated by the Service
//!   Manager"): no timestamp (journald stamps every line) and each line starts with the
//!   sd-daemon(3) priority prefix (`<3>` error, `<4>` warning, `<6>` info, `<7>` debug and
//!   trace), which journald turns into the entry's priority (`SyslogLevelPrefix=`, on by
//!   default), so `journalctl -p warning -u rolecall` shows the warnings. `--log-format
//!   journal` writes them wherever stderr goes.
//! - `json`: one object per line, the event's fields at the top level (`verdict`, `group`,
//!   `reason`, …) beside `timestamp`, `level`, `target` and `message`.

use std::fmt;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::{self, FormatEvent, FormatFields, Writer};
use tracing_subscriber::fmt::{FmtContext, MakeWriter};
use tracing_subscriber::layer::{Layered, SubscriberExt};
use tracing_subscriber::registry::{LookupSpan, Registry};
use tracing_subscriber::reload;

/// The log level when neither `[log] level` nor `ROLECALL_LOG` names one.
pub const DEFAULT_LEVEL: &str = "info";

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// The journal's format under journald (`JOURNAL_STREAM` names stderr), else `plain`.
    Auto,
    /// Text lines with a timestamp.
    Plain,
    /// The journal's format (priority prefix, no timestamp) wherever stderr goes.
    Journal,
    /// One JSON object per line.
    Json,
}

/// The format actually written, once `auto` is decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    Journal,
    Plain,
    Json,
}

impl LogFormat {
    /// `auto` is the journal's format only when `JOURNAL_STREAM` (`DEVICE:INODE`) names the
    /// stream rolecall logs to: a child of a service inherits the variable with its stderr
    /// redirected elsewhere, and its lines must not carry priority prefixes there.
    pub fn resolve(self, journal_stream: Option<&str>, stderr: Option<(u64, u64)>) -> Output {
        match self {
            LogFormat::Plain => Output::Plain,
            LogFormat::Journal => Output::Journal,
            LogFormat::Json => Output::Json,
            LogFormat::Auto => {
                let named = journal_stream.and_then(|v| {
                    let (dev, ino) = v.trim().split_once(':')?;
                    Some((dev.parse::<u64>().ok()?, ino.parse::<u64>().ok()?))
                });
                if named.is_some() && named == stderr {
                    Output::Journal
                } else {
                    Output::Plain
                }
            }
        }
    }
}

/// The device and inode of this process's stderr (`None` if it cannot be inspected).
pub fn stderr_identity() -> Option<(u64, u64)> {
    let fd = std::io::stderr().as_fd().try_clone_to_owned().ok()?;
    let meta = std::fs::File::from(fd).metadata().ok()?;
    Some((meta.dev(), meta.ino()))
}

/// Changes the level of the installed subscriber.
#[derive(Clone)]
pub struct LevelHandle(reload::Handle<EnvFilter, Registry>);

impl LevelHandle {
    /// Sets the level to `directives` (`debug`, `info,rolecall::check=debug`, …).
    pub fn set(&self, directives: &str) -> Result<(), String> {
        let filter = parse_level(directives)?;
        self.0.reload(filter).map_err(|e| e.to_string())
    }
}

/// An `EnvFilter` from level directives, refusing what it would otherwise ignore.
pub fn parse_level(directives: &str) -> Result<EnvFilter, String> {
    EnvFilter::builder()
        .with_regex(false)
        .parse(directives)
        .map_err(|e| format!("log level {directives:?}: {e}"))
}

type Filtered = Layered<reload::Layer<EnvFilter, Registry>, Registry>;

/// The subscriber for `output` at `level`, writing to `writer`, and the handle that changes
/// its level.
pub fn subscriber<W>(
    output: Output,
    level: &str,
    writer: W,
    ansi: bool,
) -> Result<(impl Subscriber + Send + Sync, LevelHandle), String>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let (filter, handle) = reload::Layer::new(parse_level(level)?);
    let base = tracing_subscriber::fmt::layer::<Filtered>().with_writer(writer);
    let fmt: Box<dyn tracing_subscriber::Layer<Filtered> + Send + Sync> = match output {
        Output::Plain => Box::new(base.with_ansi(ansi)),
        Output::Journal => Box::new(base.with_ansi(false).event_format(JournalFormat::new())),
        Output::Json => Box::new(base.with_ansi(false).event_format(JsonFormat)),
    };
    let subscriber = Registry::default().with(filter).with(fmt);
    Ok((subscriber, LevelHandle(handle)))
}

/// Installs the subscriber on stderr as the global default.
pub fn init(format: LogFormat, level: &str) -> Result<(Output, LevelHandle), String> {
    let journal_stream = std::env::var("JOURNAL_STREAM").ok();
    let output = format.resolve(journal_stream.as_deref(), stderr_identity());
    let ansi = output == Output::Plain && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let (subscriber, handle) = subscriber(output, level, std::io::stderr, ansi)?;
    tracing::subscriber::set_global_default(subscriber).map_err(|e| e.to_string())?;
    // Records of the `log` crate (rustls, for one) go through the same filter and format. At
    // every level, not the one of this start: a reload may raise it.
    tracing_log::LogTracer::init().map_err(|e| e.to_string())?;
    Ok((output, handle))
}

/// The sd-daemon(3) prefix for a level: the syslog priority. tracing has no notice or
/// critical; trace is debug to syslog.
pub fn priority(level: Level) -> &'static str {
    match level {
        Level::ERROR => "<3>",
        Level::WARN => "<4>",
        Level::INFO => "<6>",
        Level::DEBUG | Level::TRACE => "<7>",
    }
}

/// The journal's lines: tracing's usual line without its timestamp, every line of it (a field
/// may hold a newline) behind the priority prefix, since journald reads one per line.
struct JournalFormat(format::Format<format::Full, ()>);

impl JournalFormat {
    fn new() -> JournalFormat {
        JournalFormat(format::format().without_time().with_ansi(false))
    }
}

impl<S, N> FormatEvent<S, N> for JournalFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut line = String::new();
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        let prefix = priority(*event.metadata().level());
        for part in line.trim_end_matches('\n').split('\n') {
            writeln!(writer, "{prefix}{}", part.trim_start())?;
        }
        Ok(())
    }
}

/// One JSON object per event, its fields at the top level.
struct JsonFormat;

impl<S, N> FormatEvent<S, N> for JsonFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let now = humantime::format_rfc3339_millis(std::time::SystemTime::now());
        let mut fields = JsonFields(vec![
            ("timestamp", now.to_string().into()),
            ("level", meta.level().as_str().into()),
            ("target", meta.target().into()),
        ]);
        event.record(&mut fields);
        // Written in this order (a JSON map would sort the keys): the time, level and message
        // first, where a reader of the raw lines looks.
        writer.write_char('{')?;
        for (i, (key, value)) in fields.0.iter().enumerate() {
            let key = serde_json::to_string(key).map_err(|_| fmt::Error)?;
            let value = serde_json::to_string(value).map_err(|_| fmt::Error)?;
            let comma = if i == 0 { "" } else { "," };
            write!(writer, "{comma}{key}:{value}")?;
        }
        writeln!(writer, "}}")
    }
}

/// Collects an event's fields, in order, as JSON values: numbers and booleans stay typed, the
/// rest (`%display`, `?debug`) are strings.
struct JsonFields(Vec<(&'static str, serde_json::Value)>);

impl Visit for JsonFields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.push((field.name(), format!("{value:?}").into()));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.push((field.name(), value.into()));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.push((field.name(), value.into()));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.push((field.name(), value.into()));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.push((field.name(), value.into()));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.push((field.name(), value.into()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// Everything written, shared with the test.
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Buffer {
        type Writer = Buffer;
        fn make_writer(&'a self) -> Buffer {
            self.clone()
        }
    }

    /// The lines `output` writes at `level` for one event of each level.
    fn lines(output: Output, level: &str, events: impl FnOnce(&LevelHandle)) -> Vec<String> {
        let buffer = Buffer::default();
        let (subscriber, handle) = subscriber(output, level, buffer.clone(), false).unwrap();
        tracing::subscriber::with_default(subscriber, || events(&handle));
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        text.lines().map(str::to_owned).collect()
    }

    fn every_level(_: &LevelHandle) {
        tracing::error!(group = "main", "sentinel refused");
        tracing::warn!(
            verdict = "stuck_on_replica",
            in_rotation = false,
            "verdict changed"
        );
        tracing::info!(addr = "127.0.0.1:1", "agent listening");
        tracing::debug!(duration_ms = 1.5, "check complete");
    }

    /// A line that starts like `2026-11-30T11:48:28.123456Z` or with the time elsewhere in it.
    fn has_timestamp(line: &str) -> bool {
        line.split(|c: char| c.is_whitespace() || c == '"')
            .any(|w| w.len() >= 19 && w.as_bytes()[4] == b'-' && w.contains('T'))
    }

    #[test]
    fn journal_lines_carry_the_priority_of_their_level_and_no_timestamp() {
        let lines = lines(Output::Journal, "debug", every_level);
        let prefixes: Vec<&str> = lines.iter().map(|l| &l[..3]).collect();
        assert_eq!(prefixes, ["<3>", "<4>", "<6>", "<7>"], "{lines:#?}");
        assert!(lines[1].contains("verdict changed verdict=\"stuck_on_replica\""));
        assert!(lines.iter().all(|l| !has_timestamp(l)), "{lines:#?}");
    }

    #[test]
    fn every_line_of_a_multi_line_event_is_prefixed() {
        let lines = lines(Output::Journal, "info", |_| {
            tracing::warn!(reason = %"first\nsecond", "verdict changed");
        });
        assert_eq!(lines.len(), 2, "{lines:#?}");
        assert!(lines.iter().all(|l| l.starts_with("<4>")), "{lines:#?}");
    }

    #[test]
    fn plain_lines_have_a_timestamp_and_no_priority() {
        let lines = lines(Output::Plain, "info", every_level);
        assert_eq!(lines.len(), 3, "{lines:#?}");
        assert!(
            lines
                .iter()
                .all(|l| has_timestamp(l) && !l.starts_with('<'))
        );
    }

    #[test]
    fn json_lines_hold_the_fields_at_the_top_level() {
        let lines = lines(Output::Json, "info", every_level);
        let warn: serde_json::Value = serde_json::from_str(&lines[1]).unwrap();
        assert_eq!(warn["level"], "WARN");
        assert_eq!(warn["message"], "verdict changed");
        assert_eq!(warn["verdict"], "stuck_on_replica");
        assert_eq!(warn["in_rotation"], false);
        assert!(has_timestamp(warn["timestamp"].as_str().unwrap()));
        let error: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
        assert_eq!(error["group"], "main");
        assert!(
            lines[1].starts_with(r#"{"timestamp":"#)
                && lines[1].contains(r#""level":"WARN","target":"#)
                && lines[1].contains(r#""message":"verdict changed","verdict":"#),
            "{}",
            lines[1]
        );
    }

    #[test]
    fn the_level_changes_while_the_subscriber_runs() {
        let lines = lines(Output::Journal, "info", |handle| {
            tracing::debug!("hidden");
            handle.set("debug").unwrap();
            tracing::debug!("shown");
            assert!(handle.set("rolecall=loud").is_err());
        });
        assert_eq!(lines, ["<7>DEBUG rolecall::logs::tests: shown"]);
    }

    #[test]
    fn auto_is_the_journal_only_when_journal_stream_names_stderr() {
        let stderr = Some((8, 1234));
        let auto = |v| LogFormat::Auto.resolve(v, stderr);
        assert_eq!(auto(Some("8:1234")), Output::Journal);
        assert_eq!(auto(Some("8:999")), Output::Plain);
        assert_eq!(auto(Some("garbage")), Output::Plain);
        assert_eq!(auto(None), Output::Plain);
        assert_eq!(LogFormat::Auto.resolve(Some("8:1234"), None), Output::Plain);
        assert_eq!(
            LogFormat::Json.resolve(Some("8:1234"), stderr),
            Output::Json
        );
        assert_eq!(
            LogFormat::Plain.resolve(Some("8:1234"), stderr),
            Output::Plain
        );
        assert_eq!(LogFormat::Journal.resolve(None, None), Output::Journal);
    }
}
