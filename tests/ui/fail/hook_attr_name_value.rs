use service_runtime::{Service, lifecycle};

#[derive(Service)]
struct Feed;

#[lifecycle]
impl Feed {
    #[init = "5s"]
    async fn connect(&mut self) -> Result<(), std::io::Error> {
        Ok(())
    }
}

fn main() {}
