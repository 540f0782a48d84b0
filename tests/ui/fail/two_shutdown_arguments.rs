use service_runtime::{Ready, Service, Shutdown, lifecycle};

#[derive(Service)]
struct Feed;

#[lifecycle]
impl Feed {
    #[run]
    async fn pump(&self, shutdown: Shutdown, again: Shutdown) -> Result<(), std::io::Error> {
        let _ = again;
        shutdown.requested().await;
        Ok(())
    }
}

fn main() {
    let _ = std::marker::PhantomData::<Ready>;
}
