use service_runtime::Service;

#[derive(Service)]
struct Feed;

fn main() {}
