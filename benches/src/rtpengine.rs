//! rtpengine (Sipwise's media proxy) as a comparison point for the relay
//! benchmark: the daemon run as a child process in userspace-only
//! forwarding, and a client for its ng control protocol.
//!
//! Owns: the child process, which is killed and reaped when the
//! [`Rtpengine`] value drops (also while a panicking bench unwinds); the ng
//! client (a "cookie bencode-dictionary" datagram per request over UDP on
//! loopback, retransmitted with the same cookie until answered); the reading
//! of the process's CPU time from `/proc`. The bencode codec and the SDP
//! helpers are pure and unit-tested here.
//!
//! It may not choose addresses or ports for the bench (the caller passes
//! them), and it never talks to anything but the child it started.
//! `benches/scripts/install-rtpengine.sh` installs the daemon.

use std::fmt::Write as _;
use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use ::tests::lab::Net;

/// Why driving rtpengine failed.
#[derive(Debug, thiserror::Error)]
pub enum RtpengineError {
    /// No rtpengine binary where we looked.
    #[error("rtpengine not installed: run benches/scripts/install-rtpengine.sh")]
    NotInstalled,
    /// The binary exists but could not be started.
    #[error("starting {binary} failed: {source}")]
    Spawn {
        /// The binary we ran.
        binary: String,
        /// What the OS said.
        source: io::Error,
    },
    /// The daemon exited before it answered a ping.
    #[error("rtpengine exited during start-up with {status}; its log ends:\n{log_tail}")]
    Exited {
        /// How it exited.
        status: ExitStatus,
        /// The last lines of its log, which say why.
        log_tail: String,
    },
    /// The daemon did not answer on its ng port in time.
    #[error("rtpengine did not answer `{command}` on {ng} within {waited:?}")]
    NoAnswer {
        /// The ng command that went unanswered.
        command: String,
        /// The control address we sent it to.
        ng: SocketAddr,
        /// How long we retransmitted.
        waited: Duration,
    },
    /// A socket operation on the control socket failed.
    #[error("ng control socket: {0}")]
    Io(#[from] io::Error),
    /// A reply was not a bencoded dictionary.
    #[error("malformed ng reply: {0}")]
    Malformed(#[from] BencodeError),
    /// rtpengine answered `result: error`.
    #[error("rtpengine refused `{command}`: {reason}")]
    Refused {
        /// The ng command it refused.
        command: String,
        /// Its `error-reason`.
        reason: String,
    },
    /// The SDP rtpengine returned has no `c=`/`m=audio` we can send to.
    #[error("rtpengine's SDP for `{command}` names no audio address: {sdp:?}")]
    NoMedia {
        /// The ng command whose reply it was.
        command: String,
        /// The SDP it returned.
        sdp: String,
    },
}

/// Why a byte string is not bencode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BencodeError {
    /// The input ended inside a value.
    #[error("input ends inside a value")]
    Truncated,
    /// An unexpected byte at this offset.
    #[error("unexpected byte at offset {0}")]
    Unexpected(usize),
    /// A length or integer that does not fit, at this offset.
    #[error("number out of range at offset {0}")]
    Number(usize),
    /// Lists/dictionaries nested deeper than we accept.
    #[error("nested too deeply")]
    TooDeep,
    /// Bytes after the first complete value.
    #[error("trailing bytes after the value")]
    Trailing,
}

/// A bencode value (the ng protocol's dictionary format).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bencode {
    /// `i<n>e`
    Int(i64),
    /// `<len>:<bytes>`
    Bytes(Vec<u8>),
    /// `l...e`
    List(Vec<Bencode>),
    /// `d...e`, in the order given (rtpengine does not require sorted keys).
    Dict(Vec<(Vec<u8>, Bencode)>),
}

const MAX_DEPTH: usize = 32;

impl Bencode {
    /// A byte string from text.
    pub fn str(s: &str) -> Self {
        Self::Bytes(s.as_bytes().to_vec())
    }

    /// A list of byte strings from text.
    pub fn strs(items: &[&str]) -> Self {
        Self::List(items.iter().map(|s| Self::str(s)).collect())
    }

    /// A dictionary from text keys.
    pub fn dict(pairs: Vec<(&str, Bencode)>) -> Self {
        Self::Dict(
            pairs
                .into_iter()
                .map(|(k, v)| (k.as_bytes().to_vec(), v))
                .collect(),
        )
    }

    /// Append the encoding of `self` to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Self::Int(n) => out.extend_from_slice(format!("i{n}e").as_bytes()),
            Self::Bytes(b) => {
                out.extend_from_slice(format!("{}:", b.len()).as_bytes());
                out.extend_from_slice(b);
            }
            Self::List(items) => {
                out.push(b'l');
                for item in items {
                    item.encode(out);
                }
                out.push(b'e');
            }
            Self::Dict(pairs) => {
                out.push(b'd');
                for (k, v) in pairs {
                    Self::Bytes(k.clone()).encode(out);
                    v.encode(out);
                }
                out.push(b'e');
            }
        }
    }

    /// Decode exactly one value spanning all of `input`.
    pub fn decode(input: &[u8]) -> Result<Self, BencodeError> {
        let mut pos = 0;
        let value = Self::parse(input, &mut pos, 0)?;
        if pos == input.len() {
            Ok(value)
        } else {
            Err(BencodeError::Trailing)
        }
    }

    fn parse(input: &[u8], pos: &mut usize, depth: usize) -> Result<Self, BencodeError> {
        if depth > MAX_DEPTH {
            return Err(BencodeError::TooDeep);
        }
        let start = *pos;
        match *input.get(start).ok_or(BencodeError::Truncated)? {
            b'i' => {
                let end = find(input, start + 1, b'e')?;
                let text = std::str::from_utf8(&input[start + 1..end])
                    .map_err(|_| BencodeError::Unexpected(start + 1))?;
                let n = text.parse().map_err(|_| BencodeError::Number(start + 1))?;
                *pos = end + 1;
                Ok(Self::Int(n))
            }
            b'l' | b'd' => {
                let is_dict = input[start] == b'd';
                *pos += 1;
                let mut items = Vec::new();
                let mut pairs = Vec::new();
                loop {
                    if *input.get(*pos).ok_or(BencodeError::Truncated)? == b'e' {
                        *pos += 1;
                        break;
                    }
                    if is_dict {
                        let key_at = *pos;
                        let Self::Bytes(key) = Self::parse(input, pos, depth + 1)? else {
                            return Err(BencodeError::Unexpected(key_at));
                        };
                        pairs.push((key, Self::parse(input, pos, depth + 1)?));
                    } else {
                        items.push(Self::parse(input, pos, depth + 1)?);
                    }
                }
                Ok(if is_dict {
                    Self::Dict(pairs)
                } else {
                    Self::List(items)
                })
            }
            b'0'..=b'9' => {
                let colon = find(input, start, b':')?;
                let len: usize = std::str::from_utf8(&input[start..colon])
                    .ok()
                    .and_then(|t| t.parse().ok())
                    .ok_or(BencodeError::Number(start))?;
                let end = (colon + 1)
                    .checked_add(len)
                    .ok_or(BencodeError::Number(start))?;
                let bytes = input.get(colon + 1..end).ok_or(BencodeError::Truncated)?;
                *pos = end;
                Ok(Self::Bytes(bytes.to_vec()))
            }
            _ => Err(BencodeError::Unexpected(start)),
        }
    }

    /// The value under `key`, if `self` is a dictionary holding it.
    pub fn get(&self, key: &str) -> Option<&Self> {
        match self {
            Self::Dict(pairs) => pairs
                .iter()
                .find(|(k, _)| k == key.as_bytes())
                .map(|(_, v)| v),
            _ => None,
        }
    }

    /// The text of a byte string value.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::Bytes(b) => std::str::from_utf8(b).ok(),
            _ => None,
        }
    }
}

fn find(input: &[u8], from: usize, byte: u8) -> Result<usize, BencodeError> {
    input
        .get(from..)
        .and_then(|rest| rest.iter().position(|&b| b == byte))
        .map(|i| from + i)
        .ok_or(BencodeError::Truncated)
}

/// A minimal audio SDP (PCMU, 20 ms, plain RTP/AVP, no ICE) for an endpoint
/// that sends and receives RTP at `rtp`.
pub fn audio_sdp(rtp: SocketAddr) -> String {
    let (family, ip) = match rtp.ip() {
        IpAddr::V4(ip) => ("IP4", ip.to_string()),
        IpAddr::V6(ip) => ("IP6", ip.to_string()),
    };
    let mut sdp = String::new();
    // Writing to a String cannot fail.
    let _ = write!(
        sdp,
        "v=0\r\no=- 1 1 IN {family} {ip}\r\ns=-\r\nc=IN {family} {ip}\r\nt=0 0\r\n\
         m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=ptime:20\r\na=sendrecv\r\n",
        port = rtp.port()
    );
    sdp
}

/// The RTP address of the first audio stream of `sdp`: the port of its
/// `m=audio` line and the `c=` address that applies to it (the media-level
/// one if present, else the session-level one).
pub fn audio_address(sdp: &str) -> Option<SocketAddr> {
    let mut session_c = None;
    let mut port = None;
    let mut media_c = None;
    let mut in_audio = false;
    for line in sdp.lines().map(str::trim_end) {
        if let Some(m) = line.strip_prefix("m=") {
            if port.is_some() {
                break; // the next media section
            }
            let mut fields = m.split_whitespace();
            if fields.next() == Some("audio") {
                port = fields.next().and_then(|p| p.parse::<u16>().ok());
                in_audio = port.is_some();
            }
        } else if let Some(c) = line.strip_prefix("c=") {
            let ip = c.split_whitespace().nth(2).and_then(|a| a.parse().ok());
            if in_audio {
                media_c = ip;
            } else if port.is_none() {
                session_c = ip;
            }
        }
    }
    Some(SocketAddr::new(media_c.or(session_c)?, port?))
}

/// How to start the daemon.
#[derive(Debug, Clone)]
pub struct Options {
    /// The binary (a path, or a name looked up in `PATH`).
    pub binary: String,
    /// Where it listens for the ng protocol (UDP).
    pub ng: SocketAddr,
    /// Named media interfaces: (name, local address).
    pub interfaces: Vec<(String, IpAddr)>,
    /// Its media port range, inclusive.
    pub ports: (u16, u16),
    /// Worker threads (`--num-threads`): the threads that move packets.
    pub threads: u32,
    /// Seconds a deleted call is kept (`--delete-delay`); rtpengine's
    /// default (30) when `None`.
    pub delete_delay: Option<u32>,
    /// Log level (syslog levels: 3 errors ... 7 debug).
    pub log_level: u8,
    /// The file its stderr (where it logs) goes to. A file, not the bench's
    /// own stderr: an overloaded rtpengine logs an error per socket that
    /// fell behind, thousands of lines.
    pub log: PathBuf,
}

impl Options {
    /// The command line: userspace-only forwarding, foreground, no config
    /// file, logs on stderr.
    pub fn args(&self) -> Vec<String> {
        let mut args = vec![
            "--config-file=none".to_owned(),
            // A negative table: no kernel forwarding at all, so no attempt to
            // open /proc/rtpengine and no fallback decision to make.
            "--table=-1".to_owned(),
            "--foreground".to_owned(),
            "--log-stderr".to_owned(),
            format!("--log-level={}", self.log_level),
            format!("--listen-ng={}", self.ng),
            format!("--port-min={}", self.ports.0),
            format!("--port-max={}", self.ports.1),
            format!("--num-threads={}", self.threads),
            // No media playback threads: the bench plays no media.
            "--media-num-threads=0".to_owned(),
            // Calls outlive a bench run (default 60 s) so no timeout fires
            // inside the window; the process is killed afterwards anyway.
            "--timeout=600".to_owned(),
        ];
        if let Some(secs) = self.delete_delay {
            args.push(format!("--delete-delay={secs}"));
        }
        for (name, ip) in &self.interfaces {
            args.push(format!("--interface={name}/{ip}"));
        }
        args
    }
}

/// The version line of the rtpengine at `binary`, or
/// [`RtpengineError::NotInstalled`] if there is none.
pub fn version(binary: &str) -> Result<String, RtpengineError> {
    let output = Command::new(binary)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .map_err(|source| match source.kind() {
            io::ErrorKind::NotFound => RtpengineError::NotInstalled,
            _ => RtpengineError::Spawn {
                binary: binary.to_owned(),
                source,
            },
        })?;
    // It prints the version on stderr.
    let text = [output.stdout, output.stderr].concat();
    Ok(String::from_utf8_lossy(&text).trim().to_owned())
}

#[allow(clippy::disallowed_methods)] // driving a child process is an IO shell
fn now() -> Instant {
    Instant::now()
}

/// A running rtpengine child and an ng client talking to it.
#[derive(Debug)]
pub struct Rtpengine {
    child: Child,
    control: UdpSocket,
    ng: SocketAddr,
    log: PathBuf,
    next_cookie: u64,
}

impl Rtpengine {
    /// Start the daemon and wait (up to 10 s) until it answers a ping.
    pub fn start(options: &Options) -> Result<Self, RtpengineError> {
        Self::start_in(None, options)
    }

    /// [`start`](Self::start) inside `net` when given (the daemon and the
    /// control socket both live there).
    pub fn start_in(net: Option<&Net>, options: &Options) -> Result<Self, RtpengineError> {
        let log = std::fs::File::create(&options.log)?;
        let child = net
            .map_or_else(
                || Command::new(&options.binary),
                |net| net.command(&options.binary),
            )
            .args(options.args())
            .stdin(Stdio::null())
            // Option errors go to stdout, logs to stderr: both to the file.
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|source| match source.kind() {
                io::ErrorKind::NotFound => RtpengineError::NotInstalled,
                _ => RtpengineError::Spawn {
                    binary: options.binary.clone(),
                    source,
                },
            })?;
        let local = SocketAddr::new(options.ng.ip(), 0);
        let control = match net {
            Some(net) => net.udp_socket(local),
            None => UdpSocket::bind(local)?,
        };
        // Connected: only the daemon's replies arrive, and a port nobody
        // listens on yet shows as a refused receive.
        control.connect(options.ng)?;
        control.set_read_timeout(Some(Duration::from_millis(100)))?;
        let mut engine = Self {
            child,
            control,
            ng: options.ng,
            log: options.log.clone(),
            next_cookie: 0,
        };
        let deadline = now() + Duration::from_secs(10);
        loop {
            if let Some(status) = engine.child.try_wait()? {
                let log = std::fs::read_to_string(&engine.log).unwrap_or_default();
                let lines: Vec<&str> = log.lines().collect();
                let log_tail = lines[lines.len().saturating_sub(10)..].join("\n");
                return Err(RtpengineError::Exited { status, log_tail });
            }
            match engine.request_once(&Bencode::dict(vec![("command", Bencode::str("ping"))])) {
                Ok(Some(reply))
                    if reply.get("result").and_then(Bencode::as_str) == Some("pong") =>
                {
                    return Ok(engine);
                }
                Ok(_) | Err(RtpengineError::Io(_)) if now() < deadline => {
                    // Not listening yet (ICMP port unreachable shows as a
                    // refused receive) or no reply yet.
                    std::thread::sleep(Duration::from_millis(50));
                }
                Ok(_) => {
                    return Err(RtpengineError::NoAnswer {
                        command: "ping".to_owned(),
                        ng: engine.ng,
                        waited: Duration::from_secs(10),
                    });
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The process id of the daemon.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The file it logs to.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// Send one request, wait up to the socket's timeout for its reply.
    fn request_once(&mut self, request: &Bencode) -> Result<Option<Bencode>, RtpengineError> {
        self.next_cookie += 1;
        let cookie = format!("{}_{}", std::process::id(), self.next_cookie);
        self.exchange(&cookie, request)
    }

    fn exchange(&self, cookie: &str, request: &Bencode) -> Result<Option<Bencode>, RtpengineError> {
        let mut datagram = format!("{cookie} ").into_bytes();
        request.encode(&mut datagram);
        self.control.send(&datagram)?;
        let mut buf = vec![0u8; 65536];
        loop {
            let n = match self.control.recv(&mut buf) {
                Ok(n) => n,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Ok(None);
                }
                Err(e) => return Err(e.into()),
            };
            let reply = &buf[..n];
            // A late reply to an earlier cookie is skipped.
            if let Some(body) = reply
                .strip_prefix(cookie.as_bytes())
                .and_then(|r| r.strip_prefix(b" "))
            {
                return Ok(Some(Bencode::decode(body)?));
            }
        }
    }

    /// Send `request` and return its `result: ok` reply, retransmitting with
    /// the same cookie (rtpengine answers a retransmission from its cache)
    /// for up to 5 s.
    pub fn request(&mut self, request: &Bencode) -> Result<Bencode, RtpengineError> {
        let command = request
            .get("command")
            .and_then(Bencode::as_str)
            .unwrap_or("?")
            .to_owned();
        self.next_cookie += 1;
        let cookie = format!("{}_{}", std::process::id(), self.next_cookie);
        let waited = Duration::from_secs(5);
        let deadline = now() + waited;
        while now() < deadline {
            let Some(reply) = self.exchange(&cookie, request)? else {
                continue;
            };
            return match reply.get("result").and_then(Bencode::as_str) {
                Some("ok") => Ok(reply),
                _ => Err(RtpengineError::Refused {
                    command,
                    reason: reply
                        .get("error-reason")
                        .and_then(Bencode::as_str)
                        .unwrap_or("(no error-reason)")
                        .to_owned(),
                }),
            };
        }
        Err(RtpengineError::NoAnswer {
            command,
            ng: self.ng,
            waited,
        })
    }

    /// `offer` (when `to_tag` is `None`) or `answer`: plain RTP/AVP
    /// relaying, ICE removed, origin and session `c=` replaced, default
    /// (symmetric, learning) latching. Returns the address the other side
    /// must send RTP to, from the SDP rtpengine gives back.
    pub fn offer_answer(
        &mut self,
        call_id: &str,
        from_tag: &str,
        to_tag: Option<&str>,
        sdp: &str,
        direction: Option<[&str; 2]>,
    ) -> Result<SocketAddr, RtpengineError> {
        let command = if to_tag.is_some() { "answer" } else { "offer" };
        let mut pairs = vec![
            ("command", Bencode::str(command)),
            ("call-id", Bencode::str(call_id)),
            ("from-tag", Bencode::str(from_tag)),
            ("sdp", Bencode::str(sdp)),
            ("ICE", Bencode::str("remove")),
            ("replace", Bencode::strs(&["origin", "session-connection"])),
            ("transport-protocol", Bencode::str("RTP/AVP")),
        ];
        if let Some(to_tag) = to_tag {
            pairs.push(("to-tag", Bencode::str(to_tag)));
        }
        if let Some(direction) = direction {
            pairs.push(("direction", Bencode::strs(&direction)));
        }
        let reply = self.request(&Bencode::dict(pairs))?;
        let sdp = reply
            .get("sdp")
            .and_then(Bencode::as_str)
            .unwrap_or_default();
        audio_address(sdp).ok_or_else(|| RtpengineError::NoMedia {
            command: command.to_owned(),
            sdp: sdp.to_owned(),
        })
    }

    /// CPU time of every thread of the daemon (user + system, from each
    /// thread's `schedstat`, nanosecond resolution): (thread id, name,
    /// time). Threads that exited are not listed; rtpengine's live as long
    /// as the process.
    pub fn thread_cpu(&self) -> Option<Vec<(u32, String, Duration)>> {
        let dir = format!("/proc/{}/task", self.child.id());
        let mut threads = Vec::new();
        for entry in std::fs::read_dir(dir).ok()? {
            let path = entry.ok()?.path();
            let Some(tid) = path.file_name().and_then(|n| n.to_str()?.parse().ok()) else {
                continue;
            };
            let Ok(schedstat) = std::fs::read_to_string(path.join("schedstat")) else {
                continue; // exited between the listing and the read
            };
            let ns = schedstat.split_whitespace().next()?.parse().ok()?;
            let name = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
            threads.push((tid, name.trim().to_owned(), Duration::from_nanos(ns)));
        }
        Some(threads)
    }
}

impl Drop for Rtpengine {
    fn drop(&mut self) {
        // SIGKILL and reap: nothing of the daemon's state is worth a clean
        // shutdown, and a panicking bench must not leave it running.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bencode_round_trips_an_ng_request() {
        let request = Bencode::dict(vec![
            ("command", Bencode::str("offer")),
            ("replace", Bencode::strs(&["origin", "session-connection"])),
            ("n", Bencode::Int(-42)),
            ("empty", Bencode::List(vec![])),
        ]);
        let mut wire = Vec::new();
        request.encode(&mut wire);
        assert_eq!(
            wire,
            b"d7:command5:offer7:replacel6:origin18:session-connectione1:ni-42e5:emptylee"
        );
        assert_eq!(Bencode::decode(&wire), Ok(request));
    }

    #[test]
    fn bencode_decodes_a_pong_and_rejects_garbage() {
        let pong = Bencode::decode(b"d6:result4:ponge").expect("decodes");
        assert_eq!(pong.get("result").and_then(Bencode::as_str), Some("pong"));
        assert_eq!(pong.get("missing"), None);
        assert_eq!(
            Bencode::decode(b"d6:result4:pon"),
            Err(BencodeError::Truncated)
        );
        assert_eq!(
            Bencode::decode(b"d6:result4:ponge!"),
            Err(BencodeError::Trailing)
        );
        assert_eq!(
            Bencode::decode(b"di1e1:xe"),
            Err(BencodeError::Unexpected(1))
        );
        assert_eq!(Bencode::decode(b"x"), Err(BencodeError::Unexpected(0)));
        assert_eq!(Bencode::decode(b"ixe"), Err(BencodeError::Number(1)));
        assert_eq!(
            Bencode::decode(b"99999999999999999999999:x"),
            Err(BencodeError::Number(0))
        );
        let deep = [vec![b'l'; 40], vec![b'e'; 40]].concat();
        assert_eq!(Bencode::decode(&deep), Err(BencodeError::TooDeep));
    }

    #[test]
    fn audio_address_prefers_the_media_level_connection() {
        let addr: SocketAddr = "127.78.1.1:40000".parse().expect("address");
        assert_eq!(audio_address(&audio_sdp(addr)), Some(addr));
        let sdp = "v=0\r\nc=IN IP4 192.0.2.1\r\nm=video 5000 RTP/AVP 96\r\n\
                   c=IN IP4 192.0.2.9\r\nm=audio 4000 RTP/AVP 0\r\nc=IN IP4 192.0.2.2\r\n\
                   m=audio 6000 RTP/AVP 0\r\nc=IN IP4 192.0.2.3\r\n";
        assert_eq!(audio_address(sdp), "192.0.2.2:4000".parse().ok());
        let session_only = "v=0\r\nc=IN IP4 192.0.2.1\r\nm=audio 4000 RTP/AVP 0\r\n";
        assert_eq!(audio_address(session_only), "192.0.2.1:4000".parse().ok());
        assert_eq!(audio_address("v=0\r\nm=audio 4000 RTP/AVP 0\r\n"), None);
    }

    #[test]
    fn options_ask_for_userspace_only_forwarding() {
        let options = Options {
            binary: "rtpengine".to_owned(),
            ng: "127.78.0.7:2223".parse().expect("address"),
            interfaces: vec![("a".to_owned(), "127.78.0.5".parse().expect("ip"))],
            ports: (40000, 40999),
            threads: 1,
            delete_delay: None,
            log_level: 3,
            log: PathBuf::from("/dev/null"),
        };
        let args = options.args();
        for expected in [
            "--table=-1",
            "--config-file=none",
            "--foreground",
            "--num-threads=1",
            "--listen-ng=127.78.0.7:2223",
            "--interface=a/127.78.0.5",
        ] {
            assert!(args.iter().any(|a| a == expected), "{expected} in {args:?}");
        }
    }
}
