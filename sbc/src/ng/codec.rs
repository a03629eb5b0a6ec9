//! The ng wire format (pure): `<cookie> <dictionary>`, the dictionary in
//! bencode (first byte `d`) or JSON (first byte `{`), and the reply in the
//! encoding of the request.
//!
//! Bencode keys are accepted in any order (rtpengine's
//! `docs/ng_control_protocol.md`: "lexicographical order ... is currently not
//! honored", and Kamailio sends them unsorted). Every input is bounded
//! ([`Limits`]): a hostile or broken datagram is an error, never a panic, a
//! deep recursion or a large allocation.

use thiserror::Error;

/// One ng value. Strings are bytes (SDP may carry any octet).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    /// A bencode string, a JSON string, or a JSON number/boolean as text.
    Bytes(Vec<u8>),
    /// A bencode integer (`i42e`) or a JSON integer.
    Int(i64),
    /// A list.
    List(Vec<Value>),
    /// A dictionary, keys in the order they arrived.
    Dict(Vec<(Vec<u8>, Value)>),
}

impl Value {
    /// A string value.
    pub fn str(s: &str) -> Value {
        Value::Bytes(s.as_bytes().to_vec())
    }

    /// The value of `key` in a dictionary (the first one, if repeated).
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Dict(items) => items
                .iter()
                .find(|(k, _)| k.as_slice() == key.as_bytes())
                .map(|(_, v)| v),
            _ => None,
        }
    }

    /// The bytes of a string value.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Bytes(b) => Some(b),
            _ => None,
        }
    }

    /// A string value as UTF-8 text.
    pub fn as_str(&self) -> Option<&str> {
        self.as_bytes().and_then(|b| std::str::from_utf8(b).ok())
    }

    /// An integer, or a string of decimal digits (Kamailio sends
    /// `delete-delay` both ways).
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            Value::Bytes(b) => std::str::from_utf8(b).ok()?.trim().parse().ok(),
            _ => None,
        }
    }

    /// The items of a list.
    pub fn as_list(&self) -> Option<&[Value]> {
        match self {
            Value::List(l) => Some(l),
            _ => None,
        }
    }
}

/// How a request was encoded; the reply uses the same.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    /// Bencode (`d...e`).
    Bencode,
    /// JSON (`{...}`).
    Json,
}

/// Bounds on what a request may contain.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Bytes of a whole message (cookie, space and dictionary).
    pub max_message: usize,
    /// Nesting depth of lists and dictionaries (the top dictionary is 1).
    pub max_depth: usize,
    /// Values in the whole message, at any depth.
    pub max_items: usize,
    /// Bytes of the cookie.
    pub max_cookie: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            // rtpengine reads UDP datagrams up to 64 KiB; an SDP with a
            // dozen streams and ICE candidates stays well below.
            max_message: 65_535,
            max_depth: 8,
            max_items: 4096,
            max_cookie: 256,
        }
    }
}

/// Why a message could not be decoded. The reply to it (when a cookie was
/// found) is `result: error` with this text as `error-reason`.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum CodecError {
    /// No space separates a cookie from a dictionary.
    #[error("no cookie: a message is '<cookie> <dictionary>'")]
    NoCookie,
    /// The message is larger than [`Limits::max_message`] or the cookie than
    /// [`Limits::max_cookie`].
    #[error("message too large")]
    TooLarge,
    /// The dictionary starts with neither `d` (bencode) nor `{` (JSON).
    #[error("the dictionary is neither bencode nor JSON")]
    UnknownEncoding,
    /// Deeper than [`Limits::max_depth`] or more values than
    /// [`Limits::max_items`].
    #[error("too deeply nested or too many values")]
    TooComplex,
    /// Bencode that does not parse (at this byte offset of the dictionary).
    #[error("bad bencode at byte {0}")]
    Bencode(usize),
    /// JSON that does not parse, or a JSON value ng has no use for (null).
    #[error("bad JSON")]
    Json,
    /// The top level is not a dictionary, or bytes follow it.
    #[error("the message is not one dictionary")]
    NotDictionary,
}

/// A decoded request: its cookie, its dictionary, and how it was encoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decoded<'a> {
    /// The cookie, echoed in the reply.
    pub cookie: &'a [u8],
    /// The top-level dictionary ([`Value::Dict`]).
    pub dict: Value,
    /// Its encoding.
    pub encoding: Encoding,
}

/// The cookie of `message`, if it has one (for an error reply to a message
/// whose dictionary does not decode).
pub fn cookie<'a>(message: &'a [u8], limits: &Limits) -> Option<&'a [u8]> {
    let space = memchr::memchr(b' ', message)?;
    (space > 0 && space <= limits.max_cookie).then(|| &message[..space])
}

/// Splits and decodes one ng message.
pub fn decode<'a>(message: &'a [u8], limits: &Limits) -> Result<Decoded<'a>, CodecError> {
    if message.len() > limits.max_message {
        return Err(CodecError::TooLarge);
    }
    let space = memchr::memchr(b' ', message).ok_or(CodecError::NoCookie)?;
    if space == 0 {
        return Err(CodecError::NoCookie);
    }
    if space > limits.max_cookie {
        return Err(CodecError::TooLarge);
    }
    let cookie = &message[..space];
    let body = &message[space + 1..];
    let (dict, encoding) = match body.first() {
        Some(b'd') => {
            let mut parser = Bencode {
                input: body,
                at: 0,
                items: 0,
                limits,
            };
            let value = parser.value(1)?;
            // A trailing newline (netcat, TCP tools) is tolerated.
            if body[parser.at..].iter().any(|b| !b.is_ascii_whitespace()) {
                return Err(CodecError::NotDictionary);
            }
            (value, Encoding::Bencode)
        }
        Some(b'{') => {
            let json: serde_json::Value =
                serde_json::from_slice(body).map_err(|_| CodecError::Json)?;
            let mut items = 0;
            (from_json(&json, 1, &mut items, limits)?, Encoding::Json)
        }
        _ => return Err(CodecError::UnknownEncoding),
    };
    if !matches!(dict, Value::Dict(_)) {
        return Err(CodecError::NotDictionary);
    }
    Ok(Decoded {
        cookie,
        dict,
        encoding,
    })
}

struct Bencode<'a, 'l> {
    input: &'a [u8],
    at: usize,
    items: usize,
    limits: &'l Limits,
}

impl Bencode<'_, '_> {
    fn value(&mut self, depth: usize) -> Result<Value, CodecError> {
        self.items += 1;
        if depth > self.limits.max_depth || self.items > self.limits.max_items {
            return Err(CodecError::TooComplex);
        }
        match self.input.get(self.at) {
            Some(b'd') => {
                self.at += 1;
                let mut items = Vec::new();
                loop {
                    match self.input.get(self.at) {
                        Some(b'e') => {
                            self.at += 1;
                            return Ok(Value::Dict(items));
                        }
                        Some(b'0'..=b'9') => {
                            let key = self.string()?;
                            let value = self.value(depth + 1)?;
                            items.push((key, value));
                        }
                        _ => return Err(CodecError::Bencode(self.at)),
                    }
                }
            }
            Some(b'l') => {
                self.at += 1;
                let mut items = Vec::new();
                loop {
                    if self.input.get(self.at) == Some(&b'e') {
                        self.at += 1;
                        return Ok(Value::List(items));
                    }
                    items.push(self.value(depth + 1)?);
                }
            }
            Some(b'i') => {
                self.at += 1;
                let end = memchr::memchr(b'e', &self.input[self.at..])
                    .ok_or(CodecError::Bencode(self.at))?;
                let text = std::str::from_utf8(&self.input[self.at..self.at + end])
                    .map_err(|_| CodecError::Bencode(self.at))?;
                let n = text.parse().map_err(|_| CodecError::Bencode(self.at))?;
                self.at += end + 1;
                Ok(Value::Int(n))
            }
            Some(b'0'..=b'9') => self.string().map(Value::Bytes),
            _ => Err(CodecError::Bencode(self.at)),
        }
    }

    fn string(&mut self) -> Result<Vec<u8>, CodecError> {
        let start = self.at;
        let colon = memchr::memchr(b':', &self.input[start..]).ok_or(CodecError::Bencode(start))?;
        let digits = &self.input[start..start + colon];
        if digits.is_empty() || digits.len() > 7 || !digits.iter().all(u8::is_ascii_digit) {
            return Err(CodecError::Bencode(start));
        }
        let len: usize = std::str::from_utf8(digits)
            .ok()
            .and_then(|d| d.parse().ok())
            .ok_or(CodecError::Bencode(start))?;
        let from = start + colon + 1;
        let to = from.checked_add(len).ok_or(CodecError::Bencode(start))?;
        let bytes = self.input.get(from..to).ok_or(CodecError::Bencode(start))?;
        self.at = to;
        Ok(bytes.to_vec())
    }
}

fn from_json(
    json: &serde_json::Value,
    depth: usize,
    items: &mut usize,
    limits: &Limits,
) -> Result<Value, CodecError> {
    *items += 1;
    if depth > limits.max_depth || *items > limits.max_items {
        return Err(CodecError::TooComplex);
    }
    Ok(match json {
        serde_json::Value::Null => return Err(CodecError::Json),
        serde_json::Value::Bool(b) => Value::Bytes(if *b {
            b"true".to_vec()
        } else {
            b"false".to_vec()
        }),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => Value::Int(i),
            None => Value::Bytes(n.to_string().into_bytes()),
        },
        serde_json::Value::String(s) => Value::Bytes(s.as_bytes().to_vec()),
        serde_json::Value::Array(list) => Value::List(
            list.iter()
                .map(|v| from_json(v, depth + 1, items, limits))
                .collect::<Result<_, _>>()?,
        ),
        serde_json::Value::Object(map) => Value::Dict(
            map.iter()
                .map(|(k, v)| {
                    Ok((
                        k.as_bytes().to_vec(),
                        from_json(v, depth + 1, items, limits)?,
                    ))
                })
                .collect::<Result<_, CodecError>>()?,
        ),
    })
}

/// `<cookie> <value>` in `encoding`.
pub fn encode(cookie: &[u8], value: &Value, encoding: Encoding) -> Vec<u8> {
    let mut out = Vec::with_capacity(cookie.len() + 64);
    out.extend_from_slice(cookie);
    out.push(b' ');
    match encoding {
        Encoding::Bencode => bencode(value, &mut out),
        Encoding::Json => {
            let json = to_json(value);
            // Serialising a Value we built can't fail.
            out.extend_from_slice(json.to_string().as_bytes());
        }
    }
    out
}

fn bencode(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Bytes(b) => {
            out.extend_from_slice(b.len().to_string().as_bytes());
            out.push(b':');
            out.extend_from_slice(b);
        }
        Value::Int(i) => {
            out.push(b'i');
            out.extend_from_slice(i.to_string().as_bytes());
            out.push(b'e');
        }
        Value::List(items) => {
            out.push(b'l');
            items.iter().for_each(|v| bencode(v, out));
            out.push(b'e');
        }
        Value::Dict(items) => {
            out.push(b'd');
            for (k, v) in items {
                bencode(&Value::Bytes(k.clone()), out);
                bencode(v, out);
            }
            out.push(b'e');
        }
    }
}

fn to_json(value: &Value) -> serde_json::Value {
    match value {
        Value::Bytes(b) => serde_json::Value::String(String::from_utf8_lossy(b).into_owned()),
        Value::Int(i) => serde_json::Value::from(*i),
        Value::List(items) => serde_json::Value::Array(items.iter().map(to_json).collect()),
        Value::Dict(items) => serde_json::Value::Object(
            items
                .iter()
                .map(|(k, v)| (String::from_utf8_lossy(k).into_owned(), to_json(v)))
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits::default()
    }

    #[test]
    fn the_documented_ping_round_trips() {
        let d = decode(b"5323_1 d7:command4:pinge", &limits()).expect("decodes");
        assert_eq!(d.cookie, b"5323_1");
        assert_eq!(d.encoding, Encoding::Bencode);
        assert_eq!(d.dict.get("command").and_then(Value::as_str), Some("ping"));
        let reply = Value::Dict(vec![(b"result".to_vec(), Value::str("pong"))]);
        assert_eq!(
            encode(d.cookie, &reply, Encoding::Bencode),
            b"5323_1 d6:result4:ponge"
        );
    }

    #[test]
    fn json_is_detected_by_its_first_byte() {
        let d = decode(
            br#"c1 {"command":"offer","flags":["trust-address"],"delete-delay":3}"#,
            &limits(),
        )
        .expect("decodes");
        assert_eq!(d.encoding, Encoding::Json);
        assert_eq!(d.dict.get("delete-delay").and_then(Value::as_int), Some(3));
        let reply = Value::Dict(vec![(b"result".to_vec(), Value::str("pong"))]);
        assert_eq!(
            encode(b"c1", &reply, Encoding::Json),
            br#"c1 {"result":"pong"}"#
        );
    }

    #[test]
    fn unsorted_keys_and_binary_strings_decode() {
        let d = decode(b"x d3:zzz1:\x001:ai-7ee", &limits()).expect("decodes");
        assert_eq!(
            d.dict.get("zzz").and_then(Value::as_bytes),
            Some(&b"\0"[..])
        );
        assert_eq!(d.dict.get("a").and_then(Value::as_int), Some(-7));
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        let l = limits();
        let cases: &[(&[u8], CodecError)] = &[
            (b"nocookie", CodecError::NoCookie),
            (b" d4:spame", CodecError::NoCookie),
            (b"c x", CodecError::UnknownEncoding),
            (b"c d", CodecError::Bencode(1)),
            (b"c d3:abc", CodecError::Bencode(6)),
            (b"c d99999999:x", CodecError::Bencode(1)),
            (b"c d9:abce", CodecError::Bencode(1)),
            (b"c d1:ai1x", CodecError::Bencode(5)),
            (b"c d1:ale", CodecError::Bencode(6)),
            (b"c d1:a1:bejunk", CodecError::NotDictionary),
            (b"c {\"a\":", CodecError::Json),
            (b"c {\"a\":null}", CodecError::Json),
        ];
        for (input, want) in cases {
            assert_eq!(
                decode(input, &l).map(|_| ()),
                Err(want.clone()),
                "{}",
                String::from_utf8_lossy(input)
            );
        }
        // A list at the top is not a request.
        assert!(decode(b"c l1:ae", &l).is_err());
    }

    #[test]
    fn nesting_and_size_are_bounded() {
        let l = limits();
        let deep = format!("c d1:a{}{}e", "l".repeat(10_000), "e".repeat(10_000));
        assert_eq!(
            decode(deep.as_bytes(), &l).map(|_| ()),
            Err(CodecError::TooComplex)
        );
        let deep_json = format!("c {{\"a\":{}{}}}", "[".repeat(20), "]".repeat(20));
        assert_eq!(
            decode(deep_json.as_bytes(), &l).map(|_| ()),
            Err(CodecError::TooComplex)
        );
        let wide = format!("c d1:al{}ee", "i1e".repeat(5000));
        assert_eq!(
            decode(wide.as_bytes(), &l).map(|_| ()),
            Err(CodecError::TooComplex)
        );
        let big = vec![b'x'; 70_000];
        assert_eq!(decode(&big, &l).map(|_| ()), Err(CodecError::TooLarge));
        let long_cookie = format!("{} d1:a1:be", "c".repeat(300));
        assert_eq!(
            decode(long_cookie.as_bytes(), &l).map(|_| ()),
            Err(CodecError::TooLarge)
        );
        assert_eq!(cookie(long_cookie.as_bytes(), &l), None);
    }

    #[test]
    fn every_truncation_of_a_real_offer_fails_cleanly() {
        let offer = include_bytes!("fixtures/kamailio-5.6/offer.bin");
        assert!(decode(offer, &limits()).is_ok());
        for end in 0..offer.len() {
            assert!(decode(&offer[..end], &limits()).is_err(), "prefix {end}");
        }
    }
}
