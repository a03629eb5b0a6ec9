//! Round-trip properties of the SIP message layer on generated messages:
//! an unedited message prints byte-identical; parse -> print -> parse gives the
//! same message; an edit changes only what it names; and arbitrary bytes never
//! panic the parser, the verdict or the framer.

use proptest::prelude::*;
use sbc::sip::{self, HeaderName, Message};

/// Header values that are valid for any extension header: printable ASCII
/// without commas' special meaning mattering, plus UTF-8.
fn ext_value() -> impl Strategy<Value = String> {
    proptest::string::string_regex("[a-zA-Z0-9 ;=,.:@<>\"/+-]{0,40}|[äöü€ a-z]{1,10}")
        .expect("regex")
}

fn token() -> impl Strategy<Value = String> {
    proptest::string::string_regex("[a-zA-Z0-9][a-zA-Z0-9.!%*_+`'~-]{0,15}").expect("regex")
}

/// Separator between a name and its value: HCOLON allows whitespace on both
/// sides of the colon.
fn colon() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        Just(": "),
        Just(":"),
        Just(" : "),
        Just("\t:\t"),
        Just(":   ")
    ]
}

/// Line folding inside a value (it must survive printing untouched).
fn fold() -> impl Strategy<Value = &'static str> {
    prop_oneof![Just(" "), Just("\r\n "), Just("\r\n\t"), Just("  ")]
}

#[derive(Debug, Clone)]
struct Generated {
    bytes: Vec<u8>,
    extension_headers: usize,
}

fn message() -> impl Strategy<Value = Generated> {
    (
        prop_oneof![
            Just("INVITE"),
            Just("OPTIONS"),
            Just("BYE"),
            Just("MESSAGE"),
            Just("RESPONSE")
        ],
        prop_oneof![Just("Via"), Just("v"), Just("VIA")],
        prop_oneof![Just("From"), Just("f")],
        prop_oneof![Just("Call-ID"), Just("i"), Just("call-id")],
        colon(),
        fold(),
        token(),
        proptest::collection::vec((token(), colon(), ext_value()), 0..8),
        proptest::collection::vec(any::<u8>(), 0..64),
        1u32..100_000,
        prop_oneof![Just("\r\n"), Just("\n")],
    )
        .prop_map(
            |(method, via, from, call_id, colon, fold, tag, extensions, body, seq, eol)| {
                let mut m = String::new();
                let cseq_method = if method == "RESPONSE" {
                    "INVITE"
                } else {
                    method
                };
                if method == "RESPONSE" {
                    m.push_str(&format!("SIP/2.0 180 Ringing{eol}"));
                } else {
                    m.push_str(&format!("{method} sip:bob@biloxi.example.com SIP/2.0{eol}"));
                }
                m.push_str(&format!(
                    "{via}{colon}SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK{tag}{eol}"
                ));
                m.push_str(&format!("Max-Forwards{colon}70{eol}"));
                m.push_str(&format!(
                    "{from}{colon}Alice{fold}<sip:alice@atlanta.example.com>;tag={tag}{eol}"
                ));
                m.push_str(&format!("To{colon}<sip:bob@biloxi.example.com>{eol}"));
                m.push_str(&format!(
                    "{call_id}{colon}{tag}@pc33.atlanta.example.com{eol}"
                ));
                m.push_str(&format!("CSeq{colon}{seq}{fold}{cseq_method}{eol}"));
                let extension_headers = extensions.len();
                for (name, c, value) in &extensions {
                    // Prefix so the name never collides with a header we interpret.
                    m.push_str(&format!("X-{name}{c}{value}{eol}"));
                }
                m.push_str(&format!("Content-Length{colon}{}{eol}{eol}", body.len()));
                let mut bytes = m.into_bytes();
                bytes.extend_from_slice(&body);
                Generated {
                    bytes,
                    extension_headers,
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn unedited_messages_print_byte_identical(g in message()) {
        let msg = Message::parse(&g.bytes).map_err(|e| TestCaseError::fail(format!("{e}")))?;
        prop_assert_eq!(msg.to_bytes(), g.bytes.clone());
        let again = Message::parse(&msg.to_bytes()).map_err(|e| TestCaseError::fail(format!("{e}")))?;
        prop_assert_eq!(&again, &msg);
        prop_assert_eq!(
            msg.headers().filter(|h| h.name == HeaderName::Other).count(),
            g.extension_headers
        );
    }

    #[test]
    fn edits_change_only_what_they_name(g in message(), new_body in proptest::collection::vec(any::<u8>(), 0..80)) {
        let original = Message::parse(&g.bytes).map_err(|e| TestCaseError::fail(format!("{e}")))?;
        let mut msg = original.clone();
        msg.replace_vias(&[b"SIP/2.0/UDP 203.0.113.1:5060;branch=z9hG4bKsbc1".as_slice(), b"SIP/2.0/TCP 203.0.113.2;branch=z9hG4bKsbc2"]);
        msg.set_body(&new_body);
        msg.push_header("X-Added", b"yes");
        let printed = msg.to_bytes();
        let again = Message::parse(&printed).map_err(|e| TestCaseError::fail(format!("{e}: {}", String::from_utf8_lossy(&printed))))?;
        let branches: Vec<String> = again.vias().map(|v| v.expect("via").branch().unwrap_or_default().to_owned()).collect();
        prop_assert_eq!(branches, vec!["z9hG4bKsbc1".to_owned(), "z9hG4bKsbc2".to_owned()]);
        prop_assert_eq!(again.body(), new_body.as_slice());
        prop_assert_eq!(again.content_length(), Some(new_body.len() as u32));
        prop_assert_eq!(again.header(HeaderName::Other), original.header(HeaderName::Other).or(Some(b"yes".as_slice())));
        // Every header line that was not edited is still there, byte for byte.
        let text = printed.clone();
        for h in original.headers().filter(|h| !matches!(h.name, HeaderName::Via | HeaderName::ContentLength)) {
            let needle = [h.name_bytes].concat();
            prop_assert!(text.windows(needle.len()).any(|w| w == needle.as_slice()));
            prop_assert!(text.windows(h.value.len().max(1)).any(|w| h.value.is_empty() || w == h.value));
        }
        prop_assert_eq!(again.call_id(), original.call_id());
        prop_assert_eq!(again.cseq(), original.cseq());
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        match Message::parse(&bytes) {
            Ok(msg) => {
                let _ = sip::check(&msg, &sip::ServerPolicy::default());
                let printed = msg.to_bytes();
                let again = Message::parse(&printed).map_err(|e| TestCaseError::fail(format!("{e}")))?;
                prop_assert_eq!(again.to_bytes(), printed);
            }
            Err(e) => { let _ = e.response().to_string(); }
        }
        let mut framer = sip::StreamFramer::new(sip::Limits::default());
        framer.push(&bytes);
        while let Ok(Some(_)) = framer.next_frame() {}
    }

    #[test]
    fn mutated_messages_never_panic(g in message(), flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)) {
        let mut bytes = g.bytes.clone();
        for (at, byte) in flips {
            let i = at.index(bytes.len());
            bytes[i] = byte;
        }
        if let Ok(msg) = Message::parse(&bytes) {
            let _ = sip::check(&msg, &sip::ServerPolicy::default());
            let printed = msg.to_bytes();
            prop_assert!(Message::parse(&printed).is_ok());
        }
    }
}
