use service_runtime::{HealthReport, HealthStatus, Service, lifecycle};

#[derive(Service)]
struct Engine;

#[lifecycle]
impl Engine {
    // The checks' results are in when the rule runs: it has nothing to await.
    #[health_rule]
    async fn overall(&self, report: &HealthReport) -> HealthStatus {
        report.status
    }
}

fn main() {}
