//! Code generation: the `impl Service` of `#[derive(Service)]` and the `impl Lifecycle` of
//! `#[lifecycle]`, plus the stub impls emitted beside `compile_error!` so that one mistake
//! does not cascade into errors about a missing impl.

use proc_macro2::{Group, Literal, Span, TokenStream, TokenTree};
use quote::{ToTokens, quote, quote_spanned};
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::{DeriveInput, Generics, Ident, Item, Path, ReturnType};

use crate::ast::{Hook, ImplBlock, Lifecycle, Method, RunArgRole, Service};
use crate::attr::{HookKind, LifecycleArgs};
use crate::ctxt::Ctxt;
use crate::valid;

pub(crate) fn derive(input: &DeriveInput) -> TokenStream {
    let cx = Ctxt::new();
    let service = Service::from_syn(&cx, input);
    valid::check_service(&cx, &service);
    let krate = krate(service.attrs.krate.as_ref());
    match cx.check() {
        Ok(()) => in_own_scope(&impl_service(&service, &krate)),
        Err(errors) => {
            let errors = errors.to_compile_error();
            let stub = in_own_scope(&stub_service(&service, &krate));
            quote!(#errors #stub)
        }
    }
}

pub(crate) fn lifecycle(args: TokenStream, input: TokenStream) -> TokenStream {
    let cx = Ctxt::new();
    let args = LifecycleArgs::parse(&cx, args);
    let block = match syn::parse2::<ImplBlock>(input.clone()) {
        Ok(block) => block,
        Err(error) => {
            cx.syn_error(not_an_impl_block(input.clone()).unwrap_or(error));
            let errors = cx
                .check()
                .expect_err("an error was recorded")
                .to_compile_error();
            // Emitted unchanged: the user's item still exists for the rest of the crate.
            return quote!(#errors #input);
        }
    };
    let lifecycle = Lifecycle::from_syn(&cx, args, &block);
    valid::check_lifecycle(&cx, &lifecycle);
    let krate = krate(lifecycle.args.krate.as_ref());
    let user_block = block.to_tokens_replacing_hooks(hook_lint_allowances);
    match cx.check() {
        Ok(()) => {
            let generated = in_own_scope(&impl_lifecycle(&lifecycle, &krate));
            quote!(#user_block #generated)
        }
        Err(errors) => {
            let errors = errors.to_compile_error();
            // A stub would conflict with a hand-written `impl Lifecycle`.
            let stub = (!implements_lifecycle(&block))
                .then(|| in_own_scope(&stub_lifecycle(&block, &krate)));
            quote!(#errors #user_block #stub)
        }
    }
}

/// Attributes for the user's hook methods, in place of their hook attributes.
///
/// The hook contract requires `async fn`, so pedantic clippy's `unused_async` would flag
/// a hook that does not await (a health check reading an atomic, say) with advice the
/// user cannot follow. Only such hooks get the `allow`: under `#![forbid(clippy::pedantic)]`
/// it draws a future-compatibility warning.
fn hook_lint_allowances(method: &Method) -> TokenStream {
    if method.awaits() {
        TokenStream::new()
    } else {
        quote!(#[allow(clippy::unused_async)])
    }
}

/// `::service_runtime`, or the path given by `crate = ...`.
fn krate(path: Option<&Path>) -> TokenStream {
    match path {
        Some(path) => path.to_token_stream(),
        None => quote!(::service_runtime),
    }
}

/// Generated items go in `const _: () = { ... };`: nothing they name leaks into the user's
/// module, and nothing the user imports changes what they name.
fn in_own_scope(items: &TokenStream) -> TokenStream {
    quote! {
        const _: () = {
            #items
        };
    }
}

/// A span at the user's token that resolves names like the rest of the generated code.
fn at(span: Span) -> Span {
    Span::call_site().located_at(span)
}

/// `tokens` moved to `span`'s location, their name resolution unchanged: an expression's
/// span runs from its first token to its last, so every token of an expression that can
/// fail to type-check must sit at the user's token.
fn respan(tokens: &TokenStream, span: Span) -> TokenStream {
    tokens
        .clone()
        .into_iter()
        .map(|mut token| {
            if let TokenTree::Group(group) = &token {
                let mut moved = Group::new(group.delimiter(), respan(&group.stream(), span));
                moved.set_span(group.span().located_at(span));
                token = TokenTree::Group(moved);
            } else {
                token.set_span(token.span().located_at(span));
            }
            token
        })
        .collect()
}

/// The where clause of a generated impl: the user's predicates, plus `bound` when the
/// type has generic parameters. For a generic type the bound makes the impl apply to the
/// instantiations that can be services (instead of failing for all of them, or asking
/// the user to repeat the impl block's bounds on the struct); for a concrete type it is
/// left out, because rustc rejects a false bound there with a worse message than the
/// supertrait's.
fn where_clause(generics: &Generics, bound: &TokenStream) -> TokenStream {
    let predicates = generics
        .where_clause
        .iter()
        .flat_map(|where_clause| where_clause.predicates.iter());
    let bound = (!generics.params.is_empty()).then_some(bound);
    if generics.where_clause.is_none() && bound.is_none() {
        return TokenStream::new();
    }
    quote!(where #(#predicates,)* #bound)
}

/// `Self: Lifecycle` for the derive: the `#[lifecycle]` block may bound the parameters
/// more tightly than the struct does.
fn service_bound(krate: &TokenStream) -> TokenStream {
    quote!(Self: #krate::Lifecycle)
}

/// `Send + Sync + 'static`, the supertraits of `Lifecycle`. On `Self` rather than the
/// self type as written, which may hold `'_`, not allowed in a where clause.
fn lifecycle_bound() -> TokenStream {
    quote!(Self: ::core::marker::Send + ::core::marker::Sync + 'static)
}

/// `Some(millis(…))` or `None`: an `Option<Duration>` usable in a `const`.
fn timeout(krate: &TokenStream, millis: Option<u64>) -> TokenStream {
    match millis {
        Some(millis) => {
            let millis = Literal::u64_unsuffixed(millis);
            quote!(#krate::__private::Some(#krate::__private::millis(#millis)))
        }
        None => quote!(#krate::__private::None),
    }
}

fn impl_service(service: &Service, krate: &TokenStream) -> TokenStream {
    let ident = service.ident;
    let (impl_generics, ty_generics, _) = service.generics.split_for_impl();
    let where_clause = where_clause(service.generics, &service_bound(krate));
    let name = service.name();
    let version = match &service.attrs.version {
        Some(version) => version.to_token_stream(),
        None => quote!(::core::env!("CARGO_PKG_VERSION")),
    };
    let start_timeout = timeout(krate, service.attrs.start_timeout);
    let stop_timeout = timeout(krate, service.attrs.stop_timeout);
    let health_timeout = timeout(krate, service.attrs.health_timeout);
    let mut config = quote! {
        #krate::__private::config(#name, #version, #start_timeout, #stop_timeout, #health_timeout)
    };
    if service.attrs.has_restart_keys() {
        config = restart_config(service, krate, &config);
    }
    let components = service
        .fields
        .iter()
        .filter(|field| field.attrs.component.is_some())
        .map(|field| {
            let member = field.ident;
            let name = member.unraw().to_string();
            let critical = field.attrs.optional.is_none();
            // At the field's type: a type that is not a component is reported there.
            let span = field.ty.span();
            let krate = respan(krate, span);
            quote_spanned! {at(span)=>
                #krate::__private::component(#name, #critical, &self.#member, __service_out);
            }
        });
    quote! {
        #[automatically_derived]
        impl #impl_generics #krate::Service for #ident #ty_generics #where_clause {
            fn config() -> #krate::ServiceConfig {
                #config
            }

            fn __shared_config() -> &'static #krate::ServiceConfig {
                // One per type: the configuration does not depend on generic parameters.
                // Built here rather than by calling `config()`, whose `Self: Service`
                // bound would repeat a missing `#[lifecycle]` error at the derive.
                static CONFIG: #krate::__private::OnceLock<#krate::ServiceConfig> =
                    #krate::__private::OnceLock::new();
                CONFIG.get_or_init(|| #config)
            }

            fn __components(
                &self,
                __service_out: &mut #krate::__private::Vec<#krate::__private::ComponentEntry>,
            ) {
                #(#components)*
            }
        }
    }
}

/// `config` with the restart keys applied; keys left out keep the runtime's defaults.
fn restart_config(service: &Service, krate: &TokenStream, config: &TokenStream) -> TokenStream {
    let private = quote!(#krate::__private);
    let attrs = &service.attrs;
    let restart = match attrs.restart {
        Some(kind) => {
            let variant = Ident::new(kind.variant(), Span::call_site());
            quote!(#private::Some(#private::Restart::#variant))
        }
        None => quote!(#private::None),
    };
    let max_restarts = match attrs.max_restarts {
        Some(max) => {
            let max = Literal::u32_unsuffixed(max);
            quote!(#private::Some(#max))
        }
        None => quote!(#private::None),
    };
    let within = timeout(krate, attrs.restart_within);
    let backoff = timeout(krate, attrs.backoff.as_ref().map(|backoff| backoff.millis));
    let max_backoff = timeout(krate, attrs.max_backoff.as_ref().map(|max| max.millis));
    quote! {
        #private::restart(#config, #restart, #max_restarts, #within, #backoff, #max_backoff)
    }
}

fn stub_service(service: &Service, krate: &TokenStream) -> TokenStream {
    let ident = service.ident;
    let (impl_generics, ty_generics, _) = service.generics.split_for_impl();
    let where_clause = where_clause(service.generics, &service_bound(krate));
    quote! {
        #[automatically_derived]
        impl #impl_generics #krate::Service for #ident #ty_generics #where_clause {
            fn config() -> #krate::ServiceConfig {
                ::core::unreachable!()
            }

            fn __shared_config() -> &'static #krate::ServiceConfig {
                ::core::unreachable!()
            }

            fn __components(&self, _: &mut #krate::__private::Vec<#krate::__private::ComponentEntry>) {}
        }
    }
}

fn impl_lifecycle(lifecycle: &Lifecycle, krate: &TokenStream) -> TokenStream {
    let block = lifecycle.block;
    let self_ty = &block.self_ty;
    let (impl_generics, _, _) = block.generics.split_for_impl();
    let where_clause = where_clause(&block.generics, &lifecycle_bound());
    let private = quote!(#krate::__private);

    let hook_spec = |hook: &Hook| {
        let name = hook.method_name();
        let timeout = timeout(krate, hook.attr.timeout);
        quote!(#private::HookSpec { name: #name, timeout: #timeout })
    };
    let init_specs = lifecycle.hooks(HookKind::Init).map(hook_spec);
    let cleanup_specs = lifecycle.hooks(HookKind::Cleanup).map(hook_spec);
    let reload_specs = lifecycle.hooks(HookKind::Reload).map(hook_spec);
    let check_specs = lifecycle.hooks(HookKind::Health).map(|hook| {
        let (name, _) = hook.check_name();
        let critical = !hook.attr.optional;
        let timeout = timeout(krate, hook.attr.timeout);
        quote!(#private::CheckSpec { name: #name, critical: #critical, timeout: #timeout })
    });
    let run = lifecycle.hooks(HookKind::Run).next();
    let run_spec = match run {
        Some(hook) => {
            let spec = hook_spec(hook);
            quote!(#private::Some(#spec))
        }
        None => quote!(#private::None),
    };

    let init = dispatch(lifecycle, HookKind::Init, krate);
    let cleanup = dispatch(lifecycle, HookKind::Cleanup, krate);
    let health = dispatch(lifecycle, HookKind::Health, krate);
    let reload = dispatch(lifecycle, HookKind::Reload, krate);
    // The type `__run` returns: the run hook's future, unboxed (see `Lifecycle::__run`).
    // At the user's method name, where a non-`Send` run hook fails this `Send` bound: it is
    // reported at the hook, as the boxed hooks are at the `Send` bound of `hook`.
    let run_future = |span: Span| {
        let private = respan(&private, span);
        quote_spanned! {at(span)=>
            impl ::core::future::Future<Output = #private::HookResult> + ::core::marker::Send + '_
        }
    };
    let run_state_ty = match run.map(|hook| hook.run_args()) {
        Some(args) => match args.iter().find(|arg| arg.role == RunArgRole::State) {
            Some(state) => {
                let ty = &state.arg.ty;
                // At the user's type: a type that is not `Send + 'static` is reported there.
                quote_spanned!(at(ty.span())=> #ty)
            }
            None => quote!(()),
        },
        None => quote!(()),
    };
    let run = match run {
        Some(hook) => {
            let args = hook.run_args();
            let takes_shutdown = args.iter().any(|arg| arg.role == RunArgRole::Shutdown);
            // The user's arguments in the user's order, each at its type: an argument of
            // the wrong type is reported there.
            let passed = args.iter().map(|arg| {
                let span = arg.arg.ty.span();
                match arg.role {
                    RunArgRole::Shutdown => quote_spanned!(at(span)=> __service_shutdown),
                    RunArgRole::Ready => quote_spanned!(at(span)=> __service_ready),
                    RunArgRole::State => {
                        let private = respan(&private, span);
                        quote_spanned!(at(span)=> #private::run_state(__service_state))
                    }
                }
            });
            let call = call_hook(lifecycle, hook, krate, &quote!(self, #(#passed),*));
            let run_future = run_future(hook.method.sig.ident.span());
            let body = if takes_shutdown {
                call
            } else {
                // The hook cannot hear a stop: dropped when shutdown is requested.
                quote!(#private::until_shutdown(__service_shutdown, #call))
            };
            quote! {
                fn __run(
                    &self,
                    __service_shutdown: #krate::Shutdown,
                    __service_ready: #krate::Ready,
                    __service_state: #private::Option<#run_state_ty>,
                ) -> #run_future {
                    #body
                }
            }
        }
        None => quote! {
            // Never called: `__HOOKS.run` is `None`.
            fn __run(
                &self,
                _: #krate::Shutdown,
                _: #krate::Ready,
                _: #private::Option<#run_state_ty>,
            ) -> impl ::core::future::Future<Output = #private::HookResult> + ::core::marker::Send + '_ {
                ::core::future::ready(::core::result::Result::Ok(()))
            }
        },
    };
    let (health_rule_name, health_rule) = match lifecycle.hooks(HookKind::HealthRule).next() {
        Some(hook) => {
            let name = hook.method_name();
            let method = &hook.method.sig.ident;
            let span = method.span();
            let private = respan(&private, span);
            let krate = respan(krate, span);
            // At the user's method: a rule of another shape is a type error there.
            let rule = quote_spanned! {at(span)=>
                fn __health_rule(
                    &self,
                    __service_report: &#krate::HealthReport,
                ) -> #private::Option<#krate::HealthStatus> {
                    #private::Some(Self::#method(self, __service_report))
                }
            };
            (quote!(#private::Some(#name)), rule)
        }
        None => (quote!(#private::None), quote!()),
    };
    let run_ready = lifecycle.hooks(HookKind::Run).next().is_some_and(|hook| {
        hook.run_args()
            .iter()
            .any(|arg| arg.role == RunArgRole::Ready)
    });

    quote! {
        #[automatically_derived]
        impl #impl_generics #krate::Lifecycle for #self_ty #where_clause {
            type __RunState = #run_state_ty;

            const __HOOKS: #private::Hooks = #private::Hooks {
                init: &[#(#init_specs),*],
                cleanup: &[#(#cleanup_specs),*],
                health: &[#(#check_specs),*],
                run: #run_spec,
                run_ready: #run_ready,
                reload: &[#(#reload_specs),*],
                health_rule: #health_rule_name,
            };

            fn __init<'__service>(
                &'__service mut self,
                __service_index: usize,
                __service_state: &'__service mut #private::Option<#run_state_ty>,
            ) -> #private::HookFuture<'__service> {
                #init
            }

            fn __cleanup(&mut self, __service_index: usize) -> #private::HookFuture<'_> {
                #cleanup
            }

            fn __health(&self, __service_index: usize) -> #private::CheckFuture<'_> {
                #health
            }

            fn __reload(&self, __service_index: usize) -> #private::HookFuture<'_> {
                #reload
            }

            #run

            #health_rule
        }
    }
}

/// The body of `__init`, `__cleanup`, `__health` or `__reload`: a `match` from hook number to hook call.
fn dispatch(lifecycle: &Lifecycle, kind: HookKind, krate: &TokenStream) -> TokenStream {
    let missing = match kind {
        HookKind::Health => quote!(#krate::__private::missing_check(__service_index)),
        _ => {
            let kind = kind.name();
            quote!(#krate::__private::missing_hook(#kind, __service_index))
        }
    };
    let arms: Vec<TokenStream> = lifecycle
        .hooks(kind)
        .enumerate()
        .map(|(index, hook)| {
            let index = Literal::usize_unsuffixed(index);
            let call = call_hook(lifecycle, hook, krate, &quote!(self));
            quote!(#index => #call,)
        })
        .collect();
    if arms.is_empty() {
        return missing;
    }
    quote! {
        match __service_index {
            #(#arms)*
            _ => #missing,
        }
    }
}

/// Calls the user's method and boxes its future (but the run hook's: see `Lifecycle::__run`).
///
/// The boxing call sits at the method's name, so a hook whose future is not `Send` is
/// reported at the hook (the run hook's future, not boxed, is checked by the `Send` bound
/// of `__run`'s return type, also at the method's name); the conversion of the output sits
/// at the return type, so a hook returning the wrong type is reported there. Under
/// `#[lifecycle(?Send)]` the future is wrapped by `local_hook` / `local_check` /
/// `local_run_hook`, which do not require `Send`.
fn call_hook(
    lifecycle: &Lifecycle,
    hook: &Hook,
    krate: &TokenStream,
    args: &TokenStream,
) -> TokenStream {
    let sig = &hook.method.sig;
    let method = &sig.ident;
    let output_span = match &sig.output {
        ReturnType::Type(_, ty) => ty.span(),
        ReturnType::Default => sig.paren_token.span.close(),
    };
    let output = {
        let krate = respan(krate, output_span);
        match hook.kind() {
            HookKind::Health => quote_spanned! {at(output_span)=>
                #krate::__private::IntoCheckResult::into_check_result(Self::#method(#args).await)
            },
            HookKind::Init if hook.attr.state.is_some() => quote_spanned! {at(output_span)=>
                #krate::__private::store_run_state(__service_state, Self::#method(#args).await)
            },
            _ => quote_spanned! {at(output_span)=>
                #krate::__private::IntoHookResult::into_hook_result(Self::#method(#args).await)
            },
        }
    };
    let krate = respan(krate, method.span());
    let boxing = match (hook.kind(), lifecycle.args.not_send) {
        (HookKind::Health, false) => "check",
        (HookKind::Health, true) => "local_check",
        (HookKind::Run, false) => {
            return quote_spanned! {at(method.span())=> async move { #output } };
        }
        (HookKind::Run, true) => "local_run_hook",
        (_, false) => "hook",
        (_, true) => "local_hook",
    };
    let boxing = Ident::new(boxing, at(method.span()));
    quote_spanned! {at(method.span())=>
        #krate::__private::#boxing(async move { #output })
    }
}

fn stub_lifecycle(block: &ImplBlock, krate: &TokenStream) -> TokenStream {
    let self_ty = &block.self_ty;
    let (impl_generics, _, _) = block.generics.split_for_impl();
    let where_clause = where_clause(&block.generics, &lifecycle_bound());
    let private = quote!(#krate::__private);
    quote! {
        #[automatically_derived]
        impl #impl_generics #krate::Lifecycle for #self_ty #where_clause {
            type __RunState = ();

            const __HOOKS: #private::Hooks = #private::Hooks::NONE;

            fn __init<'__service>(
                &'__service mut self,
                _: usize,
                _: &'__service mut #private::Option<()>,
            ) -> #private::HookFuture<'__service> {
                ::core::unreachable!()
            }

            fn __cleanup(&mut self, _: usize) -> #private::HookFuture<'_> {
                ::core::unreachable!()
            }

            fn __health(&self, _: usize) -> #private::CheckFuture<'_> {
                ::core::unreachable!()
            }

            fn __reload(&self, _: usize) -> #private::HookFuture<'_> {
                ::core::unreachable!()
            }

            fn __run(
                &self,
                _: #krate::Shutdown,
                _: #krate::Ready,
                _: #private::Option<()>,
            ) -> impl ::core::future::Future<Output = #private::HookResult> + ::core::marker::Send + '_ {
                async { ::core::unreachable!() }
            }
        }
    }
}

/// `impl Lifecycle for X` written by hand (under `#[lifecycle]` by mistake).
fn implements_lifecycle(block: &ImplBlock) -> bool {
    block.trait_.as_ref().is_some_and(|(_, path, _)| {
        path.segments
            .last()
            .is_some_and(|segment| segment.ident == "Lifecycle")
    })
}

/// The error for `#[lifecycle]` on an item that is not an impl block, at the item's keyword
/// and name; `None` for an impl block (or for tokens that are no item at all), whose syntax
/// error is then the one to show.
fn not_an_impl_block(input: TokenStream) -> Option<syn::Error> {
    let head = match syn::parse2::<Item>(input).ok()? {
        Item::Impl(_) => return None,
        Item::Fn(item) => head(&item.sig.fn_token, &item.sig.ident),
        Item::Struct(item) => head(&item.struct_token, &item.ident),
        Item::Enum(item) => head(&item.enum_token, &item.ident),
        Item::Union(item) => head(&item.union_token, &item.ident),
        Item::Trait(item) => head(&item.trait_token, &item.ident),
        Item::Mod(item) => head(&item.mod_token, &item.ident),
        Item::Type(item) => head(&item.type_token, &item.ident),
        Item::Const(item) => head(&item.const_token, &item.ident),
        Item::Static(item) => head(&item.static_token, &item.ident),
        other => other.to_token_stream(),
    };
    Some(syn::Error::new_spanned(
        head,
        "`#[lifecycle]` goes on an impl block: `#[lifecycle] impl MyService { ... }`",
    ))
}

fn head(keyword: &dyn ToTokens, name: &dyn ToTokens) -> TokenStream {
    quote!(#keyword #name)
}
