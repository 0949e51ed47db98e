//! `sonde serve` under test: a free port, HTTP requests by hand, the agent
//! started and polled, Prometheus' samples parsed.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{sonde_bin, Waiting};

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// `GET path` on 127.0.0.1:port with `accept`; (status line, body) or None
/// while nothing listens.
pub fn get(port: u16, path: &str, accept: &str) -> Option<(String, String)> {
    get_at("127.0.0.1", port, path, accept)
}

/// `get` from `host` (another loopback address: another "node").
pub fn get_at(host: &str, port: u16, path: &str, accept: &str) -> Option<(String, String)> {
    let mut s = TcpStream::connect((host, port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nAccept: {accept}\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    Some((head.to_string(), body.to_string()))
}

/// The samples of an exposition: `name{labels}` → value.
pub fn samples(body: &str) -> Vec<(String, f64)> {
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

/// The agent's samples now.
pub fn scrape(port: u16) -> Vec<(String, f64)> {
    let (_, body) = get(port, "/metrics", "*/*").expect("the agent answers");
    samples(&body)
}

/// Runs a fixture to its end (`go` on stdin).
pub fn run_fixture(path: &Path, args: &[&str]) {
    let w = Waiting::spawn_path(path, args);
    w.run();
}

pub struct Agent {
    /// The `sonde serve` process.
    pub child: Child,
    /// Its port.
    pub port: u16,
    /// The address it listens on (127.0.0.1 unless started with [`Agent::start_at`]).
    pub host: String,
}

impl Agent {
    pub fn start(config: &Path, port: u16) -> Agent {
        Agent::start_at(config, "127.0.0.1", port)
    }

    /// An agent whose configuration listens on `host:port`, once its
    /// configuration is applied.
    pub fn start_at(config: &Path, host: &str, port: u16) -> Agent {
        let agent = Agent::spawn(config, host, port);
        // Serving starts before the configuration is applied: wait for it.
        agent.wait_until(
            |s| s.iter().any(|(k, v)| k == "sonde_configuration_applied" && *v == 1.0),
            "the configuration applied",
        );
        agent
    }

    /// The agent started, not waited for (its endpoint may need TLS).
    pub fn spawn(config: &Path, host: &str, port: u16) -> Agent {
        let child = Command::new(sonde_bin())
            .args(["serve", "--log-level", "debug"])
            .arg(config)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn sonde serve");
        Agent {
            child,
            port,
            host: host.to_string(),
        }
    }

    /// Polls /metrics until `ok` (at most 20 s: a hang guard).
    pub fn wait_until(&self, ok: impl Fn(&[(String, f64)]) -> bool, what: &str) -> Vec<(String, f64)> {
        let start = Instant::now();
        loop {
            if let Some((_, body)) = get_at(&self.host, self.port, "/metrics", "*/*") {
                let now = samples(&body);
                if ok(&now) {
                    return now;
                }
                if start.elapsed() > Duration::from_secs(20) {
                    panic!("agent never showed {what}: {body}");
                }
            } else if start.elapsed() > Duration::from_secs(20) {
                panic!("agent not answering on port {} ({what})", self.port);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: a signal to our own child.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }
}

/// Killed outright (SIGKILL) and reaped.
impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether `tool` is here: on the host it must be (`cargo xtask setup`
/// installs `package`); the kernel matrix's guests carry sonde and the
/// fixtures only, and skip saying so.
pub fn host_tool(tool: &Path, package: &str) -> bool {
    if tool.exists() {
        return true;
    }
    assert!(
        std::env::var_os("SONDE_GUEST").is_some(),
        "{} missing: cargo xtask setup installs {package}",
        tool.display()
    );
    crate::skip("the agent", &format!("no {} in the guest", tool.display()));
    false
}

pub fn write_config(path: &Path, port: u16, probes: &[(&Path, &[&str], bool)]) {
    let mut text = format!("listen = \"127.0.0.1:{port}\"\nretry_seconds = 1\n");
    for (binary, functions, latency) in probes {
        let list: Vec<String> = functions.iter().map(|f| format!("\"{f}\"")).collect();
        text.push_str(&format!(
            "\n[[probe]]\nbinary = \"{}\"\nfunctions = [{}]\nlatency = {latency}\n",
            binary.display(),
            list.join(", ")
        ));
    }
    // Written whole then renamed: the agent never reads half a file.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write config");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644)).expect("chmod config");
    std::fs::rename(&tmp, path).expect("rename config");
}

pub fn work_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("sonde-serve-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("work dir");
    // The agent refuses a configuration others could change, whatever the umask.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).expect("chmod work dir");
    d
}

/// A real Prometheus server (Debian's `prometheus`) on 127.0.0.1 scraping the
/// given ports every second; killed on drop.
pub struct Prometheus {
    child: Child,
    /// Its port.
    pub port: u16,
}

impl Prometheus {
    /// Starts it with its data under `dir`.
    pub fn start(binary: &Path, dir: &Path, targets: &[u16]) -> Prometheus {
        let list: Vec<String> = targets.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        Prometheus::scraping(binary, dir, &list)
    }

    /// Starts it scraping `HOST:PORT` targets.
    pub fn scraping(binary: &Path, dir: &Path, targets: &[String]) -> Prometheus {
        Prometheus::scraping_with(binary, dir, targets, "")
    }

    /// Starts it scraping `HOST:PORT` targets, with `more` (YAML indented for
    /// the job: `scheme`, `tls_config`, `basic_auth`) in the job.
    pub fn scraping_with(binary: &Path, dir: &Path, targets: &[String], more: &str) -> Prometheus {
        let port = free_port();
        let config = dir.join("prometheus.yml");
        let list: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: sonde\n{more}    static_configs:\n      - targets: [{}]\n",
                list.join(", ")
            ),
        )
        .expect("prometheus config");
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus");
        Prometheus { child, port }
    }

    /// A PromQL query's JSON answer (None while Prometheus is not up).
    pub fn query(&self, q: &str) -> Option<serde_json::Value> {
        let enc: String = q
            .bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect();
        let (_, body) = get(self.port, &format!("/api/v1/query?query={enc}"), "application/json")?;
        serde_json::from_str(&body).ok()
    }

    /// The result rows of `q` once `ok` holds of them (at most 30 s).
    pub fn wait_for(&self, q: &str, ok: impl Fn(&[serde_json::Value]) -> bool) -> Vec<serde_json::Value> {
        let start = Instant::now();
        loop {
            let r = self.query(q);
            let rows = r
                .as_ref()
                .and_then(|r| r["data"]["result"].as_array().cloned())
                .unwrap_or_default();
            if ok(&rows) {
                return rows;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "Prometheus never answered {q} as expected: {r:?}"
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// The state of its scrape targets (`up`, `lastError`).
    pub fn targets(&self) -> Option<serde_json::Value> {
        let (_, body) = get(self.port, "/api/v1/targets", "application/json")?;
        serde_json::from_str(&body).ok()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A sample's value as Prometheus' API gives it.
pub fn number(v: &serde_json::Value) -> Option<f64> {
    v["value"][1].as_str()?.parse().ok()
}
