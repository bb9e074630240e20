//! `e2enc-codegen`: from an optimized graph to a kernel bundle.
//!
//! [`memplan`] orders the work and places every activation in one arena (concats as slices of
//! one buffer), [`layout`] fixes the padded planar layout kernels share, a [`render::Renderer`]
//! writes the kernels of the chosen [`target`] (today [`c`]: a shape-specialized C function per
//! kernel, one kernel text in a vector vocabulary, a prelude per dialect: x86 AVX2 and AVX-512,
//! aarch64 NEON, portable C; [`render`] says where a CUDA renderer plugs in), and [`compile`]
//! writes the bundle:
//! `manifest.json` ([`artifact`]), `weights.safetensors` (re-laid-out constants), `kernels.c` and
//! the `kernels.so` the C compiler makes from it, and with `--standalone` a dependency-free C
//! program of the bundle ([`standalone`]), signed with the user's key ([`keys`]). The bundle format ([`artifact`]), the layout
//! ([`layout`]) and the target table ([`target`]) are the runtime's (`e2enc-runtime`),
//! re-exported here: the runtime reads what codegen writes. [`train`] emits the kernels of a
//! training graph (forward and backward) for the generated-C backend of `e2enc-train`. [`cuda`]
//! is the CUDA renderer (header-free CUDA C) and [`cuda::nvrtc`], which compiles it to CUBIN and
//! PTX with NVRTC and checks the kernels' resources, with no GPU.

pub mod c;
pub mod compile;
pub mod cuda;
pub mod emit;
pub mod keys;
pub mod memplan;
pub mod precision;
pub mod quant;
pub mod render;
pub mod standalone;
pub mod train;

/// The bundle format, defined by the runtime that reads it.
pub use e2enc_runtime::format as artifact;
pub use e2enc_runtime::layout;
pub use e2enc_runtime::target;
