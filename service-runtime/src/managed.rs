//! [`Managed`]: a service together with its state machine, its hooks' execution and its
//! observers.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Poll, Waker};
use std::time::{Duration, SystemTime};

use tokio::sync::{RwLock, RwLockReadGuard, mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::Instrument;

use crate::__private::{ComponentEntry, HookFuture};
use crate::Shutdown;
use crate::deadline;
use crate::error::{BoxError, HookFailure, HookKind, ServiceError};
use crate::health::{HealthDetail, HealthReport, HealthStatus, aggregate};
use crate::op::{OpShared, ResultWait};
use crate::service::{Lifecycle, Service, ServiceConfig};
use crate::status::ServiceStatus;
use crate::util::{catch_unwind_future, panic_message};

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A service under management: the handle a program starts, stops, checks and watches.
///
/// `Managed<S>` is a cheap, cloneable handle (an `Arc`); every clone controls the same
/// service. A start or stop runs in the task of the caller that began it, as it polls
/// the `start()` or `stop()` future; if that future is dropped half-way, or another call
/// waits for the same operation, the operation moves to a spawned task. So an operation
/// always runs to its end (a dropped future never leaves the state machine stuck, a later
/// call sees its outcome) without paying for a task when nobody needs one.
///
/// When the last handle is dropped (a [`Supervisor`](crate::Supervisor) or a parent
/// service holds one too), nothing can stop the service any more: its run loop is told
/// to shut down and its task is aborted, and the service is freed. No cleanup hook runs:
/// call [`stop`](Self::stop) first for an orderly end.
///
/// ```
/// use service_runtime::{lifecycle, Managed, Service, ServiceStatus};
///
/// #[derive(Service)]
/// struct Cache { entries: usize }
///
/// #[lifecycle]
/// impl Cache {
///     #[init]
///     async fn warm(&mut self) -> Result<(), std::io::Error> {
///         self.entries = 128;
///         Ok(())
///     }
/// }
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let cache = Managed::new(Cache { entries: 0 });
/// cache.start().await?;
/// assert_eq!(cache.status(), ServiceStatus::Running);
/// assert_eq!(cache.read().await.entries, 128);
/// cache.stop().await?;
/// # Ok::<(), service_runtime::ServiceError>(())
/// # }).unwrap();
/// ```
pub struct Managed<S: Service> {
    inner: Arc<Inner<S>>,
}

impl<S: Service> Clone for Managed<S> {
    fn clone(&self) -> Self {
        Managed::counted(self.inner.clone())
    }
}

impl<S: Service> Drop for Managed<S> {
    fn drop(&mut self) {
        self.inner.release_handle();
    }
}

impl<S: Service> fmt::Debug for Managed<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Managed")
            .field("name", &self.name())
            .field("status", &self.status())
            .finish_non_exhaustive()
    }
}

/// One status change of a service, as delivered to [`Managed::subscribe`] receivers.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct StatusChange {
    /// The service's name.
    pub service: Arc<str>,
    /// The status left.
    pub from: ServiceStatus,
    /// The status entered.
    pub to: ServiceStatus,
    /// Wall-clock time of the change.
    pub at: SystemTime,
    /// Time spent in `from` (for `starting → running`, how long the start took).
    pub duration: Duration,
    /// The error that caused a change to `error`.
    pub error: Option<ServiceError>,
}

/// The stream of a service's status changes, from [`Managed::subscribe`].
///
/// Unbounded, so a slow subscriber never slows the service nor loses a change; a
/// dropped subscriber is forgotten at the next change.
#[derive(Debug)]
pub struct StatusChanges {
    receiver: mpsc::UnboundedReceiver<StatusChange>,
}

impl StatusChanges {
    pub(crate) fn from_receiver(receiver: mpsc::UnboundedReceiver<StatusChange>) -> Self {
        StatusChanges { receiver }
    }

    /// The next change; `None` once the service is freed and every change was read.
    ///
    /// A service is freed once its last [`Managed`] handle is dropped and, for a service
    /// with a run loop, once its task has ended (the loop is aborted then: at its next
    /// `.await`).
    pub async fn recv(&mut self) -> Option<StatusChange> {
        self.receiver.recv().await
    }

    /// The next change if one is waiting.
    pub fn try_recv(&mut self) -> Option<StatusChange> {
        self.receiver.try_recv().ok()
    }
}

struct Inner<S> {
    /// This service's own `Arc` (it always lives in one): lets the type-erased service
    /// be the `Inner` itself rather than an `Arc` around a `Managed`.
    this: Weak<Inner<S>>,
    /// The service's name: the one setting that often differs between instances of a type.
    name: Cow<'static, str>,
    /// Every other setting.
    settings: Settings,
    /// `name` shared, made on first use (errors, status changes, a supervisor):
    /// a service that never needs it allocates nothing for it.
    shared_name: std::sync::OnceLock<Arc<str>>,
    /// The status, readable from anywhere with one atomic load.
    status: AtomicU8,
    /// Everything changed together with the status. Never held across an `.await`.
    ctl: Mutex<Control>,
    watch: std::sync::OnceLock<watch::Sender<ServiceStatus>>,
    /// The handles on the service: [`Managed`] values and type-erased ones
    /// ([`ErasedService`]), not the runtime's own references (an operation finishing in
    /// a task, the run loop's task). When the last handle goes, nothing can stop the run
    /// loop any more: [`Inner::last_handle_gone`] ends it.
    handles: AtomicUsize,
    /// The user's service. Init and cleanup hooks take the write lock (no one else
    /// reads while `starting` or `stopping`); the run loop and health checks share it.
    service: RwLock<S>,
}

/// A service's settings but its name.
enum Settings {
    /// Those of the `#[service(...)]` attribute, made once per type (most services keep
    /// them): 8 bytes in each service rather than the 176 of a [`ServiceConfig`].
    Shared(&'static ServiceConfig),
    /// Set at run time ([`Managed::with_config`]); the name in the box is not used.
    Own(Box<ServiceConfig>),
}

impl Settings {
    fn get(&self) -> &ServiceConfig {
        match self {
            Settings::Shared(config) => config,
            Settings::Own(config) => config,
        }
    }
}

struct Control {
    /// The start or stop in flight; it owns the `starting`/`stopping` states.
    op: Option<Op>,
    next_op: u64,
    /// When the current status was entered (while `running`, the start of the uptime).
    since: Instant,
    /// Every init hook completed and the cleanup hooks have not run yet.
    cleanup_owed: bool,
    /// Components started by the last start, in start order.
    components: Vec<ComponentEntry>,
    run: Option<RunLoop>,
    /// Set by a run loop that returned before its start finished.
    // Errors are boxed here: rare, and a `ServiceError` is 64 bytes in every service.
    early_run_exit: Option<Option<Box<ServiceError>>>,
    last_error: Option<Box<ServiceError>>,
    subscribers: Subscribers,
    /// The outcome of the last [`OpKind::RunStop`] that ended before the call that began
    /// it took it (see [`Op::beginner`]).
    run_stop_outcome: Option<RunStopOutcome>,
    /// Older untaken outcomes: a run stop ended while the outcome of an earlier one
    /// still waited for its caller's next poll.
    #[expect(
        clippy::box_collection,
        reason = "rare: a boxed list costs 8 bytes in every service, a list 24"
    )]
    more_run_stop_outcomes: Option<Box<Vec<RunStopOutcome>>>,
}

/// Takes the outcome of the ended [`OpKind::RunStop`] `id` out of `ctl`, if it is there.
fn take_run_stop_outcome(ctl: &mut Control, id: u64) -> Option<Result<(), ServiceError>> {
    let outcome = match ctl.run_stop_outcome.take_if(|(of, _)| *of == id) {
        Some(outcome) => outcome,
        None => {
            let more = ctl.more_run_stop_outcomes.as_mut()?;
            let at = more.iter().position(|(of, _)| *of == id)?;
            let outcome = more.swap_remove(at);
            if more.is_empty() {
                ctl.more_run_stop_outcomes = None;
            }
            outcome
        }
    };
    Some(match outcome.1 {
        None => Ok(()),
        Some(error) => Err(*error),
    })
}

/// Where a transition sends its change.
pub(crate) enum Subscriber {
    /// A [`Managed::subscribe`] stream (also a supervisor handle's): every field.
    Public(mpsc::UnboundedSender<StatusChange>),
    /// A supervisor the service was added to, which knows it by its entry index. Every
    /// transition keeps the supervisor's tally; while the supervisor runs, it also posts
    /// a compact change tagged with the index to the tally's mailbox, so the supervisor
    /// needs no name or address lookup, and no wall-clock read or name clone is paid for
    /// it. Forgotten once the supervisor's run is over.
    Supervisor {
        index: usize,
        tally: Arc<StatusTally>,
    },
}

/// A service's subscribers, in order. Most services have one, their supervisor: kept
/// inline, it costs no allocation.
#[derive(Default)]
struct Subscribers {
    first: Option<Subscriber>,
    rest: Vec<Subscriber>,
}

impl Subscribers {
    fn push(&mut self, subscriber: Subscriber) {
        match self.first {
            None => self.first = Some(subscriber),
            Some(_) => self.rest.push(subscriber),
        }
    }

    fn is_empty(&self) -> bool {
        self.first.is_none()
    }

    fn iter(&self) -> impl Iterator<Item = &Subscriber> {
        self.first.iter().chain(&self.rest)
    }

    /// Keeps the subscribers changes still reach, in order.
    fn retain_open(&mut self) {
        self.rest.retain(Subscriber::is_open);
        if !self.first.as_ref().is_some_and(Subscriber::is_open) {
            self.first = (!self.rest.is_empty()).then(|| self.rest.remove(0));
        }
    }
}

impl Subscriber {
    /// Whether changes still reach someone.
    fn is_open(&self) -> bool {
        match self {
            Subscriber::Public(sender) => !sender.is_closed(),
            Subscriber::Supervisor { tally, .. } => {
                tally.state.load(Ordering::Acquire) != StatusTally::DONE
            }
        }
    }
}

/// A status change as a supervisor receives it (see [`Subscriber::Supervisor`]).
#[derive(Debug)]
pub(crate) struct EntryChange {
    /// The service's index among the supervisor's entries.
    pub(crate) index: usize,
    pub(crate) from: ServiceStatus,
    pub(crate) to: ServiceStatus,
    /// When `from` was entered, and when `to` was: the time spent in `from` is
    /// subtracted only by a reader that needs it (see [`Inner::transition_at`]).
    pub(crate) entered: Instant,
    pub(crate) at: Instant,
    // Boxed: rare, and it keeps every change (a slot of the channel) small.
    pub(crate) error: Option<Box<ServiceError>>,
}

impl EntryChange {
    /// Time spent in `from`.
    pub(crate) fn duration(&self) -> Duration {
        self.at - self.entered
    }
}

/// Counts, over a group of services, those not `running` and every status change. Kept by
/// the services' own transitions, under their control locks, so a reader never sees it
/// lag a status (as a count kept from the change notifications would).
#[derive(Debug, Default)]
pub(crate) struct StatusTally {
    not_running: std::sync::atomic::AtomicUsize,
    changes: std::sync::atomic::AtomicU64,
    /// [`IDLE`](Self::IDLE), [`OBSERVED`](Self::OBSERVED) or [`DONE`](Self::DONE).
    state: AtomicU8,
    /// The changes posted while the supervisor observes, in order, until it takes them:
    /// one lock per change and one per batch taken, cheaper than a channel's per-item
    /// bookkeeping (a supervisor takes them in batches anyway).
    mailbox: Mutex<Vec<EntryChange>>,
    /// Notified when a change lands in an empty mailbox.
    arrived: tokio::sync::Notify,
}

impl StatusTally {
    /// Before the run: changes are counted, not posted (nobody would read them).
    const IDLE: u8 = 0;
    /// During the run: changes are posted.
    const OBSERVED: u8 = 1;
    /// After the run: the services forget the supervisor at their next change.
    const DONE: u8 = 2;

    /// From now on, the services post their changes to the mailbox.
    pub(crate) fn observe(&self) {
        self.state.store(Self::OBSERVED, Ordering::Release);
    }

    /// The run is over: nothing more is posted, and each service drops its subscription
    /// at its next change.
    pub(crate) fn close(&self) {
        self.state.store(Self::DONE, Ordering::Release);
        drop(std::mem::take(&mut *self.lock_mailbox()));
    }

    /// Moves every change posted so far into `into` (empty), in order.
    pub(crate) fn take(&self, into: &mut Vec<EntryChange>) {
        std::mem::swap(&mut *self.lock_mailbox(), into);
    }

    /// Completes when a change was posted since the last [`take`](Self::take) emptied
    /// the mailbox (perhaps spuriously: the mailbox may be empty again).
    pub(crate) async fn arrived(&self) {
        self.arrived.notified().await;
    }

    fn post(&self, change: EntryChange) {
        let mut mailbox = self.lock_mailbox();
        let first = mailbox.is_empty();
        mailbox.push(change);
        drop(mailbox);
        if first {
            self.arrived.notify_one();
        }
    }

    fn lock_mailbox(&self) -> MutexGuard<'_, Vec<EntryChange>> {
        // Only pushes and swaps happen under it: a poisoned mailbox is still consistent.
        self.mailbox
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// How many of the services are not `running`.
    pub(crate) fn not_running(&self) -> usize {
        self.not_running.load(Ordering::Acquire)
    }

    /// How many status changes the services made since they joined.
    pub(crate) fn changes(&self) -> u64 {
        self.changes.load(Ordering::Acquire)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum OpKind {
    Start,
    Stop,
    /// A stop of a service that owes nothing but its run loop (no component, no cleanup
    /// hook to run). Rather than a sequence of its own, the stop is ended by the run task
    /// when the loop returns (`Inner::on_run_exit`): a stop costs a shutdown request and a
    /// wait, no work to allocate and drive. The loop stays in `Control::run` meanwhile.
    /// At its deadline the loop is aborted and the stop ends in `error`
    /// (`Inner::time_out_run_stop`): by the process's deadline list (`crate::deadline`),
    /// or on a current-thread runtime by whichever waiter's tokio timer fires first.
    RunStop,
}

struct Op {
    kind: OpKind,
    /// Tells the op apart from later ones (its abandonment guard checks it).
    id: u64,
    /// Where the result reaches the calls that wait for it. A start or stop has one from
    /// its beginning (its work lives there). A [`OpKind::RunStop`] gets one only when
    /// another call joins it: the call that began it waits through `beginner` and
    /// [`Control::run_stop_outcome`], so a stop of a run-loop service allocates nothing.
    shared: Option<Arc<OpShared>>,
    /// [`OpKind::RunStop`] only: the call that began the stop still waits for it (with its
    /// waker once it polled); `None` once that call went away.
    beginner: Option<Option<Waker>>,
    /// Requested by `stop()` to cancel a start in flight; starts only.
    cancel: Option<Shutdown>,
    /// [`OpKind::RunStop`] only: its entry in the process's deadline list
    /// ([`crate::deadline`]), which ends the stop at its deadline whoever waits; `None`
    /// where its waiters arm tokio timers instead (a current-thread runtime).
    deadline: Option<deadline::Key>,
    /// A start or stop whose work waits for a run loop to return with an entry in the
    /// deadline list ([`Inner::join_listed`]). Boxed: only that wait needs it.
    run_join: Option<Box<RunJoin>>,
}

/// See [`Op::run_join`].
struct RunJoin {
    /// The list entry's id, drawn from the op ids: an entry that fires late (its `cancel`
    /// lost the race with the list's thread) finds a later join of the same operation
    /// (a failed start's second cleanup) under another id and leaves it alone.
    id: u64,
    state: RunJoinState,
}

enum RunJoinState {
    /// The loop to abort at the deadline, and the waker of the work waiting for it.
    Waiting {
        abort: tokio::task::AbortHandle,
        waker: Option<Waker>,
    },
    /// The deadline passed: the loop was aborted, the work stops waiting for it.
    Expired,
}

impl Op {
    /// How another call waits for this operation (`deadline`: see [`run_stop_deadline`]).
    fn waiter(&mut self, deadline: Instant) -> OpWait {
        match self.kind {
            OpKind::Start | OpKind::Stop => OpWait::Op(
                self.shared
                    .clone()
                    .expect("a start or stop has its shared state from its beginning"),
            ),
            OpKind::RunStop => OpWait::RunStop {
                progress: RunStopProgress::new(
                    self.id,
                    deadline,
                    false,
                    if self.deadline.is_some() {
                        RunStopStage::Listed
                    } else {
                        RunStopStage::First
                    },
                ),
                shared: self
                    .shared
                    .get_or_insert_with(OpShared::ended_elsewhere)
                    .clone(),
            },
        }
    }
}

/// The op in flight and how another call waits for it, if there is one.
fn join_op<S: Service>(ctl: &mut Control, inner: &Inner<S>) -> Option<(OpKind, OpWait)> {
    let deadline = run_stop_deadline(ctl, inner);
    let op = ctl.op.as_mut()?;
    Some((op.kind, op.waiter(deadline)))
}

/// The deadline of the [`OpKind::RunStop`] in flight: it began with the transition to
/// `stopping`, when `since` was set.
fn run_stop_deadline<S: Service>(ctl: &Control, inner: &Inner<S>) -> Instant {
    ctl.since + inner.settings.get().stop_timeout
}

/// How a call waits for an operation another call began (the call that began a
/// [`OpKind::RunStop`] waits through [`Wait::RunStop`] instead).
enum OpWait {
    /// Another call's start or stop.
    Op(Arc<OpShared>),
    /// Another call's run stop, ended by its deadline at the latest; its result reaches
    /// this call through `shared` (made when the first such call joined).
    RunStop {
        progress: RunStopProgress,
        shared: Arc<OpShared>,
    },
}

impl OpWait {
    async fn wait<S: Service>(self, inner: &Arc<Inner<S>>) -> Result<(), ServiceError> {
        match self {
            OpWait::Op(shared) => shared.join().await,
            OpWait::RunStop { progress, shared } => {
                RunStopWait {
                    inner,
                    result: shared.wait(),
                    progress,
                }
                .await
            }
        }
    }
}

/// An ended [`OpKind::RunStop`]'s outcome, kept in the control until the call that began
/// it takes it (the error boxed: rare, and inline it would enlarge every service).
type RunStopOutcome = (u64, Option<Box<ServiceError>>);

/// A call that joined another's [`OpKind::RunStop`] `id`: waits for it to end, ending it
/// at `deadline` if the loop has not returned by then. The call that began the stop waits
/// through [`CallState::RunStop`] (or a supervisor's [`Rest::RunStop`]) instead, and finds
/// its outcome in the control ([`Inner::poll_run_stop_outcome`]); both poll the same
/// [`RunStopProgress`] through [`Inner::poll_run_stop`].
struct RunStopWait<'a, S: Service> {
    inner: &'a Inner<S>,
    /// The shared result.
    result: ResultWait<&'a OpShared>,
    progress: RunStopProgress,
}

/// Where a wait for a [`OpKind::RunStop`] is.
pub(crate) struct RunStopProgress {
    id: u64,
    deadline: Instant,
    stage: RunStopStage,
    /// The stop has not ended for this wait yet: dropped now, it must leave something to
    /// end the stop by its deadline should the loop never return.
    armed: bool,
    /// The wait of the call that began the stop.
    beginner: bool,
}

impl RunStopProgress {
    /// `stage`: [`RunStopStage::First`], or what the caller already knows: the stop has
    /// an entry in the deadline list ([`RunStopStage::Listed`]), or it runs on a
    /// current-thread runtime ([`RunStopStage::OneTurn`]).
    fn new(id: u64, deadline: Instant, beginner: bool, stage: RunStopStage) -> Self {
        RunStopProgress {
            id,
            deadline,
            stage,
            armed: true,
            beginner,
        }
    }
}

enum RunStopStage {
    /// Not polled yet.
    First,
    /// Not polled yet, on a current-thread runtime (the call that began the stop found
    /// out, so the first poll need not ask again).
    OneTurn,
    /// Gave the loop one turn of the scheduler (current-thread runtime).
    Yielded,
    /// Waiting with the deadline armed (boxed: a timer would enlarge every stop).
    Timed(Pin<Box<tokio::time::Sleep>>),
    /// The deadline list ends the stop at its deadline ([`crate::deadline`]): a
    /// multi-thread runtime, or none (`futures::executor::block_on`, say).
    Listed,
    /// The deadline passed and the stop was ended (by this wait or another): its result
    /// is on its way (the waker is registered).
    TimedOut,
}

impl<S: Service> Future for RunStopWait<'_, S> {
    type Output = Result<(), ServiceError>;

    fn poll(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Self::Output> {
        // Every field is `Unpin` (the timer is boxed).
        let this = self.get_mut();
        this.inner
            .poll_run_stop(&mut this.progress, Some(&mut this.result), cx)
    }
}

impl<S: Service> Drop for RunStopWait<'_, S> {
    fn drop(&mut self) {
        self.inner.run_stop_wait_dropped(&self.progress);
    }
}

impl<S: Service> Inner<S> {
    /// Polls a wait for a run stop: `result` is the shared result, `None` for the call
    /// that began the stop.
    fn poll_run_stop(
        &self,
        progress: &mut RunStopProgress,
        mut result: Option<&mut ResultWait<&OpShared>>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<Result<(), ServiceError>> {
        loop {
            let outcome = match &mut result {
                Some(result) => result.poll_result(cx),
                None => self.poll_run_stop_outcome(progress.id, cx),
            };
            if let Poll::Ready(result) = outcome {
                progress.armed = false;
                return Poll::Ready(result);
            }
            // Most loops return as soon as they see the request, so most stops never arm
            // their timer: on a current-thread runtime, give the loop one turn of the
            // scheduler first. Not on a multi-thread runtime: there the self-woken task
            // waits in this worker's queue behind the loop (in the LIFO slot), and other
            // workers steal from that queue only once their own is empty; a loop that
            // blocks this thread while they are busy would hold back this task and the
            // deadline with it (`tests/operations.rs`,
            // `a_stop_with_busy_workers_returns_after_its_timeout_...`). A timer armed now
            // fires on whichever worker next looks at the clock.
            if matches!(progress.stage, RunStopStage::First) && on_current_thread_runtime() {
                progress.stage = RunStopStage::OneTurn;
            }
            match &mut progress.stage {
                RunStopStage::OneTurn => {
                    progress.stage = RunStopStage::Yielded;
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                RunStopStage::First | RunStopStage::Yielded => {
                    progress.stage = match tokio::runtime::Handle::try_current() {
                        Ok(_) => RunStopStage::Timed(Box::pin(tokio::time::sleep_until(
                            progress.deadline,
                        ))),
                        // Polled outside the runtime it began on: no timer to arm.
                        Err(_) => {
                            self.list_run_stop(progress.id, progress.deadline);
                            RunStopStage::Listed
                        }
                    };
                }
                RunStopStage::Listed | RunStopStage::TimedOut => return Poll::Pending,
                RunStopStage::Timed(timer) => {
                    if timer.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    // Ends the stop, unless another party just did (and completes it after
                    // releasing the control lock): either way the result is coming.
                    self.time_out_run_stop(progress.id);
                    progress.stage = RunStopStage::TimedOut;
                }
            }
        }
    }

    /// A wait for a run stop is dropped: if the stop has not ended for it, something
    /// must still end the stop at its deadline should the loop never return; and the
    /// call that began it no longer waits.
    fn run_stop_wait_dropped(&self, progress: &RunStopProgress) {
        if !progress.armed {
            return;
        }
        let id = progress.id;
        let mut waker = None;
        let deadline = {
            let mut ctl = self.lock();
            let deadline = run_stop_deadline(&ctl, self);
            match ctl.op.as_mut().filter(|op| op.id == id) {
                Some(op) => {
                    if progress.beginner {
                        // Dropped once the control lock is released.
                        waker = op.beginner.take();
                    }
                    if op.deadline.is_some() {
                        // The deadline list ends it: nothing to leave behind.
                        drop(ctl);
                        drop(waker);
                        return;
                    }
                }
                None => {
                    // Ended, its outcome not taken: nobody will.
                    if progress.beginner {
                        take_run_stop_outcome(&mut ctl, id);
                    }
                    return;
                }
            }
            deadline
        };
        drop(waker);
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                let inner = self.this.clone();
                drop(runtime.spawn(async move {
                    tokio::time::sleep_until(deadline).await;
                    if let Some(inner) = inner.upgrade() {
                        inner.time_out_run_stop(id);
                    }
                }));
            }
            Err(_) => self.list_run_stop(id, deadline),
        }
    }

    /// Gives the [`OpKind::RunStop`] `id` an entry in the deadline list, if it is still in
    /// flight and has none: for a stop waited for outside the runtime it began on.
    fn list_run_stop(&self, id: u64, deadline: Instant) {
        let mut ctl = self.lock();
        if let Some(op) = ctl
            .op
            .as_mut()
            .filter(|op| op.id == id && op.deadline.is_none())
        {
            op.deadline = self.list_deadline(id, deadline);
        }
    }

    /// An entry in the deadline list for the operation `id` at `deadline` (see
    /// [`deadline::Expire`] for what it does then).
    fn list_deadline(&self, id: u64, deadline: Instant) -> Option<deadline::Key> {
        let target: Weak<dyn deadline::Expire> = self.this.clone();
        deadline::register(deadline.into_std(), target, id)
    }

    /// For the start or stop in flight (whose work calls this) waiting for its run loop
    /// to return: except on a current-thread runtime (see [`Inner::begin_run_stop`]), an
    /// entry in the deadline list that aborts the loop through `abort` at `deadline`.
    /// `None`: arm a tokio timer instead.
    fn list_run_join(&self, abort: tokio::task::AbortHandle, deadline: Instant) -> Option<Listed> {
        if on_current_thread_runtime() {
            return None;
        }
        let mut ctl = self.lock();
        let id = ctl.next_op;
        let op = ctl.op.as_mut()?;
        let key = self.list_deadline(id, deadline)?;
        op.run_join = Some(Box::new(RunJoin {
            id,
            state: RunJoinState::Waiting { abort, waker: None },
        }));
        ctl.next_op += 1;
        Some(Listed(key))
    }

    /// Waits for the run loop's end (`joining`) until `listed` expires: `None` if it did
    /// first (it aborted the loop; one that blocks its thread ends later, unwaited).
    async fn join_listed<F>(&self, listed: Listed, mut joining: F) -> Option<F::Output>
    where
        F: Future<Output = Result<Option<ServiceError>, tokio::task::JoinError>> + Unpin,
    {
        let joined = std::future::poll_fn(|cx| {
            let polled = Pin::new(&mut joining).poll(cx);
            // A loop that returned (or panicked) ended on its own. One cancelled may have
            // been aborted by the list, which marks the join expired before it aborts:
            // the mark decides, so that a timeout is reported as one.
            if let Poll::Ready(joined) = &polled
                && !joined
                    .as_ref()
                    .is_err_and(tokio::task::JoinError::is_cancelled)
            {
                return polled.map(Some);
            }
            let mut ctl = self.lock();
            let join = ctl.op.as_mut().and_then(|op| op.run_join.as_deref_mut());
            let replaced = match join.map(|join| &mut join.state) {
                Some(RunJoinState::Expired) => return Poll::Ready(None),
                _ if polled.is_ready() => return polled.map(Some),
                Some(RunJoinState::Waiting { waker, .. }) => match waker {
                    Some(waker) if waker.will_wake(cx.waker()) => None,
                    waker => waker.replace(cx.waker().clone()),
                },
                // Unreachable (the operation whose work this is stays in flight until it
                // ends); the join alone would still end the wait.
                None => {
                    debug_assert!(false, "the operation waiting for its loop is gone");
                    None
                }
            };
            drop(ctl);
            // A waker's drop runs the executor's code: not under the control lock.
            drop(replaced);
            Poll::Pending
        })
        .await;
        drop(listed);
        joined
    }
}

impl<S: Service> deadline::Expire for Inner<S> {
    /// A [`OpKind::RunStop`] ends in `error` ([`Inner::time_out_run_stop`]); a start or
    /// stop waiting for its run loop in [`Inner::join_listed`] has the loop aborted.
    fn expire(&self, id: u64) {
        let mut ctl = self.lock();
        let Some(op) = ctl.op.as_mut() else {
            return;
        };
        if op.kind == OpKind::RunStop {
            if op.id == id {
                drop(ctl);
                self.time_out_run_stop(id);
            }
        } else if let Some(join) = op.run_join.as_deref_mut().filter(|join| join.id == id) {
            let RunJoinState::Waiting { abort, waker } =
                std::mem::replace(&mut join.state, RunJoinState::Expired)
            else {
                return;
            };
            drop(ctl);
            abort.abort();
            if let Some(waker) = waker {
                waker.wake();
            }
        }
    }
}

/// Removes a deadline list entry when dropped (the wait it bounds ended, or was dropped).
struct Listed(deadline::Key);

impl Drop for Listed {
    fn drop(&mut self) {
        deadline::cancel(self.0);
    }
}

/// Waits for `loop_end` (the end of a run loop that was asked to return) only as long as
/// it takes no timer: its output if it is ready now or, on a current-thread runtime,
/// after one turn of the scheduler. Not on a multi-thread runtime: a loop that blocks
/// the worker's thread would hold back this task (and the deadline) with it (`yield_now`
/// defers the wake-up until the worker parks; see [`RunStopWait`] for a self-wake).
async fn returned_soon<F: Future + Unpin>(loop_end: &mut F) -> Option<F::Output> {
    if let Some(output) = poll_now(loop_end).await {
        return Some(output);
    }
    if !on_current_thread_runtime() {
        return None;
    }
    tokio::task::yield_now().await;
    poll_now(loop_end).await
}

fn on_current_thread_runtime() -> bool {
    tokio::runtime::Handle::try_current().is_ok_and(|runtime| {
        runtime.runtime_flavor() == tokio::runtime::RuntimeFlavor::CurrentThread
    })
}

/// Inside an operation's work: if the work is dropped before its end (its runtime shut
/// down, or it panicked outside a hook), the operation ends in `error` rather than
/// leaving `starting`/`stopping` behind, and its waiters get an error.
struct OpGuard<S: Service> {
    inner: Arc<Inner<S>>,
    id: u64,
    finished: bool,
}

impl<S: Service> OpGuard<S> {
    /// The work's final transition has happened: clear the op. A caller that sees the op
    /// in between joins it and gets its result, so the order is safe.
    fn finish(mut self) {
        self.finished = true;
        let id = self.id;
        self.inner.lock().op.take_if(|op| op.id == id);
    }
}

impl<S: Service> Drop for OpGuard<S> {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let mut ctl = self.inner.lock();
        let Some(op) = ctl.op.take_if(|op| op.id == self.id) else {
            return;
        };
        let error = ServiceError::Abandoned {
            service: self.inner.name().clone(),
            operation: match op.kind {
                OpKind::Start => "start",
                OpKind::Stop | OpKind::RunStop => "stop",
            },
        };
        self.inner
            .transition(&mut ctl, ServiceStatus::Error, Some(error.clone()));
        drop(ctl);
        if let Some(shared) = op.shared {
            shared.complete(Err(error));
        }
    }
}

struct RunLoop {
    shutdown: Shutdown,
    handle: JoinHandle<Option<ServiceError>>,
}

/// Inside a run task: holds the service for the loop, and reports the task dropped
/// before its loop returned.
struct RunExitGuard<S: Service> {
    /// A reference of the runtime's own, not a handle: dropping the last [`Managed`]
    /// still ends the loop ([`Inner::last_handle_gone`]).
    inner: Arc<Inner<S>>,
    /// The loop returned and reported it.
    reported: bool,
    /// The loop's own signal: tells this loop apart from a later one.
    signal: Shutdown,
}

impl<S: Service> RunExitGuard<S> {
    /// The loop returned with `outcome`: reports it (see [`Inner::on_run_exit`]); the
    /// task's output is the error left for a stop in flight.
    fn finish(
        &mut self,
        outcome: Result<crate::__private::HookResult, String>,
    ) -> Option<ServiceError> {
        let error = match outcome {
            Ok(Ok(())) => None,
            Ok(Err(error)) => Some(HookFailure::Error(Arc::from(error))),
            Err(panic) => Some(HookFailure::Panic(panic)),
        };
        self.reported = true;
        self.inner
            .clone()
            .on_run_exit(run_hook_name::<S>(), error, &self.signal)
    }
}

/// The service's read guard for its run loop.
async fn read_for_run<S: Service>(inner: &Inner<S>) -> RwLockReadGuard<'_, S> {
    let service = &inner.service;
    match service.try_read() {
        Ok(guard) => guard,
        // Boxed: rare (a `read()` guard held elsewhere at the loop's start).
        Err(_) => Box::pin(service.read()).await,
    }
}

/// The largest run future kept in place in its task (see `Inner::spawn_run_loop`).
const MAX_INLINE_RUN_FUTURE: usize = 1024;

/// The size of the future `S::__run` returns, without making one.
fn run_future_size<S: Lifecycle>() -> usize {
    fn size_of_output<'a, S: 'a, F>(_: fn(&'a S, Shutdown) -> F) -> usize {
        std::mem::size_of::<F>()
    }
    size_of_output(S::__run)
}

impl<S: Service> Drop for RunExitGuard<S> {
    fn drop(&mut self) {
        if !self.reported {
            self.inner.run_task_dropped(&self.signal);
        }
    }
}

/// Whether the loop of `signal` is the one `ctl` keeps (not one that an earlier stop
/// took, or aborted at its deadline).
fn is_current_loop(ctl: &Control, signal: &Shutdown) -> bool {
    ctl.run
        .as_ref()
        .is_some_and(|run| run.shutdown.is_same(signal))
}

/// How one hook call ended.
enum Outcome {
    Done,
    Failed(HookFailure),
    Cancelled,
}

/// The future of [`Managed::start`] (`KIND` = [`START`]) and [`Managed::stop`]
/// ([`STOP`]): decides at its first poll, as an `async fn` would, then awaits what the
/// decision left, deciding again after another call's operation it only had to let
/// finish. Written out rather than as `async fn`s: every start and stop carries it, and
/// the compiler's layout of the `async` version kept the decision's `Wait` beside the
/// largest of its waits (328 bytes; 56 now). The kind is a constant rather than a
/// function pointer, so the decision is inlined (a service without hooks starts and
/// stops in it).
struct Call<'a, S: Service, const KIND: bool> {
    managed: &'a Managed<S>,
    state: CallState<'a>,
}

/// [`Call`]'s kind: a start.
const START: bool = false;
/// [`Call`]'s kind: a stop.
const STOP: bool = true;

enum CallState<'a> {
    /// Not polled yet, or deciding again after another call's operation ended.
    Decide,
    /// Runs the operation this call began.
    Drive(crate::op::Drive),
    /// Another call's operation (boxed: rare, concurrent calls); `retry`: decide again
    /// once it ended, rather than taking its outcome.
    Other {
        // `Sync` too, so that the whole future stays `Sync` (as the `async fn` was).
        wait: Pin<Box<dyn Future<Output = Result<(), ServiceError>> + Send + Sync + 'a>>,
        retry: bool,
    },
    /// The [`OpKind::RunStop`] this call began (see [`RunStopWait`]).
    RunStop(RunStopProgress),
    Done,
}

impl<'a> CallState<'a> {
    fn from_wait<S: Service>(wait: Wait, inner: &'a Arc<Inner<S>>) -> Self {
        match wait {
            Wait::Drive(op) => CallState::Drive(op.drive()),
            Wait::Join(op) => CallState::Other {
                wait: Box::pin(op.wait(inner)),
                retry: false,
            },
            Wait::ThenRetry(op) => CallState::Other {
                wait: Box::pin(op.wait(inner)),
                retry: true,
            },
            Wait::RunStop(progress) => CallState::RunStop(progress),
        }
    }
}

impl<S: Service, const KIND: bool> Call<'_, S, KIND> {
    fn decide(&self) -> Decided {
        match KIND {
            START => self.managed.start_now(),
            STOP => self.managed.stop_now(),
        }
    }

    /// Decides (at the first poll, and again after another call's operation it only had
    /// to let finish) and polls what the decision left.
    fn poll_wait(&mut self, cx: &mut std::task::Context<'_>) -> Poll<Result<(), ServiceError>> {
        loop {
            let outcome = match &mut self.state {
                CallState::Decide => match self.decide() {
                    Ok(outcome) => outcome,
                    Err(wait) => {
                        self.state = CallState::from_wait(wait, &self.managed.inner);
                        continue;
                    }
                },
                CallState::Drive(drive) => std::task::ready!(Pin::new(drive).poll(cx)),
                CallState::Other { wait, retry } => {
                    let outcome = std::task::ready!(wait.as_mut().poll(cx));
                    if *retry {
                        self.state = CallState::Decide;
                        continue;
                    }
                    outcome
                }
                CallState::RunStop(progress) => {
                    std::task::ready!(self.managed.inner.poll_run_stop(progress, None, cx))
                }
                CallState::Done => panic!("a start or stop future polled after it completed"),
            };
            self.state = CallState::Done;
            return Poll::Ready(outcome);
        }
    }
}

impl<S: Service, const KIND: bool> Future for Call<'_, S, KIND> {
    type Output = Result<(), ServiceError>;

    fn poll(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Self::Output> {
        // Every field is `Unpin` (the other call's wait is boxed, the timer too).
        self.get_mut().poll_wait(cx)
    }
}

impl<S: Service, const KIND: bool> Drop for Call<'_, S, KIND> {
    fn drop(&mut self) {
        // A run stop's wait left before its end (a `Drive` hands its work over itself).
        if let CallState::RunStop(progress) = &self.state {
            self.managed.inner.run_stop_wait_dropped(progress);
        }
    }
}

impl<S: Service> Managed<S> {
    /// Manages `service` with the configuration of its `#[service(...)]` attribute.
    pub fn new(service: S) -> Self {
        let shared = S::__shared_config();
        Self::with_settings(service, shared.name.clone(), Settings::Shared(shared))
    }

    /// Manages `service` with a configuration chosen at run time.
    ///
    /// ```
    /// # use service_runtime::{lifecycle, Managed, Service};
    /// # use std::time::Duration;
    /// # #[derive(Service)] struct Worker;
    /// # #[lifecycle] impl Worker {}
    /// let worker = Managed::with_config(
    ///     Worker,
    ///     Worker::config().name("worker-7").stop_timeout(Duration::from_secs(3)),
    /// );
    /// assert_eq!(worker.name(), "worker-7");
    /// ```
    pub fn with_config(service: S, mut config: ServiceConfig) -> Self {
        let name = std::mem::take(&mut config.name);
        let shared = S::__shared_config();
        let settings = if config.same_but_name(shared) {
            Settings::Shared(shared)
        } else {
            Settings::Own(Box::new(config))
        };
        Self::with_settings(service, name, settings)
    }

    fn with_settings(service: S, name: Cow<'static, str>, settings: Settings) -> Self {
        Managed {
            inner: Arc::new_cyclic(|this| Inner {
                this: this.clone(),
                shared_name: std::sync::OnceLock::new(),
                status: AtomicU8::new(ServiceStatus::Stopped as u8),
                ctl: Mutex::new(Control {
                    op: None,
                    next_op: 0,
                    since: Instant::now(),
                    cleanup_owed: false,
                    components: Vec::new(),
                    run: None,
                    early_run_exit: None,
                    last_error: None,
                    subscribers: Subscribers::default(),
                    run_stop_outcome: None,
                    more_run_stop_outcomes: None,
                }),
                watch: std::sync::OnceLock::new(),
                handles: AtomicUsize::new(1),
                service: RwLock::new(service),
                name,
                settings,
            }),
        }
    }

    /// The service's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The service's version.
    pub fn version(&self) -> &str {
        &self.inner.settings.get().version
    }

    /// A copy of the configuration the service runs with.
    ///
    /// A copy because a service does not keep one of its own: every instance that keeps
    /// its type's configuration (all but a run-time name) shares it.
    pub fn config(&self) -> ServiceConfig {
        ServiceConfig {
            name: self.inner.name.clone(),
            ..self.inner.settings.get().clone()
        }
    }

    /// How a supervisor restarts the service, from its configuration.
    pub(crate) fn restart_policy(&self) -> crate::RestartPolicy {
        self.inner.settings.get().restart
    }

    /// The current status: one atomic load, never waits for a hook.
    pub fn status(&self) -> ServiceStatus {
        self.inner.status()
    }

    /// Time since the service last became `running`; zero when it is not running.
    pub fn uptime(&self) -> Duration {
        self.inner.uptime()
    }

    /// The error of the last transition to `error`, kept until the next one.
    pub fn last_error(&self) -> Option<ServiceError> {
        self.inner.lock().last_error.as_deref().cloned()
    }

    /// Every status change from now on, in order, with time and cause.
    pub fn subscribe(&self) -> StatusChanges {
        let (sender, receiver) = mpsc::unbounded_channel();
        self.inner
            .lock()
            .subscribers
            .push(Subscriber::Public(sender));
        StatusChanges::from_receiver(receiver)
    }

    /// A watch of the current status: a new receiver sees the current status at once,
    /// then the latest one (intermediate statuses may be skipped; use
    /// [`subscribe`](Self::subscribe) for every change).
    pub fn watch(&self) -> watch::Receiver<ServiceStatus> {
        let _ctl = self.inner.lock();
        self.inner
            .watch
            .get_or_init(|| watch::Sender::new(self.inner.status()))
            .subscribe()
    }

    /// Shared access to the service's fields.
    ///
    /// Hold the guard briefly: cleanup hooks wait for it (up to the stop timeout). While
    /// a start or stop holds the service (its init or cleanup hooks run), this waits for
    /// it; an operation whose caller stopped polling it is moved to a task first, so it
    /// still finishes.
    pub async fn read(&self) -> RwLockReadGuard<'_, S> {
        if let Ok(guard) = self.inner.service.try_read() {
            return guard;
        }
        // An operation in flight may hold the lock while its caller does not poll it
        // (a `start()` future kept aside): hand it to a task so the lock is released.
        let op = self
            .inner
            .lock()
            .op
            .as_ref()
            .and_then(|op| op.shared.clone());
        if let Some(op) = op {
            op.hand_over();
        }
        self.inner.service.read().await
    }

    /// Starts the service: init hooks in source order, then components in field order,
    /// then the run loop; then `running`.
    ///
    /// Any failure (an `Err`, a panic, a timeout) ends in `error` with the started
    /// components stopped in reverse; when every init hook had completed, the cleanup
    /// hooks run too, so a failed start leaves nothing behind. Cleanup hooks never run
    /// after a failed init hook.
    ///
    /// Idempotent: starting a running service returns `Ok` at once; concurrent calls
    /// share one start and its result. From `error`, starts again (a restart), first
    /// running any cleanup still owed.
    pub fn start(&self) -> impl Future<Output = Result<(), ServiceError>> + Send + '_ {
        Call::<S, START> {
            managed: self,
            state: CallState::Decide,
        }
    }

    /// Decides a start under the lock: its outcome when it needs no waiting (running
    /// already, or started inline), otherwise the operation to await.
    fn start_now(&self) -> Decided {
        loop {
            let mut ctl = self.inner.lock();
            if let Some((kind, wait)) = join_op(&mut ctl, &self.inner) {
                return Err(match kind {
                    OpKind::Start => Wait::Join(wait),
                    OpKind::Stop | OpKind::RunStop => Wait::ThenRetry(wait),
                });
            }
            match self.inner.status() {
                ServiceStatus::Running => return Ok(Ok(())),
                ServiceStatus::Stopped | ServiceStatus::Error => {
                    if self.inner.start_inline(&mut ctl) {
                        return Ok(Ok(()));
                    }
                    return Err(Wait::Drive(self.inner.clone().begin_start(&mut ctl)));
                }
                // Without an op these states cannot last; look again.
                ServiceStatus::Starting | ServiceStatus::Stopping => {}
            }
        }
    }

    /// Stops the service: the run loop is told to shut down and awaited (up to the stop
    /// timeout), components stop in reverse field order, cleanup hooks run in reverse
    /// source order. Every cleanup runs even if one fails; all errors are returned
    /// together and the service ends in `error`, otherwise in `stopped`.
    ///
    /// Idempotent: stopping a stopped service does nothing; concurrent calls share one
    /// stop. Stopping a service that is starting cancels the start: `running` is never
    /// reported, and cleanup runs only if every init hook had completed.
    pub fn stop(&self) -> impl Future<Output = Result<(), ServiceError>> + Send + '_ {
        Call::<S, STOP> {
            managed: self,
            state: CallState::Decide,
        }
    }

    /// Decides a stop under the lock: its outcome when it needs no waiting (stopped
    /// already, or stopped inline), otherwise the operation to await (a run stop begun
    /// here has its loop's shutdown requested already).
    fn stop_now(&self) -> Decided {
        loop {
            let mut ctl = self.inner.lock();
            if let Some((kind, wait)) = join_op(&mut ctl, &self.inner) {
                return Err(match kind {
                    OpKind::Stop | OpKind::RunStop => Wait::Join(wait),
                    OpKind::Start => {
                        if let Some(cancel) = ctl.op.as_ref().and_then(|op| op.cancel.as_ref()) {
                            cancel.request();
                        }
                        Wait::ThenRetry(wait)
                    }
                });
            }
            match self.inner.status() {
                ServiceStatus::Stopped => return Ok(Ok(())),
                ServiceStatus::Error if !ctl.cleanup_owed && ctl.components.is_empty() => {
                    self.inner
                        .transition(&mut ctl, ServiceStatus::Stopped, None);
                    return Ok(Ok(()));
                }
                ServiceStatus::Running | ServiceStatus::Error => {
                    if self.inner.stop_inline(&mut ctl) {
                        return Ok(Ok(()));
                    }
                    if let Some((progress, shutdown)) = self.inner.begin_run_stop(&mut ctl) {
                        // Requested once the lock is released: the woken loop may end
                        // the stop at once, on another thread, and take the lock.
                        drop(ctl);
                        shutdown.request();
                        return Err(Wait::RunStop(progress));
                    }
                    return Err(Wait::Drive(self.inner.clone().begin_stop(&mut ctl)));
                }
                // Without an op these states cannot last; look again.
                ServiceStatus::Starting | ServiceStatus::Stopping => {}
            }
        }
    }

    /// The rest of a start or stop that `decide` ([`start_now`](Self::start_now) or
    /// [`stop_now`](Self::stop_now)) could not finish: awaits the operation, and decides
    /// again after one it only had to let finish.
    fn awaiting<const KIND: bool>(&self, wait: Wait) -> Call<'_, S, KIND> {
        Call {
            managed: self,
            state: CallState::from_wait(wait, &self.inner),
        }
    }

    /// The service's health report.
    ///
    /// A service that is not `running` is `unhealthy` with the reason
    /// `"Service status: <status>"`, answered at once. Otherwise every health check and
    /// component report runs concurrently, each under its timeout; a check that fails,
    /// panics or hangs counts as unhealthy for itself alone. A critical failure makes the
    /// service unhealthy, an optional one at most degraded.
    pub async fn health(&self) -> HealthReport {
        self.inner.health().await
    }

    pub(crate) fn erased(&self) -> ErasedService {
        self.inner.handles.fetch_add(1, Ordering::Relaxed);
        ErasedService(self.inner.clone())
    }

    /// A handle from one of the runtime's own references: counted as a handle.
    fn counted(inner: Arc<Inner<S>>) -> Self {
        // Relaxed, as `Arc::clone`: a new handle is made from a live one (or from the
        // runtime's reference, below), and the count only matters when it reaches zero.
        inner.handles.fetch_add(1, Ordering::Relaxed);
        Managed { inner }
    }
}

/// What `start_now`/`stop_now` decide: the outcome, or the operation still to await.
type Decided = Result<Result<(), ServiceError>, Wait>;

enum Wait {
    /// Run this operation, begun by this call, and return its outcome.
    Drive(Arc<OpShared>),
    /// Return the outcome of this operation, begun by another call.
    Join(OpWait),
    /// Let this operation finish, then decide again.
    ThenRetry(OpWait),
    /// This call began a [`OpKind::RunStop`] (and requested the loop's shutdown): wait
    /// for the run task to end the stop, or end it at its deadline.
    RunStop(RunStopProgress),
}

impl<S: Service> Inner<S> {
    /// The name as errors and status changes carry it.
    fn name(&self) -> &Arc<str> {
        self.shared_name.get_or_init(|| Arc::from(&*self.name))
    }

    fn status(&self) -> ServiceStatus {
        ServiceStatus::from_u8(self.status.load(Ordering::Acquire))
    }

    /// The span of everything the service does. Made per use rather than once at
    /// construction, so a service built before the subscriber was installed still logs
    /// with its name (a span created without a subscriber stays disabled for good).
    fn span(&self) -> tracing::Span {
        // A root: an operation can move to a spawned task half-way and a run loop always
        // runs in one, so the service's spans never nest under whichever caller began them.
        tracing::info_span!(parent: None, "service", service = %self.name, version = %self.settings.get().version)
    }

    fn hook_span(&self, kind: HookKind, hook: &'static str) -> tracing::Span {
        tracing::info_span!(parent: &self.span(), "hook", kind = kind.as_str(), hook)
    }

    fn lock(&self) -> MutexGuard<'_, Control> {
        // A panic while holding the lock can only come from a subscriber's tracing
        // layer; the control state is still consistent, so keep going.
        self.ctl
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn uptime(&self) -> Duration {
        let ctl = self.lock();
        if self.status() == ServiceStatus::Running {
            ctl.since.elapsed()
        } else {
            Duration::ZERO
        }
    }

    /// Moves to `to`, recording, logging and broadcasting the change. Callers hold `ctl`,
    /// so changes are totally ordered.
    fn transition(&self, ctl: &mut Control, to: ServiceStatus, error: Option<ServiceError>) {
        self.transition_at(ctl, to, error, Instant::now());
    }

    /// [`transition`](Self::transition) at `now`: two transitions made together under one
    /// lock share one clock read (so an inline start reports no time spent `starting`,
    /// and an inline stop none `stopping`: nothing was awaited).
    fn transition_at(
        &self,
        ctl: &mut Control,
        to: ServiceStatus,
        error: Option<ServiceError>,
        now: Instant,
    ) {
        let from = self.status();
        if !from.can_transition_to(to) {
            // Unreachable by construction; the state-machine tests walk every path.
            debug_assert!(
                false,
                "illegal transition {from} -> {to} of `{}`",
                self.name
            );
            tracing::error!(parent: &self.span(), %from, %to, "refused illegal status transition");
            return;
        }
        // The time spent in `from` is computed only where it is used (a log line, a
        // public subscriber's change): a subtraction of two instants normalises seconds
        // and nanoseconds, about a hundred instructions, four times per start and stop.
        let entered = std::mem::replace(&mut ctl.since, now);
        self.status.store(to as u8, Ordering::Release);
        match &error {
            Some(error) => {
                tracing::info!(parent: &self.span(), %from, %to, duration = ?(now - entered), %error, "status changed");
                ctl.last_error = Some(Box::new(error.clone()));
            }
            None => {
                tracing::info!(parent: &self.span(), %from, %to, duration = ?(now - entered), "status changed");
            }
        }
        if !ctl.subscribers.is_empty() {
            // Built for the first public subscriber, if any: a supervisor needs neither the
            // name nor the wall-clock time.
            let mut change: Option<StatusChange> = None;
            let running = ServiceStatus::Running;
            // Delivered in a plain loop; the rare subscriber gone is removed afterwards
            // (`retain` on every change cost more than the delivery itself).
            let mut gone = false;
            for subscriber in ctl.subscribers.iter() {
                let delivered = match subscriber {
                    Subscriber::Public(sender) => {
                        let change = change.get_or_insert_with(|| StatusChange {
                            service: self.name().clone(),
                            from,
                            to,
                            at: SystemTime::now(),
                            duration: now - entered,
                            error: error.clone(),
                        });
                        sender.send(change.clone()).is_ok()
                    }
                    Subscriber::Supervisor { index, tally } => {
                        // The tally first: whoever gets the change sees the count include it.
                        if from == running {
                            tally.not_running.fetch_add(1, Ordering::AcqRel);
                        } else if to == running {
                            tally.not_running.fetch_sub(1, Ordering::AcqRel);
                        }
                        tally.changes.fetch_add(1, Ordering::AcqRel);
                        match tally.state.load(Ordering::Acquire) {
                            StatusTally::IDLE => true,
                            StatusTally::OBSERVED => {
                                tally.post(EntryChange {
                                    index: *index,
                                    from,
                                    to,
                                    entered,
                                    at: now,
                                    error: error.clone().map(Box::new),
                                });
                                true
                            }
                            _ => false,
                        }
                    }
                };
                gone |= !delivered;
            }
            if gone {
                ctl.subscribers.retain_open();
            }
        }
        if let Some(watch) = self.watch.get() {
            watch.send_replace(to);
        }
    }

    /// Starts at once, without an operation, when there is nothing to await: no init
    /// hook, no component, no cleanup owed (a run hook is spawned, not awaited).
    /// Observers see the same transitions.
    fn start_inline(self: &Arc<Self>, ctl: &mut Control) -> bool {
        if !S::__HOOKS.init.is_empty() || ctl.cleanup_owed || !ctl.components.is_empty() {
            return false;
        }
        // Spawning the run loop needs a runtime; without one, the operation path fails
        // cleanly (the service ends in `error`) instead of panicking half-way.
        if S::__HOOKS.run.is_some() && tokio::runtime::Handle::try_current().is_err() {
            return false;
        }
        let Ok(service) = self.service.try_read() else {
            return false;
        };
        let mut components = Vec::new();
        service.__components(&mut components);
        if !components.is_empty() {
            return false;
        }
        drop(service);
        let now = Instant::now();
        self.transition_at(ctl, ServiceStatus::Starting, None, now);
        // The run loop cannot report an exit before `ctl` is released, by then `running`.
        ctl.run = S::__HOOKS.run.map(|_| self.spawn_run_loop());
        self.transition_at(ctl, ServiceStatus::Running, None, now);
        ctl.cleanup_owed = true;
        true
    }

    /// Stops at once, without a task, when there is nothing to await: no run loop, no
    /// component, and no cleanup hook owed.
    fn stop_inline(&self, ctl: &mut Control) -> bool {
        let cleanup = ctl.cleanup_owed && !S::__HOOKS.cleanup.is_empty();
        if ctl.run.is_some() || !ctl.components.is_empty() || cleanup {
            return false;
        }
        ctl.cleanup_owed = false;
        let now = Instant::now();
        self.transition_at(ctl, ServiceStatus::Stopping, None, now);
        self.transition_at(ctl, ServiceStatus::Stopped, None, now);
        true
    }

    /// Registers a start operation and returns it for the caller to drive. Called with
    /// `ctl` held, no op in flight, status `stopped` or `error`.
    fn begin_start(self: Arc<Self>, ctl: &mut Control) -> Arc<OpShared> {
        // Only the loop this start spawns may report an early exit.
        ctl.early_run_exit = None;
        let cancel = Shutdown::new();
        let restart_cleanup = self.status() == ServiceStatus::Error
            && (ctl.cleanup_owed || !ctl.components.is_empty());
        let first = if restart_cleanup {
            ServiceStatus::Stopping
        } else {
            ServiceStatus::Starting
        };
        self.transition(ctl, first, None);
        let signal = cancel.clone();
        self.begin(ctl, OpKind::Start, Some(cancel), move |inner| {
            inner.start_sequence(signal, restart_cleanup)
        })
    }

    /// Registers a stop operation and returns it for the caller to drive. Called with
    /// `ctl` held, no op in flight, status `running` or `error` with something to clean up.
    fn begin_stop(self: Arc<Self>, ctl: &mut Control) -> Arc<OpShared> {
        self.transition(ctl, ServiceStatus::Stopping, None);
        self.begin(ctl, OpKind::Stop, None, |inner| async move {
            inner.stop_owed().await
        })
    }

    /// Begins a [`OpKind::RunStop`] when the run loop is all the service owes: `running`, the
    /// loop not returned yet, no component, no cleanup hook owed. Returns the stop's id and
    /// deadline, and the loop's signal to request once `ctl` is released.
    ///
    /// Except on a current-thread runtime (where the waiters arm tokio timers, on a clock
    /// that may be paused), the stop's deadline goes to the deadline list now: a tokio
    /// timer per stop would wake a parked worker every time ([`crate::deadline`]).
    fn begin_run_stop(&self, ctl: &mut Control) -> Option<(RunStopProgress, Shutdown)> {
        let cleanup = ctl.cleanup_owed && !S::__HOOKS.cleanup.is_empty();
        if self.status() != ServiceStatus::Running || cleanup || !ctl.components.is_empty() {
            return None;
        }
        let shutdown = ctl.run.as_ref()?.shutdown.clone();
        self.transition(ctl, ServiceStatus::Stopping, None);
        let id = ctl.next_op;
        ctl.next_op += 1;
        let deadline = run_stop_deadline(ctl, self);
        let (listed, stage) = if on_current_thread_runtime() {
            (None, RunStopStage::OneTurn)
        } else {
            match self.list_deadline(id, deadline) {
                Some(key) => (Some(key), RunStopStage::Listed),
                // No thread for the list: the waiters arm tokio timers.
                None => (None, RunStopStage::First),
            }
        };
        let progress = RunStopProgress::new(id, deadline, true, stage);
        ctl.op = Some(Op {
            kind: OpKind::RunStop,
            id,
            shared: None,
            beginner: Some(None),
            cancel: None,
            deadline: listed,
            run_join: None,
        });
        Some((progress, shutdown))
    }

    /// The deadline of [`OpKind::RunStop`] `id` passed: if it is still in flight, abort the loop
    /// and end the stop in `error`.
    fn time_out_run_stop(&self, id: u64) {
        let mut ctl = self.lock();
        if ctl.op.as_ref().is_none_or(|op| op.id != id) {
            return;
        }
        let limit = self.settings.get().stop_timeout;
        // Logged before the op is taken: should a subscriber panic here, the stop is
        // still in flight for the next attempt (the deadline list retries).
        let error = self.logged(self.hook_error(
            HookKind::Run,
            run_hook_name::<S>(),
            HookFailure::Timeout(limit),
        ));
        let op = ctl.op.take().expect("checked above, under the same lock");
        let run = ctl.run.take();
        self.end_run_stop(ctl, op, Some(error));
        // After the lock is released: the abort may drop the run task in this very call,
        // and its guard takes the lock.
        if let Some(run) = run {
            run.handle.abort();
        }
    }

    /// Ends a [`OpKind::RunStop`] (taken out of `ctl`): `stopped`, or `error` with `error`; its
    /// waiters get the outcome.
    fn end_run_stop(&self, mut ctl: MutexGuard<'_, Control>, op: Op, error: Option<ServiceError>) {
        // Taken by a timeout; otherwise the loop's task is ending (or gone): detach it.
        ctl.run = None;
        let result = self.end_stop(&mut ctl, error);
        // The call that began the stop finds its outcome in the control.
        if op.beginner.is_some() {
            let outcome = (op.id, result.as_ref().err().cloned().map(Box::new));
            if let Some(older) = ctl.run_stop_outcome.replace(outcome) {
                ctl.more_run_stop_outcomes
                    .get_or_insert_default()
                    .push(older);
            }
        }
        drop(ctl);
        if let Some(key) = op.deadline {
            deadline::cancel(key);
        }
        if let Some(waker) = op.beginner.flatten() {
            waker.wake();
        }
        if let Some(shared) = op.shared {
            shared.complete(result);
        }
    }

    /// For the call that began the [`OpKind::RunStop`] `id`: its outcome once it ended
    /// (taken out of the control), otherwise `cx` is woken when it does.
    fn poll_run_stop_outcome(
        &self,
        id: u64,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<Result<(), ServiceError>> {
        let mut ctl = self.lock();
        if let Some(op) = ctl.op.as_mut().filter(|op| op.id == id) {
            let replaced = match &mut op.beginner {
                Some(Some(waker)) if waker.will_wake(cx.waker()) => None,
                beginner => beginner.replace(Some(cx.waker().clone())),
            };
            // A waker's drop runs the executor's code: not under the control lock.
            drop(ctl);
            drop(replaced);
            return Poll::Pending;
        }
        Poll::Ready(take_run_stop_outcome(&mut ctl, id).unwrap_or_else(|| {
            // Unreachable: the outcome stays until this call takes it (or goes away).
            debug_assert!(false, "the outcome of run stop {id} is missing");
            Err(ServiceError::Abandoned {
                service: self.name().clone(),
                operation: "stop",
            })
        }))
    }

    /// The last step of every stop: nothing is owed any more; `stopped`, or `error` with
    /// `error`, which is also the stop's outcome.
    fn end_stop(&self, ctl: &mut Control, error: Option<ServiceError>) -> Result<(), ServiceError> {
        ctl.cleanup_owed = false;
        match error {
            None => {
                self.transition(ctl, ServiceStatus::Stopped, None);
                Ok(())
            }
            Some(error) => {
                self.transition(ctl, ServiceStatus::Error, Some(error.clone()));
                Err(error)
            }
        }
    }

    /// Builds an operation's work around `sequence` (which ends with the final
    /// transition) and records the operation in `ctl`.
    fn begin<F, Fut>(
        self: Arc<Self>,
        ctl: &mut Control,
        kind: OpKind,
        cancel: Option<Shutdown>,
        sequence: F,
    ) -> Arc<OpShared>
    where
        F: FnOnce(Arc<Self>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), ServiceError>> + Send + 'static,
    {
        let id = ctl.next_op;
        ctl.next_op += 1;
        let span = self.span();
        // Created outside the work so that it also runs if the work is dropped unpolled.
        let guard = OpGuard {
            inner: self,
            id,
            finished: false,
        };
        // The span wraps the sequence only: its exit (a subscriber's code) runs before
        // `finish`, so a panic there still finds the guard armed and ends the operation
        // with an error for its waiters, rather than leaving them waiting for a result
        // that the unwound work can no longer publish.
        let shared = OpShared::new(Box::pin(async move {
            let guard = guard;
            let result = sequence(guard.inner.clone()).instrument(span).await;
            guard.finish();
            result
        }));
        ctl.op = Some(Op {
            kind,
            id,
            shared: Some(shared.clone()),
            beginner: None,
            cancel,
            deadline: None,
            run_join: None,
        });
        shared
    }

    /// Takes what a stop owes from `ctl`, runs the stop steps and ends in `stopped` or
    /// `error`. Status is `stopping` on entry.
    async fn stop_owed(&self) -> Result<(), ServiceError> {
        let (run, components, cleanup) = {
            let mut ctl = self.lock();
            // `cleanup_owed` stays set until the cleanup ran: a stop abandoned half-way
            // (its runtime shut down) leaves it owed to the next start.
            (
                ctl.run.take(),
                std::mem::take(&mut ctl.components),
                ctl.cleanup_owed,
            )
        };
        let errors = self.stop_steps(run, components, cleanup).await;
        let error = ServiceError::combine(self.name(), errors);
        self.end_stop(&mut self.lock(), error)
    }

    /// Stops the run loop, the components (in reverse) and runs the cleanup hooks (in
    /// reverse), collecting every error. Each step is bounded by its timeout.
    async fn stop_steps(
        &self,
        run: Option<RunLoop>,
        components: Vec<ComponentEntry>,
        cleanup: bool,
    ) -> Vec<ServiceError> {
        let mut errors = Vec::new();
        if let Some(RunLoop {
            shutdown,
            mut handle,
        }) = run
        {
            shutdown.request();
            let limit = self.settings.get().stop_timeout;
            let deadline = Instant::now() + limit;
            // Unconstrained: with thousands of stops joined in one task, tokio's budget would
            // make every `JoinHandle` poll past the first 128 return `Pending` and re-wake.
            let abort = handle.abort_handle();
            let mut joining = tokio::task::coop::unconstrained(&mut handle);
            let joined = match returned_soon(&mut joining).await {
                Some(joined) => Some(joined),
                None => match self.list_run_join(abort, deadline) {
                    Some(listed) => self.join_listed(listed, joining).await,
                    // Boxed: a timer would enlarge every stop's future.
                    None => Box::pin(tokio::time::timeout_at(deadline, joining))
                        .await
                        .ok(),
                },
            };
            match joined {
                Some(Ok(None)) => {}
                Some(Ok(Some(error))) => errors.push(error),
                Some(Err(join_error)) => errors.push(self.logged(self.hook_error(
                    HookKind::Run,
                    run_hook_name::<S>(),
                    HookFailure::Panic(join_error.to_string()),
                ))),
                None => {
                    handle.abort();
                    errors.push(self.logged(self.hook_error(
                        HookKind::Run,
                        run_hook_name::<S>(),
                        HookFailure::Timeout(limit),
                    )));
                }
            }
        }
        for entry in components.iter().rev() {
            if let Err(error) = entry.handle.0.stop().await {
                errors.push(ServiceError::Component {
                    service: self.name().clone(),
                    component: entry.field,
                    source: Box::new(error),
                });
            }
        }
        if cleanup && !S::__HOOKS.cleanup.is_empty() {
            // Boxed: only services with cleanup hooks carry the state of running them.
            Box::pin(self.run_cleanups(&mut errors)).await;
        }
        errors
    }

    /// Runs the cleanup hooks in reverse source order under the service's write lock,
    /// collecting every failure.
    async fn run_cleanups(&self, errors: &mut Vec<ServiceError>) {
        let limit = self.settings.get().stop_timeout;
        let acquired = match self.service.try_write() {
            Ok(service) => Ok(service),
            // Boxed: a timer would enlarge every stop's future.
            Err(_) => Box::pin(tokio::time::timeout(limit, self.service.write())).await,
        };
        match acquired {
            Ok(mut service) => {
                for (index, spec) in S::__HOOKS.cleanup.iter().enumerate().rev() {
                    let timeout = spec.timeout.unwrap_or(limit);
                    let future = service.__cleanup(index);
                    if let Outcome::Failed(failure) = self
                        .run_hook(HookKind::Cleanup, spec.name, future, timeout, None)
                        .await
                    {
                        errors.push(self.hook_error(HookKind::Cleanup, spec.name, failure));
                    }
                }
            }
            Err(_) => {
                let first = S::__HOOKS.cleanup.last().map_or("?", |spec| spec.name);
                errors.push(self.logged(self.hook_error(
                    HookKind::Cleanup,
                    first,
                    HookFailure::Error(Arc::from(BoxError::from(format!(
                        "no cleanup hook ran: a `Managed::read()` guard or a health check still held the service after {limit:?}"
                    )))),
                )));
            }
        }
    }

    /// The body of a start operation. Returns once the service is `running`, `error`
    /// (the start failed) or `stopped` (the start was cancelled).
    async fn start_sequence(
        self: Arc<Self>,
        cancel: Shutdown,
        restart_cleanup: bool,
    ) -> Result<(), ServiceError> {
        if restart_cleanup {
            Box::pin(self.stop_owed()).await?;
            let mut ctl = self.lock();
            if cancel.is_requested() {
                return Err(self.cancelled());
            }
            self.transition(&mut ctl, ServiceStatus::Starting, None);
        }

        // Exclusive access for the init hooks; a `read()` guard held elsewhere can delay
        // it, but never past the start timeout, and `stop()` still cancels the wait.
        let limit = self.settings.get().start_timeout;
        let acquired = match self.service.try_write() {
            Ok(service) => Some(Ok(service)),
            // Boxed: a timer would enlarge every start's future.
            Err(_) => Box::pin(async {
                tokio::select! {
                    biased;
                    () = cancel.requested() => None,
                    acquired = tokio::time::timeout(limit, self.service.write()) => Some(acquired),
                }
            })
            .await,
        };
        let mut service = match acquired {
            None => return Err(Box::pin(self.abandon_start(None, Vec::new(), false)).await),
            Some(Ok(service)) => service,
            Some(Err(_)) => {
                let hook = S::__HOOKS.init.first().map_or("init", |spec| spec.name);
                let error = self.logged(self.hook_error(
                    HookKind::Init,
                    hook,
                    HookFailure::Error(Arc::from(BoxError::from(format!(
                        "no init hook ran: a `Managed::read()` guard still held the service after {limit:?}"
                    )))),
                ));
                let mut ctl = self.lock();
                self.transition(&mut ctl, ServiceStatus::Error, Some(error.clone()));
                return Err(error);
            }
        };
        for (index, spec) in S::__HOOKS.init.iter().enumerate() {
            let timeout = spec.timeout.unwrap_or(self.settings.get().start_timeout);
            let future = service.__init(index);
            match self
                .run_hook(HookKind::Init, spec.name, future, timeout, Some(&cancel))
                .await
            {
                Outcome::Done => {}
                Outcome::Cancelled => {
                    drop(service);
                    return Err(Box::pin(self.abandon_start(None, Vec::new(), false)).await);
                }
                Outcome::Failed(failure) => {
                    let error = self.hook_error(HookKind::Init, spec.name, failure);
                    let mut ctl = self.lock();
                    self.transition(&mut ctl, ServiceStatus::Error, Some(error.clone()));
                    return Err(error);
                }
            }
        }
        let mut components = Vec::new();
        service.__components(&mut components);
        drop(service);

        let mut started = Vec::with_capacity(components.len());
        for entry in components {
            let result = tokio::select! {
                biased;
                () = cancel.requested() => None,
                result = entry.handle.0.start() => Some(result),
            };
            match result {
                Some(Ok(())) => started.push(entry),
                None => {
                    // The child's start goes on in its own task; stopping it cancels it.
                    started.push(entry);
                    return Err(Box::pin(self.abandon_start(None, started, true)).await);
                }
                Some(Err(error)) => {
                    let error = ServiceError::Component {
                        service: self.name().clone(),
                        component: entry.field,
                        source: Box::new(error),
                    };
                    return Err(Box::pin(self.fail_start(error, None, started)).await);
                }
            }
        }

        let run = S::__HOOKS.run.map(|_| self.spawn_run_loop());
        // Decide under the lock, act after releasing it (no guard lives across `.await`).
        let undo = {
            let mut ctl = self.lock();
            let early_exit = ctl.early_run_exit.take();
            if cancel.is_requested() {
                Some((None, run, started))
            } else if let Some(Some(error)) = early_exit {
                Some((Some(*error), run, started))
            } else {
                let finished_early = early_exit.is_some();
                ctl.run = run;
                ctl.components = started;
                ctl.cleanup_owed = true;
                self.transition(&mut ctl, ServiceStatus::Running, None);
                if finished_early {
                    // The run hook returned `Ok` before the start finished: it is done, so stop.
                    drop(ctl);
                    self.clone().stop_after_run_returned();
                }
                None
            }
        };
        // This start may be finishing in a task of its own after every handle went: the
        // loop it spawned would run on (its task holds the service), so end it now.
        if undo.is_none() && self.handles.load(Ordering::Acquire) == 0 {
            self.last_handle_gone();
        }
        match undo {
            None => Ok(()),
            Some((None, run, started)) => {
                Err(Box::pin(self.abandon_start(run, started, true)).await)
            }
            Some((Some(error), run, started)) => {
                Err(Box::pin(self.fail_start(error, run, started)).await)
            }
        }
    }

    /// A start failed after every init hook completed: undo it (run loop, components,
    /// cleanup hooks) and end in `error` with the first cause.
    async fn fail_start(
        &self,
        error: ServiceError,
        run: Option<RunLoop>,
        started: Vec<ComponentEntry>,
    ) -> ServiceError {
        for secondary in self.stop_steps(run, started, true).await {
            // Each was logged where it happened; this ties it to the failed start.
            tracing::debug!(parent: &self.span(), error = %secondary, "while undoing a failed start");
        }
        let mut ctl = self.lock();
        ctl.early_run_exit = None;
        self.transition(&mut ctl, ServiceStatus::Error, Some(error.clone()));
        error
    }

    /// `stop()` cancelled the start: `starting → stopping`, undo what was done, `→ stopped`.
    async fn abandon_start(
        &self,
        run: Option<RunLoop>,
        started: Vec<ComponentEntry>,
        cleanup: bool,
    ) -> ServiceError {
        {
            let mut ctl = self.lock();
            self.transition(&mut ctl, ServiceStatus::Stopping, None);
        }
        let errors = self.stop_steps(run, started, cleanup).await;
        let mut ctl = self.lock();
        ctl.early_run_exit = None;
        match ServiceError::combine(self.name(), errors) {
            None => self.transition(&mut ctl, ServiceStatus::Stopped, None),
            Some(error) => self.transition(&mut ctl, ServiceStatus::Error, Some(error)),
        }
        self.cancelled()
    }

    fn cancelled(&self) -> ServiceError {
        ServiceError::StartCancelled {
            service: self.name().clone(),
        }
    }

    fn spawn_run_loop(self: &Arc<Self>) -> RunLoop {
        let shutdown = Shutdown::new();
        // Moved into the task, so that it also reports a task dropped before its first poll.
        let exit = RunExitGuard {
            inner: self.clone(),
            reported: false,
            signal: shutdown.clone(),
        };
        // The task's future holds the user's run future in place (one allocation less
        // than boxing it) and little else: every capture and `.await` state counts in
        // each run-loop service's task cell, whose size is rounded up to 128 bytes (the
        // hook name is looked up again rather than captured; the rare lock wait is
        // boxed). For a small loop the cell is 384 B, against 256 B plus a 144 B box.
        // A task's future is built here, on the stack of the `start()` that spawns it:
        // a large run future (a buffer held across an `.await`) is boxed inside the
        // task instead, each way in a function of its own so that neither frame holds
        // the other's future.
        let handle = if run_future_size::<S>() <= MAX_INLINE_RUN_FUTURE {
            self.spawn_run_task_inline(exit)
        } else {
            self.spawn_run_task_boxed(exit)
        };
        RunLoop { shutdown, handle }
    }

    #[inline(never)]
    fn spawn_run_task_inline(&self, mut exit: RunExitGuard<S>) -> JoinHandle<Option<ServiceError>> {
        self.spawn_run_task(async move {
            let outcome = {
                let guard = read_for_run(&exit.inner).await;
                let run = std::pin::pin!(guard.__run(exit.signal.clone()));
                catch_unwind_future(run).await
            };
            exit.finish(outcome)
        })
    }

    #[inline(never)]
    fn spawn_run_task_boxed(&self, mut exit: RunExitGuard<S>) -> JoinHandle<Option<ServiceError>> {
        self.spawn_run_task(async move {
            let outcome = {
                let guard = read_for_run(&exit.inner).await;
                catch_unwind_future(Box::pin(guard.__run(exit.signal.clone()))).await
            };
            exit.finish(outcome)
        })
    }

    fn spawn_run_task<F>(&self, task: F) -> JoinHandle<Option<ServiceError>>
    where
        F: Future<Output = Option<ServiceError>> + Send + 'static,
    {
        let span = self.hook_span(HookKind::Run, run_hook_name::<S>());
        // A span no subscriber wanted stays disabled for good: entering it at every poll
        // would do nothing, and keeping it would take 40 bytes of every run task's cell.
        if span.is_disabled() {
            tokio::spawn(task)
        } else {
            tokio::spawn(task.instrument(span))
        }
    }

    /// The run loop ended. While `running`, an error moves the service to `error`
    /// (cleanup stays owed until `stop()`), and `Ok` stops the service. A [`OpKind::RunStop`]
    /// ends here. While starting or stopping otherwise, the operation in flight reports
    /// it; the returned error is for it.
    ///
    /// `signal` tells the loop apart: a loop aborted by an earlier stop's timeout may
    /// report late, when another loop already runs; only the loop in `ctl.run` counts.
    fn on_run_exit(
        self: Arc<Self>,
        hook: &'static str,
        failure: Option<HookFailure>,
        signal: &Shutdown,
    ) -> Option<ServiceError> {
        let error = failure.map(|failure| self.hook_error(HookKind::Run, hook, failure));
        if let Some(error) = &error {
            tracing::error!(parent: &self.hook_span(HookKind::Run, hook), %error, "hook failed");
        }
        let mut ctl = self.lock();
        let current = is_current_loop(&ctl, signal);
        match self.status() {
            ServiceStatus::Running if !current => error,
            ServiceStatus::Running => {
                // The loop is no longer owed: a stop from now on must not wait for it.
                ctl.run = None;
                match error {
                    Some(error) => self.transition(&mut ctl, ServiceStatus::Error, Some(error)),
                    None => {
                        drop(ctl);
                        tracing::info!(parent: &self.span(), hook, "run hook returned; stopping the service");
                        self.stop_after_run_returned();
                    }
                }
                None
            }
            // A loop of an earlier run (aborted at a stop's deadline while it blocked its
            // thread) had its shutdown requested; the loop this start spawned has not.
            ServiceStatus::Starting if signal.is_requested() => error,
            ServiceStatus::Starting => {
                ctl.early_run_exit = Some(error.map(Box::new));
                None
            }
            ServiceStatus::Stopping => {
                match ctl.op.take_if(|op| current && op.kind == OpKind::RunStop) {
                    Some(op) => {
                        self.end_run_stop(ctl, op, error);
                        None
                    }
                    None => error,
                }
            }
            _ => error,
        }
    }

    /// The run task was dropped before its loop returned (its runtime shut down). A
    /// [`OpKind::RunStop`] waiting for it ends in `error` now rather than at its deadline; a
    /// `running` service moves to `error`, its loop no longer owed to a stop.
    fn run_task_dropped(&self, signal: &Shutdown) {
        let mut ctl = self.lock();
        if !is_current_loop(&ctl, signal) {
            return;
        }
        if let Some(op) = ctl.op.take_if(|op| op.kind == OpKind::RunStop) {
            let error = ServiceError::Abandoned {
                service: self.name().clone(),
                operation: "stop",
            };
            self.end_run_stop(ctl, op, Some(error));
        } else if self.status() == ServiceStatus::Running {
            ctl.run = None;
            // Not logged as a failure: it happens at every program exit that leaves a
            // service running; the transition records it (at info level).
            let error = self.hook_error(
                HookKind::Run,
                run_hook_name::<S>(),
                HookFailure::Error(Arc::from(BoxError::from(
                    "its task was dropped before it returned (its tokio runtime shut down)",
                ))),
            );
            self.transition(&mut ctl, ServiceStatus::Error, Some(error));
        }
    }

    /// One handle less: the last one ends the run loop (see [`Inner::handles`]).
    fn release_handle(&self) {
        // AcqRel, as `Arc`'s drop: every use through the other handles happens before
        // the loop is ended.
        if self.handles.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.last_handle_gone();
        }
    }

    /// Nothing can stop the run loop any more: request its shutdown and abort its task,
    /// which holds the service (a loop that returned, or none, leaves nothing to do).
    /// A loop spawned later by a start still finishing in a task of its own is ended
    /// when that start ends (the check at the end of [`Inner::start_sequence`]).
    fn last_handle_gone(&self) {
        let run = self.lock().run.take();
        if let Some(run) = run {
            run.shutdown.request();
            // After the lock is released: the abort may drop the task in this very
            // call, and its guard takes the lock.
            run.handle.abort();
        }
    }

    fn stop_after_run_returned(self: Arc<Self>) {
        tokio::spawn(async move {
            let _ = Managed::counted(self).stop().await;
        });
    }

    /// Runs one hook under its timeout and span, catching a panic; `cancel` abandons it.
    async fn run_hook(
        &self,
        kind: HookKind,
        hook: &'static str,
        future: HookFuture<'_>,
        timeout: Duration,
        cancel: Option<&Shutdown>,
    ) -> Outcome {
        let span = self.hook_span(kind, hook);
        let started = Instant::now();
        if cancel.is_some_and(Shutdown::is_requested) {
            tracing::info!(parent: &span, elapsed = ?Duration::ZERO, "hook cancelled by stop()");
            return Outcome::Cancelled;
        }
        let mut future = catch_unwind_future(future);
        // A hook that finishes at its first poll (most do) needs no timer and no watch
        // for cancellation: poll it once before setting them up.
        let first = {
            let _entered = span.enter();
            poll_now(&mut future).await
        };
        let result = match first {
            Some(result) => Ok(result),
            // Boxed: the timer and the cancellation watch would otherwise make every
            // operation's future larger, hooks that finish at once included.
            None => {
                let guarded =
                    tokio::time::timeout_at(started + timeout, future).instrument(span.clone());
                let waited = match cancel {
                    Some(cancel) => {
                        Box::pin(async {
                            tokio::select! {
                                biased;
                                () = cancel.requested() => None,
                                result = guarded => Some(result),
                            }
                        })
                        .await
                    }
                    None => Some(Box::pin(guarded).await),
                };
                match waited {
                    Some(result) => result,
                    None => {
                        tracing::info!(parent: &span, elapsed = ?started.elapsed(), "hook cancelled by stop()");
                        return Outcome::Cancelled;
                    }
                }
            }
        };
        let outcome = match result {
            Ok(Ok(Ok(()))) => Outcome::Done,
            Ok(Ok(Err(error))) => Outcome::Failed(HookFailure::Error(Arc::from(error))),
            Ok(Err(panic)) => Outcome::Failed(HookFailure::Panic(panic)),
            Err(_) => Outcome::Failed(HookFailure::Timeout(timeout)),
        };
        let elapsed = started.elapsed();
        match &outcome {
            Outcome::Failed(failure) => {
                let error = self.hook_error(kind, hook, failure.clone());
                tracing::error!(parent: &span, ?elapsed, %error, "hook failed");
            }
            _ => tracing::debug!(parent: &span, ?elapsed, "hook done"),
        }
        outcome
    }

    /// Logs a failure that no hook call logged itself (one error event per failure).
    fn logged(&self, error: ServiceError) -> ServiceError {
        match error.hook() {
            Some((kind, hook)) => {
                tracing::error!(parent: &self.hook_span(kind, hook), %error, "hook failed")
            }
            None => tracing::error!(parent: &self.span(), %error, "failed"),
        }
        error
    }

    fn hook_error(&self, kind: HookKind, hook: &'static str, failure: HookFailure) -> ServiceError {
        ServiceError::Hook {
            service: self.name().clone(),
            kind,
            hook,
            failure,
        }
    }

    async fn health(&self) -> HealthReport {
        let started;
        let uptime;
        let components: Vec<(&'static str, bool, ErasedService)> = {
            let ctl = self.lock();
            // Read under the lock, so `since` below is the start of this status.
            let status = self.status();
            if status != ServiceStatus::Running {
                let reason = match (ctl.last_error.as_deref(), status) {
                    (Some(error), ServiceStatus::Error) => {
                        format!("Service status: {status}: {error}")
                    }
                    _ => format!("Service status: {status}"),
                };
                drop(ctl);
                return self.unhealthy_report(0, reason);
            }
            // One clock read for the uptime and the checks' deadlines.
            started = Instant::now();
            uptime = started.saturating_duration_since(ctl.since).as_secs();
            if ctl.components.is_empty() {
                // Most services: skips the collection's call, a measurable share of an
                // instant check's aggregation.
                Vec::new()
            } else {
                ctl.components
                    .iter()
                    .map(|entry| (entry.field, entry.critical, entry.handle.clone()))
                    .collect()
            }
        };
        let limit = self.settings.get().health_timeout;
        // Bounded: a stop waiting for the write lock would otherwise queue us behind it.
        let (service, started) = match self.service.try_read() {
            Ok(service) => (service, started),
            // Boxed: this rare wait (a timer and a lock waiter) would otherwise widen
            // every aggregation's future, which a supervisor boxes once per service.
            Err(_) => match Box::pin(tokio::time::timeout(limit, self.service.read())).await {
                // The checks' deadlines count from the end of the wait.
                Ok(service) => (service, Instant::now()),
                Err(_) => {
                    let reason = format!("Service status: {}", self.status());
                    return self.unhealthy_report(uptime, reason);
                }
            },
        };
        // A service of one check (or component) keeps it in place: no list to allocate.
        let (mut single, mut many) = (None, Vec::new());
        {
            // In a block of its own, as everything the future does not need across the
            // wait for the checks: a smaller future is cheaper to box and to move.
            let parent = self.span();
            let mut all = S::__HOOKS
                .health
                .iter()
                .enumerate()
                .map(|(index, spec)| Check {
                    work: CheckWork::Hook(service.__health(index)),
                    timeout: Some(spec.timeout.unwrap_or(limit)),
                    timer: None,
                    span: tracing::info_span!(parent: &parent, "hook", kind = HookKind::Health.as_str(), hook = spec.name),
                    result: None,
                })
                .chain(components.iter().map(|(_, _, handle)| Check {
                    work: CheckWork::Component(handle.0.health()),
                    timeout: None,
                    timer: None,
                    span: tracing::Span::none(),
                    result: None,
                }));
            if S::__HOOKS.health.len() + components.len() == 1 {
                single = all.next();
            } else {
                many.extend(all);
            }
        }
        let checks: &mut [Check<'_>] = match &mut single {
            Some(check) => std::slice::from_mut(check),
            None => &mut many,
        };
        run_checks(checks, started).await;
        let checks_len = checks.len();

        let names = S::__HOOKS
            .health
            .iter()
            .map(|spec| (spec.name, spec.critical))
            .chain(
                components
                    .iter()
                    .map(|(field, critical, _)| (*field, *critical)),
            );
        let all_healthy = checks.iter().all(|check| {
            check
                .result
                .as_ref()
                .is_some_and(|detail| detail.status == HealthStatus::Healthy)
        });
        let (status, reason) = if all_healthy {
            // What `aggregate` would say, without walking the names to say it.
            (HealthStatus::Healthy, None)
        } else {
            aggregate(
                names
                    .clone()
                    .zip(&*checks)
                    .map(|((name, critical), check)| {
                        let detail = check.result.as_ref().expect("every check finished");
                        (name, critical, detail)
                    }),
            )
        };
        // Names are `&'static str` (hook names, component fields): borrowed, not copied.
        let entries = names.zip(checks).map(|((name, _), check)| {
            let detail = check.result.take().expect("every check finished");
            (std::borrow::Cow::Borrowed(name), detail)
        });
        let mut dependencies = BTreeMap::new();
        let mut details = BTreeMap::new();
        if checks_len <= SMALL_REPORT {
            // A few checks fit one B-tree leaf: inserted in place, without the list the
            // bulk build below sorts.
            for (name, detail) in entries {
                if let Some(reason) = detail.reason {
                    details.insert(name.clone(), reason);
                }
                dependencies.insert(name, detail.status);
            }
        } else {
            // Collected, then built in one go: `BTreeMap`'s bulk build from a sorted list
            // is cheaper than one insertion (and rebalancing) per check.
            let mut listed = Vec::with_capacity(checks_len);
            let mut failures = Vec::new();
            for (name, detail) in entries {
                if let Some(reason) = detail.reason {
                    failures.push((name.clone(), reason));
                }
                listed.push((name, detail.status));
            }
            dependencies = listed.into_iter().collect();
            details = failures.into_iter().collect();
        }
        // The checks borrow the service: ended before its lock is released.
        drop((single, many));
        drop(service);
        HealthReport {
            status,
            uptime,
            // Borrowed when configured from literals (the derive's name and version).
            service_name: self.name.clone(),
            version: self.settings.get().version.clone(),
            dependencies,
            reason,
            details,
        }
    }

    /// The report of a service that is not running (or whose checks could not run): no
    /// dependencies, and `reason`.
    fn unhealthy_report(&self, uptime: u64, reason: String) -> HealthReport {
        HealthReport {
            status: HealthStatus::Unhealthy,
            uptime,
            service_name: self.name.clone(),
            version: self.settings.get().version.clone(),
            dependencies: BTreeMap::new(),
            reason: Some(reason),
            details: BTreeMap::new(),
        }
    }
}

/// Polls `future` once: its output if it is ready, `None` (with a wake-up arranged) if not.
async fn poll_now<F: Future + Unpin>(future: &mut F) -> Option<F::Output> {
    match std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut *future).poll(cx))).await {
        Poll::Ready(output) => Some(output),
        Poll::Pending => None,
    }
}

/// Up to this many checks, a report's maps are built by insertion: they fit one B-tree
/// leaf (11 entries), so an insertion is a short shift within it.
const SMALL_REPORT: usize = 11;

/// One health check (or a component's report) of an aggregation in progress.
struct Check<'a> {
    work: CheckWork<'a>,
    /// `None` for a component: its own checks carry their timeouts.
    timeout: Option<Duration>,
    /// Armed only when the check did not finish at its first poll.
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    span: tracing::Span,
    result: Option<HealthDetail>,
}

enum CheckWork<'a> {
    Hook(crate::__private::CheckFuture<'a>),
    Component(BoxFuture<'a, HealthReport>),
    Done,
}

/// Runs every check concurrently in the calling task, each under its timeout and span,
/// catching panics. Rather than a `join_all` of wrapped futures, the checks are polled
/// in place: a check that is ready at its first poll (the common case) costs no timer,
/// no clock read and no allocation beyond its own future. Timeouts count from `started`
/// (the caller's clock read).
async fn run_checks(checks: &mut [Check<'_>], started: Instant) {
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for check in checks.iter_mut() {
            if check.result.is_some() {
                continue;
            }
            let _entered = check.span.enter();
            let polled = match &mut check.work {
                CheckWork::Hook(future) => {
                    catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(cx))).unwrap_or_else(
                        |panic| {
                            Poll::Ready(HealthDetail::unhealthy(format!(
                                "check panicked: {}",
                                panic_message(&*panic)
                            )))
                        },
                    )
                }
                CheckWork::Component(future) => {
                    future.as_mut().poll(cx).map(|child| HealthDetail {
                        status: child.status,
                        reason: child.reason,
                    })
                }
                CheckWork::Done => unreachable!("a finished check has its result"),
            };
            let detail = match polled {
                Poll::Ready(detail) => detail,
                Poll::Pending => match check.timeout {
                    None => {
                        pending = true;
                        continue;
                    }
                    Some(timeout) => {
                        let timer = check.timer.get_or_insert_with(|| {
                            Box::pin(tokio::time::sleep_until(started + timeout))
                        });
                        if timer.as_mut().poll(cx).is_pending() {
                            pending = true;
                            continue;
                        }
                        HealthDetail::unhealthy(format!("check timed out after {timeout:?}"))
                    }
                },
            };
            // Drop the check's future (and timer) as soon as it is decided.
            check.work = CheckWork::Done;
            check.timer = None;
            check.result = Some(detail);
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
}

impl<S> Drop for Inner<S> {
    fn drop(&mut self) {
        // A loop whose task is gone without reporting (its runtime shut down mid-poll):
        // make sure it is told.
        let ctl = self
            .ctl
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(run) = ctl.run.take() {
            run.shutdown.request();
            run.handle.abort();
        }
    }
}

fn run_hook_name<S: Lifecycle>() -> &'static str {
    S::__HOOKS.run.map_or("run", |spec| spec.name)
}

/// A type-erased managed service (a component, or an entry of a supervisor): a handle,
/// as a [`Managed`] is.
#[doc(hidden)]
pub struct ErasedService(pub(crate) Arc<dyn DynService>);

impl Clone for ErasedService {
    fn clone(&self) -> Self {
        self.0.add_handle();
        ErasedService(self.0.clone())
    }
}

impl Drop for ErasedService {
    fn drop(&mut self) {
        self.0.release_handle();
    }
}

/// What a start or stop of a type-erased service gives when it begins: its outcome when
/// it needed no waiting, or the rest of it.
pub(crate) type Begun<'a> = Result<Result<(), ServiceError>, Rest<'a>>;

/// The rest of a type-erased start or stop: the wait for a run stop it began, inline
/// (the stop of most services with a run loop), or any other wait, boxed.
pub(crate) enum Rest<'a> {
    RunStop {
        service: &'a dyn DynService,
        progress: RunStopProgress,
    },
    Boxed(BoxFuture<'a, Result<(), ServiceError>>),
}

impl Future for Rest<'_> {
    type Output = Result<(), ServiceError>;

    fn poll(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<Result<(), ServiceError>> {
        // Every field is `Unpin`.
        match self.get_mut() {
            Rest::RunStop { service, progress } => service.poll_run_stop(progress, cx),
            Rest::Boxed(rest) => rest.as_mut().poll(cx),
        }
    }
}

impl Drop for Rest<'_> {
    fn drop(&mut self) {
        if let Rest::RunStop { service, progress } = self {
            service.run_stop_wait_dropped(progress);
        }
    }
}

/// The future of a type-erased start or stop: one that needs no waiting (most do)
/// completes at its first poll without allocating; only one that must await something
/// other than its own run stop is boxed.
pub(crate) struct ErasedOp<'a> {
    service: &'a dyn DynService,
    /// A start (`true`) or a stop.
    start: bool,
    rest: Option<Rest<'a>>,
}

impl Future for ErasedOp<'_> {
    type Output = Result<(), ServiceError>;

    fn poll(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<Result<(), ServiceError>> {
        let this = self.get_mut();
        let rest = match &mut this.rest {
            Some(rest) => rest,
            // Begun at the first poll, as a lazy future would.
            None => {
                let begun = if this.start {
                    this.service.start_now()
                } else {
                    this.service.stop_now()
                };
                match begun {
                    Ok(outcome) => return Poll::Ready(outcome),
                    Err(rest) => this.rest.insert(rest),
                }
            }
        };
        Pin::new(rest).poll(cx)
    }
}

pub(crate) trait DynService: Send + Sync {
    /// The name, shared (made on first use).
    fn name(&self) -> &Arc<str>;
    /// The name, without making it shared.
    fn name_str(&self) -> &str;
    fn status(&self) -> ServiceStatus;
    /// What [`Managed::start`] does up to its first wait.
    fn start_now(&self) -> Begun<'_>;
    /// What [`Managed::stop`] does up to its first wait.
    fn stop_now(&self) -> Begun<'_>;
    /// Polls the wait for a run stop that [`stop_now`](Self::stop_now) began.
    fn poll_run_stop(
        &self,
        progress: &mut RunStopProgress,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<Result<(), ServiceError>>;
    /// The wait for a run stop that [`stop_now`](Self::stop_now) began is dropped.
    fn run_stop_wait_dropped(&self, progress: &RunStopProgress);
    fn health(&self) -> BoxFuture<'_, HealthReport>;
    fn add_subscriber(&self, subscriber: Subscriber);
    /// Joins a supervisor as its entry `index`: counted in `tally` from its current
    /// status, and its changes posted there while the supervisor runs.
    fn join(&self, index: usize, tally: &Arc<StatusTally>);
    /// One more handle ([`ErasedService::clone`]).
    fn add_handle(&self);
    /// One handle less (see [`Inner::release_handle`]).
    fn release_handle(&self);
}

impl dyn DynService + '_ {
    /// Starts the service as [`Managed::start`] does.
    pub(crate) fn start(&self) -> ErasedOp<'_> {
        ErasedOp {
            service: self,
            start: true,
            rest: None,
        }
    }

    /// Stops the service as [`Managed::stop`] does.
    pub(crate) fn stop(&self) -> ErasedOp<'_> {
        ErasedOp {
            service: self,
            start: false,
            rest: None,
        }
    }
}

impl<S: Service> Inner<S> {
    /// A handle on this service (for the type-erased calls, which only have `&self`).
    fn managed(&self) -> Managed<S> {
        Managed::counted(
            self.this
                .upgrade()
                .expect("an `Inner` is only reached through a live `Arc`"),
        )
    }
}

impl<S: Service> DynService for Inner<S> {
    fn name(&self) -> &Arc<str> {
        Inner::name(self)
    }

    fn name_str(&self) -> &str {
        &self.name
    }

    fn status(&self) -> ServiceStatus {
        Inner::status(self)
    }

    fn start_now(&self) -> Begun<'_> {
        let managed = self.managed();
        managed.start_now().map_err(|wait| {
            Rest::Boxed(Box::pin(
                async move { managed.awaiting::<START>(wait).await },
            ))
        })
    }

    fn stop_now(&self) -> Begun<'_> {
        let managed = self.managed();
        managed.stop_now().map_err(|wait| match wait {
            Wait::RunStop(progress) => Rest::RunStop {
                service: self,
                progress,
            },
            wait => Rest::Boxed(Box::pin(
                async move { managed.awaiting::<STOP>(wait).await },
            )),
        })
    }

    fn poll_run_stop(
        &self,
        progress: &mut RunStopProgress,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<Result<(), ServiceError>> {
        Inner::poll_run_stop(self, progress, None, cx)
    }

    fn run_stop_wait_dropped(&self, progress: &RunStopProgress) {
        Inner::run_stop_wait_dropped(self, progress);
    }

    fn health(&self) -> BoxFuture<'_, HealthReport> {
        Box::pin(Inner::health(self))
    }

    fn add_subscriber(&self, subscriber: Subscriber) {
        self.lock().subscribers.push(subscriber);
    }

    fn add_handle(&self) {
        self.handles.fetch_add(1, Ordering::Relaxed);
    }

    fn release_handle(&self) {
        Inner::release_handle(self);
    }

    fn join(&self, index: usize, tally: &Arc<StatusTally>) {
        let mut ctl = self.lock();
        // Under the lock that orders transitions: counted once, from its current status.
        if Inner::status(self) != ServiceStatus::Running {
            tally.not_running.fetch_add(1, Ordering::AcqRel);
        }
        // Most services have this one subscriber: room for it alone.
        ctl.subscribers.push(Subscriber::Supervisor {
            index,
            tally: tally.clone(),
        });
    }
}

impl<S: Service> From<S> for Managed<S> {
    fn from(service: S) -> Self {
        Managed::new(service)
    }
}

/// A service, or a handle to one, that a [`Supervisor`](crate::Supervisor) can manage:
/// a `#[derive(Service)]` value (wrapped with [`Managed::new`]) or a [`Managed`] handle
/// (so the program keeps a clone to call the service directly).
#[diagnostic::on_unimplemented(
    message = "`{Self}` is neither a service nor a `Managed` service",
    label = "expected a `#[derive(Service)]` value or a `Managed<S>`"
)]
pub trait IntoManaged {
    /// The service type.
    type Service: Service;

    /// Wraps the value, or returns the handle itself.
    fn into_managed(self) -> Managed<Self::Service>;
}

impl<S: Service> IntoManaged for S {
    type Service = S;

    fn into_managed(self) -> Managed<S> {
        Managed::new(self)
    }
}

impl<S: Service> IntoManaged for Managed<S> {
    type Service = S;

    fn into_managed(self) -> Managed<S> {
        self
    }
}

/// A field type that can be a `#[service(component)]`: a child service started after
/// the parent's init hooks and stopped before its cleanup hooks.
#[diagnostic::on_unimplemented(
    message = "`#[service(component)]` fields must be `Managed<S>`, not `{Self}`",
    label = "not a managed service",
    note = "wrap the child service: `Managed::new(child)`"
)]
pub trait Component {
    #[doc(hidden)]
    fn __erased(&self) -> ErasedService;
}

impl<S: Service> Component for Managed<S> {
    fn __erased(&self) -> ErasedService {
        self.erased()
    }
}
