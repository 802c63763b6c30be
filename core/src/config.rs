//! Limits of the WebSocket engine. Every buffer the engine owns is bounded by a field here.

use std::time::Duration;

/// Limits and timeouts of one WebSocket connection and its opening handshake.
///
/// The defaults suit a bridge: control and text messages are small JSON, binary data is streamed in chunks
/// and never reassembled, so `max_message_size` bounds only text (and the echo examples raise it to 16 MiB).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsConfig {
    /// Largest payload of a single incoming frame. A larger frame fails the connection with 1009.
    pub max_frame_size: u64,
    /// Largest reassembled incoming text message. Larger fails with 1009. Binary messages are streamed and
    /// only bounded by `max_frame_size` per frame.
    pub max_message_size: usize,
    /// Largest HTTP head (request or response line plus headers, including the blank line).
    /// A larger head is refused with 431 (server) or fails the handshake (client).
    pub max_head_size: usize,
    /// Most header fields in an HTTP head.
    pub max_headers: usize,
    /// Most undecoded input bytes the engine holds before it asks the driver to stop reading
    /// (see `WebSocket::wants_read`).
    pub max_read_buffer: usize,
    /// How long to wait for the peer's Close after we sent ours before giving up on a clean close.
    pub close_timeout: Duration,
}

impl Default for WsConfig {
    fn default() -> Self {
        WsConfig {
            max_frame_size: 16 << 20,
            max_message_size: 1 << 20,
            max_head_size: 16 << 10,
            max_headers: 64,
            max_read_buffer: 64 << 10,
            close_timeout: Duration::from_secs(5),
        }
    }
}
