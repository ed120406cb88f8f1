//! Outbound HTTP for HTTP-target jobs and webhook deliveries: one reqwest client that
//! never follows redirects and, unless the operator allows private targets, refuses to
//! connect to loopback, private, link-local, CGNAT, multicast, unspecified, reserved or
//! metadata addresses (including IPv4-mapped, NAT64 and 6to4 forms of them, and the
//! deprecated IPv4-compatible form, refused with the rest of the reserved `::/8`).
//!
//! The check runs in the client's DNS resolver, so the address checked is the address
//! connected to: a name that resolves to a public address once and a private one later
//! (DNS rebinding) cannot slip past. URLs with a literal IP skip DNS and are checked by
//! [`check_literal_host`] before the request is made.

use crate::domain::credentials::endpoint_only;
use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::Arc,
    time::Duration,
};

/// Whether an address is one a server-side request must not reach by default.
pub fn is_forbidden(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_forbidden_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_forbidden_v4(v4);
            }
            let seg = v6.segments();
            // NAT64 64:ff9b::/96 carries an IPv4 address in its last 32 bits.
            if seg[0] == 0x64 && seg[1] == 0xff9b && seg[2..6] == [0, 0, 0, 0] {
                return is_forbidden_v4(Ipv4Addr::from(((seg[6] as u32) << 16) | seg[7] as u32));
            }
            // 6to4 2002::/16 carries an IPv4 address in bits 16..48.
            if seg[0] == 0x2002 {
                return is_forbidden_v4(Ipv4Addr::from(((seg[1] as u32) << 16) | seg[2] as u32));
            }
            // The reserved ::/8 holds loopback, unspecified, the deprecated IPv4-compatible
            // ::/96 (`::127.0.0.1`) and IPv4-translated forms; none is a public address.
            (seg[0] & 0xff00) == 0
                || v6.is_multicast()
                || (seg[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
                || (seg[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
                || (seg[0] & 0xffc0) == 0xfec0 // site-local (deprecated) fec0::/10
                || v6 == Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254) // AWS metadata over IPv6
        }
    }
}

fn is_forbidden_v4(v4: Ipv4Addr) -> bool {
    let o = v4.octets();
    v4.is_loopback()
        || v4.is_private()
        || v4.is_link_local() // includes 169.254.169.254 (cloud metadata)
        || v4.is_unspecified()
        || v4.is_broadcast()
        || v4.is_multicast()
        || o[0] == 0 // "this network"
        || (o[0] == 100 && (o[1] & 0xc0) == 64) // CGNAT 100.64.0.0/10
        || (o[0] == 192 && o[1] == 0 && o[2] == 0) // IETF protocol assignments
        || (o[0] == 198 && (o[1] & 0xfe) == 18) // benchmarking 198.18.0.0/15
        || o[0] >= 240 // reserved
}

/// Refusal of a target address.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "the target address {0} is private, loopback or otherwise internal; refused (CRONFLOW_ALLOW_PRIVATE_TARGETS allows it)"
)]
pub struct ForbiddenAddress(pub IpAddr);

/// Checks a URL whose host is an IP literal (DNS, and so the resolver, is skipped).
pub fn check_literal_host(url: &reqwest::Url, allow_private: bool) -> Result<(), ForbiddenAddress> {
    let ip = match url.host() {
        Some(url::Host::Ipv4(v4)) => IpAddr::V4(v4),
        Some(url::Host::Ipv6(v6)) => IpAddr::V6(v6),
        _ => return Ok(()),
    };
    if !allow_private && is_forbidden(ip) {
        return Err(ForbiddenAddress(ip));
    }
    Ok(())
}

/// A resolver that drops forbidden addresses and fails if none is left.
#[derive(Debug)]
struct GuardedResolver;

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = addrs.iter().copied().filter(|a| !is_forbidden(a.ip())).collect();
            match (allowed.is_empty(), addrs.first()) {
                (true, Some(a)) => {
                    Err(Box::new(ForbiddenAddress(a.ip())) as Box<dyn std::error::Error + Send + Sync>)
                }
                _ => Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs),
            }
        })
    }
}

/// A request error with its chain of causes in one line (reqwest's own text omits them),
/// and whether the address guard refused the connection. The URL reqwest names is
/// redacted: its query or user part may hold a credential, and the text is stored where
/// read and audit keys see it.
pub fn describe_error(e: &reqwest::Error) -> (String, bool) {
    let mut text = e.to_string();
    let mut forbidden = false;
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        forbidden |= s.downcast_ref::<ForbiddenAddress>().is_some();
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    if let Some(url) = e.url() {
        text = text.replace(url.as_str(), &endpoint_only(url.as_str()));
    }
    (text, forbidden)
}

/// The outbound client: no redirects, the given connect timeout, the address guard
/// unless `allow_private`.
pub fn client(allow_private: bool, connect_timeout: Duration) -> reqwest::Result<reqwest::Client> {
    let mut b = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(connect_timeout)
        .user_agent(concat!("CronFlow/", env!("CARGO_PKG_VERSION")));
    if !allow_private {
        b = b.dns_resolver(Arc::new(GuardedResolver));
    }
    b.build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_addresses_are_forbidden_in_every_spelling() {
        for ip in [
            "127.0.0.1",
            "10.0.0.1",
            "172.16.5.4",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "::1",
            "::",
            "::ffff:127.0.0.1",
            "fd00::1",
            "fe80::1",
            "2002:7f00:1::",
            "64:ff9b::a00:1",
        ] {
            assert!(is_forbidden(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "93.184.216.34",
            "1.1.1.1",
            "2606:4700:4700::1111",
            "::ffff:1.1.1.1",
        ] {
            assert!(!is_forbidden(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn ipv4_compatible_and_other_reserved_ipv6_addresses_are_forbidden() {
        for ip in [
            "::127.0.0.1",
            "::10.0.0.1",
            "::1.1.1.1",
            "::ffff:0:7f00:1",
            "1::",
            "ff::1",
        ] {
            assert!(is_forbidden(ip.parse().unwrap()), "{ip}");
        }
        let url = reqwest::Url::parse("https://[::127.0.0.1]/x").unwrap();
        assert!(check_literal_host(&url, false).is_err(), "{url}");
        assert!(
            check_literal_host(&url, true).is_ok(),
            "allowed when private targets are"
        );
    }

    /// Address ranges a request must not reach, written out independently of
    /// [`is_forbidden`]'s code: (first address, prefix length).
    const FORBIDDEN_V4: [([u8; 4], u32); 14] = [
        ([0, 0, 0, 0], 8),
        ([10, 0, 0, 0], 8),
        ([100, 64, 0, 0], 10),
        ([127, 0, 0, 0], 8),
        ([169, 254, 0, 0], 16),
        ([172, 16, 0, 0], 12),
        ([192, 0, 0, 0], 24),
        ([192, 168, 0, 0], 16),
        ([198, 18, 0, 0], 15),
        ([224, 0, 0, 0], 4),
        ([240, 0, 0, 0], 4),
        ([255, 255, 255, 255], 32),
        ([169, 254, 169, 254], 32),
        ([127, 0, 0, 1], 32),
    ];

    fn in_forbidden_v4_range(v4: Ipv4Addr) -> bool {
        FORBIDDEN_V4.iter().any(|(base, len)| {
            let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
            u32::from(v4) & mask == u32::from(Ipv4Addr::from(*base)) & mask
        })
    }

    /// Every IPv6 spelling that carries an IPv4 address: mapped, compatible, NAT64 and
    /// 6to4 (with any subnet and interface bits).
    fn ipv6_forms(v4: Ipv4Addr, rest: [u16; 5]) -> [Ipv6Addr; 4] {
        let [a, b, c, d] = v4.octets();
        let hi = u16::from_be_bytes([a, b]);
        let lo = u16::from_be_bytes([c, d]);
        [
            v4.to_ipv6_mapped(),
            Ipv6Addr::new(0, 0, 0, 0, 0, 0, hi, lo),
            Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, hi, lo),
            Ipv6Addr::new(0x2002, hi, lo, rest[0], rest[1], rest[2], rest[3], rest[4]),
        ]
    }

    fn forbidden_v4() -> impl Strategy<Value = Ipv4Addr> {
        (0..FORBIDDEN_V4.len(), any::<u32>()).prop_map(|(i, host)| {
            let (base, len) = FORBIDDEN_V4[i];
            let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
            Ipv4Addr::from((u32::from(Ipv4Addr::from(base)) & mask) | (host & !mask))
        })
    }

    use proptest::prelude::*;

    proptest! {
        #[test]
        fn an_internal_ipv4_address_is_refused_in_every_ipv6_spelling(
            v4 in forbidden_v4(),
            rest in any::<[u16; 5]>(),
        ) {
            prop_assert!(is_forbidden(IpAddr::V4(v4)), "{}", v4);
            for v6 in ipv6_forms(v4, rest) {
                prop_assert!(is_forbidden(IpAddr::V6(v6)), "{} (carrying {})", v6, v4);
                let url = reqwest::Url::parse(&format!("https://[{v6}]/x")).unwrap();
                prop_assert!(check_literal_host(&url, false).is_err(), "{}", url);
            }
        }

        #[test]
        fn a_public_ipv4_address_passes_in_every_spelling_but_the_deprecated_one(
            v4 in any::<u32>()
                .prop_map(Ipv4Addr::from)
                .prop_filter("public", |v4| !in_forbidden_v4_range(*v4)),
            rest in any::<[u16; 5]>(),
        ) {
            prop_assert!(!is_forbidden(IpAddr::V4(v4)), "{}", v4);
            let [mapped, compatible, nat64, six_to_four] = ipv6_forms(v4, rest);
            for v6 in [mapped, nat64, six_to_four] {
                prop_assert!(!is_forbidden(IpAddr::V6(v6)), "{} (carrying {})", v6, v4);
            }
            prop_assert!(is_forbidden(IpAddr::V6(compatible)), "{} is in the reserved ::/8", compatible);
        }

        #[test]
        fn a_global_unicast_ipv6_address_passes(
            seg in any::<[u16; 8]>().prop_map(|mut s| { s[0] = 0x2000 | (s[0] & 0x1fff); s })
                .prop_filter("not 6to4", |s| s[0] != 0x2002),
        ) {
            let v6 = Ipv6Addr::from(seg);
            prop_assert!(!is_forbidden(IpAddr::V6(v6)), "{}", v6);
            let url = reqwest::Url::parse(&format!("https://[{v6}]/x")).unwrap();
            prop_assert!(check_literal_host(&url, false).is_ok(), "{}", url);
        }

        #[test]
        fn the_reserved_and_internal_ipv6_blocks_are_refused_whatever_the_host_bits(
            seg in any::<[u16; 8]>(),
            block in prop_oneof![
                Just((0x0000_u16, 0xff00_u16)), // ::/8 (its mapped and NAT64 parts carry IPv4)
                Just((0xfc00, 0xfe00)),         // unique local fc00::/7
                Just((0xfe80, 0xffc0)),         // link-local fe80::/10
                Just((0xfec0, 0xffc0)),         // site-local fec0::/10
                Just((0xff00, 0xff00)),         // multicast ff00::/8
            ],
        ) {
            let mut seg = seg;
            seg[0] = block.0 | (seg[0] & !block.1);
            let v6 = Ipv6Addr::from(seg);
            let carries_public_v4 = v6.to_ipv4_mapped().is_some_and(|v4| !in_forbidden_v4_range(v4))
                || (seg[0] == 0x64 && seg[1] == 0xff9b && seg[2..6] == [0, 0, 0, 0]
                    && !in_forbidden_v4_range(Ipv4Addr::from(((seg[6] as u32) << 16) | seg[7] as u32)));
            prop_assert_eq!(is_forbidden(IpAddr::V6(v6)), !carries_public_v4, "{}", v6);
        }
    }
}
