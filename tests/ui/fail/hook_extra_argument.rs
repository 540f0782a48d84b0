use service_runtime::{Service, lifecycle};

#[derive(Service)]
struct Feed;

#[lifecycle]
impl Feed {
    #[init]
    async fn connect(&mut self, retries: u32, backoff_ms: u64) -> Result<(), std::io::Error> {
        let _ = (retries, backoff_ms);
        Ok(())
    }
}

fn main() {}
