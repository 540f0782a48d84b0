//! `#[lifecycle(?Send)]`: hooks that hold values which are not `Send` (an `Rc`, a
//! `RefCell` borrow) across `.await` run on a current-thread runtime, the default flavor
//! of `#[tokio::test]`.

mod common;

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use common::{Log, history, watched};
use service_runtime::ServiceStatus::{Running, Starting, Stopped, Stopping};
use service_runtime::{HealthStatus, Service, Shutdown, lifecycle};
use tokio::task::yield_now;

/// Every hook kind, each holding an `Rc` or a `RefCell` borrow across `.await`.
#[derive(Service, Default)]
struct Session {
    log: Log,
}

#[lifecycle(?Send)]
impl Session {
    #[init]
    async fn open(&mut self) -> Result<(), std::io::Error> {
        let steps = Rc::new(RefCell::new(vec!["open"]));
        let writer = Rc::clone(&steps);
        yield_now().await;
        writer.borrow_mut().push("opened");
        self.log.push(format!("init:{}", steps.borrow().join(",")));
        Ok(())
    }

    #[cleanup]
    #[allow(clippy::await_holding_refcell_ref)] // what `?Send` allows, and this test shows
    async fn close(&mut self) -> Result<(), std::io::Error> {
        let pending = RefCell::new(vec!["close", "flush"]);
        let mut steps = pending.borrow_mut();
        yield_now().await;
        steps.reverse();
        self.log.push(format!("cleanup:{}", steps.join(",")));
        Ok(())
    }

    #[health]
    async fn reachable(&self) -> HealthStatus {
        let probes = Rc::new(Cell::new(0));
        let probe = Rc::clone(&probes);
        yield_now().await;
        probe.set(probe.get() + 1);
        if probes.get() == 1 {
            HealthStatus::Healthy
        } else {
            HealthStatus::Unhealthy
        }
    }

    #[run]
    async fn serve(&self, shutdown: Shutdown) -> Result<(), std::io::Error> {
        let state = Rc::new(RefCell::new(String::from("serving")));
        yield_now().await;
        self.log.push(format!("run:{}", state.borrow()));
        shutdown.requested().await;
        state.borrow_mut().push_str(" then draining");
        yield_now().await;
        self.log.push(format!("run:{}", state.borrow()));
        Ok(())
    }
}

#[tokio::test]
async fn non_send_hooks_start_report_healthy_and_stop_cleanly() {
    let log = Log::default();
    let (service, mut changes) = watched(Session { log: log.clone() });

    service.start().await.unwrap();
    assert_eq!(service.status(), Running);

    let report = service.health().await;
    assert_eq!(report.status, HealthStatus::Healthy, "{report:?}");
    assert_eq!(
        report.dependencies.get("reachable"),
        Some(&HealthStatus::Healthy)
    );

    service.stop().await.unwrap();
    assert_eq!(service.status(), Stopped);
    assert!(service.last_error().is_none());
    assert_eq!(
        log.entries(),
        [
            "init:open,opened",
            "run:serving",
            "run:serving then draining",
            "cleanup:flush,close",
        ]
    );
    assert_eq!(
        history(&mut changes),
        [
            (Stopped, Starting),
            (Starting, Running),
            (Running, Stopping),
            (Stopping, Stopped),
        ]
    );
}

#[tokio::test]
async fn non_send_hooks_run_again_after_a_restart() {
    let log = Log::default();
    let (service, _changes) = watched(Session { log: log.clone() });
    for _ in 0..2 {
        service.start().await.unwrap();
        assert_eq!(service.health().await.status, HealthStatus::Healthy);
        service.stop().await.unwrap();
    }
    assert_eq!(service.status(), Stopped);
    assert_eq!(log.count("init:open,opened"), 2);
    assert_eq!(log.count("cleanup:flush,close"), 2);
}
