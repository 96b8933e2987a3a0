//! vessel-jailer: runs one hypervisor process the way Firecracker's jailer runs its VMM.
//!
//! Started as root by the daemon, it
//! 1. moves itself into the VM's cgroups (the limits hold from the first instruction),
//! 2. opens the VM's TAP device and leaves it open on a fixed fd (the VMM needs no
//!    CAP_NET_ADMIN to use it),
//! 3. closes every other inherited fd,
//! 4. enters a new mount namespace whose root is an empty tmpfs holding only the paths it
//!    was told to bind, at their host paths (so the VMM's arguments need no rewriting),
//!    read-only unless told otherwise,
//! 5. drops to the VM's uid/gid with no capabilities (bounding and ambient sets cleared)
//!    and `no_new_privs`,
//! 6. execs the program. The hypervisor's own seccomp filter (QEMU `-sandbox on`) is
//!    applied by the hypervisor; the program never runs with privileges.
//!
//! Usage:
//!   vessel-jailer --root DIR --uid N --gid N [--group N]... [--ro PATH]... [--rw PATH]...
//!                 [--dev PATH]... [--cgroup PROCS_FILE]... [--tap IFNAME:FD] -- PROGRAM [ARG]...
mod sys;

use std::ffi::{CString, OsString};
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::symlink;
use std::path::{Component, Path, PathBuf};

#[derive(Debug, Default, PartialEq)]
struct Args {
    root: PathBuf,
    uid: u32,
    gid: u32,
    groups: Vec<u32>,
    binds: Vec<Bind>,
    cgroups: Vec<PathBuf>,
    tap: Option<(String, i32)>,
    /// The one capability the program keeps (`--keep-cap net_bind_service`), if any.
    keep_cap: Option<u32>,
    program: Vec<OsString>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum BindKind {
    ReadOnly,
    ReadWrite,
    Device,
}

#[derive(Debug, PartialEq)]
struct Bind {
    path: PathBuf,
    kind: BindKind,
}

fn absolute(flag: &str, v: &OsString) -> Result<PathBuf, String> {
    let p = PathBuf::from(v);
    if !p.is_absolute() || p.components().any(|c| c == Component::ParentDir) {
        return Err(format!(
            "{flag} {}: must be an absolute path without ..",
            p.display()
        ));
    }
    Ok(p)
}

fn number(flag: &str, v: &OsString) -> Result<u32, String> {
    v.to_str()
        .and_then(|s| s.parse::<u32>().ok())
        .ok_or_else(|| format!("{flag}: not a number: {}", v.to_string_lossy()))
}

fn parse(argv: Vec<OsString>) -> Result<Args, String> {
    let mut a = Args::default();
    let (mut have_uid, mut have_gid) = (false, false);
    let mut it = argv.into_iter();
    while let Some(flag) = it.next() {
        let flag = flag.to_string_lossy().into_owned();
        if flag == "--" {
            a.program = it.by_ref().collect();
            break;
        }
        let v = it.next().ok_or_else(|| format!("{flag}: missing value"))?;
        match flag.as_str() {
            "--root" => a.root = absolute(&flag, &v)?,
            "--uid" => (a.uid, have_uid) = (number(&flag, &v)?, true),
            "--gid" => (a.gid, have_gid) = (number(&flag, &v)?, true),
            "--group" => a.groups.push(number(&flag, &v)?),
            "--ro" | "--rw" | "--dev" => a.binds.push(Bind {
                path: absolute(&flag, &v)?,
                kind: match flag.as_str() {
                    "--ro" => BindKind::ReadOnly,
                    "--rw" => BindKind::ReadWrite,
                    _ => BindKind::Device,
                },
            }),
            "--cgroup" => a.cgroups.push(absolute(&flag, &v)?),
            "--keep-cap" => match v.to_str() {
                Some("net_bind_service") => a.keep_cap = Some(sys::CAP_NET_BIND_SERVICE),
                _ => return Err(format!("--keep-cap: only net_bind_service may be kept")),
            },
            "--tap" => {
                let s = v.to_string_lossy();
                let (name, fd) = s.rsplit_once(':').ok_or("--tap: expected IFNAME:FD")?;
                let fd: i32 = fd.parse().map_err(|_| "--tap: FD is not a number")?;
                if name.is_empty() || name.len() > 15 || !(3..1024).contains(&fd) {
                    return Err(format!(
                        "--tap {s}: name of 1-15 bytes and an fd in 3..1023"
                    ));
                }
                a.tap = Some((name.to_string(), fd));
            }
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    if a.root.as_os_str().is_empty() || !have_uid || !have_gid {
        return Err("--root, --uid and --gid are required".into());
    }
    if a.uid == 0 || a.gid == 0 {
        return Err("--uid and --gid must not be 0: the point is to drop root".into());
    }
    match a.program.first() {
        Some(p) if Path::new(p).is_absolute() => {}
        _ => return Err("expected -- followed by the program's absolute path".into()),
    }
    // Parents before children, so a bind under another bind lands inside it.
    a.binds.sort_by_key(|b| b.path.components().count());
    Ok(a)
}

fn ctx<T>(what: impl Fn() -> String, r: io::Result<T>) -> Result<T, String> {
    r.map_err(|e| format!("{}: {e}", what()))
}

/// Where `host` appears inside the jail rooted at `root`.
fn in_jail(root: &Path, host: &Path) -> PathBuf {
    root.join(host.strip_prefix("/").unwrap_or(host))
}

/// Make `host` visible at the same path inside the jail: a symlink is recreated as the same
/// symlink (merged-/usr hosts: `/lib -> usr/lib`), anything else is bind-mounted.
fn place(root: &Path, b: &Bind) -> Result<(), String> {
    let target = in_jail(root, &b.path);
    let meta = ctx(
        || format!("{}", b.path.display()),
        fs::symlink_metadata(&b.path),
    )?;
    if let Some(parent) = target.parent() {
        ctx(
            || format!("mkdir {}", parent.display()),
            fs::create_dir_all(parent),
        )?;
    }
    if meta.file_type().is_symlink() {
        let link = ctx(
            || format!("readlink {}", b.path.display()),
            fs::read_link(&b.path),
        )?;
        return ctx(
            || format!("symlink {}", target.display()),
            symlink(link, &target),
        );
    }
    if meta.is_dir() {
        ctx(
            || format!("mkdir {}", target.display()),
            fs::create_dir_all(&target),
        )?;
    } else if fs::symlink_metadata(&target).is_err() {
        ctx(
            || format!("create {}", target.display()),
            fs::File::create(&target).map(|_| ()),
        )?;
    }
    let w = || format!("bind {}", b.path.display());
    ctx(
        w,
        sys::mount(Some(&b.path), &target, None, sys::MS_BIND, None),
    )?;
    let flags = sys::MS_BIND
        | sys::MS_REMOUNT
        | sys::MS_NOSUID
        | match b.kind {
            BindKind::ReadOnly => sys::MS_RDONLY | sys::MS_NODEV,
            BindKind::ReadWrite => sys::MS_NODEV | sys::MS_NOEXEC,
            BindKind::Device => sys::MS_NOEXEC,
        };
    ctx(w, sys::mount(None, &target, None, flags, None))
}

fn open_tap(name: &str, fd: i32) -> Result<(), String> {
    let tun = ctx(
        || "open /dev/net/tun".into(),
        sys::open_rw(Path::new("/dev/net/tun")),
    )?;
    ctx(|| format!("TUNSETIFF {name}"), sys::tun_set_iff(tun, name))?;
    if tun != fd {
        ctx(|| format!("dup2 to fd {fd}"), sys::dup2(tun, fd))?;
        sys::close(tun);
    }
    Ok(())
}

/// Close every fd above stderr except `keep`: nothing of the daemon leaks into the VMM.
fn close_inherited(keep: Option<i32>) -> Result<(), String> {
    let fds: Vec<i32> = ctx(
        || "read /proc/self/fd".into(),
        fs::read_dir("/proc/self/fd"),
    )?
    .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
    .collect();
    for fd in fds {
        if fd > 2 && Some(fd) != keep {
            sys::close(fd); // includes the (now stale) read_dir fd: harmless EBADF
        }
    }
    Ok(())
}

fn enter_jail(a: &Args) -> Result<(), String> {
    ctx(|| "unshare(CLONE_NEWNS)".into(), sys::unshare_mount_ns())?;
    // Nothing we mount propagates back to the host, and host mounts stop propagating in.
    let slash = Path::new("/");
    ctx(
        || "make / private".into(),
        sys::mount(None, slash, None, sys::MS_REC | sys::MS_PRIVATE, None),
    )?;
    let tmpfs = |flags| {
        sys::mount(
            Some(Path::new("vessel-jail")),
            &a.root,
            Some("tmpfs"),
            flags,
            Some("mode=0755,size=1m"),
        )
    };
    ctx(
        || format!("mount tmpfs on {}", a.root.display()),
        tmpfs(sys::MS_NOSUID | sys::MS_NODEV),
    )?;
    for b in &a.binds {
        place(&a.root, b)?;
    }
    // The skeleton is done: the jail's own root becomes read-only.
    let ro = sys::MS_REMOUNT | sys::MS_RDONLY | sys::MS_NOSUID | sys::MS_NODEV;
    ctx(|| "remount the jail read-only".into(), tmpfs(ro))?;
    ctx(
        || format!("chdir {}", a.root.display()),
        sys::chdir(&a.root),
    )?;
    ctx(|| "pivot_root".into(), sys::pivot_root_here())?;
    ctx(
        || "detach the old root".into(),
        sys::umount_detach(Path::new(".")),
    )?;
    ctx(|| "chdir /".into(), sys::chdir(slash))
}

fn drop_privileges(a: &Args) -> Result<(), String> {
    ctx(
        || "clear the capability bounding set".into(),
        sys::clear_bounding_set(a.keep_cap),
    )?;
    ctx(|| "clear ambient capabilities".into(), sys::clear_ambient())?;
    ctx(|| "setgroups".into(), sys::setgroups(&a.groups))?;
    ctx(|| format!("setresgid {}", a.gid), sys::setresgid(a.gid))?;
    if a.keep_cap.is_some() {
        ctx(|| "keep capabilities".into(), sys::keep_caps(true))?;
    }
    ctx(|| format!("setresuid {}", a.uid), sys::setresuid(a.uid))?;
    if let Some(cap) = a.keep_cap {
        ctx(
            || format!("keep capability {cap} alone"),
            sys::only_cap(cap),
        )?;
        ctx(|| "keep capabilities off".into(), sys::keep_caps(false))?;
    }
    ctx(|| "no_new_privs".into(), sys::no_new_privs())?;
    // Belt and braces: the kernel dropped the permitted set with the uid change.
    if sys::getuid() != a.uid || sys::geteuid() != a.uid || sys::getgid() != a.gid {
        return Err("the uid/gid change did not take".into());
    }
    Ok(())
}

fn run(a: Args) -> Result<(), String> {
    let pid = std::process::id().to_string();
    for f in &a.cgroups {
        ctx(
            || format!("join cgroup {}", f.display()),
            fs::write(f, &pid),
        )?;
    }
    if let Some((name, fd)) = &a.tap {
        open_tap(name, *fd)?;
    }
    close_inherited(a.tap.as_ref().map(|t| t.1))?;
    enter_jail(&a)?;
    drop_privileges(&a)?;
    // Files the VMM creates (sockets, its serial log) are its uid's alone.
    sys::umask(0o077);
    let argv: Vec<CString> = a
        .program
        .iter()
        .map(|s| CString::new(s.as_bytes()).map_err(|_| "an argument has a NUL byte".to_string()))
        .collect::<Result<_, _>>()?;
    let err = sys::execve(&argv, &[CString::new("PATH=/usr/bin:/bin").unwrap()]);
    Err(format!("exec {}: {err}", a.program[0].to_string_lossy()))
}

fn main() {
    let args = match parse(std::env::args_os().skip(1).collect()) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("vessel-jailer: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(args) {
        eprintln!("vessel-jailer: {e}");
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn parses_a_full_command_line() {
        let a = parse(os(&[
            "--root",
            "/j",
            "--uid",
            "200001",
            "--gid",
            "200001",
            "--group",
            "108",
            "--ro",
            "/usr/lib/x",
            "--ro",
            "/usr",
            "--rw",
            "/var/lib/vessel/instances/a",
            "--dev",
            "/dev/null",
            "--cgroup",
            "/sys/fs/cgroup/vessel/a/cgroup.procs",
            "--tap",
            "vt0:3",
            "--",
            "/usr/bin/qemu",
            "-S",
        ]))
        .unwrap();
        assert_eq!(a.uid, 200001);
        assert_eq!(a.groups, vec![108]);
        assert_eq!(a.tap, Some(("vt0".into(), 3)));
        assert_eq!(a.program, os(&["/usr/bin/qemu", "-S"]));
        // Sorted parents first: /usr before /usr/lib/x.
        let order: Vec<_> = a.binds.iter().map(|b| b.path.to_str().unwrap()).collect();
        assert_eq!(order[0], "/usr");
        assert!(order.iter().position(|p| *p == "/usr/lib/x") > Some(0));
    }

    #[test]
    fn refuses_what_would_defeat_the_jail() {
        let base = ["--root", "/j", "--uid", "5", "--gid", "5"];
        let with = |extra: &[&str]| {
            let mut v: Vec<&str> = base.to_vec();
            v.extend_from_slice(extra);
            parse(os(&v))
        };
        assert!(with(&["--", "/bin/x"]).is_ok());
        assert!(with(&["--ro", "relative", "--", "/bin/x"]).is_err());
        assert!(with(&["--rw", "/a/../etc", "--", "/bin/x"]).is_err());
        assert!(with(&["--", "qemu"]).is_err(), "program must be absolute");
        assert!(with(&[]).is_err(), "no program");
        assert!(with(&["--tap", "vt0", "--", "/bin/x"]).is_err());
        assert!(
            with(&["--tap", "vt0:1", "--", "/bin/x"]).is_err(),
            "fd below 3"
        );
        assert!(parse(os(&[
            "--root", "/j", "--uid", "0", "--gid", "5", "--", "/x"
        ]))
        .is_err());
        assert!(parse(os(&["--uid", "5", "--gid", "5", "--", "/x"])).is_err());
        assert!(with(&["--bogus", "1", "--", "/bin/x"]).is_err());
    }

    #[test]
    fn keeps_only_net_bind_service() {
        let base = ["--root", "/j", "--uid", "5", "--gid", "5"];
        let with = |extra: &[&str]| {
            let mut v: Vec<&str> = base.to_vec();
            v.extend_from_slice(extra);
            parse(os(&v))
        };
        let a = with(&["--keep-cap", "net_bind_service", "--", "/bin/x"]).unwrap();
        assert_eq!(a.keep_cap, Some(sys::CAP_NET_BIND_SERVICE));
        assert!(with(&["--keep-cap", "sys_admin", "--", "/bin/x"]).is_err());
        assert_eq!(with(&["--", "/bin/x"]).unwrap().keep_cap, None);
    }

    #[test]
    fn jail_paths_mirror_host_paths() {
        assert_eq!(
            in_jail(Path::new("/run/j"), Path::new("/var/lib/vessel/x")),
            PathBuf::from("/run/j/var/lib/vessel/x")
        );
    }
}
