use service_runtime::{Service, Shutdown, lifecycle};

#[derive(Service)]
struct Feed;

#[lifecycle]
impl Feed {
    #[run]
    async fn pump(&self, shutdown: Shutdown, batch: usize) -> Result<(), std::io::Error> {
        let _ = batch;
        shutdown.requested().await;
        Ok(())
    }
}

fn main() {}
