//! #27: cgroups as the unit of scope. `--cgroup PATH` counts the processes of a
//! cgroup v2 and of every cgroup below it (one created after sonde started
//! too), filtered in the program by `bpf_get_current_cgroup_id`; the processes
//! of a sibling cgroup running the same binary are not counted.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use sonde_tests::cgroups::{go, hierarchy, pie_in, Made};
use sonde_tests::{finish_within, fixtures, link_count, require_root, skip, sonde_bin, until_attached};

/// Tests here attach and count links: one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// fixture-pie per run.
const PER_RUN: [(&str, u64); 4] = [("fx_alpha", 1), ("fx_beta", 2), ("fx_gamma", 3), ("fx_delta", 4)];

fn counts(out: &str) -> Vec<(String, u64)> {
    let v: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    let mut rows: Vec<(String, u64)> = v["functions"]
        .as_array()
        .expect("functions")
        .iter()
        .map(|f| {
            (
                f["name"].as_str().unwrap_or("").to_string(),
                f["count"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    rows.sort();
    rows
}

fn times(n: u64) -> Vec<(String, u64)> {
    let mut rows: Vec<(String, u64)> = PER_RUN.iter().map(|(f, c)| (f.to_string(), c * n)).collect();
    rows.sort();
    rows
}

#[test]
fn a_cgroup_and_its_descendants_count_and_no_other() {
    let _s = serial();
    require_root();
    let Some(root) = hierarchy() else {
        skip("--cgroup", "no cgroup v2 hierarchy here, and none can be mounted");
        return;
    };
    let top = Made::new(root.join(format!("sonde-test-{}", std::process::id())));
    let (a, b) = (top.0.join("a"), top.0.join("b"));
    let _made = (Made::new(a.clone()), Made::new(b.clone()));
    let pie = fixtures().join("fixture-pie");
    let (in_a, in_b) = (pie_in(&a), pie_in(&b));
    // Every process that runs the binary is probed; the program keeps a's.
    let relative = a.strip_prefix(&root).expect("under the hierarchy").to_path_buf();
    for (name, path) in [("absolute", a.clone()), ("relative to the mount", relative)] {
        let mut child = Command::new(sonde_bin())
            .arg("count")
            .arg("--json")
            .arg("--cgroup")
            .arg(&path)
            .arg(&pie)
            .arg("fx_[abgd]*")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn sonde");
        let err = until_attached(&mut child);
        if name == "absolute" {
            // A cgroup made below a after sonde started counts too (the
            // program's set of ids is refreshed every half second).
            let c = a.join("c");
            std::fs::create_dir(&c).expect("mkdir a/c");
            std::thread::sleep(Duration::from_millis(1200));
            let in_c = pie_in(&c);
            go(in_c);
            go(pie_in(&a));
            go(pie_in(&b));
            // SAFETY: signals our own child.
            unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
            let (code, out, rest) = finish_within(&mut child, err, Duration::from_secs(30));
            assert_eq!(code, Some(130), "{rest}");
            assert_eq!(counts(&out), times(2), "{name}: a and a/c, not b");
        } else {
            go(pie_in(&b));
            go(pie_in(&a));
            // SAFETY: as above.
            unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
            let (code, out, rest) = finish_within(&mut child, err, Duration::from_secs(30));
            assert_eq!(code, Some(130), "{rest}");
            assert_eq!(counts(&out), times(1), "{name}: a only");
        }
    }
    // The first two, waiting all along, still count nowhere.
    go(in_a);
    go(in_b);
}

#[test]
fn a_cgroup_that_cannot_be_used_is_refused_before_anything_attaches() {
    let _s = serial();
    require_root();
    let before = link_count();
    let pie = fixtures().join("fixture-pie");
    for (cgroup, says) in [
        ("/proc", "not a cgroup v2 directory"),
        ("/no/such/cgroup", "no cgroup /no/such/cgroup"),
    ] {
        let out = Command::new(sonde_bin())
            .args(["count", "-d", "1", "--cgroup", cgroup])
            .arg(&pie)
            .arg("fx_*")
            .output()
            .expect("sonde");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains(says), "{err}");
    }
    assert_eq!(link_count(), before, "nothing attached");
}

/// `--by cgroup`: calls per cgroup, named by its path under the hierarchy's
/// mount; with `--cgroup` over their parent, a sibling's calls are apart.
#[test]
fn by_cgroup_breaks_calls_down_by_the_callers_cgroup() {
    let _s = serial();
    require_root();
    let Some(root) = hierarchy() else {
        skip("--by cgroup", "no cgroup v2 hierarchy here, and none can be mounted");
        return;
    };
    let top = Made::new(root.join(format!("sonde-test-by-{}", std::process::id())));
    let (a, b) = (top.0.join("a"), top.0.join("b"));
    let _made = (Made::new(a.clone()), Made::new(b.clone()));
    let v = count_by("cgroup", &top.0, || {
        go(pie_in(&a));
        go(pie_in(&b));
        go(pie_in(&b));
    });
    let mut rows: Vec<(String, String, u64)> = v["functions"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap_or("").to_string(),
                r["cgroup"].as_str().unwrap_or("").to_string(),
                r["count"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    rows.sort();
    let out = v.to_string();
    let name = |c: &Path| format!("/{}", c.strip_prefix(&root).expect("under the mount").display());
    let mut want = vec![
        ("fx_alpha".to_string(), name(&a), 1),
        ("fx_alpha".to_string(), name(&b), 2),
        ("fx_delta".to_string(), name(&a), 4),
        ("fx_delta".to_string(), name(&b), 8),
    ];
    want.sort();
    assert_eq!(rows, want, "{out}");
}

/// `sonde count --json --by BY --cgroup TOP fixture-pie 'fx_[ad]*'`, while
/// `run` runs the fixture in TOP's cgroups; the report.
fn count_by(by: &str, top: &Path, run: impl FnOnce()) -> Value {
    let mut child = Command::new(sonde_bin())
        .args(["count", "--json", "--by", by, "--cgroup"])
        .arg(top)
        .arg(fixtures().join("fixture-pie"))
        .arg("fx_[ad]*")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sonde");
    let err = until_attached(&mut child);
    run();
    // SAFETY: signals our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let (code, out, rest) = finish_within(&mut child, err, Duration::from_secs(30));
    assert_eq!(code, Some(130), "{rest}");
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// `--by container`: cgroups named as Docker (systemd driver) and containerd
/// under a Kubernetes pod name them, a cgroup made inside a container counts
/// as that container (one row, not two), a plain cgroup is no container.
#[test]
fn by_container_names_each_runtimes_container_and_merges_its_cgroups() {
    let _s = serial();
    require_root();
    let Some(root) = hierarchy() else {
        skip("--by container", "no cgroup v2 hierarchy here, and none can be mounted");
        return;
    };
    let top = Made::new(root.join(format!("sonde-test-containers-{}", std::process::id())));
    let docker_id = "d0c4e7".repeat(10) + "abcd";
    let cri_id = "c41".repeat(21) + "f";
    let pod = "0f3e6a41-1b2c-4d5e-8f90-a1b2c3d4e5f6";
    let docker = top.0.join(format!("docker-{docker_id}.scope"));
    let inner = docker.join("inner");
    let cri = top.0.join(format!(
        "kubepods.slice/kubepods-pod{}.slice/cri-containerd-{cri_id}.scope",
        pod.replace('-', "_")
    ));
    let plain = top.0.join("plain.service");
    let _made = [&docker, &inner, &cri, &plain].map(|p| Made::new(p.to_path_buf()));
    let v = count_by("container", &top.0, || {
        go(pie_in(&docker));
        go(pie_in(&inner));
        go(pie_in(&cri));
        go(pie_in(&cri));
        go(pie_in(&cri));
        go(pie_in(&plain));
    });
    let mut rows: Vec<(String, Value, u64)> = v["functions"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap_or("").to_string(),
                r["container"].clone(),
                r["count"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    rows.sort_by(|a, b| (&a.0, a.2).cmp(&(&b.0, b.2)));
    let d = serde_json::json!({"runtime": "docker", "id": docker_id, "pod_uid": null});
    let c = serde_json::json!({"runtime": "containerd", "id": cri_id, "pod_uid": pod});
    let want = vec![
        ("fx_alpha".to_string(), Value::Null, 1),
        ("fx_alpha".to_string(), d.clone(), 2),
        ("fx_alpha".to_string(), c.clone(), 3),
        ("fx_delta".to_string(), Value::Null, 4),
        ("fx_delta".to_string(), d, 8),
        ("fx_delta".to_string(), c, 12),
    ];
    assert_eq!(rows, want, "{v}");
}
