//! Sessions (PROTOCOL.md §6): commands the agent runs on its own behalf. Their output goes
//! to a ring buffer in the agent, never straight to a stream, so they keep running (and
//! their output is kept) with no host attached, across a host reconnect and a memory
//! snapshot. Hosts attach to read the ring and the live output, and may send input.
//!
//! Threads: per session, one reader per output pipe (always reading, appending to the
//! ring), a stdin writer and a waiter (records the exit once the readers are done, as
//! EXEC's does); per attachment, one thread copying the ring to its stream under the
//! host's WINDOW credit. Attachers sleep on the session's condition variable.

use crate::agent::{self, Agent, Command, Conn, Credit, Entry, Progress, StdinChunk, CHUNK};
use crate::frame::{self, Frame};
use crate::json::{self, obj, Value};
use crate::sys;
use std::collections::{BTreeMap, VecDeque};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

/// Sessions that may exist at once (ended ones count until removed).
const MAX_SESSIONS: usize = 128;
const DEFAULT_BUFFER: usize = 1 << 20;
const MIN_BUFFER: usize = 4096;
const MAX_BUFFER: usize = 64 << 20;
/// Bytes an attacher copies out of the ring per turn of its lock.
const BATCH: usize = 64 * 1024;
/// Consecutive small pieces of one type are merged up to this size: a command printing
/// a line at a time does not cost a ring entry per line.
const MERGE: usize = 4096;

/// The last `cap` bytes of a session's output, numbered from 0 since it started (stdout
/// and stderr share one numbering). Pieces keep their frame type (STDOUT/STDERR) and
/// their absolute offset; the pieces are contiguous.
pub(crate) struct Ring {
    pieces: VecDeque<(u8, u64, Vec<u8>)>,
    /// Offset of the first byte kept (the front piece may start before it: it is cut
    /// there when read, and dropped once wholly before it).
    start: u64,
    /// One past the last byte.
    end: u64,
    cap: usize,
}

impl Ring {
    pub(crate) fn new(cap: usize) -> Ring {
        Ring {
            pieces: VecDeque::new(),
            start: 0,
            end: 0,
            cap,
        }
    }

    /// Append a piece, pushing the oldest bytes out so that `end - start <= cap`.
    pub(crate) fn push(&mut self, ty: u8, bytes: &[u8]) {
        let n = bytes.len();
        if n == 0 {
            return;
        }
        // What would be pushed out at once is never stored.
        let skip = n.saturating_sub(self.cap);
        let kept = &bytes[skip..];
        match self.pieces.back_mut() {
            Some((t, _, last)) if skip == 0 && *t == ty && last.len() + n <= MERGE => {
                last.extend_from_slice(kept)
            }
            _ => self
                .pieces
                .push_back((ty, self.end + skip as u64, kept.to_vec())),
        }
        self.end += n as u64;
        self.start = self.start.max(self.end.saturating_sub(self.cap as u64));
        while let Some((_, off, b)) = self.pieces.front() {
            if off + b.len() as u64 > self.start {
                break;
            }
            self.pieces.pop_front();
        }
    }

    /// Copies of the output in `[from, to)` (`from` below `start` reads from `start`),
    /// at most `max` bytes, as (frame type, bytes) in order.
    pub(crate) fn read(&self, from: u64, to: u64, max: usize) -> Vec<(u8, Vec<u8>)> {
        let from = from.max(self.start);
        let to = to.min(self.end).min(from.saturating_add(max as u64));
        let mut out = Vec::new();
        if from >= to {
            return out;
        }
        let first = self
            .pieces
            .partition_point(|(_, off, b)| off + b.len() as u64 <= from);
        for (ty, off, b) in self.pieces.iter().skip(first) {
            if *off >= to {
                break;
            }
            let lo = (from.max(*off) - off) as usize;
            let hi = (to.min(off + b.len() as u64) - off) as usize;
            out.push((*ty, b[lo..hi].to_vec()));
        }
        out
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum InputMode {
    /// The first attacher that asks for input holds it until it detaches.
    Single,
    /// Every attacher that asks has it.
    Shared,
}

/// Attachment states; changed under the session's lock (the attacher checks them there).
const LIVE: u8 = 0;
/// DETACH (or the session was removed): the attachment ends with EXIT `detached: true`.
const DETACHED: u8 = 1;
/// The host reconnected (its HELLO): the attachment ends without a frame.
const SILENT: u8 = 2;

static NEXT_ATTACHMENT: AtomicU64 = AtomicU64::new(1);

/// One host attached to a session on one stream.
pub(crate) struct Attachment {
    id: u64,
    /// Whether its STDIN, RESIZE and SIGNAL reach the command.
    input: bool,
    /// Its output credit (the host's WINDOW grants); closed when it ends early.
    credit: Arc<Credit>,
    state: AtomicU8,
    /// Held while a frame of this attachment is written: a silent detach waits for it,
    /// so no frame of the old host's attachment follows the new host's HELLO.
    sending: Mutex<()>,
}

impl Attachment {
    /// Send a frame unless the attachment has ended; false if it was not sent.
    fn send(&self, conn: &Conn, ty: u8, s: u32, payload: &[u8]) -> bool {
        let _g = self.sending.lock().unwrap_or_else(|e| e.into_inner());
        self.state.load(Ordering::SeqCst) == LIVE && conn.send(ty, s, payload).is_ok()
    }
}

pub(crate) struct Session {
    name: String,
    argv: Vec<String>,
    tty: bool,
    input: InputMode,
    buffer: usize,
    /// Its pid, also its process group (commands run in their own session).
    pid: i32,
    started_at: f64,
    state: Mutex<State>,
    /// Wakes attachers: new output, the exit, a detach.
    cv: Condvar,
}

struct State {
    ring: Ring,
    /// Raw wait status and the time it was recorded; `None` while running.
    exit: Option<(i32, f64)>,
    /// The command's stdin (pipe or pty master); `None` once closed or ended.
    stdin: Option<Sender<StdinChunk>>,
    /// The pty master, for RESIZE; `None` without a tty or once ended.
    master: Option<Arc<File>>,
    attachers: Vec<Arc<Attachment>>,
    /// Single input mode: the attachment holding input.
    holder: Option<u64>,
}

impl Session {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A reader's piece of output; false once the session has ended (a background child
    /// still holding the pipe adds nothing after the exit was recorded).
    fn append(&self, ty: u8, bytes: &[u8]) -> bool {
        let mut st = self.lock();
        if st.exit.is_some() {
            return false;
        }
        st.ring.push(ty, bytes);
        drop(st);
        self.cv.notify_all();
        true
    }

    /// The command exited and its readers are done (or quiet): keep the status.
    fn finish(&self, status: i32) {
        let mut st = self.lock();
        st.exit = Some((status, now()));
        st.stdin = None;
        st.master = None;
        drop(st);
        self.cv.notify_all();
    }

    fn code(st: &State) -> (Value, Value) {
        match st.exit {
            Some((status, _)) => {
                let (code, sig) = sys::decode_status(status);
                ((code as i64).into(), sig.map(|s| s as i64).into())
            }
            None => (Value::Null, Value::Null),
        }
    }

    /// The session as SESSION_START's DATA and `list` describe it.
    fn describe(&self, st: &State) -> Value {
        let (code, signal) = Session::code(st);
        obj(vec![
            ("name", self.name.as_str().into()),
            ("pid", (self.pid as i64).into()),
            (
                "argv",
                Value::Arr(self.argv.iter().map(|a| a.as_str().into()).collect()),
            ),
            ("tty", self.tty.into()),
            (
                "input",
                match self.input {
                    InputMode::Single => "single",
                    InputMode::Shared => "shared",
                }
                .into(),
            ),
            ("buffer", (self.buffer as u64).into()),
            ("running", st.exit.is_none().into()),
            ("code", code),
            ("signal", signal),
            ("started_at", Value::Num(self.started_at)),
            ("ended_at", st.exit.map(|(_, t)| Value::Num(t)).into()),
            ("start", st.ring.start.into()),
            ("end", st.ring.end.into()),
            ("attached", (st.attachers.len() as u64).into()),
        ])
    }

    /// End an attachment: DETACH (`silent` false: it sends EXIT `detached: true`) or the
    /// host's reconnect (`silent`: no frame). Input and the attached count are released
    /// at once; the attacher thread, woken here, ends the stream.
    pub(crate) fn detach(&self, att: &Attachment, silent: bool) {
        let mut st = self.lock();
        if silent {
            att.state.store(SILENT, Ordering::SeqCst);
        } else {
            let _ = att
                .state
                .compare_exchange(LIVE, DETACHED, Ordering::SeqCst, Ordering::SeqCst);
        }
        forget(&mut st, att);
        drop(st);
        att.credit.close(); // wakes an attacher waiting for credit
        self.cv.notify_all();
        if silent {
            // A frame being written now finishes before the caller answers the HELLO.
            drop(att.sending.lock().unwrap_or_else(|e| e.into_inner()));
        }
    }

    /// A frame on an attach stream: STDIN, RESIZE and SIGNAL reach the command only if
    /// this attachment has input (else they are dropped); WINDOW grants output credit;
    /// DETACH ends the attachment.
    pub(crate) fn on_frame(&self, att: &Attachment, conn: &Conn, s: u32, f: &Frame) {
        match f.ty {
            frame::WINDOW => {
                if let Ok(n) = <[u8; 4]>::try_from(f.payload.as_slice()) {
                    att.credit.grant(u32::from_be_bytes(n));
                }
            }
            frame::DETACH => self.detach(att, false),
            frame::STDIN => {
                // With a window the host's STDIN is credited too: every chunk is granted
                // back, once written, or now if it is dropped.
                let grant = att.credit.limited().then_some(s);
                let mut st = self.lock();
                let dropped = match (&st.stdin, self.has_input(att)) {
                    (Some(_), true) if f.payload.is_empty() && !self.tty => {
                        st.stdin = None; // closes the pipe: EOF for the command
                        false
                    }
                    // A pty stays open for the next attacher: EOF is ^D.
                    (Some(tx), true) if f.payload.is_empty() => tx.send((vec![4], None)).is_err(),
                    (Some(tx), true) => tx.send((f.payload.clone(), grant)).is_err(),
                    _ => true,
                };
                drop(st);
                if let (true, Some(s), false) = (dropped, grant, f.payload.is_empty()) {
                    let _ = conn.send(frame::WINDOW, s, &(f.payload.len() as u32).to_be_bytes());
                }
            }
            frame::RESIZE => {
                let st = self.lock();
                if let (Some(m), true, 4) = (&st.master, self.has_input(att), f.payload.len()) {
                    let rows = u16::from_be_bytes([f.payload[0], f.payload[1]]);
                    let cols = u16::from_be_bytes([f.payload[2], f.payload[3]]);
                    agent::set_winsize(m.as_raw_fd(), rows, cols);
                }
            }
            frame::SIGNAL => {
                let st = self.lock();
                if let (Some(&sig @ 1..=64), true, None) =
                    (f.payload.first(), self.has_input(att), st.exit)
                {
                    unsafe { sys::kill(-self.pid, sig as i32) };
                }
            }
            _ => {}
        }
    }

    fn has_input(&self, att: &Attachment) -> bool {
        att.input && att.state.load(Ordering::SeqCst) == LIVE
    }
}

/// Drop `att` from the session's attachers, releasing input if it held it.
fn forget(st: &mut State, att: &Attachment) {
    st.attachers.retain(|a| a.id != att.id);
    if st.holder == Some(att.id) {
        st.holder = None;
    }
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The agent's sessions by name; clones share them.
#[derive(Clone, Default)]
pub(crate) struct Sessions {
    table: Arc<Mutex<BTreeMap<String, Arc<Session>>>>,
}

impl Sessions {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Arc<Session>>> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn get(&self, name: &str) -> Option<Arc<Session>> {
        self.lock().get(name).cloned()
    }

    /// SIGKILL every running session's process group (the host is gone for good).
    pub(crate) fn kill_all(&self) {
        for s in self.lock().values() {
            if s.lock().exit.is_none() {
                unsafe { sys::kill(-s.pid, sys::SIGKILL) };
            }
        }
    }
}

/// A session name: `[A-Za-z0-9][A-Za-z0-9_.-]{0,62}`.
fn valid_name(n: &str) -> bool {
    let b = n.as_bytes();
    (1..=63).contains(&b.len())
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

/// SESSION_START's request.
struct StartOpts {
    name: Option<String>,
    buffer: usize,
    input: InputMode,
    cmd: Command,
}

fn start_opts(v: &Value) -> Result<StartOpts, String> {
    if !matches!(v, Value::Obj(_)) {
        return Err("SESSION_START request must be a JSON object".to_owned());
    }
    // EXEC's parser takes a wrong type for a default; a session is checked strictly.
    for key in ["cwd", "user"] {
        if !matches!(v.get(key), None | Some(Value::Null | Value::Str(_))) {
            return Err(format!("\"{key}\" must be a string"));
        }
    }
    if !matches!(v.get("tty"), None | Some(Value::Null | Value::Bool(_))) {
        return Err("\"tty\" must be a boolean".to_owned());
    }
    for key in ["rows", "cols"] {
        match v.get(key) {
            None | Some(Value::Null) => {}
            Some(n) if n.as_u64().is_some_and(|n| n <= u16::MAX as u64) => {}
            Some(_) => return Err(format!("\"{key}\" must be an integer 0..65535")),
        }
    }
    let mut cmd = agent::parse_command(v)?;
    // The ring takes the output and the command's stdin stays open while it runs.
    cmd.stdin = true;
    cmd.window = None;
    let name = match v.get("name") {
        None | Some(Value::Null) => None,
        Some(Value::Str(n)) if valid_name(n) => Some(n.clone()),
        Some(_) => return Err("\"name\" must match [A-Za-z0-9][A-Za-z0-9_.-]{0,62}".to_owned()),
    };
    let buffer = match v.get("buffer") {
        None | Some(Value::Null) => DEFAULT_BUFFER,
        Some(b) => match b.as_f64() {
            Some(n) if n >= 0.0 && n.fract() == 0.0 => {
                n.clamp(MIN_BUFFER as f64, MAX_BUFFER as f64) as usize
            }
            _ => return Err("\"buffer\" must be a non-negative integer".to_owned()),
        },
    };
    let input = match v.get("input") {
        None | Some(Value::Null) => InputMode::Single,
        Some(Value::Str(m)) if m == "single" => InputMode::Single,
        Some(Value::Str(m)) if m == "shared" => InputMode::Shared,
        Some(_) => return Err("\"input\" must be \"single\" or \"shared\"".to_owned()),
    };
    Ok(StartOpts {
        name,
        buffer,
        input,
        cmd,
    })
}

/// An optional boolean field.
fn flag(v: &Value, key: &str, default: bool) -> Result<bool, String> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(format!("\"{key}\" must be a boolean")),
    }
}

/// The `name` a request refers to.
fn name_of(v: &Value) -> Result<String, String> {
    match v.get("name") {
        Some(Value::Str(n)) => Ok(n.clone()),
        _ => Err("\"name\" must be a string".to_owned()),
    }
}

/// SESSION_ATTACH's request.
struct AttachOpts {
    name: String,
    from: Option<u64>,
    follow: bool,
    input: bool,
    window: Option<u64>,
}

fn attach_opts(v: &Value) -> Result<AttachOpts, String> {
    if !matches!(v, Value::Obj(_)) {
        return Err("SESSION_ATTACH request must be a JSON object".to_owned());
    }
    let from = match v.get("from") {
        None | Some(Value::Null) => None,
        Some(f) => Some(f.as_u64().ok_or("\"from\" must be null or a byte offset")?),
    };
    Ok(AttachOpts {
        name: name_of(v)?,
        from,
        follow: flag(v, "follow", true)?,
        input: flag(v, "input", false)?,
        window: agent::window_of(v)?,
    })
}

enum Ctl {
    List,
    Signal(String, i32),
    Remove(String),
}

fn ctl_opts(v: &Value) -> Result<Ctl, String> {
    match v.get("op").and_then(Value::as_str) {
        Some("list") => Ok(Ctl::List),
        Some("signal") => {
            let sig = v
                .get("signal")
                .and_then(Value::as_u64)
                .filter(|s| (1..=64).contains(s))
                .ok_or("\"signal\" must be a signal number 1..64")?;
            Ok(Ctl::Signal(name_of(v)?, sig as i32))
        }
        Some("remove") => Ok(Ctl::Remove(name_of(v)?)),
        _ => Err("\"op\" must be \"list\", \"signal\" or \"remove\"".to_owned()),
    }
}

impl Agent {
    /// SESSION_START: start the command, keep it, answer its description (DATA) and
    /// EXIT. Runs in the reader loop like EXEC (a fork and an exec), so a frame that
    /// follows it (an attach) finds the session.
    pub(crate) fn session_start(&self, s: u32, payload: &[u8]) {
        if !self.is_free(s) {
            return self.in_use(s);
        }
        let o = match agent::parse_json(payload).and_then(|v| start_opts(&v)) {
            Ok(o) => o,
            Err(m) => return self.conn.error(s, "invalid_argument", &m),
        };
        let mut table = self.sessions.lock();
        let name = match o.name {
            Some(n) if table.contains_key(&n) => {
                drop(table);
                return self.conn.error(
                    s,
                    "already_exists",
                    &format!("session \"{n}\" already exists"),
                );
            }
            Some(n) => n,
            None => (1..)
                .map(|i| format!("s{i}"))
                .find(|n| !table.contains_key(n))
                .unwrap_or_default(),
        };
        if table.len() >= MAX_SESSIONS {
            drop(table);
            return self.conn.error(
                s,
                "resource_exhausted",
                &format!("{MAX_SESSIONS} sessions exist; remove ended ones first"),
            );
        }
        let l = match agent::launch(&o.cmd) {
            Ok(l) => l,
            Err(f) => {
                drop(table);
                return self.conn.start_error(s, &f);
            }
        };
        let session = Arc::new(Session {
            name: name.clone(),
            argv: o.cmd.argv,
            tty: o.cmd.tty,
            input: o.input,
            buffer: o.buffer,
            pid: l.pid,
            started_at: now(),
            state: Mutex::new(State {
                ring: Ring::new(o.buffer),
                exit: None,
                stdin: l.stdin.map(|f| agent::spawn_stdin(f, self.conn.clone())),
                master: l.master,
                attachers: Vec::new(),
                holder: None,
            }),
            cv: Condvar::new(),
        });
        table.insert(name, session.clone());
        drop(table);

        // The ring takes the output: the pipes are always read, whoever is attached.
        let progress = Arc::new(Progress::default());
        let sink = session.clone();
        let (readers, done) =
            agent::spawn_readers(l.outputs, &progress, move |ty, b| sink.append(ty, b));
        let (waiter, status) = (session.clone(), l.status);
        std::thread::spawn(move || {
            let status = status.recv().unwrap_or(0);
            agent::drain(readers, &done, &progress);
            waiter.finish(status);
        });
        let info = session.describe(&session.lock());
        let _ = self
            .conn
            .send(frame::DATA, s, json::to_string(&info).as_bytes());
        self.conn.exit(s, 0, None);
    }

    /// SESSION_ATTACH: a DATA header, the ring from `from`, the live output with
    /// `follow`, then EXIT; on a thread of its own.
    pub(crate) fn session_attach(&self, s: u32, payload: &[u8]) {
        if !self.is_free(s) {
            return self.in_use(s);
        }
        let o = match agent::parse_json(payload).and_then(|v| attach_opts(&v)) {
            Ok(o) => o,
            Err(m) => return self.conn.error(s, "invalid_argument", &m),
        };
        // Looked up and registered under the table's lock: a remove cannot slip between.
        let table = self.sessions.lock();
        let Some(session) = table.get(&o.name).cloned() else {
            drop(table);
            return self
                .conn
                .error(s, "not_found", &format!("no session named \"{}\"", o.name));
        };
        let mut st = session.lock();
        let input = o.input
            && match session.input {
                InputMode::Shared => true,
                InputMode::Single => st.holder.is_none(),
            };
        let att = Arc::new(Attachment {
            id: NEXT_ATTACHMENT.fetch_add(1, Ordering::SeqCst),
            input,
            credit: Credit::new(o.window),
            state: AtomicU8::new(LIVE),
            sending: Mutex::new(()),
        });
        if input && session.input == InputMode::Single {
            st.holder = Some(att.id);
        }
        st.attachers.push(att.clone());
        let (start, end) = (st.ring.start, st.ring.end);
        let from = o.from.unwrap_or(start).clamp(start, end);
        let header = obj(vec![
            ("start", start.into()),
            ("from", from.into()),
            ("end", end.into()),
            ("tty", session.tty.into()),
            ("input", input.into()),
            ("running", st.exit.is_none().into()),
        ]);
        drop(st);
        drop(table);
        // Without `follow`: what the ring holds now, not what comes later.
        let until = (!o.follow).then_some(end);
        self.streams.lock().unwrap().insert(
            s,
            Entry::Attach {
                session: session.clone(),
                att: att.clone(),
            },
        );
        let (conn, streams) = (self.conn.clone(), self.streams.clone());
        std::thread::spawn(move || {
            {
                // The header goes out even if a DETACH came first (then EXIT follows it).
                let _g = att.sending.lock().unwrap_or_else(|e| e.into_inner());
                if att.state.load(Ordering::SeqCst) != SILENT {
                    let _ = conn.send(frame::DATA, s, json::to_string(&header).as_bytes());
                }
            }
            let end = attach_loop(&conn, s, &session, &att, from, until);
            forget(&mut session.lock(), &att);
            // A reconnected host's HELLO took the stream away already (and it may be
            // reused): then no EXIT.
            let ours = {
                let mut m = streams.lock().unwrap();
                let ours =
                    matches!(m.get(&s), Some(Entry::Attach { att: a, .. }) if Arc::ptr_eq(a, &att));
                if ours {
                    m.remove(&s);
                }
                ours
            };
            if let (Some(exit), true) = (end, ours) {
                let _g = att.sending.lock().unwrap_or_else(|e| e.into_inner());
                if att.state.load(Ordering::SeqCst) != SILENT {
                    conn.send_json(frame::EXIT, s, &exit);
                }
            }
        });
    }

    /// SESSION_CTL: `list`, `signal`, `remove`.
    pub(crate) fn session_ctl(&self, s: u32, payload: &[u8]) {
        if !self.is_free(s) {
            return self.in_use(s);
        }
        let op = match agent::parse_json(payload).and_then(|v| ctl_opts(&v)) {
            Ok(op) => op,
            Err(m) => return self.conn.error(s, "invalid_argument", &m),
        };
        let not_found = |n: &str| {
            self.conn
                .error(s, "not_found", &format!("no session named \"{n}\""))
        };
        match op {
            Ctl::List => {
                let mut lines = Vec::new();
                for session in self.sessions.lock().values() {
                    let line = json::to_string(&session.describe(&session.lock()));
                    lines.extend_from_slice(line.as_bytes());
                    lines.push(b'\n');
                }
                // Sent from a thread: a host slow to read must not hold the reader loop.
                let conn = self.conn.clone();
                std::thread::spawn(move || {
                    for c in lines.chunks(CHUNK) {
                        let _ = conn.send(frame::DATA, s, c);
                    }
                    let _ = conn.send(frame::DATA, s, &[]);
                    conn.exit(s, 0, None);
                });
            }
            Ctl::Signal(name, sig) => {
                let Some(session) = self.sessions.get(&name) else {
                    return not_found(&name);
                };
                let st = session.lock();
                if st.exit.is_some() {
                    drop(st);
                    return self.conn.error(
                        s,
                        "invalid_argument",
                        &format!("session \"{name}\" has ended"),
                    );
                }
                unsafe { sys::kill(-session.pid, sig) };
                drop(st);
                self.conn.exit(s, 0, None);
            }
            Ctl::Remove(name) => {
                let mut table = self.sessions.lock();
                let Some(session) = table.get(&name).cloned() else {
                    drop(table);
                    return not_found(&name);
                };
                if session.lock().exit.is_none() {
                    drop(table);
                    return self.conn.error(
                        s,
                        "invalid_argument",
                        &format!("session \"{name}\" is running; signal it first"),
                    );
                }
                table.remove(&name);
                drop(table);
                let attachers = session.lock().attachers.clone();
                for att in attachers {
                    session.detach(&att, false);
                }
                self.conn.exit(s, 0, None);
            }
        }
    }
}

/// Copy the ring to stream `s` from `cursor` (up to `until` without `follow`) under the
/// attachment's credit until it ends. Returns the EXIT payload, or `None` to end without
/// a frame (the host reconnected, or the channel failed).
fn attach_loop(
    conn: &Conn,
    s: u32,
    session: &Session,
    att: &Attachment,
    mut cursor: u64,
    until: Option<u64>,
) -> Option<Value> {
    let exit = |st: &State, cursor: u64, detached: bool| {
        let (code, signal) = Session::code(st);
        obj(vec![
            ("code", code),
            ("signal", signal),
            ("running", st.exit.is_none().into()),
            ("detached", detached.into()),
            ("end", cursor.into()),
        ])
    };
    loop {
        let pieces = {
            let mut st = session.lock();
            loop {
                match att.state.load(Ordering::SeqCst) {
                    DETACHED => return Some(exit(&st, cursor, true)),
                    SILENT => return None,
                    _ => {}
                }
                // Fell more than the ring behind: what it missed is gone.
                cursor = cursor.max(st.ring.start);
                let limit = until.map_or(st.ring.end, |u| u.min(st.ring.end));
                if cursor < limit {
                    break st.ring.read(cursor, limit, BATCH);
                }
                // Caught up: with the command's end (it has everything), or with what
                // the ring held at attach time (no `follow`).
                if st.exit.is_some() || until.is_some() {
                    return Some(exit(&st, cursor, false));
                }
                st = session.cv.wait(st).unwrap_or_else(|e| e.into_inner());
            }
        };
        'pieces: for (ty, bytes) in pieces {
            for c in bytes.chunks(CHUNK) {
                att.credit.take(c.len());
                if !att.send(conn, ty, s, c) {
                    if att.state.load(Ordering::SeqCst) != LIVE {
                        break 'pieces; // detached meanwhile: the loop's top ends it
                    }
                    return None; // the channel failed
                }
                cursor += c.len() as u64;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(r: &Ring) -> Vec<(u8, Vec<u8>)> {
        r.read(0, u64::MAX, usize::MAX)
    }

    fn bytes(pieces: &[(u8, Vec<u8>)]) -> Vec<u8> {
        pieces.iter().flat_map(|(_, b)| b.clone()).collect()
    }

    #[test]
    fn the_ring_keeps_exactly_its_last_bytes() {
        let mut r = Ring::new(10);
        r.push(frame::STDOUT, b"abcdef");
        assert_eq!((r.start, r.end), (0, 6));
        r.push(frame::STDERR, b"ghij");
        // Exactly full: nothing pushed out yet.
        assert_eq!((r.start, r.end), (0, 10));
        assert_eq!(bytes(&all(&r)), b"abcdefghij");
        // One byte more pushes exactly one out: the front piece is cut, not dropped.
        r.push(frame::STDOUT, b"k");
        assert_eq!((r.start, r.end), (1, 11));
        assert_eq!(
            all(&r),
            vec![
                (frame::STDOUT, b"bcdef".to_vec()),
                (frame::STDERR, b"ghij".to_vec()),
                (frame::STDOUT, b"k".to_vec()),
            ]
        );
        // Past the whole front piece: it is dropped.
        r.push(frame::STDERR, b"lmnop");
        assert_eq!((r.start, r.end), (6, 16));
        assert_eq!(bytes(&all(&r)), b"ghijklmnop");
        assert_eq!(r.pieces.front().unwrap().1, 6);
        // A piece larger than the ring keeps only its last bytes.
        r.push(frame::STDOUT, b"0123456789ABCDE");
        assert_eq!((r.start, r.end), (21, 31));
        assert_eq!(all(&r), vec![(frame::STDOUT, b"56789ABCDE".to_vec())]);
        assert_eq!(r.pieces.len(), 1);
    }

    #[test]
    fn reads_cut_pieces_at_the_cursor_and_skip_to_start() {
        let mut r = Ring::new(8);
        r.push(frame::STDOUT, b"0123");
        r.push(frame::STDERR, b"4567");
        r.push(frame::STDOUT, b"89");
        assert_eq!((r.start, r.end), (2, 10));
        // A cursor below start reads from start.
        assert_eq!(bytes(&r.read(0, u64::MAX, usize::MAX)), b"23456789");
        // A cursor inside a piece cuts it there; types are kept.
        assert_eq!(
            r.read(5, u64::MAX, usize::MAX),
            vec![
                (frame::STDERR, b"567".to_vec()),
                (frame::STDOUT, b"89".to_vec())
            ]
        );
        // Bounded by `to` and by `max`.
        assert_eq!(bytes(&r.read(3, 6, usize::MAX)), b"345");
        assert_eq!(bytes(&r.read(3, u64::MAX, 2)), b"34");
        // At or past the end: nothing.
        assert!(r.read(10, u64::MAX, usize::MAX).is_empty());
        assert!(r.read(99, u64::MAX, usize::MAX).is_empty());
    }

    #[test]
    fn small_pieces_of_one_type_merge() {
        let mut r = Ring::new(1 << 20);
        for _ in 0..100 {
            r.push(frame::STDOUT, b"line\n");
        }
        r.push(frame::STDERR, b"err\n");
        r.push(frame::STDOUT, b"x");
        assert_eq!(r.pieces.len(), 3);
        assert_eq!(r.end, 505);
        assert_eq!(all(&r)[1], (frame::STDERR, b"err\n".to_vec()));
    }

    #[test]
    fn names_and_requests_are_checked() {
        assert!(valid_name("s1") && valid_name("A.b-c_d") && valid_name(&"x".repeat(63)));
        for bad in ["", "-a", ".a", "_a", "a b", "a/b", "é", &"x".repeat(64)] {
            assert!(!valid_name(bad), "{bad:?}");
        }
        let ok = |t: &str| start_opts(&json::parse(t).unwrap());
        let o = ok(r#"{"argv":["sh"]}"#).ok().unwrap();
        assert_eq!(
            (o.buffer, o.name, o.input == InputMode::Single),
            (DEFAULT_BUFFER, None, true)
        );
        assert!(o.cmd.stdin && o.cmd.window.is_none());
        assert_eq!(
            ok(r#"{"argv":["sh"],"buffer":1}"#).ok().unwrap().buffer,
            MIN_BUFFER
        );
        assert_eq!(
            ok(r#"{"argv":["sh"],"buffer":1e12}"#).ok().unwrap().buffer,
            MAX_BUFFER
        );
        for bad in [
            r#"[]"#,
            r#"{"argv":[]}"#,
            r#"{"argv":["sh"],"name":"a b"}"#,
            r#"{"argv":["sh"],"name":5}"#,
            r#"{"argv":["sh"],"buffer":-1}"#,
            r#"{"argv":["sh"],"buffer":1.5}"#,
            r#"{"argv":["sh"],"buffer":"big"}"#,
            r#"{"argv":["sh"],"input":"all"}"#,
            r#"{"argv":["sh"],"tty":1}"#,
            r#"{"argv":["sh"],"rows":70000}"#,
            r#"{"argv":["sh"],"cols":-1}"#,
            r#"{"argv":["sh"],"cwd":7}"#,
            r#"{"argv":["sh"],"user":[]}"#,
            r#"{"argv":["sh"],"env":"PATH=/bin"}"#,
        ] {
            assert!(ok(bad).is_err(), "{bad}");
        }
        let at = |t: &str| attach_opts(&json::parse(t).unwrap());
        let a = at(r#"{"name":"s1"}"#).ok().unwrap();
        assert_eq!(
            (a.from, a.follow, a.input, a.window),
            (None, true, false, None)
        );
        for bad in [
            r#"{}"#,
            r#"{"name":1}"#,
            r#"{"name":"s1","from":-1}"#,
            r#"{"name":"s1","from":"0"}"#,
            r#"{"name":"s1","follow":"yes"}"#,
            r#"{"name":"s1","input":1}"#,
            r#"{"name":"s1","window":0}"#,
        ] {
            assert!(at(bad).is_err(), "{bad}");
        }
        let ctl = |t: &str| ctl_opts(&json::parse(t).unwrap());
        assert!(matches!(
            ctl(r#"{"op":"signal","name":"s1","signal":64}"#),
            Ok(Ctl::Signal(_, 64))
        ));
        for bad in [
            r#"{}"#,
            r#"{"op":"stop"}"#,
            r#"{"op":"signal","name":"s1","signal":0}"#,
            r#"{"op":"signal","name":"s1","signal":65}"#,
            r#"{"op":"signal","name":"s1"}"#,
            r#"{"op":"signal","signal":9}"#,
            r#"{"op":"remove"}"#,
        ] {
            assert!(ctl(bad).is_err(), "{bad}");
        }
    }
}
