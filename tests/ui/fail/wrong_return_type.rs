use service_runtime::{Service, lifecycle};

#[derive(Service)]
struct Feed;

#[lifecycle]
impl Feed {
    #[init]
    async fn connect(&mut self) -> u32 {
        0
    }

    #[health]
    async fn upstream(&self) -> bool {
        true
    }
}

fn main() {}
