use service_runtime::{Service, lifecycle};

#[derive(Service)]
struct Quoter;

#[lifecycle]
impl Quoter {
    #[reload(state)]
    async fn reread(&self) -> Result<(), std::io::Error> {
        Ok(())
    }
}

fn main() {}
