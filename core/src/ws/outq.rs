//! The outgoing byte queue of one connection leg, written with vectored writes.
//!
//! Two lanes feed it: **data** (pieces of frames, or plain bytes on a TCP leg) and **control** (whole
//! control frames). A control frame jumps every data frame that has not started going out, but never splits
//! one that has: the rest of a partly written data frame goes first. The driver's cycle is
//!
//! 1. [`OutQueue::slices`] fills an `IoSlice` array in wire order;
//! 2. it writes them with `write_vectored`;
//! 3. [`OutQueue::advance`] drops what the kernel took (a short write just leaves the rest in place).
//!
//! The queue holds shared [`Bytes`], so queuing a payload that was read from another socket copies nothing,
//! and it holds no memory of its own while it is empty (an idle connection keeps no queue).

use std::collections::VecDeque;
use std::io::IoSlice;

use bytes::{Buf, Bytes};

/// One piece of the data lane.
#[derive(Debug)]
struct Piece {
    bytes: Bytes,
    /// The last piece of its frame: after it, a control frame may go.
    frame_end: bool,
}

/// See the module docs.
#[derive(Debug, Default)]
pub struct OutQueue {
    control: VecDeque<Bytes>,
    data: VecDeque<Piece>,
    /// Some bytes of the front data frame are on the wire: its remaining pieces go before any control frame.
    data_started: bool,
    len: usize,
}

impl OutQueue {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes queued and not yet written.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Nothing to write.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Control frames queued and not fully written.
    pub fn control_frames(&self) -> usize {
        self.control.len()
    }

    /// Queues one piece of a data frame; `frame_end` marks the frame's last piece. Empty pieces are
    /// dropped (but still end their frame).
    pub fn push_data(&mut self, bytes: Bytes, frame_end: bool) {
        if bytes.is_empty() {
            if frame_end {
                if let Some(last) = self.data.back_mut() {
                    last.frame_end = true;
                }
            }
            return;
        }
        self.len += bytes.len();
        self.data.push_back(Piece { bytes, frame_end });
    }

    /// Queues a whole control frame ahead of every data frame that has not started.
    pub fn push_control(&mut self, frame: Bytes) {
        self.len += frame.len();
        self.control.push_back(frame);
    }

    /// Fills `dst` with the queued bytes in wire order; returns how many slices it filled.
    pub fn slices<'a>(&'a self, dst: &mut [IoSlice<'a>]) -> usize {
        let split = if self.data_started {
            self.front_frame_pieces()
        } else {
            0
        };
        let order = self.data.iter().take(split).map(|p| &p.bytes);
        let order = order.chain(self.control.iter());
        let order = order.chain(self.data.iter().skip(split).map(|p| &p.bytes));
        let mut n = 0;
        for (slot, bytes) in dst.iter_mut().zip(order) {
            *slot = IoSlice::new(bytes);
            n += 1;
        }
        n
    }

    /// The first bytes in wire order (for tests and for drivers without vectored writes).
    pub fn front(&self) -> &[u8] {
        if self.data_started || self.control.is_empty() {
            self.data.front().map_or(&[][..], |p| &p.bytes[..])
        } else {
            &self.control[0]
        }
    }

    /// Drops the first `n` bytes in wire order (those the last write took).
    ///
    /// # Panics
    /// If `n` exceeds [`OutQueue::len`]: the driver wrote bytes it was not given.
    /// Once nothing is left, the lanes' memory is released.
    pub fn advance(&mut self, n: usize) {
        assert!(n <= self.len, "advance past the end of the queue");
        self.len -= n;
        self.drop_front(n);
        if self.len == 0 {
            self.control = VecDeque::new();
            self.data = VecDeque::new();
        }
    }

    /// Drops the first `n` bytes in wire order from the lanes.
    fn drop_front(&mut self, mut n: usize) {
        while n > 0 {
            if self.data_started || self.control.is_empty() {
                let Some(piece) = self.data.front_mut() else {
                    break;
                };
                if n < piece.bytes.len() {
                    piece.bytes.advance(n);
                    self.data_started = true;
                    return;
                }
                n -= piece.bytes.len();
                self.data_started = !piece.frame_end;
                self.data.pop_front();
            } else {
                let frame = &mut self.control[0];
                if n < frame.len() {
                    frame.advance(n);
                    return;
                }
                n -= frame.len();
                self.control.pop_front();
            }
        }
    }

    /// How many pieces the front data frame has left.
    fn front_frame_pieces(&self) -> usize {
        self.data
            .iter()
            .position(|p| p.frame_end)
            .map_or(self.data.len(), |i| i + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn drain(q: &mut OutQueue, write_sizes: &[usize]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut sizes = write_sizes.iter().cycle();
        while !q.is_empty() {
            let mut slots = [IoSlice::new(&[]); 4];
            let k = q.slices(&mut slots);
            let mut budget = (*sizes.next().unwrap()).max(1);
            let mut took = 0;
            for s in &slots[..k] {
                let t = budget.min(s.len());
                out.extend_from_slice(&s[..t]);
                took += t;
                budget -= t;
                if budget == 0 {
                    break;
                }
            }
            q.advance(took);
        }
        out
    }

    #[test]
    fn control_jumps_unstarted_data_but_not_a_started_frame() {
        let mut q = OutQueue::new();
        q.push_data(Bytes::from_static(b"[h1"), false);
        q.push_data(Bytes::from_static(b"p1]"), true);
        q.push_data(Bytes::from_static(b"[d2]"), true);
        q.advance(2); // "[h" is on the wire: frame 1 must finish first.
        q.push_control(Bytes::from_static(b"<c>"));
        let rest = drain(&mut q, &[100]);
        assert_eq!(rest, b"1p1]<c>[d2]");
    }

    #[test]
    fn a_drained_queue_releases_its_lanes() {
        let mut q = OutQueue::new();
        q.push_data(Bytes::from_static(b"[d1]"), true);
        q.push_control(Bytes::from_static(b"<c>"));
        q.advance(5);
        assert!(q.data.capacity() > 0, "still writing");
        q.advance(2);
        assert_eq!((q.data.capacity(), q.control.capacity()), (0, 0));
        // A frame that is not finished still keeps control frames out once drained.
        q.push_data(Bytes::from_static(b"[h"), false);
        q.advance(2);
        q.push_control(Bytes::from_static(b"<c>"));
        q.push_data(Bytes::from_static(b"p]"), true);
        assert_eq!(q.front(), b"p]");
    }

    #[test]
    fn control_goes_first_when_nothing_started() {
        let mut q = OutQueue::new();
        q.push_data(Bytes::from_static(b"[d1]"), true);
        q.push_control(Bytes::from_static(b"<c>"));
        assert_eq!(q.front(), b"<c>");
        assert_eq!(drain(&mut q, &[1]), b"<c>[d1]");
    }

    proptest! {
        /// Whatever the write sizes, frames come out whole and in order within each lane, and every byte
        /// comes out exactly once.
        #[test]
        fn any_write_sizes_keep_frames_whole(
            ops in proptest::collection::vec((any::<bool>(), 1usize..6, 1usize..4), 1..20),
            sizes in proptest::collection::vec(1usize..12, 1..8),
        ) {
            let mut q = OutQueue::new();
            let mut total = 0;
            for (i, (control, len, pieces)) in ops.iter().enumerate() {
                // Frame i is `len` copies of byte i, split into `pieces` pieces on the data lane.
                let frame = vec![i as u8; *len];
                total += len;
                if *control {
                    q.push_control(Bytes::from(frame));
                } else {
                    let step = len.div_ceil(*pieces);
                    let chunks: Vec<_> = frame.chunks(step).collect();
                    for (j, c) in chunks.iter().enumerate() {
                        q.push_data(Bytes::copy_from_slice(c), j + 1 == chunks.len());
                    }
                }
            }
            let out = drain(&mut q, &sizes);
            prop_assert_eq!(out.len(), total);
            // Each frame's bytes are contiguous.
            for (i, (_, len, _)) in ops.iter().enumerate() {
                let first = out.iter().position(|&b| b == i as u8).unwrap();
                prop_assert!(out[first..first + len].iter().all(|&b| b == i as u8));
            }
            // Within a lane, order is kept.
            for control in [true, false] {
                let lane: Vec<u8> = (0..ops.len()).filter(|&i| ops[i].0 == control).map(|i| i as u8).collect();
                let mut seen: Vec<u8> = out.iter().copied().filter(|b| lane.contains(b)).collect();
                seen.dedup();
                prop_assert_eq!(seen, lane);
            }
        }
    }
}
