//! Raw C library bindings (std has no mount, pty or fork/exec-with-ctty API).
//! Linked statically against glibc; see `.cargo/config.toml`.
#![allow(non_camel_case_types, dead_code)]

use std::ffi::{c_char, c_int, c_long, c_ulong, c_void, CString};
use std::io;

pub type pid_t = i32;

#[repr(C)]
pub struct Winsize {
    pub rows: u16,
    pub cols: u16,
    pub xpixel: u16,
    pub ypixel: u16,
}

#[repr(C)]
pub struct Timespec {
    pub sec: i64,
    pub nsec: i64,
}

#[repr(C)]
pub struct Utsname {
    pub sysname: [c_char; 65],
    pub nodename: [c_char; 65],
    pub release: [c_char; 65],
    pub version: [c_char; 65],
    pub machine: [c_char; 65],
    pub domainname: [c_char; 65],
}

extern "C" {
    pub fn mount(
        src: *const c_char,
        target: *const c_char,
        fstype: *const c_char,
        flags: c_ulong,
        data: *const c_void,
    ) -> c_int;
    pub fn umount2(target: *const c_char, flags: c_int) -> c_int;
    pub fn chroot(path: *const c_char) -> c_int;
    pub fn chdir(path: *const c_char) -> c_int;
    pub fn reboot(cmd: c_int) -> c_int;
    pub fn syscall(n: c_long, ...) -> c_long;
    pub fn setsid() -> pid_t;
    pub fn ioctl(fd: c_int, req: c_ulong, ...) -> c_int;
    pub fn posix_openpt(flags: c_int) -> c_int;
    pub fn grantpt(fd: c_int) -> c_int;
    pub fn unlockpt(fd: c_int) -> c_int;
    pub fn ptsname_r(fd: c_int, buf: *mut c_char, len: usize) -> c_int;
    pub fn kill(pid: pid_t, sig: c_int) -> c_int;
    pub fn waitpid(pid: pid_t, status: *mut c_int, options: c_int) -> pid_t;
    pub fn fork() -> pid_t;
    pub fn execve(
        path: *const c_char,
        argv: *const *const c_char,
        envp: *const *const c_char,
    ) -> c_int;
    pub fn _exit(code: c_int) -> !;
    pub fn dup2(old: c_int, new: c_int) -> c_int;
    pub fn close(fd: c_int) -> c_int;
    pub fn pipe2(fds: *mut c_int, flags: c_int) -> c_int;
    pub fn fcntl(fd: c_int, cmd: c_int, ...) -> c_int;
    pub fn setuid(uid: u32) -> c_int;
    pub fn setgid(gid: u32) -> c_int;
    pub fn setgroups(n: usize, groups: *const u32) -> c_int;
    pub fn sethostname(name: *const c_char, len: usize) -> c_int;
    pub fn sync();
    pub fn getpid() -> pid_t;
    pub fn geteuid() -> u32;
    pub fn open(path: *const c_char, flags: c_int, ...) -> c_int;
    pub fn read(fd: c_int, buf: *mut c_void, n: usize) -> isize;
    pub fn write(fd: c_int, buf: *const c_void, n: usize) -> isize;
    pub fn uname(buf: *mut Utsname) -> c_int;
    pub fn signal(sig: c_int, handler: usize) -> usize;
    pub fn __errno_location() -> *mut c_int;
    pub fn socket(domain: c_int, ty: c_int, protocol: c_int) -> c_int;
    pub fn utimensat(
        dirfd: c_int,
        path: *const c_char,
        times: *const Timespec,
        flags: c_int,
    ) -> c_int;
    pub fn llistxattr(path: *const c_char, list: *mut c_char, size: usize) -> isize;
    pub fn lgetxattr(
        path: *const c_char,
        name: *const c_char,
        value: *mut c_void,
        size: usize,
    ) -> isize;
    #[cfg(test)]
    pub fn lsetxattr(
        path: *const c_char,
        name: *const c_char,
        value: *const c_void,
        size: usize,
        flags: c_int,
    ) -> c_int;
    #[cfg(test)]
    pub fn mknod(path: *const c_char, mode: u32, dev: u64) -> c_int;
}

pub const O_RDONLY: c_int = 0;
pub const O_WRONLY: c_int = 1;
pub const O_RDWR: c_int = 2;
pub const O_NOCTTY: c_int = 0o400;
pub const O_CLOEXEC: c_int = 0o2000000;
pub const O_NOFOLLOW: c_int = 0o400000;
pub const O_DIRECTORY: c_int = 0o200000;
pub const F_SETFD: c_int = 2;
pub const TIOCSCTTY: c_ulong = 0x540E;
pub const TIOCSWINSZ: c_ulong = 0x5414;
pub const MS_RDONLY: c_ulong = 1;
pub const MS_NOSUID: c_ulong = 2;
pub const MS_NODEV: c_ulong = 4;
pub const MS_NOEXEC: c_ulong = 8;
pub const MS_MOVE: c_ulong = 8192;
pub const RB_POWER_OFF: c_int = 0x4321_fedc_u32 as c_int;
pub const SYS_FINIT_MODULE: c_long = 313; // x86_64
pub const SIGPIPE: c_int = 13;
pub const SIGKILL: c_int = 9;
pub const EINTR: i32 = 4;
pub const ECHILD: i32 = 10;
pub const EEXIST: i32 = 17;
pub const EPERM: i32 = 1;
pub const ENODATA: i32 = 61;
pub const ERANGE: i32 = 34;
pub const ENOTSUP: i32 = 95;
pub const AF_INET: c_int = 2;
pub const SOCK_DGRAM: c_int = 2;
pub const SOCK_CLOEXEC: c_int = 0o2000000;

pub fn errno() -> i32 {
    unsafe { *__errno_location() }
}

pub fn cstr(s: &str) -> io::Result<CString> {
    CString::new(s).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{s:?} contains a NUL byte"),
        )
    })
}

pub fn check(rc: c_int) -> io::Result<c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// A close-on-exec pipe: (read end, write end).
pub fn pipe() -> io::Result<(c_int, c_int)> {
    let mut fds = [0 as c_int; 2];
    check(unsafe { pipe2(fds.as_mut_ptr(), O_CLOEXEC) })?;
    Ok((fds[0], fds[1]))
}

pub fn do_mount(
    src: &str,
    target: &str,
    fstype: &str,
    flags: c_ulong,
    data: &str,
) -> io::Result<()> {
    let (s, t, f, d) = (cstr(src)?, cstr(target)?, cstr(fstype)?, cstr(data)?);
    let dp = if data.is_empty() {
        std::ptr::null()
    } else {
        d.as_ptr() as *const c_void
    };
    let fp = if fstype.is_empty() {
        std::ptr::null()
    } else {
        f.as_ptr()
    };
    check(unsafe { mount(s.as_ptr(), t.as_ptr(), fp, flags, dp) }).map(|_| ())
}

pub fn kernel_release() -> String {
    let mut u: Utsname = unsafe { std::mem::zeroed() };
    unsafe { uname(&mut u) };
    let bytes: Vec<u8> = u
        .release
        .iter()
        .take_while(|c| **c != 0)
        .map(|c| *c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Decoded wait status: (exit code, signal). A signal death reports code 128+N.
pub fn decode_status(status: c_int) -> (i32, Option<i32>) {
    let sig = status & 0x7f;
    if sig == 0 {
        ((status >> 8) & 0xff, None)
    } else {
        (128 + sig, Some(sig))
    }
}

/// Set the access and modification times of `path` itself, not of what a symlink points
/// to (std has no lutimes).
pub fn set_times_nofollow(path: &std::path::Path, secs: i64) -> io::Result<()> {
    const AT_FDCWD: c_int = -100;
    const AT_SYMLINK_NOFOLLOW: c_int = 0x100;
    let p = path_cstr(path)?;
    let t = [
        Timespec { sec: secs, nsec: 0 },
        Timespec { sec: secs, nsec: 0 },
    ];
    check(unsafe { utimensat(AT_FDCWD, p.as_ptr(), t.as_ptr(), AT_SYMLINK_NOFOLLOW) }).map(|_| ())
}

fn path_cstr(path: &std::path::Path) -> io::Result<CString> {
    use std::os::unix::ffi::OsStrExt;
    CString::new(path.as_os_str().as_bytes()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} contains a NUL byte", path.display()),
        )
    })
}

/// Call `f(buf)` (an `llistxattr`/`lgetxattr`-style function returning a length or -1)
/// with a buffer large enough for the answer: size it with a first call, retry on
/// ERANGE (the value grew in between).
fn xattr_buf(f: impl Fn(*mut c_void, usize) -> isize) -> io::Result<Vec<u8>> {
    loop {
        let n = f(std::ptr::null_mut(), 0);
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        if n == 0 {
            return Ok(Vec::new());
        }
        let mut buf = vec![0u8; n as usize];
        let m = f(buf.as_mut_ptr().cast(), buf.len());
        if m >= 0 {
            buf.truncate(m as usize);
            return Ok(buf);
        }
        if errno() != ERANGE {
            return Err(io::Error::last_os_error());
        }
    }
}

/// An extended attribute: its name, and its value when it was read.
pub type Xattr = (Vec<u8>, Option<Vec<u8>>);

/// The extended attributes of `path` itself (a symlink is not followed) in the order
/// the filesystem lists them: every name, with its value when `want(name)` (only those
/// values are read). A filesystem without xattr support has none; an attribute removed
/// while listing is left out.
pub fn xattrs(path: &std::path::Path, want: impl Fn(&[u8]) -> bool) -> io::Result<Vec<Xattr>> {
    let p = path_cstr(path)?;
    let names = match xattr_buf(|b, n| unsafe { llistxattr(p.as_ptr(), b.cast(), n) }) {
        Ok(names) => names,
        Err(e) if e.raw_os_error() == Some(ENOTSUP) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for name in names.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        if !want(name) {
            out.push((name.to_vec(), None));
            continue;
        }
        let Ok(c_name) = CString::new(name) else {
            continue; // cannot happen: split at the NUL bytes
        };
        match xattr_buf(|b, n| unsafe { lgetxattr(p.as_ptr(), c_name.as_ptr(), b, n) }) {
            Ok(value) => out.push((name.to_vec(), Some(value))),
            Err(e) if e.raw_os_error() == Some(ENODATA) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// Set the extended attribute `name` of `path` itself.
#[cfg(test)]
pub fn set_xattr(path: &std::path::Path, name: &str, value: &[u8]) -> io::Result<()> {
    let (p, n) = (path_cstr(path)?, cstr(name)?);
    check(unsafe {
        lsetxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    })
    .map(|_| ())
}

/// Create the filesystem node `path` (`mode` carries the type bits).
#[cfg(test)]
pub fn make_node(path: &std::path::Path, mode: u32, dev: u64) -> io::Result<()> {
    let p = path_cstr(path)?;
    check(unsafe { mknod(p.as_ptr(), mode, dev) }).map(|_| ())
}
