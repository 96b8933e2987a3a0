//! Process spawning (fork/execve with setsid, controlling tty, credentials) and the
//! single reaper that collects every child's status (PID 1 must reap orphans too, so
//! nobody else may call waitpid on a specific pid).

use crate::sys;
use std::collections::HashMap;
use std::ffi::{c_char, c_int, CString};
use std::io;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Condvar, Mutex, Once};
use std::time::Duration;

struct Reaper {
    /// Bumped (under the lock) whenever a child was forked: an idle reaper re-checks.
    generation: u64,
    waiters: HashMap<i32, Sender<c_int>>,
    unclaimed: HashMap<i32, c_int>,
}

static REAPER: Mutex<Option<Reaper>> = Mutex::new(None);
static SPAWNED: Condvar = Condvar::new();
static START: Once = Once::new();

/// Start the reaper thread (once): from then on every child of this process, and every
/// orphan re-parented to PID 1, is reaped. Spawning starts it too.
pub fn start_reaper() {
    START.call_once(|| {
        *REAPER.lock().unwrap() = Some(Reaper {
            generation: 0,
            waiters: HashMap::new(),
            unclaimed: HashMap::new(),
        });
        std::thread::spawn(|| loop {
            let seen = REAPER.lock().unwrap().as_ref().unwrap().generation;
            let mut status: c_int = 0;
            let pid = unsafe { sys::waitpid(-1, &mut status, 0) };
            if pid < 0 {
                if sys::errno() == sys::ECHILD {
                    let g = REAPER.lock().unwrap();
                    if g.as_ref().unwrap().generation == seen {
                        let _ = SPAWNED.wait_timeout(g, Duration::from_secs(5));
                    }
                }
                continue;
            }
            let mut g = REAPER.lock().unwrap();
            let r = g.as_mut().unwrap();
            if let Some(tx) = r.waiters.remove(&pid) {
                let _ = tx.send(status);
            } else {
                if r.unclaimed.len() > 4096 {
                    r.unclaimed.clear();
                }
                r.unclaimed.insert(pid, status);
            }
        });
    });
}

/// Wake an idle reaper: a new child exists.
fn child_forked() {
    let mut g = REAPER.lock().unwrap();
    g.as_mut().unwrap().generation += 1;
    SPAWNED.notify_all();
}

/// Receive the raw wait status of `pid` once it exits.
pub fn wait_for(pid: i32) -> Receiver<c_int> {
    start_reaper();
    let (tx, rx) = channel();
    let mut g = REAPER.lock().unwrap();
    let r = g.as_mut().unwrap();
    if let Some(st) = r.unclaimed.remove(&pid) {
        let _ = tx.send(st);
    } else {
        r.waiters.insert(pid, tx);
    }
    rx
}

/// Where spawning failed, for error classification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Setup = 1,
    Chdir = 2,
    Credentials = 3,
    Exec = 4,
}

#[derive(Debug)]
pub struct SpawnError {
    pub stage: Stage,
    pub error: io::Error,
}

pub struct Spec {
    pub path: String,
    pub argv: Vec<String>,
    pub env: Vec<String>,
    pub cwd: Option<String>,
    /// (uid, gid, supplementary groups) to switch to; `None` keeps ours.
    pub creds: Option<(u32, u32, Vec<u32>)>,
    pub stdin: c_int,
    pub stdout: c_int,
    pub stderr: c_int,
    /// Make fd 0 the controlling terminal (after setsid).
    pub ctty: bool,
}

/// Fork and exec. The child always starts a new session (its pid is its process group).
pub fn spawn(spec: &Spec) -> Result<i32, SpawnError> {
    let setup = |e: io::Error| SpawnError {
        stage: Stage::Setup,
        error: e,
    };
    start_reaper();
    let path = sys::cstr(&spec.path).map_err(setup)?;
    let argv: Vec<CString> = spec
        .argv
        .iter()
        .map(|a| sys::cstr(a))
        .collect::<Result<_, _>>()
        .map_err(setup)?;
    let env: Vec<CString> = spec
        .env
        .iter()
        .map(|a| sys::cstr(a))
        .collect::<Result<_, _>>()
        .map_err(setup)?;
    let cwd = spec
        .cwd
        .as_deref()
        .map(sys::cstr)
        .transpose()
        .map_err(setup)?;
    let mut argv_p: Vec<*const c_char> = argv.iter().map(|c| c.as_ptr()).collect();
    argv_p.push(std::ptr::null());
    let mut env_p: Vec<*const c_char> = env.iter().map(|c| c.as_ptr()).collect();
    env_p.push(std::ptr::null());
    let (err_r, err_w) = sys::pipe().map_err(setup)?;
    let fds = [spec.stdin, spec.stdout, spec.stderr];
    let creds = spec.creds.clone();

    let pid = unsafe { sys::fork() };
    if pid < 0 {
        let e = io::Error::last_os_error();
        unsafe {
            sys::close(err_r);
            sys::close(err_w);
        }
        return Err(setup(e));
    }
    if pid == 0 {
        // Child: async-signal-safe calls only.
        unsafe {
            let fail = |stage: u8| -> ! {
                let e = sys::errno();
                let mut msg = [stage, 0, 0, 0, 0];
                msg[1..].copy_from_slice(&e.to_be_bytes());
                sys::write(err_w, msg.as_ptr().cast(), 5);
                sys::_exit(127)
            };
            sys::signal(sys::SIGPIPE, 0);
            if sys::setsid() < 0 {
                fail(Stage::Setup as u8);
            }
            for (target, fd) in fds.iter().enumerate() {
                let target = target as c_int;
                if *fd == target {
                    sys::fcntl(target, sys::F_SETFD, 0);
                } else if sys::dup2(*fd, target) < 0 {
                    fail(Stage::Setup as u8);
                }
            }
            if spec.ctty && sys::ioctl(0, sys::TIOCSCTTY, 0) < 0 {
                fail(Stage::Setup as u8);
            }
            if let Some((uid, gid, groups)) = &creds {
                if sys::setgroups(groups.len(), groups.as_ptr()) < 0
                    || sys::setgid(*gid) < 0
                    || sys::setuid(*uid) < 0
                {
                    fail(Stage::Credentials as u8);
                }
            }
            if let Some(c) = &cwd {
                if sys::chdir(c.as_ptr()) < 0 {
                    fail(Stage::Chdir as u8);
                }
            }
            sys::execve(path.as_ptr(), argv_p.as_ptr(), env_p.as_ptr());
            fail(Stage::Exec as u8);
        }
    }
    unsafe { sys::close(err_w) };
    child_forked();
    let mut msg = [0u8; 5];
    let mut got = 0usize;
    while got < 5 {
        let n = unsafe { sys::read(err_r, msg[got..].as_mut_ptr().cast(), 5 - got) };
        if n < 0 && sys::errno() == sys::EINTR {
            continue;
        }
        if n <= 0 {
            break;
        }
        got += n as usize;
    }
    unsafe { sys::close(err_r) };
    if got == 0 {
        return Ok(pid);
    }
    // The child failed and exits with 127: collect it.
    let _ = wait_for(pid).recv();
    let stage = match msg[0] {
        2 => Stage::Chdir,
        3 => Stage::Credentials,
        4 => Stage::Exec,
        _ => Stage::Setup,
    };
    let errno = i32::from_be_bytes([msg[1], msg[2], msg[3], msg[4]]);
    Err(SpawnError {
        stage,
        error: io::Error::from_raw_os_error(errno),
    })
}

/// Resolve a program name against PATH (taken from `env`, else a default).
pub fn resolve(program: &str, env: &[String]) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    if program.contains('/') {
        return Some(program.to_owned());
    }
    let path = env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    for dir in path.split(':') {
        let dir = if dir.is_empty() { "." } else { dir };
        let cand = format!("{dir}/{program}");
        if let Ok(m) = std::fs::metadata(&cand) {
            if m.is_file() && m.permissions().mode() & 0o111 != 0 {
                return Some(cand);
            }
        }
    }
    None
}

/// Resolve `"uid[:gid]"` or `"name[:group]"` using `<root>/etc/passwd` and `/etc/group`.
pub fn resolve_user(spec: &str, root: &str) -> Result<(u32, u32, Vec<u32>), String> {
    let (u, g) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let passwd = std::fs::read_to_string(format!("{root}/etc/passwd")).unwrap_or_default();
    let group = std::fs::read_to_string(format!("{root}/etc/group")).unwrap_or_default();
    let find = |text: &str, key: &str, by_name: bool| -> Option<Vec<String>> {
        text.lines()
            .map(|l| l.split(':').map(str::to_owned).collect::<Vec<_>>())
            .find(|f| f.len() >= 3 && if by_name { f[0] == key } else { f[2] == key })
    };
    let (uid, name, pw_gid) = if let Ok(n) = u.parse::<u32>() {
        let e = find(&passwd, u, false);
        (
            n,
            e.as_ref().map(|f| f[0].clone()),
            e.and_then(|f| f.get(3).and_then(|g| g.parse::<u32>().ok())),
        )
    } else {
        let f = find(&passwd, u, true)
            .ok_or_else(|| format!("user \"{u}\" not found in /etc/passwd"))?;
        let uid = f[2]
            .parse::<u32>()
            .map_err(|_| format!("bad uid for user \"{u}\""))?;
        (
            uid,
            Some(u.to_owned()),
            f.get(3).and_then(|g| g.parse::<u32>().ok()),
        )
    };
    let gid = match g {
        Some(g) => match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => find(&group, g, true)
                .and_then(|f| f[2].parse::<u32>().ok())
                .ok_or_else(|| format!("group \"{g}\" not found in /etc/group"))?,
        },
        // runc's rule: a uid the image does not list runs with group 0.
        None => pw_gid.unwrap_or(0),
    };
    let mut groups = vec![gid];
    if let Some(name) = name {
        for l in group.lines() {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() >= 4 && f[3].split(',').any(|m| m == name) {
                if let Ok(n) = f[2].parse::<u32>() {
                    if !groups.contains(&n) {
                        groups.push(n);
                    }
                }
            }
        }
    }
    Ok((uid, gid, groups))
}

/// Credentials to pass to `spawn`: switch only when root; a non-root agent (host tests)
/// accepts a request for its own uid and refuses others.
pub fn creds_for(user: Option<&str>) -> Result<Option<(u32, u32, Vec<u32>)>, String> {
    let Some(user) = user.filter(|u| !u.is_empty()) else {
        return Ok(None);
    };
    let c = resolve_user(user, "")?;
    let euid = unsafe { sys::geteuid() };
    if euid == 0 {
        Ok(Some(c))
    } else if c.0 == euid {
        Ok(None)
    } else {
        Err(format!(
            "cannot run as user \"{user}\": the agent is not root"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tempdir::TempDir;

    #[test]
    fn a_uid_without_a_passwd_entry_gets_group_0() {
        let root = TempDir::new("process-users");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(
            root.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(
            root.join("etc/group"),
            "root:x:0:\napp:x:1001:\nextra:x:50:app\n",
        )
        .unwrap();
        let root = root.to_str().unwrap();
        // runc's rule: an unlisted uid runs with group 0 (not a group equal to its uid).
        assert_eq!(resolve_user("4321", root).unwrap(), (4321, 0, vec![0]));
        assert_eq!(resolve_user("4321:7", root).unwrap(), (4321, 7, vec![7]));
        // A listed uid takes its passwd group and its supplementary groups.
        assert_eq!(
            resolve_user("1000", root).unwrap(),
            (1000, 1001, vec![1001, 50])
        );
        assert_eq!(
            resolve_user("app", root).unwrap(),
            (1000, 1001, vec![1001, 50])
        );
    }
}
