//! The pipeline in one process: the stream's consumer group, the Redis health check, and
//! the consumer and producer as its components.

use std::sync::Arc;

use redis::RedisResult;
use redis::aio::ConnectionManager;
use service_runtime::{HealthDetail, Managed, Service, lifecycle};

use super::calls::redis_health;
use super::consumer::Consumer;
use super::producer::Producer;
use super::{ConsumerOptions, Ledger, ProducerOptions, Settings};

/// The stream-processing service: owns the stream and its consumer group, checks Redis,
/// and runs a consumer and a producer as components. The consumer is declared first, so
/// it starts before the producer and stops after it, finishing what it holds.
#[derive(Service)]
#[service(
    name = "stream_pipeline",
    version = "1.0.0",
    start_timeout = "5s",
    stop_timeout = "5s",
    health_timeout = "500ms"
)]
pub struct Pipeline {
    settings: Settings,
    /// For the health check alone: the consumer's blocking reads would delay a PING
    /// sharing their connection.
    connection: Option<ConnectionManager>,
    #[service(component)]
    pub consumer: Managed<Consumer>,
    #[service(component)]
    pub producer: Managed<Producer>,
}

impl Pipeline {
    pub fn new(
        settings: Settings,
        producer: ProducerOptions,
        consumer: ConsumerOptions,
        ledger: Arc<Ledger>,
    ) -> Self {
        Pipeline {
            consumer: Managed::new(Consumer::new(settings.clone(), consumer, ledger.clone())),
            producer: Managed::new(Producer::new(settings.clone(), producer, ledger)),
            settings,
            connection: None,
        }
    }
}

#[lifecycle]
impl Pipeline {
    #[init]
    async fn connect(&mut self) -> RedisResult<()> {
        self.connection = Some(self.settings.connect().await?);
        Ok(())
    }

    /// Before the components start: the consumer reads from the group at once.
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
