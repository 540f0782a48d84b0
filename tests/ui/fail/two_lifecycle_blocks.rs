use service_runtime::{HealthStatus, Service, lifecycle};

#[derive(Service)]
struct Feed;

#[lifecycle]
impl Feed {
    #[init]
    async fn connect(&mut self) -> Result<(), std::io::Error> {
        Ok(())
    }
}

// The hooks of a service are declared in one block.
#[lifecycle]
impl Feed {
    #[health]
    async fn upstream(&self) -> HealthStatus {
        HealthStatus::Healthy
    }
}

fn main() {}
