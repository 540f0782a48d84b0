//! The checks that need more than one attribute or the method signature: each finding is
//! recorded in the [`Ctxt`] at the user's token, and the checks go on.

use quote::quote;
use syn::{FnArg, GenericParam, ReturnType, Type};

use crate::ast::{Hook, Lifecycle, RunArg, RunArgRole, Service};
use crate::attr::HookKind;
use crate::ctxt::Ctxt;

pub(crate) fn check_service(cx: &Ctxt, service: &Service) {
    if let Some(name) = &service.attrs.name {
        if name.value().is_empty() {
            cx.error_spanned_by(name, "the service name cannot be empty");
        }
    }
    if let (Some(backoff), Some(max_backoff)) = (&service.attrs.backoff, &service.attrs.max_backoff)
    {
        if backoff.millis > max_backoff.millis {
            cx.error_spanned_by(
                &max_backoff.literal,
                format!(
                    "`max_backoff` ({:?}) is shorter than `backoff` ({:?}): the delays between \
                     restarts start at `backoff` and grow up to `max_backoff`",
                    max_backoff.literal.value(),
                    backoff.literal.value(),
                ),
            );
        }
    }
    for field in &service.fields {
        if let (None, Some(optional)) = (field.attrs.component, field.attrs.optional) {
            cx.error_at(
                optional,
                "`optional` qualifies a component: write `#[service(component, optional)]`",
            );
        }
    }
}

pub(crate) fn check_lifecycle(cx: &Ctxt, lifecycle: &Lifecycle) {
    if let Some((_, trait_path, _)) = &lifecycle.block.trait_ {
        cx.error_spanned_by(
            trait_path,
            "`#[lifecycle]` goes on an inherent impl block (`impl MyService { ... }`), not on a trait impl",
        );
    }
    for attr in &lifecycle.misplaced {
        let kind = HookKind::of(attr).expect("a hook attribute");
        let function = if kind == HookKind::HealthRule {
            "fn"
        } else {
            "async fn"
        };
        cx.error_spanned_by(
            attr,
            format!(
                "`{}` goes on a method: `{} {function} ...`",
                kind.attr(),
                kind.attr()
            ),
        );
    }
    for hook in &lifecycle.hooks {
        for attr in &hook.extra_attrs {
            cx.error_spanned_by(attr, "a method can carry only one hook attribute");
        }
        check_signature(cx, hook);
    }
    for extra_rule in lifecycle.hooks(HookKind::HealthRule).skip(1) {
        cx.error_spanned_by(
            extra_rule.attr.attr,
            "a service has at most one `#[health_rule]`: one rule decides its health",
        );
    }
    for extra_run in lifecycle.hooks(HookKind::Run).skip(1) {
        cx.error_spanned_by(
            extra_run.attr.attr,
            "a service has at most one `#[run]` hook",
        );
    }
    check_run_state(cx, lifecycle);
    let mut check_names: Vec<String> = Vec::new();
    for check in lifecycle.hooks(HookKind::Health) {
        let (name, span) = check.check_name();
        if name.is_empty() {
            cx.error_at(span, "the health check name cannot be empty");
        } else if check_names.contains(&name) {
            cx.error_at(span, format!("duplicate health check name `{name}`"));
        } else {
            check_names.push(name);
        }
    }
}

/// The shape every hook kind requires; the return *type* is left to the type checker,
/// whose `#[diagnostic::on_unimplemented]` message is the better one.
fn check_signature(cx: &Ctxt, hook: &Hook) {
    let kind = hook.kind();
    if kind == HookKind::HealthRule {
        return check_health_rule(cx, hook);
    }
    let attr = kind.attr();
    let sig = &hook.method.sig;

    if sig.asyncness.is_none() {
        cx.error_at(
            sig.fn_token.span,
            format!("`{attr}` hooks must be `async fn`"),
        );
    }
    if let Some(unsafety) = &sig.unsafety {
        cx.error_at(unsafety.span, format!("`{attr}` hooks cannot be `unsafe`"));
    }
    if let Some(param) = sig
        .generics
        .params
        .iter()
        .find(|param| !matches!(param, GenericParam::Lifetime(_)))
    {
        cx.error_spanned_by(param, format!("`{attr}` hooks cannot be generic"));
    }

    let takes_mut = matches!(kind, HookKind::Init | HookKind::Cleanup);
    let receiver = if takes_mut { "&mut self" } else { "&self" };
    let receiver_message = if kind == HookKind::Run {
        "`#[run]` hooks take `&self`: the health checks read the service while it runs. \
         To own what the loop consumes (a receiver, a stream), return it from an init hook \
         marked `#[init(state)]` and take it as an argument: \
         `async fn run(&self, rx: Receiver<T>, shutdown: Shutdown)`"
            .to_owned()
    } else {
        format!("`{attr}` hooks take `{receiver}`")
    };
    let mut inputs = sig.inputs.iter();
    match inputs.next() {
        Some(FnArg::Receiver(self_arg)) => {
            let right = matches!(
                &*self_arg.ty,
                Type::Reference(reference) if reference.mutability.is_some() == takes_mut
            );
            if !right {
                cx.error_spanned_by(self_arg, receiver_message);
            }
        }
        Some(FnArg::Typed(_)) | None => {
            // The arguments are not checked further: their first problem is the missing receiver.
            cx.error_at(sig.paren_token.span.join(), receiver_message);
            return check_return(cx, hook);
        }
    }
    // A run hook's arguments are checked with the init hooks (`check_run_state`).
    let extra: Vec<&FnArg> = inputs.collect();
    if kind != HookKind::Run && !extra.is_empty() {
        cx.error_spanned_by(
            quote!(#(#extra),*),
            format!("`{attr}` hooks take no arguments besides `{receiver}`"),
        );
    }
    check_return(cx, hook);
}

/// The arguments of the `#[run]` hook (each of `Shutdown`, `Ready` and an owned state at
/// most once), and the `#[init(state)]` hook that makes the state.
fn check_run_state(cx: &Ctxt, lifecycle: &Lifecycle) {
    let state_inits: Vec<&Hook> = lifecycle
        .hooks(HookKind::Init)
        .filter(|hook| hook.attr.state.is_some())
        .collect();
    for extra in state_inits.iter().skip(1) {
        cx.error_at(
            extra.attr.state.expect("filtered on `state`"),
            "only one init hook can be `#[init(state)]`: its `Ok` value is the one the `#[run]` \
             hook takes; return several values in a tuple or a struct",
        );
    }
    let run = lifecycle.hooks(HookKind::Run).next();
    let state_arg = run.and_then(|run| check_run_args(cx, &run.run_args()));
    match (state_inits.first(), state_arg) {
        (Some(init), None) => {
            let message = if run.is_some() {
                "`#[init(state)]` hands its `Ok` value to the `#[run]` hook, which takes none: \
                 add an argument for it, like `async fn run(&self, state: T, shutdown: Shutdown)`"
            } else {
                "`#[init(state)]` hands its `Ok` value to the `#[run]` hook, and this service has \
                 none: add one that takes it, like `async fn run(&self, state: T, shutdown: Shutdown)`"
            };
            cx.error_at(init.attr.state.expect("filtered on `state`"), message);
        }
        (None, Some(arg)) => {
            let pat = &arg.pat;
            cx.error_spanned_by(
                arg,
                format!(
                    "the argument `{}` is neither a `Shutdown` nor a `Ready`: to hand the run loop \
                     a value it owns, return it as `Ok(value)` from an init hook marked \
                     `#[init(state)]`",
                    quote!(#pat)
                ),
            );
        }
        _ => {}
    }
}

/// Each role at most once; returns the state argument, if any.
fn check_run_args<'a>(cx: &Ctxt, args: &[RunArg<'a>]) -> Option<&'a syn::PatType> {
    let mut state = None;
    for (i, arg) in args.iter().enumerate() {
        if args[..i].iter().all(|earlier| earlier.role != arg.role) {
            if arg.role == RunArgRole::State {
                state = Some(arg.arg);
            }
            continue;
        }
        let message = match arg.role {
            RunArgRole::Shutdown => "a `#[run]` hook takes at most one `Shutdown`",
            RunArgRole::Ready => "a `#[run]` hook takes at most one `Ready`",
            RunArgRole::State => {
                "a `#[run]` hook takes at most one value from `#[init(state)]` (besides its \
                 `Shutdown` and `Ready`): hand it several in a tuple or a struct"
            }
        };
        cx.error_spanned_by(arg.arg, message);
    }
    state
}

fn check_return(cx: &Ctxt, hook: &Hook) {
    let sig = &hook.method.sig;
    if let ReturnType::Default = sig.output {
        let message = match hook.kind() {
            HookKind::Health => "`#[health]` hooks must return `HealthStatus`, `HealthDetail` or \
                                 `HealthChecks`, or a `Result` of one of them or of `()`"
                .to_owned(),
            kind => format!("`{}` hooks must return `Result<(), E>`", kind.attr()),
        };
        cx.error_at(sig.paren_token.span.close(), message);
    }
}

/// `fn rule(&self, report: &HealthReport) -> HealthStatus`: a plain function of the
/// checks' report (the types are left to the type checker, at the user's tokens).
fn check_health_rule(cx: &Ctxt, hook: &Hook) {
    const SHAPE: &str = "`fn rule(&self, report: &HealthReport) -> HealthStatus`";
    let sig = &hook.method.sig;
    if let Some(asyncness) = &sig.asyncness {
        cx.error_at(
            asyncness.span,
            format!(
                "a `#[health_rule]` is a plain `fn`: it runs once the checks are done and \
                 awaits nothing; write {SHAPE}"
            ),
        );
    }
    if let Some(unsafety) = &sig.unsafety {
        cx.error_at(unsafety.span, "a `#[health_rule]` cannot be `unsafe`");
    }
    if let Some(param) = sig
        .generics
        .params
        .iter()
        .find(|param| !matches!(param, GenericParam::Lifetime(_)))
    {
        cx.error_spanned_by(param, "a `#[health_rule]` cannot be generic");
    }
    let shared_self = matches!(
        sig.inputs.first(),
        Some(FnArg::Receiver(receiver))
            if matches!(&*receiver.ty, Type::Reference(reference) if reference.mutability.is_none())
    );
    if !shared_self || sig.inputs.len() != 2 {
        cx.error_at(
            sig.paren_token.span.join(),
            format!("a `#[health_rule]` takes `&self` and the report: {SHAPE}"),
        );
    }
    if let ReturnType::Default = sig.output {
        cx.error_at(
            sig.paren_token.span.close(),
            format!("a `#[health_rule]` returns the service's `HealthStatus`: {SHAPE}"),
        );
    }
}
