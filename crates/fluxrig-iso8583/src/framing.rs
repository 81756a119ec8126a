//! Framing of ISO 8583 messages on a byte stream: a length prefix, an
//! optional fixed-size header (TPDU or network header) kept bit-perfect,
//! then the message. No I/O here; see the `net` feature for tokio streams.

use std::fmt;
use std::str::FromStr;

/// How the length of a frame is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LengthPrefix {
    /// 2 bytes, binary, big endian (the most common).
    Binary2Be,
    /// 2 bytes, binary, little endian.
    Binary2Le,
    /// 4 ASCII decimal digits.
    Ascii4,
}

impl LengthPrefix {
    /// Width in bytes.
    pub fn width(self) -> usize {
        match self {
            LengthPrefix::Binary2Be | LengthPrefix::Binary2Le => 2,
            LengthPrefix::Ascii4 => 4,
        }
    }

    /// Largest frame length it can express.
    pub fn capacity(self) -> usize {
        match self {
            LengthPrefix::Binary2Be | LengthPrefix::Binary2Le => 65_535,
            LengthPrefix::Ascii4 => 9_999,
        }
    }
}

impl fmt::Display for LengthPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LengthPrefix::Binary2Be => "2be",
            LengthPrefix::Binary2Le => "2le",
            LengthPrefix::Ascii4 => "4ascii",
        })
    }
}

impl FromStr for LengthPrefix {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "2be" => Ok(LengthPrefix::Binary2Be),
            "2le" => Ok(LengthPrefix::Binary2Le),
            "4ascii" => Ok(LengthPrefix::Ascii4),
            _ => Err(format!(
                "unknown length prefix `{s}` (use 2be, 2le or 4ascii)"
            )),
        }
    }
}

/// Why a frame is refused. The connection it came on should be closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The length prefix is not a number.
    #[error("length prefix is not a number")]
    BadPrefix,
    /// The announced length is over the limit.
    #[error("frame of {len} bytes is over the limit of {max}")]
    TooLarge {
        /// Announced length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The frame is shorter than its header.
    #[error("frame of {len} bytes is shorter than the {header}-byte header")]
    ShorterThanHeader {
        /// Announced length.
        len: usize,
        /// Header size.
        header: usize,
    },
}

/// The framing of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Framing {
    /// The length prefix.
    pub prefix: LengthPrefix,
    /// Bytes of header (TPDU, network header) between the prefix and the
    /// MTI; counted in the length; kept as they are.
    pub header_len: usize,
    /// Largest frame accepted or written (prefix excluded).
    pub max_frame: usize,
}

impl Default for Framing {
    fn default() -> Self {
        Framing {
            prefix: LengthPrefix::Binary2Be,
            header_len: 0,
            max_frame: 8192,
        }
    }
}

/// One frame cut from a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    /// The header bytes (empty without a header).
    pub header: &'a [u8],
    /// The ISO 8583 message.
    pub message: &'a [u8],
}

impl Framing {
    /// Cuts the first frame from `buf`: `Ok(None)` when more bytes are
    /// needed, else the frame and the bytes it used.
    pub fn cut<'a>(&self, buf: &'a [u8]) -> Result<Option<(Frame<'a>, usize)>, FrameError> {
        let w = self.prefix.width();
        if buf.len() < w {
            return Ok(None);
        }
        let len = match self.prefix {
            LengthPrefix::Binary2Be => usize::from(u16::from_be_bytes([buf[0], buf[1]])),
            LengthPrefix::Binary2Le => usize::from(u16::from_le_bytes([buf[0], buf[1]])),
            LengthPrefix::Ascii4 => buf[..4]
                .iter()
                .try_fold(0_usize, |a, &c| {
                    c.is_ascii_digit().then(|| a * 10 + usize::from(c - b'0'))
                })
                .ok_or(FrameError::BadPrefix)?,
        };
        if len > self.max_frame {
            return Err(FrameError::TooLarge {
                len,
                max: self.max_frame,
            });
        }
        if len < self.header_len || len == 0 {
            return Err(FrameError::ShorterThanHeader {
                len,
                header: self.header_len,
            });
        }
        if buf.len() < w + len {
            return Ok(None);
        }
        let body = &buf[w..w + len];
        Ok(Some((
            Frame {
                header: &body[..self.header_len],
                message: &body[self.header_len..],
            },
            w + len,
        )))
    }

    /// Appends a frame (prefix, header, message) to `out`.
    pub fn write(
        &self,
        header: &[u8],
        message: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), FrameError> {
        let len = header.len() + message.len();
        let max = self.max_frame.min(self.prefix.capacity());
        if len > max {
            return Err(FrameError::TooLarge { len, max });
        }
        match self.prefix {
            LengthPrefix::Binary2Be => {
                out.extend_from_slice(&u16::try_from(len).unwrap_or(u16::MAX).to_be_bytes());
            }
            LengthPrefix::Binary2Le => {
                out.extend_from_slice(&u16::try_from(len).unwrap_or(u16::MAX).to_le_bytes());
            }
            LengthPrefix::Ascii4 => out.extend_from_slice(format!("{len:04}").as_bytes()),
        }
        out.extend_from_slice(header);
        out.extend_from_slice(message);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_and_writes_each_prefix_with_a_header() {
        for prefix in [
            LengthPrefix::Binary2Be,
            LengthPrefix::Binary2Le,
            LengthPrefix::Ascii4,
        ] {
            let f = Framing {
                prefix,
                header_len: 5,
                max_frame: 100,
            };
            let mut out = Vec::new();
            f.write(b"\x60\x00\x01\x00\x00", b"0800", &mut out).unwrap();
            f.write(b"HHHHH", b"0810", &mut out).unwrap();
            let (fr, used) = f.cut(&out).unwrap().unwrap();
            assert_eq!(fr.header, b"\x60\x00\x01\x00\x00");
            assert_eq!(fr.message, b"0800");
            let (fr2, used2) = f.cut(&out[used..]).unwrap().unwrap();
            assert_eq!((fr2.header, fr2.message), (&b"HHHHH"[..], &b"0810"[..]));
            assert_eq!(used + used2, out.len());
            assert_eq!(f.cut(&out[..used - 1]).unwrap(), None);
        }
    }

    #[test]
    fn refuses_garbage() {
        let f = Framing {
            prefix: LengthPrefix::Ascii4,
            header_len: 0,
            max_frame: 100,
        };
        assert_eq!(f.cut(b"00x1abc"), Err(FrameError::BadPrefix));
        assert_eq!(
            f.cut(b"0200"),
            Err(FrameError::TooLarge { len: 200, max: 100 })
        );
        assert!(f.cut(b"0000").is_err());
    }
}
