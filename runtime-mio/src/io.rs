//! Socket plumbing for non-blocking, edge-triggered drivers. No protocol logic lives here.
//!
//! mio reports readiness edge-triggered: after a readable (writable) event the driver must read (write)
//! until the socket answers `WouldBlock`, or remember that it may still be ready and come back later.
//! The two helpers make that loop explicit:
//!
//! - [`read_available`] reads into a reused buffer until `WouldBlock`, end of stream, an error or a byte
//!   budget (the budget keeps one busy peer from starving the others), and hands the bytes over as one
//!   [`BytesMut`] that the sans-IO core can take by value;
//! - [`write_from`] writes anything that offers its queued bytes as [`IoSlice`]s ([`Outgoing`], implemented
//!   for [`WebSocket`] and [`Bytes`]) with vectored writes until it is empty or the socket would block.
//!
//! Both retry `Interrupted` and never block on their own: they are meant for sockets in non-blocking mode.

use std::io::{self, IoSlice, Read, Write};

use bytes::{Buf, Bytes, BytesMut};
use wsbridge_core::session::take_read;
use wsbridge_core::ws::WebSocket;

/// Bytes asked of the kernel per `read` call. Each read frees receive-queue space the kernel then
/// announces in a window-update ACK, so fewer, bigger reads move a GiB with fewer TCP segments (through
/// the tunnel, about 65,000 per GiB at 256 KiB against 84,000 at 64 KiB, the same as `socat -b 262144`)
/// and a quarter of the `recv` calls. It costs one buffer of this size per event loop, and a view of
/// one read chunk while a session holds bytes of it.
pub const READ_CHUNK: usize = 256 * 1024;

/// Most slices handed to one `write_vectored` call.
pub const MAX_SLICES: usize = 64;

/// What [`read_available`] found.
#[derive(Debug)]
pub enum ReadOutcome {
    /// Bytes read (never empty). The socket may still hold more: call again, which either reads more or
    /// reports `WouldBlock`, end of stream or an error.
    Data(BytesMut),
    /// Nothing to read now: wait for the next readable event.
    WouldBlock,
    /// The peer closed its side (a read returned 0). Every later call says so again.
    Eof,
    /// The read failed (e.g. connection reset). The socket is unusable for reading.
    Error(io::Error),
}

/// Reads from a non-blocking `sock` until it would block, reaches end of stream, fails, or `budget`
/// bytes were read (never more; a `budget` of 0 counts as 1).
///
/// `buf` is scratch space reused across calls, read into and handed over by
/// [`take_read`]: a small read is copied out and `buf` keeps its allocation, a large one takes it along.
/// Bytes `buf` already held on entry are returned in front of the new ones.
///
/// Data comes first: if bytes were read before a `WouldBlock`, end of stream or error, this call returns
/// [`ReadOutcome::Data`] and the next call reports what stopped it (end of stream and `WouldBlock` repeat;
/// after a reset, the OS reports end of stream on the next call).
pub fn read_available<R: Read + ?Sized>(
    sock: &mut R,
    buf: &mut BytesMut,
    budget: usize,
) -> ReadOutcome {
    let budget = budget.max(1);
    let start = buf.len();
    let stop = loop {
        let got = buf.len() - start;
        if got >= budget {
            break None;
        }
        let want = READ_CHUNK.min(budget - got);
        let len = buf.len();
        buf.resize(len + want, 0);
        match sock.read(&mut buf[len..]) {
            Ok(n) => {
                buf.truncate(len + n);
                if n == 0 {
                    break Some(ReadOutcome::Eof);
                }
            }
            Err(e) => {
                buf.truncate(len);
                match e.kind() {
                    io::ErrorKind::Interrupted => continue,
                    io::ErrorKind::WouldBlock => break Some(ReadOutcome::WouldBlock),
                    _ => break Some(ReadOutcome::Error(e)),
                }
            }
        }
    };
    match stop {
        Some(outcome) if buf.is_empty() => outcome,
        // The budget (at least one byte) was reached, so `buf` holds data.
        _ => ReadOutcome::Data(take_read(buf)),
    }
}

/// A queue of outgoing bytes that can be written with vectored writes: the shape of the core's outputs
/// (`slices` fills `dst` in wire order and returns how many it filled; `advance(n)` drops the first `n`
/// bytes once the socket took them).
pub trait Outgoing {
    /// Fills `dst` with the next bytes to write, in order; returns how many slices it filled (0: empty).
    fn slices<'a>(&'a self, dst: &mut [IoSlice<'a>]) -> usize;
    /// The socket took the first `n` bytes of what `slices` offered.
    fn advance(&mut self, n: usize);
}

impl Outgoing for WebSocket {
    fn slices<'a>(&'a self, dst: &mut [IoSlice<'a>]) -> usize {
        WebSocket::slices(self, dst)
    }
    fn advance(&mut self, n: usize) {
        WebSocket::advance(self, n)
    }
}

/// A single buffer, e.g. an HTTP response or request head.
impl Outgoing for Bytes {
    fn slices<'a>(&'a self, dst: &mut [IoSlice<'a>]) -> usize {
        match dst.first_mut() {
            Some(slot) if !self.is_empty() => {
                *slot = IoSlice::new(self);
                1
            }
            _ => 0,
        }
    }
    fn advance(&mut self, n: usize) {
        Buf::advance(self, n)
    }
}

/// How far [`write_from`] got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flush {
    /// Bytes the socket took in this call.
    pub written: usize,
    /// The socket would block with bytes still queued: wait for the next writable event. When false, the
    /// queue is empty.
    pub blocked: bool,
}

/// Writes `src` to a non-blocking `sock`, up to [`MAX_SLICES`] slices per `write_vectored`, until `src`
/// is empty or the socket would block, calling `src.advance` after every write (short writes included).
///
/// Errors other than `WouldBlock` and `Interrupted` are returned as they are (the connection is broken;
/// what was written so far has been advanced past); a write that takes 0 bytes of a non-empty queue is
/// `WriteZero`.
pub fn write_from<W: Write + ?Sized, O: Outgoing + ?Sized>(
    sock: &mut W,
    src: &mut O,
) -> io::Result<Flush> {
    let mut written = 0;
    loop {
        let mut slots = [IoSlice::new(&[]); MAX_SLICES];
        let n = src.slices(&mut slots);
        if n == 0 {
            return Ok(Flush {
                written,
                blocked: false,
            });
        }
        match sock.write_vectored(&slots[..n]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(k) => {
                src.advance(k);
                written += k;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                return Ok(Flush {
                    written,
                    blocked: true,
                })
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    /// A scripted non-blocking socket: each read pops one step.
    struct Script(VecDeque<io::Result<Vec<u8>>>);

    impl Read for Script {
        fn read(&mut self, dst: &mut [u8]) -> io::Result<usize> {
            match self.0.pop_front() {
                None => Err(io::ErrorKind::WouldBlock.into()),
                Some(Ok(mut v)) => {
                    let n = v.len().min(dst.len());
                    dst[..n].copy_from_slice(&v[..n]);
                    if n < v.len() {
                        self.0.push_front(Ok(v.split_off(n)));
                    }
                    Ok(n)
                }
                Some(Err(e)) => Err(e),
            }
        }
    }

    fn data(o: ReadOutcome) -> Vec<u8> {
        match o {
            ReadOutcome::Data(d) => d.to_vec(),
            other => panic!("expected data, got {other:?}"),
        }
    }

    #[test]
    fn reads_until_would_block_then_reports_it() {
        let mut s = Script(VecDeque::from([
            Ok(b"ab".to_vec()),
            Err(io::ErrorKind::Interrupted.into()),
            Ok(b"cd".to_vec()),
        ]));
        let mut buf = BytesMut::new();
        assert_eq!(data(read_available(&mut s, &mut buf, 1 << 20)), b"abcd");
        assert!(matches!(
            read_available(&mut s, &mut buf, 1 << 20),
            ReadOutcome::WouldBlock
        ));
    }

    #[test]
    fn data_before_eof_comes_first_and_eof_repeats() {
        let mut s = Script(VecDeque::from([Ok(b"x".to_vec()), Ok(Vec::new())]));
        let mut buf = BytesMut::new();
        assert_eq!(data(read_available(&mut s, &mut buf, 1 << 20)), b"x");
        s.0.push_back(Ok(Vec::new()));
        assert!(matches!(
            read_available(&mut s, &mut buf, 1 << 20),
            ReadOutcome::Eof
        ));
    }

    #[test]
    fn budget_bounds_one_call() {
        let mut s = Script(VecDeque::from([Ok(vec![7; 10_000])]));
        let mut buf = BytesMut::new();
        assert_eq!(data(read_available(&mut s, &mut buf, 4000)).len(), 4000);
        assert_eq!(data(read_available(&mut s, &mut buf, 1 << 20)).len(), 6000);
        let mut s = Script(VecDeque::from([Err(io::ErrorKind::ConnectionReset.into())]));
        assert!(matches!(
            read_available(&mut s, &mut buf, 10),
            ReadOutcome::Error(_)
        ));
    }

    /// Takes at most `cap` bytes per write, then would block once the total reaches `limit`.
    struct Sink {
        out: Vec<u8>,
        cap: usize,
        limit: usize,
    }

    impl Write for Sink {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.write_vectored(&[IoSlice::new(b)])
        }
        fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            if self.out.len() >= self.limit {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let mut room = self.cap.min(self.limit - self.out.len());
            let before = self.out.len();
            for b in bufs {
                let n = room.min(b.len());
                self.out.extend_from_slice(&b[..n]);
                room -= n;
            }
            Ok(self.out.len() - before)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn short_writes_advance_and_would_block_stops() {
        let mut src = Bytes::from_static(b"hello world");
        let mut sink = Sink {
            out: Vec::new(),
            cap: 3,
            limit: 7,
        };
        let f = write_from(&mut sink, &mut src).expect("no error");
        assert_eq!(
            f,
            Flush {
                written: 7,
                blocked: true
            }
        );
        assert_eq!(&src[..], b"orld");
        sink.limit = usize::MAX;
        let f = write_from(&mut sink, &mut src).expect("no error");
        assert!(!f.blocked);
        assert_eq!(sink.out, b"hello world");
        assert!(src.is_empty());
    }
}
