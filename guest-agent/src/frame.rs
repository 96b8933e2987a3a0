//! Control-channel frame codec (PROTOCOL.md §4):
//! `u32 length (BE, of the rest) | u8 type | u32 stream (BE) | payload`.

use std::fmt;

pub const MAX_PAYLOAD: usize = 1 << 20;
const HEADER_REST: usize = 5;

pub const HELLO: u8 = 0x01;
pub const EXEC: u8 = 0x02;
pub const STDIN: u8 = 0x03;
pub const STDOUT: u8 = 0x04;
pub const STDERR: u8 = 0x05;
pub const RESIZE: u8 = 0x06;
pub const SIGNAL: u8 = 0x07;
pub const EXIT: u8 = 0x08;
pub const ERROR: u8 = 0x09;
pub const COPY_IN: u8 = 0x0A;
pub const COPY_OUT: u8 = 0x0B;
pub const DATA: u8 = 0x0C;
pub const STAT: u8 = 0x0D;
pub const STAT_RESULT: u8 = 0x0E;
pub const PING: u8 = 0x0F;
pub const PONG: u8 = 0x10;
pub const WINDOW: u8 = 0x11;
pub const LIST: u8 = 0x12;
pub const REMOVE: u8 = 0x13;
pub const RECONFIGURE: u8 = 0x14;
pub const DIFF: u8 = 0x15;
pub const SESSION_START: u8 = 0x16;
pub const SESSION_ATTACH: u8 = 0x17;
pub const SESSION_CTL: u8 = 0x18;
pub const DETACH: u8 = 0x19;

/// The main command's stream (exec mode): output, stdin, resize, signals and its exit.
/// Even, so it never collides with the host's (odd) stream ids.
pub const MAIN_STREAM: u32 = 2;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub ty: u8,
    pub stream: u32,
    pub payload: Vec<u8>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum FrameError {
    /// Declared length shorter than the fixed part of a frame.
    TooShort(u32),
    /// Payload larger than `MAX_PAYLOAD`.
    TooLarge(u32),
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::TooShort(n) => write!(f, "frame length {n} is shorter than 5"),
            FrameError::TooLarge(n) => {
                write!(f, "frame length {n} exceeds the 1 MiB payload limit")
            }
        }
    }
}

/// Encode one frame. Panics in debug builds if the payload is oversize (callers chunk).
pub fn encode(ty: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    debug_assert!(payload.len() <= MAX_PAYLOAD);
    let mut out = Vec::with_capacity(9 + payload.len());
    out.extend_from_slice(&((payload.len() + HEADER_REST) as u32).to_be_bytes());
    out.push(ty);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// Incremental decoder: feed bytes as they arrive, take whole frames out.
#[derive(Default)]
pub struct Decoder {
    buf: Vec<u8>,
    start: usize,
}

impl Decoder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, bytes: &[u8]) {
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        } else if self.start > 64 * 1024 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    pub fn reset(&mut self) {
        self.buf.clear();
        self.start = 0;
    }

    /// The next complete frame, `Ok(None)` if more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        let avail = &self.buf[self.start..];
        if avail.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([avail[0], avail[1], avail[2], avail[3]]);
        if (len as usize) < HEADER_REST {
            return Err(FrameError::TooShort(len));
        }
        if len as usize - HEADER_REST > MAX_PAYLOAD {
            return Err(FrameError::TooLarge(len));
        }
        let total = 4 + len as usize;
        if avail.len() < total {
            return Ok(None);
        }
        let ty = avail[4];
        let stream = u32::from_be_bytes([avail[5], avail[6], avail[7], avail[8]]);
        let payload = avail[9..total].to_vec();
        self.start += total;
        Ok(Some(Frame {
            ty,
            stream,
            payload,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let bytes = encode(EXEC, 7, b"{}");
        assert_eq!(bytes, [0, 0, 0, 7, 2, 0, 0, 0, 7, b'{', b'}']);
        let mut d = Decoder::new();
        d.push(&bytes);
        assert_eq!(
            d.next_frame().unwrap(),
            Some(Frame {
                ty: EXEC,
                stream: 7,
                payload: b"{}".to_vec()
            })
        );
        assert_eq!(d.next_frame().unwrap(), None);
    }

    #[test]
    fn partial_frames_byte_by_byte() {
        let mut all = encode(STDOUT, 1, b"hello");
        all.extend(encode(EXIT, 1, b""));
        all.extend(encode(PING, 0, &[9; 300]));
        let mut d = Decoder::new();
        let mut got = Vec::new();
        for b in &all {
            d.push(&[*b]);
            while let Some(f) = d.next_frame().unwrap() {
                got.push(f);
            }
        }
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].payload, b"hello");
        assert_eq!(got[1].ty, EXIT);
        assert!(got[1].payload.is_empty());
        assert_eq!(got[2].payload.len(), 300);
    }

    #[test]
    fn oversize_length_rejected() {
        let mut d = Decoder::new();
        let len = (MAX_PAYLOAD + 6) as u32;
        d.push(&len.to_be_bytes());
        assert_eq!(d.next_frame(), Err(FrameError::TooLarge(len)));
        let mut d = Decoder::new();
        d.push(&((MAX_PAYLOAD + 5) as u32).to_be_bytes());
        assert_eq!(d.next_frame(), Ok(None), "exactly 1 MiB payload is allowed");
    }

    #[test]
    fn short_length_rejected() {
        let mut d = Decoder::new();
        d.push(&[0, 0, 0, 4, 1, 0, 0, 0]);
        assert_eq!(d.next_frame(), Err(FrameError::TooShort(4)));
    }
}
