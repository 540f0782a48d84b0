use service_runtime::{Service, lifecycle};

#[derive(Service)]
#[service(max_restarts = 5000000000)]
struct Feed;

#[lifecycle]
impl Feed {}

#[derive(Service)]
#[service(max_restarts = 3u8)]
struct Cache;

#[lifecycle]
impl Cache {}

fn main() {}
