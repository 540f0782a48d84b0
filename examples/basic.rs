//! The design note's `MyService`, written as a derive plus hooks.
//!
//! Run with `cargo run --example basic` (`RUST_LOG=debug` for every event the runtime
//! emits). The console reporter prints every status change with the time it took, on
//! stderr; the example prints the health report as JSON on stdout, then stops the
//! service gracefully.

use std::time::Duration;

use service_runtime::{HealthDetail, HealthStatus, Managed, Service, Shutdown, lifecycle};

/// What the service is configured with.
struct Settings {
    database_url: String,
}

/// A stand-in for a database connection pool.
struct Pool {
    url: String,
}

#[derive(Service)]
#[service(
    name = "my_service",
    version = "1.0.0",
    start_timeout = "10s",
    stop_timeout = "5s"
)]
struct MyService {
    settings: Settings,
    pool: Option<Pool>,
    processed: std::sync::atomic::AtomicU64,
}

#[lifecycle]
impl MyService {
    /// Acquire resources: runs while the service is `starting`.
    #[init]
    async fn initialize_resources(&mut self) -> Result<(), std::io::Error> {
        tokio::time::sleep(Duration::from_millis(50)).await;
        self.pool = Some(Pool {
            url: self.settings.database_url.clone(),
        });
        Ok(())
    }

    /// Release them: runs while the service is `stopping`.
    #[cleanup]
    async fn cleanup_resources(&mut self) -> Result<(), std::io::Error> {
        if let Some(pool) = self.pool.take() {
            // In the hook's span: the console prints it on my_service's line.
            tracing::info!("closing the pool to {}", pool.url);
        }
        Ok(())
    }

    /// A critical dependency: when it fails, the service is unhealthy.
    #[health(name = "database", critical)]
    async fn database(&self) -> HealthStatus {
        if self.pool.is_some() {
            HealthStatus::Healthy
        } else {
            HealthStatus::Unhealthy
        }
    }

    /// An optional dependency: when it fails, the service is only degraded.
    #[health(name = "external_api", optional, timeout = "100ms")]
    async fn external_api(&self) -> HealthDetail {
        HealthDetail::degraded("rate limited: 429 from the quotes API")
    }

    /// The main loop, while the service is `running`.
    #[run]
    async fn process(&self, shutdown: Shutdown) -> Result<(), std::io::Error> {
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        loop {
            tokio::select! {
                () = shutdown.requested() => return Ok(()),
                _ = tick.tick() => {
                    self.processed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Status changes, failures and the program's own events, on stderr (`RUST_LOG`
    // filters them; `info` by default).
    service_runtime::console::init();

    let service = Managed::new(MyService {
        settings: Settings {
            database_url: "postgres://localhost/trading".into(),
        },
        pool: None,
        processed: Default::default(),
    });

    service.start().await?;
    println!("Service status: {}", service.status());

    tokio::time::sleep(Duration::from_millis(100)).await;
    let health = service.health().await;
    println!("Health: {}", serde_json::to_string_pretty(&health)?);
    println!(
        "processed {} ticks",
        service
            .read()
            .await
            .processed
            .load(std::sync::atomic::Ordering::Relaxed)
    );

    service.stop().await?;
    println!("Service status: {}", service.status());
    Ok(())
}
