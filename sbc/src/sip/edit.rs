//! The editor and printer: change only what you are told to.
//!
//! Edits never rewrite the received buffer. A changed piece (start line,
//! header value, body) is appended to the message's `added` buffer and its
//! location switched there; an untouched header keeps its original line,
//! folding, compact name and odd case included. Printing walks the pieces in
//! order and copies bytes, so an unedited message prints byte-identical to
//! what was received, and an edited one differs only where it was edited.
//!
//! Lines the editor writes use the message's own terminator (CRLF, or LF for
//! a peer that sent LF) and a single space after the colon. Editing never
//! re-validates: the caller builds values from typed, already-valid pieces.

use super::message::{Field, Loc, Message, Span, StartLine};
use super::name::HeaderName;

impl Message {
    fn add(&mut self, bytes: &[u8]) -> Loc {
        let start = self.added.len();
        self.added.extend_from_slice(bytes);
        Loc::Added(Span::new(start, self.added.len()))
    }

    /// Replaces the Request-URI (requests only; a response is left as is).
    pub fn set_request_uri(&mut self, uri: &[u8]) {
        if self.is_request() {
            self.third = self.add(uri);
            self.start_line = None;
        }
    }

    /// Replaces the status code and reason phrase of a response (a request
    /// is left as is). Codes outside 100..=699 are clamped into it.
    pub fn set_status(&mut self, code: u16, reason: &[u8]) {
        if let StartLine::Response { .. } = self.start {
            self.start = StartLine::Response {
                code: code.clamp(100, 699),
            };
            self.third = self.add(reason);
            self.start_line = None;
        }
    }

    /// Replaces the value of the header at `index` (in [`Message::headers`]
    /// order), keeping its name as written. Out-of-range indices are ignored.
    pub fn set_header(&mut self, index: usize, value: &[u8]) {
        if index < self.fields.len() {
            let value_at = self.add(value);
            let field = &mut self.fields[index];
            field.value_at = value_at;
            field.line = None;
        }
    }

    /// Inserts a header before `index` (`index == len` appends). `name` is
    /// printed as given and classified like a received name.
    pub fn insert_header(&mut self, index: usize, name: &str, value: &[u8]) {
        let index = index.min(self.fields.len());
        let name_at = self.add(name.as_bytes());
        let value_at = self.add(value);
        self.fields.insert(
            index,
            Field {
                name: HeaderName::from_bytes(name.as_bytes()),
                name_at,
                value_at,
                line: None,
            },
        );
    }

    /// Appends a header at the end of the header section.
    pub fn push_header(&mut self, name: &str, value: &[u8]) {
        self.insert_header(self.fields.len(), name, value);
    }

    /// Removes the header at `index`; out-of-range indices are ignored.
    pub fn remove_header(&mut self, index: usize) {
        if index < self.fields.len() {
            self.fields.remove(index);
        }
    }

    /// Removes every header with this name; returns how many were removed.
    pub fn remove_headers(&mut self, name: HeaderName) -> usize {
        let before = self.fields.len();
        self.fields.retain(|f| f.name != name);
        before - self.fields.len()
    }

    /// Keeps only the headers for which `keep` returns true (e.g. a
    /// topology-hiding allow list that looks at unknown names too).
    pub fn retain_headers(&mut self, mut keep: impl FnMut(super::message::Header<'_>) -> bool) {
        // Borrow the buffers and the field list separately, so no side table
        // of decisions is needed.
        let Message {
            buf, added, fields, ..
        } = self;
        fields.retain(|f| keep(Message::view_in(buf, added, f)));
    }

    /// Replaces the whole Via stack with `vias` (topmost first), one `Via`
    /// line each, where the first Via line was (or at the top).
    pub fn replace_vias(&mut self, vias: &[&[u8]]) {
        let at = self.position(HeaderName::Via).unwrap_or(0);
        self.remove_headers(HeaderName::Via);
        for (offset, via) in vias.iter().enumerate() {
            self.insert_header(at + offset, "Via", via);
        }
    }

    /// Replaces the body and sets Content-Length to its length (editing the
    /// existing Content-Length header in place, or adding one). Content-Type
    /// is the caller's business.
    pub fn set_body(&mut self, body: &[u8]) {
        self.body = self.add(body);
        let length = body.len().to_string();
        match self.position(HeaderName::ContentLength) {
            Some(index) => self.set_header(index, length.as_bytes()),
            None => self.push_header("Content-Length", length.as_bytes()),
        }
    }

    /// Appends the message's wire form to `out`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let eol: &[u8] = if self.crlf { b"\r\n" } else { b"\n" };
        out.reserve(self.buf.len() + self.added.len() + 16);
        match self.start_line {
            Some(span) => out.extend_from_slice(&self.buf[span.range()]),
            None => {
                match self.start {
                    StartLine::Request { .. } => {
                        out.extend_from_slice(&self.buf[self.first.range()]);
                        out.push(b' ');
                        out.extend_from_slice(self.bytes(self.third));
                        out.push(b' ');
                        out.extend_from_slice(&self.buf[self.second.range()]);
                    }
                    StartLine::Response { code } => {
                        out.extend_from_slice(&self.buf[self.first.range()]);
                        out.push(b' ');
                        push_status(out, code);
                        out.push(b' ');
                        out.extend_from_slice(self.bytes(self.third));
                    }
                }
                out.extend_from_slice(eol);
            }
        }
        for field in &self.fields {
            match field.line {
                Some(span) => out.extend_from_slice(&self.buf[span.range()]),
                None => {
                    out.extend_from_slice(self.bytes(field.name_at));
                    out.extend_from_slice(b": ");
                    out.extend_from_slice(self.bytes(field.value_at));
                    out.extend_from_slice(eol);
                }
            }
        }
        out.extend_from_slice(&self.buf[self.blank.range()]);
        out.extend_from_slice(self.body());
    }

    /// The message's wire form.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_to(&mut out);
        out
    }
}

/// Writes a three-digit status code (the parser and `set_status` keep codes
/// in 100..=699).
fn push_status(out: &mut Vec<u8>, code: u16) {
    out.extend_from_slice(&[
        b'0' + (code / 100) as u8,
        b'0' + (code / 10 % 10) as u8,
        b'0' + (code % 10) as u8,
    ]);
}

#[cfg(test)]
mod tests {
    use crate::sip::{HeaderName, Message};

    const INVITE: &str = "INVITE sip:bob@biloxi.example.com SIP/2.0\r\n\
v: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bKnashds8\r\n\
Max-Forwards: 70\r\n\
To: Bob <sip:bob@biloxi.example.com>\r\n\
f: Alice <sip:alice@atlanta.example.com>;tag=1928301774\r\n\
Call-ID: a84b4c76e66710\r\n\
CSeq: 314159 INVITE\r\n\
X-Internal: 10.1.2.3\r\n\
Subject: folded\r\n  across lines\r\n\
Content-Length: 4\r\n\r\nbody";

    fn parse(text: &str) -> Message {
        Message::parse(text.as_bytes()).expect("parses")
    }

    fn reparse(msg: &Message) -> Message {
        Message::parse(&msg.to_bytes())
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&msg.to_bytes())))
    }

    #[test]
    fn start_line_edits() {
        let mut msg = parse(INVITE);
        msg.set_request_uri(b"sip:+4930555@203.0.113.9;user=phone");
        let again = reparse(&msg);
        assert_eq!(
            again.request_uri_bytes(),
            Some(b"sip:+4930555@203.0.113.9;user=phone".as_slice())
        );
        assert!(
            msg.to_bytes()
                .ends_with(b"Subject: folded\r\n  across lines\r\nContent-Length: 4\r\n\r\nbody")
        );

        let mut response = parse(
            "SIP/2.0 180 Ringing\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nTo: <sip:b@h>;tag=2\r\nFrom: <sip:a@h>;tag=1\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n\r\n",
        );
        response.set_status(183, b"Session Progress");
        response.set_request_uri(b"sip:ignored@h");
        let again = reparse(&response);
        assert_eq!(again.status(), Some(183));
        assert_eq!(again.reason(), Some(b"Session Progress".as_slice()));
    }

    #[test]
    fn header_edits_keep_every_other_byte() {
        let mut msg = parse(INVITE);
        let contact_at = msg.position(HeaderName::CSeq).expect("CSeq") + 1;
        msg.insert_header(contact_at, "Contact", b"<sip:sbc@203.0.113.1>");
        let text = String::from_utf8(msg.to_bytes()).expect("ascii");
        assert!(
            text.contains("CSeq: 314159 INVITE\r\nContact: <sip:sbc@203.0.113.1>\r\nX-Internal"),
            "{text}"
        );
        // The compact From keeps its spelling when its value changes.
        let from = msg.position(HeaderName::From).expect("From");
        msg.set_header(from, b"<sip:anonymous@anonymous.invalid>;tag=sbc1");
        let text = String::from_utf8(msg.to_bytes()).expect("ascii");
        assert!(
            text.contains("\r\nf: <sip:anonymous@anonymous.invalid>;tag=sbc1\r\n"),
            "{text}"
        );
        assert!(
            text.contains("Subject: folded\r\n  across lines\r\n"),
            "folding kept: {text}"
        );
        assert_eq!(
            reparse(&msg)
                .from()
                .and_then(|f| f.tag().map(str::to_owned))
                .as_deref(),
            Some("sbc1")
        );
    }

    #[test]
    fn removing_and_filtering_headers() {
        let mut msg = parse(INVITE);
        assert_eq!(msg.remove_headers(HeaderName::Subject), 1);
        msg.retain_headers(|h| !h.name_bytes.starts_with(b"X-"));
        let text = String::from_utf8(msg.to_bytes()).expect("ascii");
        assert!(
            !text.contains("X-Internal") && !text.contains("10.1.2.3"),
            "{text}"
        );
        assert!(!text.contains("Subject"), "{text}");
        let again = reparse(&msg);
        assert_eq!(again.headers().count(), msg.headers().count());
        msg.remove_header(usize::MAX); // out of range: ignored
        msg.set_header(usize::MAX, b"x");
        assert_eq!(msg.to_bytes(), text.as_bytes());
    }

    #[test]
    fn replacing_the_via_stack_and_the_body() {
        let mut msg = parse(INVITE);
        msg.replace_vias(&[b"SIP/2.0/UDP 203.0.113.1;branch=z9hG4bKsbc".as_slice()]);
        msg.set_body(b"v=0\r\n");
        let again = reparse(&msg);
        let vias: Vec<String> = again
            .vias()
            .map(|v| v.expect("via").branch().unwrap_or_default().to_owned())
            .collect();
        assert_eq!(vias, ["z9hG4bKsbc"]);
        assert_eq!(again.body(), b"v=0\r\n");
        assert_eq!(again.content_length(), Some(5));
        // The new Via stands where the old one stood: right after the start line.
        assert!(
            msg.to_bytes()
                .starts_with(b"INVITE sip:bob@biloxi.example.com SIP/2.0\r\nVia: ")
        );
    }

    #[test]
    fn a_message_without_content_length_gets_one_with_its_new_body() {
        let mut msg = parse(&INVITE.replace("Content-Length: 4\r\n", ""));
        assert_eq!(msg.content_length(), None);
        msg.set_body(b"hello");
        let again = reparse(&msg);
        assert_eq!(
            (again.body(), again.content_length()),
            (b"hello".as_slice(), Some(5))
        );
    }

    #[test]
    fn lf_only_messages_get_lf_only_edits() {
        let lf = INVITE.replace("\r\n", "\n");
        let mut msg = parse(&lf);
        assert_eq!(msg.to_bytes(), lf.as_bytes());
        msg.push_header("X-Added", b"1");
        msg.set_request_uri(b"sip:carol@chicago.example.com");
        let out = msg.to_bytes();
        assert!(!out.contains(&b'\r'), "{}", String::from_utf8_lossy(&out));
        assert_eq!(
            reparse(&msg).header(HeaderName::Other),
            Some(b"10.1.2.3".as_slice())
        );
    }
}
