//! The multiplexed control channel (PROTOCOL.md §4). One reader loop dispatches frames;
//! every stream's work runs on its own threads; all writes go through one lock so
//! frames are written whole.

use crate::frame::{self, Decoder, Frame};
use crate::json::{self, obj, Value};
use crate::process::{self, Spec, Stage};
use crate::session::{Attachment, Session, Sessions};
use crate::{files, layer, sys, tar};
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// Output is read and sent in pieces whose frame (9-byte header included) fits one
/// virtio-serial write (32 KiB): a frame is never split between two host connections.
pub(crate) const CHUNK: usize = 32 * 1024 - 9;
/// How long output pipes may stay silent after the command exited before the stream
/// ends anyway (a background child may hold them open for ever).
const DRAIN_IDLE: Duration = Duration::from_millis(500);

/// Output flow control of one stream (PROTOCOL.md §4, WINDOW): the host grants bytes,
/// the readers take them before sending and wait while none are left. Without a
/// window (an older host) output is not limited.
pub struct Credit {
    state: Mutex<CreditState>,
    cv: Condvar,
}

struct CreditState {
    avail: i64,
    window: Option<i64>,
    closed: bool,
}

impl Credit {
    pub fn new(window: Option<u64>) -> Arc<Credit> {
        let window = window.map(|w| w.clamp(1, 1 << 30) as i64);
        Arc::new(Credit {
            state: Mutex::new(CreditState {
                avail: window.unwrap_or(0),
                window,
                closed: false,
            }),
            cv: Condvar::new(),
        })
    }

    /// Wait until the host allows more output, then take `n` bytes of it. A piece is
    /// sent whole once any credit is left, so the host may receive up to one CHUNK past
    /// its window.
    pub(crate) fn take(&self, n: usize) {
        let mut g = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if g.window.is_none() {
            return;
        }
        while g.avail <= 0 && !g.closed {
            g = self.cv.wait(g).unwrap_or_else(|e| e.into_inner());
        }
        g.avail -= n as i64;
    }

    pub(crate) fn grant(&self, n: u32) {
        let mut g = self.state.lock().unwrap_or_else(|e| e.into_inner());
        g.avail = g.avail.saturating_add(n as i64);
        self.cv.notify_all();
    }

    /// A new host knows nothing of what the old one was granted: start over.
    fn reset(&self) {
        let mut g = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(w) = g.window {
            g.avail = w;
        }
        self.cv.notify_all();
    }

    /// Whether the host grants credit (it sent a `window`).
    pub(crate) fn limited(&self) -> bool {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .window
            .is_some()
    }

    pub(crate) fn close(&self) {
        let mut g = self.state.lock().unwrap_or_else(|e| e.into_inner());
        g.closed = true;
        self.cv.notify_all();
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).closed
    }
}

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

    pub(crate) fn send_json(&self, ty: u8, stream: u32, v: &Value) {
        let _ = self.send(ty, stream, json::to_string(v).as_bytes());
    }

    pub(crate) fn error(&self, stream: u32, code: &str, message: &str) {
        self.send_json(
            frame::ERROR,
            stream,
            &obj(vec![("code", code.into()), ("message", message.into())]),
        );
    }

    pub(crate) fn exit(&self, stream: u32, code: i32, signal: Option<i32>) {
        self.send_json(
            frame::EXIT,
            stream,
            &obj(vec![
                ("code", (code as i64).into()),
                ("signal", signal.map(|s| s as i64).into()),
            ]),
        );
    }

    /// ERROR for a command that could not be started, with the exit code a shell
    /// (and Docker) gives it: 127 not found, 126 cannot be executed.
    pub(crate) fn start_error(&self, stream: u32, f: &StartFailure) {
        self.send_json(
            frame::ERROR,
            stream,
            &obj(vec![
                ("code", f.code.into()),
                ("message", f.message.as_str().into()),
                ("exit_code", (f.exit_code as i64).into()),
            ]),
        );
    }
}

/// Why a command did not start.
pub struct StartFailure {
    pub code: &'static str,
    pub exit_code: i32,
    pub message: String,
}

impl StartFailure {
    pub(crate) fn new(code: &'static str, message: String) -> Self {
        let exit_code = if code == "not_found" { 127 } else { 126 };
        StartFailure {
            code,
            exit_code,
            message,
        }
    }
}

/// What to run: the parsed EXEC request, or the config disk's main command.
pub struct Command {
    pub argv: Vec<String>,
    pub env: Vec<String>,
    pub cwd: Option<String>,
    /// The `user` field: "uid[:gid]" or a name; `None` keeps root.
    pub user: Option<String>,
    pub tty: bool,
    pub stdin: bool,
    pub rows: u16,
    pub cols: u16,
    /// Output flow-control window in bytes; `None`: unlimited.
    pub window: Option<u64>,
}

/// A command started with its stdio on pipes or a pty, not yet wired to anything: EXEC
/// and the main command send its output as frames (`Agent::start`), a session keeps it
/// in its ring (`session.rs`).
pub(crate) struct Launched {
    pub pid: i32,
    /// Its raw wait status, from the reaper.
    pub status: Receiver<i32>,
    /// What to read its output from, with the frame type of those bytes (a pty: its
    /// master, STDOUT only).
    pub outputs: Vec<(u8, File)>,
    /// Where its stdin goes (pipe or pty master); `None` without `cmd.stdin`.
    pub stdin: Option<File>,
    /// The pty master, for RESIZE.
    pub master: Option<Arc<File>>,
}

/// Start `cmd`: user, PATH lookup, pipes or a pty, fork/exec, registered with the
/// reaper. A failure is classified as the host sees it (ERROR code, exit code 127/126).
pub(crate) fn launch(cmd: &Command) -> Result<Launched, StartFailure> {
    let creds = process::creds_for(cmd.user.as_deref()).map_err(|m| {
        StartFailure::new(
            if m.contains("not found") {
                "not_found"
            } else {
                "permission_denied"
            },
            m,
        )
    })?;
    let argv0 = cmd.argv[0].as_str();
    let Some(path) = process::resolve(argv0, &cmd.env) else {
        return Err(StartFailure::new(
            "not_found",
            format!("executable \"{argv0}\" not found in PATH"),
        ));
    };
    spawn_stdio(path, cmd, creds).map_err(|e| {
        let cwd = cmd.cwd.as_deref().unwrap_or_default();
        match (e.stage, e.error.raw_os_error()) {
            (Stage::Exec, Some(2)) => StartFailure::new(
                "not_found",
                format!("executable \"{argv0}\" not found: {}", e.error),
            ),
            (Stage::Exec, Some(13)) => StartFailure::new(
                "permission_denied",
                format!("cannot execute \"{argv0}\": {}", e.error),
            ),
            (Stage::Exec, Some(8)) => StartFailure::new(
                "invalid_argument",
                format!("cannot execute \"{argv0}\": {}", e.error),
            ),
            (Stage::Chdir, Some(2)) => StartFailure::new(
                "not_found",
                format!("working directory \"{cwd}\" not found"),
            ),
            (Stage::Chdir, _) => StartFailure::new(
                "permission_denied",
                format!("working directory \"{cwd}\": {}", e.error),
            ),
            (Stage::Credentials, _) => StartFailure::new(
                "permission_denied",
                format!("cannot switch user: {}", e.error),
            ),
            // An argument, variable or cwd with a NUL byte.
            (Stage::Setup, None) if e.error.kind() == io::ErrorKind::InvalidInput => {
                StartFailure::new("invalid_argument", e.error.to_string())
            }
            _ => StartFailure::new("internal", format!("cannot start \"{argv0}\": {}", e.error)),
        }
    })
}

/// The pipes (or the pty) of `cmd`, then `process::spawn`.
fn spawn_stdio(
    path: String,
    cmd: &Command,
    creds: Option<(u32, u32, Vec<u32>)>,
) -> Result<Launched, process::SpawnError> {
    let setup = |e: io::Error| process::SpawnError {
        stage: Stage::Setup,
        error: e,
    };
    let mut spec = Spec {
        path,
        argv: cmd.argv.clone(),
        env: cmd.env.clone(),
        cwd: cmd.cwd.clone(),
        creds,
        stdin: -1,
        stdout: -1,
        stderr: -1,
        ctty: cmd.tty,
    };
    let mut child_fds: Vec<File> = Vec::new(); // closed in the parent after fork
    let mut outputs: Vec<(u8, File)> = Vec::new();
    let mut stdin = None;
    let mut master_arc = None;
    let devnull = File::open("/dev/null").map_err(setup)?;
    if cmd.tty {
        let (master, slave) = open_pty().map_err(setup)?;
        set_winsize(master.as_raw_fd(), cmd.rows, cmd.cols);
        spec.stdin = slave.as_raw_fd();
        spec.stdout = slave.as_raw_fd();
        spec.stderr = slave.as_raw_fd();
        child_fds.push(slave);
        let master = Arc::new(master);
        outputs.push((frame::STDOUT, master.try_clone().map_err(setup)?));
        if cmd.stdin {
            stdin = Some(master.try_clone().map_err(setup)?);
        }
        master_arc = Some(master);
    } else {
        if cmd.stdin {
            let (r, w) = sys::pipe().map_err(setup)?;
            let (r, w) = unsafe { (File::from_raw_fd(r), File::from_raw_fd(w)) };
            spec.stdin = r.as_raw_fd();
            child_fds.push(r);
            stdin = Some(w);
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
    let status = process::wait_for(pid);
    drop(child_fds);
    Ok(Launched {
        pid,
        status,
        outputs,
        stdin,
        master: master_arc,
    })
}

pub(crate) enum Entry {
    Exec {
        stdin: Option<Sender<StdinChunk>>,
        pgid: i32,
        master: Option<Arc<File>>,
        credit: Arc<Credit>,
    },
    CopyIn {
        data: Option<Sender<Vec<u8>>>,
    },
    /// A COPY_OUT or DIFF in progress: its DATA takes the host's WINDOW credit.
    CopyOut {
        credit: Arc<Credit>,
    },
    /// The main command's stream before the command is spawned: the host may send
    /// stdin as soon as the agent is up, and none of it may be lost.
    MainPending {
        stdin: Vec<Vec<u8>>,
        eof: bool,
        winsize: Option<(u16, u16)>,
    },
    /// A host attached to a session (SESSION_ATTACH): STDIN, RESIZE, SIGNAL, WINDOW and
    /// DETACH on the stream reach it.
    Attach {
        session: Arc<Session>,
        att: Arc<Attachment>,
    },
}

pub(crate) type Streams = Arc<Mutex<HashMap<u32, Entry>>>;

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

/// The agent's state; clones share it (one serves the channel, init starts the main
/// command through another).
#[derive(Clone)]
pub struct Agent {
    pub(crate) conn: Conn,
    pub(crate) streams: Streams,
    pub(crate) sessions: Sessions,
}

impl Agent {
    pub fn new(conn: Conn) -> Self {
        Agent {
            conn,
            streams: Arc::new(Mutex::new(HashMap::new())),
            sessions: Sessions::default(),
        }
    }

    /// Hold what the host sends on MAIN_STREAM until `start_main` spawns the command.
    pub fn expect_main(&self) {
        self.streams.lock().unwrap().insert(
            frame::MAIN_STREAM,
            Entry::MainPending {
                stdin: Vec::new(),
                eof: false,
                winsize: None,
            },
        );
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

    /// The host went away for good (a socket's EOF): kill every command it started,
    /// sessions included.
    fn kill_all(&self) {
        for e in self.streams.lock().unwrap().values() {
            if let Entry::Exec { pgid, .. } = e {
                unsafe { sys::kill(-pgid, sys::SIGKILL) };
            }
        }
        self.sessions.kill_all();
    }

    fn dispatch(&self, f: Frame) {
        let s = f.stream;
        if matches!(
            f.ty,
            frame::STDIN | frame::RESIZE | frame::SIGNAL | frame::WINDOW | frame::DETACH
        ) {
            let attached = match self.streams.lock().unwrap().get(&s) {
                Some(Entry::Attach { session, att }) => Some((session.clone(), att.clone())),
                _ => None,
            };
            if let Some((session, att)) = attached {
                return session.on_frame(&att, &self.conn, s, &f);
            }
        }
        match f.ty {
            frame::PING => {
                let _ = self.conn.send(frame::PONG, s, &f.payload);
            }
            // A host that attached to a running guest (daemon restart, restore from a
            // snapshot) asks for a HELLO instead of waiting for one that may never come.
            frame::HELLO if s == 0 => {
                // Grants of the old host died with it: every stream starts a new window.
                // Its attachments to sessions end without a frame (PROTOCOL.md §6).
                self.streams.lock().unwrap().retain(|_, e| match e {
                    Entry::Exec { credit, .. } | Entry::CopyOut { credit } => {
                        credit.reset();
                        true
                    }
                    Entry::Attach { session, att } => {
                        session.detach(att, true);
                        false
                    }
                    _ => true,
                });
                let _ = self.conn.send(frame::HELLO, 0, &hello_payload());
            }
            frame::WINDOW => {
                if f.payload.len() != 4 {
                    return;
                }
                let n =
                    u32::from_be_bytes([f.payload[0], f.payload[1], f.payload[2], f.payload[3]]);
                if let Some(Entry::Exec { credit, .. } | Entry::CopyOut { credit }) =
                    self.streams.lock().unwrap().get(&s)
                {
                    credit.grant(n);
                }
            }
            frame::EXEC => {
                if !self.is_free(s) {
                    return self.in_use(s);
                }
                match parse_json(&f.payload) {
                    Ok(v) => self.exec(s, &v),
                    Err(m) => self.conn.error(s, "invalid_argument", &m),
                }
            }
            frame::STDIN => {
                let mut m = self.streams.lock().unwrap();
                match m.get_mut(&s) {
                    Some(Entry::Exec { stdin, credit, .. }) => {
                        if f.payload.is_empty() {
                            *stdin = None; // dropping the sender closes the child's stdin
                        } else if let Some(tx) = stdin {
                            let _ = tx.send((f.payload, credit.limited().then_some(s)));
                        }
                    }
                    Some(Entry::MainPending { stdin, eof, .. }) => {
                        if f.payload.is_empty() {
                            *eof = true;
                        } else if !*eof {
                            stdin.push(f.payload);
                        }
                    }
                    _ => {}
                }
            }
            frame::RESIZE => {
                if f.payload.len() != 4 {
                    return;
                }
                let rows = u16::from_be_bytes([f.payload[0], f.payload[1]]);
                let cols = u16::from_be_bytes([f.payload[2], f.payload[3]]);
                let mut m = self.streams.lock().unwrap();
                match m.get_mut(&s) {
                    Some(Entry::Exec {
                        master: Some(master),
                        ..
                    }) => set_winsize(master.as_raw_fd(), rows, cols),
                    Some(Entry::MainPending { winsize, .. }) => *winsize = Some((rows, cols)),
                    _ => {}
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
            frame::COPY_IN => match parse_json(&f.payload).and_then(|v| copy_opts(&v)) {
                Ok(o) => self.copy_in(s, o),
                Err(m) => self.conn.error(s, "invalid_argument", &m),
            },
            frame::COPY_OUT => match parse_json(&f.payload).and_then(|v| copy_opts(&v)) {
                Ok(o) => self.spawn_download(s, o.window, move |conn, credit| {
                    copy_out(conn, s, &o, credit)
                }),
                Err(m) => self.conn.error(s, "invalid_argument", &m),
            },
            frame::DIFF => match parse_json(&f.payload).and_then(|v| diff_opts(&v)) {
                Ok((exclude, window)) => self.spawn_download(s, window, move |conn, credit| {
                    diff(conn, s, &exclude, credit)
                }),
                Err(m) => self.conn.error(s, "invalid_argument", &m),
            },
            frame::LIST | frame::REMOVE => match parse_json(&f.payload) {
                Ok(v) => match path_of(&v) {
                    Ok(path) => {
                        let recursive = v.get("recursive").and_then(Value::as_bool) == Some(true);
                        let (conn, ty) = (self.conn.clone(), f.ty);
                        std::thread::spawn(move || list_or_remove(&conn, s, ty, &path, recursive));
                    }
                    Err(m) => self.conn.error(s, "invalid_argument", &m),
                },
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
            frame::RECONFIGURE => match parse_json(&f.payload).and_then(|v| reconfigure_opts(&v)) {
                // In the reader loop, not a thread: a few syscalls, done before any
                // frame sent after it (an exec then sees the new hostname and address).
                Ok((hostname, net)) => match crate::netdev::reconfigure(net.as_ref(), &hostname) {
                    Ok(()) => self.conn.exit(s, 0, None),
                    Err(m) => self.conn.error(s, "internal", &m),
                },
                Err(m) => self.conn.error(s, "invalid_argument", &m),
            },
            frame::SESSION_START => self.session_start(s, &f.payload),
            frame::SESSION_ATTACH => self.session_attach(s, &f.payload),
            frame::SESSION_CTL => self.session_ctl(s, &f.payload),
            // DETACH on a stream that is not (or no longer) an attachment.
            frame::DETACH => {}
            other => self.conn.error(
                s,
                "unsupported",
                &format!("unknown frame type 0x{other:02x}"),
            ),
        }
    }

    /// Whether the host may open stream `s`: not the connection's (0), not the main
    /// command's, not one in progress.
    pub(crate) fn is_free(&self, s: u32) -> bool {
        s != 0 && s != frame::MAIN_STREAM && !self.streams.lock().unwrap().contains_key(&s)
    }

    pub(crate) fn in_use(&self, s: u32) {
        self.conn.error(
            s,
            "invalid_argument",
            &format!("stream {s} is already in use"),
        );
    }

    /// Run a download (COPY_OUT, DIFF) on its own thread: `run` sends its DATA, taking
    /// the WINDOW credit the host grants on stream `s`, and ends the stream.
    fn spawn_download(
        &self,
        s: u32,
        window: Option<u64>,
        run: impl FnOnce(&Conn, &Credit) + Send + 'static,
    ) {
        if !self.is_free(s) {
            return self.in_use(s);
        }
        let credit = Credit::new(window);
        let entry = Entry::CopyOut {
            credit: credit.clone(),
        };
        self.streams.lock().unwrap().insert(s, entry);
        let (conn, streams) = (self.conn.clone(), self.streams.clone());
        std::thread::spawn(move || {
            run(&conn, &credit);
            streams.lock().unwrap().remove(&s);
        });
    }

    fn exec(&self, s: u32, v: &Value) {
        match parse_command(v) {
            Ok(cmd) => {
                if let Err(f) = self.start(s, cmd, None) {
                    self.conn.start_error(s, &f);
                }
            }
            Err(m) => self.conn.error(s, "invalid_argument", &m),
        }
    }

    /// Start the main command (exec mode) on MAIN_STREAM. On success returns its pid
    /// and a receiver of its raw wait status, sent once its EXIT frame is out.
    pub fn start_main(&self, cmd: Command) -> Result<(i32, Receiver<i32>), StartFailure> {
        let (tx, rx) = channel();
        let pid = self.start(frame::MAIN_STREAM, cmd, Some(tx))?;
        Ok((pid, rx))
    }

    /// The main command could not start: tell the host why, as its exit.
    pub fn main_failed(&self, f: &StartFailure) {
        self.conn.send_json(
            frame::EXIT,
            frame::MAIN_STREAM,
            &obj(vec![
                ("code", (f.exit_code as i64).into()),
                ("signal", Value::Null),
                ("message", f.message.as_str().into()),
            ]),
        );
    }

    /// Spawn `cmd` with its stdio wired to stream `s`; returns its pid.
    fn start(
        &self,
        s: u32,
        cmd: Command,
        on_exit: Option<Sender<i32>>,
    ) -> Result<i32, StartFailure> {
        let Launched {
            pid,
            status,
            outputs,
            stdin,
            master,
        } = launch(&cmd)?;
        let stdin_tx = stdin.map(|f| spawn_stdin(f, self.conn.clone()));
        // With flow control, each stdin chunk written to the child is granted back to the
        // host, which keeps at most one window in flight: the channel stays bounded.
        let grant = cmd.window.map(|_| s);
        let credit = Credit::new(cmd.window);
        {
            let mut m = self.streams.lock().unwrap();
            let mut stdin_tx = stdin_tx;
            // Replay stdin that came before the command existed (main stream).
            if let Some(Entry::MainPending {
                stdin,
                eof,
                winsize,
            }) = m.remove(&s)
            {
                if let Some(tx) = &stdin_tx {
                    for chunk in stdin {
                        let _ = tx.send((chunk, grant));
                    }
                }
                if eof {
                    stdin_tx = None;
                }
                if let (Some((rows, cols)), Some(master)) = (winsize, &master) {
                    set_winsize(master.as_raw_fd(), rows, cols);
                }
            }
            m.insert(
                s,
                Entry::Exec {
                    stdin: stdin_tx,
                    pgid: pid,
                    master,
                    credit: credit.clone(),
                },
            );
        }

        let progress = Arc::new(Progress::default());
        let (conn, out_credit) = (self.conn.clone(), credit.clone());
        let (readers, done_rx) = spawn_readers(outputs, &progress, move |ty, bytes| {
            out_credit.take(bytes.len());
            !out_credit.is_closed() && conn.send(ty, s, bytes).is_ok()
        });
        let conn = self.conn.clone();
        let streams = self.streams.clone();
        std::thread::spawn(move || {
            let status = status.recv().unwrap_or(0);
            drain(readers, &done_rx, &progress);
            streams.lock().unwrap().remove(&s);
            // Readers still blocked on a background child's pipe must not send after EXIT.
            credit.close();
            let (code, sig) = sys::decode_status(status);
            conn.exit(s, code, sig);
            if let Some(tx) = on_exit {
                let _ = tx.send(status);
            }
        });
        Ok(pid)
    }

    fn copy_in(&self, s: u32, o: CopyOpts) {
        let path = o.path.clone();
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
                grant: o.window.map(|_| (conn.clone(), s)),
            };
            let result = match o.raw {
                Some(mode) => files::write_file(&path, mode, &mut reader).map(|_| 0),
                None => tar::extract(&mut reader, Path::new(&path)),
            };
            // Drain to the host's end-of-data so the answer follows all DATA frames
            // (still granting: a host waiting for credit must reach its end).
            while let Ok(b) = reader.rx.recv() {
                if o.window.is_some() {
                    let _ = conn.send(frame::WINDOW, s, &(b.len() as u32).to_be_bytes());
                }
            }
            streams.lock().unwrap().remove(&s);
            match result {
                Ok(_) => conn.exit(s, 0, None),
                Err(e) => {
                    let code = classify(&e);
                    conn.error(s, code, &format!("copy into \"{path}\" failed: {e}"));
                }
            }
        });
    }
}

/// An EXEC request's JSON as a Command.
pub(crate) fn parse_command(v: &Value) -> Result<Command, String> {
    let argv = v
        .get("argv")
        .and_then(Value::as_str_vec)
        .filter(|a| !a.is_empty())
        .ok_or("\"argv\" must be a non-empty array of strings")?;
    let env = match v.get("env") {
        None | Some(Value::Null) => {
            vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_owned()]
        }
        Some(e) => e
            .as_str_vec()
            .ok_or("\"env\" must be an array of strings")?,
    };
    let window = window_of(v)?;
    Ok(Command {
        argv,
        env,
        cwd: v
            .get("cwd")
            .and_then(Value::as_str)
            .filter(|c| !c.is_empty())
            .map(str::to_owned),
        user: v.get("user").and_then(Value::as_str).map(str::to_owned),
        tty: v.get("tty").and_then(Value::as_bool).unwrap_or(false),
        stdin: v.get("stdin").and_then(Value::as_bool).unwrap_or(true),
        rows: v.get("rows").and_then(Value::as_u64).unwrap_or(24) as u16,
        cols: v.get("cols").and_then(Value::as_u64).unwrap_or(80) as u16,
        window,
    })
}

pub(crate) fn parse_json(payload: &[u8]) -> Result<Value, String> {
    let text = std::str::from_utf8(payload).map_err(|_| "payload is not UTF-8".to_owned())?;
    json::parse(text).map_err(|e| e.to_string())
}

/// COPY_IN / COPY_OUT options: `{"path", "window"?, "raw"?, "mode"?}`. `raw: true` copies
/// one file's bytes instead of a tar stream (COPY_IN: `mode`, default 0644).
struct CopyOpts {
    path: String,
    window: Option<u64>,
    /// Raw mode; for COPY_IN the file mode.
    raw: Option<u32>,
}

/// The optional `"window"` of EXEC, COPY_IN, COPY_OUT and DIFF.
pub(crate) fn window_of(v: &Value) -> Result<Option<u64>, String> {
    match v.get("window") {
        None | Some(Value::Null) => Ok(None),
        Some(w) => w
            .as_u64()
            .filter(|w| *w > 0)
            .map(Some)
            .ok_or_else(|| "\"window\" must be a positive integer".to_owned()),
    }
}

fn copy_opts(v: &Value) -> Result<CopyOpts, String> {
    let window = window_of(v)?;
    let mode = match v.get("mode") {
        None | Some(Value::Null) => 0o644,
        Some(m) => m
            .as_u64()
            .filter(|m| *m <= 0o7777)
            .ok_or("\"mode\" must be an integer 0..=0o7777")? as u32,
    };
    let raw = v.get("raw").and_then(Value::as_bool) == Some(true);
    Ok(CopyOpts {
        path: path_of(v)?,
        window,
        raw: raw.then_some(mode),
    })
}

/// DIFF options: `{"exclude"?: [relative paths], "window"?}`.
fn diff_opts(v: &Value) -> Result<(layer::Exclude, Option<u64>), String> {
    if !matches!(v, Value::Obj(_)) {
        return Err("DIFF request must be a JSON object".to_owned());
    }
    let exclude = match v.get("exclude") {
        None | Some(Value::Null) => Vec::new(),
        Some(e) => e
            .as_str_vec()
            .ok_or("\"exclude\" must be an array of strings")?,
    };
    Ok((layer::Exclude::parse(&exclude)?, window_of(v)?))
}

/// LIST answers DATA frames of JSON lines (one entry each), an empty DATA, then EXIT;
/// REMOVE answers EXIT. Either answers ERROR on failure.
fn list_or_remove(conn: &Conn, s: u32, ty: u8, path: &str, recursive: bool) {
    let result = if ty == frame::LIST {
        files::list(path).map(|entries| {
            let mut buf = Vec::new();
            for e in entries {
                buf.extend_from_slice(json::to_string(&e).as_bytes());
                buf.push(b'\n');
                if buf.len() >= CHUNK / 2 {
                    let _ = conn.send(frame::DATA, s, &buf);
                    buf.clear();
                }
            }
            if !buf.is_empty() {
                let _ = conn.send(frame::DATA, s, &buf);
            }
            let _ = conn.send(frame::DATA, s, &[]);
        })
    } else {
        files::remove(path, recursive)
    };
    match result {
        Ok(()) => conn.exit(s, 0, None),
        Err(e) => {
            let code = classify(&e);
            let op = if ty == frame::LIST { "list" } else { "remove" };
            conn.error(s, code, &format!("{op} \"{path}\": {e}"));
        }
    }
}

/// RECONFIGURE's `{"hostname", "network"?}` (`network` as on the config disk).
fn reconfigure_opts(v: &Value) -> Result<(String, Option<crate::network::Network>), String> {
    let hostname = match v.get("hostname").and_then(Value::as_str) {
        Some(h) if !h.is_empty() && h.len() <= 64 && !h.contains(['\0', '/']) => h.to_owned(),
        _ => return Err("\"hostname\" must be a name of 1 to 64 characters".to_owned()),
    };
    let net = match v.get("network") {
        None | Some(Value::Null) => None,
        Some(n) => Some(crate::network::parse(n).map_err(|e| format!("network: {e}"))?),
    };
    Ok((hostname, net))
}

fn path_of(v: &Value) -> Result<String, String> {
    match v.get("path").and_then(Value::as_str) {
        Some(p) if p.starts_with('/') => Ok(p.to_owned()),
        Some(p) => Err(format!("path \"{p}\" must be absolute")),
        None => Err("\"path\" must be a string".to_owned()),
    }
}

/// The ERROR code (PROTOCOL.md §4) of a failed file operation.
fn classify(e: &io::Error) -> &'static str {
    match e.kind() {
        io::ErrorKind::NotFound => "not_found",
        io::ErrorKind::PermissionDenied => "permission_denied",
        io::ErrorKind::InvalidData | io::ErrorKind::InvalidInput | io::ErrorKind::UnexpectedEof => {
            "invalid_argument"
        }
        io::ErrorKind::Unsupported => "unsupported",
        _ => "internal",
    }
}

/// A piece of a command's stdin, and the stream to grant it back to (WINDOW) once it is
/// written: flow control of the host's STDIN (EXEC and attach streams with a `window`).
pub(crate) type StdinChunk = (Vec<u8>, Option<u32>);

/// A thread writing what the returned sender receives to `f`; dropping every sender
/// closes `f` (a pty gets `^D` instead).
pub(crate) fn spawn_stdin(f: File, conn: Conn) -> Sender<StdinChunk> {
    let (tx, rx) = channel::<StdinChunk>();
    std::thread::spawn(move || pump_stdin(f, rx, &conn));
    tx
}

fn pump_stdin(mut f: File, rx: Receiver<StdinChunk>, conn: &Conn) {
    let mut broken = false;
    for (chunk, grant) in rx {
        // After EPIPE the rest is dropped, but still granted: the host must not stall.
        if !broken && f.write_all(&chunk).is_err() {
            broken = true;
        }
        if let Some(s) = grant {
            let _ = conn.send(frame::WINDOW, s, &(chunk.len() as u32).to_be_bytes());
        }
    }
    if broken {
        return;
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

/// How a command's output readers are doing, for `drain`.
#[derive(Default)]
pub(crate) struct Progress {
    /// Bytes taken by the sink so far.
    bytes: AtomicU64,
    /// Readers holding a piece they have not finished handing over (waiting for credit,
    /// or for a busy host to take the write).
    busy: AtomicUsize,
}

/// One reader thread per output of a command: each piece read goes to `sink(type,
/// bytes)`, which answers whether to go on. Returns how many readers run and the channel
/// each reports its end on, for `drain`.
pub(crate) fn spawn_readers<S>(
    outputs: Vec<(u8, File)>,
    progress: &Arc<Progress>,
    sink: S,
) -> (usize, Receiver<()>)
where
    S: Fn(u8, &[u8]) -> bool + Clone + Send + 'static,
{
    let (done_tx, done_rx) = channel::<()>();
    let readers = outputs.len();
    for (ty, f) in outputs {
        let (done, progress, sink) = (done_tx.clone(), progress.clone(), sink.clone());
        std::thread::spawn(move || {
            pump_output(f, &progress, |b| sink(ty, b));
            let _ = done.send(());
        });
    }
    (readers, done_rx)
}

fn pump_output(mut f: File, progress: &Progress, mut sink: impl FnMut(&[u8]) -> bool) {
    let mut buf = vec![0u8; CHUNK];
    loop {
        match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                progress.busy.fetch_add(1, Ordering::SeqCst);
                let taken = sink(&buf[..n]);
                if taken {
                    progress.bytes.fetch_add(n as u64, Ordering::SeqCst);
                }
                progress.busy.fetch_sub(1, Ordering::SeqCst);
                if !taken {
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break, // EIO on a pty master once the slave side is gone
        }
    }
}

/// Wait for a command's output readers after it exited: all of them, or until its
/// pipes stay quiet for DRAIN_IDLE (a background child holding them). A reader still
/// sending a piece (waiting for credit, or for a slow host to take the write) is not
/// quiet: cutting it off would lose output. Quiet is counted in checks, not read off the
/// clock: a vCPU the host did not schedule for a while sees its clock jump past
/// DRAIN_IDLE at once, while the readers had no chance to run either.
pub(crate) fn drain(mut readers: usize, done: &Receiver<()>, progress: &Progress) {
    const CHECK: Duration = Duration::from_millis(50);
    let quiet_checks = (DRAIN_IDLE.as_millis() / CHECK.as_millis()) as u32;
    let mut seen = progress.bytes.load(Ordering::SeqCst);
    let mut quiet = 0u32;
    while readers > 0 {
        match done.recv_timeout(CHECK) {
            Ok(()) => readers -= 1,
            Err(RecvTimeoutError::Disconnected) => return,
            Err(RecvTimeoutError::Timeout) => {
                let now = progress.bytes.load(Ordering::SeqCst);
                if now != seen || progress.busy.load(Ordering::SeqCst) > 0 {
                    seen = now;
                    quiet = 0;
                } else {
                    quiet += 1;
                    if quiet >= quiet_checks {
                        return;
                    }
                }
            }
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

pub(crate) fn set_winsize(fd: i32, rows: u16, cols: u16) {
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
    /// COPY_IN with a window: grant each chunk back once it has been consumed.
    grant: Option<(Conn, u32)>,
}

impl Read for ChanReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.buf.len() {
            if let (Some((conn, s)), false) = (&self.grant, self.buf.is_empty()) {
                let _ = conn.send(frame::WINDOW, *s, &(self.buf.len() as u32).to_be_bytes());
                self.buf.clear();
                self.pos = 0;
            }
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
    credit: &'a Credit,
}

impl<'a> DataWriter<'a> {
    fn new(conn: &'a Conn, stream: u32, credit: &'a Credit) -> Self {
        DataWriter {
            conn,
            stream,
            buf: Vec::new(),
            credit,
        }
    }
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
            self.credit.take(c.len());
            self.conn.send(frame::DATA, self.stream, c)?;
        }
        self.buf.clear();
        Ok(())
    }
}

/// End a download's stream: an empty DATA, then EXIT, or ERROR "`what` failed: …".
fn end_download(conn: &Conn, s: u32, result: io::Result<()>, what: &str) {
    let _ = conn.send(frame::DATA, s, &[]);
    match result {
        Ok(()) => conn.exit(s, 0, None),
        Err(e) => conn.error(s, classify(&e), &format!("{what} failed: {e}")),
    }
}

fn copy_out(conn: &Conn, s: u32, o: &CopyOpts, credit: &Credit) {
    use std::os::unix::ffi::OsStrExt;
    let path = o.path.as_str();
    let p = Path::new(path);
    if let Err(e) = std::fs::symlink_metadata(p) {
        return conn.error(s, classify(&e), &format!("cannot read \"{path}\": {e}"));
    }
    let mut out = DataWriter::new(conn, s, credit);
    let result = if o.raw.is_some() {
        files::read_file(path, &mut out).and_then(|_| out.flush())
    } else {
        let name = p.file_name().map_or(&b"."[..], |n| n.as_bytes());
        let mut w = tar::Writer::new(out);
        w.append_path(p, name).and_then(|_| w.finish()).map(|_| ())
    };
    end_download(conn, s, result, &format!("copy out of \"{path}\""));
}

/// DIFF: the overlay upper directory as an OCI layer tar in DATA frames (credited like
/// COPY_OUT), an empty DATA, then EXIT; or ERROR: `unsupported` without an upper
/// directory (before any DATA) or for what a layer cannot express (after an empty DATA,
/// like any failure during the walk).
fn diff(conn: &Conn, s: u32, exclude: &layer::Exclude, credit: &Credit) {
    let Some(root) = layer::upper_root() else {
        return conn.error(
            s,
            "unsupported",
            "this guest has no overlay upper directory to diff",
        );
    };
    let mut w = tar::Writer::new(DataWriter::new(conn, s, credit));
    let result = layer::write(&root, exclude, &layer::Overlay, &mut w)
        .and_then(|_| w.finish())
        .map(|_| ());
    end_download(conn, s, result, "diff of the overlay upper directory");
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

impl Agent {
    /// An agent writing to `writer`; `serve` it on the matching reader in a thread.
    pub fn over(writer: Box<dyn Write + Send>) -> Agent {
        Agent::new(Conn::new(writer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconfigure_payload_is_checked() {
        let ok = json::parse(r#"{"hostname":"f1","network":{"interfaces":[{"mac":"52:54:00:00:00:09","address":"10.0.0.9","prefix":24,"gateway":"10.0.0.1"}]}}"#).unwrap();
        let (h, net) = reconfigure_opts(&ok).unwrap();
        assert_eq!(h, "f1");
        assert_eq!(
            net.unwrap().interfaces[0].mac.as_deref(),
            Some("52:54:00:00:00:09")
        );
        let bare = json::parse(r#"{"hostname":"f2"}"#).unwrap();
        assert!(reconfigure_opts(&bare).unwrap().1.is_none());
        for bad in [
            r#"{}"#,
            r#"{"hostname":""}"#,
            r#"{"hostname":"a/b"}"#,
            r#"{"hostname":"f","network":{"interfaces":5}}"#,
        ] {
            assert!(
                reconfigure_opts(&json::parse(bad).unwrap()).is_err(),
                "{bad}"
            );
        }
    }
}
