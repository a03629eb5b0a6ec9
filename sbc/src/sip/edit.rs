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
        let keep: Vec<bool> = self.fields.iter().map(|f| keep(self.view(f))).collect();
        let mut flags = keep.into_iter();
        self.fields.retain(|_| flags.next().unwrap_or(true));
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
