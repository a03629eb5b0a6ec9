//! What the running parts are built from: the listeners the transports
//! bind (and how the call core sees each), the relay's port ranges, and
//! the transport's limits. The daemon passes these along and decides
//! nothing about them.

use std::net::IpAddr;
use std::time::Duration;

use super::{Config, Transport};
use crate::b2bua::ListenerInfo;
use crate::media::ports::PortRange;
use crate::transport::{self, ListenerSpec, TransportConfig};

impl From<Transport> for transport::Transport {
    fn from(t: Transport) -> transport::Transport {
        match t {
            Transport::Udp => transport::Transport::Udp,
            Transport::Tcp => transport::Transport::Tcp,
            Transport::Tls => transport::Transport::Tls,
        }
    }
}

impl Config {
    /// The listeners this configuration asks for, realm by realm in
    /// order: what the transports bind, and how the core sees each.
    pub fn listener_specs(&self) -> Vec<(ListenerSpec, ListenerInfo)> {
        let mut specs = Vec::new();
        for realm in &self.realms {
            for listen in &realm.listen {
                let transport = listen.transport.into();
                let spec = ListenerSpec {
                    realm: realm.name.clone(),
                    transport,
                    addr: listen.address,
                    recv_buffer: realm.recv_buffer_bytes.map(|b| b as usize),
                    send_buffer: realm.send_buffer_bytes.map(|b| b as usize),
                    // A node of a pair binds its shared addresses before
                    // they move to it.
                    freebind: self.cluster.is_some(),
                };
                let info = ListenerInfo {
                    realm: realm.name.clone(),
                    transport,
                    addr: listen.address,
                    advertise: listen.advertise,
                };
                specs.push((spec, info));
            }
        }
        specs
    }

    /// The relay's port range of each realm media address, in realm order;
    /// realms that share an address share its range (listed once).
    pub fn media_ranges(&self) -> Vec<(IpAddr, PortRange)> {
        let mut ranges: Vec<(IpAddr, PortRange)> = Vec::new();
        for address in self.realms.iter().flat_map(|r| r.media.addresses()) {
            if !ranges.iter().any(|(ip, _)| *ip == address) {
                let range = PortRange {
                    first: self.media.port_min,
                    last: self.media.port_max,
                };
                ranges.push((address, range));
            }
        }
        ranges
    }

    /// The transport's limits from `[limits]` (taken at start-up).
    pub fn transport_config(&self) -> TransportConfig {
        let limits = &self.limits;
        let message = Duration::from_secs(u64::from(limits.tcp_message_timeout_secs));
        TransportConfig {
            max_connections: limits.tcp_connections as usize,
            max_connections_per_source: limits.tcp_connections_per_source as usize,
            untrusted_connection_share_percent: limits.tcp_untrusted_percent,
            first_message_timeout: message,
            message_timeout: message,
            ..TransportConfig::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"
[limits]
tcp_connections = 900
tcp_connections_per_source = 9
tcp_untrusted_percent = 40
tcp_message_timeout_secs = 7
max_calls = 100
[media]
port_min = 30000
port_max = 30999
[[realm]]
name = "outside"
listen = [
  { transport = "udp", address = "192.0.2.1:5060" },
  { transport = "tcp", address = "192.0.2.1:5060", advertise = "203.0.113.1:5060" },
]
media = { address = "192.0.2.1" }
recv_buffer_bytes = 4194304
[[realm]]
name = "inside"
listen = [{ transport = "udp", address = "198.51.100.1:5060" }]
media = { address = "198.51.100.1" }
[[realm]]
name = "lab"
listen = [{ transport = "udp", address = "198.51.100.1:5070" }]
media = { address = "198.51.100.1" }
"#;

    fn config() -> Config {
        Config::from_str_named(CONFIG, "test.toml").expect("valid")
    }

    #[test]
    fn every_listen_entry_becomes_one_listener_in_order() {
        let specs = config().listener_specs();
        let seen: Vec<(String, transport::Transport, String)> = specs
            .iter()
            .map(|(spec, info)| {
                assert_eq!(
                    (&spec.realm, spec.transport, spec.addr),
                    (&info.realm, info.transport, info.addr)
                );
                (spec.realm.clone(), spec.transport, spec.addr.to_string())
            })
            .collect();
        assert_eq!(
            seen,
            [
                (
                    "outside".into(),
                    transport::Transport::Udp,
                    "192.0.2.1:5060".into()
                ),
                (
                    "outside".into(),
                    transport::Transport::Tcp,
                    "192.0.2.1:5060".into()
                ),
                (
                    "inside".into(),
                    transport::Transport::Udp,
                    "198.51.100.1:5060".into()
                ),
                (
                    "lab".into(),
                    transport::Transport::Udp,
                    "198.51.100.1:5070".into()
                ),
            ]
        );
        assert_eq!(specs[0].0.recv_buffer, Some(4_194_304));
        assert_eq!(specs[2].0.recv_buffer, None);
        assert_eq!(
            specs[1].1.advertise,
            Some("203.0.113.1:5060".parse().expect("addr"))
        );
    }

    #[test]
    fn a_media_address_shared_by_realms_has_one_range() {
        let ranges = config().media_ranges();
        let ips: Vec<String> = ranges.iter().map(|(ip, _)| ip.to_string()).collect();
        assert_eq!(ips, ["192.0.2.1", "198.51.100.1"]);
        assert!(
            ranges
                .iter()
                .all(|(_, r)| (r.first, r.last) == (30000, 30999))
        );
    }

    #[test]
    fn the_tcp_limits_reach_the_transport() {
        let t = config().transport_config();
        assert_eq!(
            (
                t.max_connections,
                t.max_connections_per_source,
                t.untrusted_connection_share_percent
            ),
            (900, 9, 40)
        );
        assert_eq!(t.first_message_timeout, Duration::from_secs(7));
        assert_eq!(t.message_timeout, Duration::from_secs(7));
    }
}
