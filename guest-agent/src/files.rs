//! Single-path file operations for the files API (PROTOCOL.md §4): LIST a directory,
//! REMOVE a path, and the raw forms of COPY_IN (write one file, parents created) and
//! COPY_OUT (read one file). The guest's own filesystem: paths may point anywhere.

use crate::json::{obj, Value};
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// The type of a directory entry as the files API names it.
pub fn kind_of(ft: &fs::FileType) -> &'static str {
    if ft.is_symlink() {
        "symlink"
    } else if ft.is_dir() {
        "dir"
    } else if ft.is_file() {
        "file"
    } else {
        "other"
    }
}

/// One LIST entry: `{name, type, size, mode, mtime, link_target}` (lstat: a symlink is
/// reported as itself).
pub fn entry(dir: &Path, name: &str) -> Value {
    let p = dir.join(name);
    match fs::symlink_metadata(&p) {
        Ok(m) => {
            let ft = m.file_type();
            let target = if ft.is_symlink() {
                fs::read_link(&p)
                    .ok()
                    .map(|t| t.to_string_lossy().into_owned())
            } else {
                None
            };
            obj(vec![
                ("name", name.into()),
                ("type", kind_of(&ft).into()),
                ("size", m.len().into()),
                ("mode", ((m.mode() & 0o7777) as u64).into()),
                ("mtime", m.mtime().into()),
                ("link_target", target.into()),
            ])
        }
        // Gone between readdir and lstat: still listed, without details.
        Err(_) => obj(vec![
            ("name", name.into()),
            ("type", "other".into()),
            ("size", 0u64.into()),
            ("mode", 0u64.into()),
            ("mtime", 0i64.into()),
            ("link_target", Value::Null),
        ]),
    }
}

/// The entries of directory `path`, sorted by name (`.` and `..` left out). A name that
/// is not UTF-8 is sent lossily (the files API speaks JSON).
pub fn list(path: &str) -> io::Result<Vec<Value>> {
    let dir = Path::new(path);
    let md = fs::metadata(dir)?;
    if !md.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("\"{path}\" is not a directory"),
        ));
    }
    let mut names: Vec<String> = fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    Ok(names.iter().map(|n| entry(dir, n)).collect())
}

/// Remove `path`: a file, a symlink (not its target), an empty directory, or with
/// `recursive` a whole tree. `/` is refused.
pub fn remove(path: &str, recursive: bool) -> io::Result<()> {
    let p = Path::new(path);
    if p.components()
        .all(|c| matches!(c, std::path::Component::RootDir))
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "refusing to remove \"/\"",
        ));
    }
    let md = fs::symlink_metadata(p)?;
    if md.is_dir() {
        if recursive {
            fs::remove_dir_all(p)
        } else {
            fs::remove_dir(p).map_err(|e| {
                if e.raw_os_error() == Some(39) {
                    io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("\"{path}\" is a directory that is not empty (use recursive)"),
                    )
                } else {
                    e
                }
            })
        }
    } else {
        fs::remove_file(p)
    }
}

/// Write `data` to the file `path` (replaced if it exists; parents created), then set
/// `mode`. A directory at `path` is an error. Returns the bytes written.
pub fn write_file(path: &str, mode: u32, data: &mut impl Read) -> io::Result<u64> {
    let p = Path::new(path);
    if fs::symlink_metadata(p).is_ok_and(|m| m.is_dir()) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("\"{path}\" is a directory"),
        ));
    }
    if let Some(parent) = p.parent() {
        fs::create_dir_all(parent)?;
    }
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode & 0o7777)
        .open(p)?;
    let n = io::copy(data, &mut f)?;
    f.set_permissions(fs::Permissions::from_mode(mode & 0o7777))?;
    f.flush()?;
    Ok(n)
}

/// Stream the contents of the file `path` (symlinks followed) to `out`.
pub fn read_file(path: &str, out: &mut impl Write) -> io::Result<u64> {
    let md = fs::metadata(path)?;
    if md.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("\"{path}\" is a directory"),
        ));
    }
    let mut f = fs::File::open(path)?;
    io::copy(&mut f, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_list_read_remove() {
        let d = std::env::temp_dir().join(format!("vessel-files-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        let f = d.join("a/b/c.bin");
        let n = write_file(f.to_str().unwrap(), 0o751, &mut &b"\x00\x01xyz"[..]).unwrap();
        assert_eq!(n, 5);
        assert_eq!(fs::metadata(&f).unwrap().mode() & 0o777, 0o751);
        std::os::unix::fs::symlink("c.bin", d.join("a/b/l")).unwrap();
        let l = list(d.join("a/b").to_str().unwrap()).unwrap();
        let names: Vec<_> = l
            .iter()
            .map(|v| v.get("name").unwrap().as_str().unwrap().to_owned())
            .collect();
        assert_eq!(names, ["c.bin", "l"]);
        assert_eq!(l[1].get("type").unwrap().as_str(), Some("symlink"));
        assert_eq!(l[1].get("link_target").unwrap().as_str(), Some("c.bin"));
        assert_eq!(l[0].get("size").unwrap().as_u64(), Some(5));
        let mut out = Vec::new();
        read_file(f.to_str().unwrap(), &mut out).unwrap();
        assert_eq!(out, b"\x00\x01xyz");
        assert!(read_file(d.to_str().unwrap(), &mut out).is_err());
        assert!(list(f.to_str().unwrap()).is_err());
        let dir_a = d.join("a");
        let e = remove(dir_a.to_str().unwrap(), false).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        remove(dir_a.to_str().unwrap(), true).unwrap();
        assert!(!dir_a.exists());
        assert_eq!(
            remove(dir_a.to_str().unwrap(), true).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
        assert!(remove("/", true).is_err());
        fs::remove_dir_all(&d).unwrap();
    }
}
