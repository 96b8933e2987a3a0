//! The system calls std does not wrap (mount, namespaces, capabilities, TUN), as thin
//! checked functions.
use std::ffi::{c_char, c_int, c_long, c_ulong, c_void, CString};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

extern "C" {
    #[link_name = "mount"]
    fn c_mount(
        src: *const c_char,
        target: *const c_char,
        fstype: *const c_char,
        flags: c_ulong,
        data: *const c_void,
    ) -> c_int;
    fn umount2(target: *const c_char, flags: c_int) -> c_int;
    fn unshare(flags: c_int) -> c_int;
    fn syscall(n: c_long, ...) -> c_long;
    #[link_name = "chdir"]
    fn c_chdir(path: *const c_char) -> c_int;
    #[link_name = "open"]
    fn c_open(path: *const c_char, flags: c_int, ...) -> c_int;
    fn ioctl(fd: c_int, req: c_ulong, ...) -> c_int;
    #[link_name = "dup2"]
    fn c_dup2(old: c_int, new: c_int) -> c_int;
    #[link_name = "close"]
    fn c_close(fd: c_int) -> c_int;
    fn prctl(option: c_int, a2: c_ulong, a3: c_ulong, a4: c_ulong, a5: c_ulong) -> c_int;
    #[link_name = "setgroups"]
    fn c_setgroups(n: usize, groups: *const u32) -> c_int;
    #[link_name = "setresgid"]
    fn c_setresgid(r: u32, e: u32, s: u32) -> c_int;
    #[link_name = "setresuid"]
    fn c_setresuid(r: u32, e: u32, s: u32) -> c_int;
    #[link_name = "getuid"]
    fn c_getuid() -> u32;
    #[link_name = "geteuid"]
    fn c_geteuid() -> u32;
    #[link_name = "getgid"]
    fn c_getgid() -> u32;
    #[link_name = "umask"]
    fn c_umask(mask: u32) -> u32;
    #[link_name = "execve"]
    fn c_execve(
        path: *const c_char,
        argv: *const *const c_char,
        envp: *const *const c_char,
    ) -> c_int;
}

pub const MS_RDONLY: c_ulong = 1;
pub const MS_NOSUID: c_ulong = 2;
pub const MS_NODEV: c_ulong = 4;
pub const MS_NOEXEC: c_ulong = 8;
pub const MS_REMOUNT: c_ulong = 32;
pub const MS_BIND: c_ulong = 4096;
pub const MS_REC: c_ulong = 16384;
pub const MS_PRIVATE: c_ulong = 1 << 18;

const CLONE_NEWNS: c_int = 0x0002_0000;
const MNT_DETACH: c_int = 2;
const SYS_PIVOT_ROOT: c_long = 155;
const O_RDWR: c_int = 2;
const TUNSETIFF: c_ulong = 0x4004_54ca;
const IFF_TAP: i16 = 0x0002;
const IFF_NO_PI: i16 = 0x1000;
const IFF_VNET_HDR: i16 = 0x4000;
const PR_SET_KEEPCAPS: c_int = 8;
const PR_CAPBSET_DROP: c_int = 24;
const PR_CAP_AMBIENT_RAISE: c_ulong = 2;
const SYS_CAPSET: c_long = 126;
const CAP_VERSION_3: u32 = 0x2008_0522;
/// Binding a port below 1024 (QEMU user-mode networking publishing a low host port).
pub const CAP_NET_BIND_SERVICE: u32 = 10;
const PR_SET_NO_NEW_PRIVS: c_int = 38;
const PR_CAP_AMBIENT: c_int = 47;
const PR_CAP_AMBIENT_CLEAR_ALL: c_ulong = 4;

fn check(rc: c_int) -> io::Result<c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn cpath(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path has a NUL byte"))
}

fn cstr(s: &str) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL byte"))
}

pub fn mount(
    src: Option<&Path>,
    target: &Path,
    fstype: Option<&str>,
    flags: c_ulong,
    data: Option<&str>,
) -> io::Result<()> {
    let s = src.map(cpath).transpose()?;
    let t = cpath(target)?;
    let f = fstype.map(cstr).transpose()?;
    let d = data.map(cstr).transpose()?;
    let ptr = |c: &Option<CString>| c.as_ref().map_or(std::ptr::null(), |c| c.as_ptr());
    let rc = unsafe {
        c_mount(
            ptr(&s),
            t.as_ptr(),
            ptr(&f),
            flags,
            ptr(&d) as *const c_void,
        )
    };
    check(rc).map(|_| ())
}

pub fn unshare_mount_ns() -> io::Result<()> {
    check(unsafe { unshare(CLONE_NEWNS) }).map(|_| ())
}

/// `pivot_root(".", ".")`: the current directory becomes `/`, the old root is stacked on
/// top of it until {@link umount_detach} removes it.
pub fn pivot_root_here() -> io::Result<()> {
    let dot = cstr(".")?;
    let rc = unsafe { syscall(SYS_PIVOT_ROOT, dot.as_ptr(), dot.as_ptr()) };
    check(rc as c_int).map(|_| ())
}

pub fn umount_detach(p: &Path) -> io::Result<()> {
    let c = cpath(p)?;
    check(unsafe { umount2(c.as_ptr(), MNT_DETACH) }).map(|_| ())
}

pub fn chdir(p: &Path) -> io::Result<()> {
    let c = cpath(p)?;
    check(unsafe { c_chdir(c.as_ptr()) }).map(|_| ())
}

pub fn open_rw(p: &Path) -> io::Result<c_int> {
    let c = cpath(p)?;
    check(unsafe { c_open(c.as_ptr(), O_RDWR) })
}

/// Attach `fd` (an open `/dev/net/tun`) to the existing TAP `name`, as QEMU would.
pub fn tun_set_iff(fd: c_int, name: &str) -> io::Result<()> {
    #[repr(C)]
    struct IfReq {
        name: [u8; 16],
        flags: i16,
        _pad: [u8; 22],
    }
    let mut req = IfReq {
        name: [0; 16],
        flags: IFF_TAP | IFF_NO_PI | IFF_VNET_HDR,
        _pad: [0; 22],
    };
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    check(unsafe { ioctl(fd, TUNSETIFF, &mut req as *mut IfReq) }).map(|_| ())
}

pub fn dup2(old: c_int, new: c_int) -> io::Result<()> {
    check(unsafe { c_dup2(old, new) }).map(|_| ())
}

pub fn close(fd: c_int) {
    unsafe { c_close(fd) };
}

/// Drop every capability but `keep` from the bounding set (those the kernel knows; the
/// rest are EINVAL).
pub fn clear_bounding_set(keep: Option<u32>) -> io::Result<()> {
    for cap in 0..64 {
        if Some(cap as u32) == keep {
            continue;
        }
        if unsafe { prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) } < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(22) {
                return Err(e);
            }
        }
    }
    Ok(())
}

pub fn clear_ambient() -> io::Result<()> {
    let rc = unsafe { prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) };
    // EINVAL: a kernel without ambient capabilities has none to clear.
    match check(rc) {
        Err(e) if e.raw_os_error() == Some(22) => Ok(()),
        r => r.map(|_| ()),
    }
}

pub fn no_new_privs() -> io::Result<()> {
    check(unsafe { prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) }).map(|_| ())
}

pub fn setgroups(groups: &[u32]) -> io::Result<()> {
    check(unsafe { c_setgroups(groups.len(), groups.as_ptr()) }).map(|_| ())
}

pub fn setresgid(g: u32) -> io::Result<()> {
    check(unsafe { c_setresgid(g, g, g) }).map(|_| ())
}

pub fn setresuid(u: u32) -> io::Result<()> {
    check(unsafe { c_setresuid(u, u, u) }).map(|_| ())
}

pub fn getuid() -> u32 {
    unsafe { c_getuid() }
}

pub fn geteuid() -> u32 {
    unsafe { c_geteuid() }
}

pub fn getgid() -> u32 {
    unsafe { c_getgid() }
}

pub fn umask(mask: u32) {
    unsafe { c_umask(mask) };
}

/// Replace this process with `argv[0]`; returns only on failure.
pub fn execve(argv: &[CString], env: &[CString]) -> io::Error {
    let mut a: Vec<*const c_char> = argv.iter().map(|c| c.as_ptr()).collect();
    a.push(std::ptr::null());
    let mut e: Vec<*const c_char> = env.iter().map(|c| c.as_ptr()).collect();
    e.push(std::ptr::null());
    unsafe { c_execve(argv[0].as_ptr(), a.as_ptr(), e.as_ptr()) };
    io::Error::last_os_error()
}

/// Keep the permitted capabilities across the coming uid change (only with a kept one).
pub fn keep_caps(on: bool) -> io::Result<()> {
    check(unsafe { prctl(PR_SET_KEEPCAPS, on as c_ulong, 0, 0, 0) }).map(|_| ())
}

/// After the uid change: `cap` alone, effective, permitted, inheritable and ambient, so it
/// survives the exec of a program with no file capabilities (and nothing else does).
pub fn only_cap(cap: u32) -> io::Result<()> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    let bit = 1u32 << cap;
    let header = Header {
        version: CAP_VERSION_3,
        pid: 0,
    };
    let set = Data {
        effective: bit,
        permitted: bit,
        inheritable: bit,
    };
    let data = [
        set,
        Data {
            effective: 0,
            permitted: 0,
            inheritable: 0,
        },
    ];
    let rc = unsafe { syscall(SYS_CAPSET, &header as *const Header, data.as_ptr()) };
    check(rc as c_int)?;
    let rc = unsafe { prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap as c_ulong, 0, 0) };
    check(rc).map(|_| ())
}
