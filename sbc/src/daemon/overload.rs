//! The overload level the core works at.

use super::*;

/// The overload level the core works at, from how full its inbound queue
/// is: raised at once when a message finds the queue filling, lowered only
/// by the once-a-second tick once it has drained (no flapping per message).
/// A media relay that refused commands in the last second (its queue full)
/// holds the level at 1 at least: new calls from untrusted sources are
/// refused before they need media it can't anchor; one with thousands of
/// commands waiting holds it at 2.
#[derive(Debug, Default)]
pub(super) struct Overload {
    pub(super) level: u8,
    /// The relay's floor under the level (0 to 2).
    pub(super) relay: u8,
}

impl Overload {
    pub(super) fn relay(&mut self, core: &mut Core, pressure: u8, metrics: &Metrics) {
        self.relay = pressure.min(2);
        if self.relay > self.level {
            warn!(
                level = self.relay,
                "overload: the media relay is saturated (its command queue was full)"
            );
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::b2bua::SequentialIds;

    #[test]
    fn relay_pressure_is_a_floor_the_queue_cannot_lower() {
        let config = crate::config::Config::embedded_default().expect("embedded default");
        let mut core = Core::new(
            &config,
            Vec::new(),
            |_, _| None,
            Box::new(SequentialIds::default()),
        );
        let metrics = Metrics::new(crate::metrics::BuildInfo::current(false));
        let mut overload = Overload::default();
        // Thousands of commands wait for the relay: every new call refused,
        // however empty the inbound queue.
        overload.relay(&mut core, 2, &metrics);
        overload.settle(&mut core, 0, 100, &metrics);
        assert_eq!(core.overload(), 2);
        // The backlog shrank but the relay still refuses: untrusted calls
        // only.
        overload.relay(&mut core, 1, &metrics);
        overload.settle(&mut core, 0, 100, &metrics);
        assert_eq!(core.overload(), 1);
        // A full inbound queue raises it above the relay's floor; once both
        // ease, the level is 0.
        overload.raise(&mut core, 80, 100, &metrics);
        assert_eq!(core.overload(), 2);
        overload.relay(&mut core, 0, &metrics);
        overload.settle(&mut core, 0, 100, &metrics);
        assert_eq!(core.overload(), 0);
    }
}
