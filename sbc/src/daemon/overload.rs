//! The overload level the core works at.

use super::*;

/// The overload level the core works at, from how full its inbound queue
/// is: raised at once when a message finds the queue filling, lowered only
/// by the once-a-second tick once it has drained (no flapping per message).
/// A media relay that refused commands in the last second (its queue full)
/// holds the level at 1 at least: new calls from untrusted sources are
/// refused before they need media it can't anchor.
#[derive(Debug, Default)]
pub(super) struct Overload {
    pub(super) level: u8,
    /// The relay's floor under the level (0 or 1).
    pub(super) relay: u8,
}

impl Overload {
    pub(super) fn relay(&mut self, core: &mut Core, saturated: bool, metrics: &Metrics) {
        self.relay = u8::from(saturated);
        if self.relay > self.level {
            warn!("overload: the media relay is saturated (its command queue was full)");
            self.set(core, self.relay, 0, metrics);
        }
    }

    pub(super) fn measure(queued: usize, capacity: usize) -> u8 {
        let capacity = capacity.max(1);
        if queued * 4 >= capacity * 3 {
            2
        } else if queued * 4 >= capacity {
            1
        } else {
            0
        }
    }

    pub(super) fn raise(
        &mut self,
        core: &mut Core,
        queued: usize,
        capacity: usize,
        metrics: &Metrics,
    ) {
        let level = Self::measure(queued, capacity);
        if level > self.level {
            self.set(core, level, queued, metrics);
        }
    }

    pub(super) fn settle(
        &mut self,
        core: &mut Core,
        queued: usize,
        capacity: usize,
        metrics: &Metrics,
    ) {
        let level = Self::measure(queued, capacity).max(self.relay);
        if level < self.level {
            self.set(core, level, queued, metrics);
        }
    }

    pub(super) fn set(&mut self, core: &mut Core, level: u8, queued: usize, metrics: &Metrics) {
        if level > self.level {
            warn!(level, queued, "overload: new INVITEs are refused with 503");
        } else {
            info!(level, queued, "overload eased");
        }
        self.level = level;
        core.set_overload(level);
        metrics.set_overload_level(level);
    }
}
