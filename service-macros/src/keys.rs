//! The values of the attributes' keys: a key given twice ([`Keys`]), a key's path and
//! name, flags, durations, restart kinds, counts and paths, each reported at its token
//! when malformed and skipped, so that parsing goes on with the next key.

use proc_macro2::{Span, TokenTree};
use quote::ToTokens;
use syn::ext::IdentExt;
use syn::meta::ParseNestedMeta;
use syn::parse::ParseStream;
use syn::punctuated::Punctuated;
use syn::{Expr, ExprLit, Ident, Lit, LitStr, Path, PathSegment, Token};

use crate::attr::{RestartKind, SpannedMillis};
use crate::ctxt::Ctxt;
use crate::duration;

/// Reports a key given twice in one attribute (or in several `#[service]` attributes).
pub(crate) struct Keys<'c> {
    cx: &'c Ctxt,
    what: &'static str,
    seen: Vec<String>,
}

impl<'c> Keys<'c> {
    pub(crate) fn new(cx: &'c Ctxt, what: &'static str) -> Self {
        Keys {
            cx,
            what,
            seen: Vec::new(),
        }
    }

    /// `true` the first time the key of `meta` is seen; later, reports it and returns `false`.
    pub(crate) fn first(&mut self, meta: &ParseNestedMeta) -> bool {
        self.first_key(key_name(&meta.path), &meta.path)
    }

    /// As [`Keys::first`], for a key written as `tokens`.
    pub(crate) fn first_key(&mut self, key: String, tokens: &dyn ToTokens) -> bool {
        if self.seen.contains(&key) {
            self.cx
                .error_spanned_by(tokens, format!("duplicate {} `{key}`", self.what));
            false
        } else {
            self.seen.push(key);
            true
        }
    }

    /// Stores the value of the key of `meta`, unless the key was given before.
    pub(crate) fn set<T>(&mut self, meta: &ParseNestedMeta, slot: &mut Option<T>, value: T) {
        if self.first(meta) {
            *slot = Some(value);
        }
    }

    /// As [`Keys::set`], for a value that was malformed (`None`, already reported).
    pub(crate) fn set_opt<T>(
        &mut self,
        meta: &ParseNestedMeta,
        slot: &mut Option<T>,
        value: Option<T>,
    ) {
        if self.first(meta) {
            *slot = value;
        }
    }
}

/// A key: a path whose segments may be keywords (`crate`), as `syn::meta` reads it.
pub(crate) fn key_path(input: ParseStream) -> syn::Result<Path> {
    let leading_colon = input.parse()?;
    let mut segments = Punctuated::new();
    loop {
        segments.push_value(PathSegment::from(input.call(Ident::parse_any)?));
        if !input.peek(Token![::]) {
            break;
        }
        segments.push_punct(input.parse()?);
    }
    Ok(Path {
        leading_colon,
        segments,
    })
}

/// The key as written, `foo` or `foo::bar`, for messages.
pub(crate) fn key_name(path: &Path) -> String {
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
pub(crate) fn flag(cx: &Ctxt, meta: &ParseNestedMeta, key: &str) -> syn::Result<Span> {
    if !meta.input.is_empty() && !meta.input.peek(Token![,]) {
        cx.error_spanned_by(&meta.path, format!("`{key}` takes no value"));
        skip_value(meta.input)?;
    }
    Ok(meta.path.segments[0].ident.span())
}

/// `= "10s"`; a malformed duration is reported at the literal and gives `None`.
pub(crate) fn duration(cx: &Ctxt, meta: &ParseNestedMeta) -> syn::Result<Option<u64>> {
    Ok(spanned_duration(cx, meta)?.map(|duration| duration.millis))
}

/// As [`duration`], keeping the literal for later checks.
pub(crate) fn spanned_duration(
    cx: &Ctxt,
    meta: &ParseNestedMeta,
) -> syn::Result<Option<SpannedMillis>> {
    let literal: LitStr = meta.value()?.parse()?;
    match duration::parse_millis(&literal.value()) {
        Ok(millis) => Ok(Some(SpannedMillis { millis, literal })),
        Err(message) => {
            cx.error_spanned_by(&literal, message);
            Ok(None)
        }
    }
}

const RESTART_VALUES: &str = r#""permanent", "transient" or "temporary""#;

/// `= "permanent"`; any other value is reported at the value and gives `None`.
pub(crate) fn restart(cx: &Ctxt, meta: &ParseNestedMeta) -> syn::Result<Option<RestartKind>> {
    // An expression rather than a string, so that `restart = permanent` gets this message.
    let value: Expr = meta.value()?.parse()?;
    let Expr::Lit(ExprLit {
        lit: Lit::Str(literal),
        ..
    }) = &value
    else {
        cx.error_spanned_by(
            &value,
            format!("`restart` takes a string: {RESTART_VALUES}"),
        );
        return Ok(None);
    };
    let kind = match literal.value().as_str() {
        "permanent" => RestartKind::Permanent,
        "transient" => RestartKind::Transient,
        "temporary" => RestartKind::Temporary,
        other => {
            cx.error_spanned_by(
                literal,
                format!("invalid restart {other:?}: expected {RESTART_VALUES}"),
            );
            return Ok(None);
        }
    };
    Ok(Some(kind))
}

/// `= 3`: an unsuffixed (or `u32`) integer literal that fits a `u32`; anything else is
/// reported at the value and gives `None`.
pub(crate) fn max_restarts(cx: &Ctxt, meta: &ParseNestedMeta) -> syn::Result<Option<u32>> {
    let value: Expr = meta.value()?.parse()?;
    let Expr::Lit(ExprLit {
        lit: Lit::Int(literal),
        ..
    }) = &value
    else {
        cx.error_spanned_by(
            &value,
            "`max_restarts` takes an integer literal, like `max_restarts = 3`",
        );
        return Ok(None);
    };
    if !matches!(literal.suffix(), "" | "u32") {
        cx.error_spanned_by(
            literal,
            "`max_restarts` is a `u32`: write it without a suffix, like `max_restarts = 3`",
        );
        return Ok(None);
    }
    match literal.base10_parse::<u32>() {
        Ok(max) => Ok(Some(max)),
        Err(_) => {
            cx.error_spanned_by(
                literal,
                format!("`max_restarts` is a `u32`: at most {}", u32::MAX),
            );
            Ok(None)
        }
    }
}

/// The value of `crate = path`, or `crate = "path"` as serde spells it.
pub(crate) fn crate_path(value: ParseStream) -> syn::Result<Path> {
    if value.peek(LitStr) {
        value.parse::<LitStr>()?.parse_with(Path::parse_mod_style)
    } else {
        value.call(Path::parse_mod_style)
    }
}

/// Consumes the value of a key that was rejected, so that the keys after it are still checked.
pub(crate) fn skip_value(input: ParseStream) -> syn::Result<()> {
    if input.peek(Token![=]) {
        input.parse::<Token![=]>()?;
        input.parse::<Expr>()?;
    } else if input.peek(syn::token::Paren) {
        input.parse::<TokenTree>()?;
    }
    Ok(())
}
