//! `e2enc-codegen`: from an optimized graph to a kernel bundle.
//!
//! [`memplan`] orders the work and places every activation in one arena (concats as slices of
//! one buffer), [`layout`] fixes the padded planar layout kernels share, [`c`] emits a
//! shape-specialized C function per kernel (AVX2/FMA, or AVX-512 for the hot convs: [`isa`]),
//! and [`compile`] writes the bundle:
//! `manifest.json` ([`artifact`]), `weights.safetensors` (re-laid-out constants), `kernels.c` and
//! the `kernels.so` the system C compiler makes from it, and with `--standalone` a
//! dependency-free C program of the bundle ([`standalone`]). [`train`] emits the kernels of a
//! training graph (forward and backward) for the runtime's generated-C training backend.

pub mod artifact;
pub mod c;
pub mod compile;
pub mod emit;
pub mod layout;
pub mod memplan;
pub mod standalone;
pub mod target;
pub mod train;
