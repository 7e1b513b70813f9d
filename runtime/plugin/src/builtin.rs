//! The built-in plugins, compiled from `plugins/builtin` by the build and embedded.

include!(concat!(env!("OUT_DIR"), "/builtins.rs"));

/// The bytes of a built-in plugin.
pub fn get(name: &str) -> Option<&'static [u8]> {
    BUILTINS.iter().find(|(n, _)| *n == name).map(|(_, b)| *b)
}
