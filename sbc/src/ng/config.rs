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
}
