use service_runtime::{Service, lifecycle};

#[derive(Service)]
#[service(start_timeout = "10 sec")]
struct Feed;

#[lifecycle]
impl Feed {}

fn main() {}
