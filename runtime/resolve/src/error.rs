//! `ConfigError`: an object the API server would reject, or a file that cannot be read.

use std::fmt;
use std::sync::Arc;

use wasp_model::name::ObjectRef;

/// Where an object came from: a file and the index of its document, or an API watch.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Origin {
    /// The file's path, or the source's name (e.g. `kubernetes`); shared by the objects of
    /// one file.
    pub source: Arc<str>,
    /// The document's index in a multi-document file, counted from 0.
    pub document: Option<usize>,
}

impl Origin {
    /// An origin in a file, at one document.
    pub fn file(path: impl Into<Arc<str>>, document: usize) -> Self {
        Self {
            source: path.into(),
            document: Some(document),
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.document {
            Some(d) => write!(f, "{}: document {}", self.source, d),
            None => f.write_str(&self.source),
        }
    }
}

/// One problem in the configuration, precise enough for a person to fix it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConfigError {
    /// The file and document.
    pub origin: Origin,
    /// The object, when it could be identified.
    pub object: Option<ObjectRef>,
    /// The field path, e.g. `spec.ports[1].port`; empty for a whole-document problem.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl ConfigError {
    /// A field error on an object.
    pub fn field(
        origin: &Origin,
        object: &ObjectRef,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            origin: origin.clone(),
            object: Some(object.clone()),
            field: field.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.origin)?;
        if let Some(o) = &self.object {
            write!(f, ": {o}")?;
        }
        if !self.field.is_empty() {
            write!(f, ": {}", self.field)?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}
