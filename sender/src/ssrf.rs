//! The SSRF guard: which addresses a webhook may not reach, and a DNS resolver for the HTTP
//! client that refuses a host when any of its addresses is one of them.
//!
//! The resolver is what the client connects with, so the addresses checked are exactly the
//! addresses used: a host cannot pass the check with a public address and then be connected
//! to a private one (DNS rebinding). IP literals in urls never reach a resolver, so the
//! executor checks them with [`check_ip`] before sending.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use crate::error::Error;

/// Why an address may not be a webhook target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Forbidden {
    /// `0.0.0.0`, `::`.
    Unspecified,
    /// `0.0.0.0/8`: "this network".
    ThisNetwork,
    /// `127.0.0.0/8`, `::1`.
    Loopback,
    /// `10.0.0.0/8`, `172.16.0.0/12`, `192.168.0.0/16`, the deprecated site-local `fec0::/10`,
    /// and the local-use NAT64 prefix `64:ff9b:1::/48` (it translates to whatever the local
    /// network decides).
    Private,
    /// `169.254.0.0/16` (cloud metadata lives at 169.254.169.254), `fe80::/10`.
    LinkLocal,
    /// `fc00::/7`.
    UniqueLocal,
    /// `100.64.0.0/10`, carrier-grade NAT.
    SharedAddress,
    /// `224.0.0.0/4`, `ff00::/8`.
    Multicast,
    /// `255.255.255.255`.
    Broadcast,
    /// `192.0.2.0/24`, `198.51.100.0/24`, `203.0.113.0/24`, `2001:db8::/32`, `3fff::/20`.
    Documentation,
    /// `198.18.0.0/15`, `2001:2::/48`.
    Benchmarking,
    /// `192.0.0.0/24` (IETF protocol assignments), `192.88.99.0/24` (6to4 relay anycast),
    /// `240.0.0.0/4`, `2001:10::/28` and `2001:20::/28` (ORCHID identifiers, not locators), and
    /// IPv6 outside `2000::/3` not named elsewhere (`100::/64` discard-only, unallocated space).
    Reserved,
}

impl fmt::Display for Forbidden {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Forbidden::Unspecified => "unspecified address",
            Forbidden::ThisNetwork => "\"this network\" address",
            Forbidden::Loopback => "loopback address",
            Forbidden::Private => "private address",
            Forbidden::LinkLocal => "link-local address",
            Forbidden::UniqueLocal => "unique-local address",
            Forbidden::SharedAddress => "shared (carrier-grade NAT) address",
            Forbidden::Multicast => "multicast address",
            Forbidden::Broadcast => "broadcast address",
            Forbidden::Documentation => "documentation address",
            Forbidden::Benchmarking => "benchmarking address",
            Forbidden::Reserved => "reserved address",
        })
    }
}

/// Why `ip` may not be a webhook target, or `None` when it may.
pub fn classify(ip: IpAddr) -> Option<Forbidden> {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> Option<Forbidden> {
    let [a, b, c, _] = ip.octets();
    if ip.is_unspecified() {
        Some(Forbidden::Unspecified)
    } else if a == 0 {
        Some(Forbidden::ThisNetwork)
    } else if ip.is_loopback() {
        Some(Forbidden::Loopback)
    } else if ip.is_private() {
        Some(Forbidden::Private)
    } else if ip.is_link_local() {
        Some(Forbidden::LinkLocal)
    } else if a == 100 && (b & 0xc0) == 64 {
        Some(Forbidden::SharedAddress)
    } else if ip.is_broadcast() {
        Some(Forbidden::Broadcast)
    } else if ip.is_multicast() {
        Some(Forbidden::Multicast)
    } else if a >= 240 || (a, b, c) == (192, 0, 0) || (a, b, c) == (192, 88, 99) {
        Some(Forbidden::Reserved)
    } else if (a, b, c) == (192, 0, 2) || (a, b, c) == (198, 51, 100) || (a, b, c) == (203, 0, 113)
    {
        Some(Forbidden::Documentation)
    } else if a == 198 && (b & 0xfe) == 18 {
        Some(Forbidden::Benchmarking)
    } else {
        None
    }
}

fn classify_v6(ip: Ipv6Addr) -> Option<Forbidden> {
    let s = ip.segments();
    if ip.is_unspecified() {
        return Some(Forbidden::Unspecified);
    }
    if ip.is_loopback() {
        return Some(Forbidden::Loopback);
    }
    let embedded = embedded_v4(ip);
    if embedded.iter().any(Option::is_some) {
        // The forms that carry an IPv4 address reach that address (Teredo: two of them), so
        // they are judged by the IPv4 rules alone.
        return embedded.into_iter().flatten().find_map(classify_v4);
    }
    if s[0] == 0x0064 && s[1] == 0xff9b && s[2] == 0x0001 {
        // 64:ff9b:1::/48, local-use NAT64: translates to whatever the local network wants.
        return Some(Forbidden::Private);
    }
    if s[0] & 0xff00 == 0xff00 {
        Some(Forbidden::Multicast)
    } else if s[0] & 0xffc0 == 0xfe80 {
        Some(Forbidden::LinkLocal)
    } else if s[0] & 0xffc0 == 0xfec0 {
        Some(Forbidden::Private)
    } else if s[0] & 0xfe00 == 0xfc00 {
        Some(Forbidden::UniqueLocal)
    } else if (s[0] == 0x2001 && s[1] == 0x0db8) || (s[0] == 0x3fff && s[1] & 0xf000 == 0) {
        // 2001:db8::/32 and 3fff::/20 (RFC 9637).
        Some(Forbidden::Documentation)
    } else if s[0] == 0x2001 && s[1] == 0x0002 && s[2] == 0 {
        // 2001:2::/48 (RFC 5180).
        Some(Forbidden::Benchmarking)
    } else if s[0] == 0x2001 && (s[1] & 0xfff0 == 0x0010 || s[1] & 0xfff0 == 0x0020) {
        // 2001:10::/28 and 2001:20::/28: ORCHID and ORCHIDv2, identifiers that never route.
        Some(Forbidden::Reserved)
    } else if s[0] & 0xe000 != 0x2000 {
        // Outside 2000::/3, the only space allocated for global unicast: 100::/64
        // (discard-only) and space IANA has not allocated.
        Some(Forbidden::Reserved)
    } else {
        None
    }
}

/// The IPv4 addresses an IPv6 address stands for, in the forms that route to them:
/// - `::ffff:a.b.c.d` (IPv4-mapped) and `::a.b.c.d` (IPv4-compatible, deprecated);
/// - `::ffff:0:a.b.c.d` (IPv4-translated, RFC 2765 / RFC 6145 SIIT);
/// - `64:ff9b::a.b.c.d` (NAT64 well-known prefix, RFC 6052);
/// - `2002:AABB:CCDD::/48` (6to4, RFC 3056: the IPv4 address is bits 16..47);
/// - `2001:0:SSSS:SSSS:flags:port:CCCC:CCCC` (Teredo, RFC 4380): the client's address, which
///   is the bitwise NOT of the last 32 bits, first, then the Teredo server's (bits 32..63).
fn embedded_v4(ip: Ipv6Addr) -> [Option<Ipv4Addr>; 2] {
    let s = ip.segments();
    let o = ip.octets();
    let tail = Ipv4Addr::new(o[12], o[13], o[14], o[15]);
    let mapped_or_compatible = s[..5] == [0, 0, 0, 0, 0] && (s[5] == 0xffff || s[5] == 0);
    let translated = s[..6] == [0, 0, 0, 0, 0xffff, 0];
    let nat64 = s[..6] == [0x0064, 0xff9b, 0, 0, 0, 0];
    if mapped_or_compatible || translated || nat64 {
        [Some(tail), None]
    } else if s[0] == 0x2002 {
        [Some(Ipv4Addr::new(o[2], o[3], o[4], o[5])), None]
    } else if s[0] == 0x2001 && s[1] == 0 {
        let client = Ipv4Addr::from(!u32::from(tail));
        let server = Ipv4Addr::new(o[4], o[5], o[6], o[7]);
        [Some(client), Some(server)]
    } else {
        [None, None]
    }
}

/// Refuses `ip` for `host` unless private targets are allowed.
pub fn check_ip(host: &str, ip: IpAddr, allow_private: bool) -> Result<(), Error> {
    match classify(ip) {
        Some(reason) if !allow_private => Err(Error::TargetRefused {
            host: host.to_owned(),
            addr: ip,
            reason,
        }),
        _ => Ok(()),
    }
}

/// Refuses the whole host when any of its addresses is forbidden: a host with one public and
/// one private address could otherwise be steered to the private one.
pub fn check_all(host: &str, addrs: &[SocketAddr], allow_private: bool) -> Result<(), Error> {
    if addrs.is_empty() {
        return Err(Error::NoAddress(host.to_owned()));
    }
    addrs
        .iter()
        .try_for_each(|a| check_ip(host, a.ip(), allow_private))
}

/// DNS resolver for the HTTP client: resolves with the system resolver, then applies
/// [`check_all`]. The client connects only to the addresses this returns.
#[derive(Clone, Copy, Debug)]
pub struct GuardedResolver {
    allow_private: bool,
}

impl GuardedResolver {
    /// A resolver that refuses forbidden addresses unless `allow_private`.
    pub fn new(allow_private: bool) -> Self {
        Self { allow_private }
    }

    /// Resolves `host` and checks every address.
    pub async fn lookup(&self, host: &str) -> Result<Vec<SocketAddr>, Error> {
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, 0)).await?.collect();
        check_all(host, &addrs, self.allow_private)?;
        Ok(addrs)
    }
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let this = *self;
        Box::pin(async move {
            let addrs = this.lookup(name.as_str()).await?;
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        match s.parse() {
            Ok(ip) => ip,
            Err(e) => panic!("{s}: {e}"),
        }
    }

    fn class(s: &str) -> Option<Forbidden> {
        classify(ip(s))
    }

    #[test]
    fn public_addresses_pass() {
        for s in [
            "1.1.1.1",
            "8.8.8.8",
            "93.184.216.34",
            "172.15.255.255",
            "172.32.0.1",
            "100.63.255.255",
            "100.128.0.1",
            "169.253.1.1",
            "192.0.1.1",
            "198.17.255.255",
            "198.20.0.1",
            "223.255.255.255",
            "2606:4700:4700::1111",
            "2001:4860:4860::8888",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:0808:0808::1",
        ] {
            assert_eq!(class(s), None, "{s}");
        }
    }

    #[test]
    fn ipv4_classes() {
        use Forbidden::*;
        for (s, want) in [
            ("0.0.0.0", Unspecified),
            ("0.1.2.3", ThisNetwork),
            ("127.0.0.1", Loopback),
            ("127.255.255.254", Loopback),
            ("10.0.0.5", Private),
            ("10.255.255.255", Private),
            ("172.16.0.1", Private),
            ("172.31.255.255", Private),
            ("192.168.1.1", Private),
            ("169.254.169.254", LinkLocal),
            ("169.254.0.1", LinkLocal),
            ("100.64.0.1", SharedAddress),
            ("100.127.255.255", SharedAddress),
            ("224.0.0.1", Multicast),
            ("239.255.255.250", Multicast),
            ("255.255.255.255", Broadcast),
            ("240.0.0.1", Reserved),
            ("192.0.0.8", Reserved),
            ("192.0.2.10", Documentation),
            ("198.51.100.7", Documentation),
            ("203.0.113.9", Documentation),
            ("198.18.0.1", Benchmarking),
            ("198.19.255.255", Benchmarking),
        ] {
            assert_eq!(class(s), Some(want), "{s}");
        }
    }

    #[test]
    fn ipv6_classes() {
        use Forbidden::*;
        for (s, want) in [
            ("::", Unspecified),
            ("::1", Loopback),
            ("fe80::1", LinkLocal),
            ("febf:ffff::1", LinkLocal),
            ("fec0::1", Private),
            ("fc00::1", UniqueLocal),
            ("fd12:3456:789a::1", UniqueLocal),
            ("ff02::1", Multicast),
            ("ff05::2", Multicast),
            ("2001:db8::1", Documentation),
            ("100::1", Reserved),
            ("64:ff9b:1::a00:5", Private),
        ] {
            assert_eq!(class(s), Some(want), "{s}");
        }
    }

    #[test]
    fn ipv4_inside_ipv6_is_classified_as_ipv4() {
        use Forbidden::*;
        for (s, want) in [
            ("::ffff:127.0.0.1", Loopback),
            ("::ffff:7f00:1", Loopback),
            ("::ffff:10.0.0.5", Private),
            ("::ffff:169.254.169.254", LinkLocal),
            ("::ffff:0.0.0.0", Unspecified),
            ("::127.0.0.1", Loopback),
            ("::10.1.2.3", Private),
            ("::169.254.169.254", LinkLocal),
            ("64:ff9b::127.0.0.1", Loopback),
            ("64:ff9b::192.168.0.1", Private),
            ("2002:7f00:0001::1", Loopback),
            ("2002:a9fe:a9fe::", LinkLocal),
            ("::ffff:100.64.0.1", SharedAddress),
        ] {
            assert_eq!(class(s), Some(want), "{s}");
        }
    }

    /// Every IPv4 special-purpose range: its first and last address, and the neighbours just
    /// outside it, which must pass.
    const V4_TABLE: &[(&str, Option<Forbidden>)] = {
        use Forbidden::*;
        &[
            ("0.0.0.0", Some(Unspecified)),
            ("0.0.0.1", Some(ThisNetwork)),
            ("0.255.255.255", Some(ThisNetwork)),
            ("1.0.0.0", None),
            ("9.255.255.255", None),
            ("10.0.0.0", Some(Private)),
            ("10.255.255.255", Some(Private)),
            ("11.0.0.0", None),
            ("100.63.255.255", None),
            ("100.64.0.0", Some(SharedAddress)),
            ("100.127.255.255", Some(SharedAddress)),
            ("100.128.0.0", None),
            ("126.255.255.255", None),
            ("127.0.0.0", Some(Loopback)),
            ("127.255.255.255", Some(Loopback)),
            ("128.0.0.0", None),
            ("169.253.255.255", None),
            ("169.254.0.0", Some(LinkLocal)),
            ("169.254.169.254", Some(LinkLocal)),
            ("169.254.255.255", Some(LinkLocal)),
            ("169.255.0.0", None),
            ("172.15.255.255", None),
            ("172.16.0.0", Some(Private)),
            ("172.31.255.255", Some(Private)),
            ("172.32.0.0", None),
            ("191.255.255.255", None),
            ("192.0.0.0", Some(Reserved)),
            ("192.0.0.255", Some(Reserved)),
            ("192.0.1.0", None),
            ("192.0.2.0", Some(Documentation)),
            ("192.0.2.255", Some(Documentation)),
            ("192.0.3.0", None),
            ("192.88.98.255", None),
            ("192.88.99.0", Some(Reserved)),
            ("192.88.99.255", Some(Reserved)),
            ("192.88.100.0", None),
            ("192.167.255.255", None),
            ("192.168.0.0", Some(Private)),
            ("192.168.255.255", Some(Private)),
            ("192.169.0.0", None),
            ("198.17.255.255", None),
            ("198.18.0.0", Some(Benchmarking)),
            ("198.19.255.255", Some(Benchmarking)),
            ("198.20.0.0", None),
            ("198.51.99.255", None),
            ("198.51.100.0", Some(Documentation)),
            ("198.51.100.255", Some(Documentation)),
            ("198.51.101.0", None),
            ("203.0.112.255", None),
            ("203.0.113.0", Some(Documentation)),
            ("203.0.113.255", Some(Documentation)),
            ("203.0.114.0", None),
            ("223.255.255.255", None),
            ("224.0.0.0", Some(Multicast)),
            ("239.255.255.255", Some(Multicast)),
            ("240.0.0.0", Some(Reserved)),
            ("255.255.255.254", Some(Reserved)),
            ("255.255.255.255", Some(Broadcast)),
            ("8.8.8.8", None),
            ("93.184.216.34", None),
        ]
    };

    #[test]
    fn ipv4_special_ranges_and_their_edges() {
        for &(s, want) in V4_TABLE {
            assert_eq!(class(s), want, "{s}");
        }
    }

    #[test]
    fn ipv6_special_ranges_and_their_edges() {
        use Forbidden::*;
        for (s, want) in [
            ("::", Some(Unspecified)),
            ("::1", Some(Loopback)),
            ("fbff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Some(Reserved)),
            ("fc00::", Some(UniqueLocal)),
            ("fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Some(UniqueLocal)),
            ("fe80::", Some(LinkLocal)),
            ("febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Some(LinkLocal)),
            ("fec0::", Some(Private)),
            ("feff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Some(Private)),
            ("ff00::", Some(Multicast)),
            ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Some(Multicast)),
            ("2001:db7:ffff:ffff:ffff:ffff:ffff:ffff", None),
            ("2001:db8::", Some(Documentation)),
            (
                "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff",
                Some(Documentation),
            ),
            ("2001:db9::", None),
            ("3ffe:ffff:ffff:ffff:ffff:ffff:ffff:ffff", None),
            ("3fff::", Some(Documentation)),
            (
                "3fff:fff:ffff:ffff:ffff:ffff:ffff:ffff",
                Some(Documentation),
            ),
            ("3fff:1000::", None),
            ("100::", Some(Reserved)),
            ("100::ffff:ffff:ffff:ffff", Some(Reserved)),
            ("2001:2::", Some(Benchmarking)),
            ("2001:2:0:ffff:ffff:ffff:ffff:ffff", Some(Benchmarking)),
            ("2001:2:1::", None),
            ("2001:f:ffff:ffff:ffff:ffff:ffff:ffff", None),
            ("2001:10::", Some(Reserved)),
            ("2001:2f:ffff:ffff:ffff:ffff:ffff:ffff", Some(Reserved)),
            ("2001:30::", None),
            ("64:ff9b:1::", Some(Private)),
            ("64:ff9b:1:ffff:ffff:ffff:ffff:ffff", Some(Private)),
            ("4000::1", Some(Reserved)),
            ("1fff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Some(Reserved)),
            ("2000::", None),
            ("3fff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", None),
            ("2606:4700:4700::1111", None),
        ] {
            assert_eq!(class(s), want, "{s}");
        }
    }

    /// A Teredo address (RFC 4380) for `server` and `client`: the client's address is stored
    /// inverted, and so is its port.
    fn teredo(server: &str, client: &str) -> String {
        let server: Ipv4Addr = server.parse().unwrap_or_else(|e| panic!("{server}: {e}"));
        let client: Ipv4Addr = client.parse().unwrap_or_else(|e| panic!("{client}: {e}"));
        let (sv, cl) = (u32::from(server), !u32::from(client));
        Ipv6Addr::new(
            0x2001,
            0,
            (sv >> 16) as u16,
            sv as u16,
            0x8000,
            !40000u16,
            (cl >> 16) as u16,
            cl as u16,
        )
        .to_string()
    }

    #[test]
    fn every_ipv6_form_of_an_ipv4_address_is_judged_by_the_ipv4_rules() {
        for &(v4, want) in V4_TABLE {
            let o = ip(v4);
            let IpAddr::V4(a) = o else { unreachable!() };
            let [b0, b1, b2, b3] = a.octets();
            let mut forms = vec![
                format!("::ffff:{v4}"),
                format!("::ffff:0:{v4}"),
                format!("64:ff9b::{v4}"),
                format!("2002:{:02x}{:02x}:{:02x}{:02x}::1", b0, b1, b2, b3),
                teredo("65.54.227.120", v4),
                teredo(v4, "8.8.4.4"),
            ];
            // `::0.x.y.z` is `::` or `::1` or unallocated; the compatible form starts at 1.0.0.0.
            if b0 != 0 {
                forms.push(format!("::{v4}"));
            }
            for form in forms {
                assert_eq!(class(&form), want, "{form} (from {v4})");
            }
        }
    }

    #[test]
    fn teredo_and_translated_forms() {
        use Forbidden::*;
        for (s, want) in [
            // RFC 4380's example: server 65.54.227.120, client 192.0.2.45 (documentation).
            (
                "2001:0000:4136:e378:8000:63bf:3fff:fdd2",
                Some(Documentation),
            ),
            // Client 127.0.0.1 behind a public server.
            ("2001:0:4136:e378:8000:63bf:80ff:fffe", Some(Loopback)),
            // Client 169.254.169.254.
            ("2001:0:4136:e378:8000:63bf:5601:5601", Some(LinkLocal)),
            // Client 0.0.0.0.
            ("2001:0:4136:e378:8000:63bf:ffff:ffff", Some(Unspecified)),
            // Public client (8.8.8.8), private server 10.0.0.1.
            ("2001:0:a00:1:8000:63bf:f7f7:f7f7", Some(Private)),
            // Public client and server.
            ("2001:0:4136:e378:8000:63bf:f7f7:f7f7", None),
            ("::ffff:0:127.0.0.1", Some(Loopback)),
            ("::ffff:0:7f00:1", Some(Loopback)),
            ("::ffff:0:10.1.2.3", Some(Private)),
            ("::ffff:0:169.254.169.254", Some(LinkLocal)),
            ("::ffff:0:0.0.0.0", Some(Unspecified)),
            ("::ffff:0:8.8.8.8", None),
            ("64:ff9b::a9fe:a9fe", Some(LinkLocal)),
            ("64:ff9b::8.8.8.8", None),
            ("2002:c058:6301::", Some(Reserved)),
            ("::8.8.8.8", None),
        ] {
            assert_eq!(class(s), want, "{s}");
        }
    }

    #[test]
    fn check_ip_respects_allow_private() {
        let e = check_ip("10.0.0.5", ip("10.0.0.5"), false)
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            e.as_deref(),
            Some("target 10.0.0.5 refused: private address")
        );
        assert!(check_ip("10.0.0.5", ip("10.0.0.5"), true).is_ok());
        assert!(check_ip("8.8.8.8", ip("8.8.8.8"), false).is_ok());
    }

    #[test]
    fn one_forbidden_address_refuses_the_host() {
        let addrs = [
            SocketAddr::new(ip("93.184.216.34"), 0),
            SocketAddr::new(ip("::ffff:169.254.169.254"), 0),
        ];
        let e = check_all("evil.example", &addrs, false)
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            e.as_deref(),
            Some("target evil.example (::ffff:169.254.169.254) refused: link-local address")
        );
        assert!(check_all("evil.example", &addrs, true).is_ok());
        assert!(check_all("nothing.example", &[], true).is_err());
    }

    #[tokio::test]
    async fn resolver_refuses_localhost_names() {
        // Resolving "localhost" reads the hosts file; nothing is sent anywhere.
        match GuardedResolver::new(false).lookup("localhost").await {
            Err(Error::TargetRefused { reason, .. }) => assert_eq!(reason, Forbidden::Loopback),
            other => panic!("expected a refusal, got {other:?}"),
        }
        match GuardedResolver::new(true).lookup("localhost").await {
            Ok(addrs) => assert!(addrs.iter().all(|a| a.ip().is_loopback())),
            Err(e) => panic!("{e}"),
        }
    }
}
