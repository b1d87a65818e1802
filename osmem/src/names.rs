//! Best-effort mapping names, as Go does (`prctl(PR_SET_VMA, PR_SET_VMA_ANON_NAME)`), so
//! `/proc/<pid>/maps` shows `[anon:osmem]` for osmem's regions and `[anon:osmem state]` for
//! the arena that holds their page-state trees.
//!
//! Names are set once per mapping, at creation, never per transition: a name is part of the
//! VMA's identity, so renaming ranges by state would split VMAs, and VMAs are the resource
//! (vm.max_map_count) that guard-marker faults exist to spare.
//!
//! Kernels built without CONFIG_ANON_VMA_NAME answer EINVAL; a sandbox may answer EPERM.
//! Either turns naming off for good (counted once in `downgrade_anon_name`), like Go.

use crate::advise::{self, D_ANON_NAME};
use crate::sys::linux::{self as sys, Errno};

pub(crate) fn name(addr: usize, len: usize, name: &'static [u8]) {
    if !advise::clear(D_ANON_NAME) {
        return;
    }
    if let Err(Errno::EINVAL | Errno::EPERM | Errno::EACCES | Errno::ENOSYS) =
        advise::retry(|| sys::set_anon_name(addr, len, name))
    {
        advise::downgrade(D_ANON_NAME);
    }
}
