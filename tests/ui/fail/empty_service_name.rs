use service_runtime::{Service, lifecycle};

#[derive(Service)]
#[service(name = "")]
struct Feed;

#[lifecycle]
impl Feed {}

fn main() {}
