use service_runtime::{Service, lifecycle};

#[derive(Service)]
#[service(name = "feed", timeout = "5s")]
struct Feed;

#[lifecycle]
impl Feed {}

fn main() {}
