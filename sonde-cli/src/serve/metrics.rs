//! Metrics read at each scrape from the jobs' maps (`prometheus-client`
//! collector): the cost is a few map lookups per function, whatever the call
//! rate.
//!
//! | metric | type | labels |
//! | --- | --- | --- |
//! | `sonde_calls_total` | counter | `binary`, `function` (and `container_id`, `pod_uid` for `container_labels` probes: empty outside a container) |
//! | `sonde_container_calls_lost_total` | counter | calls of `container_labels` probes the (function, cgroup) map had no room for |
//! | `sonde_call_duration_seconds` | histogram (four buckets per power of two: 2^o × (1 + q/4) ns, 640 ns to 68.7 s) | `binary`, `function` |
//! | `sonde_untimed_calls` | gauge | `binary`, `function`: timed calls entered whose return was not seen (running now, or nested deeper than the kernel's 64 return probes) |
//! | `sonde_probe_info` | gauge 1 | `binary`, `function`, `tier`, `session` |
//! | `sonde_attach_errors_total` | counter | `binary` |
//! | `sonde_attached_functions`, `sonde_attached_groups`, `sonde_pending_probes` | gauge | |
//! | `sonde_configuration_applied` | gauge | 0 while a configuration is being resolved and attached, else 1 |
//! | `sonde_probes` | gauge | `state`: `attached` or `pending` (configured probes) |
//! | `sonde_build_info` | gauge 1 | `version`, `kernel` |
//! | `sonde_attach_duration_seconds`, `sonde_detach_duration_seconds` | histogram | each batch of probes attached together (one file, one scope), each group detached |
//! | `sonde_scrape_collect_duration_seconds` | gauge | the previous scrape's reading of the maps and encoding |

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};
use sonde::SessionMode;

use super::agent::{Agent, State};
use super::config::Scope;
use super::http::Answer;
use super::series::{container_rows, histogram, Histogram, Labels};
use crate::human::label_value;
use crate::probes::{Counts, Map, Timing};

/// The registry with the agent's collector.
pub fn registry(agent: Arc<Mutex<Agent>>) -> Registry {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(AgentCollector(agent)));
    registry
}

#[derive(Debug)]
struct AgentCollector(Arc<Mutex<Agent>>);

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent").field("probes", &self.probes.len()).finish()
    }
}

/// Calls a full (cookie, cgroup) map had no room for, all container scopes.
fn container_calls_lost(agent: &Agent) -> u64 {
    agent
        .jobs
        .values()
        .filter(|j| j.containers)
        .filter_map(|j| Map::ByLost.counters(j.count.job.object()).ok()?.get(0).ok())
        .map(|per_cpu| per_cpu.iter().sum::<u64>())
        .sum()
}

/// One function's figures.
struct Row {
    binary: String,
    function: String,
    tier: &'static str,
    session: &'static str,
    calls: u64,
    /// `container_labels`: calls by container (they sum to `calls`).
    containers: Option<BTreeMap<Labels, u64>>,
    duration: Option<Histogram>,
}

/// A scope's counters and timing maps.
type ScopeMaps = (
    Option<Counts>,
    Option<Timing>,
    Option<BTreeMap<u32, BTreeMap<Labels, u64>>>,
);

fn collect(agent: &mut Agent) -> Vec<Row> {
    let mut rows = Vec::new();
    let mut seen = BTreeSet::new();
    // Each scope's maps, opened once per scrape.
    let mut opened: BTreeMap<Scope, ScopeMaps> = BTreeMap::new();
    let Agent {
        probes,
        jobs,
        carried,
        names,
        ..
    } = agent;
    for (probe, state) in probes.iter() {
        let State::Attached(a) = state else { continue };
        let scope = probe.scope();
        let Some(jobs) = jobs.get(&scope) else {
            continue;
        };
        let (counts, timing, by_container) = opened.entry(scope.clone()).or_insert_with(|| {
            let counts = Counts::open(jobs.count.job.object()).ok();
            let by_container = jobs.containers.then(|| container_rows(jobs, names, |_| true, false));
            (
                counts,
                jobs.latency.as_ref().and_then(|l| Timing::open(l.job.object()).ok()),
                by_container,
            )
        });
        let timing = timing
            .as_ref()
            .filter(|_| a.latency.is_some())
            .zip(jobs.latency.as_ref().map(|l| &l.job));
        for f in &a.series {
            // A function two probes of one scope select is reported once.
            if !seen.insert((scope.clone(), &probe.binary, &f.function)) {
                continue;
            }
            let carried = carried.get(&(scope.clone(), probe.binary.clone(), f.function.clone()));
            let containers = by_container.as_ref().map(|rows| {
                let mut now = rows.get(&f.count_cookie).cloned().unwrap_or_default();
                for (k, n) in carried.map(|c| &c.containers).into_iter().flatten() {
                    *now.entry(k.clone()).or_insert(0) += n;
                }
                now
            });
            let calls = match &containers {
                Some(c) => c.values().sum(),
                None => {
                    counts.as_ref().and_then(|m| m.get(f.count_cookie).ok()).unwrap_or(0)
                        + carried.map_or(0, |c| c.calls)
                }
            };
            let duration = match (&timing, f.timing_cookie) {
                (Some((t, _)), Some(c)) => t.get(c).ok().map(|d| {
                    let mut h = histogram(&d);
                    if let Some(before) = carried.and_then(|c| c.duration.as_ref()) {
                        h.add(before);
                    }
                    h
                }),
                _ => None,
            };
            rows.push(Row {
                binary: label_value(&probe.binary),
                function: f.function.clone(),
                tier: a.tier.name(),
                session: a.session.map_or("none", SessionMode::short_name),
                calls,
                containers,
                duration,
            });
        }
    }
    rows
}

impl Collector for AgentCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let started = std::time::Instant::now();
        let mut agent = super::agent::lock(&self.0);
        let result = encode_all(&mut agent, &mut encoder);
        agent.timings.last_scrape = Some(started.elapsed());
        result
    }
}

/// The agent's self-metrics: build, probes by state, its own durations.
fn encode_self(agent: &Agent, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
    let kernel = sonde::Features::current().kernel_release.clone();
    encoder
        .encode_descriptor(
            "sonde_build_info",
            "1, labelled with this agent's version and the running kernel.",
            None,
            MetricType::Gauge,
        )?
        .encode_family(&[
            ("version", env!("CARGO_PKG_VERSION")),
            ("kernel", label_value(&kernel).as_str()),
        ])?
        .encode_gauge(&1i64)?;
    let pending = agent.pending() as i64;
    {
        let mut probes = encoder.encode_descriptor(
            "sonde_probes",
            "Configured probes by state: attached, or pending (retried).",
            None,
            MetricType::Gauge,
        )?;
        probes
            .encode_family(&[("state", "attached")])?
            .encode_gauge(&(agent.probes.len() as i64 - pending))?;
        probes.encode_family(&[("state", "pending")])?.encode_gauge(&pending)?;
    }
    for (name, help, h) in [
        (
            "sonde_attach_duration",
            "Time to attach each batch of probes applied together (one file, one scope), resolution excluded.",
            &agent.timings.attach,
        ),
        (
            "sonde_detach_duration",
            "Time each group of functions took to detach (on background threads; per-target tiers wait ~0.1 s a probe).",
            &agent.timings.detach,
        ),
    ] {
        let count: u64 = h.counts.iter().sum();
        encoder
            .encode_descriptor(name, help, Some(&Unit::Seconds), MetricType::Histogram)?
            .encode_histogram::<NoLabelSet>(h.sum, count, &h.buckets(), None)?;
    }
    if let Some(d) = agent.timings.last_scrape {
        encoder
            .encode_descriptor(
                "sonde_scrape_collect_duration",
                "Time the previous scrape took to read the maps and encode the metrics.",
                Some(&Unit::Seconds),
                MetricType::Gauge,
            )?
            .encode_gauge(&d.as_secs_f64())?;
    }
    Ok(())
}

fn encode_all(agent: &mut Agent, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
    encode_self(agent, encoder)?;
    {
        let rows = collect(agent);
        {
            let mut calls = encoder.encode_descriptor(
                "sonde_calls",
                "Calls of the probed function (entries) since the agent started: kept across reloads, re-attaches and binaries replaced on disk.",
                None,
                MetricType::Counter,
            )?;
            for r in &rows {
                let labels = [("binary", r.binary.as_str()), ("function", r.function.as_str())];
                let Some(containers) = &r.containers else {
                    calls
                        .encode_family(&labels)?
                        .encode_counter::<NoLabelSet, _, u64>(&r.calls, None)?;
                    continue;
                };
                for ((id, pod), n) in containers {
                    let labels = [
                        labels[0],
                        labels[1],
                        ("container_id", id.as_str()),
                        ("pod_uid", pod.as_str()),
                    ];
                    calls
                        .encode_family(&labels)?
                        .encode_counter::<NoLabelSet, _, u64>(n, None)?;
                }
            }
        }
        {
            let mut duration = encoder.encode_descriptor(
                "sonde_call_duration",
                "Time from entry to return of the probed function (four buckets per power of two).",
                Some(&Unit::Seconds),
                MetricType::Histogram,
            )?;
            for r in &rows {
                let Some(h) = &r.duration else {
                    continue;
                };
                let labels = [("binary", r.binary.as_str()), ("function", r.function.as_str())];
                duration
                    .encode_family(&labels)?
                    .encode_histogram::<NoLabelSet>(h.sum, h.count, &h.buckets, None)?;
            }
        }
        {
            let mut untimed = encoder.encode_descriptor(
                "sonde_untimed_calls",
                "Timed calls entered whose return was not seen: running now, or nested deeper than the kernel's 64 return probes per thread.",
                None,
                MetricType::Gauge,
            )?;
            for r in &rows {
                let Some(h) = &r.duration else {
                    continue;
                };
                let labels = [("binary", r.binary.as_str()), ("function", r.function.as_str())];
                untimed.encode_family(&labels)?.encode_gauge(&(h.untimed as i64))?;
            }
        }
        {
            let mut info = encoder.encode_descriptor(
                "sonde_probe_info",
                "One per probed function: the attach tier, and how its timing session runs.",
                None,
                MetricType::Gauge,
            )?;
            for r in &rows {
                let labels = [
                    ("binary", r.binary.as_str()),
                    ("function", r.function.as_str()),
                    ("tier", r.tier),
                    ("session", r.session),
                ];
                info.encode_family(&labels)?.encode_gauge(&1i64)?;
            }
        }
        {
            let mut errors = encoder.encode_descriptor(
                "sonde_attach_errors",
                "Failed attaches (binary missing, no function matched, kernel refusal), by configured binary.",
                None,
                MetricType::Counter,
            )?;
            for (binary, n) in &agent.attach_errors {
                errors
                    .encode_family(&[("binary", label_value(binary).as_str())])?
                    .encode_counter::<NoLabelSet, _, u64>(n, None)?;
            }
        }
        encoder
            .encode_descriptor(
                "sonde_container_calls_lost",
                "Calls of `container_labels` probes not counted: the (function, cgroup) map was full (raise max_container_series).",
                None,
                MetricType::Counter,
            )?
            .encode_counter::<NoLabelSet, _, u64>(&container_calls_lost(agent), None)?;
        let attached = agent.attached_functions() as i64;
        encoder
            .encode_descriptor(
                "sonde_attached_functions",
                "Functions attached now.",
                None,
                MetricType::Gauge,
            )?
            .encode_gauge(&attached)?;
        encoder
            .encode_descriptor(
                "sonde_attached_groups",
                "Groups of functions attached together (one link each on the multi tier): one per binary, scope and configuration change, not per probe.",
                None,
                MetricType::Gauge,
            )?
            .encode_gauge(&(agent.groups() as i64))?;
        let pending = agent.pending() as i64;
        encoder
            .encode_descriptor(
                "sonde_pending_probes",
                "Configured probes not attached (retried).",
                None,
                MetricType::Gauge,
            )?
            .encode_gauge(&pending)?;
        encoder
            .encode_descriptor(
                "sonde_configuration_applied",
                "1 once the configuration in force has been resolved and attached (0 while it is: the figures above are partial).",
                None,
                MetricType::Gauge,
            )?
            .encode_gauge(&i64::from(agent.applied))?;
        Ok(())
    }
}

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Answers one HTTP `GET`: `/metrics` (OpenMetrics when the `Accept` header
/// asks for it, else Prometheus text), `/` each probe's state, else 404.
pub fn answer(path: &str, accept: &str, registry: &Registry, agent: &Mutex<Agent>) -> Answer {
    let (status, content_type, body) = match path {
        "/metrics" => {
            let mut text = String::new();
            match prometheus_client::encoding::text::encode(&mut text, registry) {
                Ok(()) if accept.contains("application/openmetrics-text") => (200, OPENMETRICS, text),
                Ok(()) => (200, PROMETHEUS_TEXT, to_prometheus_text(&text)),
                Err(e) => (500, "text/plain", format!("encoding failed: {e}\n")),
            }
        }
        "/" => (
            200,
            "text/plain; charset=utf-8",
            format!(
                "sonde serve: metrics at /metrics\n\n{}",
                super::agent::lock(agent).status()
            ),
        ),
        _ => (404, "text/plain", "not found: try /metrics\n".to_string()),
    };
    Answer {
        status,
        content_type,
        body,
    }
}

/// OpenMetrics text as the Prometheus text format (0.0.4) says it: no `# EOF`
/// or `# UNIT`, and counters' metadata named with their `_total` samples.
pub fn to_prometheus_text(openmetrics: &str) -> String {
    let mut counters = BTreeSet::new();
    for l in openmetrics.lines() {
        if let Some(name) = l.strip_prefix("# TYPE ").and_then(|r| r.strip_suffix(" counter")) {
            counters.insert(name.to_string());
        }
    }
    let mut out = String::with_capacity(openmetrics.len());
    for l in openmetrics.lines() {
        if l == "# EOF" || l.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# TYPE ", "# HELP "].iter().find_map(|p| {
            let rest = l.strip_prefix(p)?;
            let (name, tail) = rest.split_once(' ')?;
            counters.contains(name).then(|| format!("{p}{name}_total {tail}"))
        });
        out.push_str(renamed.as_deref().unwrap_or(l));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label_value("SSL_write"), "SSL_write");
        assert_eq!(
            label_value("x\"} 1\nsonde_calls_total{function=\"y\\"),
            "x\\\"} 1\\nsonde_calls_total{function=\\\"y\\\\"
        );
    }

    #[test]
    fn openmetrics_becomes_prometheus_text() {
        let om = "# HELP sonde_calls Calls.\n# TYPE sonde_calls counter\nsonde_calls_total{a=\"b\"} 3\n# HELP d Time.\n# TYPE d_seconds histogram\n# UNIT d_seconds seconds\nd_seconds_sum 0.5\n# EOF\n";
        let text = to_prometheus_text(om);
        assert_eq!(
            text,
            "# HELP sonde_calls_total Calls.\n# TYPE sonde_calls_total counter\nsonde_calls_total{a=\"b\"} 3\n# HELP d Time.\n# TYPE d_seconds histogram\nd_seconds_sum 0.5\n"
        );
    }
}
