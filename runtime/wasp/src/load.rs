//! One-shot loading of a config dir: what `plan` and `validate` see.

use wasp_model::{ConfigError, ObjectStore, ProxyState, resolve};
use wasp_source::{ErrorLog, FileSource};

use crate::options::ModelOptions;

/// A config dir, loaded and resolved once.
#[derive(Debug)]
pub struct Loaded {
    /// The objects.
    pub store: ObjectStore,
    /// The resolved state.
    pub state: ProxyState,
    /// Every error: reading, validation and resolution.
    pub errors: Vec<ConfigError>,
}

/// Reads and resolves the config dir.
///
/// # Errors
/// Fails when the directory cannot be listed.
pub fn load(opts: &ModelOptions) -> anyhow::Result<Loaded> {
    let mut src = FileSource::new(&opts.config_dir);
    let mut store = opts.store();
    let mut log = ErrorLog::default();
    let batches = src.rescan().map_err(|e| {
        anyhow::anyhow!("cannot read config dir {}: {e}", opts.config_dir.display())
    })?;
    for b in batches {
        b.apply_to(&mut store, &mut log);
    }
    let (state, resolve_errors) = resolve(&store, &mut opts.allocator(), &opts.resolve_config());
    let mut errors: Vec<ConfigError> = log.all().cloned().collect();
    errors.extend(resolve_errors);
    Ok(Loaded {
        store,
        state,
        errors,
    })
}
