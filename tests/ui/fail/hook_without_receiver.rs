use service_runtime::{Service, lifecycle};

#[derive(Service)]
struct Feed;

#[lifecycle]
impl Feed {
    #[cleanup]
    async fn disconnect() -> Result<(), std::io::Error> {
        Ok(())
    }
}

fn main() {}
