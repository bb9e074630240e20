//! `e2enc-codegen`: code generation from optimized graphs to kernel bundles.
//!
//! Empty on purpose for now: the C SIMD backend, memory planning and the bundle format are the
//! subject of the codegen issue. The crate exists so the dependency order
//! `ir ← passes ← codegen ← runtime ← e2enc` is fixed from the start.
