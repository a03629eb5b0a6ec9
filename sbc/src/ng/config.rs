//! The ng server's settings from the configuration (`[ng]`), and the tests
//! of its validation rules (file, line, field).

use crate::config::Config;
use crate::media::command::LatchPolicy;

use super::codec::Limits;
use super::engine::{NgRealm, NgSettings};

impl NgSettings {
    /// The settings `config` gives (its `[ng]` section may be absent: the
    /// defaults of a server nobody enabled).
    pub fn from_config(config: &Config) -> NgSettings {
        let realms: Vec<NgRealm> = config
            .realms
            .iter()
            .map(|r| NgRealm {
                name: r.name.clone(),
                media_ip: r.media.address,
                advertise: r.media.advertise,
                latch_from_networks: r.latch_from_networks,
            })
            .collect();
        let index = |name: &str| realms.iter().position(|r| r.name == name).unwrap_or(0);
        let ng = config.ng.as_ref();
        let default_direction = ng
            .and_then(|n| n.direction.as_ref())
            .map_or([0, 0], |[a, b]| [index(a), index(b)]);
        NgSettings {
            default_direction,
            // As the call core reads `[media.latching]`.
            latch: if config.media.latching.strict_source_ip {
                LatchPolicy::SdpOrSignaling
            } else {
                LatchPolicy::Asymmetric
            },
            max_sessions: ng.map_or(0, |n| n.max_sessions as usize),
            limits: Limits::default(),
            cache_bytes: super::engine::CACHE_GENERATION_BYTES,
            realms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Problem;

    /// A media-only node: two realms with media addresses and no SIP.
    const MEDIA_ONLY: &str = r#"[ng]
listen = "127.0.0.1:2223"
listen_tcp = "127.0.0.1:2223"
direction = ["internal", "external"]
max_sessions = 100

[[realm]]
name = "internal"
media = { address = "127.0.0.1" }

[[realm]]
name = "external"
media = { address = "127.0.0.2", advertise = "203.0.113.9" }
"#;

    fn problems(text: &str) -> Vec<Problem> {
        match Config::from_str_named(text, "ng.toml") {
            Ok(_) => panic!("expected problems in:\n{text}"),
            Err(e) => e.problems().to_vec(),
        }
    }

    #[test]
    fn a_media_only_node_is_valid_with_ng_and_not_without() {
        let config = Config::from_str_named(MEDIA_ONLY, "ng.toml").expect("valid");
        let ng = config.ng.as_ref().expect("[ng]");
        assert_eq!(ng.listen, "127.0.0.1:2223".parse().expect("addr"));
        let settings = NgSettings::from_config(&config);
        assert_eq!(settings.default_direction, [0, 1]);
        assert_eq!(settings.max_sessions, 100);
        assert_eq!(
            settings.realms[1].advertise,
            Some("203.0.113.9".parse().expect("ip"))
        );

        let without = MEDIA_ONLY.replacen(
            "[ng]\nlisten = \"127.0.0.1:2223\"\nlisten_tcp = \"127.0.0.1:2223\"\ndirection = [\"internal\", \"external\"]\nmax_sessions = 100\n",
            "",
            1,
        );
        let p = problems(&without);
        assert!(p.iter().any(|p| p.field == "realm[0].listen"), "{p:?}");
    }

    #[test]
    fn ng_fields_are_checked_with_file_line_and_field() {
        let bad = MEDIA_ONLY.replacen("\"external\"]", "\"nowhere\"]", 1);
        let p = problems(&bad);
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!((p[0].file.as_str(), p[0].line), ("ng.toml", 4));
        assert_eq!(p[0].field, "ng.direction[1]");
        assert!(
            p[0].hint
                .as_deref()
                .is_some_and(|h| h.contains("internal, external"))
        );

        let p = problems(&MEDIA_ONLY.replacen(
            "127.0.0.1:2223\"\nlisten_tcp",
            "127.0.0.1:0\"\nlisten_tcp",
            1,
        ));
        assert_eq!((p[0].line, p[0].field.as_str()), (2, "ng.listen"));

        let p = problems(&MEDIA_ONLY.replacen("max_sessions", "max_session", 1));
        assert_eq!(p[0].line, 5, "{p:?}");
        assert!(p[0].message.contains("max_session"), "{p:?}");
    }

    #[test]
    fn without_an_allow_list_only_loopback_may_send_commands() {
        let config = Config::from_str_named(MEDIA_ONLY, "ng.toml").expect("valid");
        let ng = config.ng.as_ref().expect("[ng]");
        assert!(ng.allow.is_empty());
        for source in ["127.0.0.1", "127.9.8.7", "::1", "::ffff:127.0.0.1"] {
            assert!(ng.permits(source.parse().expect("ip")), "{source}");
        }
        for source in [
            "10.0.0.1",
            "192.0.2.1",
            "::ffff:10.0.0.1",
            "2001:db8::1",
            "0.0.0.0",
        ] {
            assert!(!ng.permits(source.parse().expect("ip")), "{source}");
        }
    }

    #[test]
    fn an_allow_list_names_the_proxies_and_nothing_else() {
        let text = MEDIA_ONLY.replacen(
            "max_sessions = 100\n",
            "max_sessions = 100\nallow = [\"10.0.0.0/24\", \"2001:db8::/64\"]\n",
            1,
        );
        let config = Config::from_str_named(&text, "ng.toml").expect("valid");
        let ng = config.ng.as_ref().expect("[ng]");
        for source in ["10.0.0.9", "::ffff:10.0.0.9", "2001:db8::5"] {
            assert!(ng.permits(source.parse().expect("ip")), "{source}");
        }
        // Loopback is not implied once the list names networks.
        for source in ["10.0.1.9", "127.0.0.1", "2001:db8:1::5"] {
            assert!(!ng.permits(source.parse().expect("ip")), "{source}");
        }
    }

    #[test]
    fn a_listener_other_hosts_reach_needs_an_allow_list() {
        let open = MEDIA_ONLY
            .replacen(
                "listen = \"127.0.0.1:2223\"",
                "listen = \"192.0.2.5:2223\"",
                1,
            )
            .replacen(
                "listen_tcp = \"127.0.0.1:2223\"",
                "listen_tcp = \"0.0.0.0:2223\"",
                1,
            );
        let p = problems(&open);
        assert_eq!(p.len(), 2, "{p:?}");
        assert_eq!((p[0].file.as_str(), p[0].line), ("ng.toml", 2));
        assert_eq!(p[0].field, "ng.listen");
        assert!(p[0].message.contains("192.0.2.5:2223"), "{p:?}");
        assert!(
            p[0].hint.as_deref().is_some_and(|h| h.contains("ng.allow")),
            "{p:?}"
        );
        assert_eq!((p[1].line, p[1].field.as_str()), (3, "ng.listen_tcp"));

        // Naming the proxies (or everyone, on purpose) makes it valid.
        for allow in ["[\"192.0.2.0/24\"]", "[\"0.0.0.0/0\", \"::/0\"]"] {
            let text = open.replacen(
                "max_sessions = 100\n",
                &format!("max_sessions = 100\nallow = {allow}\n"),
                1,
            );
            Config::from_str_named(&text, "ng.toml").unwrap_or_else(|e| panic!("{allow}: {e}"));
        }
        let p = problems(&open.replacen(
            "max_sessions = 100\n",
            "max_sessions = 100\nallow = [\"10.0.0.0/33\"]\n",
            1,
        ));
        assert_eq!(
            (p[0].line, p[0].field.as_str()),
            (6, "ng.allow[0]"),
            "{p:?}"
        );
    }
}
