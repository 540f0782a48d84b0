//! The typed model of the two macro inputs: a service struct (`#[derive(Service)]`) and a
//! `#[lifecycle]` impl block, borrowing the parsed input so every part keeps its span.

use proc_macro2::{Span, TokenStream, TokenTree};
use quote::{ToTokens, TokenStreamExt};
use syn::ext::IdentExt;
use syn::parse::{Parse, ParseStream};
use syn::{
    Attribute, Data, DeriveInput, Fields, Generics, Ident, ImplItem, Path, Signature, Token, Type,
    Visibility, braced, token,
};

use crate::attr::{Container, FieldAttrs, HookAttr, HookKind, LifecycleArgs};
use crate::ctxt::Ctxt;

/// A struct with `#[derive(Service)]`.
pub(crate) struct Service<'a> {
    pub(crate) ident: &'a Ident,
    pub(crate) generics: &'a Generics,
    pub(crate) attrs: Container,
    /// The named fields; empty for a unit struct and for an input that is not a struct.
    pub(crate) fields: Vec<Field<'a>>,
}

/// A named field of a service.
pub(crate) struct Field<'a> {
    pub(crate) ident: &'a Ident,
    pub(crate) ty: &'a Type,
    pub(crate) attrs: FieldAttrs,
}

const NOT_A_STRUCT: &str = "a service is a struct with named fields";

impl<'a> Service<'a> {
    pub(crate) fn from_syn(cx: &Ctxt, input: &'a DeriveInput) -> Self {
        let attrs = Container::from_attrs(cx, &input.attrs);
        let fields = match &input.data {
            Data::Struct(data) => {
                match &data.fields {
                    Fields::Named(fields) => fields
                        .named
                        .iter()
                        .map(|field| Field {
                            ident: field.ident.as_ref().expect("named field"),
                            ty: &field.ty,
                            attrs: FieldAttrs::from_attrs(cx, &field.attrs),
                        })
                        .collect(),
                    Fields::Unit => Vec::new(),
                    Fields::Unnamed(fields) => {
                        cx.error_spanned_by(
                        fields,
                        format!("`#[derive(Service)]` cannot be used on a tuple struct; {NOT_A_STRUCT}"),
                    );
                        Vec::new()
                    }
                }
            }
            Data::Enum(data) => {
                cx.error_at(
                    data.enum_token.span,
                    format!("`#[derive(Service)]` cannot be used on an enum; {NOT_A_STRUCT}"),
                );
                Vec::new()
            }
            Data::Union(data) => {
                cx.error_at(
                    data.union_token.span,
                    format!("`#[derive(Service)]` cannot be used on a union; {NOT_A_STRUCT}"),
                );
                Vec::new()
            }
        };
        Service {
            ident: &input.ident,
            generics: &input.generics,
            attrs,
            fields,
        }
    }

    /// `name = "…"`, or the type's name in snake case.
    pub(crate) fn name(&self) -> String {
        match &self.attrs.name {
            Some(name) => name.value(),
            None => snake_case(&self.ident.unraw().to_string()),
        }
    }
}

/// `MarketFeed` → `market_feed`, `HTTPServer` → `http_server`.
pub(crate) fn snake_case(name: &str) -> String {
    let chars: Vec<char> = name.chars().collect();
    let mut snake = String::with_capacity(name.len() + 4);
    for (i, &c) in chars.iter().enumerate() {
        if c.is_uppercase() {
            let previous = i.checked_sub(1).map(|i| chars[i]);
            let next = chars.get(i + 1);
            let word_starts = match previous {
                None => false,
                Some(previous) => {
                    previous.is_lowercase()
                        || previous.is_ascii_digit()
                        || (previous.is_uppercase() && next.is_some_and(|next| next.is_lowercase()))
                }
            };
            if word_starts {
                snake.push('_');
            }
            snake.extend(c.to_lowercase());
        } else {
            snake.push(c);
        }
    }
    snake
}

/// The impl block under `#[lifecycle]`.
///
/// Parsed by hand so that method bodies stay opaque token trees: they are emitted exactly
/// as written, a body that does not parse yet (while the user types) does not stop the
/// expansion, and no time is spent parsing them.
pub(crate) struct ImplBlock {
    pub(crate) attrs: Vec<Attribute>,
    pub(crate) unsafety: Option<Token![unsafe]>,
    pub(crate) impl_token: Token![impl],
    pub(crate) generics: Generics,
    pub(crate) trait_: Option<(Option<Token![!]>, Path, Token![for])>,
    pub(crate) self_ty: Type,
    pub(crate) brace_token: token::Brace,
    pub(crate) inner_attrs: Vec<Attribute>,
    pub(crate) items: Vec<Member>,
}

/// An item of the impl block.
pub(crate) enum Member {
    Method(Box<Method>),
    /// An associated const or type, or a macro call, with its outer attributes apart.
    Other {
        attrs: Vec<Attribute>,
        item: Box<ImplItem>,
    },
}

/// A method, its body kept as the tokens the user wrote.
pub(crate) struct Method {
    pub(crate) attrs: Vec<Attribute>,
    pub(crate) vis: Visibility,
    pub(crate) defaultness: Option<Token![default]>,
    pub(crate) sig: Signature,
    /// The `{ ... }` group (or a `;`, which rustc rejects in an inherent impl).
    pub(crate) body: TokenTree,
}

impl Parse for ImplBlock {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let attrs = input.call(Attribute::parse_outer)?;
        let unsafety = input.parse()?;
        let impl_token = input.parse()?;
        let mut generics: Generics = input.parse()?;
        let polarity: Option<Token![!]> = input.parse()?;
        let first: Type = input.call(Type::without_plus)?;
        let (trait_, self_ty) = if input.peek(Token![for]) {
            let path = match first {
                Type::Path(path) if path.qself.is_none() => path.path,
                other => return Err(syn::Error::new_spanned(other, "expected a trait path")),
            };
            let for_token = input.parse()?;
            (Some((polarity, path, for_token)), input.parse()?)
        } else if let Some(polarity) = polarity {
            return Err(syn::Error::new_spanned(
                polarity,
                "inherent impls cannot be negative",
            ));
        } else {
            (None, first)
        };
        generics.where_clause = input.parse()?;
        let content;
        let brace_token = braced!(content in input);
        let inner_attrs = content.call(Attribute::parse_inner)?;
        let mut items = Vec::new();
        while !content.is_empty() {
            items.push(content.parse()?);
        }
        Ok(ImplBlock {
            attrs,
            unsafety,
            impl_token,
            generics,
            trait_,
            self_ty,
            brace_token,
            inner_attrs,
            items,
        })
    }
}

impl Parse for Member {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let attrs = input.call(Attribute::parse_outer)?;
        let ahead = input.fork();
        let is_method = ahead.parse::<Visibility>().is_ok()
            && ahead.parse::<Option<Token![default]>>().is_ok()
            && ahead.parse::<Signature>().is_ok();
        if !is_method {
            // Its outer attributes were taken above, so `item` prints without them.
            let item = input.parse()?;
            return Ok(Member::Other { attrs, item });
        }
        let vis = input.parse()?;
        let defaultness = input.parse()?;
        let sig = input.parse()?;
        let body = if input.peek(Token![;]) || input.peek(token::Brace) {
            input.parse()?
        } else {
            return Err(input.error("expected `{`"));
        };
        Ok(Member::Method(Box::new(Method {
            attrs,
            vis,
            defaultness,
            sig,
            body,
        })))
    }
}

impl ImplBlock {
    /// Prints the block as written, except that on each method the hook attributes are
    /// replaced by what `on_hook` returns for the method, and hook attributes on other
    /// items are dropped.
    pub(crate) fn to_tokens_replacing_hooks(
        &self,
        on_hook: impl Fn(&Method) -> TokenStream,
    ) -> TokenStream {
        let is_hook = |attr: &&Attribute| HookKind::of(attr).is_some();
        let mut tokens = TokenStream::new();
        tokens.append_all(&self.attrs);
        self.unsafety.to_tokens(&mut tokens);
        self.impl_token.to_tokens(&mut tokens);
        self.generics.to_tokens(&mut tokens);
        if let Some((polarity, path, for_token)) = &self.trait_ {
            polarity.to_tokens(&mut tokens);
            path.to_tokens(&mut tokens);
            for_token.to_tokens(&mut tokens);
        }
        self.self_ty.to_tokens(&mut tokens);
        self.generics.where_clause.to_tokens(&mut tokens);
        self.brace_token.surround(&mut tokens, |tokens| {
            tokens.append_all(&self.inner_attrs);
            for item in &self.items {
                match item {
                    Member::Method(method) => {
                        if method.attrs.iter().any(|attr| is_hook(&attr)) {
                            tokens.extend(on_hook(method));
                        }
                        tokens.append_all(method.attrs.iter().filter(|attr| !is_hook(attr)));
                        method.vis.to_tokens(tokens);
                        method.defaultness.to_tokens(tokens);
                        method.sig.to_tokens(tokens);
                        method.body.to_tokens(tokens);
                    }
                    Member::Other { attrs, item } => {
                        tokens.append_all(attrs.iter().filter(|attr| !is_hook(attr)));
                        item.to_tokens(tokens);
                    }
                }
            }
        });
        tokens
    }
}

impl Method {
    /// Whether the body contains `.await`, found by scanning its tokens (it is never parsed).
    pub(crate) fn awaits(&self) -> bool {
        fn scan(tokens: TokenStream) -> bool {
            let mut after_dot = false;
            for token in tokens {
                match token {
                    TokenTree::Ident(ident) if after_dot && ident == "await" => return true,
                    TokenTree::Group(group) if scan(group.stream()) => return true,
                    TokenTree::Punct(punct) => {
                        after_dot = punct.as_char() == '.';
                        continue;
                    }
                    _ => {}
                }
                after_dot = false;
            }
            false
        }
        scan(self.body.to_token_stream())
    }
}

/// A `#[lifecycle]` impl block and its hooks.
pub(crate) struct Lifecycle<'a> {
    pub(crate) block: &'a ImplBlock,
    pub(crate) args: LifecycleArgs,
    /// The hooks, in source order.
    pub(crate) hooks: Vec<Hook<'a>>,
    /// Hook attributes on items that are not methods.
    pub(crate) misplaced: Vec<&'a Attribute>,
}

/// A method with a hook attribute.
pub(crate) struct Hook<'a> {
    pub(crate) attr: HookAttr<'a>,
    /// Hook attributes after the first one on the same method.
    pub(crate) extra_attrs: Vec<&'a Attribute>,
    pub(crate) method: &'a Method,
}

impl<'a> Lifecycle<'a> {
    pub(crate) fn from_syn(cx: &Ctxt, args: LifecycleArgs, block: &'a ImplBlock) -> Self {
        let mut hooks = Vec::new();
        let mut misplaced = Vec::new();
        for item in &block.items {
            match item {
                Member::Method(method) => {
                    let mut hook_attrs = method
                        .attrs
                        .iter()
                        .filter_map(|attr| Some((HookKind::of(attr)?, attr)));
                    if let Some((kind, attr)) = hook_attrs.next() {
                        hooks.push(Hook {
                            attr: HookAttr::parse(cx, kind, attr),
                            extra_attrs: hook_attrs.map(|(_, attr)| attr).collect(),
                            method,
                        });
                    }
                }
                Member::Other { attrs, .. } => {
                    misplaced.extend(attrs.iter().filter(|attr| HookKind::of(attr).is_some()));
                }
            }
        }
        Lifecycle {
            block,
            args,
            hooks,
            misplaced,
        }
    }

    /// The hooks of one kind, in source order.
    pub(crate) fn hooks(&self, kind: HookKind) -> impl Iterator<Item = &Hook<'a>> {
        self.hooks.iter().filter(move |hook| hook.attr.kind == kind)
    }
}

impl Hook<'_> {
    pub(crate) fn kind(&self) -> HookKind {
        self.attr.kind
    }

    /// The method's name, which names the hook in errors and events.
    pub(crate) fn method_name(&self) -> String {
        self.method.sig.ident.unraw().to_string()
    }

    /// A health check's name (`name = "…"` or the method's) and the span to report it at.
    pub(crate) fn check_name(&self) -> (String, Span) {
        match &self.attr.name {
            Some(name) => (name.value(), name.span()),
            None => (self.method_name(), self.method.sig.ident.span()),
        }
    }

    /// A `#[run]` hook's arguments after `&self`, in order, each with what it is.
    pub(crate) fn run_args(&self) -> Vec<RunArg<'_>> {
        self.method
            .sig
            .inputs
            .iter()
            .filter_map(|input| match input {
                syn::FnArg::Typed(arg) => Some(RunArg {
                    role: RunArgRole::of(&arg.ty),
                    arg,
                }),
                syn::FnArg::Receiver(_) => None,
            })
            .collect()
    }
}

/// An argument of a `#[run]` hook after `&self`.
pub(crate) struct RunArg<'a> {
    pub(crate) role: RunArgRole,
    pub(crate) arg: &'a syn::PatType,
}

/// What a `#[run]` hook's argument is, told by the last segment of its type's path (the
/// macro sees tokens, not types: a renamed import of `Shutdown` counts as state).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum RunArgRole {
    /// The service's `Shutdown`.
    Shutdown,
    /// The `Ready` the hook notifies once the service is ready.
    Ready,
    /// The value an `#[init(state)]` hook returned, handed over by value.
    State,
}

impl RunArgRole {
    fn of(ty: &Type) -> Self {
        let last = match ty {
            Type::Path(path) if path.qself.is_none() => path.path.segments.last(),
            _ => None,
        };
        match last {
            Some(segment) if segment.arguments.is_none() && segment.ident == "Shutdown" => {
                RunArgRole::Shutdown
            }
            Some(segment) if segment.arguments.is_none() && segment.ident == "Ready" => {
                RunArgRole::Ready
            }
            _ => RunArgRole::State,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::snake_case;

    #[test]
    fn snake_case_splits_words() {
        assert_eq!(snake_case("MarketFeed"), "market_feed");
        assert_eq!(snake_case("Feed"), "feed");
        assert_eq!(snake_case("StreamConsumerV2"), "stream_consumer_v2");
    }

    #[test]
    fn snake_case_keeps_acronyms_together() {
        assert_eq!(snake_case("HTTPServer"), "http_server");
        assert_eq!(snake_case("MyHTTPServer"), "my_http_server");
        assert_eq!(snake_case("HTTP"), "http");
        assert_eq!(snake_case("ApiV2HTTP"), "api_v2_http");
    }

    #[test]
    fn snake_case_after_digits() {
        assert_eq!(snake_case("Http2Server"), "http2_server");
        assert_eq!(snake_case("S3Uploader"), "s3_uploader");
    }

    #[test]
    fn snake_case_leaves_snake_case_alone() {
        assert_eq!(snake_case("market_feed"), "market_feed");
        assert_eq!(snake_case("Market_Feed"), "market_feed");
        assert_eq!(snake_case("x"), "x");
        assert_eq!(snake_case("X"), "x");
    }
}
