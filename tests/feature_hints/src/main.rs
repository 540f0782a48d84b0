use service_runtime::Supervisor;

fn main() {
    let _ = Supervisor::new().serve_health("127.0.0.1:8080");
    let _ = Supervisor::new().metrics_registry(());
    let _ = Supervisor::new().systemd(());
}
