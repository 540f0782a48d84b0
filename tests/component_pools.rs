//! Component fields that hold no child or many: `Option<Managed<S>>` (a `None` is skipped
//! everywhere) and `Vec<Managed<S>>` (a pool, each element a component named `field[i]`).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Log, settle};
use service_runtime::ServiceStatus::{Error, Running, Stopped};
use service_runtime::{HealthStatus, HookKind, Managed, Service, Shutdown, lifecycle};
use tokio::sync::Notify;

/// One shard: logs its start and stop; its run loop fails when `cut` is notified.
#[derive(Service)]
#[service(name = "shard", backoff = "1s")]
struct Shard {
    id: usize,
    log: Log,
    cut: Arc<Notify>,
    fail_open: bool,
}

#[lifecycle]
impl Shard {
    #[init]
    async fn open(&mut self) -> Result<(), std::io::Error> {
        if self.fail_open {
            return Err(std::io::Error::other("no disk"));
        }
        self.log.push(format!("open:{}", self.id));
        Ok(())
    }

    #[cleanup]
    async fn close(&mut self) -> Result<(), std::io::Error> {
        self.log.push(format!("close:{}", self.id));
        Ok(())
    }

    #[run]
    async fn serve(&self, shutdown: Shutdown) -> Result<(), String> {
        tokio::select! {
            () = shutdown.requested() => Ok(()),
            () = self.cut.notified() => Err("disk lost".to_owned()),
        }
    }
}

/// A cache that only logs its start and stop.
#[derive(Service)]
#[service(name = "cache")]
struct Cache {
    log: Log,
}

#[lifecycle]
impl Cache {
    #[init]
    async fn warm(&mut self) -> Result<(), std::io::Error> {
        self.log.push("cache:warm");
        Ok(())
    }

    #[cleanup]
    async fn drop_all(&mut self) -> Result<(), std::io::Error> {
        self.log.push("cache:drop");
        Ok(())
    }
}

/// A pool of critical shards, an optional cache that may be left out, and a field order
/// that puts the cache between the shards and the audit shard.
#[derive(Service)]
#[service(name = "cluster")]
struct Cluster {
    #[service(component)]
    shards: Vec<Managed<Shard>>,
    #[service(component, optional)]
    cache: Option<Managed<Cache>>,
    #[service(component)]
    audit: Option<Managed<Shard>>,
}

#[lifecycle]
impl Cluster {}

/// The same pool, optional.
#[derive(Service)]
#[service(name = "cluster")]
struct TolerantCluster {
    #[service(component, optional)]
    shards: Vec<Managed<Shard>>,
}

#[lifecycle]
impl TolerantCluster {}

struct Shards {
    log: Log,
    cuts: Vec<Arc<Notify>>,
}

impl Shards {
    fn new(count: usize) -> Self {
        Shards {
            log: Log::default(),
            cuts: (0..count).map(|_| Arc::new(Notify::new())).collect(),
        }
    }

    fn shard(&self, id: usize) -> Managed<Shard> {
        Managed::new(Shard {
            id,
            log: self.log.clone(),
            cut: self.cuts[id].clone(),
            fail_open: false,
        })
    }

    fn pool(&self) -> Vec<Managed<Shard>> {
        (0..self.cuts.len()).map(|id| self.shard(id)).collect()
    }
}

#[tokio::test(start_paused = true)]
async fn a_pools_elements_start_in_order_stop_in_reverse_and_report_as_field_i() {
    let shards = Shards::new(3);
    let cluster = Managed::new(Cluster {
        shards: shards.pool(),
        cache: None,
        audit: None,
    });

    cluster.start().await.unwrap();
    assert_eq!(shards.log.entries(), ["open:0", "open:1", "open:2"]);
    let report = cluster.health().await;
    assert_eq!(report.status, HealthStatus::Healthy);
    let names: Vec<&str> = report.dependencies.keys().map(|name| &**name).collect();
    assert_eq!(names, ["shards[0]", "shards[1]", "shards[2]"]);
    assert_eq!(
        serde_json::json!(report)["dependencies"],
        serde_json::json!({ "shards[0]": "healthy", "shards[1]": "healthy", "shards[2]": "healthy" })
    );

    cluster.stop().await.unwrap();
    assert_eq!(shards.log.entries()[3..], ["close:2", "close:1", "close:0"]);
    let parent = cluster.read().await;
    assert!(parent.shards.iter().all(|shard| shard.status() == Stopped));
}

#[tokio::test(start_paused = true)]
async fn an_option_that_is_none_is_skipped_and_one_that_is_some_is_a_component() {
    let shards = Shards::new(2);
    // No components at all: nothing started, nothing reported.
    let empty = Managed::new(Cluster {
        shards: Vec::new(),
        cache: None,
        audit: None,
    });
    empty.start().await.unwrap();
    let report = empty.health().await;
    assert_eq!(report.status, HealthStatus::Healthy);
    assert!(report.dependencies.is_empty(), "{report}");
    empty.stop().await.unwrap();

    let cluster = Managed::new(Cluster {
        shards: vec![shards.shard(0)],
        cache: Some(Managed::new(Cache {
            log: shards.log.clone(),
        })),
        audit: Some(shards.shard(1)),
    });
    cluster.start().await.unwrap();
    assert_eq!(
        shards.log.entries(),
        ["open:0", "cache:warm", "open:1"],
        "field order, then element order"
    );
    let report = cluster.health().await;
    let names: Vec<&str> = report.dependencies.keys().map(|name| &**name).collect();
    assert_eq!(names, ["audit", "cache", "shards[0]"]);
    assert_eq!(
        cluster.read().await.cache.as_ref().unwrap().status(),
        Running
    );

    cluster.stop().await.unwrap();
    assert_eq!(
        shards.log.entries()[3..],
        ["close:1", "cache:drop", "close:0"]
    );
    assert_eq!(
        cluster.read().await.cache.as_ref().unwrap().status(),
        Stopped
    );
}

#[tokio::test(start_paused = true)]
async fn a_critical_element_that_fails_stops_its_parent_with_an_error_naming_it() {
    let shards = Shards::new(3);
    let cluster = Managed::new(Cluster {
        shards: shards.pool(),
        cache: None,
        audit: None,
    });
    cluster.start().await.unwrap();

    shards.cuts[1].notify_one();
    settle().await;

    assert_eq!(cluster.status(), Error);
    let error = cluster.last_error().expect("the parent records its cause");
    assert_eq!(
        error.to_string(),
        "service `cluster`: component `shards[1]`: service `shard`: run hook `serve` failed: disk lost"
    );
    assert_eq!(error.hook(), Some((HookKind::Run, "serve")));
    assert_eq!(
        shards.log.entries()[3..],
        ["close:2", "close:1", "close:0"],
        "every element stopped, in reverse"
    );
}

#[tokio::test(start_paused = true)]
async fn an_element_that_fails_to_start_fails_the_start_and_the_started_ones_stop() {
    let shards = Shards::new(3);
    let mut pool = shards.pool();
    pool[1] = Managed::new(Shard {
        id: 1,
        log: shards.log.clone(),
        cut: shards.cuts[1].clone(),
        fail_open: true,
    });
    let cluster = Managed::new(Cluster {
        shards: pool,
        cache: None,
        audit: None,
    });

    let error = cluster.start().await.unwrap_err();

    assert_eq!(
        error.to_string(),
        "service `cluster`: component `shards[1]`: service `shard`: init hook `open` failed: no disk"
    );
    assert_eq!(cluster.status(), Error);
    assert_eq!(
        shards.log.entries(),
        ["open:0", "close:0"],
        "the element after it never started"
    );
}

#[tokio::test(start_paused = true)]
async fn an_optional_element_that_fails_degrades_its_parent_and_is_restarted() {
    let shards = Shards::new(3);
    let cluster = Managed::new(TolerantCluster {
        shards: shards.pool(),
    });
    cluster.start().await.unwrap();

    shards.cuts[2].notify_one();
    settle().await;

    assert_eq!(cluster.status(), Running);
    let report = cluster.health().await;
    assert_eq!(report.status, HealthStatus::Degraded);
    assert_eq!(report.dependencies["shards[2]"], HealthStatus::Unhealthy);
    assert_eq!(report.dependencies["shards[0]"], HealthStatus::Healthy);
    assert!(
        report.reason.as_deref().is_some_and(
            |reason| reason.starts_with("optional dependency `shards[2]` is unhealthy")
        ),
        "{report}"
    );

    // The shard's `backoff = "1s"` (jittered by 10 %).
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(cluster.read().await.shards[2].status(), Running);
    assert_eq!(cluster.health().await.status, HealthStatus::Healthy);
    assert_eq!(
        shards.log.entries()[3..],
        ["close:2", "open:2"],
        "only the failed element was restarted"
    );
    cluster.stop().await.unwrap();
}

/// A pool its init hook fills: the components are read after the init hooks.
#[derive(Service)]
#[service(name = "discovered")]
struct Discovered {
    found: usize,
    log: Log,
    #[service(component)]
    shards: Vec<Managed<Shard>>,
}

#[lifecycle]
impl Discovered {
    #[init]
    async fn discover(&mut self) -> Result<(), std::io::Error> {
        let log = self.log.clone();
        self.shards = (0..self.found)
            .map(|id| {
                Managed::new(Shard {
                    id,
                    log: log.clone(),
                    cut: Arc::new(Notify::new()),
                    fail_open: false,
                })
            })
            .collect();
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn an_init_hook_may_fill_a_pool() {
    let log = Log::default();
    let service = Managed::new(Discovered {
        found: 2,
        log: log.clone(),
        shards: Vec::new(),
    });

    service.start().await.unwrap();

    assert_eq!(log.entries(), ["open:0", "open:1"]);
    assert!(
        service
            .health()
            .await
            .dependencies
            .contains_key("shards[1]")
    );
    service.stop().await.unwrap();
    assert_eq!(log.entries()[2..], ["close:1", "close:0"]);
}
