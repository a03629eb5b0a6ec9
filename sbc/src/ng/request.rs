//! What an ng request asks (pure): the keys and flags Kamailio's `rtpengine`
//! module sends, read from its parsed-keys dictionary or tokenised from an
//! `rtpp-flags` string, into one [`Request`].
//!
//! Spelling is normalised as rtpengine does (`daemon/call_flags.c`): keys
//! and flags are case-insensitive and a space equals a hyphen
//! (`received from` = `received-from`). Flags this relay does not act on
//! are collected in [`Request::ignored`], so the server can warn once and
//! still answer: an unknown flag is never a failure.

use std::net::IpAddr;

use super::codec::Value;

/// An ng command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    /// `ping`.
    Ping,
    /// `offer`.
    Offer,
    /// `answer`.
    Answer,
    /// `delete`.
    Delete,
    /// `query`.
    Query,
    /// `list`.
    List,
    /// `statistics`.
    Statistics,
    /// Anything else (answered with an error).
    Other,
}

impl Command {
    /// The metric label of the command (a closed set).
    pub fn label(self) -> &'static str {
        match self {
            Command::Ping => "ping",
            Command::Offer => "offer",
            Command::Answer => "answer",
            Command::Delete => "delete",
            Command::Query => "query",
            Command::List => "list",
            Command::Statistics => "statistics",
            Command::Other => "other",
        }
    }

    fn parse(name: &str) -> Command {
        match normalise(name).as_str() {
            "ping" => Command::Ping,
            "offer" => Command::Offer,
            "answer" => Command::Answer,
            "delete" => Command::Delete,
            "query" => Command::Query,
            "list" => Command::List,
            "statistics" => Command::Statistics,
            _ => Command::Other,
        }
    }
}

/// Whose address a stream's remote is taken from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddressSource {
    /// The SDP's `c=` (`trust-address`, the default).
    Sdp,
    /// `received-from` (`SIP-source-address`).
    SignalingSource,
}

/// The ng request, read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Request {
    /// The command (`None` when the key is missing).
    pub command: Option<Command>,
    /// The command's name as sent (for the error reason).
    pub command_name: String,
    /// `call-id`.
    pub call_id: Option<Vec<u8>>,
    /// `from-tag`.
    pub from_tag: Option<Vec<u8>>,
    /// `to-tag`.
    pub to_tag: Option<Vec<u8>>,
    /// `via-branch`.
    pub via_branch: Option<Vec<u8>>,
    /// `sdp`.
    pub sdp: Option<Vec<u8>>,
    /// `received-from: ["IP4", "addr"]`: where the SIP message came from.
    pub received_from: Option<IpAddr>,
    /// `direction: [from, to]`: the realms of the offerer's and the
    /// answerer's legs.
    pub direction: Option<[String; 2]>,
    /// `SIP-source-address` (else `trust-address`, the default).
    pub address_source: Option<AddressSource>,
    /// `media-address`: the offerer's media address, over the SDP's.
    pub media_address: Option<IpAddr>,
    /// `asymmetric`: never latch; `symmetric` is the default.
    pub asymmetric: bool,
    /// `strict-source`.
    pub strict_source: bool,
    /// `transport-protocol`.
    pub transport_protocol: Option<String>,
    /// `ICE=...` (`remove` is what the relay does anyway).
    pub ice: Option<String>,
    /// `replace: [...]` (`origin`, `session-connection`).
    pub replace: Vec<String>,
    /// `rtcp-mux: [...]`.
    pub rtcp_mux: Vec<String>,
    /// `label`.
    pub label: Option<String>,
    /// `delete-delay` in seconds.
    pub delete_delay: Option<u32>,
    /// `supports: ["load limit"]`: the client understands `result: load limit`.
    pub supports_load_limit: bool,
    /// `limit` of `list`.
    pub limit: Option<u32>,
    /// Keys and flags read but not acted on.
    pub ignored: Vec<String>,
}

/// Lower case, spaces as hyphens.
pub fn normalise(s: &str) -> String {
    s.trim()
        .chars()
        .map(|c| {
            if c == ' ' {
                '-'
            } else {
                c.to_ascii_lowercase()
            }
        })
        .collect()
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::Int(i) => Some(i.to_string()),
        _ => v.as_str().map(str::to_owned),
    }
}

fn texts(v: &Value) -> Vec<String> {
    match v {
        Value::List(items) => items.iter().filter_map(text).collect(),
        _ => text(v).into_iter().collect(),
    }
}

impl Request {
    /// Reads a request dictionary.
    pub fn from_dict(dict: &Value) -> Request {
        let mut r = Request::default();
        let Value::Dict(items) = dict else { return r };
        let mut rtpp_flags = None;
        for (key, value) in items {
            let key = normalise(&String::from_utf8_lossy(key));
            match key.as_str() {
                "command" => {
                    let name = text(value).unwrap_or_default();
                    r.command = Some(Command::parse(&name));
                    r.command_name = name;
                }
                "call-id" => r.call_id = value.as_bytes().map(<[u8]>::to_vec),
                "from-tag" => r.from_tag = value.as_bytes().map(<[u8]>::to_vec),
                "to-tag" => r.to_tag = value.as_bytes().map(<[u8]>::to_vec),
                "via-branch" => r.via_branch = value.as_bytes().map(<[u8]>::to_vec),
                "sdp" => r.sdp = value.as_bytes().map(<[u8]>::to_vec),
                "received-from" => {
                    // ["IP4", "192.0.2.1"]: the family, then the address.
                    r.received_from = texts(value).last().and_then(|a| a.parse().ok());
                }
                "direction" => {
                    let d = texts(value);
                    if d.len() == 2 {
                        r.direction = Some([d[0].clone(), d[1].clone()]);
                    }
                }
                "flags" => {
                    for flag in texts(value) {
                        r.flag(&flag);
                    }
                }
                "replace" => r.replace.extend(texts(value).iter().map(|s| normalise(s))),
                "rtcp-mux" => r.rtcp_mux.extend(texts(value).iter().map(|s| normalise(s))),
                "supports" => {
                    r.supports_load_limit |=
                        texts(value).iter().any(|s| normalise(s) == "load-limit")
                }
                "rtpp-flags" => rtpp_flags = text(value),
                other => {
                    let v = text(value).unwrap_or_default();
                    r.key_value(other, &v);
                }
            }
        }
        if let Some(flags) = rtpp_flags {
            r.rtpp_flags(&flags);
        }
        r
    }

    /// A `key=value` item (top-level key of the parsed mode, or an item of
    /// an `rtpp-flags` string).
    fn key_value(&mut self, key: &str, value: &str) {
        match normalise(key).as_str() {
            "ice" => self.ice = Some(normalise(value)),
            "transport-protocol" => self.transport_protocol = Some(value.to_owned()),
            "media-address" => match value.parse() {
                Ok(ip) => self.media_address = Some(ip),
                Err(_) => self.ignored.push(format!("media-address={value}")),
            },
            "label" => self.label = Some(value.to_owned()),
            "delete-delay" => match value.trim().parse() {
                Ok(d) => self.delete_delay = Some(d),
                Err(_) => self.ignored.push(format!("delete-delay={value}")),
            },
            "limit" => self.limit = value.trim().parse().ok(),
            // The SIP side of the message: nothing to do with media.
            "sip-message-type" | "sip-code" => {}
            other => self.ignored.push(format!("{other}={value}")),
        }
    }

    /// A bare flag.
    fn flag(&mut self, flag: &str) {
        match normalise(flag).as_str() {
            "trust-address" => self.address_source = Some(AddressSource::Sdp),
            "sip-source-address" => self.address_source = Some(AddressSource::SignalingSource),
            "symmetric" => self.asymmetric = false,
            "asymmetric" => self.asymmetric = true,
            "strict-source" => self.strict_source = true,
            other => self.ignored.push(other.to_owned()),
        }
    }

    /// Tokenises an `rtpp-flags` string (rtpengine's "daemon-parsed" mode,
    /// `docs/ng_control_protocol.md`): the same vocabulary as Kamailio's
    /// `rtpengine_offer()` argument, which Kamailio then sends verbatim.
    pub fn rtpp_flags(&mut self, flags: &str) {
        let mut directions = Vec::new();
        for token in flags.split_ascii_whitespace() {
            let (key, value) = match token.split_once('=') {
                Some((k, v)) => (normalise(k), Some(v)),
                None => (normalise(token), None),
            };
            match (key.as_str(), value) {
                ("direction", Some(v)) => directions.push(v.to_owned()),
                ("replace", Some(v)) => self.replace.push(normalise(v)),
                ("replace-origin", None) => self.replace.push("origin".into()),
                ("replace-session-connection", None) => {
                    self.replace.push("session-connection".into());
                }
                ("rtcp-mux", Some(v)) => self.rtcp_mux.push(normalise(v)),
                (k, None) if k.starts_with("rtcp-mux-") => {
                    self.rtcp_mux.push(k["rtcp-mux-".len()..].to_owned());
                }
                (
                    "rtp/avp" | "rtp/savp" | "rtp/avpf" | "rtp/savpf" | "udp/tls/rtp/savp"
                    | "udp/tls/rtp/savpf",
                    None,
                ) => self.transport_protocol = Some(token.to_owned()),
                ("call-id" | "from-tag" | "to-tag" | "via-branch", Some(v)) => {
                    let v = Some(v.as_bytes().to_vec());
                    match key.as_str() {
                        "call-id" => self.call_id = v,
                        "from-tag" => self.from_tag = v,
                        "to-tag" => self.to_tag = v,
                        _ => self.via_branch = v,
                    }
                }
                (k, Some(v)) => self.key_value(k, v),
                (k, None) => self.flag(k),
            }
        }
        if directions.len() == 2 {
            self.direction = Some([directions[0].clone(), directions[1].clone()]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ng::codec::{Limits, decode};

    fn read(message: &[u8]) -> Request {
        Request::from_dict(&decode(message, &Limits::default()).expect("decodes").dict)
    }

    #[test]
    fn kamailio_offer_in_parsed_mode() {
        let r = read(include_bytes!("fixtures/kamailio-5.6/offer.bin"));
        assert_eq!(r.command, Some(Command::Offer));
        assert_eq!(r.call_id.as_deref(), Some(&b"1-19726@127.0.0.1"[..]));
        assert_eq!(r.from_tag.as_deref(), Some(&b"19726SIPpTag001"[..]));
        assert_eq!(r.to_tag, None);
        assert_eq!(r.received_from, Some("127.0.0.1".parse().expect("ip")));
        assert_eq!(r.direction, Some(["internal".into(), "external".into()]));
        assert_eq!(r.address_source, Some(AddressSource::Sdp));
        assert!(!r.asymmetric && r.strict_source);
        assert_eq!(r.ice.as_deref(), Some("remove"));
        assert_eq!(r.replace, ["origin", "session-connection"]);
        assert_eq!(r.transport_protocol.as_deref(), Some("RTP/AVP"));
        assert_eq!(r.rtcp_mux, ["demux"]);
        assert_eq!(r.media_address, Some("127.0.0.1".parse().expect("ip")));
        assert_eq!(r.label.as_deref(), Some("caller"));
        assert_eq!(r.delete_delay, Some(0));
        assert!(r.supports_load_limit);
        assert_eq!(r.ignored, ["unknown-flag"]);
        assert!(r.sdp.as_deref().is_some_and(|s| s.starts_with(b"v=0\r\n")));
    }

    #[test]
    fn kamailio_answer_query_delete_and_ping() {
        let a = read(include_bytes!("fixtures/kamailio-5.6/answer.bin"));
        assert_eq!(a.command, Some(Command::Answer));
        assert_eq!(a.to_tag.as_deref(), Some(&b"19704SIPpTag011"[..]));
        assert_eq!(a.replace, ["origin"]);
        let q = read(include_bytes!("fixtures/kamailio-5.6/query.bin"));
        assert_eq!(q.command, Some(Command::Query));
        assert!(q.to_tag.is_some());
        let d = read(include_bytes!("fixtures/kamailio-5.6/delete.bin"));
        assert_eq!(d.command, Some(Command::Delete));
        assert_eq!(d.to_tag, None);
        let p = read(include_bytes!("fixtures/kamailio-5.6/ping.bin"));
        assert_eq!(p.command, Some(Command::Ping));
    }

    #[test]
    fn rtpp_flags_mode_reads_the_same_request() {
        // What Kamailio 5.8+ sends for the same rtpengine_offer() argument in
        // its daemon-parsed mode: the string verbatim (5.6 has no such mode).
        let flags = "replace-origin replace-session-connection ICE=remove RTP/AVP trust-address \
                     symmetric strict-source direction=internal direction=external label=caller \
                     delete-delay=0 rtcp-mux-demux media-address=127.0.0.1 unknown-flag";
        let message = format!(
            "c1 d7:command5:offer7:call-id3:abc8:from-tag1:f10:rtpp-flags{}:{flags}e",
            flags.len()
        );
        let r = read(message.as_bytes());
        let parsed = read(include_bytes!("fixtures/kamailio-5.6/offer.bin"));
        assert_eq!(r.direction, parsed.direction);
        assert_eq!(r.address_source, parsed.address_source);
        assert_eq!(r.strict_source, parsed.strict_source);
        assert_eq!(r.ice, parsed.ice);
        assert_eq!(r.replace, parsed.replace);
        assert_eq!(r.transport_protocol, parsed.transport_protocol);
        assert_eq!(r.rtcp_mux, parsed.rtcp_mux);
        assert_eq!(r.media_address, parsed.media_address);
        assert_eq!(r.label, parsed.label);
        assert_eq!(r.delete_delay, parsed.delete_delay);
        assert_eq!(r.ignored, parsed.ignored);
        assert_eq!(r.call_id.as_deref(), Some(&b"abc"[..]));
    }

    #[test]
    fn spaces_and_hyphens_and_case_are_one_spelling() {
        let r = read(b"c d7:command5:OFFER5:flagsl13:trust address10:Asymmetrice13:received froml3:IP410:192.0.2.10ee");
        assert_eq!(r.command, Some(Command::Offer));
        assert!(r.asymmetric);
        assert_eq!(r.address_source, Some(AddressSource::Sdp));
        assert_eq!(r.received_from, Some("192.0.2.10".parse().expect("ip")));
    }
}
