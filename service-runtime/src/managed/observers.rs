//! Where status changes go: the public [`StatusChanges`](super::StatusChanges) streams,
//! the supervisors a service was added to (a tally of statuses kept by the transitions
//! themselves, and a mailbox of compact changes), and the parent of a component.

use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;

use super::StatusChange;
use crate::error::ServiceError;
use crate::status::ServiceStatus;

/// Where a transition sends its change.
pub(crate) enum Subscriber {
    /// A [`Managed::subscribe`](super::Managed::subscribe) stream (also a supervisor
    /// handle's): every field.
    Public(mpsc::UnboundedSender<StatusChange>),
    /// A supervisor the service was added to, which knows it by its entry index. Every
    /// transition keeps the supervisor's tally; while the supervisor runs, it also posts
    /// a compact change tagged with the index, so the supervisor needs no name lookup.
    /// Forgotten once the supervisor's run is over.
    Supervisor {
        index: usize,
        tally: Arc<StatusTally>,
    },
    /// The parent of a component, while the parent runs: told of every change, tagged
    /// with the component's index (see [`components`](super::components)). Forgotten
    /// once the parent's watch is over.
    Parent {
        index: usize,
        sender: mpsc::UnboundedSender<ComponentChange>,
    },
}

/// A status change of a component, as its parent's watch receives it.
#[derive(Debug)]
pub(crate) struct ComponentChange {
    /// The component's index among the parent's components.
    pub(crate) index: usize,
    pub(crate) from: ServiceStatus,
    pub(crate) to: ServiceStatus,
    pub(crate) error: Option<ServiceError>,
}

/// A service's subscribers, in the order they subscribed.
#[derive(Default)]
pub(super) struct Subscribers(Vec<Subscriber>);

impl Subscribers {
    pub(super) fn push(&mut self, subscriber: Subscriber) {
        self.0.push(subscriber);
    }

    /// Tells every subscriber of the change `from → to` (`from` entered at `entered`, `to`
    /// at `now`), and forgets those no longer listening. `name` is called once, for the
    /// first public subscriber: a supervisor needs neither the name nor the wall clock.
    pub(super) fn deliver(
        &mut self,
        name: impl FnOnce() -> Arc<str>,
        from: ServiceStatus,
        to: ServiceStatus,
        entered: Instant,
        now: Instant,
        error: Option<&ServiceError>,
    ) {
        // Most services have no subscriber; `retain` would still walk its bookkeeping.
        if self.0.is_empty() {
            return;
        }
        let mut name = Some(name);
        let mut change: Option<StatusChange> = None;
        self.0.retain(|subscriber| match subscriber {
            Subscriber::Public(sender) => {
                let change = change.get_or_insert_with(|| StatusChange {
                    service: (name.take().expect("made once"))(),
                    from,
                    to,
                    at: SystemTime::now(),
                    duration: now - entered,
                    error: error.cloned(),
                });
                sender.send(change.clone()).is_ok()
            }
            Subscriber::Supervisor { index, tally } => {
                tally.count(from, to);
                match tally.state.load(Ordering::Acquire) {
                    StatusTally::IDLE => true,
                    StatusTally::OBSERVED => {
                        tally.post(EntryChange {
                            index: *index,
                            from,
                            to,
                            entered,
                            at: now,
                            error: error.cloned().map(Box::new),
                        });
                        true
                    }
                    _ => false,
                }
            }
            Subscriber::Parent { index, sender } => sender
                .send(ComponentChange {
                    index: *index,
                    from,
                    to,
                    error: error.cloned(),
                })
                .is_ok(),
        });
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
    /// subtracted only by a reader that needs it.
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
    not_running: AtomicUsize,
    changes: AtomicU64,
    /// [`IDLE`](Self::IDLE), [`OBSERVED`](Self::OBSERVED) or [`DONE`](Self::DONE).
    state: AtomicU8,
    /// The changes posted while the supervisor observes, in order, until it takes them:
    /// a supervisor takes them in batches.
    mailbox: Mutex<Vec<EntryChange>>,
    /// Notified when a change lands in an empty mailbox.
    arrived: Notify,
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

    /// A service joins the group with `status`: counted from it, under the service's
    /// lock (so no transition is missed or counted twice).
    pub(super) fn join(&self, status: ServiceStatus) {
        if status != ServiceStatus::Running {
            self.not_running.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Counts a transition of one of the services, before it is posted: whoever reads
    /// the change sees the count include it.
    fn count(&self, from: ServiceStatus, to: ServiceStatus) {
        if from == ServiceStatus::Running {
            self.not_running.fetch_add(1, Ordering::AcqRel);
        } else if to == ServiceStatus::Running {
            self.not_running.fetch_sub(1, Ordering::AcqRel);
        }
        self.changes.fetch_add(1, Ordering::AcqRel);
    }

    /// How many of the services are not `running`.
    pub(crate) fn not_running(&self) -> usize {
        self.not_running.load(Ordering::Acquire)
    }

    /// Counts a change of the supervisor's own view of a service (it completed), so that
    /// whoever caches what it computed from [`changes`](Self::changes) computes again.
    pub(crate) fn touch(&self) {
        self.changes.fetch_add(1, Ordering::AcqRel);
    }

    /// How many status changes the services made since they joined.
    pub(crate) fn changes(&self) -> u64 {
        self.changes.load(Ordering::Acquire)
    }
}
