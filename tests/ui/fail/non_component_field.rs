use service_runtime::{Service, lifecycle};

#[derive(Service)]
struct Feed {
    #[service(component)]
    retries: u32,
}

#[lifecycle]
impl Feed {}

fn main() {}
