use service_runtime::{Service, lifecycle};

#[derive(Service)]
struct Feed;

#[lifecycle]
impl Feed {
    #[init]
    async fn connect(&mut self) -> Result<(), u32> {
        Err(3)
    }
}

fn main() {}
