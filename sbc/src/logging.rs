//! Log setup: which events are logged (the filter) and how a line looks
//! (text or JSON), installed once as the process's `tracing` subscriber.
//!
//! Owns: the precedence of the three places a filter can come from, the
//! subscriber's format, and the rule below on what may be logged at which
//! level. [`resolve_filter`] is pure and tested; [`init`] reads `RUST_LOG`
//! and installs the global subscriber, so the daemon calls it once at
//! start-up (tests cannot, since a second global install fails).
//!
//! # Precedence
//!
//! The first of these that is set and non-empty wins, whole (filters are not
//! merged):
//!
//! 1. a command-line option of the daemon, passed to [`init`] as `cli`,
//! 2. the `RUST_LOG` environment variable,
//! 3. `[logging] level` in the configuration (default `info`).
//!
//! The first two take `tracing-subscriber` `EnvFilter` directives, e.g.
//! `info,sbc::transport=debug`; the configuration takes a level only. A
//! directive that does not parse is an error naming where it came from,
//! rather than a silent fallback to another level. A configuration reload
//! does not change the level (the subscriber is fixed at start-up).
//!
//! # Format
//!
//! `[logging] format = "text"` (default): one human-readable line per event
//! on stderr, colours only when stderr is a terminal (journald gets plain
//! text). `"json"`: one JSON object per line with `timestamp` (RFC 3339 UTC),
//! `level`, `target`, `message` and the event's fields at the top level,
//! plus `span` (the innermost span's name and fields, e.g. a call's) when
//! the event happened inside one, for log shippers.
//!
//! # What may be logged, and at which level
//!
//! * `error`/`warn`/`info`: events an operator acts on or counts (a listener
//!   bound, a trunk up or down, a call refused and why, a reload). They name
//!   things by realm, trunk, method, status code, Call-ID and peer address;
//!   never a full SIP message, a message body (SDP), a header value other
//!   than those, or a secret (`Authorization`/`Proxy-Authorization`
//!   credentials, passwords or keys from the configuration, `a=crypto` keys
//!   from SDP).
//! * `debug`: per-message detail: start lines and header names, routing and
//!   media decisions. Still no bodies, credentials or crypto keys.
//! * `trace`: full SIP messages as sent and received, for a lab or a short
//!   capture. They may carry credentials and SRTP keys: do not leave `trace`
//!   on in production or ship its output off the box.
//!
//! Per-packet media events are never logged (they are counted in metrics).
use std::io::IsTerminal as _;

use tracing::Subscriber;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::config::{LogFormat, LogLevel, Logging};

/// The environment variable that overrides `[logging] level`.
pub const ENV_VAR: &str = "RUST_LOG";

/// Where the filter in force came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FilterSource {
    /// The command line.
    Cli,
    /// The `RUST_LOG` environment variable.
    Env,
    /// `[logging] level`.
    Config,
}

impl FilterSource {
    /// How the source is named in messages.
    pub const fn as_str(self) -> &'static str {
        match self {
            FilterSource::Cli => "the command line",
            FilterSource::Env => "RUST_LOG",
            FilterSource::Config => "[logging] level",
        }
    }
}

/// The filter [`resolve_filter`] chose.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedFilter {
    /// `EnvFilter` directives, e.g. `info` or `warn,sbc::sip=trace`.
    pub directives: String,
    /// Where they came from.
    pub source: FilterSource,
}

/// Errors of log setup.
#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    /// Filter directives from the command line or `RUST_LOG` do not parse.
    #[error(
        "log filter {directives:?} from {} is invalid: {error} (write a level such as \"info\", or directives such as \"info,sbc::transport=debug\")",
        from.as_str()
    )]
    Directives {
        /// Where the directives came from.
        from: FilterSource,
        /// The directives as given.
        directives: String,
        /// What the parser said.
        error: String,
    },
    /// A global subscriber is already installed (init called twice).
    #[error("a log subscriber is already installed: {0}")]
    AlreadyInstalled(String),
}

/// The directive of a configured level.
pub const fn level_directive(level: LogLevel) -> &'static str {
    match level {
        LogLevel::Trace => "trace",
        LogLevel::Debug => "debug",
        LogLevel::Info => "info",
        LogLevel::Warn => "warn",
        LogLevel::Error => "error",
    }
}

/// Chooses the filter by the precedence in the module docs and checks that
/// it parses. `cli` and `env` are the raw values (`None` or blank when
/// unset). Pure: the caller reads the environment.
pub fn resolve_filter(
    cli: Option<&str>,
    env: Option<&str>,
    config: LogLevel,
) -> Result<ResolvedFilter, LoggingError> {
    fn given(value: Option<&str>) -> Option<&str> {
        value.map(str::trim).filter(|v| !v.is_empty())
    }
    let (directives, source) = if let Some(cli) = given(cli) {
        (cli, FilterSource::Cli)
    } else if let Some(env) = given(env) {
        (env, FilterSource::Env)
    } else {
        (level_directive(config), FilterSource::Config)
    };
    parse_filter(directives, source)?;
    Ok(ResolvedFilter {
        directives: directives.to_owned(),
        source,
    })
}

/// Parses `EnvFilter` directives, naming their source on error.
fn parse_filter(directives: &str, from: FilterSource) -> Result<EnvFilter, LoggingError> {
    EnvFilter::builder()
        .parse(directives)
        .map_err(|e| LoggingError::Directives {
            from,
            directives: directives.to_owned(),
            error: e.to_string(),
        })
}

/// The subscriber [`init`] installs, writing to `writer` (a parameter so
/// that tests can capture lines without a global install).
fn subscriber<W>(
    format: LogFormat,
    filter: EnvFilter,
    writer: W,
    ansi: bool,
) -> Box<dyn Subscriber + Send + Sync>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match format {
        LogFormat::Text => Box::new(builder.with_ansi(ansi).finish()),
        LogFormat::Json => Box::new(
            builder
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .with_span_list(false)
                .finish(),
        ),
    }
}

/// Installs the process's subscriber: the filter from `cli`, `RUST_LOG` or
/// `config.level` (in that order), in `config.format`, on stderr. Returns
/// the filter chosen, for the daemon to log once the subscriber is up.
pub fn init(config: &Logging, cli: Option<&str>) -> Result<ResolvedFilter, LoggingError> {
    // RUST_LOG that is not Unicode is treated as unset rather than failing.
    let env = std::env::var(ENV_VAR).ok();
    let resolved = resolve_filter(cli, env.as_deref(), config.level)?;
    let filter = parse_filter(&resolved.directives, resolved.source)?;
    let ansi = std::io::stderr().is_terminal();
    subscriber(config.format, filter, std::io::stderr, ansi)
        .try_init()
        .map_err(|e| LoggingError::AlreadyInstalled(e.to_string()))?;
    Ok(resolved)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolved(cli: Option<&str>, env: Option<&str>, config: LogLevel) -> ResolvedFilter {
        resolve_filter(cli, env, config).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn config_level_applies_when_nothing_overrides_it() {
        for (level, directive) in [
            (LogLevel::Trace, "trace"),
            (LogLevel::Debug, "debug"),
            (LogLevel::Info, "info"),
            (LogLevel::Warn, "warn"),
            (LogLevel::Error, "error"),
        ] {
            let r = resolved(None, None, level);
            assert_eq!(r.directives, directive);
            assert_eq!(r.source, FilterSource::Config);
        }
    }

    #[test]
    fn cli_beats_env_beats_config() {
        let r = resolved(Some("debug"), Some("warn"), LogLevel::Error);
        assert_eq!(
            (r.directives.as_str(), r.source),
            ("debug", FilterSource::Cli)
        );
        let r = resolved(None, Some("warn,sbc::sip=trace"), LogLevel::Error);
        assert_eq!(
            (r.directives.as_str(), r.source),
            ("warn,sbc::sip=trace", FilterSource::Env)
        );
    }

    #[test]
    fn blank_overrides_count_as_unset() {
        let r = resolved(Some("  "), Some(""), LogLevel::Warn);
        assert_eq!(
            (r.directives.as_str(), r.source),
            ("warn", FilterSource::Config)
        );
        let r = resolved(Some(""), Some(" debug "), LogLevel::Warn);
        assert_eq!(
            (r.directives.as_str(), r.source),
            ("debug", FilterSource::Env)
        );
    }

    #[test]
    fn bad_directives_name_their_source_instead_of_falling_back() {
        let Err(e) = resolve_filter(None, Some("sbc=loud"), LogLevel::Info) else {
            panic!("an invalid RUST_LOG was accepted")
        };
        assert!(
            matches!(&e, LoggingError::Directives { from: FilterSource::Env, directives, .. } if directives == "sbc=loud"),
            "{e:?}"
        );
        assert!(e.to_string().contains("from RUST_LOG"), "{e}");
        let Err(e) = resolve_filter(Some("[bad"), Some("info"), LogLevel::Info) else {
            panic!("an invalid --log-level was accepted")
        };
        assert!(e.to_string().contains("from the command line"), "{e}");
    }

    /// A writer the tests read back.
    #[derive(Clone, Default)]
    struct Capture(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("capture lock").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'w> MakeWriter<'w> for Capture {
        type Writer = Capture;
        fn make_writer(&'w self) -> Capture {
            self.clone()
        }
    }

    /// The lines the subscriber for `format` and `directives` writes for an
    /// info event inside a span and a debug event.
    fn lines(format: LogFormat, directives: &str) -> Vec<String> {
        let capture = Capture::default();
        let filter = parse_filter(directives, FilterSource::Config).expect("directives");
        let sub = subscriber(format, filter, capture.clone(), false);
        tracing::subscriber::with_default(sub, || {
            let span = tracing::info_span!("call", call_id = "abc-123");
            let _entered = span.enter();
            tracing::info!(realm = "outside", status = 486, "call refused");
            tracing::debug!("per-message detail");
        });
        let bytes = capture.0.lock().expect("capture lock").clone();
        String::from_utf8(bytes)
            .expect("UTF-8 log")
            .lines()
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn json_lines_carry_the_documented_keys() {
        let lines = lines(LogFormat::Json, "info");
        assert_eq!(lines.len(), 1, "the debug event is filtered out: {lines:?}");
        let v: serde_json::Value = serde_json::from_str(&lines[0]).expect("a JSON line");
        assert_eq!(v["level"], "INFO", "{v}");
        assert_eq!(v["message"], "call refused", "{v}");
        assert_eq!(v["realm"], "outside", "{v}");
        assert_eq!(v["status"], 486, "{v}");
        assert_eq!(v["target"], "sbc::logging::tests", "{v}");
        assert_eq!(v["span"]["name"], "call", "{v}");
        assert_eq!(v["span"]["call_id"], "abc-123", "{v}");
        let ts = v["timestamp"].as_str().expect("timestamp");
        assert!(ts.ends_with('Z') && ts.contains('T'), "RFC 3339 UTC: {ts}");
    }

    #[test]
    fn text_lines_are_plain_and_follow_the_filter() {
        let lines = lines(LogFormat::Text, "debug");
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(lines[0].contains("INFO"), "{}", lines[0]);
        assert!(
            lines[0].contains("call refused") && lines[0].contains("realm=\"outside\""),
            "{}",
            lines[0]
        );
        assert!(
            lines.iter().all(|l| !l.contains('\u{1b}')),
            "no ANSI: {lines:?}"
        );
        assert!(lines[1].contains("DEBUG"), "{}", lines[1]);
    }
}
