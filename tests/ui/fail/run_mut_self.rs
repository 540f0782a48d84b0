use service_runtime::{Ready, Service, Shutdown, lifecycle};

#[derive(Service)]
struct Feed;

#[lifecycle]
impl Feed {
    #[run]
    async fn pump(&mut self, shutdown: Shutdown) -> Result<(), std::io::Error> {
        shutdown.requested().await;
        Ok(())
    }
}

fn main() {
    let _ = std::marker::PhantomData::<Ready>;
}
