use service_runtime::{Ready, Service, Shutdown, lifecycle};

#[derive(Service)]
struct Feed;

#[lifecycle]
impl Feed {
    #[init(state)]
    async fn subscribe(&mut self) -> Result<u32, std::io::Error> {
        Ok(7)
    }

    #[run]
    async fn pump(&self, shutdown: Shutdown) -> Result<(), std::io::Error> {
        shutdown.requested().await;
        Ok(())
    }
}

fn main() {
    let _ = std::marker::PhantomData::<Ready>;
}
