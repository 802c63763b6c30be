//! The metrics endpoint: a blocking HTTP/1.1 responder on a thread of its own, away from the event loops.
//!
//! One request per connection, answered in turn (scrapers are few and a scrape is small):
//! - `GET /metrics` → 200, [`Metrics::render`] as `text/plain; version=0.0.4`;
//! - `GET /healthz` → 200 `ok`, or 503 `draining` once a graceful drain started (so a load balancer
//!   stops sending clients to an instance that no longer accepts them);
//! - another path → 404, another method → 405, a bad or oversized request → 400.
//!
//! Every connection is bounded: the request head is at most [`MAX_HEAD`] bytes and each read or write
//! waits at most [`IO_TIMEOUT`], so a stuck client delays the next scrape by that much at worst.

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread::JoinHandle;
use std::time::Duration;

use super::Metrics;
use crate::log::Val;

/// Largest request head read.
pub const MAX_HEAD: usize = 8 << 10;
/// Longest wait for one read or write.
pub const IO_TIMEOUT: Duration = Duration::from_secs(2);

/// Serves `metrics` on `listener` from a new thread, for the life of the process.
pub fn serve(listener: TcpListener, metrics: Metrics) -> io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("wsbridge-metrics".into())
        .spawn(move || {
            for stream in listener.incoming() {
                match stream {
                    Ok(stream) => {
                        if let Err(e) = answer(stream, &metrics) {
                            crate::log!(
                                Debug,
                                "event=metrics_request_failed error={}",
                                Val(&e.to_string())
                            );
                        }
                    }
                    Err(e) => {
                        crate::log!(
                            Warn,
                            "event=metrics_accept_failed error={}",
                            Val(&e.to_string())
                        );
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            }
        })
}

fn answer(mut stream: TcpStream, metrics: &Metrics) -> io::Result<()> {
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let head = read_head(&mut stream)?;
    let (status, kind, body) = route(head.as_deref(), metrics);
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes())?;
    let _ = stream.shutdown(std::net::Shutdown::Write);
    Ok(())
}

/// The request head up to its blank line; `None` if it is too large or the client stopped early.
fn read_head(stream: &mut TcpStream) -> io::Result<Option<String>> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        if let Some(end) = find(&buf, b"\r\n\r\n") {
            return Ok(String::from_utf8(buf[..end].to_vec()).ok());
        }
        if buf.len() > MAX_HEAD {
            return Ok(None);
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

const TEXT: &str = "text/plain; charset=utf-8";

/// Status line, content type and body for a request head.
fn route(head: Option<&str>, metrics: &Metrics) -> (&'static str, &'static str, String) {
    let line = head.and_then(|h| h.lines().next()).unwrap_or("");
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return ("400 Bad Request", TEXT, "bad request\n".into());
    };
    if !version.starts_with("HTTP/1.") {
        return ("400 Bad Request", TEXT, "bad request\n".into());
    }
    let path = target.split('?').next().unwrap_or(target);
    match (method, path) {
        ("GET", "/metrics") => (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            metrics.render(),
        ),
        ("GET", "/healthz") if metrics.draining() => {
            ("503 Service Unavailable", TEXT, "draining\n".into())
        }
        ("GET", "/healthz") => ("200 OK", TEXT, "ok\n".into()),
        (_, "/metrics" | "/healthz") => (
            "405 Method Not Allowed",
            TEXT,
            "method not allowed\n".into(),
        ),
        _ => ("404 Not Found", TEXT, "not found\n".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let m = Metrics::new(vec![("ws2tcp", "127.0.0.1:1".into())], 1);
        let status = |head: &str| route(Some(head), &m).0;
        assert_eq!(status("GET /healthz HTTP/1.1\r\nHost: x"), "200 OK");
        assert_eq!(status("GET /metrics?x=1 HTTP/1.0"), "200 OK");
        assert_eq!(status("POST /metrics HTTP/1.1"), "405 Method Not Allowed");
        assert_eq!(status("GET / HTTP/1.1"), "404 Not Found");
        assert_eq!(status("GET /metrics"), "400 Bad Request");
        assert_eq!(route(None, &m).0, "400 Bad Request");
        m.set_draining();
        assert_eq!(status("GET /healthz HTTP/1.1"), "503 Service Unavailable");
    }
}
