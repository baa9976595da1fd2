//! Deterministic crash injection, for the tests that prove each crash point safe.
//!
//! `KBACKUP_FAILPOINT=<name>[:<n>]` makes the process abort (like `kill -9`: no cleanup, no
//! flush) the `n`-th time (default 1st) it reaches the named point. Unset, each check is one
//! relaxed atomic load.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// A file was sealed and is about to be recorded as an intent.
pub const SEALED: &str = "sealed";
/// An intent commit succeeded; the upload has not started.
pub const INTENT_RECORDED: &str = "intent-recorded";
/// An upload finished; its offsets are not committed yet.
pub const UPLOADED: &str = "uploaded";
/// An offset commit succeeded.
pub const COMMITTED: &str = "committed";
/// A date's files are uploaded and committed; its completion marker is not written yet.
pub const MARKER_DUE: &str = "marker-due";
/// A completion marker was written; the commit that records it has not happened yet.
pub const MARKER_WRITTEN: &str = "marker-written";

static TARGET: OnceLock<Option<(String, u64)>> = OnceLock::new();
static HITS: AtomicU64 = AtomicU64::new(0);

fn target() -> &'static Option<(String, u64)> {
    TARGET.get_or_init(|| {
        let v = std::env::var("KBACKUP_FAILPOINT").ok()?;
        let (name, n) = match v.split_once(':') {
            Some((name, n)) => (name.to_string(), n.parse().unwrap_or(1)),
            None => (v, 1),
        };
        Some((name, n.max(1)))
    })
}

/// Aborts the process if `name` is the configured failpoint and this is its n-th hit.
pub fn hit(name: &str) {
    if let Some((want, n)) = target() {
        if want == name && HITS.fetch_add(1, Ordering::Relaxed) + 1 == *n {
            eprintln!("failpoint {name}:{n} reached: aborting");
            std::process::abort();
        }
    }
}
