//! Volumes (PROTOCOL.md §2 `volumes`): ext4 disks mounted at paths of the new root.
//! Staged (disk found, filesystem mounted under /mnt/volumes) in a thread while the
//! root is mounted, then placed at their paths before the root switch.

use crate::json::Value;
use crate::sys;
use std::fs;
use std::path::Path;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    pub device_serial: String,
    pub mount_path: String,
    /// The guest may not write (ignored for overlay volumes: they write to their upper disk).
    pub readonly: bool,
    /// Overlay volumes: the instance-private upper disk over the read-only base.
    pub overlay_device_serial: Option<String>,
}

const STAGE: &str = "/mnt/volumes";

/// Parse the `volumes` section: an array of objects.
pub fn parse(v: &Value) -> Result<Vec<Volume>, String> {
    let items = v.as_array().ok_or("config: \"volumes\" must be an array")?;
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        if !matches!(item, Value::Obj(_)) {
            return Err(format!("config: volumes[{i}] must be an object"));
        }
        let text = |k: &str| -> Result<Option<String>, String> {
            match item.get(k) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::Str(s)) if !s.is_empty() => Ok(Some(s.clone())),
                Some(_) => Err(format!(
                    "config: volumes[{i}].{k} must be a non-empty string"
                )),
            }
        };
        let device_serial = text("device_serial")?
            .ok_or(format!("config: volumes[{i}].device_serial is missing"))?;
        let mount_path =
            text("mount_path")?.ok_or(format!("config: volumes[{i}].mount_path is missing"))?;
        check_path(&mount_path).map_err(|e| format!("config: volumes[{i}].mount_path {e}"))?;
        let readonly = match item.get("readonly") {
            None | Some(Value::Null) => false,
            Some(x) => x
                .as_bool()
                .ok_or(format!("config: volumes[{i}].readonly must be a boolean"))?,
        };
        out.push(Volume {
            device_serial,
            mount_path,
            readonly,
            overlay_device_serial: text("overlay_device_serial")?,
        });
    }
    Ok(out)
}

/// Absolute, normalized, not `/` and not /proc, /dev, /sys or below (the host checks too).
fn check_path(p: &str) -> Result<(), String> {
    if !p.starts_with('/') || p == "/" {
        return Err(format!("\"{p}\" must be an absolute path other than /"));
    }
    if p.ends_with('/')
        || p.split('/')
            .skip(1)
            .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err(format!("\"{p}\" must be normalized"));
    }
    for r in ["/proc", "/dev", "/sys"] {
        if p == r || p.starts_with(&format!("{r}/")) {
            return Err(format!("\"{p}\" would shadow {r}"));
        }
    }
    Ok(())
}

/// Find each volume's disk(s) and mount them under /mnt/volumes/<i> (base) and
/// /mnt/volumes/<i>-upper (overlay upper disk, with upper/ and work/ in it).
pub fn stage(
    vols: &[Volume],
    find_disk: fn(&str, Duration) -> Option<String>,
) -> Result<(), String> {
    for (i, v) in vols.iter().enumerate() {
        let base = format!("{STAGE}/{i}");
        fs::create_dir_all(&base).map_err(|e| format!("mkdir {base}: {e}"))?;
        let dev = find_disk(&v.device_serial, Duration::from_secs(10)).ok_or_else(|| {
            format!(
                "volume for {} (disk serial {}) not found",
                v.mount_path, v.device_serial
            )
        })?;
        let ro = v.readonly || v.overlay_device_serial.is_some();
        sys::do_mount(&dev, &base, "ext4", if ro { sys::MS_RDONLY } else { 0 }, "")
            .map_err(|e| format!("volume for {}: mount {dev} (ext4): {e}", v.mount_path))?;
        if let Some(serial) = &v.overlay_device_serial {
            let upper = format!("{STAGE}/{i}-upper");
            fs::create_dir_all(&upper).map_err(|e| format!("mkdir {upper}: {e}"))?;
            let dev = find_disk(serial, Duration::from_secs(10)).ok_or_else(|| {
                format!(
                    "overlay layer of the volume at {} (disk serial {serial}) not found",
                    v.mount_path
                )
            })?;
            sys::do_mount(&dev, &upper, "ext4", 0, "").map_err(|e| {
                format!(
                    "overlay layer of the volume at {}: mount {dev}: {e}",
                    v.mount_path
                )
            })?;
            for d in ["upper", "work"] {
                let p = format!("{upper}/{d}");
                fs::create_dir_all(&p).map_err(|e| format!("mkdir {p}: {e}"))?;
            }
        }
    }
    Ok(())
}

/// Mount each staged volume at its path below `root` (the new root, before the switch).
/// A path that resolves outside `root` (a symlink in the image) is refused.
pub fn place(vols: &[Volume], root: &str) -> Result<(), String> {
    for (i, v) in vols.iter().enumerate() {
        let target = format!("{root}{}", v.mount_path);
        fs::create_dir_all(&target)
            .map_err(|e| format!("volume mount point {}: {e}", v.mount_path))?;
        let real = fs::canonicalize(&target)
            .map_err(|e| format!("volume mount point {}: {e}", v.mount_path))?;
        if !real.starts_with(Path::new(root)) || !real.is_dir() {
            return Err(format!(
                "volume mount point {} resolves outside the root filesystem ({})",
                v.mount_path,
                real.display()
            ));
        }
        let real = real.to_string_lossy().into_owned();
        let base = format!("{STAGE}/{i}");
        match &v.overlay_device_serial {
            None => sys::do_mount(&base, &real, "", sys::MS_MOVE, "")
                .map_err(|e| format!("volume at {}: move mount: {e}", v.mount_path))?,
            Some(_) => {
                let upper = format!("{STAGE}/{i}-upper");
                let opts = format!("lowerdir={base},upperdir={upper}/upper,workdir={upper}/work");
                sys::do_mount("overlay", &real, "overlay", 0, &opts)
                    .map_err(|e| format!("volume at {}: overlay mount: {e}", v.mount_path))?
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json;

    #[test]
    fn parses_volumes() {
        let v = json::parse(
            r#"[{"device_serial":"vessel-vol-0","mount_path":"/data","readonly":true},
                {"device_serial":"vessel-vol-1","mount_path":"/srv/x","overlay_device_serial":"vessel-volo-1"}]"#,
        )
        .unwrap();
        let vols = parse(&v).unwrap();
        assert_eq!(vols.len(), 2);
        assert!(vols[0].readonly);
        assert_eq!(vols[0].overlay_device_serial, None);
        assert_eq!(
            vols[1].overlay_device_serial.as_deref(),
            Some("vessel-volo-1")
        );
        assert!(!vols[1].readonly);
    }

    #[test]
    fn refuses_bad_paths() {
        for p in [
            "data", "/", "/proc", "/dev/x", "/sys", "/a/../b", "/a/", "/a//b", "/a/./b",
        ] {
            let text = format!(r#"[{{"device_serial":"s","mount_path":"{p}"}}]"#);
            assert!(parse(&json::parse(&text).unwrap()).is_err(), "{p}");
        }
        assert!(parse(&json::parse(r#"[{"mount_path":"/d"}]"#).unwrap()).is_err());
        assert!(parse(&json::parse(r#"{"a":1}"#).unwrap()).is_err());
        assert!(check_path("/procfs").is_ok());
    }
}
