//! Applies the network config to the kernel with the classic `ifconfig`/`route` ioctls on
//! an AF_INET datagram socket: interface flags, MTU, IPv4 address and netmask
//! (`SIOCSIF*`), the default route (`SIOCADDRT`). See README.md for why not rtnetlink.

use crate::network::{netmask, Interface, Network};
use crate::sys;
use std::ffi::{c_char, c_int, c_ulong, c_void};
use std::fs;
use std::io;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

const SIOCADDRT: c_ulong = 0x890B;
const SIOCGIFFLAGS: c_ulong = 0x8913;
const SIOCSIFFLAGS: c_ulong = 0x8914;
const SIOCSIFADDR: c_ulong = 0x8916;
const SIOCSIFNETMASK: c_ulong = 0x891C;
const SIOCSIFMTU: c_ulong = 0x8922;
const SIOCSIFHWADDR: c_ulong = 0x8924;
const ARPHRD_ETHER: u16 = 1;
const IFF_UP: i16 = 0x1;
const IFF_RUNNING: i16 = 0x40;
const RTF_UP: u16 = 0x1;
const RTF_GATEWAY: u16 = 0x2;
const IFNAMSIZ: usize = 16;

/// `struct sockaddr` holding a `sockaddr_in` (family, port, address, zero padding).
#[repr(C)]
#[derive(Clone, Copy)]
struct SockAddr {
    family: u16,
    data: [u8; 14],
}

impl SockAddr {
    fn inet(addr: Ipv4Addr) -> SockAddr {
        let mut data = [0u8; 14];
        // data[0..2] is the port (0); the address follows in network byte order.
        data[2..6].copy_from_slice(&addr.octets());
        SockAddr {
            family: sys::AF_INET as u16,
            data,
        }
    }
}

/// `struct ifreq`: the name, then a 24-byte union (sockaddr, flags, mtu, ...).
#[repr(C)]
struct IfReq {
    name: [u8; IFNAMSIZ],
    data: [u8; 24],
}

impl IfReq {
    fn new(name: &str) -> io::Result<IfReq> {
        if name.is_empty() || name.len() >= IFNAMSIZ || name.contains('\0') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("bad interface name {name:?}"),
            ));
        }
        let mut r = IfReq {
            name: [0; IFNAMSIZ],
            data: [0; 24],
        };
        r.name[..name.len()].copy_from_slice(name.as_bytes());
        Ok(r)
    }

    fn with_addr(name: &str, addr: Ipv4Addr) -> io::Result<IfReq> {
        let mut r = IfReq::new(name)?;
        let sa = SockAddr::inet(addr);
        r.data[0..2].copy_from_slice(&sa.family.to_ne_bytes());
        r.data[2..16].copy_from_slice(&sa.data);
        Ok(r)
    }
}

/// `struct rtentry` (x86_64 layout; `repr(C)` adds the same padding as the C compiler).
#[repr(C)]
struct RtEntry {
    rt_pad1: c_ulong,
    rt_dst: SockAddr,
    rt_gateway: SockAddr,
    rt_genmask: SockAddr,
    rt_flags: u16,
    rt_pad2: i16,
    rt_pad3: c_ulong,
    rt_pad4: *mut c_void,
    rt_metric: i16,
    rt_dev: *mut c_char,
    rt_mtu: c_ulong,
    rt_window: c_ulong,
    rt_irtt: u16,
}

struct Sock(c_int);

impl Sock {
    fn open() -> io::Result<Sock> {
        let fd = unsafe { sys::socket(sys::AF_INET, sys::SOCK_DGRAM | sys::SOCK_CLOEXEC, 0) };
        sys::check(fd).map(Sock)
    }

    fn ioctl<T>(&self, req: c_ulong, arg: &mut T) -> io::Result<()> {
        sys::check(unsafe { sys::ioctl(self.0, req, arg as *mut T) }).map(|_| ())
    }

    fn set_up(&self, name: &str) -> io::Result<()> {
        let mut r = IfReq::new(name)?;
        self.ioctl(SIOCGIFFLAGS, &mut r)?;
        let flags = i16::from_ne_bytes([r.data[0], r.data[1]]) | IFF_UP | IFF_RUNNING;
        r.data[0..2].copy_from_slice(&flags.to_ne_bytes());
        self.ioctl(SIOCSIFFLAGS, &mut r)
    }
}

impl Sock {
    fn set_down(&self, name: &str) -> io::Result<()> {
        let mut r = IfReq::new(name)?;
        self.ioctl(SIOCGIFFLAGS, &mut r)?;
        let flags = i16::from_ne_bytes([r.data[0], r.data[1]]) & !IFF_UP;
        r.data[0..2].copy_from_slice(&flags.to_ne_bytes());
        self.ioctl(SIOCSIFFLAGS, &mut r)
    }

    /// The link's hardware address (it must be down).
    fn set_mac(&self, name: &str, mac: [u8; 6]) -> io::Result<()> {
        let mut r = IfReq::new(name)?;
        r.data[0..2].copy_from_slice(&ARPHRD_ETHER.to_ne_bytes());
        r.data[2..8].copy_from_slice(&mac);
        self.ioctl(SIOCSIFHWADDR, &mut r)
    }

    fn clear_address(&self, name: &str) -> io::Result<()> {
        let mut r = IfReq::with_addr(name, Ipv4Addr::UNSPECIFIED)?;
        match self.ioctl(SIOCSIFADDR, &mut r) {
            // No address to remove.
            Err(e) if e.raw_os_error() == Some(99) => Ok(()),
            other => other,
        }
    }
}

/// `aa:bb:cc:dd:ee:ff` (already validated by `network::parse`) → bytes.
fn mac_bytes(mac: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let parts: Vec<&str> = mac.split(':').collect();
    if parts.len() != 6 {
        return None;
    }
    for (i, p) in parts.iter().enumerate() {
        out[i] = u8::from_str_radix(p, 16).ok()?;
    }
    Some(out)
}

/// RECONFIGURE (PROTOCOL.md §4): a guest resumed from a snapshot taken as another
/// instance (a fork) or with another address takes its current identity: the hostname,
/// and per interface the MAC (the NIC still has the saved one), the address (the old one
/// is replaced, or removed when the new config has none), MTU and default route (the link
/// goes down and up, which drops routes through it), then `/etc/hosts` and
/// `/etc/resolv.conf` as at boot.
pub fn reconfigure(net: Option<&Network>, hostname: &str) -> Result<(), String> {
    sys::check(unsafe { sys::sethostname(hostname.as_ptr().cast(), hostname.len()) })
        .map_err(|e| format!("set hostname {hostname:?}: {e}"))?;
    let Some(net) = net else { return Ok(()) };
    let s = Sock::open().map_err(|e| format!("network: socket: {e}"))?;
    for ifc in &net.interfaces {
        // The NIC has the saved MAC: by the new one if it has it already, else the only one.
        let name = match find_interface(ifc.mac.as_deref(), Duration::ZERO) {
            Ok(n) => n,
            Err(_) if net.interfaces.len() == 1 => find_interface(None, Duration::ZERO)?,
            Err(e) => return Err(e),
        };
        let fail = |what: String, e: io::Error| format!("network: {name}: {what}: {e}");
        s.set_down(&name)
            .map_err(|e| fail("bring down".into(), e))?;
        if let Some(mac) = &ifc.mac {
            let bytes = mac_bytes(mac).ok_or_else(|| format!("network: bad MAC {mac}"))?;
            s.set_mac(&name, bytes)
                .map_err(|e| fail(format!("set MAC {mac}"), e))?;
        }
        if ifc.address.is_none() {
            s.clear_address(&name)
                .map_err(|e| fail("remove the old address".into(), e))?;
        }
        configure_interface(&s, ifc)?;
    }
    write_files("/", net, Some(hostname))
}

impl Drop for Sock {
    fn drop(&mut self) {
        unsafe { sys::close(self.0) };
    }
}

/// Bring `lo` up (the kernel then gives it 127.0.0.1/8 and ::1).
pub fn loopback_up() -> Result<(), String> {
    let s = Sock::open().map_err(|e| format!("network: socket: {e}"))?;
    s.set_up("lo")
        .map_err(|e| format!("network: bring lo up: {e}"))
}

/// The interface name whose MAC is `mac`, or the first virtio NIC when `mac` is `None`;
/// waits up to `timeout` since NICs register asynchronously after the driver loads.
fn find_interface(mac: Option<&str>, timeout: Duration) -> Result<String, String> {
    let deadline = Instant::now() + timeout;
    loop {
        let mut seen = Vec::new();
        let mut virtio = Vec::new();
        if let Ok(rd) = fs::read_dir("/sys/class/net") {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name == "lo" {
                    continue;
                }
                let addr = fs::read_to_string(e.path().join("address"))
                    .map(|s| s.trim().to_ascii_lowercase())
                    .unwrap_or_default();
                if mac.is_some_and(|m| m == addr) {
                    return Ok(name);
                }
                let driver = fs::read_link(e.path().join("device/driver")).ok();
                if driver.is_some_and(|d| d.file_name().is_some_and(|f| f == "virtio_net")) {
                    virtio.push(name.clone());
                }
                seen.push(format!("{name} {addr}"));
            }
        }
        if mac.is_none() {
            virtio.sort();
            if let Some(first) = virtio.into_iter().next() {
                return Ok(first);
            }
        }
        if Instant::now() >= deadline {
            let want = mac.map_or("virtio NIC".to_owned(), |m| {
                format!("interface with MAC {m}")
            });
            let found = if seen.is_empty() {
                "none; is the virtio_net module loaded?".to_owned()
            } else {
                seen.join(", ")
            };
            return Err(format!("network: no {want} (interfaces found: {found})"));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn configure_interface(s: &Sock, ifc: &Interface) -> Result<(), String> {
    let name = find_interface(ifc.mac.as_deref(), Duration::from_secs(10))?;
    let fail = |what: String, e: io::Error| format!("network: {name}: {what}: {e}");
    if let Some(mtu) = ifc.mtu {
        let mut r = IfReq::new(&name).map_err(|e| fail("name".into(), e))?;
        r.data[0..4].copy_from_slice(&(mtu as i32).to_ne_bytes());
        s.ioctl(SIOCSIFMTU, &mut r)
            .map_err(|e| fail(format!("set MTU {mtu}"), e))?;
    }
    if let Some(addr) = ifc.address {
        let mut r = IfReq::with_addr(&name, addr).map_err(|e| fail("name".into(), e))?;
        s.ioctl(SIOCSIFADDR, &mut r)
            .map_err(|e| fail(format!("set address {addr}"), e))?;
        let mask = netmask(ifc.prefix);
        let mut r = IfReq::with_addr(&name, mask).map_err(|e| fail("name".into(), e))?;
        s.ioctl(SIOCSIFNETMASK, &mut r)
            .map_err(|e| fail(format!("set netmask {mask}"), e))?;
    }
    s.set_up(&name).map_err(|e| fail("bring up".into(), e))?;
    if let Some(gw) = ifc.gateway {
        let dev = sys::cstr(&name).map_err(|e| fail("name".into(), e))?;
        let any = SockAddr::inet(Ipv4Addr::UNSPECIFIED);
        let mut rt = RtEntry {
            rt_pad1: 0,
            rt_dst: any,
            rt_gateway: SockAddr::inet(gw),
            rt_genmask: any,
            rt_flags: RTF_UP | RTF_GATEWAY,
            rt_pad2: 0,
            rt_pad3: 0,
            rt_pad4: std::ptr::null_mut(),
            rt_metric: 0,
            rt_dev: dev.as_ptr() as *mut c_char,
            rt_mtu: 0,
            rt_window: 0,
            rt_irtt: 0,
        };
        s.ioctl(SIOCADDRT, &mut rt)
            .map_err(|e| fail(format!("add default route via {gw}"), e))?;
    }
    let shown = ifc
        .address
        .map_or("no address".to_owned(), |a| format!("{a}/{}", ifc.prefix));
    crate::markers::log(&format!("network: {name} up ({shown})"));
    Ok(())
}

/// Configure every interface of the section (in order).
pub fn configure(net: &Network) -> Result<(), String> {
    if net.interfaces.is_empty() {
        return Ok(());
    }
    let s = Sock::open().map_err(|e| format!("network: socket: {e}"))?;
    for ifc in &net.interfaces {
        configure_interface(&s, ifc)?;
    }
    Ok(())
}

/// Replace `path` (a file or a symlink, e.g. to systemd-resolved's stub) with `content`.
fn replace_file(path: &str, content: &str) -> Result<(), String> {
    let tmp = format!("{path}.vessel-tmp");
    let _ = fs::remove_file(&tmp);
    fs::write(&tmp, content).map_err(|e| format!("network: write {path}: {e}"))?;
    // rename() replaces a symlink itself, never its target.
    fs::rename(&tmp, path).map_err(|e| format!("network: write {path}: {e}"))
}

/// Write `/etc/resolv.conf` (when there is something to write) and `/etc/hosts` under `root`.
pub fn write_files(root: &str, net: &Network, hostname: Option<&str>) -> Result<(), String> {
    let etc = format!("{}/etc", root.trim_end_matches('/'));
    fs::create_dir_all(&etc).map_err(|e| format!("network: create {etc}: {e}"))?;
    if let Some(text) = crate::network::resolv_conf(net) {
        replace_file(&format!("{etc}/resolv.conf"), &text)?;
    }
    replace_file(
        &format!("{etc}/hosts"),
        &crate::network::hosts(net, hostname),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_bytes_parses_six_hex_octets_only() {
        assert_eq!(
            mac_bytes("52:54:00:ab:cd:ef"),
            Some([0x52, 0x54, 0x00, 0xab, 0xcd, 0xef])
        );
        assert_eq!(mac_bytes("52:54:00:ab:cd"), None);
        assert_eq!(mac_bytes("52:54:00:ab:cd:zz"), None);
        assert_eq!(mac_bytes("52:54:00:ab:cd:ef:01"), None);
    }

    #[test]
    fn kernel_struct_layouts() {
        // sizeof(struct ifreq) and sizeof(struct rtentry) on x86_64 Linux.
        assert_eq!(std::mem::size_of::<IfReq>(), 40);
        assert_eq!(std::mem::size_of::<RtEntry>(), 120);
        assert_eq!(std::mem::size_of::<SockAddr>(), 16);
        assert_eq!(std::mem::offset_of!(RtEntry, rt_flags), 56);
        assert_eq!(std::mem::offset_of!(RtEntry, rt_dev), 88);
    }

    #[test]
    fn sockaddr_in_bytes() {
        let r = IfReq::with_addr("eth0", Ipv4Addr::new(10, 0, 2, 15)).unwrap();
        assert_eq!(&r.name[..5], b"eth0\0");
        assert_eq!(&r.data[0..8], &[2, 0, 0, 0, 10, 0, 2, 15]);
        assert!(IfReq::new("a-name-that-is-too-long").is_err());
        assert!(IfReq::new("").is_err());
    }

    #[test]
    fn files_are_written_and_symlinks_replaced() {
        let dir = std::env::temp_dir().join(format!("vessel-netdev-{}", std::process::id()));
        let root = dir.to_str().unwrap().to_owned();
        fs::create_dir_all(dir.join("etc")).unwrap();
        let outside = dir.join("outside");
        fs::write(&outside, "keep").unwrap();
        std::os::unix::fs::symlink(&outside, dir.join("etc/resolv.conf")).unwrap();
        let net = crate::network::parse(
            &crate::json::parse(r#"{"interfaces":[{"address":"10.0.2.15","prefix":24}],"nameservers":["10.0.2.3"]}"#)
                .unwrap(),
        )
        .unwrap();
        write_files(&root, &net, Some("vm-1")).unwrap();
        let resolv = fs::read_to_string(dir.join("etc/resolv.conf")).unwrap();
        assert!(resolv.contains("nameserver 10.0.2.3\n"));
        assert!(!fs::symlink_metadata(dir.join("etc/resolv.conf"))
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(
            fs::read_to_string(&outside).unwrap(),
            "keep",
            "the link target is untouched"
        );
        assert!(fs::read_to_string(dir.join("etc/hosts"))
            .unwrap()
            .contains("10.0.2.15\tvm-1\n"));
        fs::remove_dir_all(&dir).unwrap();
    }
}
