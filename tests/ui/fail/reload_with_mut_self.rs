use service_runtime::{Service, lifecycle};

#[derive(Service)]
struct Quoter;

#[lifecycle]
impl Quoter {
    // A reload runs while the service runs: its health checks and run loop share it.
    #[reload]
    async fn reread_settings(&mut self) -> Result<(), std::io::Error> {
        Ok(())
    }
}

fn main() {}
