//! Instructions per service (`--only instructions`): item 1's one-by-one and all-at-once
//! start + stop on the current-thread runtime, counted by valgrind's callgrind rather
//! than timed.
//!
//! Timings on a shared machine move by ±20 % (by 2× while another job builds); an
//! instruction count does not move at all, so its ratios show whether a change to the
//! runtime helped even when the timings cannot. It is not a substitute for time (a cache
//! miss or a system call costs far more than one instruction, and callgrind runs the
//! threads one at a time, hence current-thread only): the tables of item 1 stay the
//! figures we report.
//!
//! Per service = (instructions at the larger N − at the smaller N) ÷ the difference of N,
//! which cancels the process's own start-up.

use std::process::{Command, Stdio};

use crate::{Settings, num, ratio, targets};

/// (variant of `lifecycle::child`, label, the baseline it compares with).
const VARIANTS: [(&str, &str, &str); 9] = [
    ("hand", "hand-written task per service, one by one", "hand"),
    (
        "hand-par",
        "hand-written task per service, all at once",
        "hand-par",
    ),
    ("tgs", "tokio-graceful-shutdown 0.20", "hand-par"),
    ("managed", "ours: `Managed`, no hooks", "hand"),
    ("managed-init", "ours: `Managed`, one `#[init]`", "hand"),
    ("managed-run", "ours: `Managed`, a `#[run]` loop", "hand"),
    (
        "managed-run-par",
        "ours: `Managed`, a `#[run]` loop, all at once",
        "hand-par",
    ),
    ("supervisor", "ours: `Supervisor`, no hooks", "hand"),
    (
        "supervisor-run",
        "ours: `Supervisor`, a `#[run]` loop",
        "hand",
    ),
];

pub fn run(settings: &Settings) -> String {
    let mut out = String::from("## Instructions per service (callgrind, current-thread)\n\n");
    if Command::new("valgrind")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_err()
    {
        out.push_str("(skipped: valgrind is not installed; `apt-get install valgrind`)\n");
        return out;
    }
    let (small, large) = if settings.quick {
        (100, 1_000)
    } else {
        (1_000, 10_000)
    };
    let per_service: Vec<f64> = VARIANTS
        .iter()
        .map(|(variant, _, _)| {
            let at = |n: usize| instructions(variant, n);
            (at(large) - at(small)) / (large - small) as f64
        })
        .collect();
    let of = |variant: &str| {
        VARIANTS
            .iter()
            .position(|(v, _, _)| *v == variant)
            .map_or(f64::NAN, |i| per_service[i])
    };
    out.push_str(&format!(
        "Start + stop, instructions per service between N = {} and {} (deterministic: \
         the same binary gives the same count, whatever the machine's load).\n\n",
        num(small as f64, 0),
        num(large as f64, 0)
    ));
    out.push_str("| implementation | instructions | ÷ hand-written (same order) | ÷ tgs |\n");
    out.push_str("|---|---:|---:|---:|\n");
    let tgs = of("tgs");
    for ((variant, label, baseline), count) in VARIANTS.iter().zip(&per_service) {
        let ours = variant.starts_with("managed") || variant.starts_with("supervisor");
        out.push_str(&format!(
            "| {label} | {} | {} | {} |\n",
            num(*count, 0),
            ratio(count / of(baseline), ours.then(|| targets(variant).0)),
            if ours {
                ratio(count / tgs, Some(targets(variant).1))
            } else {
                "".to_owned()
            },
        ));
    }
    out
}

/// The instructions callgrind counts for one child run of `variant` at `n`.
fn instructions(variant: &str, n: usize) -> f64 {
    let exe = std::env::current_exe().expect("current_exe");
    let output = Command::new("valgrind")
        .args(["--tool=callgrind", "--callgrind-out-file=/dev/null"])
        .arg(exe)
        .args(["--child", "lifecycle", variant, "ct", &n.to_string()])
        .stdin(Stdio::null())
        .output()
        .expect("run valgrind");
    let stderr = String::from_utf8_lossy(&output.stderr);
    // "==1234== Collected : 94,550,286"
    stderr
        .lines()
        .find_map(|line| line.split_once("Collected :").map(|(_, count)| count))
        .map(|count| count.trim().replace(',', ""))
        .and_then(|count| count.parse().ok())
        .unwrap_or_else(|| panic!("no instruction count from callgrind for {variant}:\n{stderr}"))
}
