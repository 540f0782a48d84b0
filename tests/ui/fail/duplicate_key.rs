use service_runtime::{Service, lifecycle};

#[derive(Service)]
#[service(name = "feed")]
#[service(name = "market_feed")]
struct Feed;

#[lifecycle]
impl Feed {}

fn main() {}
