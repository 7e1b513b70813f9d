//! Manifests → objects, with errors that name the file, the document, the object and the field.
//!
//! A document is read as the API server reads a request: its `apiVersion` and `kind` say what
//! it is (a typo is an error, not a skip: see [`super::kind`]), its fields decode strictly
//! (see [`super::strict`]), and a bad field keeps the object's last good version. A document
//! that cannot even be identified — no kind, no name, broken YAML — could have been any of the
//! file's objects, so the file then keeps every object it held ([`Parsed::keep_all`]).

use serde::Deserialize;
use serde_json::Value;
use twox_hash::XxHash3_128;
use wasp_model::{NamespacedName, ObjectRef};
use wasp_resolve::{ConfigError, Object, ObjectKind, Origin};

use super::kind::{Kind, classify};
use super::strict::unknown_fields;
use super::yaml::{self, Limits};

/// The objects one file names, by kind and key.
pub type Key = (ObjectKind, NamespacedName);

/// What one document was, for the next read of its file: its content hash and, when it
/// decoded cleanly, the objects it gave. A document with the same text at the same place
/// gives the same objects, so it is not decoded again.
///
/// The hash is XXH3-128: not a cryptographic hash, but two different texts that share one
/// have to be made on purpose, by someone who can write the config anyway; SHA-256 of a
/// file of 10,000 Services was a seventh of an edit's time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DocMemo {
    /// XXH3-128 of the document's text.
    pub hash: u128,
    /// The objects it gave, when it decoded without an error of any kind.
    pub keys: Option<Vec<Key>>,
}

/// What one file holds.
#[derive(Debug, Default)]
pub struct Parsed {
    /// The objects decoded, with their origins.
    pub objects: Vec<(Object, Origin)>,
    /// Objects the file names but whose new version failed to decode: they keep their last
    /// good version.
    pub kept: Vec<(ObjectKind, NamespacedName)>,
    /// Everything that went wrong.
    pub errors: Vec<ConfigError>,
    /// Some document could not be identified: every object the file held keeps its last good
    /// version until it can.
    pub keep_all: bool,
    /// Per document, what the next read may reuse.
    pub docs: Vec<DocMemo>,
    /// The documents (indices into [`Parsed::docs`]) unchanged since the previous read,
    /// which were not decoded again: their objects' stored versions stand.
    pub unchanged: Vec<usize>,
    /// The objects the previous read's documents gave that were not reused (changed or
    /// gone), or `None` when one of those had not decoded cleanly, so what it gave is not
    /// known.
    pub replaced: Option<Vec<Key>>,
}

impl Parsed {
    /// Records what the previous read's `memos`, which were not reused, gave.
    fn replace(&mut self, memos: impl IntoIterator<Item = DocMemo>) {
        for memo in memos {
            match (memo.keys, &mut self.replaced) {
                (Some(keys), Some(replaced)) => replaced.extend(keys),
                (None, _) => self.replaced = None,
                (Some(_), None) => {}
            }
        }
    }

    fn fail(&mut self, origin: &Origin, object: Option<ObjectRef>, field: String, message: String) {
        self.errors.push(ConfigError {
            origin: origin.clone(),
            object,
            field,
            message,
        });
    }
}

/// Parses a multi-document YAML or JSON file of Kubernetes objects.
pub fn parse_manifests(path: &str, bytes: &[u8], limits: &Limits) -> Parsed {
    parse_split(path, split(bytes, limits), limits, Vec::new())
}

/// A file's documents, each with the hash of its text (see [`DocMemo`]), and a hash of the
/// whole.
#[derive(Debug)]
pub struct Split<'a> {
    /// What identifies the file's content: the hash of its documents' hashes, or of its
    /// bytes when it is not a stream of documents. Only comments and blank lines outside
    /// every document are not in it, which change no object.
    pub hash: u128,
    /// The documents, or why the file is not read as documents.
    docs: Result<Vec<(yaml::Document<'a>, u128)>, String>,
}

/// Splits `bytes` into its documents and hashes each once: the same hashes say whether the
/// file changed and which documents did, so a re-read hashes the bytes once.
pub fn split<'a>(bytes: &'a [u8], limits: &Limits) -> Split<'a> {
    let bytes = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes);
    let raw = |message: String| Split {
        hash: XxHash3_128::oneshot(bytes),
        docs: Err(message),
    };
    let Ok(text) = std::str::from_utf8(bytes) else {
        return raw("not UTF-8 text".into());
    };
    let docs = yaml::documents(text);
    if docs.len() > limits.documents {
        return raw(format!(
            "{} documents, more than the limit of {} (limits.documentsPerFile)",
            docs.len(),
            limits.documents
        ));
    }
    let mut whole = XxHash3_128::new();
    // Apart from a file that is not documents.
    whole.write(b"documents\0");
    let docs = docs
        .into_iter()
        .map(|doc| {
            let hash = XxHash3_128::oneshot(doc.text.as_bytes());
            whole.write(&hash.to_le_bytes());
            (doc, hash)
        })
        .collect();
    Split {
        hash: whole.finish_128(),
        docs: Ok(docs),
    }
}

/// As [`parse_manifests`], of a file already split, but a document whose text is what
/// `previous` (the last read's [`Parsed::docs`]) recorded at its place, and which decoded
/// cleanly then, is not decoded again: it is listed in [`Parsed::unchanged`]. A one-file
/// layout of 10,000 Services then decodes only the documents an edit touched.
pub fn parse_split(
    path: &str,
    split: Split<'_>,
    limits: &Limits,
    previous: Vec<DocMemo>,
) -> Parsed {
    let mut out = Parsed {
        replaced: Some(Vec::new()),
        ..Parsed::default()
    };
    let mut previous = previous.into_iter();
    let mut lines = yaml::Lines::default();
    let whole = Origin {
        source: path.into(),
        document: None,
    };
    let docs = match split.docs {
        Ok(docs) => docs,
        Err(message) => {
            out.keep_all = true;
            out.fail(&whole, None, String::new(), message);
            out.replace(previous);
            return out;
        }
    };
    for (i, (doc, hash)) in docs.iter().enumerate() {
        let hash = *hash;
        // The memo of the document that was at this place.
        match previous.next() {
            Some(memo) if memo.hash == hash && memo.keys.is_some() => {
                out.unchanged.push(i);
                out.docs.push(memo);
                continue;
            }
            Some(memo) => out.replace([memo]),
            None => {}
        }
        let mut one = Parsed::default();
        let origin = Origin {
            source: whole.source.clone(),
            document: Some(i),
        };
        one_document(&mut one, doc, &mut lines, &origin, limits);
        let clean = one.errors.is_empty() && one.kept.is_empty() && !one.keep_all;
        let keys = clean.then(|| {
            one.objects
                .iter()
                .map(|(o, _)| (o.kind(), o.key()))
                .collect()
        });
        out.docs.push(DocMemo { hash, keys });
        out.objects.append(&mut one.objects);
        out.kept.append(&mut one.kept);
        out.errors.append(&mut one.errors);
        out.keep_all |= one.keep_all;
    }
    out.replace(previous);
    out
}

fn one_document(
    out: &mut Parsed,
    doc: &yaml::Document<'_>,
    lines: &mut yaml::Lines,
    origin: &Origin,
    limits: &Limits,
) {
    match yaml::parse(doc, lines, limits) {
        Ok(Value::Null) => {}
        Ok(v) => {
            if let Some(field) = yaml::long_string(&v, limits.string_bytes) {
                out.keep_all = true;
                let msg = format!(
                    "a string longer than the limit of {} bytes (limits.stringBytes)",
                    limits.string_bytes
                );
                out.fail(origin, None, field, msg);
                return;
            }
            document(out, v, origin, "");
        }
        Err(e) => {
            out.keep_all = true;
            out.fail(origin, None, String::new(), format!("not valid YAML: {e}"));
        }
    }
}

fn document(out: &mut Parsed, v: Value, origin: &Origin, prefix: &str) {
    let field = |f: &str| format!("{prefix}{f}");
    let text = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
    let (Some(api_version), Some(kind)) = (text("apiVersion"), text("kind")) else {
        out.keep_all = true;
        let missing = if text("apiVersion").is_none() {
            "apiVersion"
        } else {
            "kind"
        };
        let msg = "Required value: apiVersion and kind must be strings";
        out.fail(origin, None, field(missing), msg.into());
        return;
    };
    let k = match classify(&api_version, &kind) {
        Kind::Read(k) => k,
        Kind::Skip => {
            tracing::debug!(%origin, %api_version, %kind, "skipping a kind wasp does not read");
            return;
        }
        Kind::List => return list(out, &v, origin, prefix),
        Kind::Unknown { field: f, message } => {
            out.keep_all = true;
            out.fail(origin, None, field(f), message);
            return;
        }
    };
    let Some(key) = identify(out, &v, k, origin, prefix) else {
        out.keep_all = true;
        return;
    };
    let object = ObjectRef {
        kind: kind.clone(),
        name: key.clone(),
    };
    let decoded = match k {
        ObjectKind::Service => decode(&v).map(Object::Service),
        ObjectKind::Endpoints => decode(&v).map(Object::Endpoints),
        ObjectKind::EndpointSlice => decode(&v).map(Object::EndpointSlice),
        ObjectKind::Pod => decode(&v).map(Object::Pod),
        ObjectKind::Node => decode(&v).map(Object::Node),
    };
    match decoded {
        Ok(mut obj) => {
            obj.normalize();
            out.objects.push((obj, origin.clone()));
        }
        Err(errors) => {
            for (f, message) in errors {
                let f = field(&f);
                let message = message
                    .unwrap_or_else(|| format!("strict decoding error: unknown field {f:?}"));
                out.fail(origin, Some(object.clone()), f, message);
            }
            out.kept.push((k, key));
        }
    }
}

/// The items of a v1 List, each a document of its own.
fn list(out: &mut Parsed, v: &Value, origin: &Origin, prefix: &str) {
    match v.get("items") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                document(out, item.clone(), origin, &format!("{prefix}items[{i}]."));
            }
        }
        Some(_) => {
            out.keep_all = true;
            let msg = "Invalid value: must be a list of objects".into();
            out.fail(origin, None, format!("{prefix}items"), msg);
        }
    }
}

/// The object's key, from `metadata.name` and `metadata.namespace`; `None` (with the error
/// recorded) when they are missing or not strings, so the object cannot be known.
fn identify(
    out: &mut Parsed,
    v: &Value,
    k: ObjectKind,
    origin: &Origin,
    prefix: &str,
) -> Option<NamespacedName> {
    let fail = |out: &mut Parsed, f: &str, msg: &str| {
        out.fail(origin, None, format!("{prefix}{f}"), msg.into());
    };
    let Some(meta) = v.get("metadata").and_then(Value::as_object) else {
        fail(
            out,
            "metadata",
            "Required value: metadata must be an object",
        );
        return None;
    };
    let name = match meta.get("name") {
        Some(Value::String(n)) if !n.is_empty() => n.clone(),
        Some(Value::String(_)) | None | Some(Value::Null) => {
            fail(out, "metadata.name", "Required value: name is required");
            return None;
        }
        Some(_) => {
            fail(out, "metadata.name", "Invalid value: must be a string");
            return None;
        }
    };
    let namespace = match (k.namespaced(), meta.get("namespace")) {
        (false, _) => String::new(),
        (true, None | Some(Value::Null)) => "default".into(),
        (true, Some(Value::String(ns))) if ns.is_empty() => "default".into(),
        (true, Some(Value::String(ns))) => ns.clone(),
        (true, Some(_)) => {
            fail(out, "metadata.namespace", "Invalid value: must be a string");
            return None;
        }
    };
    Some(NamespacedName::new(namespace, name))
}

/// Decodes into a k8s-openapi type, strictly; on failure returns each field path, with the
/// decoder's message or, for a field the type does not have, none.
fn decode<T>(v: &Value) -> Result<Box<T>, Vec<(String, Option<String>)>>
where
    T: for<'de> Deserialize<'de> + serde::Serialize,
{
    let typed: T = serde_path_to_error::deserialize(v).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        vec![(path, Some(e.into_inner().to_string()))]
    })?;
    let unknown = unknown_fields(v, &typed);
    if !unknown.is_empty() {
        return Err(unknown.into_iter().map(|f| (f, None)).collect());
    }
    Ok(Box::new(typed))
}

#[cfg(test)]
mod tests;
