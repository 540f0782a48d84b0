use service_runtime::{HealthStatus, Service, lifecycle};

#[derive(Service)]
struct Feed;

#[lifecycle]
impl Feed {
    #[health(name = "")]
    async fn upstream(&self) -> HealthStatus {
        HealthStatus::Healthy
    }
}

fn main() {}
