use service_runtime::{HealthReport, HealthStatus, Service, lifecycle};

#[derive(Service)]
struct Engine;

#[lifecycle]
impl Engine {
    #[health_rule(timeout = "1s")]
    fn overall(&self, report: &HealthReport) -> HealthStatus {
        report.status
    }
}

fn main() {}
