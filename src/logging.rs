//! Logging through `tracing`: `RUST_LOG` filters, text for people or JSON for machines.
//!
//! In the text format every field value and message has its control characters escaped
//! ([`EscapedFields`]): a task id or stage sent by the backend with a newline in it must not be
//! able to start a line of its own that reads like the sidecar's. JSON escapes them already.

use std::fmt;
use std::io::IsTerminal;

use tracing::field::{Field, Visit};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FormatFields, MakeWriter};
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global subscriber once; later calls (tests, demo) are no-ops.
pub fn init(format: LogFormat) {
    init_with_default(format, "info");
}

/// Like [`init`], with the filter used when `RUST_LOG` is unset.
pub fn init_with_default(format: LogFormat, default_filter: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    // Colour codes only help a person at a terminal; in a log file or journal they are noise.
    let ansi = std::io::stderr().is_terminal();
    let _ = try_init(format, filter, ansi, std::io::stderr);
}

/// The subscriber of `format`, writing to `writer`, installed globally.
fn try_init<W>(
    format: LogFormat,
    filter: EnvFilter,
    ansi: bool,
    writer: W,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(writer);
    match format {
        LogFormat::Text => builder.fmt_fields(EscapedFields).try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
    }
}

/// The text format's fields, as `tracing-subscriber` writes them (`message k=v k="text"`),
/// with control characters written as escapes.
#[derive(Debug, Clone, Copy, Default)]
pub struct EscapedFields;

impl<'writer> FormatFields<'writer> for EscapedFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'writer>, fields: R) -> fmt::Result {
        let mut visitor = EscapingVisitor {
            writer,
            first: true,
            result: Ok(()),
        };
        fields.record(&mut visitor);
        visitor.result
    }
}

struct EscapingVisitor<'writer> {
    writer: Writer<'writer>,
    first: bool,
    result: fmt::Result,
}

impl EscapingVisitor<'_> {
    fn write(&mut self, field: &Field, value: &str) {
        if self.result.is_err() {
            return;
        }
        let separator = if self.first { "" } else { " " };
        self.first = false;
        self.result = if field.name() == "message" {
            write!(self.writer, "{separator}")
        } else {
            write!(self.writer, "{separator}{}=", field.name())
        }
        .and_then(|()| write_escaped(&mut self.writer, value));
    }
}

impl Visit for EscapingVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.write(field, value);
        } else {
            // Quoted, as the default formatter shows a string field.
            self.write(field, &format!("{value:?}"));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.write(field, &format!("{value:?}"));
    }
}

/// Writes `text` with every control character (and the Unicode line separators) as an escape.
fn write_escaped(out: &mut impl fmt::Write, text: &str) -> fmt::Result {
    for c in text.chars() {
        match c {
            '\n' => out.write_str("\\n")?,
            '\r' => out.write_str("\\r")?,
            '\t' => out.write_str("\\t")?,
            c if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}') => {
                write!(out, "\\u{{{:x}}}", c as u32)?
            }
            c => out.write_char(c)?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    //! Unit tests for the text format's escaping, through a real subscriber.

    use std::sync::{Arc, Mutex};

    use super::*;

    /// Everything the subscriber wrote.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn text_lines(log: impl FnOnce()) -> Vec<String> {
        let captured = Captured::default();
        let sink = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || sink.clone())
            .fmt_fields(EscapedFields)
            .finish();
        tracing::subscriber::with_default(subscriber, log);
        let bytes = captured.0.lock().expect("lock").clone();
        String::from_utf8(bytes)
            .expect("UTF-8")
            .lines()
            .map(String::from)
            .collect()
    }

    #[test]
    fn a_newline_in_a_value_cannot_start_a_log_line() {
        let forged = "init\n2026-12-02T00:00:00.000000Z  INFO consistency_sidecar::reload: configuration reloaded";
        let lines = text_lines(|| {
            tracing::warn!(stage = %forged, task_id = forged, path = ?forged, "issue in {}", forged);
        });
        assert_eq!(lines.len(), 1, "{lines:#?}");
        let line = &lines[0];
        assert!(line.contains(r"stage=init\n2026-12-02"), "{line}");
        assert!(line.contains(r#"task_id="init\n2026"#), "{line}");
        assert!(line.contains(r"issue in init\n2026"), "{line}");
    }

    #[test]
    fn other_control_characters_are_escaped_and_plain_text_is_left_alone() {
        let mut out = String::new();
        write_escaped(&mut out, "a\u{1b}[31mb\rc\u{2028}d é").expect("write");
        assert_eq!(out, r"a\u{1b}[31mb\rc\u{2028}d é");
    }
}
