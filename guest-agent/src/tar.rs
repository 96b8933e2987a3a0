//! Minimal tar writer/reader for COPY_IN/COPY_OUT and DIFF: regular files, directories,
//! symlinks, hard links, devices and fifos (the last three written for DIFF layers; the
//! reader skips them). ustar headers; pax `x` records for long paths, long link targets,
//! sizes >= 8 GiB, ids >= 2^21 and `SCHILY.xattr.*` (binary-safe: pax records are
//! length-prefixed). The reader also accepts GNU `L`/`K` entries.

use std::fs::{self, FileType, Metadata};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

const BLOCK: usize = 512;
/// The largest value an 8-byte (uid, gid) ustar number field holds.
const MAX_ID: u64 = 0o7777777;
/// The largest value a 12-byte (size, mtime) ustar number field holds.
const MAX_NUM: u64 = 0o77777777777;

pub const REGULAR: u8 = b'0';
pub const HARDLINK: u8 = b'1';
pub const SYMLINK: u8 = b'2';
pub const CHAR: u8 = b'3';
pub const BLOCKDEV: u8 = b'4';
pub const DIR: u8 = b'5';
pub const FIFO: u8 = b'6';

fn octal(field: &mut [u8], v: u64) {
    let w = field.len() - 1;
    let s = format!("{:0width$o}", v, width = w);
    field[..w].copy_from_slice(&s.as_bytes()[s.len() - w..]);
    field[w] = 0;
}

/// One pax record, `"<len> <key>=<value>\n"`, `len` counting the whole record.
fn pax_record(key: &[u8], value: &[u8]) -> Vec<u8> {
    let body = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = body + 1;
    loop {
        let total = len.to_string().len() + body;
        if total == len {
            break;
        }
        len = total;
    }
    let mut r = Vec::with_capacity(len);
    r.extend_from_slice(len.to_string().as_bytes());
    r.push(b' ');
    r.extend_from_slice(key);
    r.push(b'=');
    r.extend_from_slice(value);
    r.push(b'\n');
    r
}

pub struct Writer<W: Write> {
    out: W,
}

/// One archive entry's header. Names and link targets are bytes (a file name need not
/// be UTF-8); `xattrs` are `(name, value)` pairs written as `SCHILY.xattr.<name>`.
#[derive(Clone, Copy, Default)]
pub struct Header<'a> {
    pub name: &'a [u8],
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub mtime: u64,
    pub kind: u8,
    pub link: &'a [u8],
    /// (major, minor) of a character or block device.
    pub dev: (u32, u32),
    pub xattrs: &'a [(Vec<u8>, Vec<u8>)],
}

impl<'a> Header<'a> {
    /// The header of the entry `name` that `md` (an `lstat`) describes: its type, mode,
    /// owner, mtime (whole seconds), a regular file's size, a device's numbers. The
    /// caller adds a symlink's target and xattrs, and a directory name's trailing `/`.
    /// `None` for a socket (meaningless in an archive).
    pub fn of(name: &'a [u8], md: &Metadata) -> Option<Header<'a>> {
        let kind = kind_of(md.file_type())?;
        Some(Header {
            name,
            mode: md.mode(),
            uid: md.uid(),
            gid: md.gid(),
            size: if kind == REGULAR { md.len() } else { 0 },
            mtime: md.mtime().max(0) as u64,
            kind,
            dev: if matches!(kind, CHAR | BLOCKDEV) {
                (dev_major(md.rdev()), dev_minor(md.rdev()))
            } else {
                (0, 0)
            },
            ..Header::default()
        })
    }
}

/// The tar type of a file type; `None` for a socket.
fn kind_of(ft: FileType) -> Option<u8> {
    if ft.is_file() {
        Some(REGULAR)
    } else if ft.is_dir() {
        Some(DIR)
    } else if ft.is_symlink() {
        Some(SYMLINK)
    } else if ft.is_char_device() {
        Some(CHAR)
    } else if ft.is_block_device() {
        Some(BLOCKDEV)
    } else if ft.is_fifo() {
        Some(FIFO)
    } else {
        None
    }
}

/// glibc's `gnu_dev_major`/`gnu_dev_minor`.
fn dev_major(rdev: u64) -> u32 {
    (((rdev >> 8) & 0xfff) | ((rdev >> 32) & !0xfff)) as u32
}

fn dev_minor(rdev: u64) -> u32 {
    ((rdev & 0xff) | ((rdev >> 12) & !0xff)) as u32
}

impl<W: Write> Writer<W> {
    pub fn new(out: W) -> Self {
        Writer { out }
    }

    fn raw_header(&mut self, e: &Header) -> io::Result<()> {
        let mut h = [0u8; BLOCK];
        let name = e.name;
        h[..name.len().min(100)].copy_from_slice(&name[..name.len().min(100)]);
        octal(&mut h[100..108], e.mode as u64 & 0o7777);
        octal(&mut h[108..116], e.uid as u64 & MAX_ID);
        octal(&mut h[116..124], e.gid as u64 & MAX_ID);
        octal(&mut h[124..136], e.size.min(MAX_NUM));
        octal(&mut h[136..148], e.mtime.min(MAX_NUM));
        h[156] = e.kind;
        let link = e.link;
        h[157..157 + link.len().min(100)].copy_from_slice(&link[..link.len().min(100)]);
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        if matches!(e.kind, CHAR | BLOCKDEV) {
            octal(&mut h[329..337], e.dev.0 as u64 & MAX_ID);
            octal(&mut h[337..345], e.dev.1 as u64 & MAX_ID);
        }
        h[148..156].fill(b' ');
        let sum: u32 = h.iter().map(|b| *b as u32).sum();
        let s = format!("{sum:06o}\0 ");
        h[148..156].copy_from_slice(s.as_bytes());
        self.out.write_all(&h)
    }

    /// Write the header of `e`, preceded by a pax header when a value does not fit
    /// ustar or there are xattrs. The caller writes the entry's data (`e.size` bytes)
    /// and its padding; `entry` and `file` do both.
    fn header(&mut self, e: &Header) -> io::Result<()> {
        let mut pax = Vec::new();
        if e.name.len() > 100 {
            pax.extend(pax_record(b"path", e.name));
        }
        if e.link.len() > 100 {
            pax.extend(pax_record(b"linkpath", e.link));
        }
        if e.size > MAX_NUM {
            pax.extend(pax_record(b"size", e.size.to_string().as_bytes()));
        }
        if e.uid as u64 > MAX_ID {
            pax.extend(pax_record(b"uid", e.uid.to_string().as_bytes()));
        }
        if e.gid as u64 > MAX_ID {
            pax.extend(pax_record(b"gid", e.gid.to_string().as_bytes()));
        }
        for (k, v) in e.xattrs {
            pax.extend(pax_record(&[b"SCHILY.xattr.", &k[..]].concat(), v));
        }
        if !pax.is_empty() {
            self.raw_header(&Header {
                name: b"PaxHeader",
                mode: 0o644,
                size: pax.len() as u64,
                mtime: e.mtime,
                kind: b'x',
                ..Header::default()
            })?;
            self.data(&pax)?;
        }
        self.raw_header(e)
    }

    fn data(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.pad(bytes.len() as u64)
    }

    fn pad(&mut self, len: u64) -> io::Result<()> {
        let rem = (len % BLOCK as u64) as usize;
        if rem != 0 {
            self.out.write_all(&[0u8; BLOCK][..BLOCK - rem])?;
        }
        Ok(())
    }

    /// An entry without data: a directory, symlink, hard link, device, fifo, or an
    /// empty file (`e.size` must be 0).
    pub fn entry(&mut self, e: &Header) -> io::Result<()> {
        debug_assert_eq!(e.size, 0);
        self.header(e)
    }

    /// A regular file: the header, then exactly `e.size` bytes of `data` (zeros if it
    /// ends early: the file shrank while being read, and the archive must stay valid).
    pub fn file(&mut self, e: &Header, data: &mut impl Read) -> io::Result<()> {
        self.header(e)?;
        let copied = io::copy(&mut data.take(e.size), &mut self.out)?;
        if copied < e.size {
            io::copy(&mut io::repeat(0).take(e.size - copied), &mut self.out)?;
        }
        self.pad(e.size)
    }

    /// Append `path` (recursively) under the archive name `name` (bytes: a file name
    /// need not be UTF-8). Symlinks are stored, not followed; sockets, fifos and devices
    /// are skipped.
    pub fn append_path(&mut self, path: &Path, name: &[u8]) -> io::Result<()> {
        let md = fs::symlink_metadata(path)?;
        let Some(h) = Header::of(name, &md) else {
            return Ok(());
        };
        match h.kind {
            DIR => {
                let end = name.iter().rposition(|b| *b != b'/').map_or(0, |i| i + 1);
                let dname = [&name[..end], b"/"].concat();
                self.entry(&Header { name: &dname, ..h })?;
                let mut children: Vec<_> = fs::read_dir(path)?.collect::<Result<_, _>>()?;
                children.sort_by_key(|c| c.file_name());
                for c in children {
                    let cname = [&dname[..], c.file_name().as_bytes()].concat();
                    self.append_path(&c.path(), &cname)?;
                }
                Ok(())
            }
            SYMLINK => {
                let target = fs::read_link(path)?;
                self.entry(&Header {
                    link: target.as_os_str().as_bytes(),
                    ..h
                })
            }
            REGULAR => self.file(&h, &mut fs::File::open(path)?),
            _ => Ok(()),
        }
    }

    pub fn finish(mut self) -> io::Result<W> {
        self.out.write_all(&[0u8; BLOCK * 2])?;
        self.out.flush()?;
        Ok(self.out)
    }
}

fn parse_octal(field: &[u8]) -> io::Result<u64> {
    if field.first().is_some_and(|b| b & 0x80 != 0) {
        // GNU base-256
        let mut v: u64 = (field[0] & 0x7f) as u64;
        for b in &field[1..] {
            v = v
                .checked_mul(256)
                .and_then(|v| v.checked_add(*b as u64))
                .ok_or_else(|| bad("number overflow"))?;
        }
        return Ok(v);
    }
    let s: String = field
        .iter()
        .take_while(|b| **b != 0)
        .map(|b| *b as char)
        .collect();
    let s = s.trim();
    if s.is_empty() {
        return Ok(0);
    }
    u64::from_str_radix(s, 8).map_err(|_| bad("bad octal field"))
}

fn bad(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("tar: {msg}"))
}

fn cstring_field(f: &[u8]) -> String {
    let end = f.iter().position(|b| *b == 0).unwrap_or(f.len());
    String::from_utf8_lossy(&f[..end]).into_owned()
}

/// A relative path that stays inside the destination (no `..`, no root).
fn sanitize(name: &str) -> io::Result<PathBuf> {
    let mut out = PathBuf::new();
    for c in Path::new(name).components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir | Component::Prefix(_) => {
                return Err(bad(&format!("entry {name:?} escapes the destination")))
            }
        }
    }
    Ok(out)
}

fn read_block<R: Read>(r: &mut R, buf: &mut [u8; BLOCK]) -> io::Result<bool> {
    let mut got = 0;
    while got < BLOCK {
        let n = r.read(&mut buf[got..])?;
        if n == 0 {
            if got == 0 {
                return Ok(false);
            }
            return Err(bad("truncated archive"));
        }
        got += n;
    }
    Ok(true)
}

fn read_data<R: Read>(r: &mut R, size: u64) -> io::Result<Vec<u8>> {
    if size > 16 << 20 {
        return Err(bad("metadata entry too large"));
    }
    let mut v = vec![0u8; size as usize];
    r.read_exact(&mut v)?;
    skip(r, pad_len(size))?;
    Ok(v)
}

fn pad_len(size: u64) -> u64 {
    (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64
}

fn skip<R: Read>(r: &mut R, n: u64) -> io::Result<()> {
    let copied = io::copy(&mut r.take(n), &mut io::sink())?;
    if copied < n {
        return Err(bad("truncated archive"));
    }
    Ok(())
}

/// Extract an archive into `dest` (created if missing). Returns the number of entries.
pub fn extract<R: Read>(mut r: R, dest: &Path) -> io::Result<usize> {
    fs::create_dir_all(dest)?;
    let is_root = unsafe { crate::sys::geteuid() } == 0;
    let mut block = [0u8; BLOCK];
    let (mut long_name, mut long_link, mut pax_size): (
        Option<String>,
        Option<String>,
        Option<u64>,
    ) = (None, None, None);
    let mut count = 0;
    let mut dirs: Vec<(PathBuf, u32, u64)> = Vec::new();
    loop {
        if !read_block(&mut r, &mut block)? || block.iter().all(|b| *b == 0) {
            break;
        }
        let stored: u32 = block[148..156]
            .iter()
            .take_while(|b| **b != 0 && **b != b' ')
            .fold(0, |a, b| a * 8 + (b.wrapping_sub(b'0') as u32 & 7));
        let mut sum: u32 = block.iter().map(|b| *b as u32).sum();
        sum = sum - block[148..156].iter().map(|b| *b as u32).sum::<u32>() + 8 * b' ' as u32;
        if stored != sum {
            return Err(bad("header checksum mismatch"));
        }
        let kind = block[156];
        let mut size = parse_octal(&block[124..136])?;
        if let Some(s) = pax_size.take() {
            size = s;
        }
        if size > 1 << 50 {
            return Err(bad("entry size out of range"));
        }
        match kind {
            b'x' => {
                let data = read_data(&mut r, size)?;
                // Records are "<len> <key>=<value>\n", len counting the whole record. Work
                // on bytes: hostile input must give an error, never a bad slice (a panic
                // in PID 1 is a kernel panic).
                let mut rest: &[u8] = &data;
                while let Some(sp) = rest.iter().position(|b| *b == b' ') {
                    let len =
                        std::str::from_utf8(&rest[..sp]).map_err(|_| bad("bad pax record"))?;
                    let n: usize = len.parse().map_err(|_| bad("bad pax record"))?;
                    if n > rest.len() || n < sp + 2 {
                        return Err(bad("bad pax record"));
                    }
                    let rec = String::from_utf8_lossy(&rest[sp + 1..n - 1]).into_owned();
                    if let Some((k, v)) = rec.split_once('=') {
                        match k {
                            "path" => long_name = Some(v.to_owned()),
                            "linkpath" => long_link = Some(v.to_owned()),
                            "size" => pax_size = Some(v.parse().map_err(|_| bad("bad pax size"))?),
                            _ => {}
                        }
                    }
                    rest = &rest[n..];
                }
                continue;
            }
            b'g' => {
                skip(&mut r, size + pad_len(size))?;
                continue;
            }
            b'L' | b'K' => {
                let data = read_data(&mut r, size)?;
                let s = cstring_field(&data);
                if kind == b'L' {
                    long_name = Some(s)
                } else {
                    long_link = Some(s)
                }
                continue;
            }
            _ => {}
        }
        let mut name = cstring_field(&block[0..100]);
        if &block[257..262] == b"ustar" && block[263] == b'0' {
            let prefix = cstring_field(&block[345..500]);
            if !prefix.is_empty() {
                name = format!("{prefix}/{name}");
            }
        }
        let name = long_name.take().unwrap_or(name);
        let link = long_link
            .take()
            .unwrap_or_else(|| cstring_field(&block[157..257]));
        let mode = parse_octal(&block[100..108])? as u32 & 0o7777;
        let uid = parse_octal(&block[108..116])? as u32;
        let gid = parse_octal(&block[116..124])? as u32;
        // Clamped: a hostile mtime must not overflow the time arithmetic (a panic in PID 1).
        let mtime = parse_octal(&block[136..148])?.min(1 << 40);
        let rel = sanitize(&name)?;
        let target = dest.join(&rel);
        count += 1;
        if rel.as_os_str().is_empty() {
            skip(&mut r, size + pad_len(size))?;
            continue;
        }
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent)?;
        }
        let remove_existing = |t: &Path| {
            if let Ok(m) = fs::symlink_metadata(t) {
                if !m.is_dir() {
                    let _ = fs::remove_file(t);
                }
            }
        };
        match kind {
            b'5' => {
                if !fs::symlink_metadata(&target).is_ok_and(|m| m.is_dir()) {
                    remove_existing(&target);
                    fs::create_dir(&target)?;
                }
                if is_root {
                    let _ = std::os::unix::fs::chown(&target, Some(uid), Some(gid));
                }
                dirs.push((target, mode, mtime));
                skip(&mut r, size + pad_len(size))?;
            }
            b'2' => {
                remove_existing(&target);
                std::os::unix::fs::symlink(&link, &target)?;
                if is_root {
                    let _ = std::os::unix::fs::lchown(&target, Some(uid), Some(gid));
                }
                let _ = crate::sys::set_times_nofollow(&target, mtime as i64);
                skip(&mut r, size + pad_len(size))?;
            }
            b'1' => {
                remove_existing(&target);
                fs::hard_link(dest.join(sanitize(&link)?), &target)?;
                skip(&mut r, size + pad_len(size))?;
            }
            b'0' | 0 | b'7' => {
                remove_existing(&target);
                let mut f = fs::File::create(&target)?;
                let copied = io::copy(&mut (&mut r).take(size), &mut f)?;
                if copied < size {
                    return Err(bad("truncated archive"));
                }
                skip(&mut r, pad_len(size))?;
                if is_root {
                    let _ = std::os::unix::fs::chown(&target, Some(uid), Some(gid));
                }
                f.set_permissions(fs::Permissions::from_mode(mode))?;
                if let Some(t) = UNIX_EPOCH.checked_add(Duration::from_secs(mtime)) {
                    let _ = f.set_modified(t);
                }
            }
            _ => skip(&mut r, size + pad_len(size))?, // devices, fifos: skipped
        }
    }
    // Directory modes last, deepest first, so read-only dirs do not block their own contents.
    for (d, mode, mtime) in dirs.into_iter().rev() {
        let _ = fs::set_permissions(&d, fs::Permissions::from_mode(mode));
        if let Ok(f) = fs::File::open(&d) {
            if let Some(t) = UNIX_EPOCH.checked_add(Duration::from_secs(mtime)) {
                let _ = f.set_modified(t);
            }
        }
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tempdir::TempDir;

    fn tmp(name: &str) -> TempDir {
        TempDir::new(&format!("tar-{name}"))
    }

    /// The pax records of the `x` header that starts `archive`, as (key, value).
    fn pax_of(archive: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        assert_eq!(archive[156], b'x');
        let size = parse_octal(&archive[124..136]).unwrap() as usize;
        let mut rest = &archive[BLOCK..BLOCK + size];
        let mut out = Vec::new();
        while !rest.is_empty() {
            let sp = rest.iter().position(|b| *b == b' ').unwrap();
            let n: usize = std::str::from_utf8(&rest[..sp]).unwrap().parse().unwrap();
            let rec = &rest[sp + 1..n - 1];
            let eq = rec.iter().position(|b| *b == b'=').unwrap();
            out.push((rec[..eq].to_vec(), rec[eq + 1..].to_vec()));
            rest = &rest[n..];
        }
        out
    }

    #[test]
    fn round_trip_files_dirs_symlinks_long_names() {
        let src = tmp("src");
        let root = src.join("tree");
        let long_dir = root.join("d".repeat(80)).join("e".repeat(80));
        fs::create_dir_all(&long_dir).unwrap();
        fs::write(root.join("a.txt"), b"hello\n").unwrap();
        fs::set_permissions(root.join("a.txt"), fs::Permissions::from_mode(0o750)).unwrap();
        let big: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
        fs::write(long_dir.join("big.bin"), &big).unwrap();
        fs::write(root.join("empty"), b"").unwrap();
        let long_target = format!("{}/x", "t".repeat(150));
        std::os::unix::fs::symlink("a.txt", root.join("link")).unwrap();
        std::os::unix::fs::symlink(&long_target, root.join("longlink")).unwrap();
        // A symlink's own mtime travels too (set without following it).
        crate::sys::set_times_nofollow(&root.join("link"), 1_000_000_000).unwrap();

        let mut w = Writer::new(Vec::new());
        w.append_path(&root, b"tree").unwrap();
        let archive = w.finish().unwrap();
        assert_eq!(archive.len() % BLOCK, 0);

        let dst = tmp("dst");
        let n = extract(&archive[..], &dst).unwrap();
        assert_eq!(n, 8);
        let out = dst.join("tree");
        assert_eq!(fs::read(out.join("a.txt")).unwrap(), b"hello\n");
        assert_eq!(
            fs::metadata(out.join("a.txt")).unwrap().mode() & 0o777,
            0o750
        );
        assert_eq!(
            fs::read(
                out.join("d".repeat(80))
                    .join("e".repeat(80))
                    .join("big.bin")
            )
            .unwrap(),
            big
        );
        assert_eq!(fs::read(out.join("empty")).unwrap(), b"");
        assert_eq!(fs::read_link(out.join("link")).unwrap(), Path::new("a.txt"));
        assert_eq!(
            fs::symlink_metadata(out.join("link")).unwrap().mtime(),
            1_000_000_000
        );
        assert_eq!(
            fs::read_link(out.join("longlink")).unwrap(),
            Path::new(&long_target)
        );
    }

    #[test]
    fn rejects_escaping_entries() {
        let mut w = Writer::new(Vec::new());
        w.header(&Header {
            name: b"../evil",
            mode: 0o644,
            kind: REGULAR,
            ..Header::default()
        })
        .unwrap();
        let archive = w.finish().unwrap();
        let dst = tmp("evil");
        assert!(extract(&archive[..], &dst)
            .unwrap_err()
            .to_string()
            .contains("escapes"));
    }

    #[test]
    fn hostile_headers_give_errors_not_panics() {
        let dst = tmp("hostile");
        // pax records with lengths that point before their own key, past the end, or
        // split a UTF-8 character; a huge mtime and size in base-256.
        for pax in [
            &b"2 x"[..],
            b"1 =\n",
            b"99 path=x\n",
            b"7 p=\xc3\xa9\n",
            b"0 \n",
        ] {
            let mut w = Writer::new(Vec::new());
            w.raw_header(&Header {
                name: b"PaxHeader",
                mode: 0o644,
                size: pax.len() as u64,
                kind: b'x',
                ..Header::default()
            })
            .unwrap();
            w.data(pax).unwrap();
            let archive = w.finish().unwrap();
            let _ = extract(&archive[..], &dst);
        }
        let mut w = Writer::new(Vec::new());
        w.raw_header(&Header {
            name: b"f",
            mode: 0o644,
            kind: REGULAR,
            ..Header::default()
        })
        .unwrap();
        let mut archive = w.finish().unwrap();
        archive[136..148].copy_from_slice(&[0xff; 12]); // base-256 mtime
        archive[124..136].copy_from_slice(&[0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        let sum: u32 = archive[..512]
            .iter()
            .enumerate()
            .map(|(i, b)| {
                if (148..156).contains(&i) {
                    b' ' as u32
                } else {
                    *b as u32
                }
            })
            .sum();
        archive[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        let _ = extract(&archive[..], &dst);
        archive[124..136].copy_from_slice(&[0xff; 12]); // base-256 size overflow
        let _ = extract(&archive[..], &dst);
    }

    #[test]
    fn pax_record_length_is_self_consistent() {
        for n in [0, 1, 5, 90, 95, 96, 995, 996, 997] {
            let r = pax_record(b"path", "x".repeat(n).as_bytes());
            let len = std::str::from_utf8(r.split(|b| *b == b' ').next().unwrap()).unwrap();
            assert_eq!(r.len().to_string(), len, "value of {n} bytes");
        }
    }

    #[test]
    fn big_ids_get_pax_records() {
        let big = 1u32 << 22;
        let mut w = Writer::new(Vec::new());
        w.entry(&Header {
            name: b"f",
            mode: 0o644,
            uid: big,
            gid: big + 1,
            kind: REGULAR,
            ..Header::default()
        })
        .unwrap();
        let archive = w.finish().unwrap();
        assert_eq!(
            pax_of(&archive),
            [
                (b"uid".to_vec(), big.to_string().into_bytes()),
                (b"gid".to_vec(), (big + 1).to_string().into_bytes()),
            ]
        );
        // The ustar fields keep what fits (the low bits); the pax records win.
        let h = &archive[2 * BLOCK..3 * BLOCK];
        assert_eq!(&h[..2], b"f\0");
        assert_eq!(parse_octal(&h[108..116]).unwrap(), big as u64 & MAX_ID);
        // Ids that fit need no pax header.
        let mut w = Writer::new(Vec::new());
        w.entry(&Header {
            name: b"f",
            uid: MAX_ID as u32,
            kind: REGULAR,
            ..Header::default()
        })
        .unwrap();
        assert_eq!(w.finish().unwrap()[156], REGULAR);
    }

    #[test]
    fn a_file_that_shrank_is_zero_filled() {
        // The header promises 1000 bytes (the size `lstat` saw); only 600 are left.
        let mut w = Writer::new(Vec::new());
        let data = vec![7u8; 600];
        w.file(
            &Header {
                name: b"shrunk",
                mode: 0o644,
                size: 1000,
                kind: REGULAR,
                ..Header::default()
            },
            &mut &data[..],
        )
        .unwrap();
        w.entry(&Header {
            name: b"next",
            mode: 0o644,
            kind: REGULAR,
            ..Header::default()
        })
        .unwrap();
        let archive = w.finish().unwrap();
        assert_eq!(archive.len(), BLOCK + 1024 + BLOCK + 2 * BLOCK);
        let body = &archive[BLOCK..BLOCK + 1024];
        assert!(body[..600].iter().all(|b| *b == 7));
        assert!(body[600..].iter().all(|b| *b == 0));
        // The archive stays valid: the next entry is where the header said.
        assert_eq!(&archive[BLOCK + 1024..BLOCK + 1029], b"next\0");
        let dst = tmp("shrunk");
        assert_eq!(extract(&archive[..], &dst).unwrap(), 2);
        let got = fs::read(dst.join("shrunk")).unwrap();
        assert_eq!((got.len(), &got[..600]), (1000, &data[..]));
    }

    #[test]
    fn names_are_bytes() {
        use std::ffi::OsStr;
        let src = tmp("bytes");
        let odd = OsStr::from_bytes(b"caf\xe9");
        fs::create_dir_all(src.join("d")).unwrap();
        fs::write(src.join("d").join(odd), b"x").unwrap();
        std::os::unix::fs::symlink(odd, src.join("d/l")).unwrap();
        let mut w = Writer::new(Vec::new());
        w.append_path(&src.join("d"), b"d").unwrap();
        let archive = w.finish().unwrap();
        let names: Vec<&[u8]> = archive
            .chunks(BLOCK)
            .filter(|h| &h[257..263] == b"ustar\0")
            .map(|h| &h[..h.iter().position(|b| *b == 0).unwrap()])
            .collect();
        assert_eq!(names, [&b"d/"[..], b"d/caf\xe9", b"d/l"]);
        let l = archive
            .chunks(BLOCK)
            .find(|h| h.starts_with(b"d/l\0"))
            .unwrap();
        assert_eq!(&l[157..162], b"caf\xe9\0");
    }

    #[test]
    fn header_of_metadata() {
        let dir = tmp("of");
        fs::write(dir.join("f"), b"12345").unwrap();
        fs::set_permissions(dir.join("f"), fs::Permissions::from_mode(0o4755)).unwrap();
        let md = fs::symlink_metadata(dir.join("f")).unwrap();
        let h = Header::of(b"f", &md).unwrap();
        assert_eq!(
            (h.kind, h.mode & 0o7777, h.size, h.uid, h.mtime),
            (REGULAR, 0o4755, 5, md.uid(), md.mtime() as u64)
        );
        let h = Header::of(b"d", &fs::symlink_metadata(&*dir).unwrap()).unwrap();
        assert_eq!((h.kind, h.size), (DIR, 0), "a directory has no data");
        let sock = std::os::unix::net::UnixListener::bind(dir.join("s")).unwrap();
        assert!(Header::of(b"s", &fs::symlink_metadata(dir.join("s")).unwrap()).is_none());
        drop(sock);
        let null = fs::symlink_metadata("/dev/null").unwrap();
        let h = Header::of(b"null", &null).unwrap();
        assert_eq!((h.kind, h.dev, h.size), (CHAR, (1, 3), 0));
    }

    #[test]
    fn device_numbers() {
        // glibc's makedev.
        let makedev = |ma: u64, mi: u64| {
            ((ma & 0xfff) << 8) | ((ma & !0xfff) << 32) | (mi & 0xff) | ((mi & !0xff) << 12)
        };
        for (ma, mi) in [(0, 0), (1, 3), (8, 1), (259, 70000), (4096, 1 << 20)] {
            let rdev = makedev(ma, mi);
            assert_eq!((dev_major(rdev), dev_minor(rdev)), (ma as u32, mi as u32));
        }
        assert_eq!(makedev(8, 1), 0x801);
    }
}
