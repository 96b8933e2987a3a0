//! The config disk document (PROTOCOL.md §2).

use crate::json::{self, Value};
use crate::network::{self, Network};
use crate::volumes::{self, Volume};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    Exec,
    Systemd,
    /// No main command: the agent serves the host (image builds run their steps through
    /// it) until the host powers the VM off; entrypoint and cmd are ignored.
    Agent,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub mode: Mode,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub workdir: String,
    pub user: String,
    pub hostname: Option<String>,
    pub root_device_serial: String,
    pub overlay_device_serial: Option<String>,
    pub control_port: String,
    pub modules: Vec<String>,
    /// `None`: no `network` section (only `lo` is brought up; /etc is left alone).
    pub network: Option<Network>,
    /// The main command's stdio (exec mode), carried on the agent's main stream.
    pub stdio: Stdio,
    /// Volumes to mount in the new root (volumes.rs).
    pub volumes: Vec<Volume>,
}

/// `stdio` section: how the main command's stdin and terminal are set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stdio {
    /// Keep stdin open for the host (`run -i`); else it is /dev/null.
    pub stdin: bool,
    /// Run under a pseudo-terminal (`run -t`): stdout and stderr merge.
    pub tty: bool,
    pub rows: u16,
    pub cols: u16,
    /// Output flow-control window in bytes; `None`: unlimited.
    pub window: Option<u64>,
}

impl Default for Stdio {
    fn default() -> Self {
        Stdio {
            stdin: false,
            tty: false,
            rows: 24,
            cols: 80,
            window: None,
        }
    }
}

fn parse_stdio(v: &Value) -> Result<Stdio, String> {
    if !matches!(v, Value::Obj(_)) {
        return Err("config: \"stdio\" must be an object".into());
    }
    let d = Stdio::default();
    let flag = |k: &str| -> Result<bool, String> {
        match v.get(k) {
            None | Some(Value::Null) => Ok(false),
            Some(x) => x
                .as_bool()
                .ok_or_else(|| format!("config: stdio.{k} must be a boolean")),
        }
    };
    let num = |k: &str, max: u64| -> Result<Option<u64>, String> {
        match v.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(x) => x
                .as_u64()
                .filter(|n| *n > 0 && *n <= max)
                .map(Some)
                .ok_or_else(|| format!("config: stdio.{k} must be an integer from 1 to {max}")),
        }
    };
    Ok(Stdio {
        stdin: flag("stdin")?,
        tty: flag("tty")?,
        rows: num("rows", 65535)?.map_or(d.rows, |n| n as u16),
        cols: num("cols", 65535)?.map_or(d.cols, |n| n as u16),
        window: num("window", 1 << 30)?,
    })
}

impl Default for Config {
    fn default() -> Self {
        Config {
            mode: Mode::Exec,
            entrypoint: Vec::new(),
            cmd: Vec::new(),
            env: vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()],
            workdir: "/".into(),
            user: "0:0".into(),
            hostname: None,
            root_device_serial: "vessel-root".into(),
            overlay_device_serial: None,
            control_port: "vessel.control".into(),
            modules: Vec::new(),
            network: None,
            stdio: Stdio::default(),
            volumes: Vec::new(),
        }
    }
}

impl Config {
    /// The main command: entrypoint + cmd; none in agent mode, which ignores both.
    pub fn argv(&self) -> Vec<String> {
        if self.mode == Mode::Agent {
            return Vec::new();
        }
        self.entrypoint
            .iter()
            .chain(self.cmd.iter())
            .cloned()
            .collect()
    }
}

/// Parse the raw bytes of the config disk: JSON up to the first NUL byte (or the end).
pub fn parse(raw: &[u8]) -> Result<Config, String> {
    let end = raw.iter().position(|b| *b == 0).unwrap_or(raw.len());
    let text = std::str::from_utf8(&raw[..end]).map_err(|e| format!("config is not UTF-8: {e}"))?;
    let v = json::parse(text.trim()).map_err(|e| format!("config: {e}"))?;
    if !matches!(v, Value::Obj(_)) {
        return Err("config: top level must be an object".into());
    }
    if let Some(ver) = v.get("version") {
        if ver.as_u64() != Some(1) {
            return Err(format!(
                "config: unsupported version {}",
                json::to_string(ver)
            ));
        }
    }
    let d = Config::default();
    let str_field = |k: &str, def: &str| -> Result<String, String> {
        match v.get(k) {
            None | Some(Value::Null) => Ok(def.to_owned()),
            Some(Value::Str(s)) => Ok(s.clone()),
            Some(_) => Err(format!("config: \"{k}\" must be a string")),
        }
    };
    let opt_str = |k: &str| -> Result<Option<String>, String> {
        match v.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Str(s)) if s.is_empty() => Ok(None),
            Some(Value::Str(s)) => Ok(Some(s.clone())),
            Some(_) => Err(format!("config: \"{k}\" must be a string")),
        }
    };
    let list = |k: &str, def: &[String]| -> Result<Vec<String>, String> {
        match v.get(k) {
            None | Some(Value::Null) => Ok(def.to_vec()),
            Some(x) => x
                .as_str_vec()
                .ok_or_else(|| format!("config: \"{k}\" must be an array of strings")),
        }
    };
    let mode = match str_field("mode", "exec")?.as_str() {
        "exec" => Mode::Exec,
        "systemd" => Mode::Systemd,
        "agent" => Mode::Agent,
        other => return Err(format!("config: unknown mode \"{other}\"")),
    };
    let mut workdir = str_field("workdir", &d.workdir)?;
    if workdir.is_empty() {
        workdir = "/".into();
    }
    let mut user = str_field("user", &d.user)?;
    if user.is_empty() {
        user = d.user.clone();
    }
    Ok(Config {
        mode,
        entrypoint: list("entrypoint", &[])?,
        cmd: list("cmd", &[])?,
        env: list("env", &d.env)?,
        workdir,
        user,
        hostname: opt_str("hostname")?,
        root_device_serial: str_field("root_device_serial", &d.root_device_serial)?,
        overlay_device_serial: opt_str("overlay_device_serial")?,
        control_port: str_field("control_port", &d.control_port)?,
        modules: list("modules", &[])?,
        network: match v.get("network") {
            None | Some(Value::Null) => None,
            Some(n) => Some(network::parse(n)?),
        },
        stdio: match v.get("stdio") {
            None | Some(Value::Null) => Stdio::default(),
            Some(x) => parse_stdio(x)?,
        },
        volumes: match v.get("volumes") {
            None | Some(Value::Null) => Vec::new(),
            Some(x) => volumes::parse(x)?,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stdio_section() {
        let c =
            parse(br#"{"stdio":{"stdin":true,"tty":true,"rows":40,"cols":120,"window":65536}}"#)
                .unwrap();
        assert_eq!(
            c.stdio,
            Stdio {
                stdin: true,
                tty: true,
                rows: 40,
                cols: 120,
                window: Some(65536)
            }
        );
        assert_eq!(parse(b"{}").unwrap().stdio, Stdio::default());
        assert!(parse(br#"{"stdio":{"window":0}}"#)
            .unwrap_err()
            .contains("stdio.window"));
        assert!(parse(br#"{"stdio":{"stdin":"yes"}}"#)
            .unwrap_err()
            .contains("stdio.stdin"));
    }

    #[test]
    fn full_document_with_nul_padding() {
        let mut raw = br#"{"version":1,"mode":"systemd","entrypoint":["/bin/sh","-c"],"cmd":["echo hello"],
          "env":["A=1"],"workdir":"/app","user":"1000:1000","hostname":"vm-1","root_device_serial":"r",
          "overlay_device_serial":"o","control_port":"p","modules":["virtio_blk"]}"#
            .to_vec();
        raw.extend_from_slice(&[0; 100]);
        let c = parse(&raw).unwrap();
        assert_eq!(c.mode, Mode::Systemd);
        assert_eq!(c.argv(), vec!["/bin/sh", "-c", "echo hello"]);
        assert_eq!(c.env, vec!["A=1"]);
        assert_eq!(c.workdir, "/app");
        assert_eq!(c.user, "1000:1000");
        assert_eq!(c.hostname.as_deref(), Some("vm-1"));
        assert_eq!(c.root_device_serial, "r");
        assert_eq!(c.overlay_device_serial.as_deref(), Some("o"));
        assert_eq!(c.control_port, "p");
        assert_eq!(c.modules, vec!["virtio_blk"]);
        assert_eq!(c.network, None);
    }

    #[test]
    fn network_section() {
        let c = parse(
            br#"{"hostname":"web","network":{"interfaces":[{"mac":"52:54:00:00:00:01",
              "address":"10.0.2.15","prefix":24,"gateway":"10.0.2.2","mtu":1500}],
              "nameservers":["10.0.2.3"]}}"#,
        )
        .unwrap();
        let n = c.network.unwrap();
        assert_eq!(n.interfaces.len(), 1);
        assert_eq!(n.interfaces[0].gateway, Some("10.0.2.2".parse().unwrap()));
        assert_eq!(
            n.nameservers,
            vec!["10.0.2.3".parse::<std::net::IpAddr>().unwrap()]
        );
        // An invalid section fails the whole config, naming the field.
        let e = parse(br#"{"network":{"interfaces":[{"address":"10.0.2.15"}]}}"#).unwrap_err();
        assert!(e.contains("network") && e.contains("prefix"), "{e}");
    }

    #[test]
    fn agent_mode_ignores_the_command() {
        let c =
            parse(br#"{"mode":"agent","entrypoint":["/bin/sh","-c"],"cmd":["sleep 1"]}"#).unwrap();
        assert_eq!(c.mode, Mode::Agent);
        assert!(c.argv().is_empty(), "{:?}", c.argv());
        let c = parse(br#"{"mode":"agent"}"#).unwrap();
        assert_eq!((&c.mode, c.argv()), (&Mode::Agent, Vec::<String>::new()));
    }

    #[test]
    fn missing_fields_get_defaults() {
        let c = parse(b"{}").unwrap();
        assert_eq!(c, Config::default());
        assert!(c.argv().is_empty());
        assert_eq!(c.overlay_device_serial, None);
        assert_eq!(c.control_port, "vessel.control");
    }

    #[test]
    fn bad_input_is_an_error() {
        assert!(parse(b"{\"mode\":").unwrap_err().contains("invalid JSON"));
        assert!(parse(b"[]").is_err());
        assert!(parse(b"{\"mode\":\"vm\"}")
            .unwrap_err()
            .contains("unknown mode"));
        assert!(parse(b"{\"cmd\":[1]}").unwrap_err().contains("\"cmd\""));
        assert!(parse(b"{\"version\":2}").is_err());
        assert!(parse(&[0xff, 0xfe]).is_err());
    }
}
