//! `e2enc` as a library: the application-side convenience over the runtime, tensors in and
//! tensors out ([`session`]): a compiled bundle or an interpreted model.json behind one
//! [`Runnable`]; segmenting volumes with a bundle ([`segmenting`]); accuracy gates between two
//! bundles' results ([`gates`]). The command line (`src/main.rs`, `src/cmd/`) and the tests use it; deployments
//! link `e2enc-runtime` alone. The Python package (`python/`) wraps it too.

pub mod calibrate;
pub mod device;
pub mod gates;
pub mod segmenting;
pub mod session;

pub use segmenting::error_text;
pub use session::{Runnable, Session, SessionError, TensorEngine, TensorOutput};
