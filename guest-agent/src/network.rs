//! The config disk's `network` section (PROTOCOL.md §2) and the files it produces in the
//! guest root (`/etc/resolv.conf`, `/etc/hosts`). Pure: parsing, validation and rendering;
//! `netdev.rs` applies it to the kernel.

use crate::json::Value;
use std::net::{IpAddr, Ipv4Addr};

/// One NIC to configure. `mac: None` means "the first virtio NIC" (only allowed when the
/// section lists a single interface).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    /// Lower-case `aa:bb:cc:dd:ee:ff`.
    pub mac: Option<String>,
    pub address: Option<Ipv4Addr>,
    pub prefix: u8,
    pub gateway: Option<Ipv4Addr>,
    pub mtu: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Network {
    pub interfaces: Vec<Interface>,
    pub nameservers: Vec<IpAddr>,
    pub search: Vec<String>,
}

/// `prefix` → netmask (`24` → `255.255.255.0`).
pub fn netmask(prefix: u8) -> Ipv4Addr {
    let bits: u32 = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix.min(32)))
    };
    Ipv4Addr::from(bits)
}

fn same_subnet(a: Ipv4Addr, b: Ipv4Addr, prefix: u8) -> bool {
    let m = u32::from(netmask(prefix));
    u32::from(a) & m == u32::from(b) & m
}

/// Normalise a MAC address to lower case; `None` when it is not six hex pairs with `:`.
pub fn parse_mac(s: &str) -> Option<String> {
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() != 6
        || !parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        return None;
    }
    Some(s.to_ascii_lowercase())
}

fn err(what: impl std::fmt::Display) -> String {
    format!("config: network: {what}")
}

fn opt_str<'a>(v: &'a Value, key: &str, ctx: &str) -> Result<Option<&'a str>, String> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Str(s)) => Ok(Some(s)),
        Some(_) => Err(err(format!("{ctx}\"{key}\" must be a string"))),
    }
}

fn opt_ipv4(v: &Value, key: &str, ctx: &str) -> Result<Option<Ipv4Addr>, String> {
    opt_str(v, key, ctx)?
        .map(|s| {
            s.parse::<Ipv4Addr>()
                .map_err(|_| err(format!("{ctx}\"{key}\" is not an IPv4 address: {s:?}")))
        })
        .transpose()
}

fn opt_uint(v: &Value, key: &str, ctx: &str, min: u64, max: u64) -> Result<Option<u64>, String> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(x) => match x.as_u64() {
            Some(n) if (min..=max).contains(&n) => Ok(Some(n)),
            _ => Err(err(format!(
                "{ctx}\"{key}\" must be an integer in {min}..{max}"
            ))),
        },
    }
}

fn parse_interface(v: &Value, i: usize) -> Result<Interface, String> {
    let ctx = format!("interfaces[{i}]: ");
    if !matches!(v, Value::Obj(_)) {
        return Err(err(format!("{ctx}must be an object")));
    }
    let mac = opt_str(v, "mac", &ctx)?
        .map(|s| {
            parse_mac(s).ok_or_else(|| err(format!("{ctx}\"mac\" is not a MAC address: {s:?}")))
        })
        .transpose()?;
    let address = opt_ipv4(v, "address", &ctx)?;
    let prefix = opt_uint(v, "prefix", &ctx, 0, 32)?;
    let gateway = opt_ipv4(v, "gateway", &ctx)?;
    let mtu = opt_uint(v, "mtu", &ctx, 68, 65535)?.map(|n| n as u32);
    let prefix = match (address, prefix) {
        (Some(_), None) => return Err(err(format!("{ctx}\"address\" needs a \"prefix\""))),
        (None, Some(_)) => return Err(err(format!("{ctx}\"prefix\" without an \"address\""))),
        (_, p) => p.unwrap_or(0) as u8,
    };
    if let Some(gw) = gateway {
        let Some(addr) = address else {
            return Err(err(format!("{ctx}\"gateway\" without an \"address\"")));
        };
        if gw == addr || !same_subnet(addr, gw, prefix) {
            return Err(err(format!(
                "{ctx}gateway {gw} is not another address in {addr}/{prefix}"
            )));
        }
    }
    Ok(Interface {
        mac,
        address,
        prefix,
        gateway,
        mtu,
    })
}

/// Parse the `network` value of the config document.
pub fn parse(v: &Value) -> Result<Network, String> {
    if !matches!(v, Value::Obj(_)) {
        return Err(err("must be an object"));
    }
    let interfaces = match v.get("interfaces") {
        None | Some(Value::Null) => Vec::new(),
        Some(x) => x
            .as_array()
            .ok_or_else(|| err("\"interfaces\" must be an array"))?
            .iter()
            .enumerate()
            .map(|(i, x)| parse_interface(x, i))
            .collect::<Result<Vec<_>, _>>()?,
    };
    if interfaces.len() > 1 && interfaces.iter().any(|i| i.mac.is_none()) {
        return Err(err("with more than one interface each needs a \"mac\""));
    }
    for (i, a) in interfaces.iter().enumerate() {
        if interfaces[..i]
            .iter()
            .any(|b| b.mac.is_some() && b.mac == a.mac)
        {
            return Err(err(format!(
                "interfaces[{i}]: MAC {} is listed twice",
                a.mac.as_deref().unwrap_or("")
            )));
        }
    }
    if interfaces.iter().filter(|i| i.gateway.is_some()).count() > 1 {
        return Err(err(
            "only one interface may have a gateway (the default route)",
        ));
    }
    let strings = |key: &str| -> Result<Vec<String>, String> {
        match v.get(key) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(x) => x
                .as_str_vec()
                .ok_or_else(|| err(format!("\"{key}\" must be an array of strings"))),
        }
    };
    let nameservers = strings("nameservers")?
        .iter()
        .map(|s| {
            s.parse::<IpAddr>()
                .map_err(|_| err(format!("nameserver {s:?} is not an IP address")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let search = strings("search")?;
    for s in &search {
        if s.is_empty() || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(err(format!(
                "search domain {s:?} is empty or has whitespace"
            )));
        }
    }
    Ok(Network {
        interfaces,
        nameservers,
        search,
    })
}

/// `/etc/resolv.conf`, or `None` when the config gives neither nameservers nor search
/// domains (the image's file is then left alone).
pub fn resolv_conf(net: &Network) -> Option<String> {
    if net.nameservers.is_empty() && net.search.is_empty() {
        return None;
    }
    let mut out = String::from("# written by vessel-init from the instance's network config\n");
    for ns in &net.nameservers {
        out.push_str(&format!("nameserver {ns}\n"));
    }
    if !net.search.is_empty() {
        out.push_str(&format!("search {}\n", net.search.join(" ")));
    }
    Some(out)
}

/// `/etc/hosts`: localhost, and the hostname on the first configured address
/// (`127.0.1.1` when there is none, as Debian does).
pub fn hosts(net: &Network, hostname: Option<&str>) -> String {
    let mut out = String::from(
        "# written by vessel-init\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n",
    );
    if let Some(h) = hostname.filter(|h| !h.is_empty()) {
        let ip = net
            .interfaces
            .iter()
            .find_map(|i| i.address)
            .unwrap_or(Ipv4Addr::new(127, 0, 1, 1));
        out.push_str(&format!("{ip}\t{h}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json;

    fn p(text: &str) -> Result<Network, String> {
        parse(&json::parse(text).unwrap())
    }

    #[test]
    fn full_section() {
        let n = p(r#"{"interfaces":[{"mac":"52:54:00:AB:cd:01","address":"10.0.2.15","prefix":24,
            "gateway":"10.0.2.2","mtu":1400}],"nameservers":["10.0.2.3","fd00::1"],"search":["vm","example.org"]}"#)
        .unwrap();
        assert_eq!(
            n.interfaces,
            vec![Interface {
                mac: Some("52:54:00:ab:cd:01".into()),
                address: Some(Ipv4Addr::new(10, 0, 2, 15)),
                prefix: 24,
                gateway: Some(Ipv4Addr::new(10, 0, 2, 2)),
                mtu: Some(1400),
            }]
        );
        assert_eq!(n.nameservers.len(), 2);
        assert_eq!(
            resolv_conf(&n).unwrap(),
            "# written by vessel-init from the instance's network config\n\
             nameserver 10.0.2.3\nnameserver fd00::1\nsearch vm example.org\n"
        );
        assert!(hosts(&n, Some("web")).ends_with("\n10.0.2.15\tweb\n"));
    }

    #[test]
    fn empty_and_minimal_sections() {
        let n = p("{}").unwrap();
        assert_eq!(n, Network::default());
        assert_eq!(resolv_conf(&n), None);
        assert!(hosts(&n, Some("box")).ends_with("\n127.0.1.1\tbox\n"));
        assert!(!hosts(&n, None).contains("127.0.1.1"));
        // The first virtio NIC, brought up without an address (e.g. for a DHCP client).
        let n = p(r#"{"interfaces":[{}]}"#).unwrap();
        assert_eq!(n.interfaces[0].mac, None);
        assert_eq!(n.interfaces[0].address, None);
    }

    #[test]
    fn netmasks() {
        assert_eq!(netmask(24), Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(netmask(0), Ipv4Addr::new(0, 0, 0, 0));
        assert_eq!(netmask(32), Ipv4Addr::new(255, 255, 255, 255));
        assert_eq!(netmask(20), Ipv4Addr::new(255, 255, 240, 0));
    }

    #[test]
    fn bad_sections_name_the_problem() {
        let cases = [
            ("[]", "must be an object"),
            (r#"{"interfaces":{}}"#, "\"interfaces\" must be an array"),
            (r#"{"interfaces":[1]}"#, "interfaces[0]: must be an object"),
            (
                r#"{"interfaces":[{"mac":"52:54:00:12:34"}]}"#,
                "not a MAC address",
            ),
            (
                r#"{"interfaces":[{"mac":"zz:54:00:12:34:56"}]}"#,
                "not a MAC address",
            ),
            (
                r#"{"interfaces":[{"address":"10.0.2.300","prefix":24}]}"#,
                "not an IPv4 address",
            ),
            (
                r#"{"interfaces":[{"address":"10.0.2.15"}]}"#,
                "needs a \"prefix\"",
            ),
            (
                r#"{"interfaces":[{"prefix":24}]}"#,
                "without an \"address\"",
            ),
            (
                r#"{"interfaces":[{"address":"10.0.2.15","prefix":33}]}"#,
                "\"prefix\" must be an integer in 0..32",
            ),
            (
                r#"{"interfaces":[{"address":"10.0.2.15","prefix":24,"mtu":20}]}"#,
                "\"mtu\"",
            ),
            (
                r#"{"interfaces":[{"address":"10.0.2.15","prefix":24,"gateway":"10.0.3.1"}]}"#,
                "not another address in 10.0.2.15/24",
            ),
            (
                r#"{"interfaces":[{"address":"10.0.2.15","prefix":24,"gateway":"10.0.2.15"}]}"#,
                "not another address",
            ),
            (
                r#"{"interfaces":[{"gateway":"10.0.2.2"}]}"#,
                "\"gateway\" without an \"address\"",
            ),
            (
                r#"{"interfaces":[{},{"mac":"52:54:00:12:34:56"}]}"#,
                "each needs a \"mac\"",
            ),
            (
                r#"{"interfaces":[{"mac":"52:54:00:12:34:56"},{"mac":"52:54:00:12:34:56"}]}"#,
                "listed twice",
            ),
            (
                r#"{"interfaces":[{"mac":"52:54:00:12:34:56","address":"10.0.2.15","prefix":24,"gateway":"10.0.2.2"},
                {"mac":"52:54:00:12:34:57","address":"10.0.3.15","prefix":24,"gateway":"10.0.3.2"}]}"#,
                "only one interface may have a gateway",
            ),
            (r#"{"nameservers":["dns.example"]}"#, "not an IP address"),
            (
                r#"{"nameservers":"10.0.2.3"}"#,
                "\"nameservers\" must be an array",
            ),
            (r#"{"search":["a b"]}"#, "whitespace"),
        ];
        for (text, want) in cases {
            let e = p(text).unwrap_err();
            assert!(e.starts_with("config: network: "), "{text}: {e}");
            assert!(e.contains(want), "{text}: {e} (wanted {want})");
        }
    }
}
