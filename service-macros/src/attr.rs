//! The attributes the macros read — `#[service(...)]` on a struct and on its fields,
//! `#[lifecycle(...)]`, and the hook attributes `#[init]`, `#[cleanup]`, `#[health]`,
//! `#[run]` — parsed into typed values that keep the tokens they came from for spans.
//!
//! Unknown and duplicate keys are reported here, each at the key, and parsing goes on
//! with the next key so that one compilation shows every mistake.

use proc_macro2::{Span, TokenStream, TokenTree};
use syn::meta::ParseNestedMeta;
use syn::parse::Parser;
use syn::{Attribute, LitStr, Meta, Path, Token};

use crate::ctxt::Ctxt;
use crate::duration;

/// `#[service(...)]` on the struct, possibly split over several attributes.
#[derive(Default)]
pub(crate) struct Container {
    pub(crate) name: Option<LitStr>,
    pub(crate) version: Option<LitStr>,
    /// In milliseconds, like the other timeouts.
    pub(crate) start_timeout: Option<u64>,
    pub(crate) stop_timeout: Option<u64>,
    pub(crate) health_timeout: Option<u64>,
    pub(crate) krate: Option<Path>,
}

const SERVICE_KEYS: &str =
    "`name`, `version`, `start_timeout`, `stop_timeout`, `health_timeout`, `crate`";

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
                    "crate" => keys.set(&meta, &mut container.krate, crate_path(&meta)?),
                    _ => {
                        cx.error_spanned_by(
                            &meta.path,
                            format!(
                                "unknown service attribute `{key}`; expected one of: {SERVICE_KEYS}"
                            ),
                        );
                        skip_value(&meta)?;
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
                        skip_value(&meta)?;
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
}

impl LifecycleArgs {
    pub(crate) fn parse(cx: &Ctxt, args: TokenStream) -> Self {
        let mut lifecycle = LifecycleArgs::default();
        let mut keys = Keys::new(cx, "lifecycle argument");
        let parser = syn::meta::parser(|meta| {
            let key = key_name(&meta.path);
            if key == "crate" {
                keys.set(&meta, &mut lifecycle.krate, crate_path(&meta)?);
            } else {
                cx.error_spanned_by(
                    &meta.path,
                    format!("unknown lifecycle argument `{key}`; expected `crate`"),
                );
                skip_value(&meta)?;
            }
            Ok(())
        });
        if let Err(error) = parser.parse2(args) {
            cx.syn_error(error);
        }
        lifecycle
    }
}

/// The four hook attributes, recognised by their bare name inside a `#[lifecycle]` block.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum HookKind {
    Init,
    Cleanup,
    Health,
    Run,
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
        }
    }

    /// The hook's kind as the runtime names it in errors.
    pub(crate) fn name(self) -> &'static str {
        match self {
            HookKind::Init => "init",
            HookKind::Cleanup => "cleanup",
            HookKind::Health => "health",
            HookKind::Run => "run",
        }
    }
}

/// One hook attribute and its arguments.
pub(crate) struct HookAttr<'a> {
    pub(crate) kind: HookKind,
    pub(crate) attr: &'a Attribute,
    /// `timeout = "…"` (init, cleanup, health), in milliseconds.
    pub(crate) timeout: Option<u64>,
    /// `name = "…"` (health).
    pub(crate) name: Option<LitStr>,
    /// `optional` (health); `critical` is the default.
    pub(crate) optional: bool,
}

impl<'a> HookAttr<'a> {
    pub(crate) fn parse(cx: &Ctxt, kind: HookKind, attr: &'a Attribute) -> Self {
        let mut hook = HookAttr {
            kind,
            attr,
            timeout: None,
            name: None,
            optional: false,
        };
        match &attr.meta {
            Meta::Path(_) => {}
            Meta::List(list) => {
                let what = match kind {
                    HookKind::Init => "`#[init]` argument",
                    HookKind::Cleanup => "`#[cleanup]` argument",
                    HookKind::Health => "`#[health]` argument",
                    HookKind::Run => "`#[run]` argument",
                };
                let mut keys = Keys::new(cx, what);
                // `Some(optional)` once `critical` or `optional` was given.
                let mut criticality: Option<bool> = None;
                let parsed = list.parse_nested_meta(|meta| {
                    let key = key_name(&meta.path);
                    match (kind, key.as_str()) {
                        (HookKind::Run, _) => {
                            cx.error_spanned_by(&meta.path, "`#[run]` takes no arguments");
                            skip_value(&meta)?;
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
                            skip_value(&meta)?;
                        }
                        (HookKind::Init | HookKind::Cleanup, _) => {
                            cx.error_spanned_by(
                                &meta.path,
                                format!(
                                    "unknown `{}` argument `{key}`; expected `timeout`",
                                    kind.attr()
                                ),
                            );
                            skip_value(&meta)?;
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

/// Reports a key given twice in one attribute (or in several `#[service]` attributes).
struct Keys<'c> {
    cx: &'c Ctxt,
    what: &'static str,
    seen: Vec<String>,
}

impl<'c> Keys<'c> {
    fn new(cx: &'c Ctxt, what: &'static str) -> Self {
        Keys {
            cx,
            what,
            seen: Vec::new(),
        }
    }

    /// `true` the first time the key of `meta` is seen; later, reports it and returns `false`.
    fn first(&mut self, meta: &ParseNestedMeta) -> bool {
        let key = key_name(&meta.path);
        if self.seen.contains(&key) {
            self.cx
                .error_spanned_by(&meta.path, format!("duplicate {} `{key}`", self.what));
            false
        } else {
            self.seen.push(key);
            true
        }
    }

    /// Stores the value of the key of `meta`, unless the key was given before.
    fn set<T>(&mut self, meta: &ParseNestedMeta, slot: &mut Option<T>, value: T) {
        if self.first(meta) {
            *slot = Some(value);
        }
    }

    /// As [`Keys::set`], for a value that was malformed (`None`, already reported).
    fn set_opt<T>(&mut self, meta: &ParseNestedMeta, slot: &mut Option<T>, value: Option<T>) {
        if self.first(meta) {
            *slot = value;
        }
    }
}

/// The key as written, `foo` or `foo::bar`, for messages.
fn key_name(path: &Path) -> String {
    let mut name = String::new();
    if path.leading_colon.is_some() {
        name.push_str("::");
    }
    for (i, segment) in path.segments.iter().enumerate() {
        if i > 0 {
            name.push_str("::");
        }
        name.push_str(&segment.ident.to_string());
    }
    name
}

/// A key without a value, like `component`; a value given anyway is reported and skipped.
fn flag(cx: &Ctxt, meta: &ParseNestedMeta, key: &str) -> syn::Result<Span> {
    if !meta.input.is_empty() && !meta.input.peek(Token![,]) {
        cx.error_spanned_by(&meta.path, format!("`{key}` takes no value"));
        skip_value(meta)?;
    }
    Ok(meta.path.segments[0].ident.span())
}

/// `= "10s"`; a malformed duration is reported at the literal and gives `None`.
fn duration(cx: &Ctxt, meta: &ParseNestedMeta) -> syn::Result<Option<u64>> {
    let literal: LitStr = meta.value()?.parse()?;
    match duration::parse_millis(&literal.value()) {
        Ok(millis) => Ok(Some(millis)),
        Err(message) => {
            cx.error_spanned_by(&literal, message);
            Ok(None)
        }
    }
}

/// `crate = path`, or `crate = "path"` as serde spells it.
fn crate_path(meta: &ParseNestedMeta) -> syn::Result<Path> {
    let value = meta.value()?;
    if value.peek(LitStr) {
        value.parse::<LitStr>()?.parse_with(Path::parse_mod_style)
    } else {
        value.call(Path::parse_mod_style)
    }
}

/// Consumes the value of a key that was rejected, so that the keys after it are still checked.
fn skip_value(meta: &ParseNestedMeta) -> syn::Result<()> {
    if meta.input.peek(Token![=]) {
        meta.input.parse::<Token![=]>()?;
        meta.input.parse::<syn::Expr>()?;
    } else if meta.input.peek(syn::token::Paren) {
        meta.input.parse::<TokenTree>()?;
    }
    Ok(())
}
