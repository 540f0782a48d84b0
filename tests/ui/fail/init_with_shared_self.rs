use service_runtime::{Service, lifecycle};

#[derive(Service)]
struct Feed;

#[lifecycle]
impl Feed {
    #[init]
    async fn connect(&self) -> Result<(), std::io::Error> {
        Ok(())
    }
}

fn main() {}
