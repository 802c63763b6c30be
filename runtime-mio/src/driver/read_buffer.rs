//! The event loop's reused read buffer: one socket read at a time, never zeroed first.
//!
//! [`ReadBuffer::recv`] reads into the spare capacity of one allocation (the kernel writes the bytes,
//! so nothing is cleared beforehand: at 256 KiB per read, a `memset` was 2–5% of a relay's CPU), then
//! [`ReadBuffer::take`] hands them to a session with [`take_read`]: a small read is copied out and the
//! allocation stays for the next read; a large one leaves with the whole allocation and the next read
//! gets a fresh one. So a loop keeps one allocation of at most the largest read asked for, and only
//! while it is not handed over.

use std::io;

use bytes::BytesMut;
use mio::net::TcpStream;
use socket2::SockRef;
use wsbridge_core::session::take_read;

#[derive(Debug, Default)]
pub(crate) struct ReadBuffer {
    /// Empty between a `take` and the next `recv`; holds the last read's bytes in between.
    buf: BytesMut,
}

impl ReadBuffer {
    /// One `recv` of at most `want` bytes from `sock`; a positive count is then [`ReadBuffer::take`]n
    /// before the next call. `Ok(0)` is end of stream; errors (`WouldBlock` included) are the socket's.
    pub(crate) fn recv(&mut self, sock: &TcpStream, want: usize) -> io::Result<usize> {
        debug_assert!(self.buf.is_empty(), "the last read was not taken");
        self.buf.clear();
        if self.buf.capacity() < want {
            // A fresh allocation of exactly `want`, not a grown one (growing may double it).
            self.buf = BytesMut::with_capacity(want);
        }
        let n = SockRef::from(sock).recv(&mut self.buf.spare_capacity_mut()[..want])?;
        // SAFETY: socket2's `recv` returns how many bytes the kernel wrote at the start of the slice
        // it was given, which is the start of the spare capacity; `n <= want <= capacity`.
        #[allow(unsafe_code)]
        unsafe {
            self.buf.set_len(n);
        }
        Ok(n)
    }

    /// The bytes of the last [`ReadBuffer::recv`], as the session's own.
    pub(crate) fn take(&mut self) -> BytesMut {
        take_read(&mut self.buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::TcpListener;
    use wsbridge_core::session::SMALL_READ;

    /// A connected pair: the std end writes, the mio end is read through the buffer.
    fn pair() -> (std::net::TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let w = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (r, _) = l.accept().unwrap();
        (w, TcpStream::from_std(r))
    }

    /// Reads until `n` bytes came in one `recv` (the writer's bytes may arrive in pieces).
    fn recv_all(rb: &mut ReadBuffer, sock: &TcpStream, want: usize, n: usize) -> BytesMut {
        let mut got = BytesMut::new();
        for _ in 0..1000 {
            match rb.recv(sock, want) {
                Ok(k) => got.extend_from_slice(&rb.take()[..k]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(std::time::Duration::from_millis(2))
                }
                Err(e) => panic!("{e}"),
            }
            if got.len() >= n {
                break;
            }
        }
        got
    }

    #[test]
    fn small_reads_are_copied_and_keep_the_allocation_large_ones_take_it() {
        let (mut w, r) = pair();
        let mut rb = ReadBuffer::default();
        w.write_all(b"abc").unwrap();
        assert_eq!(&recv_all(&mut rb, &r, 64 << 10, 3)[..], b"abc");
        let at = rb.buf.as_ptr();
        assert_eq!(rb.buf.capacity(), 64 << 10, "kept for the next read");

        let big = vec![7u8; SMALL_READ];
        w.write_all(&big).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let n = rb.recv(&r, 64 << 10).unwrap();
        assert_eq!(n, SMALL_READ, "one read of everything written");
        let taken = rb.take();
        assert_eq!(
            (&taken[..], taken.as_ptr()),
            (&big[..], at),
            "handed over in place"
        );
        assert_eq!(
            rb.buf.capacity(),
            0,
            "the next read gets a fresh allocation"
        );

        w.write_all(b"z").unwrap();
        drop(w);
        assert_eq!(&recv_all(&mut rb, &r, 64 << 10, 1)[..], b"z");
        assert_eq!(rb.recv(&r, 64 << 10).unwrap(), 0, "end of stream");
    }
}
