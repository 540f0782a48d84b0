//! A replica: one of N processes consuming one stream in one consumer group, each under
//! its own consumer name. The group, the Redis health check, and the consumer (which
//! claims the entries of replicas that are gone, and reports its lag) as its component.

use std::sync::Arc;

use redis::RedisResult;
use redis::aio::ConnectionManager;
use service_runtime::{HealthDetail, Managed, Service, lifecycle};

use super::calls::redis_health;
use super::consumer::Consumer;
use super::{ConsumerOptions, Ledger, Settings};

/// The consumer side of the pipeline alone, for one process of many: the producer runs
/// elsewhere (one producer per stream, see `producer.rs`).
#[derive(Service)]
#[service(
    name = "stream_replica",
    version = "1.0.0",
    start_timeout = "5s",
    stop_timeout = "5s",
    health_timeout = "500ms"
)]
pub struct Replica {
    settings: Settings,
    /// For the health check alone, as the pipeline's.
    connection: Option<ConnectionManager>,
    #[service(component)]
    pub consumer: Managed<Consumer>,
}

impl Replica {
    /// A replica named `settings.consumer` in the group.
    pub fn new(settings: Settings, consumer: ConsumerOptions, ledger: Arc<Ledger>) -> Self {
        Replica {
            consumer: Managed::new(Consumer::new(settings.clone(), consumer, ledger)),
            settings,
            connection: None,
        }
    }
}

#[lifecycle]
impl Replica {
    #[init]
    async fn connect(&mut self) -> RedisResult<()> {
        self.connection = Some(self.settings.connect().await?);
        Ok(())
    }

    /// Whichever replica starts first creates the group; the others find it.
    #[init]
    async fn create_group(&mut self) -> RedisResult<()> {
        let conn = self.connection.as_ref().expect("connected by init");
        self.settings.ensure_group(conn).await
    }

    #[cleanup]
    async fn disconnect(&mut self) -> RedisResult<()> {
        self.connection = None;
        Ok(())
    }

    #[health(name = "redis", critical)]
    async fn redis(&self) -> HealthDetail {
        redis_health(self.connection.as_ref(), &self.settings.breaker).await
    }
}
