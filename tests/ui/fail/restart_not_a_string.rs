use service_runtime::{Service, lifecycle};

#[derive(Service)]
#[service(restart = permanent)]
struct Feed;

#[lifecycle]
impl Feed {}

fn main() {}
