//! Per-listener admission limits applied by the acceptor on top of `max_connections`: connections open
//! at once per client address ([`PerIp`]) and new connections per second ([`TokenBucket`]).
//!
//! A connection over either limit is treated exactly like one over `max_connections`: it gets the
//! factory's `over_capacity` session (WebSocket modes: Close 1013) or is closed at once (TCP modes).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::num::{NonZeroU32, NonZeroUsize};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Admission limits of one listener (see [`ListenerSpec::limits`](super::ListenerSpec::limits)).
/// The default is no limit besides `max_connections`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AcceptLimits {
    /// Connections open at once from one client address: an IPv4 address, or an IPv6 /64 (IPv4-mapped
    /// IPv6 addresses count as IPv4). The address is the **socket's** peer: behind a load balancer that
    /// sends a PROXY header it is the balancer's. Only admitted connections take a slot (one refused
    /// over a limit does not), from accept until the connection is closed.
    pub per_ip: Option<NonZeroUsize>,
    /// New connections per second on this listener: a token bucket holding at most `rate` tokens
    /// (a burst of `rate`), refilled at `rate` per second; each admitted connection takes one.
    pub rate: Option<NonZeroU32>,
}

/// One second in nanoseconds: a token is this many "nano-tokens".
const NANOS: u64 = 1_000_000_000;

/// A token bucket of `rate` tokens, refilled continuously at `rate` per second. Time is passed in.
#[derive(Debug)]
pub(crate) struct TokenBucket {
    rate: u64,
    /// Tokens × 10⁹ (exact integer arithmetic: a refill of `elapsed_ns × rate`).
    level: u64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket at `now`.
    pub fn new(rate: NonZeroU32, now: Instant) -> TokenBucket {
        let rate = u64::from(rate.get());
        TokenBucket {
            rate,
            level: rate * NANOS,
            last: now,
        }
    }

    /// Takes a token if there is one at `now` (a `now` before the last one counts as no time passed).
    pub fn try_take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last);
        // A second refills the whole bucket: cap there so the product cannot overflow.
        let ns = u64::try_from(elapsed.as_nanos())
            .unwrap_or(u64::MAX)
            .min(NANOS);
        let cap = self.rate * NANOS;
        self.level = self.level.saturating_add(ns * self.rate).min(cap);
        if now > self.last {
            self.last = now;
        }
        if self.level >= NANOS {
            self.level -= NANOS;
            true
        } else {
            false
        }
    }
}

/// Connections open per client address on one listener, shared by the acceptor (which takes a slot at
/// accept) and the event loops (whose [`IpSlot`] gives it back when the connection is dropped). The lock
/// is taken once per accept and once per close, never per byte; an address's entry is removed when its
/// count reaches zero, so the map holds at most one entry per open connection.
#[derive(Debug)]
pub(crate) struct PerIp {
    limit: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

impl PerIp {
    pub fn new(limit: NonZeroUsize) -> Arc<PerIp> {
        Arc::new(PerIp {
            limit: limit.get(),
            open: Mutex::new(HashMap::new()),
        })
    }

    /// A slot for a connection from `ip`, or `None` if that address already has `limit` open.
    pub fn try_acquire(self: &Arc<PerIp>, ip: IpAddr) -> Option<IpSlot> {
        let key = key(ip);
        let mut open = self.lock();
        let n = open.entry(key).or_insert(0);
        if *n >= self.limit {
            return None;
        }
        *n += 1;
        Some(IpSlot {
            table: self.clone(),
            key,
        })
    }

    /// Connections open from `ip` (its key).
    #[cfg(test)]
    pub fn open(&self, ip: IpAddr) -> usize {
        self.lock().get(&key(ip)).copied().unwrap_or(0)
    }

    /// Addresses with a connection open.
    #[cfg(test)]
    pub fn addresses(&self) -> usize {
        self.lock().len()
    }

    fn release(&self, key: IpAddr) {
        let mut open = self.lock();
        if let Some(n) = open.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                open.remove(&key);
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What an address is counted as: IPv4 as itself (IPv4-mapped IPv6 too), IPv6 by its /64.
fn key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let bits = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(Ipv6Addr::from(bits))
            }
        },
    }
}

/// One open connection's slot in a [`PerIp`] table; dropping it frees the slot.
#[derive(Debug)]
pub(crate) struct IpSlot {
    table: Arc<PerIp>,
    key: IpAddr,
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        self.table.release(self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn bucket_allows_a_burst_then_refills_at_the_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(NonZeroU32::new(5).unwrap(), t0);
        assert_eq!((0..20).filter(|_| b.try_take(t0)).count(), 5);
        // 100 ms: half a token.
        assert!(!b.try_take(t0 + Duration::from_millis(100)));
        // 200 ms: one token.
        assert!(b.try_take(t0 + Duration::from_millis(200)));
        assert!(!b.try_take(t0 + Duration::from_millis(200)));
        // A long pause refills to the burst, never beyond.
        let later = t0 + Duration::from_secs(3600);
        assert_eq!((0..20).filter(|_| b.try_take(later)).count(), 5);
        // Time going backwards gives nothing.
        assert!(!b.try_take(t0));
    }

    #[test]
    fn bucket_is_exact_at_high_rates() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(NonZeroU32::new(u32::MAX).unwrap(), t0);
        assert!(b.try_take(t0));
        let mut b = TokenBucket::new(NonZeroU32::new(1000).unwrap(), t0);
        assert_eq!((0..2000).filter(|_| b.try_take(t0)).count(), 1000);
        let t1 = t0 + Duration::from_millis(10);
        assert_eq!((0..2000).filter(|_| b.try_take(t1)).count(), 10);
    }

    #[test]
    fn per_ip_counts_open_connections_and_forgets_at_zero() {
        let t = PerIp::new(NonZeroUsize::new(2).unwrap());
        let a = ip("127.0.0.1");
        let s1 = t.try_acquire(a).unwrap();
        let s2 = t.try_acquire(a).unwrap();
        assert!(t.try_acquire(a).is_none());
        let other = t.try_acquire(ip("127.0.0.2")).unwrap();
        assert_eq!((t.open(a), t.addresses()), (2, 2));
        drop(s1);
        let s3 = t.try_acquire(a).unwrap();
        assert!(t.try_acquire(a).is_none());
        drop((s2, s3, other));
        assert_eq!(t.addresses(), 0);
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() {
        let t = PerIp::new(NonZeroUsize::new(1).unwrap());
        let _a = t.try_acquire(ip("2001:db8:1:2::1")).unwrap();
        assert!(t.try_acquire(ip("2001:db8:1:2:ffff::9")).is_none());
        let _b = t.try_acquire(ip("2001:db8:1:3::1")).unwrap();
        let _c = t.try_acquire(ip("10.0.0.1")).unwrap();
        assert!(t.try_acquire(ip("::ffff:10.0.0.1")).is_none());
        assert_eq!(t.addresses(), 3);
    }
}
