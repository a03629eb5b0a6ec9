//! The request an ICMP error quotes back (RFC 792; RFC 1812 §4.3.2.3: as
//! much of the offending datagram as fits in 576 bytes, so about 500 bytes of
//! SIP over IPv4, more over IPv6, RFC 4443 §3.1).
//!
//! An ICMP "port unreachable" is trivially forged: anyone who knows a peer's
//! address can send one that names it. What the forger cannot know is the
//! random branch the SBC put in the request's top Via (§8.1.1.7), and every
//! genuine ICMP error quotes it, since the SBC writes the Via right after the
//! request line. So a transport error fails only the client transaction whose
//! branch and method the quote names, never "everything sent there".

use super::header::Via;
use super::message::{HeaderLines, line_at};
use super::name::HeaderName;
use super::scan;

/// What names the client transaction (§17.1.3) of a quoted request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuotedRequest {
    /// The request method as written (a token).
    pub method: String,
    /// The branch of the top Via.
    pub branch: String,
}

/// Reads the method and top Via branch of a quoted, possibly truncated,
/// request. `None` for anything else: a response, a quote cut before the top
/// Via line ends, a Via without a branch. Allocates only the two strings of
/// a hit; never panics.
pub fn quoted_request(bytes: &[u8]) -> Option<QuotedRequest> {
    let (end, next) = line_at(bytes, 0)?;
    let line = &bytes[..end];
    let (method, after) = scan::token(line, 0)?;
    if line.get(after) != Some(&b' ') || !line.ends_with(b" SIP/2.0") {
        return None;
    }
    for header in HeaderLines::new(bytes, next) {
        let header = header.ok()?;
        if header.name != HeaderName::Via {
            continue;
        }
        // (A line the quote cut has no terminator, and HeaderLines stops
        // with an error before it: a truncated branch is never read.)
        let value = scan::split_values(&bytes[header.value.range()]).next()?;
        let via = Via::parse(value).ok()?;
        return Some(QuotedRequest {
            method: method.to_owned(),
            branch: via.branch()?.to_owned(),
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const INVITE: &[u8] = b"INVITE sip:bob@192.0.2.10:5060 SIP/2.0\r\n\
        Via: SIP/2.0/UDP 203.0.113.1:5060;branch=z9hG4bKabc123;rport\r\n\
        Via: SIP/2.0/UDP 198.51.100.7;branch=z9hG4bKother\r\n\
        Max-Forwards: 70\r\n\
        Call-ID: x\r\n";

    #[test]
    fn a_quote_names_the_top_via_branch_and_the_method() {
        assert_eq!(
            quoted_request(INVITE),
            Some(QuotedRequest {
                method: "INVITE".into(),
                branch: "z9hG4bKabc123".into(),
            })
        );
        let compact = b"OPTIONS sip:192.0.2.10 SIP/2.0\r\nv: SIP/2.0/UDP 203.0.113.1;branch=z9hG4bKp1, SIP/2.0/UDP 198.51.100.7;branch=z9hG4bKp2\r\n";
        assert_eq!(
            quoted_request(compact).map(|q| q.branch),
            Some("z9hG4bKp1".into())
        );
    }

    #[test]
    fn a_quote_cut_anywhere_before_the_top_via_ends_names_nothing() {
        let via_end = INVITE
            .windows(2)
            .enumerate()
            .filter(|(_, w)| w == b"\r\n")
            .nth(1)
            .map(|(i, _)| i + 1)
            .unwrap();
        for cut in 0..via_end {
            assert_eq!(quoted_request(&INVITE[..cut]), None, "cut at {cut}");
        }
        for cut in via_end + 1..=INVITE.len() {
            assert!(quoted_request(&INVITE[..cut]).is_some(), "cut at {cut}");
        }
    }

    #[test]
    fn responses_and_garbage_name_nothing() {
        assert_eq!(
            quoted_request(b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP a;branch=z9hG4bKx\r\n"),
            None
        );
        assert_eq!(
            quoted_request(b"INVITE sip:a SIP/2.0\r\nVia: SIP/2.0/UDP a\r\n"),
            None
        );
        assert_eq!(quoted_request(b"\x16\x03\x01\x02\x00"), None);
        assert_eq!(quoted_request(b""), None);
        assert_eq!(quoted_request(b"\r\n\r\n"), None);
    }
}
