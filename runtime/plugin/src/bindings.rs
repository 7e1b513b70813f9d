//! The host side of the WIT contract in `plugins/wit`.

#![allow(missing_docs)]

wasmtime::component::bindgen!({
    path: "../../plugins/wit",
    world: "plugin",
});

/// The name of the optional per-connection export.
pub const PICKER: &str = "wasp:balancer/picker@0.3.0";
