//! The wire protocol: length-prefixed JSON frames over a Unix socket, the hello handshake,
//! and the request and response envelopes. `PROTOCOL.md` documents the same for people
//! writing a client in another language.
//!
//! A frame is a 4-byte big-endian unsigned length followed by that many bytes of UTF-8 JSON.
//! A length above [`MAX_FRAME_BYTES`] is refused without reading the body.

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::error::ApiError;
use crate::model::{Op, Reply};

/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u32 = 1;
/// The largest frame body either side accepts, bytes.
pub const MAX_FRAME_BYTES: u32 = 1 << 20;

/// The client's first frame: `{"hello": {"protocol": 1, "db": "/abs/path/issues.db"}}`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Hello {
    /// Protocol version the client speaks.
    pub protocol: u32,
    /// Canonical absolute path of the database the client means to use.
    pub db: String,
    /// Free-form client name, for logs.
    #[serde(default)]
    pub client: Option<String>,
}

/// The server's answer to a good hello.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Welcome {
    /// Protocol version.
    pub protocol: u32,
    /// The database the daemon serves.
    pub db: String,
    /// Server name and version.
    pub server: String,
}

/// First frame of the client.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct HelloFrame {
    /// The hello.
    pub hello: Hello,
}

/// First frame of the server: a welcome or an error (after which it closes).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct WelcomeFrame {
    /// Present when the hello was accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hello: Option<Welcome>,
    /// Present when it was refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ApiError>,
}

/// A request: `{"id": 7, "deadline_ms": 5000, "body": {"op": "create", "title": "x"}}`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// Chosen by the client; echoed in the response. Responses may come out of order.
    pub id: u64,
    /// Ask the server to give up after this many milliseconds (capped by its own default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_ms: Option<u64>,
    /// The operation.
    pub body: Op,
}

/// A response: `{"id": 7, "ok": {...}}` or `{"id": 7, "error": {"code": ..., "message": ...}}`.
/// `id` is absent when the request was too malformed to have one.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Response {
    /// The request's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
    /// The reply on success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ok: Option<Reply>,
    /// The error on failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ApiError>,
}

impl Response {
    /// A response for `id` from an operation's result.
    pub fn of(id: Option<u64>, result: Result<Reply, ApiError>) -> Self {
        match result {
            Ok(r) => Response {
                id,
                ok: Some(r),
                error: None,
            },
            Err(e) => Response {
                id,
                ok: None,
                error: Some(e),
            },
        }
    }

    /// The result it carries (a response with neither field is an `internal` error).
    pub fn into_result(self) -> Result<Reply, ApiError> {
        match (self.ok, self.error) {
            (_, Some(e)) => Err(e),
            (Some(r), None) => Ok(r),
            (None, None) => Err(ApiError::internal("response carries neither ok nor error")),
        }
    }
}

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The peer announced a frame over the cap.
    #[error("frame of {len} bytes is over the limit of {max} bytes")]
    TooLarge {
        /// Announced length.
        len: u32,
        /// The cap.
        max: u32,
    },
    /// The connection ended inside a frame.
    #[error("connection closed inside a frame ({got} of {want} bytes)")]
    Truncated {
        /// Bytes received.
        got: usize,
        /// Bytes announced (4 for the length prefix itself).
        want: usize,
    },
    /// Any other I/O error.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads one frame. `Ok(None)` is a clean end of stream at a frame boundary.
pub async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    max: u32,
) -> Result<Option<Vec<u8>>, FrameError> {
    let mut len = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        let n = r.read(&mut len[got..]).await?;
        if n == 0 {
            return if got == 0 {
                Ok(None)
            } else {
                Err(FrameError::Truncated { got, want: 4 })
            };
        }
        got += n;
    }
    let len = u32::from_be_bytes(len);
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    let mut body = vec![0u8; len as usize];
    let mut got = 0;
    while got < body.len() {
        let n = r.read(&mut body[got..]).await?;
        if n == 0 {
            return Err(FrameError::Truncated {
                got,
                want: body.len(),
            });
        }
        got += n;
    }
    Ok(Some(body))
}

/// Writes one frame (length prefix and body) and flushes.
pub async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, body: &[u8]) -> Result<(), FrameError> {
    let len = u32::try_from(body.len())
        .ok()
        .filter(|l| *l <= MAX_FRAME_BYTES)
        .ok_or(FrameError::TooLarge {
            len: u32::try_from(body.len()).unwrap_or(u32::MAX),
            max: MAX_FRAME_BYTES,
        })?;
    // One write of prefix and body: a reader must not wake up for the prefix alone and
    // then again for the body.
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(body);
    w.write_all(&frame).await?;
    w.flush().await?;
    Ok(())
}

/// Serializes a value and writes it as a frame.
pub async fn write_json<W: AsyncWrite + Unpin, T: Serialize>(
    w: &mut W,
    value: &T,
) -> Result<(), FrameError> {
    let body = serde_json::to_vec(value).map_err(|e| FrameError::Io(std::io::Error::other(e)))?;
    write_frame(w, &body).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::CreateArgs;

    #[tokio::test]
    async fn frames_round_trip_and_edges_are_errors() {
        let (mut a, mut b) = tokio::io::duplex(64 * 1024);
        write_frame(&mut a, b"{\"x\":1}").await.unwrap();
        write_frame(&mut a, b"").await.unwrap();
        drop(a);
        assert_eq!(
            read_frame(&mut b, 100).await.unwrap().unwrap(),
            b"{\"x\":1}"
        );
        assert_eq!(read_frame(&mut b, 100).await.unwrap().unwrap(), b"");
        assert!(
            read_frame(&mut b, 100).await.unwrap().is_none(),
            "clean EOF"
        );

        let (mut a, mut b) = tokio::io::duplex(1024);
        a.write_all(&1000u32.to_be_bytes()).await.unwrap();
        let e = read_frame(&mut b, 100).await.unwrap_err();
        assert!(
            matches!(
                e,
                FrameError::TooLarge {
                    len: 1000,
                    max: 100
                }
            ),
            "{e}"
        );

        let (mut a, mut b) = tokio::io::duplex(1024);
        a.write_all(&10u32.to_be_bytes()).await.unwrap();
        a.write_all(b"abc").await.unwrap();
        drop(a);
        let e = read_frame(&mut b, 100).await.unwrap_err();
        assert!(
            matches!(e, FrameError::Truncated { got: 3, want: 10 }),
            "{e}"
        );

        let (mut a, mut b) = tokio::io::duplex(1024);
        a.write_all(&[0, 0]).await.unwrap();
        drop(a);
        assert!(matches!(
            read_frame(&mut b, 100).await,
            Err(FrameError::Truncated { got: 2, want: 4 })
        ));
    }

    #[test]
    fn envelopes_have_the_documented_form() {
        let r = Request {
            id: 7,
            deadline_ms: Some(5000),
            body: Op::Create(CreateArgs {
                title: "x".into(),
                ..CreateArgs::default()
            }),
        };
        let j = serde_json::to_value(&r).unwrap();
        assert_eq!(j["id"], 7);
        assert_eq!(j["body"]["op"], "create");
        assert_eq!(serde_json::from_value::<Request>(j).unwrap(), r);
        let h: HelloFrame =
            serde_json::from_str(r#"{"hello":{"protocol":1,"db":"/tmp/a.db"}}"#).unwrap();
        assert_eq!(h.hello.protocol, 1);
        let resp = Response::of(Some(3), Ok(Reply::Pong { pong: true }));
        assert_eq!(
            serde_json::to_string(&resp).unwrap(),
            r#"{"id":3,"ok":{"pong":true}}"#
        );
    }
}
