// Raw identifiers name hooks, checks and components without their `r#`.
use service_runtime::{HealthStatus, Managed, Service, lifecycle};

#[derive(Service)]
struct r#Match {
    #[service(component)]
    r#type: Managed<Child>,
}

#[derive(Service)]
struct Child;

#[lifecycle]
impl Child {}

#[lifecycle]
impl r#Match {
    #[init]
    async fn r#async(&mut self) -> Result<(), std::io::Error> {
        Ok(())
    }

    #[health]
    async fn r#loop(&self) -> HealthStatus {
        HealthStatus::Healthy
    }
}

fn main() {
    assert_eq!(r#Match::config().name, "match");
    let _ = Managed::new(r#Match {
        r#type: Managed::new(Child),
    });
}
