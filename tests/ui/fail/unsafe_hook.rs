use service_runtime::{Service, lifecycle};

#[derive(Service)]
struct Feed;

#[lifecycle]
impl Feed {
    #[init]
    async unsafe fn connect(&mut self) -> Result<(), std::io::Error> {
        Ok(())
    }
}

fn main() {}
