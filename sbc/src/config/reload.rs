//! What a reload (SIGHUP) can apply, and what waits for a restart.
//!
//! Owns: the list of settings a running daemon takes only at start-up (the
//! media relay's ports, timeouts and XDP, the metrics listener, CDR and
//! logging, the transaction table's size, the SIP timers, the relay's
//! threads and every thread's scheduling), and the comparison of two
//! configurations over it. Everything else (realms,
//! listeners, routes, trunks, ACLs, limits, protection, header policy) is
//! applied by a reload.

use super::Config;

impl Config {
    /// The restart-only settings `new` changes from `self`, by the name a
    /// log line gives them; empty when a reload applies the whole file.
    pub fn restart_only_changes(&self, new: &Config) -> Vec<&'static str> {
        let (old, new_) = (self, new);
        [
            (
                "media.inactivity_timeout_secs",
                old.media.inactivity_timeout_secs != new_.media.inactivity_timeout_secs,
            ),
            (
                "media.latching.learning_window_ms",
                old.media.latching.learning_window_ms != new_.media.latching.learning_window_ms,
            ),
            (
                "media.port_quarantine_secs",
                old.media.port_quarantine_secs != new_.media.port_quarantine_secs,
            ),
            (
                "media.port_min/port_max",
                (old.media.port_min, old.media.port_max)
                    != (new_.media.port_min, new_.media.port_max),
            ),
            ("media.xdp", old.media.xdp != new_.media.xdp),
            ("metrics.listen", old.metrics.listen != new_.metrics.listen),
            ("cdr", old.cdr != new_.cdr),
            ("state.bindings_file", old.state != new_.state),
            (
                "realm.networks of a realm with latch_from_networks (the media relay's copy)",
                old.realms.iter().any(|r| {
                    r.latch_from_networks
                        && new_
                            .realms
                            .iter()
                            .find(|n| n.name == r.name)
                            .is_some_and(|n| n.networks != r.networks)
                }),
            ),
            ("logging", old.logging != new_.logging),
            ("scheduling", old.scheduling != new_.scheduling),
            (
                "media.relay_threads",
                old.media.relay_threads != new_.media.relay_threads,
            ),
            (
                "limits.max_transactions",
                old.limits.max_transactions != new_.limits.max_transactions,
            ),
            (
                "limits.tracked_sources/banned_sources",
                (old.limits.tracked_sources, old.limits.banned_sources)
                    != (new_.limits.tracked_sources, new_.limits.banned_sources),
            ),
            (
                "sip.t1_ms/t2_ms/t4_ms",
                old.sip.timers() != new_.sip.timers(),
            ),
            (
                "limits.tcp_*",
                (
                    old.limits.tcp_connections,
                    old.limits.tcp_connections_per_source,
                    old.limits.tcp_untrusted_percent,
                    old.limits.tcp_message_timeout_secs,
                ) != (
                    new_.limits.tcp_connections,
                    new_.limits.tcp_connections_per_source,
                    new_.limits.tcp_untrusted_percent,
                    new_.limits.tcp_message_timeout_secs,
                ),
            ),
        ]
        .into_iter()
        .filter_map(|(name, changed)| changed.then_some(name))
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    fn default() -> Config {
        Config::from_str_named(crate::config::DEFAULT_TOML, "default.toml").expect("valid")
    }

    #[test]
    fn each_restart_only_setting_is_named_and_reloadable_ones_are_not() {
        let old = default();
        assert!(old.restart_only_changes(&old.clone()).is_empty());
        let changed = |edit: fn(&mut Config)| {
            let mut new = old.clone();
            edit(&mut new);
            old.restart_only_changes(&new)
        };
        assert_eq!(
            changed(|c| c.media.port_quarantine_secs += 1),
            ["media.port_quarantine_secs"]
        );
        assert_eq!(
            changed(|c| c.media.port_max -= 2),
            ["media.port_min/port_max"]
        );
        assert_eq!(
            changed(|c| c.limits.max_transactions += 1),
            ["limits.max_transactions"]
        );
        assert_eq!(
            changed(|c| c.limits.banned_sources += 1),
            ["limits.tracked_sources/banned_sources"]
        );
        assert_eq!(changed(|c| c.sip.t1_ms = 250), ["sip.t1_ms/t2_ms/t4_ms"]);
        assert_eq!(
            changed(|c| c.limits.tcp_connections_per_source = 8),
            ["limits.tcp_*"]
        );
        assert_eq!(
            changed(|c| c.scheduling.signaling_priority = 10),
            ["scheduling"]
        );
        assert_eq!(
            changed(|c| c.media.relay_threads = 3),
            ["media.relay_threads"]
        );
        assert_eq!(
            changed(|c| c.media.inactivity_timeout_secs += 1),
            ["media.inactivity_timeout_secs"]
        );
        // Applied by a reload: nothing to say.
        assert!(changed(|c| c.limits.max_calls += 1).is_empty());
        assert!(changed(|c| c.protection.request_rate += 1).is_empty());
        assert!(changed(|c| c.routes.clear()).is_empty());
    }
}
