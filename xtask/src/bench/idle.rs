//! The idle node: what a fleet pays for on most of its nodes, most of the
//! time. Sockets with the default sysctls (no probe due in the window), the
//! agent at its defaults, its CPU over the window past its first
//! inventories, at each size of node, so that the slope shows: sockets in
//! one namespace, and the same sockets spread over processes in namespaces
//! of their own (pods).

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{Agent, Netns, hold, tcp_keepalive_counter, verdict};

/// One node's shape, and its target (% of a core).
struct Shape {
    name: &'static str,
    connections: usize,
    namespaces: usize,
    processes_per_namespace: usize,
    target_percent: f64,
}

const SHAPES: [Shape; 3] = [
    Shape {
        name: "20k sockets",
        connections: 10_000,
        namespaces: 1,
        processes_per_namespace: 2,
        target_percent: 0.1,
    },
    Shape {
        name: "500 processes in 50 namespaces (20k sockets)",
        connections: 10_000,
        namespaces: 50,
        processes_per_namespace: 10,
        target_percent: 0.2,
    },
    Shape {
        name: "250k sockets",
        connections: 125_000,
        namespaces: 1,
        processes_per_namespace: 16,
        target_percent: 0.2,
    },
];

/// The agent's slowest periodic work, the reconciliation inventory
/// (`--reconcile-seconds`, 120): a window holds at least one, so that the
/// figure is its average cost, not the quiet between two.
const LEAST_WINDOW: Duration = Duration::from_secs(125);

/// Every shape (in `--quick`, the two of 20k sockets).
pub fn step(window: Duration, quick: bool) -> anyhow::Result<Value> {
    let window = window.max(LEAST_WINDOW);
    let shapes = SHAPES.iter().take(if quick { 2 } else { SHAPES.len() });
    let mut figures = Vec::new();
    for shape in shapes {
        eprintln!(
            "bench: idle node, {}, default sysctls, for {window:?}…",
            shape.name
        );
        figures.push(idle_node(shape, window)?);
    }
    Ok(Value::Array(figures))
}

fn idle_node(shape: &Shape, window: Duration) -> anyhow::Result<Value> {
    let per_namespace = shape.connections / shape.namespaces;
    let per_process = per_namespace.div_ceil(shape.processes_per_namespace);
    let mut namespaces = Vec::new();
    let mut held: Option<hold::Holders> = None;
    for i in 0..shape.namespaces {
        let ns = Netns::new(&format!("kabenchidle{i}"))?;
        let h = hold::Holders::spawn_by(&ns.0, per_namespace, per_process, hold::Timing::Sysctl)?;
        held = Some(match held {
            Some(all) => all.join(h),
            None => h,
        });
        namespaces.push(ns);
    }
    let max_sockets = (4 * shape.connections + 1024).to_string();
    let agent = Agent::start(&["--max-sockets", &max_sockets])?;
    // The first inventories after the connections came are not idle work.
    std::thread::sleep(Duration::from_secs(12));
    let probes = || -> anyhow::Result<u64> {
        namespaces
            .iter()
            .map(|ns| ns.run(tcp_keepalive_counter))
            .sum()
    };
    let before = probes()?;
    let (cpu0, _, _) = agent.usage();
    let t0 = Instant::now();
    std::thread::sleep(window);
    let elapsed = t0.elapsed().as_secs_f64();
    let (cpu1, rss, peak_rss) = agent.usage();
    let probes = probes()? - before;
    drop(held);
    agent.stop()?;
    Ok(json!({
        "shape": shape.name,
        "connections": shape.connections,
        "sockets": 2 * shape.connections,
        "namespaces": shape.namespaces,
        "processes": shape.namespaces * shape.processes_per_namespace,
        "target_percent": shape.target_percent,
        "window_s": elapsed,
        "kernel_probes": probes,
        "agent_cpu_percent": 100.0 * (cpu1 - cpu0) / elapsed,
        "agent_rss_mib": rss,
        "agent_peak_rss_mib": peak_rss,
    }))
}

pub fn print(idle: &Value) {
    for shape in idle.as_array().into_iter().flatten() {
        let f = |k: &str| shape[k].as_f64().unwrap_or(f64::NAN);
        let (cpu, target) = (f("agent_cpu_percent"), f("target_percent"));
        println!(
            "target: idle node, {} (default sysctls, {:.0} s): agent CPU <= {target} % of a core: {} ({cpu:.2} %; RSS {:.1} MiB, peak {:.1} MiB; {} probes in the window)",
            shape["shape"].as_str().unwrap_or("?"),
            f("window_s"),
            verdict(cpu <= target),
            f("agent_rss_mib"),
            f("agent_peak_rss_mib"),
            shape["kernel_probes"],
        );
    }
}
