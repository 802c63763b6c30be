//! Which targets a `ws2tcp` client may reach (DESIGN §1.2, §1.5).
//!
//! - `--allow CIDR[:PORTS]` and `--deny CIDR[:PORTS]`, repeatable. `PORTS` is a comma-separated list of
//!   ports and ranges (`22`, `8000-8100`, `80,443`); without it every port matches. IPv6 networks take
//!   ports in brackets (`[fd00::/8]:22`) or after the prefix (`fd00::/8:22`).
//! - With no `--allow`, public unicast addresses are allowed and the [special ranges](special_range) are
//!   denied; with any `--allow`, **only** the listed ranges are. `--deny` always wins.
//! - Addresses are compared in their canonical form: an IPv4-mapped IPv6 address (`::ffff:127.0.0.1`) is
//!   the IPv4 address it maps, for the rules and for the special ranges alike. IPv6 forms that carry an
//!   IPv4 address to a translator (NAT64 `64:ff9b::/96`, 6to4 `2002::/16`) are special when the address
//!   they carry is.
//!
//! The policy sees only addresses. Names (and every odd spelling of an address: `127.1`, `0x7f000001`,
//! `2130706433`) are resolved by the runtime first, and each resolved address is checked here; the
//! session connects to checked addresses only.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// An inclusive port range, `lo..=hi`, within 1..=65535.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    /// First port.
    pub lo: u16,
    /// Last port.
    pub hi: u16,
}

/// An address block and, optionally, the ports it covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// The network address (host bits cleared), canonical (IPv4-mapped blocks become IPv4).
    pub net: IpAddr,
    /// The prefix length.
    pub prefix: u8,
    /// The ports; empty: every port.
    pub ports: Vec<PortRange>,
}

impl Rule {
    /// Parses `CIDR[:PORTS]` (see the module docs). A bare address is a single host.
    pub fn parse(s: &str) -> Result<Rule, String> {
        let s = s.trim();
        let bad = |why: &str| format!("{s:?}: {why}");
        let (cidr, ports) = if let Some(rest) = s.strip_prefix('[') {
            let (inner, after) = rest.split_once(']').ok_or_else(|| bad("missing ']'"))?;
            match after {
                "" => (inner, None),
                _ => match after.strip_prefix(':') {
                    Some(p) => (inner, Some(p)),
                    None => return Err(bad("expected ':PORTS' after ']'")),
                },
            }
        } else if let Some((addr, rest)) = s.split_once('/') {
            match rest.split_once(':') {
                Some((prefix, ports)) => (&s[..addr.len() + 1 + prefix.len()], Some(ports)),
                None => (s, None),
            }
        } else if s.matches(':').count() == 1 {
            let (addr, ports) = s.split_once(':').expect("one colon");
            (addr, Some(ports))
        } else {
            (s, None)
        };
        let (addr, prefix) = match cidr.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (cidr, None),
        };
        let ip: IpAddr = addr
            .parse()
            .map_err(|_| bad("not an IP address or CIDR block"))?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => match p.parse::<u8>() {
                // Plain digits only: no sign, no leading zeros.
                Ok(n) if n <= max && n.to_string() == p => n,
                _ => return Err(bad(&format!("the prefix must be 0 to {max}"))),
            },
        };
        let ports = match ports {
            None => Vec::new(),
            Some(p) => parse_ports(p).map_err(|e| bad(&e))?,
        };
        let (net, prefix) = canonical_net(ip, prefix);
        Ok(Rule {
            net: mask(net, prefix),
            prefix,
            ports,
        })
    }

    /// Whether `addr` (canonical) and `port` fall in this rule.
    pub fn matches(&self, addr: IpAddr, port: u16) -> bool {
        in_block(addr, self.net, self.prefix)
            && (self.ports.is_empty() || self.ports.iter().any(|r| (r.lo..=r.hi).contains(&port)))
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ports: Vec<String> = self
            .ports
            .iter()
            .map(|r| {
                if r.lo == r.hi {
                    r.lo.to_string()
                } else {
                    format!("{}-{}", r.lo, r.hi)
                }
            })
            .collect();
        match (self.net, ports.is_empty()) {
            (IpAddr::V6(_), false) => {
                write!(f, "[{}/{}]:{}", self.net, self.prefix, ports.join(","))
            }
            (_, false) => write!(f, "{}/{}:{}", self.net, self.prefix, ports.join(",")),
            (_, true) => write!(f, "{}/{}", self.net, self.prefix),
        }
    }
}

/// Parses `22`, `8000-8100`, `22,80,8000-8100`.
pub fn parse_ports(s: &str) -> Result<Vec<PortRange>, String> {
    let mut out = Vec::new();
    for part in s.split(',') {
        let part = part.trim();
        let (lo, hi) = match part.split_once('-') {
            Some((lo, hi)) => (parse_port_str(lo.trim())?, parse_port_str(hi.trim())?),
            None => {
                let p = parse_port_str(part)?;
                (p, p)
            }
        };
        if lo > hi {
            return Err(format!("port range {part:?} is reversed"));
        }
        out.push(PortRange { lo, hi });
    }
    Ok(out)
}

/// A port written as decimal digits, 1..=65535. Anything else (a sign, `0`, `65536`, `abc`, empty) is
/// an error, never wrapped.
pub fn parse_port_str(s: &str) -> Result<u16, String> {
    if s.is_empty() || s.len() > 5 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{s:?} is not a port (1 to 65535)"));
    }
    match s.parse::<u32>() {
        Ok(p @ 1..=65535) => Ok(p as u16),
        _ => Err(format!("{s:?} is not a port (1 to 65535)")),
    }
}

/// The address as the policy compares it: IPv4-mapped IPv6 becomes IPv4.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => ip,
        },
        v4 => v4,
    }
}

/// A block written in IPv4-mapped form (`::ffff:10.0.0.0/104`) is the IPv4 block it maps.
fn canonical_net(ip: IpAddr, prefix: u8) -> (IpAddr, u8) {
    match ip {
        IpAddr::V6(v6) if prefix >= 96 => match v6.to_ipv4_mapped() {
            Some(v4) => (IpAddr::V4(v4), prefix - 96),
            None => (ip, prefix),
        },
        _ => (ip, prefix),
    }
}

fn mask(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            let m = if prefix == 0 {
                0
            } else {
                u32::MAX << (32 - prefix)
            };
            IpAddr::V4(Ipv4Addr::from(bits & m))
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let m = if prefix == 0 {
                0
            } else {
                u128::MAX << (128 - prefix)
            };
            IpAddr::V6(Ipv6Addr::from(bits & m))
        }
    }
}

fn in_block(addr: IpAddr, net: IpAddr, prefix: u8) -> bool {
    match (addr, net) {
        (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_)) => {
            mask(addr, prefix) == net
        }
        _ => false,
    }
}

/// The special IPv4 blocks, denied by default: `(network, prefix, name)`.
const SPECIAL_V4: &[([u8; 4], u8, &str)] = &[
    ([0, 0, 0, 0], 8, "unspecified (\"this network\")"),
    ([10, 0, 0, 0], 8, "private"),
    ([100, 64, 0, 0], 10, "shared address space (CGNAT)"),
    ([127, 0, 0, 0], 8, "loopback"),
    ([169, 254, 0, 0], 16, "link-local (cloud metadata)"),
    ([172, 16, 0, 0], 12, "private"),
    ([192, 0, 0, 0], 24, "IETF protocol assignments"),
    ([192, 0, 2, 0], 24, "documentation"),
    ([192, 168, 0, 0], 16, "private"),
    ([198, 18, 0, 0], 15, "benchmarking"),
    ([198, 51, 100, 0], 24, "documentation"),
    ([203, 0, 113, 0], 24, "documentation"),
    ([224, 0, 0, 0], 4, "multicast"),
    ([240, 0, 0, 0], 4, "reserved or broadcast"),
];

/// The special IPv6 blocks, denied by default (IPv4-mapped addresses are checked as IPv4 before these).
const SPECIAL_V6: &[(u128, u8, &str)] = &[
    (0, 128, "unspecified"),
    (1, 128, "loopback"),
    (0, 96, "IPv4-compatible (deprecated)"),
    (0x0064_ff9b_0001 << 80, 48, "local-use NAT64"),
    (0x0100 << 112, 64, "discard-only"),
    (0x2001_0000 << 96, 32, "Teredo"),
    (0x2001_0002 << 96, 48, "benchmarking"),
    (0x2001_0db8 << 96, 32, "documentation"),
    (0xfc00 << 112, 7, "unique local (private)"),
    (0xfe80 << 112, 10, "link-local"),
    (0xfec0 << 112, 10, "site-local (deprecated)"),
    (0xff00 << 112, 8, "multicast"),
];

/// Why `ip` is special (not public unicast), or `None` for a public unicast address.
pub fn special_range(ip: IpAddr) -> Option<&'static str> {
    match canonical(ip) {
        IpAddr::V4(v4) => SPECIAL_V4.iter().find_map(|(net, prefix, name)| {
            in_block(IpAddr::V4(v4), IpAddr::V4(Ipv4Addr::from(*net)), *prefix).then_some(*name)
        }),
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            // Translators and tunnels reach the IPv4 address these carry.
            if bits >> 32 == 0x0064_ff9b_u128 << 64 {
                let carried = Ipv4Addr::from(bits as u32);
                return special_range(IpAddr::V4(carried)).map(|_| "NAT64 of a special address");
            }
            if bits >> 112 == 0x2002 {
                let carried = Ipv4Addr::from((bits >> 80) as u32);
                return special_range(IpAddr::V4(carried)).map(|_| "6to4 of a special address");
            }
            SPECIAL_V6.iter().find_map(|(net, prefix, name)| {
                in_block(IpAddr::V6(v6), IpAddr::V6(Ipv6Addr::from(*net)), *prefix).then_some(*name)
            })
        }
    }
}

/// Why a target was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied(pub String);

impl fmt::Display for Denied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The allow and deny lists of a listener. See the module docs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TargetPolicy {
    /// `--allow` rules, in order. Empty: public unicast is allowed.
    pub allow: Vec<Rule>,
    /// `--deny` rules, in order; they always win.
    pub deny: Vec<Rule>,
}

impl TargetPolicy {
    /// A policy from the `--allow` and `--deny` values; the error names the bad value.
    pub fn parse(allow: &[String], deny: &[String]) -> Result<TargetPolicy, String> {
        let rules = |flag: &str, v: &[String]| -> Result<Vec<Rule>, String> {
            v.iter()
                .map(|s| Rule::parse(s).map_err(|e| format!("--{flag} {e}")))
                .collect()
        };
        Ok(TargetPolicy {
            allow: rules("allow", allow)?,
            deny: rules("deny", deny)?,
        })
    }

    /// Whether a client may connect to `addr`.
    pub fn check(&self, addr: SocketAddr) -> Result<(), Denied> {
        let ip = canonical(addr.ip());
        let port = addr.port();
        if port == 0 {
            return Err(Denied("port 0 is not a valid target".into()));
        }
        if let Some(rule) = self.deny.iter().find(|r| r.matches(ip, port)) {
            return Err(Denied(format!(
                "{ip} port {port} is denied by --deny {rule}"
            )));
        }
        if self.allow.is_empty() {
            return match special_range(ip) {
                Some(name) => Err(Denied(format!(
                    "{ip} is a {name} address, denied by default"
                ))),
                None => Ok(()),
            };
        }
        if self.allow.iter().any(|r| r.matches(ip, port)) {
            Ok(())
        } else {
            Err(Denied(format!(
                "{ip} port {port} is not in any --allow range"
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn default_allows(s: &str) -> bool {
        TargetPolicy::default().check(sa(s)).is_ok()
    }

    #[test]
    fn parses_cidrs_with_and_without_ports() {
        let r = Rule::parse("10.1.2.3/8").unwrap();
        assert_eq!(r.net, "10.0.0.0".parse::<IpAddr>().unwrap());
        assert_eq!(r.prefix, 8);
        assert!(r.ports.is_empty());
        let r = Rule::parse("127.0.0.1/32:22").unwrap();
        assert_eq!(r.ports, vec![PortRange { lo: 22, hi: 22 }]);
        let r = Rule::parse("192.168.0.0/16:8000-8100,22").unwrap();
        assert_eq!(
            r.ports,
            vec![
                PortRange { lo: 8000, hi: 8100 },
                PortRange { lo: 22, hi: 22 }
            ]
        );
        let r = Rule::parse("127.0.0.1:5900").unwrap();
        assert_eq!((r.prefix, r.ports.len()), (32, 1));
        let r = Rule::parse("::1").unwrap();
        assert_eq!((r.net, r.prefix), ("::1".parse().unwrap(), 128));
        let r = Rule::parse("fd00::/8").unwrap();
        assert_eq!((r.net, r.prefix), ("fd00::".parse().unwrap(), 8));
        let r = Rule::parse("[fd00::/8]:22").unwrap();
        assert_eq!(r.ports, vec![PortRange { lo: 22, hi: 22 }]);
        let r = Rule::parse("fd00::/8:22-23").unwrap();
        assert_eq!(r.ports, vec![PortRange { lo: 22, hi: 23 }]);
        let r = Rule::parse("[::1]:80").unwrap();
        assert_eq!((r.prefix, r.ports.len()), (128, 1));
        // IPv4-mapped blocks are the IPv4 blocks they map.
        let r = Rule::parse("::ffff:10.0.0.0/104").unwrap();
        assert_eq!((r.net, r.prefix), ("10.0.0.0".parse().unwrap(), 8));
        assert_eq!(
            Rule::parse("10.0.0.0/8:22").unwrap().to_string(),
            "10.0.0.0/8:22"
        );
        assert_eq!(
            Rule::parse("[fd00::/8]:1-2").unwrap().to_string(),
            "[fd00::/8]:1-2"
        );
    }

    #[test]
    fn refuses_bad_rules() {
        for bad in [
            "",
            "10.0.0.0/33",
            "::/129",
            "10.0.0.0/-1",
            "10.0.0.0/+8",
            "10.0.0.0/08",
            "10.0.0/8",
            "host.example",
            "10.0.0.0/8:0",
            "10.0.0.0/8:65536",
            "10.0.0.0/8:-1",
            "10.0.0.0/8:abc",
            "10.0.0.0/8:",
            "10.0.0.0/8:100-99",
            "10.0.0.0/8:1-",
            "[::1",
            "[::1]x",
            "[::1]:",
            "127.1",
        ] {
            assert!(Rule::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn ports_are_exactly_1_to_65535() {
        assert_eq!(parse_port_str("1"), Ok(1));
        assert_eq!(parse_port_str("65535"), Ok(65535));
        assert_eq!(parse_port_str("00022"), Ok(22));
        for bad in [
            "0",
            "65536",
            "-1",
            "+1",
            "abc",
            "",
            " 22",
            "4294967318",
            "99999",
            "1e3",
        ] {
            assert!(parse_port_str(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn every_special_range_is_denied_by_default() {
        for denied in [
            "0.0.0.0:80",
            "0.1.2.3:80",
            "10.0.0.1:80",
            "10.255.255.255:80",
            "100.64.0.1:80",
            "127.0.0.1:80",
            "127.255.255.254:80",
            "169.254.169.254:80",
            "172.16.0.1:80",
            "172.31.255.255:80",
            "192.0.0.8:80",
            "192.0.2.1:80",
            "192.168.1.1:80",
            "198.18.0.1:80",
            "198.51.100.1:80",
            "203.0.113.7:80",
            "224.0.0.1:80",
            "239.255.255.250:80",
            "240.0.0.1:80",
            "255.255.255.255:80",
            "[::]:80",
            "[::1]:80",
            "[::ffff:127.0.0.1]:80",
            "[::ffff:7f00:1]:80",
            "[::ffff:10.0.0.1]:80",
            "[::ffff:169.254.169.254]:80",
            "[::ffff:0.0.0.0]:80",
            "[::127.0.0.1]:80",
            "[64:ff9b::127.0.0.1]:80",
            "[64:ff9b::a9fe:a9fe]:80",
            "[64:ff9b:1::1]:80",
            "[2002:7f00:1::1]:80",
            "[2002:a00:1::]:80",
            "[2001::1]:80",
            "[2001:db8::1]:80",
            "[100::1]:80",
            "[fc00::1]:80",
            "[fd12:3456::1]:80",
            "[fe80::1]:80",
            "[febf::1]:80",
            "[fec0::1]:80",
            "[ff02::1]:80",
            "[ff05::1:3]:80",
        ] {
            let result = TargetPolicy::default().check(sa(denied));
            assert!(result.is_err(), "{denied} must be denied by default");
        }
    }

    #[test]
    fn public_unicast_is_allowed_by_default() {
        for ok in [
            "8.8.8.8:53",
            "1.1.1.1:443",
            "93.184.216.34:80",
            "100.63.255.255:80",
            "100.128.0.0:80",
            "172.15.255.255:80",
            "172.32.0.0:80",
            "192.169.0.1:80",
            "[2606:4700::1111]:443",
            "[::ffff:8.8.8.8]:53",
            "[64:ff9b::808:808]:53",
            "[2002:808:808::1]:53",
        ] {
            assert!(default_allows(ok), "{ok} must be allowed by default");
        }
        assert!(!default_allows("8.8.8.8:0"), "port 0 never");
    }

    #[test]
    fn allow_lists_only_what_they_list_and_deny_wins() {
        let p = TargetPolicy::parse(
            &["127.0.0.1/32".into(), "10.0.0.0/8:22,8000-8100".into()],
            &["10.9.0.0/16".into()],
        )
        .unwrap();
        assert!(p.check(sa("127.0.0.1:7")).is_ok());
        assert!(p.check(sa("[::ffff:127.0.0.1]:7")).is_ok(), "same address");
        assert!(p.check(sa("127.0.0.2:7")).is_err());
        assert!(p.check(sa("[::1]:7")).is_err(), "::1 is not 127.0.0.1");
        assert!(p.check(sa("10.1.2.3:22")).is_ok());
        assert!(p.check(sa("10.1.2.3:8050")).is_ok());
        assert!(p.check(sa("10.1.2.3:23")).is_err());
        assert!(p.check(sa("10.9.2.3:22")).is_err(), "deny wins");
        assert!(
            p.check(sa("8.8.8.8:53")).is_err(),
            "allow lists replace the default"
        );
        let e = p.check(sa("10.9.2.3:22")).unwrap_err();
        assert!(e.0.contains("--deny 10.9.0.0/16"), "{e}");

        let p = TargetPolicy::parse(&[], &["8.8.0.0/16:53".into()]).unwrap();
        assert!(p.check(sa("8.8.8.8:53")).is_err());
        assert!(
            p.check(sa("[::ffff:8.8.8.8]:53")).is_err(),
            "mapped form too"
        );
        assert!(p.check(sa("8.8.8.8:443")).is_ok());
        assert!(
            p.check(sa("127.0.0.1:443")).is_err(),
            "defaults still apply"
        );

        let p = TargetPolicy::parse(&["::ffff:127.0.0.0/104".into()], &[]).unwrap();
        assert!(p.check(sa("127.0.0.5:80")).is_ok());

        let e = TargetPolicy::parse(&["nope".into()], &[]).unwrap_err();
        assert!(e.starts_with("--allow \"nope\""), "{e}");
        let e = TargetPolicy::parse(&[], &["1.2.3.4/40".into()]).unwrap_err();
        assert!(e.starts_with("--deny "), "{e}");
    }
}
