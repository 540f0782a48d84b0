use service_runtime::{Ready, Service, Shutdown, lifecycle};

#[derive(Service)]
struct Feed;

#[lifecycle]
impl Feed {
    #[run]
    async fn pump(&self, ready: Ready, again: Ready) -> Result<(), std::io::Error> {
        ready.notify();
        again.notify();
        Ok(())
    }
}

fn main() {
    let _ = std::marker::PhantomData::<Shutdown>;
}
