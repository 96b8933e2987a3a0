//! vessel-init: PID 1 of a Vessel microVM and the host<->guest agent.

mod agent;
mod config;
mod files;
mod frame;
mod init;
mod json;
mod layer;
mod markers;
mod netdev;
mod network;
mod power;
mod process;
mod session;
mod sys;
mod tar;
#[cfg(test)]
mod tempdir;
mod volumes;

use std::os::unix::net::UnixStream;
use std::path::Path;

const USAGE: &str = "usage: vessel-init                      (as PID 1 in the guest)
       vessel-init agent --connect <unix-socket-path> [--upper <dir>]
       vessel-init agent --port <virtio-serial-port-name> [--upper <dir>]
       vessel-init --version";

fn main() {
    if unsafe { sys::getpid() } == 1 {
        init::run();
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
    // `--upper <dir>`: the directory DIFF describes (PID 1 uses the overlay's upper).
    if let ["agent", _, _, "--upper", dir] = args.as_slice() {
        if let Err(e) = layer::keep_upper(Path::new(dir)) {
            die(&format!("--upper {dir}: {e}"));
        }
        args.truncate(3);
    }
    match args.as_slice() {
        ["--version"] | ["-V"] => println!("vessel-init {}", env!("CARGO_PKG_VERSION")),
        ["agent", "--connect", path] => {
            let stream = match UnixStream::connect(path) {
                Ok(s) => s,
                Err(e) => die(&format!("connect {path}: {e}")),
            };
            let writer = stream
                .try_clone()
                .unwrap_or_else(|e| die(&format!("{path}: {e}")));
            if let Err(e) = agent::run(stream, Box::new(writer), agent::Transport::Socket) {
                die(&format!("agent: {e}"));
            }
        }
        ["agent", "--port", name] => {
            let (port, dev) =
                agent::open_port(name, 100).unwrap_or_else(|e| die(&format!("port {name}: {e}")));
            let writer = port
                .try_clone()
                .unwrap_or_else(|e| die(&format!("{dev}: {e}")));
            if let Err(e) = agent::run(port, Box::new(writer), agent::Transport::Port) {
                die(&format!("agent: {e}"));
            }
        }
        _ => {
            eprintln!("{USAGE}");
            std::process::exit(2);
        }
    }
}

fn die(msg: &str) -> ! {
    eprintln!("vessel-init: {msg}");
    std::process::exit(1);
}
