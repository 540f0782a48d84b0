use service_runtime::{Service, lifecycle};

#[derive(Service)]
#[service(restart = "always")]
struct Feed;

#[lifecycle]
impl Feed {}

fn main() {}
