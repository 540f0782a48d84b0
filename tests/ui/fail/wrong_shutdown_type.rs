use service_runtime::{Service, lifecycle};

#[derive(Service)]
struct Feed;

#[lifecycle]
impl Feed {
    #[run]
    async fn pump(&self, batch: usize) -> Result<(), std::io::Error> {
        let _ = batch;
        Ok(())
    }
}

fn main() {}
