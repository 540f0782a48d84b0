use service_runtime::{Service, Shutdown, lifecycle};

#[derive(Service)]
struct Feed;

#[lifecycle]
impl Feed {
    #[run(timeout = "5s")]
    async fn pump(&self, shutdown: Shutdown) -> Result<(), std::io::Error> {
        shutdown.requested().await;
        Ok(())
    }
}

fn main() {}
