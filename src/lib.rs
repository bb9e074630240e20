//! `e2enc` as a library: the application-side convenience over the runtime, tensors in and
//! tensors out ([`session`]): a compiled bundle or an interpreted model.json behind one
//! [`Runnable`]. The command line (`src/main.rs`, `src/cmd/`) and the tests use it; deployments
//! link `e2enc-runtime` alone.

pub mod session;

pub use session::{Runnable, Session, SessionError, TensorEngine, TensorOutput};
