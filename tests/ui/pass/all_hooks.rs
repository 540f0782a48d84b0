// A service with every hook kind, components and every attribute key.
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use service_runtime::{HealthStatus, Managed, Service, Shutdown, lifecycle};

#[derive(Service)]
#[service(name = "child")]
struct Child;

#[lifecycle]
impl Child {}

#[derive(Service)]
#[service(name = "market_feed", version = "1.0.0")]
#[service(start_timeout = "10s", stop_timeout = "5s", health_timeout = "250ms")]
struct MarketFeed {
    ticks: AtomicUsize,
    #[service(component)]
    consumer: Managed<Child>,
    #[service(component, optional)]
    cache: Managed<Child>,
}

#[derive(Debug)]
struct FeedError;

impl std::fmt::Display for FeedError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("feed error")
    }
}

impl std::error::Error for FeedError {}

#[lifecycle]
impl MarketFeed {
    /// Doc comments and other attributes stay on the methods.
    #[init]
    #[must_use = "kept"]
    async fn connect(&mut self) -> Result<(), FeedError> {
        Ok(())
    }

    #[init(timeout = "1m")]
    async fn subscribe(&mut self) -> Result<(), std::io::Error> {
        Ok(())
    }

    #[cleanup]
    async fn unsubscribe(&mut self) -> Result<(), FeedError> {
        Ok(())
    }

    #[cleanup(timeout = "2s")]
    async fn disconnect(&mut self) -> Result<(), FeedError> {
        Ok(())
    }

    #[health(name = "upstream", critical)]
    async fn upstream(&self) -> HealthStatus {
        HealthStatus::Healthy
    }

    #[health(optional, timeout = "100ms")]
    async fn lag(&self) -> HealthStatus {
        HealthStatus::Degraded
    }

    #[run]
    async fn pump(&self, shutdown: Shutdown) -> Result<(), FeedError> {
        self.ticks.fetch_add(1, Ordering::Relaxed);
        shutdown.requested().await;
        Ok(())
    }

    #[reload]
    async fn reread_settings(&self) -> Result<(), FeedError> {
        Ok(())
    }

    #[reload(timeout = "3s")]
    async fn rotate_certificate(&self) -> Result<(), std::io::Error> {
        Ok(())
    }

    // Not hooks: an ordinary method and an associated const stay as written.
    const LIMIT: usize = 3;

    fn ticks(&self) -> usize {
        self.ticks.load(Ordering::Relaxed).min(Self::LIMIT)
    }
}

fn main() {
    let config = MarketFeed::config();
    assert_eq!(config.name, "market_feed");
    assert_eq!(config.version, "1.0.0");
    assert_eq!(config.start_timeout, Duration::from_secs(10));
    assert_eq!(config.stop_timeout, Duration::from_secs(5));
    assert_eq!(config.health_timeout, Duration::from_millis(250));

    let feed = MarketFeed {
        ticks: AtomicUsize::new(0),
        consumer: Managed::new(Child),
        cache: Managed::new(Child),
    };
    assert_eq!(feed.ticks(), 0);
    let _ = Managed::new(feed);
}
