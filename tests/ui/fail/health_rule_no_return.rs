use service_runtime::{HealthReport, Service, lifecycle};

#[derive(Service)]
struct Engine;

#[lifecycle]
impl Engine {
    #[health_rule]
    fn overall(&self, report: &HealthReport) {
        let _ = report;
    }
}

fn main() {}
