//! shmover's control protocol: the messages of
//! `proto/shmover/control/v1/control.proto` and the frame codec of the
//! Unix socket (4-byte big-endian length, then one protobuf message).
//!
//! The codec is written once, here, over plain byte buffers, so that the
//! blocking client and the async mover share it.

#![warn(missing_docs)]

/// Generated protobuf types.
#[allow(missing_docs, clippy::all, missing_debug_implementations)]
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/shmover.control.v1.rs"));
}

/// The mover-to-mover gRPC service (`proto/shmover/peer/v1/peer.proto`):
/// messages, tonic client and tonic server.
#[cfg(feature = "peer")]
#[allow(missing_docs, clippy::all, missing_debug_implementations)]
pub mod peer {
    include!(concat!(env!("OUT_DIR"), "/shmover.peer.v1.rs"));
}

pub use v1::{request, response, ClientKind, ErrorCode, Request, Response};

/// Protocol versions this build speaks.
pub const MIN_VERSION: u32 = 1;
/// Protocol versions this build speaks. Version 2: `List` answers in pages
/// that each fit a frame (`after_name`, `after_created_unix_ms`, `more`).
pub const MAX_VERSION: u32 = 2;
/// Largest frame body accepted, in bytes.
pub const MAX_FRAME: usize = 1 << 20;
/// Bytes of the length prefix.
pub const HEADER: usize = 4;

/// Why a frame could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// The length prefix exceeds [`MAX_FRAME`].
    TooLarge(usize),
    /// The body is not a valid message.
    Decode(String),
    /// The message has no body (an unknown or missing `oneof`).
    Empty,
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::TooLarge(n) => write!(f, "frame of {n} bytes exceeds the limit of {MAX_FRAME}"),
            Self::Decode(e) => write!(f, "undecodable frame: {e}"),
            Self::Empty => f.write_str("frame carries no known message"),
        }
    }
}

impl std::error::Error for FrameError {}

/// Encodes one message as a frame.
pub fn encode<M: prost::Message>(msg: &M) -> Vec<u8> {
    let len = msg.encoded_len();
    let mut out = Vec::with_capacity(HEADER + len);
    out.extend_from_slice(&(len as u32).to_be_bytes());
    msg.encode(&mut out).expect("a Vec grows as needed");
    out
}

/// If `buf` starts with a whole frame, decodes it and returns the message
/// and the bytes consumed; `Ok(None)` if more bytes are needed.
pub fn decode<M: prost::Message + Default>(buf: &[u8]) -> Result<Option<(M, usize)>, FrameError> {
    if buf.len() < HEADER {
        return Ok(None);
    }
    let len = u32::from_be_bytes(buf[..HEADER].try_into().expect("4 bytes")) as usize;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    if buf.len() < HEADER + len {
        return Ok(None);
    }
    let msg =
        M::decode(&buf[HEADER..HEADER + len]).map_err(|e| FrameError::Decode(e.to_string()))?;
    Ok(Some((msg, HEADER + len)))
}

/// Decodes a request frame and checks it has a body.
pub fn decode_request(buf: &[u8]) -> Result<Option<(request::Body, usize)>, FrameError> {
    match decode::<Request>(buf)? {
        None => Ok(None),
        Some((Request { body: Some(b) }, n)) => Ok(Some((b, n))),
        Some((Request { body: None }, _)) => Err(FrameError::Empty),
    }
}

/// Decodes a response frame and checks it has a body.
pub fn decode_response(buf: &[u8]) -> Result<Option<(response::Body, usize)>, FrameError> {
    match decode::<Response>(buf)? {
        None => Ok(None),
        Some((Response { body: Some(b) }, n)) => Ok(Some((b, n))),
        Some((Response { body: None }, _)) => Err(FrameError::Empty),
    }
}

/// Encodes a request body as a frame.
pub fn request_frame(body: request::Body) -> Vec<u8> {
    encode(&Request { body: Some(body) })
}

/// Encodes a response body as a frame.
pub fn response_frame(body: response::Body) -> Vec<u8> {
    encode(&Response { body: Some(body) })
}

/// An error response frame.
pub fn error_frame(code: ErrorCode, message: impl Into<String>) -> Vec<u8> {
    response_frame(response::Body::Error(v1::Error {
        code: code as i32,
        message: message.into(),
    }))
}

/// Picks the highest version both sides speak.
pub fn negotiate(client_min: u32, client_max: u32) -> Option<u32> {
    let hi = client_max.min(MAX_VERSION);
    (hi >= client_min.max(MIN_VERSION)).then_some(hi)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_round_trips_and_reports_its_length() {
        let f = request_frame(request::Body::Stat(v1::Stat { name: "a/b".into() }));
        let mut buf = f.clone();
        buf.extend_from_slice(&[0, 0]); // start of the next frame
        let (body, used) = decode_request(&buf).unwrap().unwrap();
        assert_eq!(used, f.len());
        assert_eq!(body, request::Body::Stat(v1::Stat { name: "a/b".into() }));
    }

    #[test]
    fn a_partial_frame_asks_for_more() {
        let f = request_frame(request::Body::Ping(v1::Ping {}));
        for cut in 0..f.len() {
            assert_eq!(decode_request(&f[..cut]), Ok(None), "cut at {cut}");
        }
    }

    #[test]
    fn a_huge_length_prefix_is_refused_before_reading_the_body() {
        let buf = [0xff, 0xff, 0xff, 0xff, 1, 2, 3];
        assert_eq!(decode_request(&buf), Err(FrameError::TooLarge(0xffff_ffff)));
    }

    #[test]
    fn garbage_and_empty_bodies_are_errors() {
        let mut garbage = vec![0, 0, 0, 3];
        garbage.extend_from_slice(&[0xff, 0xff, 0xff]);
        assert!(matches!(
            decode_request(&garbage),
            Err(FrameError::Decode(_))
        ));
        assert_eq!(decode_request(&[0, 0, 0, 0]), Err(FrameError::Empty));
        // Field 99 is unknown to this version: no body.
        let unknown = [0, 0, 0, 3, 0x9a, 0x06, 0x00];
        assert_eq!(decode_request(&unknown), Err(FrameError::Empty));
    }

    #[test]
    fn versions_negotiate_to_the_highest_common_one() {
        assert_eq!(negotiate(1, 1), Some(1));
        assert_eq!(negotiate(1, 9), Some(MAX_VERSION));
        assert_eq!(negotiate(2, 2), Some(2));
        assert_eq!(negotiate(MAX_VERSION + 1, 9), None);
        assert_eq!(negotiate(0, 0), None);
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2000))]

            /// Whatever a peer sends, decoding answers: a message and its
            /// exact length, "more bytes", or an error. It never panics and
            /// never claims bytes it was not given.
            #[test]
            fn arbitrary_bytes_decode_or_fail_cleanly(buf in proptest::collection::vec(any::<u8>(), 0..512)) {
                for r in [decode_request(&buf).map(|o| o.map(|(_, n)| n)), decode_response(&buf).map(|o| o.map(|(_, n)| n))] {
                    if let Ok(Some(n)) = r {
                        let len = u32::from_be_bytes(buf[..4].try_into().unwrap()) as usize;
                        prop_assert_eq!(n, HEADER + len);
                        prop_assert!(n <= buf.len());
                    }
                }
            }

            /// A valid frame with garbage after it decodes to itself and
            /// stops at its own end.
            #[test]
            fn frames_round_trip_whatever_follows(
                name in ".{0,300}",
                block in any::<u32>(),
                tail in proptest::collection::vec(any::<u8>(), 0..64),
            ) {
                let body = request::Body::OpenWrite(v1::OpenWrite {
                    name: name.clone(),
                    block_size: block,
                    ..Default::default()
                });
                let f = request_frame(body.clone());
                let mut buf = f.clone();
                buf.extend_from_slice(&tail);
                let (got, used) = decode_request(&buf).unwrap().unwrap();
                prop_assert_eq!(used, f.len());
                prop_assert_eq!(got, body);
            }
        }
    }
}
