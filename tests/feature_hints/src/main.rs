use service_runtime::Supervisor;

fn main() {
    let _ = Supervisor::new().serve_health("127.0.0.1:8080");
    let _ = Supervisor::new().metrics_registry(());
    let _ = Supervisor::new().systemd(());
    let handle = Supervisor::new().handle();
    let _ = handle.probe_address();
    let _ = handle.probe_service();
    let _ = handle.probe_router();
}
