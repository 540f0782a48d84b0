// Every type a `#[health]` hook may return.
use service_runtime::{HealthChecks, HealthDetail, HealthStatus, Managed, Service, lifecycle};

#[derive(Service)]
struct Checked;

#[lifecycle]
impl Checked {
    #[health]
    async fn status(&self) -> HealthStatus {
        HealthStatus::Healthy
    }

    #[health]
    async fn detail(&self) -> HealthDetail {
        HealthDetail::degraded("lagging")
    }

    #[health]
    async fn result(&self) -> Result<(), std::io::Error> {
        Ok(())
    }

    #[health]
    async fn result_status(&self) -> Result<HealthStatus, String> {
        Err("unreachable".to_owned())
    }

    #[health(name = "anyhow")]
    async fn anyhow_result(&self) -> anyhow::Result<()> {
        anyhow::bail!("down")
    }

    #[health]
    async fn shards(&self) -> HealthChecks {
        HealthChecks::new().with("shard-0", HealthStatus::Healthy)
    }

    #[health]
    async fn replicas(&self) -> Result<HealthChecks, std::io::Error> {
        Ok((0..2).map(|i| (format!("r{i}"), HealthDetail::healthy())).collect())
    }

    // A type alias of an accepted type.
    #[health]
    async fn alias(&self) -> Status {
        Status::Healthy
    }
}

type Status = HealthStatus;

fn main() {
    let _ = Managed::new(Checked);
}
