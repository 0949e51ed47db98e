//! `sonde serve`: exact counters and histograms at /metrics, live reloads that
//! keep the counters of the probes that stay, a binary that appears later,
//! a binary replaced on disk, nothing left attached after a kill — and a real
//! Prometheus server scraping it (host; the guests have no Prometheus).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sonde_tests::agent::*;
use sonde_tests::*;

static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Whether sample `key` is `metric` of `function` in fixture-pie itself.
fn of(key: &str, metric: &str, function: &str) -> bool {
    key.starts_with(&format!("{metric}{{"))
        && key.contains(&format!("function=\"{function}\""))
        && key.contains("/fixture-pie\"")
}

/// The value of `metric` for fixture-pie's `function` (0 when absent).
fn value(samples: &[(String, f64)], metric: &str, function: &str) -> f64 {
    samples
        .iter()
        .find(|(k, _)| of(k, metric, function))
        .map_or(0.0, |(_, v)| *v)
}

fn present(samples: &[(String, f64)], metric: &str, function: &str) -> bool {
    samples.iter().any(|(k, _)| of(k, metric, function))
}

/// fixture-pie per run: fx_alpha 1, fx_beta 2, fx_gamma 3, fx_delta 4 calls.
const PER_RUN: [(&str, f64); 4] = [
    ("fx_alpha", 1.0),
    ("fx_beta", 2.0),
    ("fx_gamma", 3.0),
    ("fx_delta", 4.0),
];

#[test]
fn the_agent_counts_exactly_reloads_the_difference_and_leaves_nothing() {
    let _s = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    require_root();
    let dir = work_dir("agent");
    let pie = fixtures().join("fixture-pie");
    // A copy the agent does not find at start (appears later), then replaced;
    // beside the library it loads from its own directory.
    let late = dir.join("late-pie");
    std::fs::copy(fixtures().join("libvers.so"), dir.join("libvers.so")).expect("copy libvers.so");
    let config = dir.join("serve.toml");
    let port = free_port();
    let links_before = link_count();
    write_config(
        &config,
        port,
        &[
            (&pie, &["fx_alpha", "fx_beta"], true),
            (&pie, &["fx_gamma", "fx_delta"], false),
            (&late, &["fx_alpha"], false),
        ],
    );
    let agent = Agent::start(&config, port);
    let s = scrape(port);
    assert!(
        s.iter().any(|(k, v)| k == "sonde_attached_functions" && *v == 4.0),
        "{s:?}"
    );
    assert!(s.iter().any(|(k, v)| k == "sonde_pending_probes" && *v == 1.0), "{s:?}");
    assert!(s
        .iter()
        .any(|(k, v)| k.starts_with("sonde_attach_errors_total") && k.contains("late-pie") && *v >= 1.0));

    // Exact counts after two runs; latency histograms whose count matches.
    for _ in 0..2 {
        run_fixture(&pie, &[]);
    }
    let s = agent.wait_until(
        |s| value(s, "sonde_calls_total", "fx_delta") >= 8.0,
        "8 calls of fx_delta",
    );
    for (f, n) in PER_RUN {
        assert_eq!(value(&s, "sonde_calls_total", f), 2.0 * n, "{f}");
    }
    assert_eq!(value(&s, "sonde_call_duration_seconds_count", "fx_beta"), 4.0);
    assert_eq!(value(&s, "sonde_call_duration_seconds_count", "fx_alpha"), 2.0);
    let inf = s
        .iter()
        .find(|(k, _)| {
            k.starts_with("sonde_call_duration_seconds_bucket") && k.contains("fx_beta") && k.contains("+Inf")
        })
        .map(|(_, v)| *v);
    assert_eq!(inf, Some(4.0), "+Inf bucket = count");
    assert!(value(&s, "sonde_call_duration_seconds_sum", "fx_beta") > 0.0);
    assert!(
        !present(&s, "sonde_call_duration_seconds_count", "fx_gamma"),
        "no latency asked"
    );
    let native = sonde::Features::current().has(sonde::Feature::UprobeSession);
    let info = s
        .iter()
        .find(|(k, _)| k.starts_with("sonde_probe_info") && k.contains("fx_beta"))
        .map(|(k, _)| k.clone())
        .expect("probe info");
    assert!(
        info.contains(if native {
            "session=\"native\""
        } else {
            "session=\"emulated\""
        }),
        "{info}"
    );

    // The late binary appears: attached at the next retry (1 s).
    std::fs::copy(&pie, &late).expect("copy fixture");
    agent.wait_until(
        |s| s.iter().any(|(k, v)| k == "sonde_attached_functions" && *v == 5.0),
        "the late binary attached",
    );
    run_fixture(&late, &[]);
    agent.wait_until(
        |s| {
            s.iter()
                .any(|(k, v)| k.starts_with("sonde_calls_total") && k.contains("late-pie") && *v == 1.0)
        },
        "one call in the late binary",
    );

    // Reload (SIGHUP): gamma/delta go, the late probe stays; the kept
    // alpha/beta keep their counts and grow.
    write_config(
        &config,
        port,
        &[(&pie, &["fx_alpha", "fx_beta"], true), (&late, &["fx_alpha"], false)],
    );
    agent.signal(libc::SIGHUP);
    let s = agent.wait_until(
        |s| s.iter().any(|(k, v)| k == "sonde_attached_functions" && *v == 3.0),
        "gamma and delta detached",
    );
    assert!(!present(&s, "sonde_calls_total", "fx_gamma"), "{s:?}");
    assert_eq!(value(&s, "sonde_calls_total", "fx_alpha"), 2.0, "kept, not reset");
    run_fixture(&pie, &[]);
    let s = agent.wait_until(|s| value(s, "sonde_calls_total", "fx_beta") >= 6.0, "beta growing");
    assert_eq!(value(&s, "sonde_calls_total", "fx_alpha"), 3.0);
    assert_eq!(value(&s, "sonde_call_duration_seconds_count", "fx_beta"), 6.0);

    // Replaced on disk (a package upgrade writes a new file and renames it):
    // the probe moves to the new file; calls there count.
    let next = dir.join("late-pie.new");
    std::fs::copy(&pie, &next).expect("copy");
    std::fs::rename(&next, &late).expect("replace");
    std::thread::sleep(Duration::from_millis(2500)); // > retry_seconds: re-attached
    run_fixture(&late, &[]);
    agent.wait_until(
        |s| {
            s.iter()
                .any(|(k, v)| k.starts_with("sonde_calls_total") && k.contains("late-pie") && *v >= 1.0)
        },
        "a call in the replaced binary",
    );
    let (_, status) = get(port, "/", "*/*").expect("status page");
    assert!(status.contains("attached: 1 function(s)"), "{status}");

    // Killed outright: the kernel drops every link with the agent's fds.
    drop(agent); // SIGKILL, reaped
    let start = Instant::now();
    while link_count() != links_before && start.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(link_count(), links_before, "links left");
    assert!(
        !sonde::inspect::tracefs_uprobes().iter().any(|e| e.contains("sonde_")),
        "tracefs entries left"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// #27: counters keyed by what they count (scope, binary as configured,
/// function) go on across every change the agent makes: a function added to a
/// probe's list, `latency` switched off and on again, a probe split into two
/// entries, a function removed then named again, the binary replaced on disk.
/// Only a restart resets them.
#[test]
fn counters_survive_every_change_the_agent_makes() {
    let _s = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    require_root();
    let dir = work_dir("carried");
    // A copy of its own (replaced below), named as `value` reads it.
    let pie = dir.join("fixture-pie");
    std::fs::copy(fixtures().join("fixture-pie"), &pie).expect("copy fixture");
    std::fs::copy(fixtures().join("libvers.so"), dir.join("libvers.so")).expect("copy libvers.so");
    let config = dir.join("serve.toml");
    let port = free_port();
    write_config(&config, port, &[(&pie, &["fx_alpha", "fx_beta"], true)]);
    let agent = Agent::start(&config, port);
    // A reload is over when the agent shows what only the new configuration has.
    type Samples = [(String, f64)];
    let reload = |probes: &[(&std::path::Path, &[&str], bool)], done: &dyn Fn(&Samples) -> bool| {
        write_config(&config, port, probes);
        agent.signal(libc::SIGHUP);
        agent.wait_until(
            |s| done(s) && s.iter().any(|(k, v)| k == "sonde_configuration_applied" && *v == 1.0),
            "the reload applied",
        )
    };
    let timed = |s: &[(String, f64)], f: &str| present(s, "sonde_call_duration_seconds_count", f);
    let run_until = |function: &str, calls: f64| {
        run_fixture(&pie, &[]);
        agent.wait_until(
            |s| value(s, "sonde_calls_total", function) >= calls,
            &format!("{calls} calls of {function}"),
        )
    };
    let calls = |s: &[(String, f64)], f: &str| value(s, "sonde_calls_total", f);
    let metric = |s: &[(String, f64)], key: &str| s.iter().find(|(k, _)| k == key).map(|(_, v)| *v);
    run_fixture(&pie, &[]);
    let s = run_until("fx_beta", 4.0);
    assert_eq!((calls(&s, "fx_alpha"), calls(&s, "fx_beta")), (2.0, 4.0));
    // The agent's own figures: build, probes by state, its attach and scrape times.
    assert!(
        s.iter()
            .any(|(k, v)| k.starts_with("sonde_build_info{") && k.contains("version=\"") && *v == 1.0),
        "build info"
    );
    assert_eq!(metric(&s, "sonde_probes{state=\"attached\"}"), Some(1.0));
    assert_eq!(metric(&s, "sonde_probes{state=\"pending\"}"), Some(0.0));
    assert!(metric(&s, "sonde_attach_duration_seconds_count").is_some_and(|n| n >= 1.0));
    assert!(metric(&s, "sonde_scrape_collect_duration_seconds").is_some_and(|t| t > 0.0 && t < 5.0));
    assert_eq!(value(&s, "sonde_call_duration_seconds_count", "fx_beta"), 4.0);

    // A function added to the list: the others go on.
    let s = reload(&[(&pie, &["fx_alpha", "fx_beta", "fx_gamma"], true)], &|s| {
        present(s, "sonde_calls_total", "fx_gamma")
    });
    assert_eq!((calls(&s, "fx_alpha"), calls(&s, "fx_beta")), (2.0, 4.0), "{s:?}");
    assert_eq!(value(&s, "sonde_call_duration_seconds_count", "fx_beta"), 4.0);
    let s = run_until("fx_gamma", 3.0);
    assert_eq!((calls(&s, "fx_alpha"), calls(&s, "fx_beta")), (3.0, 6.0));

    // latency off: counters go on, no histogram; on again: the histogram
    // goes on from where it was (the untimed calls in between not in it).
    let s = reload(&[(&pie, &["fx_alpha", "fx_beta", "fx_gamma"], false)], &|s| {
        !timed(s, "fx_beta")
    });
    assert_eq!(calls(&s, "fx_beta"), 6.0);
    let s = run_until("fx_gamma", 6.0);
    assert_eq!(calls(&s, "fx_beta"), 8.0);
    let s = reload(&[(&pie, &["fx_alpha", "fx_beta", "fx_gamma"], true)], &|s| {
        timed(s, "fx_beta")
    });
    assert_eq!(value(&s, "sonde_call_duration_seconds_count", "fx_beta"), 6.0, "{s:?}");
    let s = run_until("fx_gamma", 9.0);
    assert_eq!(value(&s, "sonde_call_duration_seconds_count", "fx_beta"), 8.0);
    assert_eq!(calls(&s, "fx_beta"), 10.0);

    // Split into two entries (fx_alpha no longer timed); then fx_gamma
    // removed, and named again.
    let s = reload(
        &[(&pie, &["fx_alpha"], false), (&pie, &["fx_beta", "fx_gamma"], true)],
        &|s| !timed(s, "fx_alpha"),
    );
    assert_eq!((calls(&s, "fx_alpha"), calls(&s, "fx_gamma")), (5.0, 9.0));
    let s = reload(&[(&pie, &["fx_alpha"], false), (&pie, &["fx_beta"], true)], &|s| {
        !present(s, "sonde_calls_total", "fx_gamma")
    });
    assert_eq!(calls(&s, "fx_beta"), 10.0);
    // fx_gamma's group shrank: its old links detached, timed once the thread is done.
    agent.wait_until(
        |s| metric(s, "sonde_detach_duration_seconds_count").is_some_and(|n| n >= 1.0),
        "a detach timed",
    );
    run_fixture(&pie, &[]); // fx_gamma's 3 calls here are not probed
    agent.wait_until(|s| calls(s, "fx_beta") >= 12.0, "12 calls of fx_beta");
    let s = reload(
        &[(&pie, &["fx_alpha"], false), (&pie, &["fx_beta", "fx_gamma"], true)],
        &|s| present(s, "sonde_calls_total", "fx_gamma"),
    );
    assert_eq!(calls(&s, "fx_gamma"), 9.0, "named again: from where it was");
    let s = run_until("fx_gamma", 12.0);
    assert_eq!((calls(&s, "fx_alpha"), calls(&s, "fx_beta")), (7.0, 14.0));

    // Replaced on disk (a package upgrade): attached to the new file at the
    // next retry, the counts going on.
    let next = dir.join("fixture-pie.new");
    std::fs::copy(fixtures().join("fixture-pie"), &next).expect("copy");
    std::fs::rename(&next, &pie).expect("replace");
    std::thread::sleep(Duration::from_millis(2500)); // past retry_seconds: attached again
    let s = run_until("fx_gamma", 15.0);
    assert_eq!((calls(&s, "fx_alpha"), calls(&s, "fx_beta")), (8.0, 16.0), "{s:?}");
    // Timed: every call of fx_beta but the 2 made while latency was off.
    assert_eq!(value(&s, "sonde_call_duration_seconds_count", "fx_beta"), 14.0);
    drop(agent);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `sonde serve --check` on a file holding `text`: (status, stdout, stderr).
fn check(config: &Path, text: &str) -> (Option<i32>, String, String) {
    std::fs::write(config, text).expect("write config");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(config, std::fs::Permissions::from_mode(0o644)).expect("chmod config");
    let out = Command::new(sonde_bin())
        .args(["serve", "--check"])
        .arg(config)
        .output()
        .expect("run sonde serve --check");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_bad_configuration_is_refused_with_the_reason() {
    let dir = work_dir("bad");
    let config = dir.join("serve.toml");
    let (code, _, err) = check(&config, "[[probe]]\nbinary = \"libc\"\nfunction = [\"malloc\"]\n");
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("unknown field `function`"), "{err}");
    // A binary missing now is not an error of the file: it is retried.
    let (code, text, _) = check(
        &config,
        "[[probe]]\nbinary = \"/no/such/binary\"\nfunctions = [\"main\"]\nlatency = true\n",
    );
    assert_eq!(code, Some(0));
    assert!(text.contains("valid") && text.contains("retries it"), "{text}");
    // The example shipped beside the systemd unit is valid.
    let (code, _, err) = check(&config, include_str!("../../contrib/serve.toml"));
    assert_eq!(code, Some(0), "{err}");
    // So is the one in the Kubernetes DaemonSet's ConfigMap (the block under `serve.toml: |`).
    let manifest = include_str!("../../contrib/kubernetes/sonde-serve.yaml");
    let shipped: String = manifest
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("serve.toml: |"))
        .skip(1)
        .take_while(|l| l.is_empty() || l.starts_with("    "))
        .map(|l| format!("{}\n", l.get(4..).unwrap_or("")))
        .collect();
    assert!(shipped.contains("[[probe]]"), "{shipped}");
    let (code, _, err) = check(&config, &shipped);
    assert_eq!(code, Some(0), "{err}");
    // A file others may write decides what a root agent probes: refused, with the fix.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o666)).expect("chmod");
    let out = Command::new(sonde_bin())
        .args(["serve", "--check"])
        .arg(&config)
        .output()
        .expect("sonde serve --check");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("writable by every user") && err.contains("chmod go-w"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// As the systemd unit runs it: user `nobody` with CAP_BPF, CAP_PERFMON,
/// CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH (+ CAP_SYS_RESOURCE where the
/// bounding set has it), not root.
#[test]
fn the_agent_runs_as_nobody_with_capabilities_only() {
    let _s = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    require_root();
    let capsh = Path::new("/usr/sbin/capsh");
    if !host_tool(capsh, "libcap2-bin") {
        return;
    }
    let dir = work_dir("caps");
    let pie = fixtures().join("fixture-pie");
    let config = dir.join("serve.toml");
    let port = free_port();
    write_config(&config, port, &[(&pie, &["fx_*"], true)]);
    let status = std::fs::read_to_string("/proc/self/status").expect("status");
    let bounding = status
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    let mut caps = "cap_bpf,cap_perfmon,cap_sys_ptrace,cap_dac_read_search".to_string();
    if bounding & (1 << 24) != 0 {
        caps.push_str(",cap_sys_resource");
    }
    let command = format!("exec {} serve {}", sonde_bin().display(), config.display());
    let child = Command::new(capsh)
        .arg(format!("--caps={caps}+eip cap_setpcap,cap_setuid,cap_setgid+ep"))
        .args(["--keep=1", "--user=nobody"])
        .arg(format!("--addamb={caps}"))
        .args(["--", "-c", &command])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("capsh");
    let agent = Agent {
        child,
        port,
        host: "127.0.0.1".into(),
    };
    agent.wait_until(
        |s| s.iter().any(|(k, v)| k == "sonde_attached_functions" && *v == 4.0),
        "four functions attached without root",
    );
    let uid = std::fs::read_to_string(format!("/proc/{}/status", agent.child.id()))
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("Uid:")).map(str::to_string))
        .unwrap_or_default();
    assert!(uid.split_whitespace().all(|u| u == "65534"), "runs as nobody: {uid}");
    run_fixture(&pie, &[]);
    let s = agent.wait_until(
        |s| value(s, "sonde_calls_total", "fx_delta") == 4.0,
        "4 calls of fx_delta",
    );
    assert_eq!(value(&s, "sonde_call_duration_seconds_count", "fx_gamma"), 3.0);
    drop(agent);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `prometheus` scraping the agent every second; PromQL through its HTTP API.
#[test]
fn prometheus_scrapes_exact_counts_and_histograms() {
    let _s = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    require_root();
    let prometheus = Path::new("/usr/bin/prometheus");
    if !host_tool(prometheus, "prometheus") {
        return;
    }
    let dir = work_dir("prom");
    let pie = fixtures().join("fixture-pie");
    let config = dir.join("serve.toml");
    let port = free_port();
    write_config(&config, port, &[(&pie, &["fx_*"], true)]);
    let agent = Agent::start(&config, port);
    let prom = Prometheus::start(prometheus, &dir, &[port]);
    for _ in 0..3 {
        run_fixture(&pie, &[]);
    }
    let result = prom.wait_for("sonde_calls_total", |rows| {
        rows.iter()
            .find(|x| x["metric"]["function"] == "fx_delta")
            .and_then(number)
            == Some(12.0)
    });
    for (f, n) in PER_RUN {
        let got = result.iter().find(|x| x["metric"]["function"] == f).and_then(number);
        assert_eq!(got, Some(3.0 * n), "{f} in Prometheus");
        let row = result.iter().find(|x| x["metric"]["function"] == f).expect("row");
        assert_eq!(row["metric"]["job"], "sonde");
    }
    // The histogram's count matches the calls; a quantile is computable.
    let count = prom
        .query("sonde_call_duration_seconds_count{function=\"fx_gamma\"}")
        .and_then(|r| r["data"]["result"].as_array()?.first().and_then(number));
    assert_eq!(count, Some(9.0));
    let p99 = prom
        .query("histogram_quantile(0.99, sum by (le) (sonde_call_duration_seconds_bucket{function=\"fx_gamma\"}))")
        .and_then(|r| r["data"]["result"].as_array()?.first().and_then(number));
    assert!(p99.is_some_and(|v| v > 0.0 && v < 1.0), "p99 {p99:?}");
    drop(prom);
    drop(agent);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `container = PID`: the library is found by its bare name in that process
/// (its maps, its mount namespace), and every process running the file counts.
#[test]
fn a_container_probe_resolves_in_its_process_and_counts_every_process() {
    let _s = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    require_root();
    let dir = work_dir("container");
    let pie = fixtures().join("fixture-pie");
    // The container's process: fixture-pie, waiting, with libvers.so mapped.
    let inside = Waiting::spawn_path(&pie, &[]).until_blocked();
    let port = free_port();
    let config = dir.join("serve.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:{port}\"\n[[probe]]\nbinary = \"libvers.so\"\nfunctions = [\"vers_add\"]\ncontainer = {}\n",
            inside.pid()
        ),
    )
    .expect("config");
    let agent = Agent::start(&config, port);
    agent.wait_until(
        |s| s.iter().any(|(k, v)| k == "sonde_attached_functions" && *v == 1.0),
        "vers_add of the process's libvers.so attached",
    );
    // Two other processes and the container's own: 5 calls each.
    run_fixture(&pie, &[]);
    run_fixture(&pie, &[]);
    inside.run();
    let s = agent.wait_until(
        |s| {
            s.iter()
                .any(|(k, v)| k.starts_with("sonde_calls_total") && k.contains("vers_add") && *v == 15.0)
        },
        "15 calls of vers_add",
    );
    assert!(
        s.iter()
            .any(|(k, _)| k.starts_with("sonde_calls_total") && k.contains("binary=\"libvers.so\"")),
        "{s:?}"
    );
    drop(agent);
    let _ = std::fs::remove_dir_all(&dir);
}
