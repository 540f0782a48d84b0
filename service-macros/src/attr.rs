//! The attributes the macros read — `#[service(...)]` on a struct and on its fields,
//! `#[lifecycle(...)]`, and the hook attributes `#[init]`, `#[cleanup]`, `#[health]`,
//! `#[run]`, `#[reload]` — parsed into typed values that keep the tokens they came from
//! for spans.
//!
//! Unknown and duplicate keys are reported here, each at the key, and parsing goes on
//! with the next key so that one compilation shows every mistake; each key's value is
//! read by [`keys`](crate::keys).

use proc_macro2::{Span, TokenStream};
use quote::quote;
use syn::ext::IdentExt;
use syn::parse::{ParseStream, Parser};
use syn::{Attribute, Ident, LitStr, Meta, Path, Token};

use crate::ctxt::Ctxt;
use crate::keys::{
    Keys, crate_path, duration, flag, key_name, key_path, max_restarts, restart, skip_value,
    spanned_duration,
};

/// `#[service(...)]` on the struct, possibly split over several attributes.
#[derive(Default)]
pub(crate) struct Container {
    pub(crate) name: Option<LitStr>,
    pub(crate) version: Option<LitStr>,
    /// In milliseconds, like the other timeouts.
    pub(crate) start_timeout: Option<u64>,
    pub(crate) stop_timeout: Option<u64>,
    pub(crate) health_timeout: Option<u64>,
    pub(crate) restart: Option<RestartKind>,
    pub(crate) max_restarts: Option<u32>,
    pub(crate) restart_within: Option<u64>,
    /// Kept with its literal: `valid` compares it with `max_backoff` and reports there.
    pub(crate) backoff: Option<SpannedMillis>,
    pub(crate) max_backoff: Option<SpannedMillis>,
    pub(crate) krate: Option<Path>,
}

impl Container {
    /// Whether any restart key was given: without one, `config()` keeps the runtime's policy.
    pub(crate) fn has_restart_keys(&self) -> bool {
        self.restart.is_some()
            || self.max_restarts.is_some()
            || self.restart_within.is_some()
            || self.backoff.is_some()
            || self.max_backoff.is_some()
    }
}

const SERVICE_KEYS: &str = "`name`, `version`, `start_timeout`, `stop_timeout`, `health_timeout`, \
                            `restart`, `max_restarts`, `restart_within`, `backoff`, `max_backoff`, `crate`";

/// `restart = "…"`: the runtime's `Restart` variants, checked at compile time.
#[derive(Clone, Copy)]
pub(crate) enum RestartKind {
    Permanent,
    Transient,
    Temporary,
}

impl RestartKind {
    /// The variant of the runtime's `Restart`.
    pub(crate) fn variant(self) -> &'static str {
        match self {
            RestartKind::Permanent => "Permanent",
            RestartKind::Transient => "Transient",
            RestartKind::Temporary => "Temporary",
        }
    }
}

/// A duration in milliseconds and the literal it was written as.
pub(crate) struct SpannedMillis {
    pub(crate) millis: u64,
    pub(crate) literal: LitStr,
}

impl Container {
    pub(crate) fn from_attrs(cx: &Ctxt, attrs: &[Attribute]) -> Self {
        let mut container = Container::default();
        let mut keys = Keys::new(cx, "service attribute");
        for attr in attrs.iter().filter(|attr| attr.path().is_ident("service")) {
            let parsed = attr.parse_nested_meta(|meta| {
                let key = key_name(&meta.path);
                match key.as_str() {
                    "name" => keys.set(&meta, &mut container.name, meta.value()?.parse()?),
                    "version" => keys.set(&meta, &mut container.version, meta.value()?.parse()?),
                    "start_timeout" => {
                        keys.set_opt(&meta, &mut container.start_timeout, duration(cx, &meta)?)
                    }
                    "stop_timeout" => {
                        keys.set_opt(&meta, &mut container.stop_timeout, duration(cx, &meta)?)
                    }
                    "health_timeout" => {
                        keys.set_opt(&meta, &mut container.health_timeout, duration(cx, &meta)?)
                    }
                    "restart" => keys.set_opt(&meta, &mut container.restart, restart(cx, &meta)?),
                    "max_restarts" => {
                        keys.set_opt(&meta, &mut container.max_restarts, max_restarts(cx, &meta)?)
                    }
                    "restart_within" => {
                        keys.set_opt(&meta, &mut container.restart_within, duration(cx, &meta)?)
                    }
                    "backoff" => {
                        keys.set_opt(&meta, &mut container.backoff, spanned_duration(cx, &meta)?)
                    }
                    "max_backoff" => keys.set_opt(
                        &meta,
                        &mut container.max_backoff,
                        spanned_duration(cx, &meta)?,
                    ),
                    "crate" => keys.set(&meta, &mut container.krate, crate_path(meta.value()?)?),
                    _ => {
                        cx.error_spanned_by(
                            &meta.path,
                            format!(
                                "unknown service attribute `{key}`; expected one of: {SERVICE_KEYS}"
                            ),
                        );
                        skip_value(meta.input)?;
                    }
                }
                Ok(())
            });
            if let Err(error) = parsed {
                cx.syn_error(error);
            }
        }
        container
    }
}

/// `#[service(...)]` on a field.
#[derive(Default)]
pub(crate) struct FieldAttrs {
    /// The span of `component`, if present.
    pub(crate) component: Option<Span>,
    /// The span of `optional`, if present.
    pub(crate) optional: Option<Span>,
}

impl FieldAttrs {
    pub(crate) fn from_attrs(cx: &Ctxt, attrs: &[Attribute]) -> Self {
        let mut field = FieldAttrs::default();
        let mut keys = Keys::new(cx, "field attribute");
        for attr in attrs.iter().filter(|attr| attr.path().is_ident("service")) {
            let parsed = attr.parse_nested_meta(|meta| {
                let key = key_name(&meta.path);
                match key.as_str() {
                    "component" => keys.set(&meta, &mut field.component, flag(cx, &meta, &key)?),
                    "optional" => keys.set(&meta, &mut field.optional, flag(cx, &meta, &key)?),
                    _ => {
                        cx.error_spanned_by(
                            &meta.path,
                            format!(
                                "unknown field attribute `{key}`; expected one of: `component`, `optional`"
                            ),
                        );
                        skip_value(meta.input)?;
                    }
                }
                Ok(())
            });
            if let Err(error) = parsed {
                cx.syn_error(error);
            }
        }
        field
    }
}

/// The arguments of `#[lifecycle(...)]`.
#[derive(Default)]
pub(crate) struct LifecycleArgs {
    pub(crate) krate: Option<Path>,
    /// `?Send`: the hooks' futures need not be `Send`.
    pub(crate) not_send: bool,
}

impl LifecycleArgs {
    /// Parsed by hand rather than with `syn::meta`, which has no place for `?Send`.
    pub(crate) fn parse(cx: &Ctxt, args: TokenStream) -> Self {
        let mut lifecycle = LifecycleArgs::default();
        let mut keys = Keys::new(cx, "lifecycle argument");
        let parser = |input: ParseStream| -> syn::Result<()> {
            while !input.is_empty() {
                if input.peek(Token![?]) {
                    let question: Token![?] = input.parse()?;
                    let bound = input.call(Ident::parse_any)?;
                    let tokens = quote!(#question #bound);
                    if bound == "Send" {
                        if keys.first_key(format!("?{bound}"), &tokens) {
                            lifecycle.not_send = true;
                        }
                    } else {
                        cx.error_spanned_by(
                            tokens,
                            format!(
                                "`?{bound}` is not supported: `?Send` is the only bound `#[lifecycle]` \
                                 relaxes, for hooks whose futures are not `Send`; the service type \
                                 itself must stay `Send + Sync`"
                            ),
                        );
                    }
                } else {
                    let path = input.call(key_path)?;
                    let key = key_name(&path);
                    if key == "crate" {
                        input.parse::<Token![=]>()?;
                        let krate = crate_path(input)?;
                        if keys.first_key(key, &path) {
                            lifecycle.krate = Some(krate);
                        }
                    } else {
                        cx.error_spanned_by(
                            &path,
                            format!(
                                "unknown lifecycle argument `{key}`; expected `crate` or `?Send`"
                            ),
                        );
                        skip_value(input)?;
                    }
                }
                if !input.is_empty() {
                    input.parse::<Token![,]>()?;
                }
            }
            Ok(())
        };
        if let Err(error) = parser.parse2(args) {
            cx.syn_error(error);
        }
        lifecycle
    }
}

/// The hook attributes, recognised by their bare name inside a `#[lifecycle]` block.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum HookKind {
    Init,
    Cleanup,
    Health,
    Run,
    Reload,
    /// A plain `fn` that decides the service's health from its checks' report.
    HealthRule,
}

impl HookKind {
    /// The kind of a hook attribute, `None` for any other attribute.
    pub(crate) fn of(attr: &Attribute) -> Option<Self> {
        let ident = attr.path().get_ident()?;
        if ident == "init" {
            Some(HookKind::Init)
        } else if ident == "cleanup" {
            Some(HookKind::Cleanup)
        } else if ident == "health" {
            Some(HookKind::Health)
        } else if ident == "run" {
            Some(HookKind::Run)
        } else if ident == "reload" {
            Some(HookKind::Reload)
        } else if ident == "health_rule" {
            Some(HookKind::HealthRule)
        } else {
            None
        }
    }

    /// The attribute as a user writes it, for messages: ``#[init]``.
    pub(crate) fn attr(self) -> &'static str {
        match self {
            HookKind::Init => "#[init]",
            HookKind::Cleanup => "#[cleanup]",
            HookKind::Health => "#[health]",
            HookKind::Run => "#[run]",
            HookKind::Reload => "#[reload]",
            HookKind::HealthRule => "#[health_rule]",
        }
    }

    /// The hook's kind as the runtime names it in errors.
    pub(crate) fn name(self) -> &'static str {
        match self {
            HookKind::Init => "init",
            HookKind::Cleanup => "cleanup",
            HookKind::Health => "health",
            HookKind::Run => "run",
            HookKind::Reload => "reload",
            HookKind::HealthRule => "health rule",
        }
    }
}

/// One hook attribute and its arguments.
pub(crate) struct HookAttr<'a> {
    pub(crate) kind: HookKind,
    pub(crate) attr: &'a Attribute,
    /// `timeout = "…"` (init, cleanup, health, reload), in milliseconds.
    pub(crate) timeout: Option<u64>,
    /// `name = "…"` (health).
    pub(crate) name: Option<LitStr>,
    /// `optional` (health); `critical` is the default.
    pub(crate) optional: bool,
    /// `state` (init): the hook's `Ok` value is handed to the `#[run]` hook.
    pub(crate) state: Option<Span>,
}

impl<'a> HookAttr<'a> {
    pub(crate) fn parse(cx: &Ctxt, kind: HookKind, attr: &'a Attribute) -> Self {
        let mut hook = HookAttr {
            kind,
            attr,
            timeout: None,
            name: None,
            optional: false,
            state: None,
        };
        match &attr.meta {
            Meta::Path(_) => {}
            Meta::List(list) => {
                let what = match kind {
                    HookKind::Init => "`#[init]` argument",
                    HookKind::Cleanup => "`#[cleanup]` argument",
                    HookKind::Health => "`#[health]` argument",
                    HookKind::Run => "`#[run]` argument",
                    HookKind::Reload => "`#[reload]` argument",
                    HookKind::HealthRule => "`#[health_rule]` argument",
                };
                let mut keys = Keys::new(cx, what);
                // `Some(optional)` once `critical` or `optional` was given.
                let mut criticality: Option<bool> = None;
                let parsed = list.parse_nested_meta(|meta| {
                    let key = key_name(&meta.path);
                    match (kind, key.as_str()) {
                        (HookKind::Run, _) => {
                            cx.error_spanned_by(&meta.path, "`#[run]` takes no arguments");
                            skip_value(meta.input)?;
                        }
                        (HookKind::HealthRule, _) => {
                            cx.error_spanned_by(
                                &meta.path,
                                "`#[health_rule]` takes no arguments: it runs once the checks \
                                 are done, within their time",
                            );
                            skip_value(meta.input)?;
                        }
                        (_, "timeout") => {
                            keys.set_opt(&meta, &mut hook.timeout, duration(cx, &meta)?);
                        }
                        (HookKind::Health, "name") => {
                            keys.set(&meta, &mut hook.name, meta.value()?.parse()?);
                        }
                        (HookKind::Health, "critical" | "optional") => {
                            let first = keys.first(&meta);
                            flag(cx, &meta, &key)?;
                            let optional = key == "optional";
                            match criticality {
                                Some(previous) if previous != optional => cx.error_spanned_by(
                                    &meta.path,
                                    "a health check is either `critical` or `optional`, not both",
                                ),
                                _ if first => {
                                    hook.optional = optional;
                                    criticality = Some(optional);
                                }
                                _ => {}
                            }
                        }
                        (HookKind::Health, _) => {
                            cx.error_spanned_by(
                                &meta.path,
                                format!(
                                    "unknown `#[health]` argument `{key}`; expected one of: \
                                     `name`, `critical`, `optional`, `timeout`"
                                ),
                            );
                            skip_value(meta.input)?;
                        }
                        (HookKind::Init, "state") => {
                            let first = keys.first(&meta);
                            let span = flag(cx, &meta, &key)?;
                            if first {
                                hook.state = Some(span);
                            }
                        }
                        (HookKind::Init, _) => {
                            cx.error_spanned_by(
                                &meta.path,
                                format!(
                                    "unknown `#[init]` argument `{key}`; expected `timeout` or `state`"
                                ),
                            );
                            skip_value(meta.input)?;
                        }
                        (HookKind::Cleanup | HookKind::Reload, _) => {
                            cx.error_spanned_by(
                                &meta.path,
                                format!(
                                    "unknown `{}` argument `{key}`; expected `timeout`",
                                    kind.attr()
                                ),
                            );
                            skip_value(meta.input)?;
                        }
                    }
                    Ok(())
                });
                if let Err(error) = parsed {
                    cx.syn_error(error);
                }
            }
            Meta::NameValue(name_value) => cx.error_at(
                name_value.eq_token.spans[0],
                format!(
                    "`{}` takes its arguments in parentheses, like `#[{}(timeout = \"5s\")]`",
                    kind.attr(),
                    kind.name()
                ),
            ),
        }
        hook
    }
}

#[cfg(test)]
mod tests {
    use proc_macro2::TokenStream;
    use quote::quote;

    use super::LifecycleArgs;
    use crate::ctxt::Ctxt;

    /// The parsed arguments and every message recorded while parsing them.
    fn parse(args: TokenStream) -> (LifecycleArgs, Vec<String>) {
        let cx = Ctxt::new();
        let parsed = LifecycleArgs::parse(&cx, args);
        let messages = match cx.check() {
            Ok(()) => Vec::new(),
            Err(errors) => errors.into_iter().map(|error| error.to_string()).collect(),
        };
        (parsed, messages)
    }

    fn krate(args: &LifecycleArgs) -> Option<String> {
        args.krate.as_ref().map(|path| quote!(#path).to_string())
    }

    #[test]
    fn accepts_not_send_alone_and_with_crate_in_any_order() {
        let (args, messages) = parse(quote!());
        assert!(messages.is_empty());
        assert!(!args.not_send && args.krate.is_none());

        let (args, messages) = parse(quote!(?Send));
        assert!(messages.is_empty(), "{messages:?}");
        assert!(args.not_send && args.krate.is_none());

        for tokens in [quote!(crate = rt, ?Send), quote!(?Send, crate = "rt",)] {
            let (args, messages) = parse(tokens);
            assert!(messages.is_empty(), "{messages:?}");
            assert!(args.not_send);
            assert_eq!(krate(&args).as_deref(), Some("rt"));
        }
    }

    #[test]
    fn reports_every_bad_argument_and_keeps_the_good_ones() {
        let (args, messages) = parse(quote!(?Send, krate = rt, ?Send, ?Sync, crate = rt));
        assert!(args.not_send);
        assert_eq!(krate(&args).as_deref(), Some("rt"));
        assert_eq!(messages.len(), 3, "{messages:?}");
        assert_eq!(
            messages[0],
            "unknown lifecycle argument `krate`; expected `crate` or `?Send`"
        );
        assert_eq!(messages[1], "duplicate lifecycle argument `?Send`");
        assert!(
            messages[2].starts_with("`?Sync` is not supported: `?Send` is the only bound"),
            "{}",
            messages[2]
        );
    }

    #[test]
    fn a_malformed_argument_is_a_syntax_error() {
        for tokens in [quote!(?), quote!(?Send crate = rt), quote!(crate rt)] {
            let (_, messages) = parse(tokens.clone());
            assert_eq!(messages.len(), 1, "{tokens}: {messages:?}");
        }
    }
}
