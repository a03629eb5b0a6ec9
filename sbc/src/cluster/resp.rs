//! A small Redis client: RESP2 over one TCP connection, one command at a
//! time (what the lease needs; no pipelining, no pub/sub). Valkey speaks the
//! same protocol.
//!
//! Replies are read with limits (a bulk string of at most [`MAX_BULK`]
//! bytes, arrays nested at most [`MAX_DEPTH`] deep, at most [`MAX_ITEMS`]
//! elements), so a misbehaving server costs an error, never unbounded
//! memory. Every command is bounded by the caller's timeout; after any
//! error the connection is dropped and the next command reconnects.

use std::io;
use std::time::Duration;

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufStream};
use tokio::net::TcpStream;

/// The longest bulk string accepted in a reply.
pub const MAX_BULK: usize = 1 << 20;
/// The deepest nesting of arrays accepted in a reply.
pub const MAX_DEPTH: usize = 5;
/// The most elements one array in a reply may have.
pub const MAX_ITEMS: usize = 4096;
/// The longest line (simple string, error, integer, length) accepted.
const MAX_LINE: usize = 4096;

/// A RESP2 reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// `+OK`
    Simple(String),
    /// `-ERR ...`: the server refused the command.
    Error(String),
    /// `:1`
    Integer(i64),
    /// `$n` bytes, or `$-1` (`None`).
    Bulk(Option<Vec<u8>>),
    /// `*n` replies, or `*-1` (`None`).
    Array(Option<Vec<Reply>>),
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    /// Connecting, writing or reading failed.
    #[error("redis at {addr}: {source}")]
    Io {
        /// `host:port`.
        addr: String,
        /// What failed.
        source: io::Error,
    },
    /// No reply within the timeout.
    #[error("redis at {addr}: no reply within {timeout:?}")]
    Timeout {
        /// `host:port`.
        addr: String,
        /// The bound that passed.
        timeout: Duration,
    },
    /// The reply broke the protocol or a limit.
    #[error("redis at {addr}: bad reply: {reason}")]
    Protocol {
        /// `host:port`.
        addr: String,
        /// What was wrong.
        reason: &'static str,
    },
}

/// The `host:port` of a `redis://HOST[:PORT]` URL (port 6379 when absent);
/// `None` for anything else (a path, credentials or options are not
/// supported yet, and are refused rather than ignored).
pub fn parse_url(url: &str) -> Option<String> {
    let rest = url.strip_prefix("redis://")?;
    if rest.is_empty() || rest.contains(['/', '@', '?', '#', ' ']) {
        return None;
    }
    // [v6]:port, [v6], host:port, host
    let (host, port): (String, u16) = if let Some(v6) = rest.strip_prefix('[') {
        let (host, after) = v6.split_once(']')?;
        match after {
            "" => (format!("[{host}]"), 6379),
            p => (format!("[{host}]"), p.strip_prefix(':')?.parse().ok()?),
        }
    } else {
        match rest.rsplit_once(':') {
            Some((host, port)) => (host.to_owned(), port.parse().ok()?),
            None => (rest.to_owned(), 6379),
        }
    };
    (!host.is_empty() && port != 0).then(|| format!("{host}:{port}"))
}

/// One connection to Redis, made on first use and after any failure.
#[derive(Debug)]
pub struct Redis {
    addr: String,
    timeout: Duration,
    conn: Option<BufStream<TcpStream>>,
}

impl Redis {
    /// A client for `addr` (`host:port`); every command (connecting
    /// included) is bounded by `timeout`. Connects lazily.
    pub fn new(addr: String, timeout: Duration) -> Redis {
        Redis {
            addr,
            timeout,
            conn: None,
        }
    }

    /// `host:port` of the server.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Sends one command and reads its reply. An error reply from the
    /// server is `Ok(Reply::Error)`; a failure drops the connection.
    pub async fn command(&mut self, args: &[&[u8]]) -> Result<Reply, RedisError> {
        let timeout = self.timeout;
        let result = tokio::time::timeout(timeout, self.exchange(args)).await;
        let outcome = match result {
            Ok(outcome) => outcome,
            Err(_) => Err(RedisError::Timeout {
                addr: self.addr.clone(),
                timeout,
            }),
        };
        if outcome.is_err() {
            self.conn = None;
        }
        outcome
    }

    async fn exchange(&mut self, args: &[&[u8]]) -> Result<Reply, RedisError> {
        let addr = self.addr.clone();
        let io = |source| RedisError::Io {
            addr: addr.clone(),
            source,
        };
        if self.conn.is_none() {
            let stream = TcpStream::connect(&self.addr).await.map_err(io)?;
            let _ = stream.set_nodelay(true);
            self.conn = Some(BufStream::new(stream));
        }
        let Some(conn) = self.conn.as_mut() else {
            return Err(io(io::Error::from(io::ErrorKind::NotConnected)));
        };
        conn.write_all(&encode(args)).await.map_err(io)?;
        conn.flush().await.map_err(io)?;
        read_reply(conn, 0).await.map_err(|e| match e {
            ReadError::Io(source) => RedisError::Io {
                addr: addr.clone(),
                source,
            },
            ReadError::Protocol(reason) => RedisError::Protocol {
                addr: addr.clone(),
                reason,
            },
        })
    }
}

/// A command as a RESP array of bulk strings.
pub fn encode(args: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + args.iter().map(|a| a.len() + 16).sum::<usize>());
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    out
}

#[derive(Debug)]
enum ReadError {
    Io(io::Error),
    Protocol(&'static str),
}

impl From<io::Error> for ReadError {
    fn from(e: io::Error) -> Self {
        ReadError::Io(e)
    }
}

/// One CRLF-terminated line, without the CRLF, of at most [`MAX_LINE`].
async fn read_line<R: AsyncBufRead + Unpin>(r: &mut R) -> Result<String, ReadError> {
    let mut line = Vec::new();
    let n = (&mut *r)
        .take(MAX_LINE as u64 + 2)
        .read_until(b'\n', &mut line)
        .await?;
    if n == 0 {
        return Err(ReadError::Io(io::ErrorKind::UnexpectedEof.into()));
    }
    if !line.ends_with(b"\r\n") {
        return Err(ReadError::Protocol("line too long or not CRLF-terminated"));
    }
    line.truncate(line.len() - 2);
    String::from_utf8(line).map_err(|_| ReadError::Protocol("line is not UTF-8"))
}

fn length(text: &str, max: usize) -> Result<Option<usize>, ReadError> {
    match text.parse::<i64>() {
        Ok(-1) => Ok(None),
        Ok(n) if n >= 0 && (n as u64) <= max as u64 => Ok(Some(n as usize)),
        Ok(_) => Err(ReadError::Protocol("length out of bounds")),
        Err(_) => Err(ReadError::Protocol("length is not a number")),
    }
}

/// Reads one reply, arrays recursively (boxed: async recursion).
fn read_reply<'a, R: AsyncBufRead + Unpin + Send>(
    r: &'a mut R,
    depth: usize,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Reply, ReadError>> + Send + 'a>> {
    Box::pin(async move {
        let line = read_line(r).await?;
        let Some(kind) = line.chars().next() else {
            return Err(ReadError::Protocol("empty line"));
        };
        let rest = &line[kind.len_utf8()..];
        match kind {
            '+' => Ok(Reply::Simple(rest.to_owned())),
            '-' => Ok(Reply::Error(rest.to_owned())),
            ':' => rest
                .parse()
                .map(Reply::Integer)
                .map_err(|_| ReadError::Protocol("integer is not a number")),
            '$' => match length(rest, MAX_BULK)? {
                None => Ok(Reply::Bulk(None)),
                Some(n) => {
                    let mut data = vec![0u8; n + 2];
                    r.read_exact(&mut data).await?;
                    if !data.ends_with(b"\r\n") {
                        return Err(ReadError::Protocol("bulk string not CRLF-terminated"));
                    }
                    data.truncate(n);
                    Ok(Reply::Bulk(Some(data)))
                }
            },
            '*' => {
                if depth >= MAX_DEPTH {
                    return Err(ReadError::Protocol("arrays nested too deep"));
                }
                match length(rest, MAX_ITEMS)? {
                    None => Ok(Reply::Array(None)),
                    Some(n) => {
                        let mut items = Vec::with_capacity(n);
                        for _ in 0..n {
                            items.push(read_reply(r, depth + 1).await?);
                        }
                        Ok(Reply::Array(Some(items)))
                    }
                }
            }
            _ => Err(ReadError::Protocol("unknown reply type")),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn parse(bytes: &[u8]) -> Result<Reply, ReadError> {
        let mut r = tokio::io::BufReader::new(bytes);
        read_reply(&mut r, 0).await
    }

    #[tokio::test]
    async fn replies_of_every_kind_parse() {
        assert_eq!(
            parse(b"+OK\r\n").await.ok(),
            Some(Reply::Simple("OK".into()))
        );
        assert_eq!(
            parse(b"-ERR wrong\r\n").await.ok(),
            Some(Reply::Error("ERR wrong".into()))
        );
        assert_eq!(parse(b":-3\r\n").await.ok(), Some(Reply::Integer(-3)));
        assert_eq!(
            parse(b"$5\r\nab\r\nc\r\n").await.ok(),
            Some(Reply::Bulk(Some(b"ab\r\nc".to_vec())))
        );
        assert_eq!(parse(b"$-1\r\n").await.ok(), Some(Reply::Bulk(None)));
        assert_eq!(
            parse(b"*2\r\n:1\r\n*1\r\n$1\r\nx\r\n").await.ok(),
            Some(Reply::Array(Some(vec![
                Reply::Integer(1),
                Reply::Array(Some(vec![Reply::Bulk(Some(b"x".to_vec()))]))
            ])))
        );
        assert_eq!(parse(b"*-1\r\n").await.ok(), Some(Reply::Array(None)));
    }

    #[tokio::test]
    async fn broken_or_oversized_replies_are_errors_not_allocations() {
        for bad in [
            &b"?what\r\n"[..],
            b"+OK\n",
            b":x\r\n",
            b"$5\r\nab\r\n",
            b"$3\r\nabcde",
            b"$99999999999\r\n",
            b"*99999999\r\n",
            b"$-2\r\n",
            b"*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n:1\r\n",
            b"",
        ] {
            assert!(
                parse(bad).await.is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let long = format!("+{}\r\n", "x".repeat(MAX_LINE + 10));
        assert!(parse(long.as_bytes()).await.is_err());
    }

    #[test]
    fn commands_are_arrays_of_bulk_strings() {
        assert_eq!(
            encode(&[b"SET", b"k", b"a b"]),
            b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$3\r\na b\r\n".to_vec()
        );
    }

    #[test]
    fn urls_name_a_host_and_port_and_nothing_else() {
        assert_eq!(
            parse_url("redis://127.0.0.1:6380").as_deref(),
            Some("127.0.0.1:6380")
        );
        assert_eq!(
            parse_url("redis://redis.example.net").as_deref(),
            Some("redis.example.net:6379")
        );
        assert_eq!(
            parse_url("redis://[2001:db8::1]:7000").as_deref(),
            Some("[2001:db8::1]:7000")
        );
        for bad in [
            "http://127.0.0.1:6379",
            "redis://",
            "redis://:6379",
            "redis://host:0",
            "redis://host:99999",
            "redis://user:pass@host:6379",
            "redis://host:6379/2",
            "redis://[2001:db8::1",
        ] {
            assert_eq!(parse_url(bad), None, "{bad}");
        }
    }
}
