use service_runtime::{HealthStatus, Service, lifecycle};

#[derive(Service)]
struct Feed;

#[lifecycle]
impl Feed {
    #[health]
    async fn upstream(&self) -> HealthStatus {
        HealthStatus::Healthy
    }

    #[health(name = "upstream")]
    async fn upstream_latency(&self) -> HealthStatus {
        HealthStatus::Healthy
    }
}

fn main() {}
