//! What the core applies: a polled message with its route.

use crate::intent::Place;
use crate::routing::Route;

/// A polled message with its route: what the core applies. The route is borrowed by the
/// polling loop (`R = &Route`): its names' reference counts are then moved only on the routing
/// thread, which made and later drops them (see `writer::run`).
pub(crate) struct Routed<M, R = Route> {
    pub(crate) message: M,
    /// The index of its topic in the config.
    pub(crate) topic: usize,
    pub(crate) route: R,
    /// The rebalance generation it was polled in.
    pub(crate) generation: u64,
}

/// Where an earlier build's rule put a message in output `output` (recovery's `Place`).
pub(super) fn place_of(p: &crate::routing::Placement, output: u8) -> Place<'_> {
    Place { prefix: p.prefix.as_deref(), date: &p.date, error: p.to_error_path, output }
}
