//! The one place the crate asks which flavour of tokio runtime it runs on.
//!
//! Two behaviours depend on the answer, each documented where it lives:
//!
//! - a run loop's stop deadline ([`deadline`](crate::deadline)) is a tokio timer on a
//!   current-thread runtime, so that a paused clock moves it, and an entry in the
//!   process's deadline list elsewhere, so that arming it wakes no parked worker and
//!   it holds while a loop blocks the worker its stop waits on;
//! - on a multi-thread runtime, `Supervisor::run_until_signal` and `run_until` run the
//!   supervisor in a task of its own, on a worker rather than in `block_on` on the main
//!   thread.
//!
//! No other code branches on the flavour.

use tokio::runtime::{Handle, RuntimeFlavor};

/// Whether the caller runs on a current-thread runtime.
pub(crate) fn current_thread() -> bool {
    is(RuntimeFlavor::CurrentThread)
}

/// Whether the caller runs on a multi-thread runtime.
pub(crate) fn multi_thread() -> bool {
    is(RuntimeFlavor::MultiThread)
}

fn is(flavour: RuntimeFlavor) -> bool {
    Handle::try_current().is_ok_and(|runtime| runtime.runtime_flavor() == flavour)
}
