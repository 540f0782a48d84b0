//! The benchmark suite of BENCHMARKS.md: service-runtime side by side with a hand-written
//! task per service, `tokio-graceful-shutdown` and bare tokio/hyper baselines.
//!
//! ```sh
//! cargo bench --bench lifecycle -- --quick            # small N, few repetitions, < 1 minute
//! cargo bench --bench lifecycle                       # the full run (several minutes)
//! cargo bench --bench lifecycle -- --only health,status --reps 3
//! ```
//!
//! Sections (`--only` takes a comma-separated list): `lifecycle` (start/stop of N
//! services, ns and bytes per service), `status` (status reads), `health` (health
//! aggregation), `shutdown` (SIGTERM to exit), `probes` (HTTP probe throughput),
//! `compile` (build time of 50 derived services against 50 `#[async_trait]` impls) and
//! `instructions` (item 1 counted by callgrind, when valgrind is installed); the last two
//! in full mode only, or when named in `--only`.
//!
//! Every measurement runs in a fresh process: the binary re-executes itself with
//! `--child ...`, and the child prints `RESULT <label> key=value ...` lines that the
//! parent collects, takes the median of, and prints as Markdown tables (also written to
//! `target/lifecycle-bench.md`).

mod alloc;
mod compile;
mod health;
mod instructions;
mod lifecycle;
mod probes;
mod services;
mod shutdown;
mod status;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[global_allocator]
static ALLOCATOR: alloc::Counting = alloc::Counting;

/// One child's results: label -> (key -> value).
pub type Results = Vec<(String, BTreeMap<String, f64>)>;

/// A section of the report: runs its measurements, returns its Markdown.
type Section = fn(&Settings) -> String;

/// The settings of this run.
#[derive(Clone, Debug)]
pub struct Settings {
    pub quick: bool,
    /// Fresh processes per configuration.
    pub reps: usize,
    pub only: Option<Vec<String>>,
}

impl Settings {
    fn wants(&self, section: &str) -> bool {
        match &self.only {
            Some(only) => only.iter().any(|s| s == section),
            // The compile-time comparison builds crates, and the instruction counts run
            // under valgrind: full mode only unless asked for.
            None => !(self.quick && matches!(section, "compile" | "instructions")),
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(at) = args.iter().position(|a| a == "--child") {
        child(&args[at + 1..]);
        return;
    }
    // `cargo bench` passes `--bench`; libtest-style filters are ignored. Without it and
    // without options (`cargo test --benches` / `--all-targets` runs the binary bare, in
    // the test profile), only a smoke run: one process per configuration of item 1.
    let smoke = args.is_empty();
    if smoke {
        println!("(no --bench: smoke run; `cargo bench --bench lifecycle` measures)");
    }
    let quick = smoke || args.iter().any(|a| a == "--quick");
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|at| args.get(at + 1))
            .cloned()
    };
    let reps = value("--reps")
        .map(|r| r.parse().expect("--reps takes a number"))
        .unwrap_or(if smoke {
            1
        } else if quick {
            3
        } else {
            7
        });
    let only = if smoke {
        Some(vec!["lifecycle".to_owned()])
    } else {
        value("--only").map(|s| s.split(',').map(str::to_owned).collect())
    };
    let settings = Settings { quick, reps, only };

    let began = Instant::now();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# service-runtime benchmarks ({} mode, {} fresh processes per configuration)\n",
        if quick { "quick" } else { "full" },
        reps
    );
    let _ = writeln!(out, "{}\n", machine());
    print!("{out}");

    let sections: [(&str, Section); 7] = [
        ("lifecycle", lifecycle::run),
        ("instructions", instructions::run),
        ("status", status::run),
        ("health", health::run),
        ("shutdown", shutdown::run),
        ("probes", probes::run),
        ("compile", compile::run),
    ];
    for (name, run) in sections {
        if settings.wants(name) {
            let began = Instant::now();
            let section = run(&settings);
            let section = format!(
                "{section}\n_({name}: {:.1} s)_\n\n",
                began.elapsed().as_secs_f64()
            );
            print!("{section}");
            out.push_str(&section);
        }
    }
    let total = format!("Total: {:.1} s\n", began.elapsed().as_secs_f64());
    print!("{total}");
    out.push_str(&total);
    let path = target_dir().join("lifecycle-bench.md");
    if !smoke && std::fs::write(&path, &out).is_ok() {
        println!("(written to {})", path.display());
    }
}

/// Dispatches a child process: `--child <what> <args...>`.
fn child(args: &[String]) {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["lifecycle", variant, runtime, n] => {
            lifecycle::child(
                variant,
                runtime,
                n.parse().expect("N"),
                lifecycle::Heap::Off,
            );
        }
        ["lifecycle-heap", variant, runtime, n] => {
            lifecycle::child(
                variant,
                runtime,
                n.parse().expect("N"),
                lifecycle::Heap::Count,
            );
        }
        ["lifecycle-allocs", variant, runtime, n] => {
            lifecycle::child(
                variant,
                runtime,
                n.parse().expect("N"),
                lifecycle::Heap::Record,
            );
        }
        ["status", iterations] => status::child(iterations.parse().expect("iterations")),
        ["health", quick] => health::child(*quick == "quick"),
        ["demo", n, mode] => shutdown::child(n.parse().expect("N"), mode),
        ["probe-server", kind, rest @ ..] => probes::server(kind, rest),
        ["load", address, path, connections, seconds] => probes::load(
            address,
            path,
            connections.parse().expect("connections"),
            seconds.parse().expect("seconds"),
        ),
        other => panic!("unknown child command {other:?}"),
    }
}

/// Prints one result line for the parent.
pub fn report(label: &str, values: &[(&str, f64)]) {
    let mut line = format!("RESULT {label}");
    for (key, value) in values {
        let _ = write!(line, " {key}={value}");
    }
    println!("{line}");
}

/// Runs this binary as a child with `args`, bounded by `timeout`, and parses its results.
pub fn run_child(args: &[&str], timeout: Duration) -> Results {
    let exe = std::env::current_exe().expect("current_exe");
    let mut child = Command::new(exe)
        .arg("--child")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn the child");
    let mut stdout = child.stdout.take().expect("piped stdout");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait().expect("wait for the child") {
            Some(status) => {
                assert!(status.success(), "child {args:?} failed: {status}");
                break;
            }
            None if Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("child {args:?} ran longer than {timeout:?}");
            }
            None => std::thread::sleep(Duration::from_millis(2)),
        }
    }
    parse_results(&reader.join().expect("reader thread"))
}

pub fn parse_results(text: &str) -> Results {
    text.lines()
        .filter_map(|line| line.strip_prefix("RESULT "))
        .map(|line| {
            let mut parts = line.split_whitespace();
            let label = parts.next().unwrap_or_default().to_owned();
            let values = parts
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.parse().unwrap_or(f64::NAN)))
                .collect();
            (label, values)
        })
        .collect()
}

/// A field of `/proc/self/status` in KiB (`VmRSS`, `VmHWM`).
pub fn proc_status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

pub fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

/// The runtime of a configuration: `ct` (current-thread) or `mt` (multi-thread, one
/// worker per core).
pub fn runtime(kind: &str) -> tokio::runtime::Runtime {
    match kind {
        "ct" => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        "mt" => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build(),
        other => panic!("unknown runtime {other}"),
    }
    .expect("build the runtime")
}

/// A number with thousands separators and `decimals` decimals.
pub fn num(value: f64, decimals: usize) -> String {
    if !value.is_finite() {
        return "n/a".to_owned();
    }
    let text = format!("{value:.decimals$}");
    let (int, frac) = text
        .split_once('.')
        .map_or((text.as_str(), None), |(i, f)| (i, Some(f)));
    let (sign, digits) = int.strip_prefix('-').map_or(("", int), |d| ("-", d));
    let mut grouped = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(c);
    }
    match frac {
        Some(frac) => format!("{sign}{grouped}.{frac}"),
        None => format!("{sign}{grouped}"),
    }
}

/// A ratio as `1.23×`, with a mark when it meets (`✓`) or misses (`✗`) a target.
pub fn ratio(value: f64, target: Option<f64>) -> String {
    if !value.is_finite() {
        return "n/a".to_owned();
    }
    match target {
        Some(target) if value <= target => format!("{value:.2}× ✓"),
        Some(_) => format!("{value:.2}× ✗"),
        None => format!("{value:.2}×"),
    }
}

/// The targets of one of our variants: (÷ hand-written, ÷ tokio-graceful-shutdown).
///
/// The rows issue 13 budgets, one by one: a `#[run]` loop ≤ 2.0 × hand-written and
/// ≤ 0.35 × tgs, no hooks or one `#[init]` ≤ 1.0 × hand-written. Every other row keeps
/// the targets the suite was first written against (≤ 1.5 × hand-written, ≤ 0.25 × tgs).
pub fn targets(variant: &str) -> (f64, f64) {
    match variant {
        "managed-run" => (2.0, 0.35),
        "managed" | "managed-init" => (1.0, 0.25),
        _ => (1.5, 0.25),
    }
}

/// The target directory (where the bench binary lives), for results and generated crates.
pub fn target_dir() -> std::path::PathBuf {
    if let Ok(dir) = std::env::var("CARGO_TARGET_DIR") {
        return dir.into();
    }
    let exe = std::env::current_exe().expect("current_exe");
    // target/release/deps/lifecycle-<hash>
    exe.ancestors()
        .nth(3)
        .map(std::path::Path::to_path_buf)
        .unwrap_or_else(|| concat!(env!("CARGO_MANIFEST_DIR"), "/target").into())
}

/// One line about the machine: CPU, cores, memory, kernel, compiler.
fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_gib = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|l| l.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0 / 1024.0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let rustc = Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned()))
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load = load
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ");
    format!(
        "Machine: {cpu}, {cores} cores, {mem_gib:.0} GiB, Linux {}, {rustc}; release profile; \
         load average at start {load} (other work on the machine skews every figure).",
        kernel.trim()
    )
}
