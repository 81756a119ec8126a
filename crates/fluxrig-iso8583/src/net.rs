//! Framed ISO 8583 streams on tokio (feature `net`).

use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

use crate::framing::{Frame, FrameError, Framing};

/// Why a framed stream stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetError {
    /// The transport failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// A frame was refused: the connection should be closed.
    #[error("bad frame: {0}")]
    Frame(#[from] FrameError),
    /// The peer closed the connection in the middle of a frame.
    #[error("connection closed inside a frame ({0} bytes pending)")]
    Truncated(usize),
    /// No complete frame arrived for this long (an idle or stalled peer).
    #[error("no complete frame for {0:?}")]
    Idle(std::time::Duration),
}

/// Reads frames from a byte stream into one reused buffer.
#[derive(Debug)]
pub struct FrameReader<R> {
    inner: R,
    framing: Framing,
    buf: Vec<u8>,
    start: usize,
    consumed: usize,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// A reader with `framing`.
    pub fn new(inner: R, framing: Framing) -> FrameReader<R> {
        FrameReader {
            inner,
            framing,
            buf: Vec::with_capacity(16 * 1024),
            start: 0,
            consumed: 0,
        }
    }

    /// The next frame; `Ok(None)` when the peer closed the connection
    /// between frames. The frame borrows the reader's buffer until the next call.
    pub async fn next_frame(&mut self) -> Result<Option<Frame<'_>>, NetError> {
        self.start += self.consumed;
        self.consumed = 0;
        loop {
            if let Some((_, used)) = self.framing.cut(&self.buf[self.start..])? {
                self.consumed = used;
                let (frame, _) = self
                    .framing
                    .cut(&self.buf[self.start..])?
                    .ok_or(NetError::Truncated(0))?;
                return Ok(Some(frame));
            }
            // Need more bytes: compact, then read.
            if self.start > 0 {
                self.buf.drain(..self.start);
                self.start = 0;
            }
            let len = self.buf.len();
            let want = (self.framing.max_frame + 4).max(4096);
            if self.buf.capacity() - len < 1024 {
                self.buf.reserve(want);
            }
            let n = self.inner.read_buf(&mut self.buf).await?;
            if n == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(NetError::Truncated(self.buf.len()))
                };
            }
        }
    }

    /// The next frame already in the buffer, without reading: lets a
    /// server answer a burst of pipelined requests with one write.
    pub fn buffered_frame(&mut self) -> Result<Option<Frame<'_>>, NetError> {
        self.start += self.consumed;
        self.consumed = 0;
        let Some((_, used)) = self.framing.cut(&self.buf[self.start..])? else {
            return Ok(None);
        };
        self.consumed = used;
        Ok(self.framing.cut(&self.buf[self.start..])?.map(|(f, _)| f))
    }

    /// The underlying stream.
    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }
}

/// Writes one frame, using `scratch` as the output buffer.
pub async fn write_frame<W: AsyncWrite + Unpin>(
    w: &mut W,
    framing: &Framing,
    header: &[u8],
    message: &[u8],
    scratch: &mut Vec<u8>,
) -> Result<(), NetError> {
    scratch.clear();
    framing.write(header, message, scratch)?;
    w.write_all(scratch).await?;
    Ok(())
}
