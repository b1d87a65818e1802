//! The states of a page. A module of its own: the error type names a state, and the
//! reservation's code names errors, so neither owns the other's vocabulary.

/// The state of a page of a [`Reservation`](crate::Reservation). (Memory outside any reservation is in the
/// state "None", which needs no variant: [`Reservation::state`](crate::Reservation::state) returns `None` there.)
///
/// These are the states of the Go runtime's memory system plus `Faulted`, and a transition
/// between them is a change in what the program may do with the memory, so code that
/// matches on a `State` is expected to handle each one: this enum is deliberately *not*
/// `#[non_exhaustive]`. A new state would change the meaning of the transitions and be a
/// breaking release of its own.
///
/// ```
/// use osmem::{Reservation, State};
/// let ps = osmem::page_size();
/// let r = Reservation::reserve(2 * ps)?;
/// r.map(0, ps)?;
/// let usable = |s: State| match s {
///     State::Ready => "read and write",
///     State::Prepared => "call used() first",
///     State::Reserved | State::Faulted => "call map() first",
/// };
/// assert_eq!(usable(r.state(0).unwrap()), "call used() first");
/// assert_eq!(usable(r.state(ps).unwrap()), "call map() first");
/// # Ok::<(), osmem::Error>(())
/// ```
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum State {
    /// Owned; any access faults; no footprint.
    Reserved,
    /// Meant to have no physical backing; cheap to make Ready; contents undefined.
    Prepared,
    /// Safe to read and write.
    Ready,
    /// Was Ready, then `fault` dropped its pages and (normally) made it trap. Go calls this
    /// Reserved; osmem keeps it apart because undoing it depends on how it was faulted.
    Faulted,
}
