//! The PROXY protocol header itself: [`parse`] (and the incremental [`HeaderReader`] over it), and the
//! writers [`encode_v1`] / [`encode_v2`].
//!
//! The specification is HAProxy's `proxy-protocol.txt`. What is accepted:
//! - **v1**: `PROXY TCP4 <src> <dst> <sport> <dport>\r\n`, the same with `TCP6`, or `PROXY UNKNOWN…\r\n`
//!   (whatever follows `UNKNOWN` is ignored, as the specification asks). At most 107 bytes with the
//!   CRLF. Single spaces, addresses in their canonical text form of the named family, ports decimal
//!   `0..=65535` without leading zeros;
//! - **v2**: the 12-byte signature, version 2, command `LOCAL` (addresses ignored: keep the socket's) or
//!   `PROXY` over `AF_INET`/`AF_INET6` + `STREAM` (addresses used), `AF_UNSPEC` or `AF_UNIX` (addresses
//!   not representable: keep the socket's). TLVs after the address block are skipped, but must be
//!   well formed, and the whole header is bounded by the reader's `max` (see [`DEFAULT_MAX_HEADER`]).
//!
//! Anything else is an error: the connection is closed, never guessed at. In particular a client that
//! sends no header at all (an HTTP request, a TLS ClientHello) is refused at its first byte.
//!
//! [`parse`] decides only from the bytes it is given, in a fixed order, so feeding a stream in any
//! chunks gives the same result as feeding it at once.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use bytes::{Bytes, BytesMut};

/// The v2 signature: `\r\n\r\n\0\r\nQUIT\n`.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// The longest v1 header, CRLF included (specification §2.1).
pub const V1_MAX: usize = 107;
/// The v2 fixed part: signature, version/command, family/transport, length.
pub const V2_FIXED: usize = 16;
/// The default bound of a whole header (v2 with TLVs). Enough for what HAProxy and cloud load
/// balancers send (addresses plus a few TLVs: ALPN, authority, SSL, a unique id, a VPC endpoint id).
pub const DEFAULT_MAX_HEADER: usize = 2048;

const V1_PREFIX: &[u8] = b"PROXY ";

/// Which version of the protocol a header used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// The text form.
    V1,
    /// The binary form.
    V2,
}

/// What a header says about the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Addresses {
    /// The proxied client (`source`) and the address it connected to (`destination`).
    Proxied {
        /// The original client.
        source: SocketAddr,
        /// Where the original client connected to.
        destination: SocketAddr,
    },
    /// `UNKNOWN` (v1), `LOCAL` or an address family without IP addresses (v2): keep the socket's peer.
    Local,
}

/// A parsed header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyHeader {
    /// How it was written.
    pub version: Version,
    /// What it said.
    pub addresses: Addresses,
}

impl ProxyHeader {
    /// The original client's address, if the header carried one.
    pub fn source(&self) -> Option<SocketAddr> {
        match self.addresses {
            Addresses::Proxied { source, .. } => Some(source),
            Addresses::Local => None,
        }
    }
}

/// Why a header was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxyError {
    /// The first bytes are neither `PROXY ` nor the v2 signature (e.g. no header was sent at all).
    NotProxy,
    /// No CRLF within the first 107 bytes of a v1 header.
    V1TooLong,
    /// A v1 line that breaks the grammar; says where.
    V1Malformed(&'static str),
    /// A port that is not a decimal number in `0..=65535` without leading zeros.
    BadPort,
    /// An address that is not one of the family the header names (v1 `TCP4` with an IPv6 address…).
    BadAddress,
    /// A v2 version nibble other than 2.
    V2Version(u8),
    /// A v2 command other than `LOCAL` (0) or `PROXY` (1).
    V2Command(u8),
    /// A v2 family/transport byte this bridge does not accept (datagram, or undefined values).
    V2Family(u8),
    /// A v2 length shorter than the address block its family needs.
    V2ShortAddresses,
    /// A v2 TLV that runs past the end of the header.
    V2BadTlv,
    /// The header is longer than the configured bound.
    TooLong {
        /// Its length (or the length read so far).
        len: usize,
        /// The bound.
        max: usize,
    },
    /// The connection ended inside the header.
    Truncated,
}

impl fmt::Display for ProxyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProxyError::NotProxy => f.write_str("no PROXY protocol header (bad signature)"),
            ProxyError::V1TooLong => write!(f, "v1 header without CRLF in {V1_MAX} bytes"),
            ProxyError::V1Malformed(what) => write!(f, "malformed v1 header: {what}"),
            ProxyError::BadPort => f.write_str("bad port"),
            ProxyError::BadAddress => f.write_str("address not of the header's family"),
            ProxyError::V2Version(v) => write!(f, "unsupported v2 version {v}"),
            ProxyError::V2Command(c) => write!(f, "unknown v2 command {c}"),
            ProxyError::V2Family(b) => write!(f, "unsupported v2 family/transport 0x{b:02x}"),
            ProxyError::V2ShortAddresses => f.write_str("v2 length shorter than its address block"),
            ProxyError::V2BadTlv => f.write_str("malformed v2 TLV"),
            ProxyError::TooLong { len, max } => {
                write!(f, "header of {len} bytes is over the limit of {max}")
            }
            ProxyError::Truncated => f.write_str("connection ended inside the header"),
        }
    }
}

impl std::error::Error for ProxyError {}

/// Parses a header at the start of `buf`, allowing at most `max` bytes for it (at least [`V1_MAX`]
/// is always allowed for v1).
///
/// `Ok(None)`: `buf` is a prefix of a header that may still be valid, send more. `Ok(Some((h, n)))`: the
/// header is the first `n` bytes. Errors are final and are the same for any longer `buf`.
pub fn parse(buf: &[u8], max: usize) -> Result<Option<(ProxyHeader, usize)>, ProxyError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    match first {
        b'P' => parse_v1(buf),
        b'\r' => parse_v2(buf, max),
        _ => Err(ProxyError::NotProxy),
    }
}

/// Whether `buf` (partial) agrees with `magic` so far.
fn agrees(buf: &[u8], magic: &[u8]) -> bool {
    let n = buf.len().min(magic.len());
    buf[..n] == magic[..n]
}

fn parse_v1(buf: &[u8]) -> Result<Option<(ProxyHeader, usize)>, ProxyError> {
    if !agrees(buf, V1_PREFIX) {
        return Err(ProxyError::NotProxy);
    }
    let window = &buf[..buf.len().min(V1_MAX)];
    let Some(lf) = window.iter().position(|&b| b == b'\n') else {
        return if buf.len() >= V1_MAX {
            Err(ProxyError::V1TooLong)
        } else {
            Ok(None)
        };
    };
    let line = window[..lf]
        .strip_suffix(b"\r")
        .ok_or(ProxyError::V1Malformed("LF without CR"))?;
    let line = std::str::from_utf8(line).map_err(|_| ProxyError::V1Malformed("not ASCII"))?;
    let rest = &line[V1_PREFIX.len()..];
    let header = |addresses| ProxyHeader {
        version: Version::V1,
        addresses,
    };
    // "UNKNOWN" may be followed by anything up to the CRLF, which the receiver ignores.
    if rest == "UNKNOWN" || rest.starts_with("UNKNOWN ") {
        return Ok(Some((header(Addresses::Local), lf + 1)));
    }
    let mut fields = rest.split(' ');
    let family = fields.next().unwrap_or("");
    let v6 = match family {
        "TCP4" => false,
        "TCP6" => true,
        _ => {
            return Err(ProxyError::V1Malformed(
                "protocol is not TCP4, TCP6 or UNKNOWN",
            ))
        }
    };
    let (Some(src), Some(dst), Some(sport), Some(dport), None) = (
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
    ) else {
        return Err(ProxyError::V1Malformed(
            "expected exactly: protocol, two addresses, two ports",
        ));
    };
    let ip = |s: &str| -> Result<IpAddr, ProxyError> {
        if v6 {
            s.parse::<Ipv6Addr>().map(IpAddr::V6)
        } else {
            s.parse::<Ipv4Addr>().map(IpAddr::V4)
        }
        .map_err(|_| ProxyError::BadAddress)
    };
    let source = SocketAddr::new(ip(src)?, v1_port(sport)?);
    let destination = SocketAddr::new(ip(dst)?, v1_port(dport)?);
    Ok(Some((
        header(Addresses::Proxied {
            source,
            destination,
        }),
        lf + 1,
    )))
}

fn v1_port(s: &str) -> Result<u16, ProxyError> {
    let digits = !s.is_empty() && s.len() <= 5 && s.bytes().all(|b| b.is_ascii_digit());
    if !digits || (s.len() > 1 && s.starts_with('0')) {
        return Err(ProxyError::BadPort);
    }
    s.parse().map_err(|_| ProxyError::BadPort)
}

fn parse_v2(buf: &[u8], max: usize) -> Result<Option<(ProxyHeader, usize)>, ProxyError> {
    if !agrees(buf, &V2_SIGNATURE) {
        return Err(ProxyError::NotProxy);
    }
    if buf.len() < V2_FIXED {
        return Ok(None);
    }
    let ver_cmd = buf[12];
    if ver_cmd >> 4 != 2 {
        return Err(ProxyError::V2Version(ver_cmd >> 4));
    }
    let local = match ver_cmd & 0x0f {
        0 => true,
        1 => false,
        c => return Err(ProxyError::V2Command(c)),
    };
    let family = buf[13];
    let len = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    let total = V2_FIXED + len;
    if total > max {
        return Err(ProxyError::TooLong { len: total, max });
    }
    // The address block each accepted family needs (`None`: refused, unless the command is LOCAL,
    // whose address block is ignored whatever it says).
    let needed = match family {
        0x00 => Some(0),   // AF_UNSPEC
        0x11 => Some(12),  // TCP over IPv4
        0x21 => Some(36),  // TCP over IPv6
        0x31 => Some(216), // AF_UNIX stream
        _ => None,
    };
    let needed = match (needed, local) {
        (Some(n), _) => n,
        (None, true) => 0,
        (None, false) => return Err(ProxyError::V2Family(family)),
    };
    if len < needed {
        return Err(ProxyError::V2ShortAddresses);
    }
    if buf.len() < total {
        return Ok(None);
    }
    let block = &buf[V2_FIXED..total];
    if !local {
        // LOCAL's whole block is ignored: its family may be one whose address size is unknown.
        check_tlvs(&block[needed..])?;
    }
    let port = |at: usize| u16::from_be_bytes([block[at], block[at + 1]]);
    let addresses = match family {
        _ if local => Addresses::Local,
        0x11 => {
            let ip =
                |at: usize| IpAddr::from([block[at], block[at + 1], block[at + 2], block[at + 3]]);
            Addresses::Proxied {
                source: SocketAddr::new(ip(0), port(8)),
                destination: SocketAddr::new(ip(4), port(10)),
            }
        }
        0x21 => {
            let ip = |at: usize| {
                let mut a = [0u8; 16];
                a.copy_from_slice(&block[at..at + 16]);
                IpAddr::from(a)
            };
            Addresses::Proxied {
                source: SocketAddr::new(ip(0), port(32)),
                destination: SocketAddr::new(ip(16), port(34)),
            }
        }
        _ => Addresses::Local,
    };
    Ok(Some((
        ProxyHeader {
            version: Version::V2,
            addresses,
        },
        total,
    )))
}

/// TLVs (`type: u8, length: u16 BE, value`) must tile `tlvs` exactly. Their contents are not used.
fn check_tlvs(mut tlvs: &[u8]) -> Result<(), ProxyError> {
    while !tlvs.is_empty() {
        let [_, hi, lo, rest @ ..] = tlvs else {
            return Err(ProxyError::V2BadTlv);
        };
        let n = usize::from(u16::from_be_bytes([*hi, *lo]));
        if rest.len() < n {
            return Err(ProxyError::V2BadTlv);
        }
        tlvs = &rest[n..];
    }
    Ok(())
}

/// Where an incremental read stands.
#[derive(Debug)]
enum ReaderState {
    Reading(BytesMut),
    Done,
    Failed(ProxyError),
}

/// Reads a header from a stream fed in any chunks. Holds at most `max` bytes plus one chunk.
#[derive(Debug)]
pub struct HeaderReader {
    max: usize,
    state: ReaderState,
}

impl HeaderReader {
    /// A reader that refuses headers longer than `max` bytes (v1 headers of up to 107 bytes are
    /// always read).
    pub fn new(max: usize) -> Self {
        HeaderReader {
            max,
            state: ReaderState::Reading(BytesMut::new()),
        }
    }

    /// Feeds the next bytes of the stream. `Ok(Some((header, rest)))` once the header is complete,
    /// with the bytes that followed it in what was fed; `Ok(None)` while more is needed. Feed nothing
    /// after the first answer (an error is repeated; after a header, further bytes are an error).
    pub fn feed(&mut self, data: &[u8]) -> Result<Option<(ProxyHeader, BytesMut)>, ProxyError> {
        let buf = match &mut self.state {
            ReaderState::Reading(buf) => buf,
            ReaderState::Failed(e) => return Err(e.clone()),
            ReaderState::Done => return Err(ProxyError::Truncated),
        };
        buf.extend_from_slice(data);
        match parse(buf, self.max) {
            Ok(Some((header, n))) => {
                let rest = buf.split_off(n);
                self.state = ReaderState::Done;
                Ok(Some((header, rest)))
            }
            Ok(None) => {
                // `parse` bounds v2 by its length field and v1 by 107 bytes, so a pending prefix is
                // always shorter than the larger of the two.
                debug_assert!(buf.len() < self.max.max(V1_MAX).max(V2_FIXED));
                Ok(None)
            }
            Err(e) => {
                self.state = ReaderState::Failed(e.clone());
                Err(e)
            }
        }
    }

    /// The stream ended: an error unless the header was already complete (then `Ok`).
    pub fn finish(&mut self) -> Result<(), ProxyError> {
        match &self.state {
            ReaderState::Done => Ok(()),
            ReaderState::Failed(e) => Err(e.clone()),
            ReaderState::Reading(_) => {
                self.state = ReaderState::Failed(ProxyError::Truncated);
                Err(ProxyError::Truncated)
            }
        }
    }

    /// Bytes held while waiting for the rest of the header.
    pub fn buffered(&self) -> usize {
        match &self.state {
            ReaderState::Reading(buf) => buf.len(),
            _ => 0,
        }
    }
}

/// Both addresses in one family: IPv4 if both are IPv4 (IPv4-mapped IPv6 counts as IPv4), else both
/// IPv6 (an IPv4 address becomes IPv4-mapped), as the protocol has no mixed form.
fn same_family(src: SocketAddr, dst: SocketAddr) -> (SocketAddr, SocketAddr) {
    let canon = |a: SocketAddr| SocketAddr::new(a.ip().to_canonical(), a.port());
    let (src, dst) = (canon(src), canon(dst));
    match (src.ip(), dst.ip()) {
        (IpAddr::V4(_), IpAddr::V4(_)) => (src, dst),
        _ => {
            let v6 = |a: SocketAddr| match a.ip() {
                IpAddr::V4(ip) => SocketAddr::new(IpAddr::V6(ip.to_ipv6_mapped()), a.port()),
                IpAddr::V6(_) => a,
            };
            (v6(src), v6(dst))
        }
    }
}

/// A v1 header saying the client `src` connected to `dst` (mixed families are written as IPv6).
pub fn encode_v1(src: SocketAddr, dst: SocketAddr) -> Bytes {
    let (src, dst) = same_family(src, dst);
    let family = if src.is_ipv4() { "TCP4" } else { "TCP6" };
    Bytes::from(format!(
        "PROXY {family} {} {} {} {}\r\n",
        src.ip(),
        dst.ip(),
        src.port(),
        dst.port()
    ))
}

/// A v2 `PROXY` header over TCP saying the client `src` connected to `dst`, without TLVs (mixed
/// families are written as IPv6).
pub fn encode_v2(src: SocketAddr, dst: SocketAddr) -> Bytes {
    let (src, dst) = same_family(src, dst);
    let mut out = Vec::with_capacity(V2_FIXED + 36);
    out.extend_from_slice(&V2_SIGNATURE);
    out.push(0x21); // version 2, PROXY
    match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            out.push(0x11);
            out.extend_from_slice(&12u16.to_be_bytes());
            out.extend_from_slice(&s.octets());
            out.extend_from_slice(&d.octets());
        }
        (s, d) => {
            let v6 = |ip: IpAddr| match ip {
                IpAddr::V6(ip) => ip.octets(),
                IpAddr::V4(ip) => ip.to_ipv6_mapped().octets(),
            };
            out.push(0x21);
            out.extend_from_slice(&36u16.to_be_bytes());
            out.extend_from_slice(&v6(s));
            out.extend_from_slice(&v6(d));
        }
    }
    out.extend_from_slice(&src.port().to_be_bytes());
    out.extend_from_slice(&dst.port().to_be_bytes());
    Bytes::from(out)
}

/// Encodes with `version`.
pub fn encode(version: Version, src: SocketAddr, dst: SocketAddr) -> Bytes {
    match version {
        Version::V1 => encode_v1(src, dst),
        Version::V2 => encode_v2(src, dst),
    }
}

impl std::str::FromStr for Version {
    type Err = String;

    /// `v1` / `1` or `v2` / `2`.
    fn from_str(s: &str) -> Result<Version, String> {
        match s.to_ascii_lowercase().as_str() {
            "v1" | "1" => Ok(Version::V1),
            "v2" | "2" => Ok(Version::V2),
            _ => Err(format!("{s:?}: expected v1 or v2")),
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Version::V1 => "v1",
            Version::V2 => "v2",
        })
    }
}
