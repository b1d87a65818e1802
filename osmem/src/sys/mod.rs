//! One small function per OS primitive. No policy lives here: each call returns the kernel's
//! answer as `Result<_, Errno>` and bumps the per-primitive counters, nothing more.

pub(crate) mod linux;
