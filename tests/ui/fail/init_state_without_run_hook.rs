use service_runtime::{Ready, Service, Shutdown, lifecycle};

#[derive(Service)]
struct Feed;

#[lifecycle]
impl Feed {
    #[init(state)]
    async fn subscribe(&mut self) -> Result<u32, std::io::Error> {
        Ok(7)
    }
}

fn main() {
    let _ = std::marker::PhantomData::<(Ready, Shutdown)>;
}
