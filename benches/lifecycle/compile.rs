//! Item 5: compile-time cost of 50 derived services against the same 50 services written
//! as `#[async_trait]` impls of equivalent methods.
//!
//! A throw-away workspace is generated under `target/bench-compile/` with three crates:
//! `empty` (a fixed-cost baseline), `derived` (50 × `#[derive(Service)]` + `#[lifecycle]`
//! with an init, a cleanup, a health check and a run loop) and `async_trait_impls` (a
//! trait with the same four async methods and 50 `#[async_trait]` impls). Dependencies
//! are built once; then each crate is touched and rebuilt alone (`cargo build -p`, dev
//! profile), alternating, and the wall time of each rebuild is recorded. Cost per service
//! = (crate − empty) / 50.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::{Settings, median, num, ratio, target_dir};

const SERVICES: usize = 50;
const CRATES: [&str; 3] = ["empty", "derived", "async_trait_impls"];

fn derived_source(revision: usize) -> String {
    let mut source = format!(
        "//! {SERVICES} derived services (revision {revision}).\n\
         #![allow(dead_code)]\n\
         use service_runtime::{{HealthStatus, Service, Shutdown, lifecycle}};\n"
    );
    for i in 0..SERVICES {
        let _ = write!(
            source,
            r#"
#[derive(Service)]
#[service(name = "service_{i}", start_timeout = "5s", stop_timeout = "5s")]
pub struct Service{i} {{
    connected: bool,
    ticks: u64,
}}

#[lifecycle]
impl Service{i} {{
    #[init]
    async fn connect(&mut self) -> Result<(), std::io::Error> {{
        self.connected = true;
        Ok(())
    }}

    #[cleanup]
    async fn disconnect(&mut self) -> Result<(), std::io::Error> {{
        self.connected = false;
        Ok(())
    }}

    #[health(name = "upstream")]
    async fn upstream(&self) -> HealthStatus {{
        if self.connected {{ HealthStatus::Healthy }} else {{ HealthStatus::Unhealthy }}
    }}

    #[run]
    async fn serve(&self, shutdown: Shutdown) -> Result<(), std::io::Error> {{
        shutdown.requested().await;
        let _ = self.ticks;
        Ok(())
    }}
}}
"#
        );
    }
    source
}

fn async_trait_source(revision: usize) -> String {
    let mut source = format!(
        "//! {SERVICES} services as `#[async_trait]` impls (revision {revision}).\n\
         #![allow(dead_code)]\n\
         use async_trait::async_trait;\n\
         use service_runtime::{{HealthStatus, Shutdown}};\n\
         \n\
         #[async_trait]\n\
         pub trait Lifecycle: Send + Sync {{\n\
             fn name(&self) -> &'static str;\n\
             async fn init(&mut self) -> Result<(), std::io::Error>;\n\
             async fn cleanup(&mut self) -> Result<(), std::io::Error>;\n\
             async fn health(&self) -> HealthStatus;\n\
             async fn run(&self, shutdown: Shutdown) -> Result<(), std::io::Error>;\n\
         }}\n"
    );
    for i in 0..SERVICES {
        let _ = write!(
            source,
            r#"
pub struct Service{i} {{
    connected: bool,
    ticks: u64,
}}

#[async_trait]
impl Lifecycle for Service{i} {{
    fn name(&self) -> &'static str {{
        "service_{i}"
    }}

    async fn init(&mut self) -> Result<(), std::io::Error> {{
        self.connected = true;
        Ok(())
    }}

    async fn cleanup(&mut self) -> Result<(), std::io::Error> {{
        self.connected = false;
        Ok(())
    }}

    async fn health(&self) -> HealthStatus {{
        if self.connected {{ HealthStatus::Healthy }} else {{ HealthStatus::Unhealthy }}
    }}

    async fn run(&self, shutdown: Shutdown) -> Result<(), std::io::Error> {{
        shutdown.requested().await;
        let _ = self.ticks;
        Ok(())
    }}
}}
"#
        );
    }
    source
}

fn source(krate: &str, revision: usize) -> String {
    match krate {
        "empty" => format!(
            "//! The fixed cost of a crate (revision {revision}).\n\
             pub fn answer() -> u32 {{ 42 }}\n"
        ),
        "derived" => derived_source(revision),
        _ => async_trait_source(revision),
    }
}

fn write(path: &Path, contents: &str) {
    std::fs::create_dir_all(path.parent().expect("a parent")).expect("create the directory");
    std::fs::write(path, contents).expect("write a generated file");
}

/// Writes the workspace; returns its root.
fn generate() -> PathBuf {
    let root = target_dir().join("bench-compile");
    let runtime = concat!(env!("CARGO_MANIFEST_DIR"), "/service-runtime");
    write(
        &root.join("Cargo.toml"),
        "[workspace]\nmembers = [\"empty\", \"derived\", \"async_trait_impls\"]\nresolver = \"3\"\n",
    );
    for krate in CRATES {
        let extra = if krate == "async_trait_impls" {
            "async-trait = \"0.1\"\n"
        } else {
            ""
        };
        write(
            &root.join(krate).join("Cargo.toml"),
            &format!(
                "[package]\nname = \"{krate}\"\nversion = \"0.0.0\"\nedition = \"2024\"\npublish = false\n\n\
                 [dependencies]\nservice-runtime = {{ path = \"{runtime}\" }}\n{extra}"
            ),
        );
        write(&root.join(krate).join("src/lib.rs"), &source(krate, 0));
    }
    // Same versions as the main workspace (cargo adds async-trait).
    let lock = root.join("Cargo.lock");
    if !lock.exists() {
        let _ = std::fs::copy(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.lock"), &lock);
    }
    root
}

/// Runs `cargo <args>` in `root`, bounded; returns its wall time, or the error output.
fn cargo(root: &Path, args: &[&str], timeout: Duration) -> Result<Duration, String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let began = Instant::now();
    let mut child = Command::new(cargo)
        .args(args)
        .arg("--quiet")
        .current_dir(root)
        .env("CARGO_TARGET_DIR", root.join("target"))
        .env_remove("RUSTFLAGS")
        .env("CARGO_TERM_COLOR", "never")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            let elapsed = began.elapsed();
            if status.success() {
                return Ok(elapsed);
            }
            let mut stderr = String::new();
            if let Some(mut pipe) = child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
            }
            return Err(format!("cargo {args:?} failed: {status}\n{stderr}"));
        }
        if began.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("cargo {args:?} ran longer than {timeout:?}"));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

pub fn run(settings: &Settings) -> String {
    let mut out = String::from("## 5. Compile-time cost\n\n");
    let root = generate();
    // Dependencies once (service-runtime, tokio, syn, async-trait...), then the crates.
    if let Err(error) = cargo(&root, &["build", "--workspace"], Duration::from_secs(900)) {
        let _ = writeln!(
            out,
            "Skipped: the generated workspace did not build.\n\n```\n{error}\n```"
        );
        return out;
    }
    let reps = settings.reps.max(3);
    let mut samples: [Vec<f64>; 3] = Default::default();
    let mut revision = 0;
    for _ in 0..reps {
        for (i, krate) in CRATES.iter().enumerate() {
            revision += 1;
            write(
                &root.join(krate).join("src/lib.rs"),
                &source(krate, revision),
            );
            match cargo(&root, &["build", "-p", krate], Duration::from_secs(300)) {
                Ok(elapsed) => samples[i].push(elapsed.as_secs_f64() * 1e3),
                Err(error) => {
                    let _ = writeln!(out, "Failed:\n\n```\n{error}\n```");
                    return out;
                }
            }
        }
    }
    let [empty, derived, async_trait] = samples.map(|mut s| median(&mut s));
    let per = |ms: f64| (ms - empty) / SERVICES as f64;
    let _ = writeln!(
        out,
        "Rebuild of one crate after an edit (`cargo build -p <crate>`, dev profile, dependencies \
         already built), wall time, median of {reps}; generated under `target/bench-compile/`. \
         Each service has an init, a cleanup, a health check and a run loop. Target: per derived \
         service ≤ 1 × per `#[async_trait]` service.\n"
    );
    let _ = writeln!(
        out,
        "| crate | rebuild | per service (− empty crate) | ÷ async_trait |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|");
    let _ = writeln!(
        out,
        "| empty crate (fixed cost) | {} ms | | |",
        num(empty, 0)
    );
    let _ = writeln!(
        out,
        "| 50 `#[async_trait]` impls of a 4-method trait | {} ms | {} ms | 1.00× |",
        num(async_trait, 0),
        num(per(async_trait), 2)
    );
    let _ = writeln!(
        out,
        "| ours: 50 × `#[derive(Service)]` + `#[lifecycle]` | {} ms | {} ms | {} |",
        num(derived, 0),
        num(per(derived), 2),
        ratio(per(derived) / per(async_trait), Some(1.0))
    );
    out
}
