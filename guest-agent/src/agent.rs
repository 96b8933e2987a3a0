//! The multiplexed control channel (PROTOCOL.md §4). One reader loop dispatches frames;
//! every stream's work runs on its own threads; all writes go through one lock so
//! frames are written whole.

use crate::frame::{self, Decoder, Frame};
use crate::json::{self, obj, Value};
use crate::process::{self, Spec, Stage};
use crate::{sys, tar};
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const CHUNK: usize = 32 * 1024;

/// Serialized, whole-frame writer shared by all streams.
#[derive(Clone)]
pub struct Conn {
    out: Arc<Mutex<Box<dyn Write + Send>>>,
}

impl Conn {
    pub fn new(w: Box<dyn Write + Send>) -> Self {
        Conn {
            out: Arc::new(Mutex::new(w)),
        }
    }

    pub fn send(&self, ty: u8, stream: u32, payload: &[u8]) -> io::Result<()> {
        let bytes = frame::encode(ty, stream, payload);
        let mut w = self.out.lock().unwrap_or_else(|e| e.into_inner());
        w.write_all(&bytes)?;
        w.flush()
    }

    fn send_json(&self, ty: u8, stream: u32, v: &Value) {
        let _ = self.send(ty, stream, json::to_string(v).as_bytes());
    }

    fn error(&self, stream: u32, code: &str, message: &str) {
        self.send_json(
            frame::ERROR,
            stream,
            &obj(vec![("code", code.into()), ("message", message.into())]),
        );
    }

    fn exit(&self, stream: u32, code: i32, signal: Option<i32>) {
        self.send_json(
            frame::EXIT,
            stream,
            &obj(vec![
                ("code", (code as i64).into()),
                ("signal", signal.map(|s| s as i64).into()),
            ]),
        );
    }
}

enum Entry {
    Exec {
        stdin: Option<Sender<Vec<u8>>>,
        pgid: i32,
        master: Option<Arc<File>>,
    },
    CopyIn {
        data: Option<Sender<Vec<u8>>>,
    },
}

type Streams = Arc<Mutex<HashMap<u32, Entry>>>;

pub fn hello_payload() -> Vec<u8> {
    json::to_string(&obj(vec![
        ("version", 1i64.into()),
        (
            "agent",
            format!("vessel-init {}", env!("CARGO_PKG_VERSION")).into(),
        ),
    ]))
    .into_bytes()
}

/// How the byte stream behaves at end of input.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// A socket: EOF means the host went away; stop serving.
    Socket,
    /// A virtio-serial port: reads return 0 while no host is connected; a new host
    /// may connect later and gets a fresh HELLO.
    Port,
}

pub struct Agent {
    conn: Conn,
    streams: Streams,
}

impl Agent {
    pub fn new(conn: Conn) -> Self {
        Agent {
            conn,
            streams: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Serve until the channel ends (Socket) or forever (Port).
    pub fn serve(&self, mut input: impl Read, transport: Transport) -> io::Result<()> {
        let connected = Arc::new(AtomicBool::new(false));
        self.spawn_hello(connected.clone());
        let mut dec = Decoder::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match input.read(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.kill_all();
                    return Err(e);
                }
            };
            if n == 0 {
                if transport == Transport::Socket {
                    self.kill_all();
                    return Ok(());
                }
                // Port: no host connected. A host that was connected went away: the next
                // one gets a HELLO (the write blocks until it connects).
                dec.reset();
                if connected.swap(false, Ordering::SeqCst) {
                    self.spawn_hello(connected.clone());
                }
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
            dec.push(&buf[..n]);
            loop {
                match dec.next_frame() {
                    Ok(Some(f)) => self.dispatch(f),
                    Ok(None) => break,
                    Err(e) => {
                        eprintln!("vessel-init: protocol error: {e}; closing the channel");
                        if transport == Transport::Socket {
                            self.kill_all();
                            return Err(io::Error::new(io::ErrorKind::InvalidData, e.to_string()));
                        }
                        dec.reset();
                        break;
                    }
                }
            }
        }
    }

    fn spawn_hello(&self, connected: Arc<AtomicBool>) {
        let conn = self.conn.clone();
        std::thread::spawn(move || {
            if conn.send(frame::HELLO, 0, &hello_payload()).is_ok() {
                connected.store(true, Ordering::SeqCst);
            }
        });
    }

    fn kill_all(&self) {
        for e in self.streams.lock().unwrap().values() {
            if let Entry::Exec { pgid, .. } = e {
                unsafe { sys::kill(-pgid, sys::SIGKILL) };
            }
        }
    }

    fn dispatch(&self, f: Frame) {
        let s = f.stream;
        match f.ty {
            frame::PING => {
                let _ = self.conn.send(frame::PONG, s, &f.payload);
            }
            // A host that attached to a running guest (daemon restart, restore from a
            // snapshot) asks for a HELLO instead of waiting for one that may never come.
            frame::HELLO if s == 0 => {
                let _ = self.conn.send(frame::HELLO, 0, &hello_payload());
            }
            frame::EXEC => {
                if self.streams.lock().unwrap().contains_key(&s) || s == 0 {
                    return self.conn.error(
                        s,
                        "invalid_argument",
                        &format!("stream {s} is already in use"),
                    );
                }
                match parse_json(&f.payload) {
                    Ok(v) => self.exec(s, &v),
                    Err(m) => self.conn.error(s, "invalid_argument", &m),
                }
            }
            frame::STDIN => {
                let mut m = self.streams.lock().unwrap();
                if let Some(Entry::Exec { stdin, .. }) = m.get_mut(&s) {
                    if f.payload.is_empty() {
                        *stdin = None; // dropping the sender closes the child's stdin
                    } else if let Some(tx) = stdin {
                        let _ = tx.send(f.payload);
                    }
                }
            }
            frame::RESIZE => {
                if f.payload.len() != 4 {
                    return;
                }
                let m = self.streams.lock().unwrap();
                if let Some(Entry::Exec {
                    master: Some(master),
                    ..
                }) = m.get(&s)
                {
                    let rows = u16::from_be_bytes([f.payload[0], f.payload[1]]);
                    let cols = u16::from_be_bytes([f.payload[2], f.payload[3]]);
                    set_winsize(master.as_raw_fd(), rows, cols);
                }
            }
            frame::SIGNAL => {
                if let (Some(sig), Some(Entry::Exec { pgid, .. })) =
                    (f.payload.first(), self.streams.lock().unwrap().get(&s))
                {
                    unsafe { sys::kill(-*pgid, *sig as i32) };
                }
            }
            frame::DATA => {
                let mut m = self.streams.lock().unwrap();
                if let Some(Entry::CopyIn { data }) = m.get_mut(&s) {
                    if f.payload.is_empty() {
                        *data = None;
                    } else if let Some(tx) = data {
                        let _ = tx.send(f.payload);
                    }
                }
            }
            frame::COPY_IN => match parse_json(&f.payload).and_then(|v| path_of(&v)) {
                Ok(path) => self.copy_in(s, path),
                Err(m) => self.conn.error(s, "invalid_argument", &m),
            },
            frame::COPY_OUT => match parse_json(&f.payload).and_then(|v| path_of(&v)) {
                Ok(path) => {
                    let conn = self.conn.clone();
                    std::thread::spawn(move || copy_out(&conn, s, &path));
                }
                Err(m) => self.conn.error(s, "invalid_argument", &m),
            },
            frame::STAT => match parse_json(&f.payload) {
                Ok(v) => match path_of(&v) {
                    Ok(path) => {
                        let follow = v.get("follow").and_then(Value::as_bool).unwrap_or(true);
                        self.conn
                            .send_json(frame::STAT_RESULT, s, &stat(&path, follow));
                    }
                    Err(m) => self.conn.error(s, "invalid_argument", &m),
                },
                Err(m) => self.conn.error(s, "invalid_argument", &m),
            },
            other => self.conn.error(
                s,
                "unsupported",
                &format!("unknown frame type 0x{other:02x}"),
            ),
        }
    }

    fn exec(&self, s: u32, v: &Value) {
        let conn = &self.conn;
        let Some(argv) = v
            .get("argv")
            .and_then(Value::as_str_vec)
            .filter(|a| !a.is_empty())
        else {
            return conn.error(
                s,
                "invalid_argument",
                "\"argv\" must be a non-empty array of strings",
            );
        };
        let env = match v.get("env") {
            None | Some(Value::Null) => {
                vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_owned()]
            }
            Some(e) => match e.as_str_vec() {
                Some(e) => e,
                None => {
                    return conn.error(s, "invalid_argument", "\"env\" must be an array of strings")
                }
            },
        };
        let cwd = v
            .get("cwd")
            .and_then(Value::as_str)
            .filter(|c| !c.is_empty())
            .map(str::to_owned);
        let tty = v.get("tty").and_then(Value::as_bool).unwrap_or(false);
        let want_stdin = v.get("stdin").and_then(Value::as_bool).unwrap_or(true);
        let rows = v.get("rows").and_then(Value::as_u64).unwrap_or(24) as u16;
        let cols = v.get("cols").and_then(Value::as_u64).unwrap_or(80) as u16;
        let creds = match process::creds_for(v.get("user").and_then(Value::as_str)) {
            Ok(c) => c,
            Err(m) => {
                return conn.error(
                    s,
                    if m.contains("not found") {
                        "not_found"
                    } else {
                        "permission_denied"
                    },
                    &m,
                )
            }
        };
        let Some(path) = process::resolve(&argv[0], &env) else {
            return conn.error(
                s,
                "not_found",
                &format!("executable \"{}\" not found in PATH", argv[0]),
            );
        };
        match self.start(
            s,
            path,
            argv.clone(),
            env,
            cwd.clone(),
            creds,
            tty,
            want_stdin,
            rows,
            cols,
        ) {
            Ok(()) => {}
            Err(e) => {
                let (code, msg) = match (e.stage, e.error.raw_os_error()) {
                    (Stage::Exec, Some(2)) => (
                        "not_found",
                        format!("executable \"{}\" not found: {}", argv[0], e.error),
                    ),
                    (Stage::Exec, Some(13)) => (
                        "permission_denied",
                        format!("cannot execute \"{}\": {}", argv[0], e.error),
                    ),
                    (Stage::Exec, Some(8)) => (
                        "invalid_argument",
                        format!("cannot execute \"{}\": {}", argv[0], e.error),
                    ),
                    (Stage::Chdir, Some(2)) => (
                        "not_found",
                        format!(
                            "working directory \"{}\" not found",
                            cwd.unwrap_or_default()
                        ),
                    ),
                    (Stage::Chdir, _) => (
                        "permission_denied",
                        format!(
                            "working directory \"{}\": {}",
                            cwd.unwrap_or_default(),
                            e.error
                        ),
                    ),
                    (Stage::Credentials, _) => (
                        "permission_denied",
                        format!("cannot switch user: {}", e.error),
                    ),
                    _ => (
                        "internal",
                        format!("cannot start \"{}\": {}", argv[0], e.error),
                    ),
                };
                conn.error(s, code, &msg);
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn start(
        &self,
        s: u32,
        path: String,
        argv: Vec<String>,
        env: Vec<String>,
        cwd: Option<String>,
        creds: Option<(u32, u32, Vec<u32>)>,
        tty: bool,
        want_stdin: bool,
        rows: u16,
        cols: u16,
    ) -> Result<(), process::SpawnError> {
        let setup = |e: io::Error| process::SpawnError {
            stage: Stage::Setup,
            error: e,
        };
        let mut spec = Spec {
            path,
            argv,
            env,
            cwd,
            creds,
            stdin: -1,
            stdout: -1,
            stderr: -1,
            ctty: tty,
        };
        let mut child_fds: Vec<File> = Vec::new(); // closed in the parent after fork
        let mut outputs: Vec<(u8, File)> = Vec::new();
        let mut stdin_file: Option<File> = None;
        let mut master_arc = None;
        let devnull = File::open("/dev/null").map_err(setup)?;
        if tty {
            let (master, slave) = open_pty().map_err(setup)?;
            set_winsize(master.as_raw_fd(), rows, cols);
            spec.stdin = slave.as_raw_fd();
            spec.stdout = slave.as_raw_fd();
            spec.stderr = slave.as_raw_fd();
            child_fds.push(slave);
            let master = Arc::new(master);
            outputs.push((frame::STDOUT, master.try_clone().map_err(setup)?));
            if want_stdin {
                stdin_file = Some(master.try_clone().map_err(setup)?);
            }
            master_arc = Some(master);
        } else {
            if want_stdin {
                let (r, w) = sys::pipe().map_err(setup)?;
                let (r, w) = unsafe { (File::from_raw_fd(r), File::from_raw_fd(w)) };
                spec.stdin = r.as_raw_fd();
                child_fds.push(r);
                stdin_file = Some(w);
            } else {
                spec.stdin = devnull.as_raw_fd();
            }
            for ty in [frame::STDOUT, frame::STDERR] {
                let (r, w) = sys::pipe().map_err(setup)?;
                let (r, w) = unsafe { (File::from_raw_fd(r), File::from_raw_fd(w)) };
                if ty == frame::STDOUT {
                    spec.stdout = w.as_raw_fd();
                } else {
                    spec.stderr = w.as_raw_fd();
                }
                child_fds.push(w);
                outputs.push((ty, r));
            }
        }
        let pid = process::spawn(&spec)?;
        let status_rx = process::wait_for(pid);
        drop(child_fds);
        drop(devnull);

        let stdin_tx = stdin_file.map(|f| {
            let (tx, rx) = channel::<Vec<u8>>();
            std::thread::spawn(move || pump_stdin(f, rx));
            tx
        });
        self.streams.lock().unwrap().insert(
            s,
            Entry::Exec {
                stdin: stdin_tx,
                pgid: pid,
                master: master_arc,
            },
        );

        let readers: Vec<_> = outputs
            .into_iter()
            .map(|(ty, f)| {
                let conn = self.conn.clone();
                std::thread::spawn(move || pump_output(conn, s, ty, f))
            })
            .collect();
        let conn = self.conn.clone();
        let streams = self.streams.clone();
        std::thread::spawn(move || {
            let status = status_rx.recv().unwrap_or(0);
            for r in readers {
                let _ = r.join();
            }
            streams.lock().unwrap().remove(&s);
            let (code, sig) = sys::decode_status(status);
            conn.exit(s, code, sig);
        });
        Ok(())
    }

    fn copy_in(&self, s: u32, path: String) {
        let (tx, rx) = channel::<Vec<u8>>();
        self.streams
            .lock()
            .unwrap()
            .insert(s, Entry::CopyIn { data: Some(tx) });
        let conn = self.conn.clone();
        let streams = self.streams.clone();
        std::thread::spawn(move || {
            let mut reader = ChanReader {
                rx,
                buf: Vec::new(),
                pos: 0,
            };
            let result = tar::extract(&mut reader, Path::new(&path));
            // Drain to the host's end-of-data so the answer follows all DATA frames.
            while reader.rx.recv().is_ok() {}
            streams.lock().unwrap().remove(&s);
            match result {
                Ok(_) => conn.exit(s, 0, None),
                Err(e) => {
                    let (code, _) = classify(&e);
                    conn.error(s, code, &format!("copy into \"{path}\" failed: {e}"));
                }
            }
        });
    }
}

fn parse_json(payload: &[u8]) -> Result<Value, String> {
    let text = std::str::from_utf8(payload).map_err(|_| "payload is not UTF-8".to_owned())?;
    json::parse(text).map_err(|e| e.to_string())
}

fn path_of(v: &Value) -> Result<String, String> {
    match v.get("path").and_then(Value::as_str) {
        Some(p) if p.starts_with('/') => Ok(p.to_owned()),
        Some(p) => Err(format!("path \"{p}\" must be absolute")),
        None => Err("\"path\" must be a string".to_owned()),
    }
}

fn classify(e: &io::Error) -> (&'static str, ()) {
    match e.kind() {
        io::ErrorKind::NotFound => ("not_found", ()),
        io::ErrorKind::PermissionDenied => ("permission_denied", ()),
        io::ErrorKind::InvalidData | io::ErrorKind::InvalidInput | io::ErrorKind::UnexpectedEof => {
            ("invalid_argument", ())
        }
        _ => ("internal", ()),
    }
}

fn pump_stdin(mut f: File, rx: Receiver<Vec<u8>>) {
    for chunk in rx {
        if f.write_all(&chunk).is_err() {
            break;
        }
    }
    // A pty master stays open for output; signal EOF with ^D instead of closing it.
    if is_tty(&f) {
        let _ = f.write_all(&[4]);
    }
}

fn is_tty(f: &File) -> bool {
    extern "C" {
        fn isatty(fd: i32) -> i32;
    }
    unsafe { isatty(f.as_raw_fd()) == 1 }
}

fn pump_output(conn: Conn, s: u32, ty: u8, mut f: File) {
    let mut buf = vec![0u8; CHUNK];
    loop {
        match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if conn.send(ty, s, &buf[..n]).is_err() {
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break, // EIO on a pty master once the slave side is gone
        }
    }
}

fn open_pty() -> io::Result<(File, File)> {
    let m = sys::check(unsafe { sys::posix_openpt(sys::O_RDWR | sys::O_NOCTTY | sys::O_CLOEXEC) })?;
    let master = unsafe { File::from_raw_fd(m) };
    sys::check(unsafe { sys::grantpt(m) })?;
    sys::check(unsafe { sys::unlockpt(m) })?;
    let mut name = [0 as std::ffi::c_char; 128];
    let rc = unsafe { sys::ptsname_r(m, name.as_mut_ptr(), name.len()) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    let fd = sys::check(unsafe {
        sys::open(name.as_ptr(), sys::O_RDWR | sys::O_NOCTTY | sys::O_CLOEXEC)
    })?;
    Ok((master, unsafe { File::from_raw_fd(fd) }))
}

fn set_winsize(fd: i32, rows: u16, cols: u16) {
    let ws = sys::Winsize {
        rows,
        cols,
        xpixel: 0,
        ypixel: 0,
    };
    unsafe { sys::ioctl(fd, sys::TIOCSWINSZ, &ws as *const sys::Winsize) };
}

struct ChanReader {
    rx: Receiver<Vec<u8>>,
    buf: Vec<u8>,
    pos: usize,
}

impl Read for ChanReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.buf.len() {
            match self.rx.recv() {
                Ok(b) => {
                    self.buf = b;
                    self.pos = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Buffers archive bytes into DATA frames of at most `CHUNK * 2` bytes.
struct DataWriter<'a> {
    conn: &'a Conn,
    stream: u32,
    buf: Vec<u8>,
}

impl Write for DataWriter<'_> {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(b);
        if self.buf.len() >= CHUNK * 2 {
            self.flush()?;
        }
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        for c in self.buf.chunks(frame::MAX_PAYLOAD) {
            self.conn.send(frame::DATA, self.stream, c)?;
        }
        self.buf.clear();
        Ok(())
    }
}

fn copy_out(conn: &Conn, s: u32, path: &str) {
    let p = Path::new(path);
    if let Err(e) = std::fs::symlink_metadata(p) {
        let (code, _) = classify(&e);
        return conn.error(s, code, &format!("cannot read \"{path}\": {e}"));
    }
    let name = p
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or(".")
        .to_owned();
    let mut w = tar::Writer::new(DataWriter {
        conn,
        stream: s,
        buf: Vec::new(),
    });
    let result = w.append_path(p, &name).and_then(|_| w.finish()).map(|_| ());
    match result {
        Ok(()) => {
            let _ = conn.send(frame::DATA, s, &[]);
            conn.exit(s, 0, None);
        }
        Err(e) => {
            let _ = conn.send(frame::DATA, s, &[]);
            let (code, _) = classify(&e);
            conn.error(s, code, &format!("copy out of \"{path}\" failed: {e}"));
        }
    }
}

/// STAT_RESULT for `path`.
pub fn stat(path: &str, follow: bool) -> Value {
    use std::os::unix::fs::PermissionsExt;
    let md = if follow {
        std::fs::metadata(path)
    } else {
        std::fs::symlink_metadata(path)
    };
    match md {
        Ok(m) => {
            let ft = m.file_type();
            let target = if ft.is_symlink() {
                std::fs::read_link(path)
                    .ok()
                    .map(|t| t.to_string_lossy().into_owned())
            } else {
                None
            };
            obj(vec![
                ("exists", true.into()),
                ("is_dir", ft.is_dir().into()),
                ("is_file", ft.is_file().into()),
                ("is_symlink", ft.is_symlink().into()),
                ("link_target", target.into()),
                ("mode", ((m.permissions().mode() & 0o7777) as u64).into()),
                ("size", m.len().into()),
                ("error", Value::Null),
            ])
        }
        Err(e) => {
            let err = if e.kind() == io::ErrorKind::NotFound {
                Value::Null
            } else {
                Value::Str(e.to_string())
            };
            obj(vec![
                ("exists", false.into()),
                ("is_dir", false.into()),
                ("is_file", false.into()),
                ("is_symlink", false.into()),
                ("link_target", Value::Null),
                ("mode", 0u64.into()),
                ("size", 0u64.into()),
                ("error", err),
            ])
        }
    }
}

/// Find the virtio-serial port named `name` under /sys/class/virtio-ports.
pub fn find_port(name: &str) -> Option<String> {
    let dir = std::fs::read_dir("/sys/class/virtio-ports").ok()?;
    for e in dir.flatten() {
        if let Ok(n) = std::fs::read_to_string(e.path().join("name")) {
            if n.trim() == name {
                return Some(format!("/dev/{}", e.file_name().to_string_lossy()));
            }
        }
    }
    None
}

/// Open the control port, retrying while the device appears.
pub fn open_port(name: &str, attempts: u32) -> io::Result<(File, String)> {
    let mut last = io::Error::new(
        io::ErrorKind::NotFound,
        format!("virtio-serial port \"{name}\" not found"),
    );
    for _ in 0..attempts {
        if let Some(dev) = find_port(name) {
            match std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&dev)
            {
                Ok(f) => return Ok((f, dev)),
                Err(e) => last = e,
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(last)
}

/// Run the agent on a byte stream.
pub fn run(
    reader: impl Read,
    writer: Box<dyn Write + Send>,
    transport: Transport,
) -> io::Result<()> {
    Agent::new(Conn::new(writer)).serve(reader, transport)
}
