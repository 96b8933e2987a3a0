//! Boot markers on the serial console (PROTOCOL.md §1). Each marker is written with a
//! single write(2) so concurrent console output cannot split it.

use std::io::Write;
use std::sync::Mutex;

static CONSOLE: Mutex<()> = Mutex::new(());
/// Whether the console is at the start of a line (a message may have ended mid-line).
static AT_LINE_START: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

pub fn format(marker: &str) -> String {
    // One line, whatever the caller passed (a failure reason may contain newlines).
    let clean: String = marker
        .chars()
        .map(|c| if c == '\n' || c == '\r' { ' ' } else { c })
        .collect();
    format!("VESSEL-MARKER {clean}\n")
}

/// Write a marker line to stdout (the console when running as PID 1).
pub fn emit(marker: &str) {
    let _g = CONSOLE.lock();
    // A marker must start a line: end the app's unfinished line first.
    let line = if AT_LINE_START.swap(true, std::sync::atomic::Ordering::SeqCst) {
        format(marker)
    } else {
        format!("\n{}", format(marker))
    };
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(line.as_bytes());
    let _ = out.flush();
}

/// A normal (non-marker) console log line.
pub fn log(msg: &str) {
    let _g = CONSOLE.lock();
    let mut out = std::io::stdout().lock();
    let prefix = if AT_LINE_START.swap(true, std::sync::atomic::Ordering::SeqCst) {
        ""
    } else {
        "\n"
    };
    let _ = out.write_all(format!("{prefix}vessel-init: {msg}\n").as_bytes());
    let _ = out.flush();
}

#[cfg(test)]
mod tests {
    #[test]
    fn one_line() {
        assert_eq!(super::format("failed a\nb"), "VESSEL-MARKER failed a b\n");
        assert_eq!(super::format("exit 3"), "VESSEL-MARKER exit 3\n");
    }
}
