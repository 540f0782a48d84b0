//! The checks that need more than one attribute or the method signature: each finding is
//! recorded in the [`Ctxt`] at the user's token, and the checks go on.

use quote::quote;
use syn::{FnArg, GenericParam, ReturnType, Type};

use crate::ast::{Hook, Lifecycle, Service};
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
        cx.error_spanned_by(
            attr,
            format!(
                "`{}` goes on a method: `{} async fn ...`",
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
    for extra_run in lifecycle.hooks(HookKind::Run).skip(1) {
        cx.error_spanned_by(
            extra_run.attr.attr,
            "a service has at most one `#[run]` hook",
        );
    }
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
    let receiver_message = format!("`{attr}` hooks take `{receiver}`");
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
    let extra: Vec<&FnArg> = if kind == HookKind::Run {
        inputs.skip(1).collect()
    } else {
        inputs.collect()
    };
    if !extra.is_empty() {
        let message = if kind == HookKind::Run {
            "a `#[run]` hook takes `&self` and optionally a `Shutdown`, nothing else".to_owned()
        } else {
            format!("`{attr}` hooks take no arguments besides `{receiver}`")
        };
        cx.error_spanned_by(quote!(#(#extra),*), message);
    }
    check_return(cx, hook);
}

fn check_return(cx: &Ctxt, hook: &Hook) {
    let sig = &hook.method.sig;
    if let ReturnType::Default = sig.output {
        let message = match hook.kind() {
            HookKind::Health => "`#[health]` hooks must return `HealthStatus`, `HealthDetail`, \
                                 `Result<(), E>` or `Result<HealthStatus, E>`"
                .to_owned(),
            kind => format!("`{}` hooks must return `Result<(), E>`", kind.attr()),
        };
        cx.error_at(sig.paren_token.span.close(), message);
    }
}
