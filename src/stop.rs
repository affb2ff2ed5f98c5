//! A cancel token: one flag shared by whoever may stop a long-running loop (a signal
//! handler, a test, a library user) and the loops that look at it.
//!
//! Promise: setting it is visible to every clone at once; loops notice it within their
//! stated bound.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Tells running loops to stop; clones share one flag.
#[derive(Clone, Debug, Default)]
pub struct Stop(Arc<AtomicBool>);

impl Stop {
    pub fn new() -> Self {
        Self::default()
    }
    /// Asks every loop holding a clone to stop.
    pub fn stop(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
    pub fn is_stopped(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
    /// The flag itself, for a signal handler to set.
    pub fn flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.0)
    }
}
