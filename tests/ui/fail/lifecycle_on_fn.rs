use service_runtime::lifecycle;

#[lifecycle]
async fn connect() -> Result<(), std::io::Error> {
    Ok(())
}

fn main() {}
