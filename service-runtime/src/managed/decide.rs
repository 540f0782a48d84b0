//! What a `start()` or `stop()` call does, decided from the status, the operation in
//! flight and whether the request has anything to await: a pure function, so that every
//! combination is tested here and the callers only carry the plan out.

use crate::status::ServiceStatus;

/// What a caller asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Request {
    Start,
    Stop,
}

/// The kind of an operation in flight: a start or a stop.
pub(super) type OpKind = Request;

/// What a call does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Plan {
    /// The service is where the request leads already: `Ok` at once.
    Done,
    /// Both transitions at once, under the lock, without an operation: there is nothing
    /// to await (no hook to run, no component, no run loop to join).
    Inline,
    /// A stop of a failed service that owes nothing: `error → stopped` at once.
    ClearError,
    /// Begin an operation of the request's kind, and await its outcome.
    Begin,
    /// The operation in flight is of the request's kind: its outcome is this call's.
    Join,
    /// Let the operation in flight end, then decide again; a stop first cancels a start
    /// (`cancel`), so that `starting` goes to `stopped` without `running`.
    AfterInFlight { cancel: bool },
}

/// Decides a call. `nothing_owed`: the request has nothing to await (for a start: no init
/// hook, no component, no cleanup owed from a failed run; for a stop: no run loop, no
/// component, no cleanup hook owed).
///
/// `starting` and `stopping` never appear without an operation in flight (the operation
/// owns them and leaves the control after its final transition); should they, the call
/// is `Done` rather than spinning.
pub(super) fn decide(
    status: ServiceStatus,
    in_flight: Option<OpKind>,
    request: Request,
    nothing_owed: bool,
) -> Plan {
    use Request::{Start, Stop};
    use ServiceStatus::{Error, Running, Starting, Stopped, Stopping};
    match (in_flight, request, status) {
        (Some(kind), request, _) if kind == request => Plan::Join,
        (Some(Start), Stop, _) => Plan::AfterInFlight { cancel: true },
        (Some(Stop), Start, _) => Plan::AfterInFlight { cancel: false },
        (Some(_), _, _) => unreachable!("the two kinds are matched above"),
        (None, Start, Running) | (None, Stop, Stopped) => Plan::Done,
        (None, Start, Stopped | Error) | (None, Stop, Running) if nothing_owed => Plan::Inline,
        (None, Stop, Error) if nothing_owed => Plan::ClearError,
        (None, Start, Stopped | Error) | (None, Stop, Running | Error) => Plan::Begin,
        (None, _, Starting | Stopping) => Plan::Done,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ServiceStatus::{Error, Running, Starting, Stopped, Stopping};

    /// Every combination of (status, operation in flight, request, owed), with its plan.
    #[test]
    fn every_combination_has_its_plan() {
        let ops = [None, Some(Request::Start), Some(Request::Stop)];
        for status in ServiceStatus::ALL {
            for in_flight in ops {
                for request in [Request::Start, Request::Stop] {
                    for nothing_owed in [false, true] {
                        let plan = decide(status, in_flight, request, nothing_owed);
                        let expected = expected(status, in_flight, request, nothing_owed);
                        assert_eq!(
                            plan, expected,
                            "{status:?}, in flight {in_flight:?}, {request:?}, nothing owed: {nothing_owed}"
                        );
                    }
                }
            }
        }
    }

    /// The contract, written out case by case.
    fn expected(
        status: ServiceStatus,
        in_flight: Option<Request>,
        request: Request,
        nothing_owed: bool,
    ) -> Plan {
        if let Some(kind) = in_flight {
            return match (kind, request) {
                (Request::Start, Request::Start) | (Request::Stop, Request::Stop) => Plan::Join,
                (Request::Start, Request::Stop) => Plan::AfterInFlight { cancel: true },
                (Request::Stop, Request::Start) => Plan::AfterInFlight { cancel: false },
            };
        }
        match request {
            Request::Start => match status {
                Running => Plan::Done,
                Stopped | Error if nothing_owed => Plan::Inline,
                Stopped | Error => Plan::Begin,
                Starting | Stopping => Plan::Done,
            },
            Request::Stop => match status {
                Stopped => Plan::Done,
                Running if nothing_owed => Plan::Inline,
                Running => Plan::Begin,
                Error if nothing_owed => Plan::ClearError,
                Error => Plan::Begin,
                Starting | Stopping => Plan::Done,
            },
        }
    }

    #[test]
    fn a_start_and_a_stop_never_run_at_once() {
        // Whatever is in flight, a call of the other kind waits for it to end.
        for status in ServiceStatus::ALL {
            for owed in [false, true] {
                assert!(matches!(
                    decide(status, Some(Request::Start), Request::Stop, owed),
                    Plan::AfterInFlight { cancel: true }
                ));
                assert!(matches!(
                    decide(status, Some(Request::Stop), Request::Start, owed),
                    Plan::AfterInFlight { cancel: false }
                ));
            }
        }
    }
}
