//! The Unix-socket target: `unix:PATH`, one framed request and its reply per operation,
//! enough to drive the rpc-daemon without its client library, and any local service that
//! speaks length-prefixed or line-delimited frames.
//!
//! **Frames** ([`Framing`]): `u32be`, a 4-byte big-endian length then that many bytes (the
//! rpc-daemon's framing, `crates/rpc-daemon/PROTOCOL.md` §2), or `line`, bytes ended by
//! `\n` (the newline is not part of the frame). [`encode`] and [`decode`] are the pure
//! halves, tested on their own. A reply over [`MAX_FRAME_BYTES`] (a length prefix that
//! announces more, or a line that runs longer) is the error `frame_too_large`, and the
//! connection is dropped since the next frame boundary is lost.
//!
//! **Requests** are a template (`--body`, required) with `{seq}` usable as the request id
//! and `{rand}` from the seed ([`crate::template`]). Replies are opaque: the target measures
//! exchanges, not the service's semantics (a reply that says "error" is still a reply).
//!
//! **Preamble**: with `--hello`, every new connection first sends that frame (rendered with
//! seq 0) and reads one reply, which must contain `--hello-reply` if given; otherwise the
//! connection is refused with the error `hello`, naming both. [`UnixTarget::open`] opens
//! the first connection (preamble included) so a wrong path or a refused hello fails before
//! any load runs.
//!
//! **Pool and cancel-safety**: at most `conns` connections (default 64) in a
//! [`ConnPool`], opened lazily; an exchange takes any idle one, or waits for one while
//! `conns` are busy. The connection is put back only after its reply was read whole, so an
//! operation the generator cancels drops its connection: a late reply is never read as
//! the answer to the next request, which connects afresh. Every connect and preamble is
//! bounded by [`CONNECT_BOUND`].
//!
//! Error kinds: `connect` (no socket, refused, or not within the bound), `reset` (EOF or a
//! reset mid-exchange), `hello`, `frame_too_large`, `io` (anything else).

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use collector::target::{BoxFuture, OpError, SpecError, Target};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use crate::pool::ConnPool;
use crate::template::Template;
use crate::{invalid, Framing, TargetError, TargetOptions};

/// The largest frame read or sent, bytes.
pub const MAX_FRAME_BYTES: usize = 16 * 1024 * 1024;
/// Longest a connect plus its preamble may take.
pub const CONNECT_BOUND: Duration = Duration::from_secs(5);
/// Error kind: no connection.
pub const KIND_CONNECT: &str = "connect";
/// Error kind: the connection ended or was reset mid-exchange.
pub const KIND_RESET: &str = "reset";
/// Error kind: the preamble was refused.
pub const KIND_HELLO: &str = "hello";
/// Error kind: a frame over [`MAX_FRAME_BYTES`].
pub const KIND_FRAME_TOO_LARGE: &str = "frame_too_large";
/// Error kind: any other I/O failure.
pub const KIND_IO: &str = "io";

/// Why a frame could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The frame is longer than [`MAX_FRAME_BYTES`].
    #[error("frame of {0} bytes: expected at most {MAX_FRAME_BYTES}")]
    TooLarge(usize),
}

/// The path of `unix:PATH`; the error names the spec.
pub fn parse(spec: &str) -> Result<PathBuf, SpecError> {
    match spec.trim_start().strip_prefix("unix:") {
        Some(path) if !path.trim().is_empty() => Ok(PathBuf::from(path.trim())),
        _ => Err(invalid(
            spec,
            "empty path: expected unix:PATH, like unix:/tmp/issues.db.sock",
        )),
    }
}

/// `body` as one frame.
pub fn encode(framing: Framing, body: &[u8]) -> Result<Vec<u8>, FrameError> {
    if body.len() > MAX_FRAME_BYTES {
        return Err(FrameError::TooLarge(body.len()));
    }
    Ok(match framing {
        Framing::U32Be => {
            let mut out = Vec::with_capacity(4 + body.len());
            out.extend_from_slice(&(body.len() as u32).to_be_bytes());
            out.extend_from_slice(body);
            out
        }
        Framing::Line => {
            let mut out = Vec::with_capacity(body.len() + 1);
            out.extend_from_slice(body);
            out.push(b'\n');
            out
        }
    })
}

/// The first frame in `buf` and the bytes it took, `None` if `buf` holds only part of one.
pub fn decode(framing: Framing, buf: &[u8]) -> Result<Option<(Vec<u8>, usize)>, FrameError> {
    match framing {
        Framing::U32Be => {
            let Some(prefix) = buf.get(..4) else {
                return Ok(None);
            };
            let len = u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize;
            if len > MAX_FRAME_BYTES {
                return Err(FrameError::TooLarge(len));
            }
            Ok(buf.get(4..4 + len).map(|b| (b.to_vec(), 4 + len)))
        }
        Framing::Line => match buf.iter().position(|&b| b == b'\n') {
            Some(i) if i > MAX_FRAME_BYTES => Err(FrameError::TooLarge(i)),
            Some(i) => Ok(Some((buf[..i].to_vec(), i + 1))),
            None if buf.len() > MAX_FRAME_BYTES => Err(FrameError::TooLarge(buf.len())),
            None => Ok(None),
        },
    }
}

fn io_error(e: io::Error, during: &str) -> OpError {
    use io::ErrorKind::*;
    let kind = match e.kind() {
        UnexpectedEof | ConnectionReset | BrokenPipe | ConnectionAborted => KIND_RESET,
        _ => KIND_IO,
    };
    OpError::new(kind, format!("{during}: {e}"))
}

/// One open connection.
struct Conn {
    stream: BufReader<UnixStream>,
}

impl Conn {
    async fn exchange(&mut self, framing: Framing, frame: &[u8]) -> Result<Vec<u8>, OpError> {
        self.stream
            .get_mut()
            .write_all(frame)
            .await
            .map_err(|e| io_error(e, "sending the request"))?;
        self.read_frame(framing).await
    }

    async fn read_frame(&mut self, framing: Framing) -> Result<Vec<u8>, OpError> {
        let too_large =
            |n: usize| OpError::new(KIND_FRAME_TOO_LARGE, FrameError::TooLarge(n).to_string());
        match framing {
            Framing::U32Be => {
                let mut prefix = [0u8; 4];
                self.stream
                    .read_exact(&mut prefix)
                    .await
                    .map_err(|e| io_error(e, "reading the reply"))?;
                let len = u32::from_be_bytes(prefix) as usize;
                if len > MAX_FRAME_BYTES {
                    return Err(too_large(len));
                }
                let mut body = vec![0u8; len];
                self.stream
                    .read_exact(&mut body)
                    .await
                    .map_err(|e| io_error(e, "reading the reply"))?;
                Ok(body)
            }
            Framing::Line => {
                let mut line = Vec::new();
                let limit = (MAX_FRAME_BYTES + 1) as u64;
                let n = (&mut self.stream)
                    .take(limit)
                    .read_until(b'\n', &mut line)
                    .await
                    .map_err(|e| io_error(e, "reading the reply"))?;
                if line.last() == Some(&b'\n') {
                    line.pop();
                    Ok(line)
                } else if n as u64 >= limit {
                    Err(too_large(n))
                } else {
                    Err(OpError::new(KIND_RESET, "the connection ended mid-line"))
                }
            }
        }
    }
}

/// The Unix-socket target. See the module doc.
pub struct UnixTarget {
    spec: String,
    path: PathBuf,
    framing: Framing,
    request: Template,
    hello: Option<Vec<u8>>,
    hello_reply: Option<String>,
    pool: ConnPool<Conn>,
}

impl UnixTarget {
    /// Checks the spec and options, and opens the first connection (preamble included).
    pub async fn open(spec: &str, opts: &TargetOptions) -> Result<UnixTarget, TargetError> {
        let path = parse(spec)?;
        let framing = opts.framing.unwrap_or_default();
        let Some(body) = &opts.body else {
            return Err(invalid(
                spec,
                "no request: expected a request template (--body or the plan key body)",
            )
            .into());
        };
        if framing == Framing::Line && body.contains('\n') {
            return Err(invalid(spec, "the request holds a newline, which ends a line frame: expected one line, or framing u32be").into());
        }
        let request = Template::parse(body, opts.seed).map_err(|m| invalid(spec, m))?;
        let hello = match &opts.hello {
            Some(h) => Some(
                Template::parse(h, opts.seed)
                    .map_err(|m| invalid(spec, format!("hello: {m}")))?
                    .render(0),
            ),
            None => None,
        };
        check_socket(spec, &path)?;
        let mut t = UnixTarget {
            spec: spec.to_string(),
            path,
            framing,
            request,
            hello,
            hello_reply: opts.hello_reply.clone(),
            pool: ConnPool::new(opts.conns, None),
        };
        let first = t
            .connect()
            .await
            .map_err(|e| TargetError::setup(spec, e.to_string()))?;
        t.pool = ConnPool::new(opts.conns, Some(first));
        Ok(t)
    }

    /// A new connection, preamble done, within [`CONNECT_BOUND`].
    async fn connect(&self) -> Result<Conn, OpError> {
        let work = async {
            let stream = UnixStream::connect(&self.path).await.map_err(|e| {
                OpError::new(
                    KIND_CONNECT,
                    format!("connecting to {}: {e}", self.path.display()),
                )
            })?;
            let mut conn = Conn {
                stream: BufReader::new(stream),
            };
            if let Some(hello) = &self.hello {
                self.preamble(&mut conn, hello).await?;
            }
            Ok(conn)
        };
        match tokio::time::timeout(CONNECT_BOUND, work).await {
            Ok(r) => r,
            Err(_) => Err(OpError::new(
                KIND_CONNECT,
                format!(
                    "no connection to {} (with its preamble) within {CONNECT_BOUND:?}",
                    self.path.display()
                ),
            )),
        }
    }

    async fn preamble(&self, conn: &mut Conn, hello: &[u8]) -> Result<(), OpError> {
        let frame = encode(self.framing, hello)
            .map_err(|e| OpError::new(KIND_FRAME_TOO_LARGE, e.to_string()))?;
        let reply = conn
            .exchange(self.framing, &frame)
            .await
            .map_err(|e| OpError::new(KIND_HELLO, format!("the hello got no reply: {e}")))?;
        if let Some(want) = &self.hello_reply {
            let got = String::from_utf8_lossy(&reply);
            if !got.contains(want.as_str()) {
                return Err(OpError::new(
                    KIND_HELLO,
                    format!("the reply to the hello does not contain {want:?}: {got:?}"),
                ));
            }
        }
        Ok(())
    }

    async fn run(&self, seq: u64) -> Result<(), OpError> {
        let frame = encode(self.framing, &self.request.render(seq))
            .map_err(|e| OpError::new(KIND_FRAME_TOO_LARGE, e.to_string()))?;
        let Some(mut lease) = self.pool.lease().await else {
            return Err(OpError::new(KIND_IO, "connection pool closed"));
        };
        let mut conn = match lease.take() {
            Some(c) => c,
            None => self.connect().await?,
        };
        // Cancelled here or an error: `conn` is dropped, never put back.
        conn.exchange(self.framing, &frame).await?;
        lease.put_back(conn);
        Ok(())
    }
}

fn check_socket(spec: &str, path: &Path) -> Result<(), TargetError> {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::metadata(path) {
        Ok(m) if m.file_type().is_socket() => Ok(()),
        Ok(_) => Err(TargetError::setup(
            spec,
            format!("{} is not a socket", path.display()),
        )),
        Err(e) => Err(TargetError::setup(
            spec,
            format!(
                "{}: {e} (is the service running and listening there?)",
                path.display()
            ),
        )),
    }
}

impl Target for UnixTarget {
    fn actions(&self) -> Vec<String> {
        vec!["request".into()]
    }

    fn call(&self, _action: usize, seq: u64) -> BoxFuture<'_, Result<(), OpError>> {
        Box::pin(self.run(seq))
    }

    fn describe(&self) -> String {
        format!(
            "{} ({} framing, {} connections{})",
            self.spec,
            self.framing.name(),
            self.pool.size(),
            if self.hello.is_some() { ", hello" } else { "" }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_both_ways() {
        for framing in [Framing::U32Be, Framing::Line] {
            let a = encode(framing, b"{\"id\": 1}").unwrap();
            let b = encode(framing, b"second").unwrap();
            let both = [a.clone(), b].concat();
            let (first, used) = decode(framing, &both).unwrap().unwrap();
            assert_eq!(first, b"{\"id\": 1}");
            assert_eq!(used, a.len());
            let (second, _) = decode(framing, &both[used..]).unwrap().unwrap();
            assert_eq!(second, b"second");
            // A truncated frame is not a frame yet.
            assert_eq!(decode(framing, &a[..a.len() - 1]).unwrap(), None);
        }
        assert_eq!(decode(Framing::U32Be, &[0, 0]).unwrap(), None);
        assert_eq!(
            decode(Framing::U32Be, &[0, 0, 0, 0]).unwrap(),
            Some((vec![], 4))
        );
    }

    #[test]
    fn an_oversize_frame_is_refused() {
        let len = (MAX_FRAME_BYTES as u32 + 1).to_be_bytes();
        assert_eq!(
            decode(Framing::U32Be, &len),
            Err(FrameError::TooLarge(MAX_FRAME_BYTES + 1))
        );
        let long = vec![b'x'; MAX_FRAME_BYTES + 1];
        assert!(decode(Framing::Line, &long).is_err());
        assert!(encode(Framing::Line, &long).is_err());
    }

    #[test]
    fn an_empty_path_is_refused_with_the_spec() {
        for spec in ["unix:", "unix:  "] {
            let e = parse(spec).unwrap_err().to_string();
            assert!(e.contains(&format!("{spec:?}")), "{e}");
        }
        assert_eq!(parse("unix:/tmp/s").unwrap(), PathBuf::from("/tmp/s"));
    }
}
