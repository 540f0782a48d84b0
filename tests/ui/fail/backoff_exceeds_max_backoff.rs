use service_runtime::{Service, lifecycle};

#[derive(Service)]
#[service(backoff = "2s", max_backoff = "500ms")]
struct Feed;

#[lifecycle]
impl Feed {}

// Split over two attributes, in the other order.
#[derive(Service)]
#[service(max_backoff = "1s")]
#[service(restart = "permanent", backoff = "1m")]
struct Cache;

#[lifecycle]
impl Cache {}

fn main() {}
