use service_runtime::{Service, lifecycle};

#[derive(Service)]
struct Feed;

#[lifecycle]
impl Feed {
    #[init]
    const RETRIES: u32 = 3;
}

fn main() {}
