//! YAML text → one `serde_json::Value` per document, within limits.
//!
//! The stream is split at its document markers first and each document is parsed on its own,
//! so a syntax error in one document leaves the others readable and every error names the
//! right document. The split is exact: YAML forbids a line that starts with `---` or `...`
//! followed by a blank inside any scalar (`c-forbidden`, YAML 1.2 §9.1.4), so such a line is
//! always a marker. Parsing uses serde-saphyr, whose budgets bound nesting and node counts, so
//! a hostile file costs time linear in its size.

use serde_json::Value;

/// What one file may hold; every limit is reported by name when exceeded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// The largest file read, in bytes (`limits.fileBytes`).
    pub file_bytes: u64,
    /// The most documents one file may hold (`limits.documentsPerFile`).
    pub documents: usize,
    /// The longest string (key or value) a document may hold, in bytes (`limits.stringBytes`).
    pub string_bytes: usize,
    /// The deepest nesting of mappings and sequences (`limits.depth`).
    pub depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            file_bytes: 64 << 20,
            documents: 500_000,
            string_bytes: 1 << 20,
            depth: 64,
        }
    }
}

/// One document of a stream: its text, and where in the stream it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Document<'a> {
    /// The document's text, its `---` marker included.
    pub text: &'a str,
    /// The whole stream.
    stream: &'a str,
    /// Where the text starts in the stream.
    offset: usize,
}

/// The file lines documents start on (1-based), counted when an error's message needs one
/// rather than for every document of every read. Counting goes forwards from the document
/// asked for last, so asking for a stream's documents in order costs one pass over it however
/// many of them fail.
#[derive(Debug, Default)]
pub struct Lines {
    /// The offset counted up to, and its line (0: nothing counted yet).
    offset: usize,
    line: usize,
}

impl Lines {
    /// The line `doc` starts on.
    pub fn of(&mut self, doc: &Document<'_>) -> usize {
        if self.line == 0 || doc.offset < self.offset {
            (self.offset, self.line) = (0, 1);
        }
        let skipped = &doc.stream.as_bytes()[self.offset..doc.offset];
        self.line += memchr::memchr_iter(b'\n', skipped).count();
        self.offset = doc.offset;
        self.line
    }
}

fn is_marker(line: &str, marker: &str) -> bool {
    line.strip_prefix(marker)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '\t', '\r']))
}

/// Whether a chunk holds nothing but blank lines, comments and directives.
fn is_preamble(text: &str) -> bool {
    text.lines().all(|l| {
        let t = l.trim();
        t.is_empty() || t.starts_with('#') || l.starts_with('%')
    })
}

/// Splits a YAML stream into its documents, as a YAML parser counts them: a preamble of
/// comments and directives belongs to the document after it, and an empty document between
/// two `---` markers counts.
pub fn documents(text: &str) -> Vec<Document<'_>> {
    let mut out = Vec::new();
    let mut start = 0;
    let doc = |start: usize, end: usize| Document {
        text: &text[start..end],
        stream: text,
        offset: start,
    };
    // Whether the chunk from `start` was opened by a `---` marker (so it is a document even
    // when empty).
    let mut opened = false;
    for pos in marker_candidates(text.as_bytes()) {
        let end =
            memchr::memchr(b'\n', &text.as_bytes()[pos..]).map_or(text.len(), |i| pos + i + 1);
        let body = text[pos..end].trim_end_matches(['\n', '\r']);
        let is_start = is_marker(body, "---");
        if !is_start && !is_marker(body, "...") {
            continue;
        }
        if is_start {
            if opened || !is_preamble(&text[start..pos]) {
                out.push(doc(start, pos));
                start = pos;
            }
            // A preamble stays with this marker's document.
            opened = true;
        } else {
            if opened || !is_preamble(&text[start..end]) {
                out.push(doc(start, end));
            }
            start = end;
            opened = false;
        }
    }
    if opened || !is_preamble(&text[start..]) {
        out.push(doc(start, text.len()));
    }
    out
}

/// The starts of the lines that begin with `---` or `...`, in order: the only lines that may
/// be markers. Searching for them, rather than walking every line, keeps the split of a
/// 20,000-document file to a pass of `memchr`.
fn marker_candidates(bytes: &[u8]) -> Vec<usize> {
    let mut at: Vec<usize> = Vec::new();
    if bytes.starts_with(b"---") || bytes.starts_with(b"...") {
        at.push(0);
    }
    at.extend(memchr::memmem::find_iter(bytes, b"\n---").map(|i| i + 1));
    let ends = memchr::memmem::find_iter(bytes, b"\n...").map(|i| i + 1);
    let mut ends = ends.peekable();
    if ends.peek().is_some() {
        at.extend(ends);
        at.sort_unstable();
    }
    at
}

fn options(limits: &Limits) -> serde_saphyr::Options {
    let mut o = serde_saphyr::Options::default();
    let mut b = serde_saphyr::Budget::default();
    b.max_depth = limits.depth;
    b.flow_nesting_limit = limits.depth;
    b.max_documents = 1;
    o.budget = Some(b);
    // YAML 1.2 booleans only (`true`/`false`), as Kubernetes' own YAML reader and JSON do;
    // `yes` stays a string.
    o.strict_booleans = true;
    o.with_snippet = false;
    o
}

/// Parses one document; an error carries the file line and column (from `lines`).
///
/// # Errors
/// The parser's message, with the location translated to the file's lines.
pub fn parse(doc: &Document<'_>, lines: &mut Lines, limits: &Limits) -> Result<Value, String> {
    serde_saphyr::from_str_with_options::<Value>(doc.text, options(limits)).map_err(|e| {
        let msg = e.to_string();
        match e.location() {
            Some(loc) => {
                let suffix = format!(" at line {}, column {}", loc.line(), loc.column());
                let base = msg.strip_suffix(&suffix).unwrap_or(&msg);
                let line = loc.line() as usize + lines.of(doc) - 1;
                format!("{base} (line {line}, column {})", loc.column())
            }
            None => msg,
        }
    })
}

/// The path of the first string (key or value) longer than `max` bytes, if any.
pub fn long_string(v: &Value, max: usize) -> Option<String> {
    match v {
        Value::String(s) if s.len() > max => Some(String::new()),
        Value::Array(a) => a
            .iter()
            .enumerate()
            .find_map(|(i, x)| long_string(x, max).map(|p| format!("[{i}]{}", dot(&p)))),
        Value::Object(m) => m.iter().find_map(|(k, x)| {
            if k.len() > max {
                return Some(k.chars().take(32).collect::<String>() + "…");
            }
            long_string(x, max).map(|p| format!("{k}{}", dot(&p)))
        }),
        _ => None,
    }
}

fn dot(p: &str) -> String {
    if p.is_empty() || p.starts_with('[') {
        p.to_string()
    } else {
        format!(".{p}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(text: &str) -> Vec<(usize, &str)> {
        let mut lines = Lines::default();
        documents(text)
            .iter()
            .map(|d| (lines.of(d), d.text))
            .collect()
    }

    #[test]
    fn documents_are_counted_as_a_parser_counts_them() {
        assert_eq!(split("a: 1\n"), [(1, "a: 1\n")]);
        assert_eq!(split("---\na: 1\n"), [(1, "---\na: 1\n")]);
        assert_eq!(
            split("# c\n%YAML 1.2\n---\na: 1\n"),
            [(1, "# c\n%YAML 1.2\n---\na: 1\n")]
        );
        assert_eq!(
            split("a: 1\n---\nb: 2\n---\n---\nc: 3\n"),
            [
                (1, "a: 1\n"),
                (2, "---\nb: 2\n"),
                (4, "---\n"),
                (5, "---\nc: 3\n")
            ]
        );
        assert_eq!(split("--- {a: 1}\n"), [(1, "--- {a: 1}\n")]);
        assert_eq!(
            split("a: 1\n...\nb: 2\n"),
            [(1, "a: 1\n...\n"), (3, "b: 2\n")]
        );
        // Not markers: indented, or followed by more than a blank.
        assert_eq!(
            split("a: |\n  ---\nb: ---x\n"),
            [(1, "a: |\n  ---\nb: ---x\n")]
        );
        assert_eq!(
            split("---\r\na: 1\r\n---\r\nb: 2\r\n"),
            [(1, "---\r\na: 1\r\n"), (3, "---\r\nb: 2\r\n")]
        );
        assert_eq!(split(""), []);
        assert_eq!(split("# only a comment\n"), []);
    }

    #[test]
    fn errors_name_the_file_line() {
        let docs = documents("a: {\n---\nb: 1\n---\n\nc: {d: e\n");
        let mut lines = Lines::default();
        let limits = Limits::default();
        let e = parse(&docs[2], &mut lines, &limits).unwrap_err();
        assert!(e.contains("(line 6, column 4)"), "{e}");
        // Asked for out of order, the count starts again.
        let e = parse(&docs[0], &mut lines, &limits).unwrap_err();
        assert!(e.contains("(line 1, column 4)"), "{e}");
    }

    #[test]
    fn deep_nesting_is_refused_at_once() {
        let text = format!("x: {}", "[".repeat(100_000));
        let start = std::time::Instant::now();
        let mut lines = Lines::default();
        assert!(parse(&documents(&text)[0], &mut lines, &Limits::default()).is_err());
        assert!(start.elapsed() < std::time::Duration::from_secs(1));
        let ok = format!("x: {}{}", "[".repeat(60), "]".repeat(60));
        assert!(
            parse(
                &documents(&ok)[0],
                &mut Lines::default(),
                &Limits::default()
            )
            .is_ok()
        );
    }

    #[test]
    fn long_strings_are_found_by_path() {
        let v: Value = serde_json::json!({"a": {"b": ["x", "yyyy"]}});
        assert_eq!(long_string(&v, 3).as_deref(), Some("a.b[1]"));
        assert_eq!(long_string(&v, 4), None);
    }
}
