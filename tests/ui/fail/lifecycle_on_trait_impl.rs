use service_runtime::{Service, lifecycle};

#[derive(Service)]
struct Feed;

trait Connect {
    async fn connect(&mut self) -> Result<(), std::io::Error>;
}

#[lifecycle]
impl Connect for Feed {
    #[init]
    async fn connect(&mut self) -> Result<(), std::io::Error> {
        Ok(())
    }
}

fn main() {}
