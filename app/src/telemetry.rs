//! Structured logs to stderr (stdout is kept for what commands print for scripts, such
//! as a new API key). `RUST_LOG` filters; the format is text or JSON. Text is coloured
//! only when stderr is a terminal (and `NO_COLOR` is not set), so a log redirected to a
//! file or a pipe holds no escape codes.

use crate::config::LogFormat;
use std::io::IsTerminal;
use tracing_subscriber::{EnvFilter, fmt};

/// The filter when `RUST_LOG` is not set.
const DEFAULT_FILTER: &str = "info,sqlx=warn,poem=warn,apalis=warn";

/// Installs the global subscriber. Safe to call more than once (later calls do nothing).
pub fn init(format: LogFormat) {
    init_with_default_filter(format, DEFAULT_FILTER);
}

/// [`init`] with another filter for when `RUST_LOG` is not set (the bench shows
/// warnings only, so its figures are not drowned).
pub fn init_with_default_filter(format: LogFormat, default_filter: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let builder = fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.with_ansi(colour_on_stderr()).try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Whether text logs may use colour: stderr is a terminal and `NO_COLOR` is unset.
fn colour_on_stderr() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}
