use service_runtime::{Service, Shutdown, lifecycle};

#[derive(Service)]
struct Feed;

#[lifecycle]
impl Feed {
    #[run]
    async fn pump(&self, shutdown: Shutdown) -> Result<(), std::io::Error> {
        shutdown.requested().await;
        Ok(())
    }

    #[run]
    async fn poll(&self) -> Result<(), std::io::Error> {
        Ok(())
    }
}

fn main() {}
