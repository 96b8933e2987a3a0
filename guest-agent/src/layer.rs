//! DIFF (PROTOCOL.md §4): the overlay's upper directory, everything the guest changed
//! since boot, as an OCI image layer tar (whiteouts `.wh.<name>`, opaque directories
//! `.wh..wh..opq`). Computed in the guest from the upper directory alone, so the host
//! never diffs whole trees.

use crate::{sys, tar};
use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::fs::{self, File, Metadata};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The overlay's upper directory, opened before the root switch: afterwards it is
/// outside the root, and no path names it. Kept open (close-on-exec) for the life of
/// the process; systemd mode's agent inherits it through fork.
static UPPER: OnceLock<File> = OnceLock::new();

const WHITEOUT_PREFIX: &[u8] = b".wh.";
const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";

/// Keep `dir` (the opened upper directory) for DIFF. Only the first call counts.
pub fn keep_upper(dir: File) {
    let _ = UPPER.set(dir);
}

/// A path to the kept upper directory: `/proc/self/fd/<n>`, a magic link that resolves
/// to the directory itself even outside the chroot. `None` when none was kept.
pub fn upper_root() -> Option<PathBuf> {
    UPPER
        .get()
        .map(|f| PathBuf::from(format!("/proc/self/fd/{}", f.as_raw_fd())))
}

/// What the walk needs to know about an upper entry beyond `lstat`. The real overlay
/// answers from the filesystem; tests feed their own answers on a plain directory.
pub trait Inspect {
    /// Whether the entry at `path` is an overlay whiteout.
    fn is_whiteout(&self, path: &Path, md: &Metadata) -> bool;
    /// The entry's extended attributes (a symlink's own), as (name, value).
    fn xattrs(&self, path: &Path) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>>;
}

/// The overlayfs upper directory: a whiteout is a character device 0/0, xattrs are read
/// with `llistxattr`/`lgetxattr`.
pub struct Overlay;

impl Inspect for Overlay {
    fn is_whiteout(&self, _path: &Path, md: &Metadata) -> bool {
        md.file_type().is_char_device() && md.rdev() == 0
    }

    fn xattrs(&self, path: &Path) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        sys::xattrs(path)
    }
}

/// Paths (relative to the root) left out of the layer with everything below them.
#[derive(Debug, Default)]
pub struct Exclude(HashSet<Vec<u8>>);

impl Exclude {
    /// Normalize `etc/hosts`, `/etc/hosts`, `./etc//hosts/` alike; `..` and a path that
    /// names the root are refused.
    pub fn parse(paths: &[String]) -> Result<Exclude, String> {
        let mut set = HashSet::new();
        for p in paths {
            let mut parts = Vec::new();
            for c in p.split('/') {
                match c {
                    "" | "." => {}
                    ".." => return Err(format!("exclude path \"{p}\" must not contain \"..\"")),
                    c => parts.push(c),
                }
            }
            if parts.is_empty() {
                return Err(format!("exclude path \"{p}\" names the root"));
            }
            set.insert(parts.join("/").into_bytes());
        }
        Ok(Exclude(set))
    }
}

/// What an entry's extended attributes mean for the layer.
#[derive(Debug, Default, PartialEq, Eq)]
struct Attrs {
    /// `overlay.opaque` is `y`: the directory hides everything below it in the lower.
    opaque: bool,
    /// Carried as `SCHILY.xattr.<name>` pax records, sorted by name.
    keep: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Sort the xattrs of the entry `rel`: overlay's own (`trusted.overlay.*`, or
/// `user.overlay.*` with `userxattr`) are never carried; `redirect` and `metacopy`
/// cannot be expressed in a layer (ERROR `unsupported`); `security.capability` and
/// `user.*` are kept; everything else (`security.selinux`, ACLs, other `trusted.*`)
/// is dropped.
fn classify(rel: &[u8], xattrs: Vec<(Vec<u8>, Vec<u8>)>) -> io::Result<Attrs> {
    let mut a = Attrs::default();
    for (name, value) in xattrs {
        let overlay = name
            .strip_prefix(b"trusted.overlay.")
            .or_else(|| name.strip_prefix(b"user.overlay."));
        match overlay {
            Some(b"redirect" | b"metacopy") => {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    format!(
                        "\"{}\" has the overlay attribute {} (a renamed directory or a \
                         metadata-only copy-up), which an OCI layer cannot express",
                        show(rel),
                        String::from_utf8_lossy(&name)
                    ),
                ))
            }
            Some(b"opaque") => a.opaque |= value == b"y",
            Some(_) => {}
            None if name == b"security.capability" || name.starts_with(b"user.") => {
                a.keep.push((name, value))
            }
            None => {}
        }
    }
    a.keep.sort();
    Ok(a)
}

fn show(rel: &[u8]) -> String {
    String::from_utf8_lossy(rel).into_owned()
}

fn at(rel: &[u8], e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("\"{}\": {e}", show(rel)))
}

fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    if dir.is_empty() {
        name.to_vec()
    } else {
        [dir, b"/", name].concat()
    }
}

fn mtime(md: &Metadata) -> u64 {
    md.mtime().max(0) as u64
}

/// The children of directory `path` (whose relative path is `rel`), sorted by name.
fn children(path: &Path, rel: &[u8]) -> io::Result<Vec<Vec<u8>>> {
    let mut names = Vec::new();
    for e in fs::read_dir(path)? {
        names.push(e?.file_name().as_bytes().to_vec());
    }
    names.sort();
    Ok(names.into_iter().map(|n| join(rel, &n)).collect())
}

/// `<dir>/.wh.<name>` for the whiteout `rel`: an empty file, mode 0, owned by 0:0.
fn write_whiteout<W: Write>(w: &mut tar::Writer<W>, rel: &[u8], md: &Metadata) -> io::Result<()> {
    let (dir, name) = match rel.iter().rposition(|b| *b == b'/') {
        Some(i) => (&rel[..i], &rel[i + 1..]),
        None => (&b""[..], rel),
    };
    let marker = join(dir, &[WHITEOUT_PREFIX, name].concat());
    w.entry(&tar::Header {
        name: &marker,
        kind: tar::REGULAR,
        mtime: mtime(md),
        ..tar::Header::default()
    })
}

/// Write the layer of the upper directory `root` to `w` (its entries; the caller
/// finishes the archive). Pre-order, children sorted by their on-disk name (bytes), so
/// the same tree gives the same archive. The walk keeps its own stack: no recursion
/// depth limit (a stack overflow in PID 1 is a kernel panic).
pub fn write<W: Write>(
    root: &Path,
    exclude: &Exclude,
    inspect: &dyn Inspect,
    w: &mut tar::Writer<W>,
) -> io::Result<()> {
    // First path written for each (dev, inode) with more than one link.
    let mut links: HashMap<(u64, u64), Vec<u8>> = HashMap::new();
    let mut pending = children(root, b"")?;
    pending.reverse();
    while let Some(rel) = pending.pop() {
        if exclude.0.contains(&rel) {
            continue;
        }
        let path = root.join(OsStr::from_bytes(&rel));
        let md = match fs::symlink_metadata(&path) {
            Ok(md) => md,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue, // gone meanwhile
            Err(e) => return Err(at(&rel, e)),
        };
        if inspect.is_whiteout(&path, &md) {
            write_whiteout(w, &rel, &md)?;
            continue;
        }
        let attrs = classify(&rel, inspect.xattrs(&path).map_err(|e| at(&rel, e))?)?;
        let ft = md.file_type();
        let base = tar::Header {
            name: &rel,
            mode: md.mode(),
            uid: md.uid(),
            gid: md.gid(),
            mtime: mtime(&md),
            xattrs: &attrs.keep,
            ..tar::Header::default()
        };
        if ft.is_dir() {
            let name = [&rel[..], b"/"].concat();
            w.entry(&tar::Header {
                name: &name,
                kind: tar::DIR,
                ..base
            })?;
            if attrs.opaque {
                w.entry(&tar::Header {
                    name: &join(&rel, OPAQUE_MARKER),
                    kind: tar::REGULAR,
                    mtime: base.mtime,
                    ..tar::Header::default()
                })?;
            }
            let mut below = children(&path, &rel).map_err(|e| at(&rel, e))?;
            below.reverse();
            pending.extend(below);
            continue;
        }
        let kind = if ft.is_file() {
            tar::REGULAR
        } else if ft.is_symlink() {
            tar::SYMLINK
        } else if ft.is_char_device() {
            tar::CHAR
        } else if ft.is_block_device() {
            tar::BLOCKDEV
        } else if ft.is_fifo() {
            tar::FIFO
        } else {
            continue; // a socket: meaningless in an image
        };
        if md.nlink() > 1 {
            match links.entry((md.dev(), md.ino())) {
                Entry::Occupied(first) => {
                    w.entry(&tar::Header {
                        kind: tar::HARDLINK,
                        link: first.get(),
                        xattrs: &[],
                        ..base
                    })?;
                    continue;
                }
                Entry::Vacant(v) => {
                    v.insert(rel.clone());
                }
            }
        }
        match kind {
            tar::REGULAR => {
                let mut f = match fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(sys::O_NOFOLLOW)
                    .open(&path)
                {
                    Ok(f) => f,
                    Err(e) => return Err(at(&rel, e)),
                };
                w.file(
                    &tar::Header {
                        kind,
                        size: md.len(),
                        ..base
                    },
                    &mut f,
                )?;
            }
            tar::SYMLINK => {
                let target = fs::read_link(&path).map_err(|e| at(&rel, e))?;
                w.entry(&tar::Header {
                    kind,
                    link: target.as_os_str().as_bytes(),
                    ..base
                })?;
            }
            _ => {
                let rdev = md.rdev();
                w.entry(&tar::Header {
                    kind,
                    dev: (dev_major(rdev), dev_minor(rdev)),
                    ..base
                })?;
            }
        }
    }
    Ok(())
}

/// glibc's `gnu_dev_major`/`gnu_dev_minor`.
fn dev_major(rdev: u64) -> u32 {
    (((rdev >> 8) & 0xfff) | ((rdev >> 32) & !0xfff)) as u32
}

fn dev_minor(rdev: u64) -> u32 {
    ((rdev & 0xff) | ((rdev >> 12) & !0xff)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A test root where whiteouts and xattrs are whatever the test says.
    struct Fake {
        root: PathBuf,
        whiteouts: Vec<&'static str>,
        xattrs: Vec<(&'static str, &'static str, &'static [u8])>,
    }

    impl Inspect for Fake {
        fn is_whiteout(&self, path: &Path, _md: &Metadata) -> bool {
            self.whiteouts.iter().any(|w| self.root.join(w) == path)
        }
        fn xattrs(&self, path: &Path) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
            Ok(self
                .xattrs
                .iter()
                .filter(|(p, _, _)| self.root.join(p) == path)
                .map(|(_, k, v)| (k.as_bytes().to_vec(), v.to_vec()))
                .collect())
        }
    }

    /// One entry of a written archive, pax records applied.
    #[derive(Debug)]
    struct Ent {
        name: String,
        kind: u8,
        mode: u32,
        uid: u64,
        mtime: u64,
        link: String,
        dev: (u64, u64),
        pax: Vec<(String, Vec<u8>)>,
        data: Vec<u8>,
    }

    fn num(f: &[u8]) -> u64 {
        let s: String = f
            .iter()
            .take_while(|b| **b != 0)
            .map(|b| *b as char)
            .collect();
        u64::from_str_radix(s.trim(), 8).unwrap_or(0)
    }

    fn text(f: &[u8]) -> String {
        let end = f.iter().position(|b| *b == 0).unwrap_or(f.len());
        String::from_utf8_lossy(&f[..end]).into_owned()
    }

    fn entries(mut a: &[u8]) -> Vec<Ent> {
        let mut out = Vec::new();
        let mut pax: Vec<(String, Vec<u8>)> = Vec::new();
        while a.len() >= 512 && a[..512].iter().any(|b| *b != 0) {
            let h = &a[..512];
            let size = num(&h[124..136]) as usize;
            let data = a[512..512 + size].to_vec();
            a = &a[512 + size.div_ceil(512) * 512..];
            if h[156] == b'x' {
                let mut rest = &data[..];
                while !rest.is_empty() {
                    let sp = rest.iter().position(|b| *b == b' ').unwrap();
                    let n: usize = std::str::from_utf8(&rest[..sp]).unwrap().parse().unwrap();
                    let rec = &rest[sp + 1..n - 1];
                    let eq = rec.iter().position(|b| *b == b'=').unwrap();
                    pax.push((text(&rec[..eq]), rec[eq + 1..].to_vec()));
                    rest = &rest[n..];
                }
                continue;
            }
            let mut e = Ent {
                name: text(&h[0..100]),
                kind: h[156],
                mode: num(&h[100..108]) as u32,
                uid: num(&h[108..116]),
                mtime: num(&h[136..148]),
                link: text(&h[157..257]),
                dev: (num(&h[329..337]), num(&h[337..345])),
                pax: std::mem::take(&mut pax),
                data,
            };
            for (k, v) in &e.pax {
                match k.as_str() {
                    "path" => e.name = String::from_utf8_lossy(v).into_owned(),
                    "linkpath" => e.link = String::from_utf8_lossy(v).into_owned(),
                    _ => {}
                }
            }
            out.push(e);
        }
        out
    }

    fn layer(root: &Path, exclude: &[&str], inspect: &dyn Inspect) -> io::Result<Vec<Ent>> {
        let ex: Vec<String> = exclude.iter().map(|s| s.to_string()).collect();
        let mut w = tar::Writer::new(Vec::new());
        write(root, &Exclude::parse(&ex).unwrap(), inspect, &mut w)?;
        Ok(entries(&w.finish().unwrap()))
    }

    fn tmp(name: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!("vessel-layer-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).unwrap();
        p
    }

    fn touch(p: &Path, data: &[u8]) {
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, data).unwrap();
        crate::sys::set_times_nofollow(p, 1_600_000_000).unwrap();
    }

    #[test]
    fn whiteouts_opaque_dirs_hardlinks_and_excludes() {
        let root = tmp("translate");
        touch(&root.join("a/f.txt"), b"hello");
        touch(&root.join("a/gone"), b""); // a whiteout, says Fake
        fs::set_permissions(root.join("a"), fs::Permissions::from_mode(0o750)).unwrap();
        touch(&root.join("b/new"), b"n");
        touch(&root.join("etc/hosts"), b"127.0.0.1 x");
        touch(&root.join("etc/resolv.conf"), b"nameserver 1.1.1.1");
        touch(&root.join("etc/keep"), b"k");
        touch(&root.join("h1"), b"same inode");
        fs::create_dir_all(root.join("z")).unwrap();
        fs::hard_link(root.join("h1"), root.join("z/h2")).unwrap();
        std::os::unix::fs::symlink("../a/f.txt", root.join("c")).unwrap();
        touch(&root.join("skipdir/inner/deep"), b"x");
        let long = format!("{}/{}", "d".repeat(70), "e".repeat(70));
        touch(&root.join(&long), b"long");
        let cap: &[u8] = b"\x01\x00\x00\x02 \n=\xff";
        let fake = Fake {
            root: root.clone(),
            whiteouts: vec!["a/gone"],
            xattrs: vec![
                ("b", "trusted.overlay.opaque", b"y"),
                ("b", "trusted.overlay.origin", b"\x00fh"),
                ("a", "user.overlay.opaque", b"x"), // not "y": not opaque
                ("h1", "security.capability", cap),
                ("h1", "user.note", b"kept"),
                ("h1", "security.selinux", b"system_u:object_r:bin_t"),
                ("h1", "trusted.other", b"dropped"),
            ],
        };
        let got = layer(
            &root,
            &["/etc/hosts", "etc/resolv.conf/", "./skipdir"],
            &fake,
        )
        .unwrap();
        let names: Vec<&str> = got.iter().map(|e| e.name.as_str()).collect();
        let long_dir = format!("{}/", "d".repeat(70));
        assert_eq!(
            names,
            [
                "a/",
                "a/f.txt",
                "a/.wh.gone",
                "b/",
                "b/.wh..wh..opq",
                "b/new",
                "c",
                long_dir.as_str(),
                long.as_str(),
                "etc/",
                "etc/keep",
                "h1",
                "z/",
                "z/h2",
            ]
        );
        let by = |n: &str| got.iter().find(|e| e.name == n).unwrap();
        assert_eq!((by("a/").kind, by("a/").mode), (tar::DIR, 0o750));
        assert_eq!(by("a/f.txt").data, b"hello");
        let wh = by("a/.wh.gone");
        assert_eq!(
            (wh.kind, wh.mode, wh.uid, wh.mtime),
            (tar::REGULAR, 0, 0, 1_600_000_000)
        );
        assert!(wh.data.is_empty());
        assert_eq!(by("b/.wh..wh..opq").kind, tar::REGULAR);
        assert!(by("b/").pax.is_empty(), "overlay xattrs are never carried");
        assert_eq!(
            (by("c").kind, by("c").link.as_str()),
            (tar::SYMLINK, "../a/f.txt")
        );
        assert_eq!(by(&long).data, b"long");
        assert!(by(&long).pax.iter().any(|(k, _)| k == "path"));
        let h1 = by("h1");
        assert_eq!(h1.data, b"same inode");
        assert_eq!(
            h1.pax,
            [
                ("SCHILY.xattr.security.capability".to_owned(), cap.to_vec()),
                ("SCHILY.xattr.user.note".to_owned(), b"kept".to_vec()),
            ]
        );
        let h2 = by("z/h2");
        assert_eq!((h2.kind, h2.link.as_str()), (tar::HARDLINK, "h1"));
        assert!(h2.data.is_empty() && h2.pax.is_empty());

        // The same tree gives the same bytes.
        let again = layer(
            &root,
            &["/etc/hosts", "etc/resolv.conf/", "./skipdir"],
            &fake,
        )
        .unwrap();
        assert_eq!(format!("{again:?}"), format!("{got:?}"));
        // An excluded first link: the next one carries the data.
        let got = layer(&root, &["h1"], &fake).unwrap();
        let h2 = got.iter().find(|e| e.name == "z/h2").unwrap();
        assert_eq!(
            (h2.kind, h2.data.as_slice()),
            (tar::REGULAR, &b"same inode"[..])
        );
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn redirect_and_metacopy_are_unsupported() {
        let root = tmp("redirect");
        touch(&root.join("x/moved/f"), b"");
        touch(&root.join("meta"), b"");
        for (path, key) in [
            ("x/moved", "trusted.overlay.redirect"),
            ("meta", "user.overlay.metacopy"),
        ] {
            let fake = Fake {
                root: root.clone(),
                whiteouts: vec![],
                xattrs: vec![(path, key, b"/somewhere")],
            };
            let e = layer(&root, &[], &fake).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::Unsupported);
            let m = e.to_string();
            assert!(m.contains(path) && m.contains(key), "{m}");
            // Excluded, it is not looked at.
            assert!(layer(&root, &[path], &fake).is_ok());
        }
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn exclude_paths_are_normalized_and_checked() {
        let ex = Exclude::parse(&["/etc/hosts".into(), "./a//b/".into(), "c".into()]).unwrap();
        let mut got: Vec<_> = ex.0.iter().map(|p| show(p)).collect();
        got.sort();
        assert_eq!(got, ["a/b", "c", "etc/hosts"]);
        assert!(Exclude::parse(&["a/../b".into()])
            .unwrap_err()
            .contains(".."));
        assert!(Exclude::parse(&["/".into()]).is_err());
        assert!(Exclude::parse(&[".".into()]).is_err());
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

    /// The real inspector on a real directory: a 0/0 character device, a fifo, trusted
    /// and user xattrs. Needs root (mknod, trusted.*): says so and returns otherwise.
    #[test]
    fn overlay_inspector_on_real_whiteouts_and_xattrs() {
        let root = tmp("real");
        let node = |p: &Path, mode: u32, dev: u64| {
            let c = crate::sys::cstr(p.to_str().unwrap()).unwrap();
            crate::sys::check(unsafe { crate::sys::mknod(c.as_ptr(), mode, dev) }).map(|_| ())
        };
        fs::create_dir_all(root.join("opq/sub")).unwrap();
        match node(&root.join("gone"), 0o020000, 0) {
            Err(e) if e.raw_os_error() == Some(crate::sys::EPERM) => {
                eprintln!(
                    "SKIPPED overlay_inspector_on_real_whiteouts_and_xattrs: mknod needs root"
                );
                fs::remove_dir_all(root).unwrap();
                return;
            }
            r => r.unwrap(),
        }
        node(&root.join("null"), 0o020666, 0x103).unwrap(); // char 1:3
        node(&root.join("fifo"), 0o010644, 0).unwrap();
        match crate::sys::set_xattr(&root.join("opq"), "trusted.overlay.opaque", b"y") {
            Err(e) if matches!(e.raw_os_error(), Some(1) | Some(95)) => {
                eprintln!(
                    "SKIPPED overlay_inspector_on_real_whiteouts_and_xattrs: trusted xattrs: {e}"
                );
                fs::remove_dir_all(root).unwrap();
                return;
            }
            r => r.unwrap(),
        }
        touch(&root.join("bin"), b"\x7fELF");
        // vfs_cap_data revision 2, effective, permitted CAP_NET_RAW (the kernel checks it).
        let mut cap = vec![0u8; 20];
        cap[..4].copy_from_slice(&0x0200_0001u32.to_le_bytes());
        cap[4..8].copy_from_slice(&(1u32 << 13).to_le_bytes());
        crate::sys::set_xattr(&root.join("bin"), "security.capability", &cap).unwrap();
        crate::sys::set_xattr(&root.join("bin"), "user.k", b"v").unwrap();
        let got = layer(&root, &[], &Overlay).unwrap();
        let names: Vec<&str> = got.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "bin",
                "fifo",
                ".wh.gone",
                "null",
                "opq/",
                "opq/.wh..wh..opq",
                "opq/sub/"
            ]
        );
        let by = |n: &str| got.iter().find(|e| e.name == n).unwrap();
        assert_eq!(
            by("bin").pax,
            [
                ("SCHILY.xattr.security.capability".to_owned(), cap),
                ("SCHILY.xattr.user.k".to_owned(), b"v".to_vec()),
            ]
        );
        assert_eq!((by("null").kind, by("null").dev), (tar::CHAR, (1, 3)));
        assert_eq!(by("fifo").kind, tar::FIFO);
        assert!(by("opq/").pax.is_empty());
        fs::remove_dir_all(root).unwrap();
    }
}
