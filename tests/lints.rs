//! The expansions of `#[derive(Service)]` and `#[lifecycle]` compile without a single
//! lint under the strictest settings a user crate may have: pedantic clippy (CI runs
//! clippy on all targets with `-D warnings`), `unused_qualifications`, `missing_docs`
//! and `forbid(unsafe_code)`, which no generated `#[allow]` could override.
#![deny(unused_qualifications, clippy::pedantic, missing_docs)]
#![deny(rust_2018_idioms, unused, unreachable_pub)]
#![forbid(unsafe_code)]

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::Hash;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};

use service_runtime::{
    HealthChecks, HealthDetail, HealthStatus, Managed, Service, Shutdown, lifecycle,
};

/// A child service without hooks.
#[derive(Service)]
pub struct X;

#[lifecycle]
impl X {}

/// A service with every hook kind, every attribute key and every kind of component field.
#[derive(Service)]
#[service(name = "feed", version = "1.2.3", start_timeout = "10s")]
#[service(stop_timeout = "5s", health_timeout = "250ms", crate = service_runtime)]
pub struct Feed {
    ticks: AtomicU64,
    /// A critical component.
    #[service(component)]
    pub consumer: Managed<X>,
    #[service(component, optional)]
    cache: Managed<X>,
    #[service(component)]
    pool: Vec<Managed<X>>,
    #[service(component, optional)]
    spare: Option<Managed<X>>,
}

#[lifecycle(crate = service_runtime)]
impl Feed {
    /// Creates the service.
    #[must_use]
    pub fn new() -> Self {
        Feed {
            ticks: AtomicU64::new(0),
            consumer: Managed::new(X),
            cache: Managed::new(X),
            pool: vec![Managed::new(X)],
            spare: None,
        }
    }

    #[init]
    async fn connect(&mut self) -> Result<(), std::io::Error> {
        *self.ticks.get_mut() = 0;
        Ok(())
    }

    /// A public hook is an ordinary public method too.
    ///
    /// # Errors
    ///
    /// Never: this one only yields once.
    #[init(timeout = "1s")]
    pub async fn subscribe(&mut self) -> anyhow::Result<()> {
        tokio::task::yield_now().await;
        Ok(())
    }

    #[cleanup]
    async fn disconnect(&mut self) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        *self.ticks.get_mut() = 0;
        Ok(())
    }

    #[health(name = "upstream", critical, timeout = "100ms")]
    async fn upstream(&self) -> HealthStatus {
        if self.ticks.load(Ordering::Relaxed) < 1_000 {
            HealthStatus::Healthy
        } else {
            HealthStatus::Degraded
        }
    }

    #[health(optional)]
    async fn lag(&self) -> HealthDetail {
        HealthDetail::degraded("behind")
    }

    #[health]
    async fn reachable(&self) -> Result<(), std::io::Error> {
        Ok(())
    }

    #[health]
    async fn mode(&self) -> Result<HealthStatus, String> {
        Ok(HealthStatus::Healthy)
    }

    #[health]
    async fn shards(&self) -> Result<HealthChecks, String> {
        Ok(HealthChecks::new().with("0", HealthStatus::Healthy))
    }

    #[run]
    async fn pump(&self, shutdown: Shutdown) -> Result<(), std::io::Error> {
        while !shutdown.is_requested() {
            self.ticks.fetch_add(1, Ordering::Relaxed);
            tokio::task::yield_now().await;
        }
        Ok(())
    }
}

impl Default for Feed {
    fn default() -> Self {
        Self::new()
    }
}

/// A generic service, bounded on the struct, on the impl block and in where clauses.
#[derive(Service)]
pub struct Cache<K: Send + Sync + 'static, const N: usize>
where
    K: Clone,
{
    entries: HashMap<K, u64>,
}

#[lifecycle]
impl<K, const N: usize> Cache<K, N>
where
    K: Clone + Eq + Hash + Send + Sync + 'static,
{
    /// Creates an empty cache.
    #[must_use]
    pub fn new() -> Self {
        Cache {
            entries: HashMap::new(),
        }
    }

    #[init]
    async fn warm(&mut self) -> Result<(), std::io::Error> {
        self.entries.reserve(N);
        Ok(())
    }

    #[health]
    async fn size(&self) -> HealthStatus {
        if self.entries.len() <= N {
            HealthStatus::Healthy
        } else {
            HealthStatus::Degraded
        }
    }

    #[run]
    async fn evict(&self) -> Result<(), std::io::Error> {
        std::future::pending().await
    }
}

impl<K, const N: usize> Default for Cache<K, N>
where
    K: Clone + Eq + Hash + Send + Sync + 'static,
{
    fn default() -> Self {
        Self::new()
    }
}

/// A service with every restart key, whose hooks hold values that are not `Send`.
#[derive(Service)]
#[service(restart = "permanent", max_restarts = 5, restart_within = "1m")]
#[service(backoff = "200ms", max_backoff = "30s")]
pub struct Local;

#[lifecycle(?Send, crate = service_runtime)]
impl Local {
    #[init]
    async fn open(&mut self) -> Result<(), std::io::Error> {
        let steps = Rc::new(RefCell::new(Vec::new()));
        tokio::task::yield_now().await;
        steps.borrow_mut().push("opened");
        Ok(())
    }

    #[cleanup]
    async fn close(&mut self) -> Result<(), std::io::Error> {
        Ok(())
    }

    #[health]
    async fn alive(&self) -> HealthStatus {
        let probes = Rc::new(());
        tokio::task::yield_now().await;
        drop(probes);
        HealthStatus::Healthy
    }

    #[run]
    async fn serve(&self, shutdown: Shutdown) -> Result<(), std::io::Error> {
        let open = Rc::new(());
        shutdown.requested().await;
        drop(open);
        Ok(())
    }
}

#[test]
fn expansions_compile_cleanly() {
    assert_eq!(<X as Service>::config().name, "x");
    assert_eq!(<Feed as Service>::config().name, "feed");
    assert_eq!(<Cache<String, 8> as Service>::config().name, "cache");
    assert_eq!(<Local as Service>::config().restart.max_restarts, 5);
    let _ = (
        Managed::new(Feed::new()),
        Managed::new(Cache::<String, 8>::new()),
        Managed::new(Local),
    );
}
