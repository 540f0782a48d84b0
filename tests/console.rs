//! The console reporter (feature `console`) as a person reads it: a supervisor whose
//! service fails and is restarted and whose last service is slow to stop, written into a
//! buffer under a paused clock, so that every line, stamp and duration is exact.
//!
//! Each test installs its console for its own thread only
//! (`tracing::subscriber::set_default`): the paused-clock runtime of `#[tokio::test]`
//! runs every task of a test, the shutdown's ticker included, on that test's thread.

use std::io::Write;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use service_runtime::console::Console;
use service_runtime::{Managed, Restart, RestartPolicy, Service, Shutdown, Supervisor, lifecycle};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::prelude::*;

/// What the console wrote, shared with the test.
#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Write for Buffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Buffer {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).expect("UTF-8")
    }
}

/// Installs a console writing into a new buffer, at `info`, for this thread.
fn console(
    configure: impl FnOnce(Console) -> Console,
) -> (Buffer, tracing::subscriber::DefaultGuard) {
    let buffer = Buffer::default();
    let layer = configure(Console::new().writer(buffer.clone()))
        .layer()
        .with_filter(LevelFilter::INFO);
    let guard = tracing::subscriber::set_default(tracing_subscriber::registry().with(layer));
    (buffer, guard)
}

#[derive(Service)]
#[service(name = "feed")]
struct Feed;

#[lifecycle]
impl Feed {
    #[init]
    async fn connect(&mut self) -> std::io::Result<()> {
        tokio::time::sleep(Duration::from_millis(300)).await;
        Ok(())
    }

    #[run]
    async fn publish(&self, shutdown: Shutdown) -> std::io::Result<()> {
        shutdown.requested().await;
        Ok(())
    }
}

/// Its first run loop fails after a second; the ones after it run until stopped.
#[derive(Service)]
#[service(name = "strategy")]
struct Strategy {
    runs: Arc<AtomicU32>,
}

#[lifecycle]
impl Strategy {
    #[init]
    async fn load_model(&mut self) -> std::io::Result<()> {
        tokio::time::sleep(Duration::from_millis(100)).await;
        Ok(())
    }

    #[run]
    async fn trade(&self, shutdown: Shutdown) -> std::io::Result<()> {
        if self.runs.fetch_add(1, Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_secs(1)).await;
            return Err(std::io::Error::other("model drifted"));
        }
        shutdown.requested().await;
        Ok(())
    }
}

/// Its cleanup takes 2.5 s (a journal to flush), within its stop timeout.
#[derive(Service)]
#[service(name = "journal", stop_timeout = "5s")]
struct Journal;

#[lifecycle]
impl Journal {
    #[cleanup]
    async fn flush(&mut self) -> std::io::Result<()> {
        tokio::time::sleep(Duration::from_millis(2_500)).await;
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn a_run_with_a_restart_and_a_slow_stop_reads_line_by_line() {
    let (buffer, _guard) = console(|console| console);
    let report = Supervisor::new()
        .add(Feed)
        .add(Strategy {
            runs: Arc::default(),
        })
        .depends_on("feed")
        .restart(
            RestartPolicy::new(Restart::Permanent)
                .backoff(Duration::from_millis(250), Duration::from_secs(2))
                .jitter(0.0),
        )
        .add(Journal)
        .depends_on("strategy")
        .run_until(tokio::time::sleep(Duration::from_secs(8)))
        .await;
    assert!(report.is_success(), "{:?}", report.errors());
    let output = buffer.text();
    print!("{output}");

    let expected = "\
[   0.000s] starting 3 services in dependency order
[   0.000s] feed           stopped -> starting
[   0.300s] feed           starting -> running  (started in 300ms)
[   0.300s] strategy       stopped -> starting
[   0.400s] strategy       starting -> running  (started in 100ms)
[   0.400s] journal        stopped -> starting
[   0.400s] journal        starting -> running  (started in 0ns)
[   0.400s] all services running
[   1.400s] strategy       run hook `trade` failed: model drifted
[   1.400s] strategy       running -> error
[   1.400s] strategy       restarting in 250ms (restart #1, with journal)
[   1.400s] journal        running -> stopping
[   3.900s] journal        stopping -> stopped  (stopped in 2.5s)
[   3.900s] strategy       error -> stopped
[   3.900s] strategy       stopped -> starting  (restart #1)
[   4.000s] strategy       starting -> running  (started in 100ms)
[   4.000s] journal        stopped -> starting  (restart #1)
[   4.000s] journal        starting -> running  (started in 0ns)
[   8.000s] shutting down (the shutdown future completed), waiting for 3 services (budget 25s)
[   8.000s] journal        running -> stopping
[   9.000s] still waiting for journal (stopping for 1.0s)
[  10.000s] still waiting for journal (stopping for 2.0s)
[  10.500s] journal        stopping -> stopped  (stopped in 2.5s)
[  10.500s] strategy       running -> stopping
[  10.500s] strategy       stopping -> stopped  (stopped in 0ns)
[  10.500s] feed           running -> stopping
[  10.500s] feed           stopping -> stopped  (stopped in 0ns)
[  10.500s] every service stopped in 2.5s
[  10.500s] strategy       restarted 1 time
[  10.500s] every service stopped cleanly; exit code 0
";
    assert_eq!(output, expected);
    // The failure is shown once, on its hook's line, not again on the status change.
    assert_eq!(output.matches("model drifted").count(), 1);
    // Not a terminal: no colours.
    assert!(!output.contains('\x1b'));
}

/// Both cleanup hooks fail; so does the reload hook.
#[derive(Service)]
#[service(name = "ledger")]
struct Ledger;

#[lifecycle]
impl Ledger {
    #[cleanup]
    async fn flush(&mut self) -> std::io::Result<()> {
        Err(std::io::Error::other("disk full"))
    }

    #[cleanup]
    async fn close(&mut self) -> std::io::Result<()> {
        tracing::info!("closing the books");
        Err(std::io::Error::other("broken pipe"))
    }

    #[reload]
    async fn reread(&self) -> std::io::Result<()> {
        Err(std::io::Error::other("no such file"))
    }
}

#[tokio::test(start_paused = true)]
async fn every_failure_is_shown_once_and_a_later_one_again() {
    let (buffer, _guard) = console(|console| console);
    let ledger = Managed::new(Ledger);
    ledger.start().await.unwrap();
    ledger.reload().await.unwrap_err();
    ledger.reload().await.unwrap_err();
    tracing::warn!(disk = "sda", "disk almost full");
    ledger.stop().await.unwrap_err();
    let output = buffer.text();
    print!("{output}");

    let expected = "\
[   0.000s] ledger         stopped -> starting
[   0.000s] ledger         starting -> running  (started in 0ns)
[   0.000s] ledger         reload hook `reread` failed: no such file
[   0.000s] ledger         reload failed; it keeps running
[   0.000s] ledger         reload hook `reread` failed: no such file
[   0.000s] ledger         reload failed; it keeps running
[   0.000s] warning: disk almost full disk=sda
[   0.000s] ledger         running -> stopping
[   0.000s] ledger         closing the books
[   0.000s] ledger         cleanup hook `close` failed: broken pipe
[   0.000s] ledger         cleanup hook `flush` failed: disk full
[   0.000s] ledger         stopping -> error
";
    assert_eq!(output, expected);
}

#[tokio::test(start_paused = true)]
async fn colours_only_when_asked_for() {
    let (plain, guard) = console(|console| console);
    Managed::new(Feed).start().await.unwrap();
    drop(guard);
    let (colored, _guard) = console(|console| console.color(true));
    Managed::new(Feed).start().await.unwrap();
    let (plain, colored) = (plain.text(), colored.text());
    assert!(!plain.contains('\x1b'), "{plain}");
    assert!(colored.contains("\x1b[32mrunning\x1b[0m"), "{colored:?}");
    let mut stripped = colored.clone();
    for code in ["\x1b[0m", "\x1b[1m", "\x1b[2m", "\x1b[32m", "\x1b[33m"] {
        stripped = stripped.replace(code, "");
    }
    assert_eq!(
        stripped.replace("0.300s", "0.000s"),
        plain.replace("0.300s", "0.000s")
    );
}

/// Its cleanup never finishes.
#[derive(Service)]
#[service(name = "stuck", stop_timeout = "1h")]
struct Stuck;

#[lifecycle]
impl Stuck {
    #[cleanup]
    async fn drain(&mut self) -> std::io::Result<()> {
        std::future::pending().await
    }
}

#[tokio::test(start_paused = true)]
async fn an_abandoned_shutdown_names_what_it_cancelled_and_its_exit_code() {
    let (buffer, _guard) = console(|console| console);
    let report = Supervisor::new()
        .add(Feed)
        .add(Stuck)
        .depends_on("feed")
        .shutdown_timeout(Duration::from_millis(2_500))
        .run_until(tokio::time::sleep(Duration::from_secs(1)))
        .await;
    assert_eq!(report.code(), service_runtime::EXIT_SHUTDOWN_TIMEOUT);
    // The ticker ended with the shutdown: nothing is printed after the summary.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let output = buffer.text();
    print!("{output}");

    let expected = "\
[   0.000s] starting 2 services in dependency order
[   0.000s] feed           stopped -> starting
[   0.300s] feed           starting -> running  (started in 300ms)
[   0.300s] stuck          stopped -> starting
[   0.300s] stuck          starting -> running  (started in 0ns)
[   0.300s] all services running
[   1.000s] shutting down (the shutdown future completed), waiting for 2 services (budget 2.5s)
[   1.000s] stuck          running -> stopping
[   2.000s] still waiting for stuck (stopping for 1.0s)
[   3.000s] still waiting for stuck (stopping for 2.0s)
[   3.500s] stuck          stopping -> error  cancelled when the shutdown budget of 2.5s ran out (it was still stopping)
[   3.500s] stuck          cancelled
[   3.500s] feed           running -> error  cancelled when the shutdown budget of 2.5s ran out (the shutdown never got to it)
[   3.500s] feed           cancelled
[   3.500s] shutdown abandoned: the shutdown budget ran out
[   3.500s] error: shutdown budget of 2.5s ran out; cancelled while stopping: stuck; cancelled, never asked to stop: feed
[   3.500s] supervisor finished with 1 error; exit code 124
";
    assert_eq!(output, expected);
}

#[tokio::test(start_paused = true)]
async fn a_drain_says_how_long_before_the_stops_begin() {
    let (buffer, _guard) = console(|console| console);
    let supervisor = Supervisor::new()
        .drain_period(Duration::from_secs(5))
        .add(Feed);
    let handle = supervisor.handle();
    let drive = async {
        handle.started().await.unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
        handle.shutdown();
    };
    let (report, ()) = tokio::join!(supervisor.run_until(std::future::pending()), drive);
    assert!(report.is_success());
    let output = buffer.text();
    print!("{output}");

    let expected = "\
[   0.000s] starting 1 service in dependency order
[   0.000s] feed           stopped -> starting
[   0.300s] feed           starting -> running  (started in 300ms)
[   0.300s] all services running
[   1.300s] shutting down (SupervisorHandle::shutdown): not ready; draining for 5s before the stops
[   6.300s] drain over: stopping, waiting for 1 service (budget 25s)
[   6.300s] feed           running -> stopping
[   6.300s] feed           stopping -> stopped  (stopped in 0ns)
[   6.300s] every service stopped in 0ns
[   6.300s] every service stopped cleanly; exit code 0
";
    assert_eq!(output, expected);
}

#[tokio::test(start_paused = true)]
async fn the_program_s_stops_restarts_and_additions_read_as_such() {
    let (buffer, _guard) = console(|console| console);
    let supervisor = Supervisor::new().add(Feed);
    let handle = supervisor.handle();
    let drive = async {
        handle.started().await.unwrap();
        handle.stop("feed").await.unwrap();
        handle.restart("feed").await.unwrap();
        let second = Managed::with_config(Feed, Feed::config().name("feed-2"));
        handle.add(second).depends_on("feed").await.unwrap();
        handle.shutdown();
    };
    let (report, ()) = tokio::join!(supervisor.run_until(std::future::pending()), drive);
    assert!(report.is_success());
    let output = buffer.text();
    print!("{output}");

    let expected = "\
[   0.000s] starting 1 service in dependency order
[   0.000s] feed           stopped -> starting
[   0.300s] feed           starting -> running  (started in 300ms)
[   0.300s] all services running
[   0.300s] feed           stopping on request
[   0.300s] feed           running -> stopping
[   0.300s] feed           stopping -> stopped  (stopped in 0ns)
[   0.300s] feed           stopped on request
[   0.300s] feed           restarting on request
[   0.300s] feed           stopped -> starting
[   0.600s] feed           starting -> running  (started in 300ms)
[   0.600s] feed           restarted on request
[   0.600s] feed-2         adding (after feed)
[   0.600s] feed-2         stopped -> starting
[   0.900s] feed-2         starting -> running  (started in 300ms)
[   0.900s] feed-2         added in 300ms
[   0.900s] shutting down (SupervisorHandle::shutdown), waiting for 2 services (budget 25s)
[   0.900s] feed-2         running -> stopping
[   0.900s] feed-2         stopping -> stopped  (stopped in 0ns)
[   0.900s] feed           running -> stopping
[   0.900s] feed           stopping -> stopped  (stopped in 0ns)
[   0.900s] every service stopped in 0ns
[   0.900s] every service stopped cleanly; exit code 0
";
    assert_eq!(output, expected);
}
