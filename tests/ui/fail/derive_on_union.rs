use service_runtime::{Service, lifecycle};

#[derive(Service)]
union Bits {
    int: u32,
    float: f32,
}

#[lifecycle]
impl Bits {}

fn main() {}
