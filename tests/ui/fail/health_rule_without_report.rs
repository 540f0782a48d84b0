use service_runtime::{HealthStatus, Service, lifecycle};

#[derive(Service)]
struct Engine;

#[lifecycle]
impl Engine {
    #[health_rule]
    fn overall(&self) -> HealthStatus {
        HealthStatus::Healthy
    }
}

fn main() {}
