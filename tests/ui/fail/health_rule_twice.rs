use service_runtime::{HealthReport, HealthStatus, Service, lifecycle};

#[derive(Service)]
struct Engine;

#[lifecycle]
impl Engine {
    #[health_rule]
    fn overall(&self, report: &HealthReport) -> HealthStatus {
        report.status
    }

    #[health_rule]
    fn stricter(&self, report: &HealthReport) -> HealthStatus {
        report.status
    }
}

fn main() {}
