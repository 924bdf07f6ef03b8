//! Helpers every rotor crate shares, written once: the clock, blocking work inside the async
//! runtime, and the one durable way to replace a file.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod fs;
pub mod time;

/// Runs blocking work (storage, file I/O) on the current worker thread without stalling the
/// other tasks of a multi-threaded runtime.
pub fn blocking<T>(work: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(work)
}
