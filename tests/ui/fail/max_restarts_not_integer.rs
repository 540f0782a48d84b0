use service_runtime::{Service, lifecycle};

#[derive(Service)]
#[service(max_restarts = "3")]
struct Feed;

#[lifecycle]
impl Feed {}

#[derive(Service)]
#[service(max_restarts = -1)]
struct Cache;

#[lifecycle]
impl Cache {}

fn main() {}
