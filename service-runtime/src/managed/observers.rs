//! Where status changes go: public [`StatusChanges`](super::StatusChanges) streams, and
//! the supervisors a service was added to (a tally of statuses kept by the transitions
//! themselves, and a mailbox of compact changes).

use super::*;

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
pub(super) struct Subscribers {
    pub(super) first: Option<Subscriber>,
    pub(super) rest: Vec<Subscriber>,
}

impl Subscribers {
    pub(super) fn push(&mut self, subscriber: Subscriber) {
        match self.first {
            None => self.first = Some(subscriber),
            Some(_) => self.rest.push(subscriber),
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.first.is_none()
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = &Subscriber> {
        self.first.iter().chain(&self.rest)
    }

    /// Keeps the subscribers changes still reach, in order.
    pub(super) fn retain_open(&mut self) {
        self.rest.retain(Subscriber::is_open);
        if !self.first.as_ref().is_some_and(Subscriber::is_open) {
            self.first = (!self.rest.is_empty()).then(|| self.rest.remove(0));
        }
    }
}

impl Subscriber {
    /// Whether changes still reach someone.
    pub(super) fn is_open(&self) -> bool {
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
    pub(super) not_running: std::sync::atomic::AtomicUsize,
    pub(super) changes: std::sync::atomic::AtomicU64,
    /// [`IDLE`](Self::IDLE), [`OBSERVED`](Self::OBSERVED) or [`DONE`](Self::DONE).
    pub(super) state: AtomicU8,
    /// The changes posted while the supervisor observes, in order, until it takes them:
    /// one lock per change and one per batch taken, cheaper than a channel's per-item
    /// bookkeeping (a supervisor takes them in batches anyway).
    pub(super) mailbox: Mutex<Vec<EntryChange>>,
    /// Notified when a change lands in an empty mailbox.
    pub(super) arrived: tokio::sync::Notify,
}

impl StatusTally {
    /// Before the run: changes are counted, not posted (nobody would read them).
    pub(super) const IDLE: u8 = 0;
    /// During the run: changes are posted.
    pub(super) const OBSERVED: u8 = 1;
    /// After the run: the services forget the supervisor at their next change.
    pub(super) const DONE: u8 = 2;

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

    pub(super) fn post(&self, change: EntryChange) {
        let mut mailbox = self.lock_mailbox();
        let first = mailbox.is_empty();
        mailbox.push(change);
        drop(mailbox);
        if first {
            self.arrived.notify_one();
        }
    }

    pub(super) fn lock_mailbox(&self) -> MutexGuard<'_, Vec<EntryChange>> {
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
