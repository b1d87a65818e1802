//! Naming a reservation from anywhere: [`ReservationId`] (a `Copy` name that transitions
//! accept, valid until the reservation is dropped) and [`lookup`] (the reservation containing
//! an address, lock-free and async-signal-safe), both on the process-wide registry.

use crate::error::{Error, Op};
use crate::fault::Faulted;
use crate::probe;
use crate::region::{state_of, Reservation};
use crate::registry;
use crate::state::State;
use crate::unused::Unused;

/// A reservation named from anywhere: from a signal handler that knows only a faulting
/// address ([`lookup`]), or from code whose memory functions are static and take bare
/// addresses. It is `Copy`, and it stays valid until the [`Reservation`] is dropped; after
/// that every call through it returns [`Error::Gone`] (an id is never reused for another
/// reservation). While a call through an id runs, dropping the reservation waits for it.
///
/// Its transitions are the [`Reservation`]'s, with the same arguments, errors and safety
/// contracts, and the same rules for signal handlers (see the crate docs, "Threads, fork and
/// signals").
///
/// ```
/// let ps = osmem::page_size();
/// let r = osmem::Reservation::reserve(16 * ps)?;
/// let id = r.id();
/// id.map(0, 4 * ps)?;
/// id.used(0, 4 * ps)?;
/// assert_eq!(id.state(0)?, osmem::State::Ready);
/// assert_eq!(id.span()?, (r.as_ptr() as usize, 16 * ps));
/// drop(r);
/// assert!(matches!(id.state(0), Err(osmem::Error::Gone { .. })));
/// # Ok::<(), osmem::Error>(())
/// ```
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct ReservationId {
    index: u32,
    gen: u32,
}

impl ReservationId {
    pub(crate) fn new(index: u32, gen: u32) -> Self {
        ReservationId { index, gen }
    }

    /// Run `f` on a view of the reservation, pinned so it cannot be dropped meanwhile.
    fn with<T>(self, op: Op, f: impl FnOnce(&Reservation) -> Result<T, Error>) -> Result<T, Error> {
        let Some(slot) = registry::pin(self.index, self.gen) else {
            return Err(Error::Gone { op });
        };
        // A view that is never dropped: the owner unmaps, not us.
        let view = Reservation::view(self.index, self.gen, slot);
        let r = f(&view);
        registry::unpin(slot);
        r
    }

    /// The reservation's range: (start address, length in bytes).
    ///
    /// ```
    /// let r = osmem::Reservation::reserve(1 << 16)?;
    /// assert_eq!(r.id().span()?, (r.as_ptr() as usize, 1 << 16));
    /// # Ok::<(), osmem::Error>(())
    /// ```
    pub fn span(self) -> Result<(usize, usize), Error> {
        self.with(Op::Residency, |r| Ok((r.as_ptr() as usize, r.len())))
    }

    /// [`Reservation::state`]; `Error::OutOfRange` outside the region. Async-signal-safe, and
    /// never waits.
    ///
    /// ```
    /// let r = osmem::Reservation::reserve(1 << 16)?;
    /// assert_eq!(r.id().state(0)?, osmem::State::Reserved);
    /// # Ok::<(), osmem::Error>(())
    /// ```
    pub fn state(self, offset: usize) -> Result<State, Error> {
        self.with(Op::Residency, |r| {
            r.state(offset).ok_or(Error::OutOfRange {
                op: Op::Residency,
                offset,
                len: 0,
                size: r.len(),
            })
        })
    }

    /// [`Reservation::map`].
    ///
    /// ```
    /// let r = osmem::Reservation::reserve(1 << 16)?;
    /// r.id().map(0, 1 << 16)?;
    /// assert_eq!(r.state(0), Some(osmem::State::Prepared));
    /// # Ok::<(), osmem::Error>(())
    /// ```
    pub fn map(self, offset: usize, len: usize) -> Result<(), Error> {
        self.with(Op::Map, |r| r.map(offset, len))
    }

    /// [`Reservation::used`].
    ///
    /// ```
    /// let r = osmem::Reservation::reserve(1 << 16)?;
    /// r.map(0, 1 << 16)?;
    /// r.id().used(0, 1 << 16)?;
    /// assert_eq!(r.state(0), Some(osmem::State::Ready));
    /// # Ok::<(), osmem::Error>(())
    /// ```
    pub fn used(self, offset: usize, len: usize) -> Result<(), Error> {
        self.with(Op::Used, |r| r.used(offset, len))
    }

    /// [`Reservation::unused`].
    ///
    /// # Safety
    /// As for [`Reservation::unused`].
    ///
    /// ```
    /// let r = osmem::Reservation::alloc(1 << 16)?;
    /// unsafe { r.id().unused(0, 1 << 16)? };
    /// assert_eq!(r.state(0), Some(osmem::State::Prepared));
    /// # Ok::<(), osmem::Error>(())
    /// ```
    pub unsafe fn unused(self, offset: usize, len: usize) -> Result<Unused, Error> {
        // SAFETY: the caller's contract.
        self.with(Op::Unused, |r| unsafe { r.unused(offset, len) })
    }

    /// [`Reservation::fault`].
    ///
    /// # Safety
    /// As for [`Reservation::fault`].
    ///
    /// ```
    /// let r = osmem::Reservation::alloc(1 << 16)?;
    /// let f = unsafe { r.id().fault(0, 4096)? };
    /// assert!(f.traps());
    /// # Ok::<(), osmem::Error>(())
    /// ```
    pub unsafe fn fault(self, offset: usize, len: usize) -> Result<Faulted, Error> {
        // SAFETY: the caller's contract.
        self.with(Op::Fault, |r| unsafe { r.fault(offset, len) })
    }
}

/// What [`lookup`] found at an address.
#[must_use = "a lookup has no other effect"]
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Lookup {
    /// The reservation containing the address.
    pub id: ReservationId,
    /// Its start address.
    pub base: usize,
    /// Its length in bytes.
    pub len: usize,
    /// The state of the page containing the address.
    pub state: State,
}

/// The reservation containing `addr`, its range and the state of `addr`'s page, from osmem's
/// process-wide registry: `None` if no live reservation contains it. Async-signal-safe and
/// lock-free: it never waits, so a `SIGSEGV` handler can classify a fault with it (a guard
/// region, a page a GC protected, memory that is not osmem's) without a registry of its own,
/// and act on it through [`Lookup::id`]. A reservation being created or dropped at this
/// instant by another thread may be found or not; the page's state is its state before or
/// after any transition in progress on it (see the crate docs, "Threads, fork and signals").
///
/// It searches every live reservation: about 1 ns per reservation alive.
///
/// ```
/// use osmem::{lookup, Reservation, State};
/// let ps = osmem::page_size();
/// let r = Reservation::reserve(8 * ps)?;
/// r.map(0, ps)?;
/// let found = lookup(r.as_ptr() as usize + 100).unwrap();
/// assert_eq!((found.base, found.len), (r.as_ptr() as usize, 8 * ps));
/// assert_eq!(found.state, State::Prepared);
/// assert_eq!(lookup(r.as_ptr() as usize + ps).unwrap().state, State::Reserved);
/// let x = 0u8;
/// assert!(lookup(&x as *const u8 as usize).is_none()); // not osmem's
/// # Ok::<(), osmem::Error>(())
/// ```
pub fn lookup(addr: usize) -> Option<Lookup> {
    loop {
        let (index, gen, base, len) = registry::find(addr)?;
        let ps = probe::page_size();
        let code = registry::slot(index).table.code((addr - base) / ps);
        // Dropped (and maybe reused) while we read its map: look again.
        if registry::alive(index, gen) {
            return Some(Lookup {
                id: ReservationId { index, gen },
                base,
                len,
                state: state_of(code),
            });
        }
    }
}
