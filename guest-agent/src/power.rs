//! Graceful power-off: the host's `system_powerdown` (ACPI power button) becomes
//! a signal to whoever should shut the guest down. Nothing in a microVM listens
//! to the power button otherwise (no acpid, no logind), so without this a
//! graceful stop always ran into the host's forced `quit`.
//!
//! The ACPI `button` driver reports the press as `KEY_POWER` on an evdev device
//! (`/dev/input/eventN`; `evdev` and `button` are in the initramfs module list).

use crate::{markers, sys};
use std::fs;
use std::io::Read;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::time::{Duration, Instant};

const EV_KEY: u16 = 1;
const KEY_POWER: u16 = 116;
/// `struct input_event` on 64-bit: timeval (16) + type (2) + code (2) + value (4).
const EVENT_SIZE: usize = 24;

const SIGINT: i32 = 2;
const SIGUSR2: i32 = 12;
const SIGTERM: i32 = 15;
/// glibc's SIGRTMIN is 34; systemd starts poweroff.target on SIGRTMIN+4.
const SIGRTMIN_PLUS_4: i32 = 38;

/// Process group of the exec-mode main command (its pid: it runs in its own session).
static MAIN_PGID: AtomicI32 = AtomicI32::new(0);
/// The power button was pressed (exec mode: before the main command may have started).
static PRESSED: AtomicBool = AtomicBool::new(false);

/// Who gets told when the power button is pressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Exec mode: SIGTERM to the main command's process group (like `docker stop`);
    /// PID 1 then prints its exit marker and powers off as usual.
    MainCommand,
    /// Systemd mode: the image's init (PID 1) gets its own "power off" signal.
    Init,
    /// Agent mode: nothing to stop gracefully; sync the disks and power off.
    PowerOff,
}

/// Record the exec-mode main command once it is running; a press that came first
/// stops it now.
pub fn set_main_pgid(pgid: i32) {
    MAIN_PGID.store(pgid, Ordering::SeqCst);
    if PRESSED.load(Ordering::SeqCst) {
        unsafe { sys::kill(-pgid, SIGTERM) };
    }
}

/// The signal that asks the init at `exe` (the target of `/proc/1/exe`) to power off.
pub fn init_poweroff_signal(exe: &str) -> i32 {
    let name = exe.rsplit('/').next().unwrap_or(exe);
    if name.contains("systemd") {
        SIGRTMIN_PLUS_4
    } else if name.starts_with("busybox") {
        SIGUSR2
    } else {
        // SysV-style inits run their `ctrlaltdel` entry on SIGINT (usually a reboot,
        // which ends the VM: QEMU runs with -no-reboot).
        SIGINT
    }
}

/// Whether an evdev key-capability bitmap (`/sys/class/input/eventN/device/capabilities/key`:
/// hex words, most significant first) has `code` set.
pub fn has_key(bitmap: &str, code: u16) -> bool {
    let words: Vec<&str> = bitmap.split_whitespace().collect();
    let word_bits = 8 * std::mem::size_of::<usize>();
    let index = code as usize / word_bits;
    let Some(word) = words
        .len()
        .checked_sub(1 + index)
        .and_then(|i| words.get(i))
    else {
        return false;
    };
    u64::from_str_radix(word, 16).is_ok_and(|w| w & (1u64 << (code as usize % word_bits)) != 0)
}

/// Whether `buf` (one `input_event`) is a power-button press.
pub fn is_power_press(buf: &[u8; EVENT_SIZE]) -> bool {
    let ty = u16::from_ne_bytes([buf[16], buf[17]]);
    let code = u16::from_ne_bytes([buf[18], buf[19]]);
    let value = i32::from_ne_bytes([buf[20], buf[21], buf[22], buf[23]]);
    ty == EV_KEY && code == KEY_POWER && value == 1
}

/// `/dev/input/eventN` for every input device that can send `KEY_POWER`.
fn power_devices() -> Vec<String> {
    let Ok(rd) = fs::read_dir("/sys/class/input") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with("event") {
            continue;
        }
        let caps = fs::read_to_string(e.path().join("device/capabilities/key")).unwrap_or_default();
        if has_key(&caps, KEY_POWER) {
            out.push(format!("/dev/input/{name}"));
        }
    }
    out
}

/// Open every power-button device, then read each on its own thread; each press is
/// handled as `target` says. Call before reporting `agent-ready`: the devices are open
/// when this returns, so a press right after the host sees Running is not lost (evdev
/// only queues events for readers that have the device open). Logs when there is no
/// such device: graceful stop then falls back to the host's forced stop.
pub fn watch(target: Target) {
    let devices = power_devices();
    if devices.is_empty() {
        markers::log("no power button device (modules button, evdev); graceful stop unavailable");
        return;
    }
    for dev in devices {
        // devtmpfs creates the node asynchronously after the module loaded; it is almost
        // always there long before this runs.
        let deadline = Instant::now() + Duration::from_secs(2);
        let file = loop {
            match fs::File::open(&dev) {
                Ok(f) => break Some(f),
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Err(e) => {
                    markers::log(&format!("power button {dev}: {e}"));
                    break None;
                }
            }
        };
        let Some(mut file) = file else { continue };
        std::thread::spawn(move || {
            let mut buf = [0u8; EVENT_SIZE];
            while file.read_exact(&mut buf).is_ok() {
                if is_power_press(&buf) {
                    on_press(target);
                }
            }
        });
    }
}

fn on_press(target: Target) {
    match target {
        Target::Init => {
            let exe = fs::read_link("/proc/1/exe")
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default();
            let sig = init_poweroff_signal(&exe);
            markers::log(&format!("power button: signal {sig} to init ({exe})"));
            unsafe { sys::kill(1, sig) };
        }
        Target::PowerOff => {
            markers::log("power button: powering off");
            crate::init::power_off()
        }
        Target::MainCommand => {
            markers::log("power button: stopping the main command (SIGTERM)");
            PRESSED.store(true, Ordering::SeqCst);
            let pgid = MAIN_PGID.load(Ordering::SeqCst);
            // Not started yet: set_main_pgid sends it as soon as it is.
            if pgid > 0 {
                unsafe { sys::kill(-pgid, SIGTERM) };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_per_init() {
        assert_eq!(init_poweroff_signal("/usr/lib/systemd/systemd"), 38);
        assert_eq!(init_poweroff_signal("/lib/systemd/systemd"), 38);
        assert_eq!(init_poweroff_signal("/bin/busybox"), SIGUSR2);
        assert_eq!(init_poweroff_signal("/sbin/init"), SIGINT);
        assert_eq!(init_poweroff_signal(""), SIGINT);
    }

    #[test]
    fn key_bitmap() {
        // The ACPI power button as this kernel reports it: only KEY_POWER (bit 116).
        assert!(has_key("10000000000000 0", KEY_POWER));
        assert!(!has_key("10000000000000 0", KEY_POWER + 1));
        assert!(!has_key("0", KEY_POWER));
        assert!(!has_key("", KEY_POWER));
        // A keyboard-like bitmap: low word full, KEY_POWER set in the second word.
        assert!(has_key(
            "ffffffff 10000000000000 ffffffffffffffff",
            KEY_POWER
        ));
        assert!(has_key("1", 0));
        assert!(!has_key("zz 0", KEY_POWER));
    }

    #[test]
    fn press_detection() {
        let mut ev = [0u8; EVENT_SIZE];
        ev[16..18].copy_from_slice(&EV_KEY.to_ne_bytes());
        ev[18..20].copy_from_slice(&KEY_POWER.to_ne_bytes());
        ev[20..24].copy_from_slice(&1i32.to_ne_bytes());
        assert!(is_power_press(&ev));
        ev[20..24].copy_from_slice(&0i32.to_ne_bytes()); // release
        assert!(!is_power_press(&ev));
        ev[20..24].copy_from_slice(&1i32.to_ne_bytes());
        ev[16..18].copy_from_slice(&0u16.to_ne_bytes()); // EV_SYN
        assert!(!is_power_press(&ev));
    }
}
