//! Decode and encode throughput of 64 KiB masked binary frames: wsbridge-core against tungstenite on the
//! same bytes, in one run. `scripts/codec-bench.sh` runs this and prints the ratio table for the README.
//!
//! Both sides are charged the same copies: the input is copied into the engine in 64 KiB reads (as from a
//! socket), and the output is copied into a reused `Vec` (as into a socket).

use std::hint::black_box;
use std::io::{self, IoSlice, Read, Write};

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use wsbridge_core::ws::{Event, Role, WebSocket};
use wsbridge_core::{CounterEntropy, WsConfig};

const FRAME: usize = 64 << 10;
const FRAMES: usize = 16;
const READ: usize = 64 << 10;

fn config() -> WsConfig {
    WsConfig {
        max_frame_size: 1 << 20,
        max_read_buffer: 1 << 20,
        ..WsConfig::default()
    }
}

fn payload() -> Vec<u8> {
    (0..FRAME).map(|i| (i * 31 % 251) as u8).collect()
}

/// `FRAMES` masked binary frames of `FRAME` bytes, as a client sends them.
fn masked_wire() -> Vec<u8> {
    let mut client = WebSocket::new(Role::Client(Box::new(CounterEntropy(1))), &config());
    let mut wire = Vec::new();
    for _ in 0..FRAMES {
        client.send_binary(Bytes::from(payload()), true).unwrap();
        drain_into(&mut client, &mut wire);
    }
    wire
}

fn drain_into(ws: &mut WebSocket, out: &mut Vec<u8>) {
    while ws.wants_write() {
        let mut slots = [IoSlice::new(&[]); 16];
        let k = ws.slices(&mut slots);
        let n = out.write_vectored(&slots[..k]).unwrap();
        ws.advance(n);
    }
}

/// Our server decoding the wire, read in 64 KiB pieces the way a driver reads: into the spare capacity of
/// one buffer, split off and handed over; returns the payload bytes seen.
fn ours_decode(wire: &[u8]) -> usize {
    let mut server = WebSocket::new(Role::Server, &config());
    let mut read_buf = BytesMut::new();
    let mut seen = 0;
    for chunk in wire.chunks(READ) {
        if read_buf.capacity() < READ {
            read_buf.reserve(4 * READ);
        }
        read_buf.extend_from_slice(chunk);
        server.handle_input(read_buf.split());
        while let Some(ev) = server.poll_event() {
            if let Event::Binary { data, .. } = ev {
                seen += black_box(data).len();
            }
        }
    }
    seen
}

/// A stream that yields `wire` in 64 KiB reads and swallows writes into a reused buffer.
struct Pipe<'a> {
    input: &'a [u8],
    output: Vec<u8>,
}

impl Read for Pipe<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf.len().min(READ).min(self.input.len());
        buf[..n].copy_from_slice(&self.input[..n]);
        self.input = &self.input[n..];
        Ok(n)
    }
}

impl Write for Pipe<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.output.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn tungstenite_config() -> tungstenite::protocol::WebSocketConfig {
    tungstenite::protocol::WebSocketConfig::default()
        .max_frame_size(Some(1 << 20))
        .max_message_size(Some(1 << 20))
}

/// tungstenite's server decoding the same wire; returns the payload bytes seen.
fn tungstenite_decode(wire: &[u8]) -> usize {
    use tungstenite::protocol::{Role as TRole, WebSocket as TWebSocket};
    let pipe = Pipe {
        input: wire,
        output: Vec::new(),
    };
    let mut ws = TWebSocket::from_raw_socket(pipe, TRole::Server, Some(tungstenite_config()));
    let mut seen = 0;
    for _ in 0..FRAMES {
        match ws.read().unwrap() {
            tungstenite::Message::Binary(b) => seen += black_box(b).len(),
            other => panic!("unexpected {other:?}"),
        }
    }
    seen
}

/// Our client masking and queueing `FRAMES` frames, written into `out`.
fn ours_encode(template: &[u8], out: &mut Vec<u8>) -> usize {
    out.clear();
    let mut client = WebSocket::new(Role::Client(Box::new(CounterEntropy(1))), &config());
    for _ in 0..FRAMES {
        // As read from a TCP socket: a fresh buffer the engine may mask in place.
        client
            .send_binary(BytesMut::from(template).freeze(), true)
            .unwrap();
        drain_into(&mut client, out);
    }
    out.len()
}

/// tungstenite's client doing the same.
fn tungstenite_encode(template: &[u8], out: &mut Vec<u8>) -> usize {
    use tungstenite::protocol::{Role as TRole, WebSocket as TWebSocket};
    out.clear();
    let pipe = Pipe {
        input: &[],
        output: std::mem::take(out),
    };
    let mut ws = TWebSocket::from_raw_socket(pipe, TRole::Client, Some(tungstenite_config()));
    for _ in 0..FRAMES {
        ws.send(tungstenite::Message::Binary(Bytes::copy_from_slice(
            template,
        )))
        .unwrap();
    }
    *out = std::mem::take(&mut ws.get_mut().output);
    out.len()
}

fn codec(c: &mut Criterion) {
    let wire = masked_wire();
    let total = (FRAME * FRAMES) as u64;
    assert_eq!(ours_decode(&wire), total as usize);
    assert_eq!(
        tungstenite_decode(&wire),
        total as usize,
        "tungstenite must read what we wrote"
    );

    let mut group = c.benchmark_group("decode_64k_masked");
    group.throughput(Throughput::Bytes(total));
    group.bench_function(BenchmarkId::new("wsbridge", FRAME), |b| {
        b.iter(|| ours_decode(black_box(&wire)))
    });
    group.bench_function(BenchmarkId::new("tungstenite", FRAME), |b| {
        b.iter(|| tungstenite_decode(black_box(&wire)))
    });
    group.finish();

    let template = payload();
    let mut out = Vec::with_capacity(wire.len() + 1024);
    let ours_len = ours_encode(&template, &mut out);
    assert_eq!(ours_decode(&out), total as usize);
    let theirs_len = tungstenite_encode(&template, &mut out);
    assert_eq!(ours_len, theirs_len, "both encodings have the same length");
    let mut group = c.benchmark_group("encode_64k_masked");
    group.throughput(Throughput::Bytes(total));
    group.bench_function(BenchmarkId::new("wsbridge", FRAME), |b| {
        b.iter(|| ours_encode(black_box(&template), &mut out))
    });
    group.bench_function(BenchmarkId::new("tungstenite", FRAME), |b| {
        b.iter(|| tungstenite_encode(black_box(&template), &mut out))
    });
    group.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
