//! A tiny leveled logger: one `key=value` line per event on stderr.
//!
//! ```text
//! ts=2025-01-31T12:00:00.123Z level=info mode=tcp2ws conn=7 peer=127.0.0.1:50000 event=closed reason=normal …
//! ```
//!
//! The level is process-wide ([`set_level`]); the binary takes it from `--log-level`, else from `RUST_LOG`
//! ([`level_from_rust_log`]), else `info`. Values with spaces, quotes or `=` are quoted ([`Val`]). Each
//! line is written with one `write` call on a locked stderr, so lines from different threads never mix.

use std::fmt;
use std::io::Write;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// How much to log; each level includes the ones above it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Failures of the process (a listener, a thread).
    Error = 1,
    /// Things an operator should look at (capacity reached, accept failing).
    Warn = 2,
    /// One line per connection and the startup line.
    Info = 3,
    /// Accepts, rejections and other per-connection detail.
    Debug = 4,
}

impl Level {
    /// The name in `--log-level` and in log lines.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Error => "error",
            Level::Warn => "warn",
            Level::Info => "info",
            Level::Debug => "debug",
        }
    }

    /// `error`, `warn`/`warning`, `info`, `debug`, `trace` (same as debug), `off` (→ `None`), any case.
    pub fn parse(s: &str) -> Result<Option<Level>, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "error" => Ok(Some(Level::Error)),
            "warn" | "warning" => Ok(Some(Level::Warn)),
            "info" => Ok(Some(Level::Info)),
            "debug" | "trace" => Ok(Some(Level::Debug)),
            "off" => Ok(None),
            other => Err(format!(
                "unknown log level {other:?} (expected error, warn, info or debug)"
            )),
        }
    }
}

/// 0 = off.
static LEVEL: AtomicU8 = AtomicU8::new(Level::Info as u8);

/// Sets the process-wide level (`None`: log nothing).
pub fn set_level(level: Option<Level>) {
    LEVEL.store(level.map_or(0, |l| l as u8), Ordering::Relaxed);
}

/// Whether lines of `level` are written.
pub fn enabled(level: Level) -> bool {
    level as u8 <= LEVEL.load(Ordering::Relaxed)
}

/// The level a `RUST_LOG` value asks for: a bare level (`debug`), or `wsbridge…=level` (which wins over a
/// bare one); other crates' directives are ignored. `None` when it names no usable level.
pub fn level_from_rust_log(value: &str) -> Option<Option<Level>> {
    let mut bare = None;
    let mut ours = None;
    for directive in value.split(',') {
        match directive.split_once('=') {
            None => bare = Level::parse(directive).ok().or(bare),
            Some((target, level)) if target.trim().starts_with("wsbridge") => {
                ours = Level::parse(level).ok().or(ours)
            }
            Some(_) => {}
        }
    }
    ours.or(bare)
}

/// Writes one line at `level`: `ts=… level=…` then `fields` (already `key=value` pairs).
pub fn write(level: Level, fields: fmt::Arguments<'_>) {
    if !enabled(level) {
        return;
    }
    let line = format!(
        "ts={} level={} {fields}\n",
        Timestamp::now(),
        level.as_str()
    );
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

/// Logs `key=value …` pairs at a level: `log!(Info, "event=closed conn={}", id)`.
#[macro_export]
macro_rules! log {
    ($level:ident, $($arg:tt)+) => {
        if $crate::log::enabled($crate::log::Level::$level) {
            $crate::log::write($crate::log::Level::$level, format_args!($($arg)+))
        }
    };
}

/// A value that is quoted (with `"` and `\` escaped) when it holds a space, a quote, `=` or a control
/// character, so that lines stay machine-splittable.
pub struct Val<'a>(pub &'a str);

impl fmt::Display for Val<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let plain = !self.0.is_empty()
            && !self
                .0
                .chars()
                .any(|c| c == ' ' || c == '"' || c == '=' || c == '\\' || c.is_control());
        if plain {
            return f.write_str(self.0);
        }
        f.write_str("\"")?;
        for c in self.0.chars() {
            match c {
                '"' => f.write_str("\\\"")?,
                '\\' => f.write_str("\\\\")?,
                '\n' => f.write_str("\\n")?,
                '\r' => f.write_str("\\r")?,
                c if c.is_control() => write!(f, "\\u{{{:x}}}", c as u32)?,
                c => write!(f, "{c}")?,
            }
        }
        f.write_str("\"")
    }
}

/// UTC wall-clock time with milliseconds, RFC 3339.
struct Timestamp(SystemTime);

impl Timestamp {
    fn now() -> Self {
        Timestamp(SystemTime::now())
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0.duration_since(UNIX_EPOCH).unwrap_or_default();
        let secs = d.as_secs();
        let (days, rem) = (secs / 86_400, secs % 86_400);
        let (y, m, day) = civil_from_days(days as i64);
        write!(
            f,
            "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
            rem / 3600,
            rem / 60 % 60,
            rem % 60,
            d.subsec_millis()
        )
    }
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn levels_parse_and_rust_log_picks_ours() {
        assert_eq!(Level::parse("WARN"), Ok(Some(Level::Warn)));
        assert_eq!(Level::parse("off"), Ok(None));
        assert!(Level::parse("loud").is_err());
        assert_eq!(level_from_rust_log("debug"), Some(Some(Level::Debug)));
        assert_eq!(
            level_from_rust_log("rustls=trace,warn,wsbridge_mio=error"),
            Some(Some(Level::Error))
        );
        assert_eq!(level_from_rust_log("rustls=trace"), None);
    }

    #[test]
    fn values_are_quoted_when_needed() {
        assert_eq!(Val("normal").to_string(), "normal");
        assert_eq!(
            Val("upstream: cannot connect").to_string(),
            "\"upstream: cannot connect\""
        );
        assert_eq!(Val("a\"b\n").to_string(), "\"a\\\"b\\n\"");
        assert_eq!(Val("").to_string(), "\"\"");
    }

    #[test]
    fn timestamps_are_rfc3339_utc() {
        let t = UNIX_EPOCH + Duration::from_millis(951_782_400_123); // 2000-02-29
        assert_eq!(
            Timestamp(t).to_string(),
            "2000-02-29T00:00:00.123Z".to_owned()
        );
        let t = UNIX_EPOCH + Duration::from_secs(1_735_689_599); // last second of 2024
        assert_eq!(Timestamp(t).to_string(), "2024-12-31T23:59:59.000Z");
    }
}
