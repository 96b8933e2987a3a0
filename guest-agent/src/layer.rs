//! DIFF (PROTOCOL.md §5): the overlay's upper directory, everything the guest changed
//! since boot, as an OCI image layer tar (whiteouts `.wh.<name>`, opaque directories
//! `.wh..wh..opq`). Computed in the guest from the upper directory alone, so the host
//! never diffs whole trees.

use crate::sys::{self, Xattr};
use crate::tar;
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

/// Open the directory `path` (`O_DIRECTORY`, close-on-exec) and keep it for DIFF. Only
/// the first directory kept counts.
pub fn keep_upper(path: &Path) -> io::Result<()> {
    let dir = fs::OpenOptions::new()
        .read(true)
        .custom_flags(sys::O_DIRECTORY)
        .open(path)?;
    let _ = UPPER.set(dir);
    Ok(())
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
    /// The entry's extended attributes (a symlink's own): every name, with the value of
    /// those `needs_value` accepts.
    fn xattrs(&self, path: &Path) -> io::Result<Vec<Xattr>>;
}

/// The overlayfs upper directory: a whiteout is a character device 0/0, xattrs are read
/// with `llistxattr`/`lgetxattr`.
pub struct Overlay;

impl Inspect for Overlay {
    fn is_whiteout(&self, _path: &Path, md: &Metadata) -> bool {
        md.file_type().is_char_device() && md.rdev() == 0
    }

    fn xattrs(&self, path: &Path) -> io::Result<Vec<Xattr>> {
        sys::xattrs(path, needs_value)
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

/// Overlay's own attribute `name` (`trusted.overlay.<a>`, or `user.overlay.<a>` with
/// `userxattr`): `Some(a)`.
fn overlay_attr(name: &[u8]) -> Option<&[u8]> {
    name.strip_prefix(b"trusted.overlay.")
        .or_else(|| name.strip_prefix(b"user.overlay."))
}

/// Whether the walk reads the value of the xattr `name`: overlay's `opaque`, and what a
/// layer carries (`security.capability`, `user.*` except overlay's). Every other name
/// is only looked at (`redirect`, `metacopy`) or dropped.
fn needs_value(name: &[u8]) -> bool {
    match overlay_attr(name) {
        Some(a) => a == b"opaque",
        None => name == b"security.capability" || name.starts_with(b"user."),
    }
}

/// Sort the xattrs of the entry `rel`: overlay's own are never carried; `redirect` and
/// `metacopy` cannot be expressed in a layer (ERROR `unsupported`); `security.capability`
/// and `user.*` are kept; everything else (`security.selinux`, ACLs, other `trusted.*`)
/// is dropped.
fn classify(rel: &[u8], xattrs: Vec<Xattr>) -> io::Result<Attrs> {
    let mut a = Attrs::default();
    for (name, value) in xattrs {
        match overlay_attr(&name) {
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
            Some(b"opaque") => a.opaque |= value.as_deref() == Some(b"y"),
            Some(_) => {}
            None => {
                if let Some(v) = value.filter(|_| needs_value(&name)) {
                    a.keep.push((name, v));
                }
            }
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

/// The last component of the relative path `rel`.
fn base_name(rel: &[u8]) -> &[u8] {
    rel.rsplit(|b| *b == b'/').next().unwrap_or(rel)
}

/// The children of directory `path` (whose relative path is `rel`), as relative paths
/// sorted by name.
fn children(path: &Path, rel: &[u8]) -> io::Result<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    for e in fs::read_dir(path)? {
        let name = e?.file_name();
        out.push(if rel.is_empty() {
            name.as_bytes().to_vec()
        } else {
            [rel, b"/", name.as_bytes()].concat()
        });
    }
    // All share the prefix `rel/`: sorting the paths sorts the names.
    out.sort();
    Ok(out)
}

/// The marker of the whiteout `rel` (whose last component is `name`): the empty file
/// `<dir>/.wh.<name>`, mode 0, owned by 0:0.
fn write_whiteout<W: Write>(
    w: &mut tar::Writer<W>,
    rel: &[u8],
    name: &[u8],
    mtime: u64,
) -> io::Result<()> {
    let dir = &rel[..rel.len() - name.len()]; // "" or "<dir>/"
    w.entry(&tar::Header {
        name: &[dir, WHITEOUT_PREFIX, name].concat(),
        kind: tar::REGULAR,
        mtime,
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
        let name = base_name(&rel);
        if name.starts_with(WHITEOUT_PREFIX) {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!(
                    "\"{}\" starts with .wh., which an OCI layer reads as a whiteout",
                    show(&rel)
                ),
            ));
        }
        let path = root.join(OsStr::from_bytes(&rel));
        let md = match fs::symlink_metadata(&path) {
            Ok(md) => md,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue, // gone meanwhile
            Err(e) => return Err(at(&rel, e)),
        };
        let Some(h) = tar::Header::of(&rel, &md) else {
            continue; // a socket: meaningless in an image
        };
        if inspect.is_whiteout(&path, &md) {
            write_whiteout(w, &rel, name, h.mtime)?;
            continue;
        }
        let attrs = classify(&rel, inspect.xattrs(&path).map_err(|e| at(&rel, e))?)?;
        let h = tar::Header {
            xattrs: &attrs.keep,
            ..h
        };
        match h.kind {
            tar::DIR => {
                w.entry(&tar::Header {
                    name: &[&rel[..], b"/"].concat(),
                    ..h
                })?;
                if attrs.opaque {
                    w.entry(&tar::Header {
                        name: &[&rel[..], b"/", OPAQUE_MARKER].concat(),
                        kind: tar::REGULAR,
                        mtime: h.mtime,
                        ..tar::Header::default()
                    })?;
                }
                let mut below = children(&path, &rel).map_err(|e| at(&rel, e))?;
                below.reverse();
                pending.extend(below);
                continue;
            }
            _ if md.nlink() > 1 => match links.entry((md.dev(), md.ino())) {
                Entry::Occupied(first) => {
                    w.entry(&tar::Header {
                        kind: tar::HARDLINK,
                        link: first.get(),
                        size: 0,
                        xattrs: &[],
                        ..h
                    })?;
                    continue;
                }
                Entry::Vacant(v) => {
                    v.insert(rel.clone());
                }
            },
            _ => {}
        }
        match h.kind {
            tar::REGULAR => {
                let mut f = fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(sys::O_NOFOLLOW)
                    .open(&path)
                    .map_err(|e| at(&rel, e))?;
                w.file(&h, &mut f)?;
            }
            tar::SYMLINK => {
                let target = fs::read_link(&path).map_err(|e| at(&rel, e))?;
                w.entry(&tar::Header {
                    link: target.as_os_str().as_bytes(),
                    ..h
                })?;
            }
            _ => w.entry(&h)?, // devices, fifos
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tempdir::TempDir;
    use std::os::unix::fs::PermissionsExt;

    /// A test root where whiteouts and xattrs are whatever the test says (paths relative
    /// to the root). Values are read as the real inspector reads them: only those
    /// `needs_value` asks for.
    struct Fake {
        root: PathBuf,
        whiteouts: Vec<&'static str>,
        xattrs: Vec<(&'static str, &'static str, &'static [u8])>,
    }

    impl Inspect for Fake {
        fn is_whiteout(&self, path: &Path, _md: &Metadata) -> bool {
            self.whiteouts.iter().any(|w| self.root.join(w) == path)
        }
        fn xattrs(&self, path: &Path) -> io::Result<Vec<Xattr>> {
            Ok(self
                .xattrs
                .iter()
                .filter(|(p, _, _)| self.root.join(p) == path)
                .map(|(_, k, v)| {
                    let k = k.as_bytes().to_vec();
                    let v = needs_value(&k).then(|| v.to_vec());
                    (k, v)
                })
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

    /// The raw layer of `root` (entries and the end of archive).
    fn layer_bytes(root: &Path, exclude: &[&str], inspect: &dyn Inspect) -> io::Result<Vec<u8>> {
        let ex: Vec<String> = exclude.iter().map(|s| s.to_string()).collect();
        let mut w = tar::Writer::new(Vec::new());
        write(root, &Exclude::parse(&ex).unwrap(), inspect, &mut w)?;
        w.finish()
    }

    fn layer(root: &Path, exclude: &[&str], inspect: &dyn Inspect) -> io::Result<Vec<Ent>> {
        Ok(entries(&layer_bytes(root, exclude, inspect)?))
    }

    fn touch(p: &Path, data: &[u8]) {
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, data).unwrap();
        crate::sys::set_times_nofollow(p, 1_600_000_000).unwrap();
    }

    /// A path over 100 bytes (a pax `path` record).
    fn long() -> String {
        format!("{}/{}", "d".repeat(70), "e".repeat(70))
    }
    const CAP: &[u8] = b"\x01\x00\x00\x02 \n=\xff";

    /// The test tree under `root`, made by independent steps run in `order` (forward or
    /// backward), then every entry's times set alike: the same tree either way, made in
    /// opposite order (so listed in another order on filesystems that list by age).
    fn build(root: &Path, backward: bool) {
        let steps: Vec<Box<dyn Fn()>> = vec![
            Box::new(|| touch(&root.join("a/f.txt"), b"hello")),
            Box::new(|| touch(&root.join("a/gone"), b"")), // a whiteout, says Fake
            Box::new(|| {
                fs::create_dir_all(root.join("a")).unwrap();
                fs::set_permissions(root.join("a"), fs::Permissions::from_mode(0o750)).unwrap()
            }),
            Box::new(|| touch(&root.join("b/new"), b"n")),
            Box::new(|| touch(&root.join("etc/hosts"), b"127.0.0.1 x")),
            Box::new(|| touch(&root.join("etc/resolv.conf"), b"nameserver 1.1.1.1")),
            Box::new(|| touch(&root.join("etc/keep"), b"k")),
            Box::new(|| {
                touch(&root.join("h1"), b"same inode");
                fs::create_dir_all(root.join("z")).unwrap();
                fs::hard_link(root.join("h1"), root.join("z/h2")).unwrap();
            }),
            Box::new(|| std::os::unix::fs::symlink("../a/f.txt", root.join("c")).unwrap()),
            Box::new(|| touch(&root.join("skipdir/inner/deep"), b"x")),
            Box::new(|| touch(&root.join(long()), b"long")),
        ];
        if backward {
            steps.iter().rev().for_each(|s| s());
        } else {
            steps.iter().for_each(|s| s());
        }
        let mut stack = vec![root.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if fs::symlink_metadata(&p).unwrap().is_dir() {
                    stack.push(p.clone());
                }
                crate::sys::set_times_nofollow(&p, 1_600_000_000).unwrap();
            }
        }
    }

    fn fake(root: &Path) -> Fake {
        Fake {
            root: root.to_path_buf(),
            whiteouts: vec!["a/gone"],
            // Listed unsorted, as a filesystem may: the layer sorts what it keeps.
            xattrs: vec![
                ("b", "trusted.overlay.opaque", b"y"),
                ("b", "trusted.overlay.origin", b"\x00fh"),
                ("a", "user.overlay.opaque", b"x"), // not "y": not opaque
                ("h1", "user.note", b"kept"),
                ("h1", "security.selinux", b"system_u:object_r:bin_t"),
                ("h1", "security.capability", CAP),
                ("h1", "trusted.other", b"dropped"),
            ],
        }
    }

    const EXCLUDE: [&str; 3] = ["/etc/hosts", "etc/resolv.conf/", "./skipdir"];

    #[test]
    fn whiteouts_opaque_dirs_hardlinks_and_excludes() {
        let root = TempDir::new("layer-translate");
        build(&root, false);
        let fake = fake(&root);
        let got = layer(&root, &EXCLUDE, &fake).unwrap();
        let names: Vec<&str> = got.iter().map(|e| e.name.as_str()).collect();
        let long = long();
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
                ("SCHILY.xattr.security.capability".to_owned(), CAP.to_vec()),
                ("SCHILY.xattr.user.note".to_owned(), b"kept".to_vec()),
            ]
        );
        let h2 = by("z/h2");
        assert_eq!((h2.kind, h2.link.as_str()), (tar::HARDLINK, "h1"));
        assert!(h2.data.is_empty() && h2.pax.is_empty());

        // An excluded first link: the next one carries the data.
        let got = layer(&root, &["h1"], &fake).unwrap();
        let h2 = got.iter().find(|e| e.name == "z/h2").unwrap();
        assert_eq!(
            (h2.kind, h2.data.as_slice()),
            (tar::REGULAR, &b"same inode"[..])
        );
    }

    #[test]
    fn the_same_tree_gives_the_same_bytes() {
        // On tmpfs, which lists a directory newest first, the two trees list their
        // entries in opposite orders (ext4 lists by name hash: the same order for both).
        let shm = Path::new("/dev/shm");
        let base = if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        let one = TempDir::new_in(&base, "layer-same-1");
        let two = TempDir::new_in(&base, "layer-same-2");
        build(&one, false);
        build(&two, true);
        let a = layer_bytes(&one, &EXCLUDE, &fake(&one)).unwrap();
        let b = layer_bytes(&two, &EXCLUDE, &fake(&two)).unwrap();
        assert!(entries(&a).len() > 10);
        assert!(a == b, "the layers of one tree made in two orders differ");
    }

    #[test]
    fn redirect_and_metacopy_are_unsupported() {
        let root = TempDir::new("layer-redirect");
        touch(&root.join("x/moved/f"), b"");
        touch(&root.join("meta"), b"");
        for (path, key) in [
            ("x/moved", "trusted.overlay.redirect"),
            ("meta", "user.overlay.metacopy"),
        ] {
            let fake = Fake {
                root: root.to_path_buf(),
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
    }

    #[test]
    fn whiteout_names_in_the_upper_are_unsupported() {
        let root = TempDir::new("layer-wh-names");
        touch(&root.join("a/.wh.x"), b"");
        touch(&root.join("b/.wh..wh..opq"), b"");
        let fake = Fake {
            root: root.to_path_buf(),
            whiteouts: vec![],
            xattrs: vec![],
        };
        for (path, other) in [("a/.wh.x", "b"), ("b/.wh..wh..opq", "a")] {
            let e = layer(&root, &[other], &fake).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::Unsupported);
            let m = e.to_string();
            assert!(
                m.contains(&format!("\"{path}\"")) && m.contains("starts with .wh."),
                "{m}"
            );
        }
        // Excluded, they are not looked at.
        let got = layer(&root, &["a/.wh.x", "b/.wh..wh..opq"], &fake).unwrap();
        let names: Vec<&str> = got.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["a/", "b/"]);
    }

    #[test]
    fn only_needed_xattr_values_are_read() {
        for name in [
            "trusted.overlay.opaque",
            "user.overlay.opaque",
            "security.capability",
            "user.note",
        ] {
            assert!(needs_value(name.as_bytes()), "{name}");
        }
        for name in [
            "trusted.overlay.redirect",
            "user.overlay.metacopy",
            "trusted.overlay.origin",
            "security.selinux",
            "system.posix_acl_access",
            "trusted.other",
        ] {
            assert!(!needs_value(name.as_bytes()), "{name}");
        }
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

    /// The real inspector on a real directory: a 0/0 character device, a fifo, trusted
    /// and user xattrs. Needs root (mknod, trusted.*): run it as root with
    /// `cargo test --release -- --include-ignored`.
    #[test]
    #[ignore = "needs root"]
    fn overlay_inspector_on_real_whiteouts_and_xattrs() {
        assert_eq!(
            unsafe { sys::geteuid() },
            0,
            "needs root (mknod, trusted.* xattrs)"
        );
        let root = TempDir::new("layer-real");
        fs::create_dir_all(root.join("opq/sub")).unwrap();
        sys::make_node(&root.join("gone"), 0o020000, 0).unwrap(); // char 0:0
        sys::make_node(&root.join("null"), 0o020666, 0x103).unwrap(); // char 1:3
        sys::make_node(&root.join("fifo"), 0o010644, 0).unwrap();
        sys::set_xattr(&root.join("opq"), "trusted.overlay.opaque", b"y").unwrap();
        touch(&root.join("bin"), b"\x7fELF");
        // vfs_cap_data revision 2, effective, permitted CAP_NET_RAW (the kernel checks it).
        let mut cap = vec![0u8; 20];
        cap[..4].copy_from_slice(&0x0200_0001u32.to_le_bytes());
        cap[4..8].copy_from_slice(&(1u32 << 13).to_le_bytes());
        sys::set_xattr(&root.join("bin"), "security.capability", &cap).unwrap();
        sys::set_xattr(&root.join("bin"), "user.k", b"v").unwrap();
        sys::set_xattr(&root.join("bin"), "trusted.other", b"dropped").unwrap();
        let listed = Overlay.xattrs(&root.join("bin")).unwrap();
        assert!(
            listed.contains(&(b"trusted.other".to_vec(), None)),
            "a name alone, its value not read: {listed:?}"
        );
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
        // A file without xattrs has none (llistxattr's size query answers 0).
        assert!(Overlay.xattrs(&root.join("opq/sub")).unwrap().is_empty());
    }
}
