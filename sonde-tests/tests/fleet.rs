//! #27: the agent in a fleet. A probe scoped to a cgroup (`cgroup = ...`)
//! counts its processes only, filtered in the program; `container_labels`
//! splits its calls by container (`container_id`, `pod_uid` from each
//! caller's cgroup path), and those counters survive reloads; three agents on
//! three loopback addresses (three "nodes"), each scoped to its own cgroup,
//! scraped by one real Prometheus, sum exactly by function and by container.

use std::path::{Path, PathBuf};

use sonde_tests::agent::*;
use sonde_tests::cgroups::{go, hierarchy, pie_in, Made};
use sonde_tests::*;

static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A Docker container's id (64 hex digits) made of `c`.
fn id(c: char) -> String {
    c.to_string().repeat(64)
}

/// A configuration listening on `host:port` with one probe of fixture-pie's
/// `functions`, scoped to `cgroup`, per container.
fn config_text(host: &str, port: u16, functions: &[&str], cgroup: &Path) -> String {
    let list: Vec<String> = functions.iter().map(|f| format!("\"{f}\"")).collect();
    format!(
        "listen = \"{host}:{port}\"\nretry_seconds = 1\n\n[[probe]]\nbinary = \"{}\"\nfunctions = [{}]\nlatency = true\ncgroup = \"{}\"\ncontainer_labels = true\n",
        fixtures().join("fixture-pie").display(),
        list.join(", "),
        cgroup.display()
    )
}

fn write(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write config");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644)).expect("chmod config");
    std::fs::rename(&tmp, path).expect("rename config");
}

/// `sonde_calls_total` of fixture-pie's `function` in container `container`
/// (`""`: no container), or `None` when the agent shows no such row.
fn calls_in(samples: &[(String, f64)], function: &str, container: &str) -> Option<f64> {
    samples
        .iter()
        .find(|(k, _)| {
            k.starts_with("sonde_calls_total{")
                && k.contains(&format!("function=\"{function}\""))
                && k.contains(&format!("container_id=\"{container}\""))
        })
        .map(|(_, v)| *v)
}

#[test]
fn a_cgroup_probe_counts_its_processes_per_container_and_keeps_counting_across_reloads() {
    let _s = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    require_root();
    let Some(root) = hierarchy() else {
        skip("cgroup probes", "no cgroup v2 hierarchy here, and none can be mounted");
        return;
    };
    let top = Made::new(root.join(format!("sonde-fleet-{}", std::process::id())));
    let a = top.0.join("a");
    let (docker, plain) = (a.join(format!("docker-{}.scope", id('d'))), a.join("plain.service"));
    let elsewhere = top.0.join(format!("b/docker-{}.scope", id('e')));
    let _made = [&docker, &plain, &elsewhere].map(|p| Made::new(p.to_path_buf()));
    let dir = work_dir("fleet-cgroup");
    let config = dir.join("serve.toml");
    let port = free_port();
    write(&config, &config_text("127.0.0.1", port, &["fx_alpha", "fx_delta"], &a));
    let agent = Agent::start(&config, port);
    go(pie_in(&docker));
    go(pie_in(&docker));
    go(pie_in(&plain));
    go(pie_in(&elsewhere));
    let s = agent.wait_until(
        |s| calls_in(s, "fx_delta", "").is_some_and(|n| n >= 4.0) && calls_in(s, "fx_delta", &id('d')) >= Some(8.0),
        "fx_delta's calls in a",
    );
    assert_eq!(calls_in(&s, "fx_alpha", &id('d')), Some(2.0), "{s:?}");
    assert_eq!(calls_in(&s, "fx_delta", &id('d')), Some(8.0));
    assert_eq!(
        calls_in(&s, "fx_alpha", ""),
        Some(1.0),
        "a's plain service: no container"
    );
    assert_eq!(calls_in(&s, "fx_delta", ""), Some(4.0));
    assert_eq!(
        calls_in(&s, "fx_delta", &id('e')),
        None,
        "b is outside the probe's cgroup"
    );
    // Timed in the cgroup only too: 3 runs of a's, not b's.
    let timed = s
        .iter()
        .find(|(k, _)| k.starts_with("sonde_call_duration_seconds_count{") && k.contains("function=\"fx_delta\""))
        .map(|(_, v)| *v);
    assert_eq!(timed, Some(12.0));
    assert!(
        s.iter()
            .any(|(k, v)| k == "sonde_container_calls_lost_total" && *v == 0.0),
        "nothing lost"
    );

    // A reload that drops fx_alpha and adds fx_beta, then names fx_alpha again:
    // every container's counter goes on from where it was.
    let applied = |s: &[(String, f64)]| s.iter().any(|(k, v)| k == "sonde_configuration_applied" && *v == 1.0);
    write(&config, &config_text("127.0.0.1", port, &["fx_beta", "fx_delta"], &a));
    agent.signal(libc::SIGHUP);
    agent.wait_until(
        |s| applied(s) && calls_in(s, "fx_alpha", "").is_none(),
        "fx_alpha dropped",
    );
    go(pie_in(&docker)); // fx_alpha not probed now
    write(
        &config,
        &config_text("127.0.0.1", port, &["fx_alpha", "fx_beta", "fx_delta"], &a),
    );
    agent.signal(libc::SIGHUP);
    let s = agent.wait_until(
        |s| applied(s) && calls_in(s, "fx_alpha", "").is_some(),
        "fx_alpha named again",
    );
    assert_eq!(calls_in(&s, "fx_alpha", &id('d')), Some(2.0), "carried: {s:?}");
    assert_eq!(calls_in(&s, "fx_alpha", ""), Some(1.0));
    assert_eq!(
        calls_in(&s, "fx_beta", &id('d')),
        Some(2.0),
        "the one run since fx_beta came"
    );
    assert_eq!(calls_in(&s, "fx_delta", &id('d')), Some(12.0), "kept all along");
    go(pie_in(&docker));
    go(pie_in(&plain));
    let s = agent.wait_until(|s| calls_in(s, "fx_alpha", "") >= Some(2.0), "the last runs");
    assert_eq!(calls_in(&s, "fx_alpha", &id('d')), Some(3.0));
    assert_eq!(calls_in(&s, "fx_delta", &id('d')), Some(16.0));
    assert_eq!(calls_in(&s, "fx_delta", ""), Some(8.0));
    drop(agent);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Three agents as three nodes (127.0.0.1, .2, .3), each probing the
/// processes of its own cgroup per container; one Prometheus scrapes all
/// three; PromQL sums by function and by container are exact.
#[test]
fn three_agents_scraped_by_one_prometheus_sum_exactly() {
    let _s = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    require_root();
    let prometheus = Path::new("/usr/bin/prometheus");
    if !host_tool(prometheus, "prometheus") {
        return;
    }
    let Some(root) = hierarchy() else {
        skip("three agents", "no cgroup v2 hierarchy here, and none can be mounted");
        return;
    };
    let top = Made::new(root.join(format!("sonde-nodes-{}", std::process::id())));
    let pod = "0f3e6a41-1b2c-4d5e-8f90-a1b2c3d4e5f6";
    // Node 1: a Docker container; node 2: another; node 3: a pod's
    // containerd container and a plain service.
    let (n1, n2, n3) = (top.0.join("node1"), top.0.join("node2"), top.0.join("node3"));
    let c1 = n1.join(format!("docker-{}.scope", id('1')));
    let c2 = n2.join(format!("docker-{}.scope", id('2')));
    let c3 = n3.join(format!(
        "kubepods.slice/kubepods-pod{}.slice/cri-containerd-{}.scope",
        pod.replace('-', "_"),
        id('3')
    ));
    let plain = n3.join("plain.service");
    let _made = [&c1, &c2, &c3, &plain].map(|p| Made::new(p.to_path_buf()));
    let dir = work_dir("fleet-nodes");
    let mut agents = Vec::new();
    let mut targets = Vec::new();
    for (i, node) in [&n1, &n2, &n3].into_iter().enumerate() {
        let host = format!("127.0.0.{}", i + 1);
        let port = free_port();
        let config: PathBuf = dir.join(format!("node{}.toml", i + 1));
        write(&config, &config_text(&host, port, &["fx_*"], node));
        agents.push(Agent::start_at(&config, &host, port));
        targets.push(format!("{host}:{port}"));
    }
    let prom = Prometheus::scraping(prometheus, &dir, &targets);
    go(pie_in(&c1));
    for _ in 0..2 {
        go(pie_in(&c2));
    }
    for _ in 0..3 {
        go(pie_in(&c3));
    }
    go(pie_in(&plain));
    // 7 runs in all: fx_delta 28.
    let by_function = prom.wait_for("sum by (function) (sonde_calls_total)", |rows| {
        rows.iter()
            .find(|r| r["metric"]["function"] == "fx_delta")
            .and_then(number)
            == Some(28.0)
    });
    for (f, per_run) in [
        ("fx_alpha", 1.0),
        ("fx_beta", 2.0),
        ("fx_gamma", 3.0),
        ("fx_delta", 4.0),
    ] {
        let got = by_function
            .iter()
            .find(|r| r["metric"]["function"] == f)
            .and_then(number);
        assert_eq!(got, Some(7.0 * per_run), "{f}: {by_function:?}");
    }
    let q = "sum by (container_id, pod_uid) (sonde_calls_total{function=\"fx_delta\"})";
    let by_container = prom.wait_for(q, |rows| rows.len() == 4);
    let mut got: Vec<(String, String, f64)> = by_container
        .iter()
        .map(|r| {
            (
                r["metric"]["container_id"].as_str().unwrap_or("").to_string(),
                r["metric"]["pod_uid"].as_str().unwrap_or("").to_string(),
                number(r).unwrap_or(-1.0),
            )
        })
        .collect();
    got.sort_by(|a, b| a.0.cmp(&b.0));
    let want = vec![
        (String::new(), String::new(), 4.0),
        (id('1'), String::new(), 4.0),
        (id('2'), String::new(), 8.0),
        (id('3'), pod.to_string(), 12.0),
    ];
    assert_eq!(got, want, "{by_container:?}");
    // Three nodes, each its own instance.
    let up = prom.wait_for("sum(up{job=\"sonde\"})", |rows| {
        rows.first().and_then(number) == Some(3.0)
    });
    assert_eq!(up.first().and_then(number), Some(3.0));
    drop(prom);
    drop(agents);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `[web]`: /metrics over TLS with basic auth. curl with the CA and the
/// user's password gets exact counts; no credentials, a wrong password or
/// plain HTTP get nothing; Prometheus scrapes it over HTTPS with the user.
#[test]
fn metrics_over_tls_with_basic_auth() {
    let _s = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    require_root();
    let prometheus = Path::new("/usr/bin/prometheus");
    let tools = [
        (prometheus, "prometheus"),
        (Path::new("/usr/bin/curl"), "curl"),
        (Path::new("/usr/bin/openssl"), "openssl"),
    ];
    if !tools.iter().all(|(t, p)| host_tool(t, p)) {
        return;
    }
    let dir = work_dir("fleet-tls");
    let (cert, key) = (dir.join("tls.crt"), dir.join("tls.key"));
    let made = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
        ])
        .args(["-subj", "/CN=sonde-test", "-addext", "subjectAltName=IP:127.0.0.1"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl");
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let password = "correct horse battery staple";
    let mut hashing = std::process::Command::new(sonde_bin())
        .args(["serve", "--hash-password"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("sonde serve --hash-password");
    {
        use std::io::Write;
        let mut stdin = hashing.stdin.take().expect("stdin");
        writeln!(stdin, "{password}").expect("password");
    }
    let out = hashing.wait_with_output().expect("hash");
    let hash = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(out.status.success() && hash.starts_with("$2"), "{hash}");
    let port = free_port();
    let config = dir.join("serve.toml");
    write(
        &config,
        &format!(
            "listen = \"127.0.0.1:{port}\"\n\n[web.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n\n[web.basic_auth_users]\nprom = '{hash}'\n\n[[probe]]\nbinary = \"{}\"\nfunctions = [\"fx_*\"]\n",
            cert.display(),
            key.display(),
            fixtures().join("fixture-pie").display()
        ),
    );
    let _agent = Agent::spawn(&config, "127.0.0.1", port);
    let url = format!("https://127.0.0.1:{port}/metrics");
    // (HTTP status, body) of a curl with the CA and `extra` arguments.
    let curl = |extra: &[&str]| -> (String, String) {
        let out = std::process::Command::new("curl")
            .args(["-sS", "--max-time", "10", "-o", "-", "-w", "\n%{http_code}", "--cacert"])
            .arg(&cert)
            .args(extra)
            .arg(&url)
            .output()
            .expect("curl");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
        (code.to_string(), body.to_string())
    };
    let user = format!("prom:{password}");
    let start = std::time::Instant::now();
    loop {
        let (code, body) = curl(&["-u", &user]);
        if code == "200" && body.contains("sonde_configuration_applied 1") {
            break;
        }
        assert!(
            start.elapsed().as_secs() < 20,
            "the agent never answered over TLS: {code} {body}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert_eq!(curl(&[]).0, "401", "no credentials");
    assert_eq!(curl(&["-u", "prom:wrong"]).0, "401", "a wrong password");
    assert_eq!(curl(&["-u", &format!("other:{password}")]).0, "401", "an unknown user");
    let plain = get(port, "/metrics", "*/*").map(|(_, body)| body).unwrap_or_default();
    assert!(
        !plain.contains("sonde_calls_total"),
        "plain HTTP gets no metrics: {plain}"
    );
    run_fixture(&fixtures().join("fixture-pie"), &[]);
    let start = std::time::Instant::now();
    let delta = loop {
        let s = samples(&curl(&["-u", &user]).1);
        let n = s
            .iter()
            .find(|(k, _)| k.starts_with("sonde_calls_total{") && k.contains("function=\"fx_delta\""))
            .map(|(_, v)| *v);
        if n >= Some(4.0) || start.elapsed().as_secs() > 20 {
            break n;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert_eq!(delta, Some(4.0));
    let job = format!(
        "    scheme: https\n    tls_config:\n      ca_file: {}\n    basic_auth:\n      username: prom\n      password: '{password}'\n",
        cert.display()
    );
    let prom = Prometheus::scraping_with(prometheus, &dir, &[format!("127.0.0.1:{port}")], &job);
    let rows = prom.wait_for("sonde_calls_total{function=\"fx_delta\"}", |rows| {
        rows.first().and_then(number) == Some(4.0)
    });
    assert_eq!(rows.len(), 1, "{rows:?}");
    drop(prom);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A `cgroup` probe without `pid` or `container` finds its binary as the
/// cgroup's process sees it (a bare library name in its maps) and counts
/// that cgroup's calls only.
#[test]
fn a_cgroup_probe_finds_its_binary_as_the_cgroups_processes_see_it() {
    let _s = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    require_root();
    let Some(root) = hierarchy() else {
        skip("cgroup probes", "no cgroup v2 hierarchy here, and none can be mounted");
        return;
    };
    let top = Made::new(root.join(format!("sonde-fleet-lib-{}", std::process::id())));
    let cgroup = top.0.join(format!("libpod-{}.scope", id('f')));
    let _made = Made::new(cgroup.clone());
    // Waiting in the cgroup, libvers.so mapped.
    let inside = pie_in(&cgroup);
    let dir = work_dir("fleet-lib");
    let config = dir.join("serve.toml");
    let port = free_port();
    write(
        &config,
        &format!(
            "listen = \"127.0.0.1:{port}\"\nretry_seconds = 1\n\n[[probe]]\nbinary = \"libvers.so\"\nfunctions = [\"vers_add\"]\ncgroup = \"{}\"\ncontainer_labels = true\n",
            cgroup.display()
        ),
    );
    let agent = Agent::start(&config, port);
    agent.wait_until(
        |s| s.iter().any(|(k, v)| k == "sonde_attached_functions" && *v == 1.0),
        "vers_add of the cgroup's libvers.so attached",
    );
    run_fixture(&fixtures().join("fixture-pie"), &[]); // outside: not counted
    go(inside);
    let s = agent.wait_until(|s| calls_in(s, "vers_add", &id('f')).is_some(), "vers_add counted");
    assert_eq!(calls_in(&s, "vers_add", &id('f')), Some(5.0), "{s:?}");
    assert_eq!(calls_in(&s, "vers_add", ""), None, "nothing outside the cgroup");
    assert!(
        s.iter()
            .any(|(k, _)| k.starts_with("sonde_calls_total{") && k.contains("binary=\"libvers.so\"")),
        "{s:?}"
    );
    drop(agent);
    let _ = std::fs::remove_dir_all(&dir);
}
