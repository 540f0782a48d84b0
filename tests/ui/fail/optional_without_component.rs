use service_runtime::{Service, lifecycle};

#[derive(Service)]
struct Feed {
    #[service(optional)]
    cache: Option<String>,
}

#[lifecycle]
impl Feed {}

fn main() {}
