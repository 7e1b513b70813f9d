//! Makes each call into a plugin cheaper by rewriting its component before it is compiled.
//!
//! A crate of its own: it is a pure transformation of untrusted bytes, which the plugin host
//! uses and the fuzz harness feeds, without wasmtime.
//!
//! wasmtime 48 re-derives a lifted export's `VMFuncRef` on every call when the core function
//! is *defined* in the core instance it is taken from: two binary searches over the compiled
//! functions and a lookup in the store's code registry, about 50 ns of a 160 ns `pick`
//! (docs/BENCHMARKS.md measures both in one run). For an
//! *imported* function it reads the reference the instance already holds. So this adds one
//! small core module that imports the lifted functions from the instances that define them and
//! exports them again, instantiates it right after the last of those instances, and lifts from
//! it instead. Nothing else changes: the same code runs, with the same types and the same
//! canonical options.
//!
//! Upstream wasmtime caches the reference (bytecodealliance/wasmtime#14189, in wasmtime 49,
//! which needs Rust 1.96); drop this module with that upgrade.
//!
//! Any component this does not understand is left as it is: [`rewrite`] returns `None`.

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;

use wasm_encoder::reencode::component_utils;
use wasm_encoder::reencode::{Error, Reencode, ReencodeComponent};
use wasm_encoder::{
    ComponentSectionId, EntityType, ExportKind, FuncType, ImportSection, InstanceSection,
    ModuleArg, RawSection, TypeSection, ValType,
};
use wasmparser::{
    CanonicalFunction, ComponentAlias, ExternalKind, Parser, Payload, TypeRef, Validator,
    WasmFeatures,
};

/// Changes with what [`rewrite`] produces; part of the compiled-plugin cache key.
pub const VERSION: u32 = 1;

/// The component with its lifted functions taken through a re-exporting instance, or `None`
/// when there is nothing to gain or the component has a shape this does not handle.
pub fn rewrite(bytes: &[u8]) -> Option<Vec<u8>> {
    let plan = Plan::of(bytes)?;
    if plan.reexported() {
        return None;
    }
    let mut out = wasm_encoder::Component::new();
    let mut r = Rewriter {
        plan: &plan,
        depth: 0,
        instances: 0,
        inserted: false,
    };
    r.parse_component(&mut out, Parser::new(0), bytes).ok()?;
    if !r.inserted {
        return None;
    }
    let out = out.finish();
    Validator::new_with_features(WasmFeatures::all())
        .validate_all(&out)
        .ok()?;
    Some(out)
}

/// What the rewrite does, found in one pass over the top level of the component.
struct Plan<'b> {
    /// The lifted functions, by the core instance they come from and their export name, with
    /// their core types.
    funcs: BTreeMap<(u32, String), FuncType>,
    /// How many core modules are defined before the new one (its index).
    module_at: u32,
    /// The new instance's index: right after the section of the last instance in `funcs`.
    instance_at: u32,
    /// The modules of those instances.
    sources: Vec<&'b [u8]>,
}

impl<'b> Plan<'b> {
    fn of(bytes: &'b [u8]) -> Option<Self> {
        let mut modules: Vec<&'b [u8]> = Vec::new();
        // Per core instance: the module it instantiates, if any.
        let mut instances: Vec<Option<u32>> = Vec::new();
        // Where each core instance section ends: (instances defined, modules defined) then.
        let mut section_ends: Vec<(u32, u32)> = Vec::new();
        // Per core function: the (instance, export) it aliases, if it is an alias.
        let mut core_funcs: Vec<Option<(u32, String)>> = Vec::new();
        let mut lifted: BTreeSet<u32> = BTreeSet::new();
        // Only the top level: nested modules and components are stepped over.
        let mut parser = Parser::new(0);
        let mut rest = bytes;
        while !rest.is_empty() {
            let (consumed, payload) = match parser.parse(rest, true).ok()? {
                wasmparser::Chunk::Parsed { consumed, payload } => (consumed, payload),
                wasmparser::Chunk::NeedMoreData(_) => return None,
            };
            // Plugins are untrusted bytes: every slice is checked, never indexed.
            rest = rest.get(consumed..)?;
            match payload {
                Payload::Version { encoding, .. }
                    if encoding != wasmparser::Encoding::Component =>
                {
                    return None;
                }
                Payload::ModuleSection {
                    unchecked_range, ..
                } => {
                    rest = rest.get(unchecked_range.len()..)?;
                    modules.push(bytes.get(unchecked_range)?);
                }
                Payload::ComponentSection {
                    unchecked_range, ..
                } => rest = rest.get(unchecked_range.len()..)?,
                Payload::InstanceSection(s) => {
                    for i in s {
                        instances.push(match i.ok()? {
                            wasmparser::Instance::Instantiate { module_index, .. } => {
                                Some(module_index)
                            }
                            wasmparser::Instance::FromExports(_) => None,
                        });
                    }
                    section_ends.push((instances.len() as u32, modules.len() as u32));
                }
                Payload::ComponentAliasSection(s) => {
                    for a in s {
                        if let ComponentAlias::CoreInstanceExport {
                            kind: ExternalKind::Func,
                            instance_index,
                            name,
                        } = a.ok()?
                        {
                            core_funcs.push(Some((instance_index, name.to_string())));
                        }
                    }
                }
                Payload::ComponentCanonicalSection(s) => {
                    for c in s {
                        match c.ok()? {
                            CanonicalFunction::Lift {
                                core_func_index, ..
                            } => {
                                lifted.insert(core_func_index);
                            }
                            // Every other canonical function defines a core function.
                            _ => core_funcs.push(None),
                        }
                    }
                }
                Payload::End(_) => break,
                _ => {}
            }
        }
        Self::build(modules, instances, section_ends, core_funcs, lifted)
    }

    fn build(
        modules: Vec<&'b [u8]>,
        instances: Vec<Option<u32>>,
        section_ends: Vec<(u32, u32)>,
        core_funcs: Vec<Option<(u32, String)>>,
        lifted: BTreeSet<u32>,
    ) -> Option<Self> {
        let mut funcs = BTreeMap::new();
        let mut sources = BTreeMap::new();
        for f in lifted {
            // A lift of a lowered function, or of an export of an instance not made from a
            // module here, stays as it is.
            let Some(Some((instance, name))) = core_funcs.get(f as usize).cloned() else {
                continue;
            };
            let Some(Some(module)) = instances.get(instance as usize).copied() else {
                continue;
            };
            let bytes = *modules.get(module as usize)?;
            if let std::collections::btree_map::Entry::Vacant(e) = sources.entry(instance) {
                e.insert((bytes, export_types(bytes)?));
            }
            let ty = sources[&instance].1.get(&name)?.clone();
            funcs.insert((instance, name), ty);
        }
        let last = *sources.keys().next_back()?;
        let &(instance_at, module_at) = section_ends.iter().find(|(n, _)| *n > last)?;
        Some(Self {
            funcs,
            module_at,
            instance_at,
            sources: sources.into_values().map(|(b, _)| b).collect(),
        })
    }

    /// Whether every lifted function already comes from an instance without code of its own.
    fn reexported(&self) -> bool {
        self.sources.iter().all(|m| {
            !Parser::new(0)
                .parse_all(m)
                .any(|p| matches!(p, Ok(Payload::FunctionSection(s)) if s.count() > 0))
        })
    }

    /// The instances the new module imports from, each under its own import module name.
    fn imports(&self) -> BTreeSet<u32> {
        self.funcs.keys().map(|(i, _)| *i).collect()
    }

    /// The module that imports every function in `funcs` and exports it again, under
    /// [`export_name`].
    fn reexporting_module(&self) -> wasm_encoder::Module {
        let mut types = TypeSection::new();
        let mut imports = ImportSection::new();
        let mut exports = wasm_encoder::ExportSection::new();
        for (i, ((instance, name), ty)) in self.funcs.iter().enumerate() {
            types
                .ty()
                .function(ty.params().iter().copied(), ty.results().iter().copied());
            imports.import(
                &import_module(*instance),
                name,
                EntityType::Function(i as u32),
            );
            exports.export(&export_name(*instance, name), ExportKind::Func, i as u32);
        }
        let mut m = wasm_encoder::Module::new();
        m.section(&types).section(&imports).section(&exports);
        m
    }
}

/// Where the new module imports instance `i`'s functions from.
fn import_module(i: u32) -> String {
    format!("instance-{i}")
}

/// The new module's name for instance `i`'s export `name` (names of different instances may
/// be the same).
fn export_name(i: u32, name: &str) -> String {
    format!("{i}:{name}")
}

/// The function types of a core module's function exports; `None` if it uses types this does
/// not handle.
fn export_types(module: &[u8]) -> Option<BTreeMap<String, FuncType>> {
    let mut types: Vec<Option<FuncType>> = Vec::new();
    let mut funcs: Vec<u32> = Vec::new();
    let mut out = BTreeMap::new();
    for payload in Parser::new(0).parse_all(module) {
        match payload.ok()? {
            Payload::TypeSection(s) => {
                for t in s.into_iter_err_on_gc_types() {
                    let f = t.ok()?;
                    let vals = |v: &[wasmparser::ValType]| -> Option<Vec<ValType>> {
                        v.iter().map(|t| val_type(*t)).collect()
                    };
                    types.push(Some(FuncType::new(vals(f.params())?, vals(f.results())?)));
                }
            }
            Payload::ImportSection(s) => {
                for i in s.into_imports() {
                    if let TypeRef::Func(t) = i.ok()?.ty {
                        funcs.push(t);
                    }
                }
            }
            Payload::FunctionSection(s) => {
                for t in s {
                    funcs.push(t.ok()?);
                }
            }
            Payload::ExportSection(s) => {
                for e in s {
                    let e = e.ok()?;
                    if e.kind == ExternalKind::Func {
                        let ty = funcs.get(e.index as usize)?;
                        out.insert(e.name.to_string(), types.get(*ty as usize)?.clone()?);
                    }
                }
            }
            _ => {}
        }
    }
    Some(out)
}

fn val_type(t: wasmparser::ValType) -> Option<ValType> {
    Some(match t {
        wasmparser::ValType::I32 => ValType::I32,
        wasmparser::ValType::I64 => ValType::I64,
        wasmparser::ValType::F32 => ValType::F32,
        wasmparser::ValType::F64 => ValType::F64,
        wasmparser::ValType::V128 => ValType::V128,
        wasmparser::ValType::Ref(_) => return None,
    })
}

/// Copies the component, shifting the top-level core module and instance indices past the
/// inserted ones, and redirecting the lifted functions' aliases.
struct Rewriter<'p, 'b> {
    plan: &'p Plan<'b>,
    /// 0 at the top level, one more inside each nested module or component.
    depth: u32,
    /// Top-level core instances copied so far.
    instances: u32,
    inserted: bool,
}

impl Reencode for Rewriter<'_, '_> {
    type Error = Infallible;
}

impl ReencodeComponent for Rewriter<'_, '_> {
    fn module_index(&mut self, i: u32) -> u32 {
        if self.depth == 0 && i >= self.plan.module_at {
            i + 1
        } else {
            i
        }
    }

    fn instance_index(&mut self, i: u32) -> u32 {
        if self.depth == 0 && i >= self.plan.instance_at {
            i + 1
        } else {
            i
        }
    }

    fn outer_module_index(&mut self, count: u32, i: u32) -> u32 {
        if count == self.depth && i >= self.plan.module_at {
            i + 1
        } else {
            i
        }
    }

    fn push_depth(&mut self) {
        self.depth += 1;
    }

    fn pop_depth(&mut self) {
        self.depth -= 1;
    }

    fn parse_component_alias_section(
        &mut self,
        aliases: &mut wasm_encoder::ComponentAliasSection,
        section: wasmparser::ComponentAliasSectionReader<'_>,
    ) -> Result<(), Error<Infallible>> {
        for a in section {
            match a? {
                ComponentAlias::CoreInstanceExport {
                    kind: ExternalKind::Func,
                    instance_index,
                    name,
                } if self.depth == 0
                    && self.inserted
                    && self
                        .plan
                        .funcs
                        .contains_key(&(instance_index, name.to_string())) =>
                {
                    aliases.alias(wasm_encoder::Alias::CoreInstanceExport {
                        instance: self.plan.instance_at,
                        kind: ExportKind::Func,
                        name: &export_name(instance_index, name),
                    });
                }
                other => {
                    aliases.alias(self.component_alias(other)?);
                }
            }
        }
        Ok(())
    }

    fn parse_component_submodule(
        &mut self,
        component: &mut wasm_encoder::Component,
        _parser: Parser,
        module: &[u8],
    ) -> Result<(), Error<Infallible>> {
        // Core modules are copied byte for byte: nothing inside them changes.
        component.section(&RawSection {
            id: ComponentSectionId::CoreModule as u8,
            data: module,
        });
        Ok(())
    }

    fn parse_component_payload(
        &mut self,
        component: &mut wasm_encoder::Component,
        payload: Payload<'_>,
        whole: &[u8],
    ) -> Result<(), Error<Infallible>> {
        let added = match &payload {
            Payload::InstanceSection(s) if self.depth == 0 => s.count(),
            _ => 0,
        };
        component_utils::parse_component_payload(self, component, payload, whole)?;
        self.instances += added;
        if self.depth == 0 && !self.inserted && self.instances == self.plan.instance_at {
            let module = self.plan.reexporting_module();
            component.section(&wasm_encoder::ModuleSection(&module));
            let mut instances = InstanceSection::new();
            let args: Vec<(String, ModuleArg)> = self
                .plan
                .imports()
                .into_iter()
                .map(|i| (import_module(i), ModuleArg::Instance(i)))
                .collect();
            instances.instantiate(self.plan.module_at, args);
            component.section(&instances);
            self.inserted = true;
        }
        Ok(())
    }
}

/// Whether every function `bytes` lifts comes through a re-exporting instance: one whose
/// module defines no code of its own. True for what [`rewrite`] returns.
pub fn lifts_reexported(bytes: &[u8]) -> bool {
    Plan::of(bytes).is_some_and(|p| p.reexported())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anything_else_is_left_alone() {
        assert_eq!(rewrite(b"not wasm"), None);
        // A core module, not a component.
        assert_eq!(rewrite(b"\0asm\x01\0\0\0"), None);
        // A component that lifts nothing.
        assert_eq!(rewrite(b"\0asm\x0d\0\x01\0"), None);
    }
}
