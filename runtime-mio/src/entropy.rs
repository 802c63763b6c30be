//! [`OsEntropy`]: the core's [`Entropy`](wsbridge_core::Entropy) from the operating system's CSPRNG.
//!
//! One definition shared by every runtime: it lives in `wsbridge-core` behind the `os-entropy` feature
//! (the core itself never uses it) and is re-exported here so `wsbridge_mio::OsEntropy` keeps working.

pub use wsbridge_core::entropy::OsEntropy;
