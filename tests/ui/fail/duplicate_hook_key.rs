use service_runtime::{Service, lifecycle};

#[derive(Service)]
struct Feed;

#[lifecycle]
impl Feed {
    #[cleanup(timeout = "1s", timeout = "2s")]
    async fn disconnect(&mut self) -> Result<(), std::io::Error> {
        Ok(())
    }
}

fn main() {}
