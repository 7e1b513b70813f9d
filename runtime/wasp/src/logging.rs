//! The log: `tracing` to stderr, as text or JSON (kube-proxy's `--logging-format`).
//!
//! Object names, file names and plugin messages come from users, so a text line must not be
//! forgeable: every control character (a newline above all), bidirectional override and line
//! separator in a message or a field value is escaped, and a value with blanks, `=` or `"` is
//! quoted. Colour is used only when stderr is a terminal.

use std::fmt::{self, Write as _};
use std::io::IsTerminal;

use tracing::field::{Field, Visit};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::fmt::format::Writer;

use crate::options::LogFormat;

/// Sets up the log for the process. The level comes from `WASP_LOG` (default `info`).
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_env("WASP_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second init (tests) keeps the first subscriber.
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .fmt_fields(Escaped)
            .try_init(),
    };
}

/// Field formatting that escapes what could break a line or hide text.
#[derive(Debug, Default, Clone, Copy)]
pub struct Escaped;

impl<'w> FormatFields<'w> for Escaped {
    fn format_fields<R: RecordFields>(&self, mut writer: Writer<'w>, fields: R) -> fmt::Result {
        let mut v = Visitor::default();
        fields.record(&mut v);
        writer.write_str(&v.out)
    }
}

#[derive(Default)]
struct Visitor {
    out: String,
}

impl Visitor {
    fn push(&mut self, name: &str, text: &str) {
        if !self.out.is_empty() {
            self.out.push(' ');
        }
        if name == "message" {
            escape_into(&mut self.out, text, false);
        } else {
            self.out.push_str(name);
            self.out.push('=');
            escape_into(&mut self.out, text, true);
        }
    }
}

impl Visit for Visitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.push(field.name(), value);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.push(field.name(), &format!("{value:?}"));
    }
}

/// Whether a character must not appear raw in a log line.
fn dangerous(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{200b}' | '\u{feff}')
}

/// Appends `s`, escaped; a field value is quoted when it is empty or holds a blank, `=` or `"`.
pub fn escape_into(out: &mut String, s: &str, value: bool) {
    let quote =
        value && (s.is_empty() || s.chars().any(|c| c.is_whitespace() || c == '=' || c == '"'));
    if quote {
        out.push('"');
    }
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '"' if quote => out.push_str("\\\""),
            c if dangerous(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    if quote {
        out.push('"');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn esc(s: &str, value: bool) -> String {
        let mut out = String::new();
        escape_into(&mut out, s, value);
        out
    }

    #[test]
    fn nothing_breaks_a_line_or_hides_text() {
        assert_eq!(esc("web\nERROR forged", false), "web\\nERROR forged");
        assert_eq!(esc("a\u{1b}[31mred", true), "a\\u{1b}[31mred");
        assert_eq!(esc("x\u{202e}y\u{0}", true), "x\\u{202e}y\\u{0}");
        assert_eq!(esc("default/web", true), "default/web");
        assert_eq!(esc("a b=\"c\"", true), "\"a b=\\\"c\\\"\"");
        assert_eq!(esc("", true), "\"\"");
    }
}
