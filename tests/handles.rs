//! What the handles on a service keep alive: a parent, a stop handed over to a task, a
//! run stop left behind, a supervisor's handle; and `Shutdown` waits racing a request.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use common::DropFlag;
use service_runtime::{Managed, Service, ServiceStatus, Shutdown, lifecycle};

const MS: Duration = Duration::from_millis(1);

#[derive(Service, Default)]
#[service(name = "leaf")]
struct Leaf {
    loop_dropped: Arc<AtomicBool>,
    _freed: Option<DropFlag>,
}

#[lifecycle]
impl Leaf {
    #[run]
    async fn serve(&self, shutdown: Shutdown) -> Result<(), std::io::Error> {
        let _d = DropFlag(self.loop_dropped.clone());
        shutdown.requested().await;
        Ok(())
    }
}

#[derive(Service)]
#[service(name = "root")]
struct Root {
    #[service(component)]
    leaf: Managed<Leaf>,
    loop_dropped: Arc<AtomicBool>,
    _freed: DropFlag,
}

#[lifecycle]
impl Root {
    #[run]
    async fn serve(&self, shutdown: Shutdown) -> Result<(), std::io::Error> {
        let _d = DropFlag(self.loop_dropped.clone());
        shutdown.requested().await;
        Ok(())
    }
}

/// A parent's last handle ends its loop, frees it, and so frees its component.
#[tokio::test(start_paused = true)]
async fn dropping_a_parent_ends_and_frees_its_component() {
    let flags: [Arc<AtomicBool>; 4] = Default::default();
    let root = Managed::new(Root {
        leaf: Managed::new(Leaf {
            loop_dropped: flags[0].clone(),
            _freed: Some(DropFlag(flags[1].clone())),
        }),
        loop_dropped: flags[2].clone(),
        _freed: DropFlag(flags[3].clone()),
    });
    root.start().await.unwrap();
    tokio::time::sleep(MS).await; // both loops running
    drop(root);
    tokio::time::sleep(MS).await;
    let got: Vec<bool> = flags.iter().map(|f| f.load(Ordering::SeqCst)).collect();
    assert_eq!(got, [true, true, true, true]);
}

#[derive(Service, Default)]
#[service(name = "drain", stop_timeout = "1s")]
struct Drain {
    graceful: Arc<AtomicBool>,
    cleanups: Arc<AtomicUsize>,
    _freed: Option<DropFlag>,
}

#[lifecycle]
impl Drain {
    #[run]
    async fn serve(&self, shutdown: Shutdown) -> Result<(), std::io::Error> {
        shutdown.requested().await;
        tokio::time::sleep(5 * MS).await; // drains
        self.graceful.store(true, Ordering::SeqCst);
        Ok(())
    }

    #[cleanup]
    async fn close(&mut self) -> Result<(), std::io::Error> {
        self.cleanups.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

/// A stop handed over to a task, then the last handle dropped: the loop still drains.
#[tokio::test(start_paused = true)]
async fn a_handed_over_stop_still_drains_the_loop_after_the_last_handle() {
    let graceful = Arc::new(AtomicBool::new(false));
    let cleanups = Arc::new(AtomicUsize::new(0));
    let freed = Arc::new(AtomicBool::new(false));
    let service = Managed::new(Drain {
        graceful: graceful.clone(),
        cleanups: cleanups.clone(),
        _freed: Some(DropFlag(freed.clone())),
    });
    service.start().await.unwrap();
    let mut status = service.watch();
    tokio::select! {
        _ = service.stop() => panic!("drains for 5 ms"),
        () = tokio::time::sleep(MS) => {}
    }
    drop(service);
    tokio::time::sleep(20 * MS).await;
    assert!(graceful.load(Ordering::SeqCst), "loop drained");
    assert_eq!(cleanups.load(Ordering::SeqCst), 1);
    assert_eq!(*status.borrow_and_update(), ServiceStatus::Stopped);
    assert!(freed.load(Ordering::SeqCst));
}

/// A run stop (no cleanup) whose caller and last handle go: the stop still lets the loop
/// drain, as one with a cleanup hook does (above), then the service is freed.
#[tokio::test(start_paused = true)]
async fn a_run_stop_whose_caller_and_last_handle_go_drains_then_frees_the_service() {
    let (loop_dropped, freed) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    #[derive(Service, Default)]
    #[service(name = "slowloop", stop_timeout = "1h")]
    struct SlowLoop {
        loop_dropped: Arc<AtomicBool>,
        _freed: Option<DropFlag>,
    }
    #[lifecycle]
    impl SlowLoop {
        #[run]
        async fn serve(&self, shutdown: Shutdown) -> Result<(), std::io::Error> {
            let _d = DropFlag(self.loop_dropped.clone());
            shutdown.requested().await;
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ok(())
        }
    }
    let service = Managed::new(SlowLoop {
        loop_dropped: loop_dropped.clone(),
        _freed: Some(DropFlag(freed.clone())),
    });
    service.start().await.unwrap();
    tokio::select! {
        _ = service.stop() => panic!("the loop takes 60 s"),
        () = tokio::time::sleep(MS) => {}
    }
    drop(service);
    tokio::time::sleep(MS).await;
    assert!(!freed.load(Ordering::SeqCst), "the loop still drains");
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert!(loop_dropped.load(Ordering::SeqCst));
    assert!(freed.load(Ordering::SeqCst));
}

/// A supervisor's handle keeps its services' loops alive after the supervisor is dropped.
#[tokio::test(start_paused = true)]
async fn a_supervisor_handle_keeps_the_loop() {
    let loop_dropped = Arc::new(AtomicBool::new(false));
    let freed = Arc::new(AtomicBool::new(false));
    let service = Managed::new(Leaf {
        loop_dropped: loop_dropped.clone(),
        _freed: Some(DropFlag(freed.clone())),
    });
    service.start().await.unwrap();
    let supervisor = service_runtime::Supervisor::new().add(service.clone());
    let handle = supervisor.handle();
    // A reader takes the copy-on-write list; a second add clones it.
    let _health = handle.health().await;
    drop(supervisor);
    drop(service);
    tokio::time::sleep(MS).await;
    assert!(!loop_dropped.load(Ordering::SeqCst), "the handle holds it");
    drop(handle);
    tokio::time::sleep(MS).await;
    assert!(loop_dropped.load(Ordering::SeqCst));
    assert!(freed.load(Ordering::SeqCst));
}

/// Waits created, polled and dropped on several threads while the request lands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_waits_churning_across_a_request() {
    for _ in 0..2_000 {
        let shutdown = Shutdown::new();
        let tasks: Vec<_> = (0..3)
            .map(|_| {
                let s = shutdown.clone();
                tokio::spawn(async move {
                    loop {
                        tokio::select! {
                            () = s.requested() => break,
                            () = tokio::task::yield_now() => {}
                        }
                    }
                    // Several at once, one kept across the request.
                    let a = s.requested();
                    let b = s.requested();
                    a.await;
                    b.await;
                })
            })
            .collect();
        tokio::task::yield_now().await;
        shutdown.request();
        for t in tasks {
            tokio::time::timeout(Duration::from_secs(5), t)
                .await
                .expect("no lost wake-up")
                .expect("no panic");
        }
    }
}

fn _assert_send_sync() {
    fn s<T: Send + Sync>() {}
    s::<Shutdown>();
    s::<service_runtime::ShutdownRequested<'static>>();
}

/// A start that finishes on another worker while the last handle is dropped, many times:
/// whichever side gets the control lock first, the loop is ended and the service freed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_handle_racing_a_start_in_a_task_never_leaves_a_loop_running() {
    #[derive(Service, Default)]
    #[service(name = "racer")]
    struct Racer {
        init_for: Duration,
        loop_dropped: Arc<AtomicBool>,
        _freed: Option<DropFlag>,
    }
    #[lifecycle]
    impl Racer {
        #[init]
        async fn open(&mut self) -> Result<(), std::io::Error> {
            tokio::time::sleep(self.init_for).await;
            Ok(())
        }

        #[run]
        async fn serve(&self, shutdown: Shutdown) -> Result<(), std::io::Error> {
            let _d = DropFlag(self.loop_dropped.clone());
            shutdown.requested().await;
            Ok(())
        }
    }
    for round in 0..300 {
        let freed = Arc::new(AtomicBool::new(false));
        let service = Managed::new(Racer {
            init_for: Duration::from_micros(round % 7 * 30),
            loop_dropped: Arc::default(),
            _freed: Some(DropFlag(freed.clone())),
        });
        // Polled once (the init sleeps), then dropped: the start moves to a task, which
        // finishes on a timer's wake-up, before, while or after this task drops the last
        // handle.
        {
            let mut start = std::pin::pin!(service.start());
            let _ = futures_poll_once(start.as_mut()).await;
        }
        tokio::time::sleep(Duration::from_micros(round % 5 * 40)).await;
        drop(service);
        tokio::time::timeout(Duration::from_secs(5), async {
            while !freed.load(Ordering::SeqCst) {
                tokio::time::sleep(MS).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("round {round}: the service is never freed"));
    }
}

/// Polls `future` once.
async fn futures_poll_once<F: std::future::Future + Unpin>(mut future: F) -> Option<F::Output> {
    std::future::poll_fn(|cx| {
        std::task::Poll::Ready(match std::pin::Pin::new(&mut future).poll(cx) {
            std::task::Poll::Ready(output) => Some(output),
            std::task::Poll::Pending => None,
        })
    })
    .await
}
