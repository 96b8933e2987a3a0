//! PID 1 duties (PROTOCOL.md §3): mounts, modules, config disk, root switch, agent,
//! the main command, reaping, power-off.

use crate::config::{self, Config, Mode};
use crate::process;
use crate::{agent, layer, markers, netdev, power, sys, volumes};
use std::fs;
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

const NEW_ROOT: &str = "/mnt/root";
/// The overlay's upper directory, what DIFF describes (`work/` is beside it).
const UPPER: &str = "/mnt/upper-disk/upper";
/// Overlay features pinned off whatever the kernel's defaults, so the upper never holds
/// what DIFF (PROTOCOL.md §5) cannot express: without `redirect_dir`, renaming a
/// directory of the image fails with EXDEV (`mv` then copies it, as tools do across
/// filesystems); without `metacopy`, a chmod or chown copies the file's data up too.
const OVERLAY_PINNED: &str = "redirect_dir=off,metacopy=off";

/// Never returns: the guest powers off at the end, or on any fatal error.
pub fn run() -> ! {
    if let Err(e) = early_mounts() {
        fail(&format!("early mounts: {e}"));
    }
    attach_console();
    markers::emit("program-start");
    let result = boot();
    match result {
        Ok(()) => power_off(),
        Err(e) => fail(&e),
    }
}

fn fail(reason: &str) -> ! {
    markers::emit(&format!("failed {reason}"));
    power_off()
}

/// Sync the disks and power the VM off.
pub fn power_off() -> ! {
    unsafe {
        sys::sync();
        sys::reboot(sys::RB_POWER_OFF);
    }
    // reboot() only returns on error; PID 1 must never exit.
    park()
}

/// Sleep for ever: the work goes on in other threads (or nowhere, if reboot failed).
fn park() -> ! {
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

fn mkdir(p: &str) {
    let _ = fs::create_dir_all(p);
}

fn early_mounts() -> io::Result<()> {
    for (src, dst, fs_type, flags) in [
        (
            "proc",
            "/proc",
            "proc",
            sys::MS_NOSUID | sys::MS_NODEV | sys::MS_NOEXEC,
        ),
        (
            "sysfs",
            "/sys",
            "sysfs",
            sys::MS_NOSUID | sys::MS_NODEV | sys::MS_NOEXEC,
        ),
        ("devtmpfs", "/dev", "devtmpfs", sys::MS_NOSUID),
    ] {
        mkdir(dst);
        if let Err(e) = sys::do_mount(src, dst, fs_type, flags, "") {
            if e.raw_os_error() != Some(16) {
                // EBUSY: already mounted (devtmpfs.mount=1)
                return Err(io::Error::new(e.kind(), format!("mount {dst}: {e}")));
            }
        }
    }
    Ok(())
}

/// fds 0-2 may be closed when the initramfs has no /dev/console: reopen them.
fn attach_console() {
    let console = sys::cstr("/dev/console").unwrap();
    let null = sys::cstr("/dev/null").unwrap();
    unsafe {
        let c = sys::open(console.as_ptr(), sys::O_RDWR | sys::O_NOCTTY);
        let n = sys::open(null.as_ptr(), sys::O_RDWR);
        if n > 0 {
            sys::dup2(n, 0);
        }
        if c >= 0 {
            for fd in [1, 2] {
                if c != fd {
                    sys::dup2(c, fd);
                }
            }
            if c > 2 {
                sys::close(c);
            }
        }
        if n > 2 {
            sys::close(n);
        }
    }
}

fn load_modules(names: &[String]) {
    let release = sys::kernel_release();
    let dir = format!("/lib/modules/{release}");
    let index = find_module_files(Path::new(&dir));
    for name in names {
        let want = name.trim().trim_end_matches(".ko").replace('-', "_");
        let Some(path) = index
            .iter()
            .find(|(n, _)| *n == want)
            .map(|(_, p)| p.clone())
        else {
            markers::log(&format!("module {name} not found under {dir}"));
            continue;
        };
        match fs::File::open(&path) {
            Ok(f) => {
                let empty = sys::cstr("").unwrap();
                let rc = unsafe {
                    sys::syscall(
                        sys::SYS_FINIT_MODULE,
                        f.as_raw_fd() as i64,
                        empty.as_ptr(),
                        0i64,
                    )
                };
                if rc < 0 && sys::errno() != sys::EEXIST {
                    markers::log(&format!(
                        "loading module {name}: {}",
                        io::Error::last_os_error()
                    ));
                }
            }
            Err(e) => markers::log(&format!("opening module {}: {e}", path.display())),
        }
    }
}

/// (normalized module name, path) for every uncompressed `.ko` below `dir`.
fn find_module_files(dir: &Path) -> Vec<(String, std::path::PathBuf)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(p);
            } else if let Some(stem) = p
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".ko"))
            {
                out.push((stem.replace('-', "_"), p));
            }
        }
    }
    out
}

/// `/dev/vdX` whose `/sys/block/vdX/serial` equals `serial`, waiting up to `timeout`.
fn find_disk(serial: &str, timeout: Duration) -> Option<String> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(rd) = fs::read_dir("/sys/block") {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if !name.starts_with("vd") {
                    continue;
                }
                if fs::read_to_string(e.path().join("serial")).is_ok_and(|s| s.trim() == serial) {
                    return Some(format!("/dev/{name}"));
                }
            }
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn read_config() -> Result<Config, String> {
    let dev = find_disk("vessel-config", Duration::from_secs(10))
        .ok_or("config disk (serial vessel-config) not found")?;
    let mut f = fs::File::open(&dev).map_err(|e| format!("open {dev}: {e}"))?;
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = f.read(&mut buf).map_err(|e| format!("read {dev}: {e}"))?;
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
        if buf[..n].contains(&0) || raw.len() > 16 << 20 {
            break;
        }
    }
    config::parse(&raw)
}

fn mount_root(serial: &str) -> Result<(), String> {
    let dev = find_disk(serial, Duration::from_secs(10))
        .ok_or_else(|| format!("root disk (serial {serial}) not found"))?;
    mkdir("/mnt/lower");
    let mut errors = Vec::new();
    for fs_type in ["erofs", "ext4"] {
        match sys::do_mount(&dev, "/mnt/lower", fs_type, sys::MS_RDONLY, "") {
            Ok(()) => {
                markers::log(&format!("root filesystem is {fs_type}"));
                return Ok(());
            }
            Err(e) => errors.push(format!("{fs_type}: {e}")),
        }
    }
    Err(format!(
        "cannot mount root disk {dev} ({})",
        errors.join(", ")
    ))
}

fn mount_upper(serial: Option<&str>) -> Result<(), String> {
    mkdir("/mnt/upper-disk");
    match serial {
        Some(serial) => {
            let dev = find_disk(serial, Duration::from_secs(10))
                .ok_or_else(|| format!("overlay disk (serial {serial}) not found"))?;
            sys::do_mount(&dev, "/mnt/upper-disk", "ext4", 0, "")
                .map_err(|e| format!("mount overlay disk {dev}: {e}"))?;
        }
        None => sys::do_mount("tmpfs", "/mnt/upper-disk", "tmpfs", 0, "mode=0755")
            .map_err(|e| format!("mount tmpfs upper: {e}"))?,
    }
    mkdir(UPPER);
    mkdir("/mnt/upper-disk/work");
    Ok(())
}

fn switch_root(cfg: &Config) -> Result<(), String> {
    mkdir(NEW_ROOT);
    let options = format!(
        "lowerdir=/mnt/lower,upperdir={UPPER},workdir=/mnt/upper-disk/work,{OVERLAY_PINNED}"
    );
    sys::do_mount("overlay", NEW_ROOT, "overlay", 0, &options)
        .map_err(|e| format!("mount overlay root: {e}"))?;
    volumes::place(&cfg.volumes, NEW_ROOT)?;
    for d in ["/proc", "/sys", "/dev"] {
        let target = format!("{NEW_ROOT}{d}");
        mkdir(&target);
        sys::do_mount(d, &target, "", sys::MS_MOVE, "").map_err(|e| format!("move {d}: {e}"))?;
    }
    mkdir(&format!("{NEW_ROOT}/dev/pts"));
    sys::do_mount(
        "devpts",
        &format!("{NEW_ROOT}/dev/pts"),
        "devpts",
        sys::MS_NOSUID | sys::MS_NOEXEC,
        "newinstance,ptmxmode=0666,mode=0620",
    )
    .map_err(|e| format!("mount devpts: {e}"))?;
    let ptmx = format!("{NEW_ROOT}/dev/ptmx");
    if fs::symlink_metadata(&ptmx).is_err() {
        let _ = std::os::unix::fs::symlink("pts/ptmx", &ptmx);
    }
    mkdir(&format!("{NEW_ROOT}/dev/shm"));
    sys::do_mount(
        "shm",
        &format!("{NEW_ROOT}/dev/shm"),
        "tmpfs",
        sys::MS_NOSUID | sys::MS_NODEV,
        "mode=1777",
    )
    .map_err(|e| format!("mount /dev/shm: {e}"))?;
    let root = sys::cstr(NEW_ROOT).unwrap();
    let dot = sys::cstr(".").unwrap();
    let slash = sys::cstr("/").unwrap();
    unsafe {
        sys::check(sys::chdir(root.as_ptr())).map_err(|e| format!("chdir {NEW_ROOT}: {e}"))?;
        sys::do_mount(".", "/", "", sys::MS_MOVE, "")
            .map_err(|e| format!("move {NEW_ROOT} to /: {e}"))?;
        sys::check(sys::chroot(dot.as_ptr())).map_err(|e| format!("chroot: {e}"))?;
        sys::check(sys::chdir(slash.as_ptr())).map_err(|e| format!("chdir /: {e}"))?;
    }
    if let Some(h) = &cfg.hostname {
        unsafe { sys::sethostname(h.as_ptr().cast(), h.len()) };
    }
    Ok(())
}

fn start_agent(cfg: &Config) -> Result<agent::Agent, String> {
    let (port, dev) = agent::open_port(&cfg.control_port, 100)
        .map_err(|e| format!("control port \"{}\": {e}", cfg.control_port))?;
    let writer = port
        .try_clone()
        .map_err(|e| format!("control port {dev}: {e}"))?;
    let a = agent::Agent::over(Box::new(writer));
    if cfg.mode == Mode::Exec {
        a.expect_main();
    }
    let serving = a.clone();
    std::thread::spawn(move || {
        if let Err(e) = serving.serve(port, agent::Transport::Port) {
            markers::log(&format!("agent stopped: {e}"));
        }
    });
    markers::emit("agent-ready");
    Ok(a)
}

fn boot() -> Result<(), String> {
    let base: Vec<String> = fs::read_to_string("/etc/vessel/modules")
        .unwrap_or_default()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect();
    load_modules(&base);
    let cfg = read_config()?;
    let extra: Vec<String> = cfg
        .modules
        .iter()
        .filter(|m| !base.contains(m))
        .cloned()
        .collect();
    if !extra.is_empty() {
        load_modules(&extra);
    }
    // Independent: the network (its driver is loaded above), root and upper mounts.
    let net_cfg = cfg.network.clone();
    let net = std::thread::spawn(move || -> Result<(), String> {
        netdev::loopback_up()?;
        match &net_cfg {
            Some(n) => netdev::configure(n),
            None => Ok(()),
        }
    });
    let root_serial = cfg.root_device_serial.clone();
    let root = std::thread::spawn(move || mount_root(&root_serial));
    // Volume disks are found and mounted (staged) while the root is.
    let vols = cfg.volumes.clone();
    let staged = std::thread::spawn(move || volumes::stage(&vols, find_disk));
    let upper = mount_upper(cfg.overlay_device_serial.as_deref());
    root.join()
        .map_err(|_| "root mount thread panicked".to_owned())??;
    upper?;
    // Kept for DIFF (layer.rs): after the root switch no path names the upper. A failure
    // only disables DIFF.
    if let Err(e) = layer::keep_upper(Path::new(UPPER)) {
        markers::log(&format!("open {UPPER}: {e} (DIFF unavailable)"));
    }
    staged
        .join()
        .map_err(|_| "volume mount thread panicked".to_owned())??;
    switch_root(&cfg)?;
    net.join()
        .map_err(|_| "network thread panicked".to_owned())??;
    if let Some(n) = &cfg.network {
        netdev::write_files("/", n, cfg.hostname.as_deref())?;
    }

    let argv = cfg.argv();
    match cfg.mode {
        Mode::Agent => {
            // No main command: the host drives everything through the agent and ends
            // the VM by powering it off (a graceful stop presses the power button).
            power::watch(power::Target::PowerOff);
            // A build's WORKDIR exists for its RUN steps (and so lands in the step's layer).
            mkdir(&cfg.workdir);
            start_agent(&cfg)?;
            process::start_reaper();
            park()
        }
        Mode::Exec => {
            power::watch(power::Target::MainCommand);
            let agent = start_agent(&cfg)?;
            if argv.is_empty() {
                return Err("no command: entrypoint and cmd are both empty".into());
            }
            let code = run_main(&agent, &cfg, argv);
            markers::emit(&format!("exit {code}"));
            Ok(())
        }
        Mode::Systemd => {
            if argv.is_empty() {
                return Err("systemd mode needs the image's init in entrypoint/cmd".into());
            }
            let pid = unsafe { sys::fork() };
            if pid < 0 {
                return Err(format!("fork: {}", io::Error::last_os_error()));
            }
            if pid == 0 {
                // The agent lives on in this child.
                power::watch(power::Target::Init);
                if let Err(e) = start_agent(&cfg) {
                    markers::emit(&format!("failed {e}"));
                }
                park()
            }
            let path = process::resolve(&argv[0], &cfg.env)
                .ok_or_else(|| format!("init \"{}\" not found", argv[0]))?;
            let c_path = sys::cstr(&path).map_err(|e| e.to_string())?;
            let c_argv: Vec<_> = argv
                .iter()
                .map(|a| sys::cstr(a))
                .collect::<Result<_, _>>()
                .map_err(|e| e.to_string())?;
            let c_env: Vec<_> = cfg
                .env
                .iter()
                .map(|a| sys::cstr(a))
                .collect::<Result<_, _>>()
                .map_err(|e| e.to_string())?;
            let mut pa: Vec<_> = c_argv.iter().map(|c| c.as_ptr()).collect();
            pa.push(std::ptr::null());
            let mut pe: Vec<_> = c_env.iter().map(|c| c.as_ptr()).collect();
            pe.push(std::ptr::null());
            unsafe { sys::execve(c_path.as_ptr(), pa.as_ptr(), pe.as_ptr()) };
            Err(format!(
                "exec init \"{path}\": {}",
                io::Error::last_os_error()
            ))
        }
    }
}

/// Run the main command with its stdio on the agent's main stream (never the console:
/// the console carries only the kernel's and vessel-init's own messages). Returns its
/// exit code: 128+N for signal N, 127/126 when it could not be started.
fn run_main(agent: &agent::Agent, cfg: &Config, argv: Vec<String>) -> i32 {
    mkdir(&cfg.workdir);
    let cmd = agent::Command {
        argv,
        env: cfg.env.clone(),
        cwd: Some(cfg.workdir.clone()),
        user: Some(cfg.user.clone()),
        tty: cfg.stdio.tty,
        stdin: cfg.stdio.stdin,
        rows: cfg.stdio.rows,
        cols: cfg.stdio.cols,
        window: cfg.stdio.window,
    };
    match agent.start_main(cmd) {
        Ok((pid, status)) => {
            power::set_main_pgid(pid);
            match status.recv() {
                Ok(st) => sys::decode_status(st).0,
                Err(_) => 1,
            }
        }
        Err(f) => {
            markers::log(&f.message);
            agent.main_failed(&f);
            f.exit_code
        }
    }
}
