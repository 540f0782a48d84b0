use service_runtime::{Service, lifecycle};

#[derive(Service)]
struct Feed;

#[lifecycle]
impl Feed {
    #[init]
    #[cleanup]
    async fn reconnect(&mut self) -> Result<(), std::io::Error> {
        Ok(())
    }
}

fn main() {}
