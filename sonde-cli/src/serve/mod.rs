//! `sonde serve CONFIG`: the probes of a TOML file as Prometheus metrics, until
//! stopped.
//!
//! | piece | file |
//! | --- | --- |
//! | the configuration file, checked | `config` |
//! | probes attached, pending, retried, replaced; jobs per scope | `agent` |
//! | attaching a resolved batch, all or nothing | `attach` |
//! | a job shared by the probes of a scope, groups counted | `shared` |
//! | a scope's jobs and their maps read as series; what a detached function carries | `series` |
//! | the metrics: the jobs' series, labelled and encoded at each scrape | `metrics` |
//! | the HTTP endpoint and its limits | `http` |
//! | the loop: signals, reloads | here |
//!
//! One thread serves HTTP (each scrape locks the agent and reads its maps:
//! O(functions)); the main thread reloads on SIGHUP or a changed file, retries
//! pending probes and notices replaced binaries. Detaching runs in the
//! background, so a reload never holds a scrape up for long.

pub mod agent;
mod attach;
pub mod config;
pub mod http;
pub mod metrics;
pub mod series;
mod shared;
pub mod web;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use agent::{lock, Agent};
use config::Config;

use crate::error::CliError;

/// `sonde serve`'s arguments.
#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// The configuration file (TOML; see docs/serve.md).
    #[arg(required_unless_present = "hash_password")]
    pub config: Option<PathBuf>,
    /// Print a bcrypt hash of the password read from stdin's first line, for
    /// `[web.basic_auth_users]`, and exit.
    #[arg(long, conflicts_with_all = ["check", "listen"])]
    pub hash_password: bool,
    /// Check the configuration (and what each probe resolves to now), then exit.
    #[arg(long)]
    pub check: bool,
    /// Serve on this address instead of the file's `listen`.
    #[arg(long, value_name = "HOST:PORT")]
    pub listen: Option<String>,
    /// Log level: error, warn, info, debug, trace (or RUST_LOG).
    #[arg(long, default_value = "info")]
    pub log_level: String,
}

/// Runs `sonde serve`.
pub fn run(args: &ServeArgs) -> Result<i32, CliError> {
    init_log(&args.log_level);
    let Some(path) = &args.config else {
        println!("{}", web::hash_password().map_err(CliError::new)?);
        return Ok(0);
    };
    let mut config = Config::read(path)?;
    if let Some(l) = &args.listen {
        config.listen = l.clone();
    }
    let addr = config.listen_addr().map_err(CliError::new)?;
    // Certificate and key read (and checked) before anything else.
    let security = http::Security {
        tls: config.web.tls_config().map_err(CliError::new)?,
        users: config.web.users(),
    };
    if args.check {
        return check(path, &config);
    }
    crate::system::require_privileges("to load eBPF programs and attach uprobes")?;
    let agent = Arc::new(Mutex::new(Agent::new(config.clone())));
    let registry = Arc::new(metrics::registry(Arc::clone(&agent)));
    let stop = crate::system::stop_flag()?;
    let reload = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGHUP, Arc::clone(&reload))
        .map_err(|e| CliError::new(format!("signal handler: {e}")))?;
    let handler: http::Handler = {
        let (registry, agent) = (Arc::clone(&registry), Arc::clone(&agent));
        Arc::new(move |path: &str, accept: &str| metrics::answer(path, accept, &registry, &agent))
    };
    let scheme = if security.tls.is_some() { "https" } else { "http" };
    let server = http::Http::start(addr, handler, security).map_err(CliError::new)?;
    let (attached, _, pending) = apply(&agent, config, &stop);
    log::info!(
        "serving {scheme}://{addr}/metrics: {attached} probe(s) attached, {pending} pending; SIGHUP or editing {} reloads",
        path.display()
    );
    let mut seen = modified(path);
    let mut next_retry = Instant::now();
    let files = lock(&agent).files.clone();
    while !stop.load(Ordering::Relaxed) {
        // Woken at once by a write to a probed binary.
        if files.wait(Duration::from_millis(100)) {
            lock(&agent).detach_changed();
        }
        let changed = modified(path);
        if reload.swap(false, Ordering::Relaxed) || changed != seen {
            seen = changed;
            match Config::read(path) {
                Ok(mut c) => {
                    let before = lock(&agent).config.clone();
                    if c.web != before.web {
                        log::warn!("[web] takes effect at the next start; keeping TLS and users as they are");
                    }
                    c.listen = before.listen;
                    c.web = before.web;
                    let (a, d, p) = apply(&agent, c, &stop);
                    log::info!("reloaded {}: {a} attached, {d} detached, {p} pending", path.display());
                }
                Err(e) => log::error!("{e}; keeping the probes as they are"),
            }
        }
        if Instant::now() >= next_retry {
            let (due, before) = lock(&agent).due();
            let resolved = attach::resolve(due, &stop);
            let mut a = lock(&agent);
            a.attach_all(resolved, &before);
            let every = Duration::from_secs(a.config.retry_seconds);
            next_retry = Instant::now().checked_add(every).unwrap_or_else(Instant::now);
        }
    }
    log::info!("stopping: detaching every probe");
    server.stop();
    drop(registry);
    match Arc::try_unwrap(agent) {
        Ok(m) => m.into_inner().unwrap_or_else(|p| p.into_inner()).finish(),
        Err(_) => log::warn!("the agent is still shared at exit; its probes detach as the process ends"),
    }
    Ok(0)
}

/// Applies `config`: the probes it drops detached, the new ones resolved
/// without the agent's lock (scrapes go on meanwhile), then attached.
/// Returns (attached, detached, pending).
fn apply(agent: &Mutex<Agent>, config: Config, stop: &AtomicBool) -> (usize, usize, usize) {
    let (new, gone) = lock(agent).apply(config);
    let resolved = attach::resolve(new, stop);
    let mut a = lock(agent);
    let attached = a.attach_all(resolved, &std::collections::BTreeMap::new());
    // The probes no longer listed go after the new ones came: a function both name
    // stays attached, its counters going on.
    let detached = a.retire(&gone);
    a.applied = true;
    (attached, detached, a.pending())
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// `--check`: the file is valid; what each probe resolves to now.
fn check(path: &Path, config: &Config) -> Result<i32, CliError> {
    println!(
        "{}: valid; listen {}, {} probe(s), retry every {} s",
        path.display(),
        config.listen,
        config.probes.len(),
        config.retry_seconds
    );
    // What the agent would attach: each function once per scope and file.
    let mut distinct = std::collections::BTreeSet::new();
    let mut files = std::collections::BTreeSet::new();
    for p in &config.probes {
        let what = match p.query().resolve() {
            Ok(set) => {
                let (dev, ino) = set.inode();
                files.insert((p.scope(), dev, ino));
                distinct.extend(set.iter().map(|f| (p.scope(), dev, ino, f.file_offset)));
                format!("{} function(s) of {}", set.len(), set.path().display())
            }
            Err(e) => format!("not attachable now ({e}); sonde serve retries it"),
        };
        println!(
            "  {} {}{}{}{}{}: {what}",
            p.binary,
            p.functions.join(" "),
            if p.latency { " [latency]" } else { "" },
            match (p.pid, p.container) {
                (Some(pid), _) => format!(" [pid {pid}]"),
                (_, Some(c)) => format!(" [container of {c}]"),
                _ => String::new(),
            },
            p.cgroup.as_ref().map(|c| format!(" [cgroup {c}]")).unwrap_or_default(),
            if p.container_labels { " [per container]" } else { "" },
        );
    }
    println!(
        "attaches {} distinct function(s) of {} file(s) and scope(s), as {} group(s) at start (one link each on the multi tier): memory and descriptors follow these, not the {} probe(s)",
        distinct.len(),
        files.len(),
        files.len(),
        config.probes.len()
    );
    Ok(0)
}

fn init_log(level: &str) {
    let env = env_logger::Env::default().default_filter_or(format!("sonde={level},sonde_cli={level}"));
    let _ = env_logger::Builder::from_env(env)
        .format_timestamp_millis()
        .format_target(false)
        .try_init();
}
