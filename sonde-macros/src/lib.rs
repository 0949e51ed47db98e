//! Attribute macros for eBPF programs written with `sonde-ebpf`.
//!
//! Use them through `sonde_ebpf` (`use sonde_ebpf::{uprobe, uretprobe, map};`): the
//! expansion names `::sonde_ebpf` paths.

use proc_macro::TokenStream;
use proc_macro2::Span;
use quote::{format_ident, quote};
use sonde_abi::ProbeKind;
use syn::{
    parse::Parser, parse_macro_input, punctuated::Punctuated, Data, DeriveInput, Error, Expr, ExprLit, ItemFn,
    ItemStatic, Lit, Meta, Token,
};

/// Options common to `#[uprobe(...)]` and `#[uretprobe(...)]`.
struct ProbeArgs {
    name: Option<String>,
}

fn parse_probe_args(attr: TokenStream) -> syn::Result<ProbeArgs> {
    let metas = Punctuated::<Meta, Token![,]>::parse_terminated.parse(attr)?;
    let mut args = ProbeArgs { name: None };
    for meta in metas {
        match &meta {
            Meta::NameValue(nv) if nv.path.is_ident("name") => args.name = Some(lit_str(&nv.value)?),
            _ => return Err(Error::new_spanned(meta, "expected `name = \"...\"`")),
        }
    }
    Ok(args)
}

fn lit_str(expr: &Expr) -> syn::Result<String> {
    match expr {
        Expr::Lit(ExprLit { lit: Lit::Str(s), .. }) => Ok(s.value()),
        other => Err(Error::new_spanned(other, "expected a string literal")),
    }
}

fn probe(attr: TokenStream, item: TokenStream, kind: ProbeKind) -> TokenStream {
    let args = match parse_probe_args(attr) {
        Ok(a) => a,
        Err(e) => return e.to_compile_error().into(),
    };
    let func = parse_macro_input!(item as ItemFn);
    let ident = &func.sig.ident;
    let name = args.name.unwrap_or_else(|| ident.to_string());
    // The section names the kind; the loader reads it back (sonde_abi::ProbeKind).
    let section = format!("{}/{name}", kind.section_prefix());
    let ctx_ty = match kind {
        ProbeKind::Return => quote!(::sonde_ebpf::RetProbeContext),
        ProbeKind::Usdt => quote!(::sonde_ebpf::UsdtContext),
        _ => quote!(::sonde_ebpf::ProbeContext),
    };
    let export = format_ident!("{}", name, span = Span::call_site());
    if kind == ProbeKind::Session {
        return quote! {
            #[no_mangle]
            #[link_section = #section]
            pub extern "C" fn #export(ctx: *mut ::core::ffi::c_void) -> u32 {
                // SAFETY: the kernel passes the probed task's saved registers as `ctx`.
                return match unsafe { ::sonde_ebpf::SessionContext::begin(ctx) } {
                    Some((session, frame)) => ::sonde_ebpf::SessionContext::end(frame, #ident(session)),
                    None => 0,
                };
                #func
            }
        }
        .into();
    }
    quote! {
        #[no_mangle]
        #[link_section = #section]
        pub extern "C" fn #export(ctx: *mut ::core::ffi::c_void) -> u32 {
            // SAFETY: the kernel passes the probed task's saved registers as `ctx`.
            return #ident(unsafe { #ctx_ty::new(ctx) });
            #func
        }
    }
    .into()
}

/// Marks a function as a uprobe program (function entry).
///
/// The function takes a [`ProbeContext`] and returns `u32`; `#[uprobe(name = "x")]`
/// renames the program. The section (`uprobe/NAME`) names the kind; the
/// user-space library attaches it with the best mechanism the kernel has.
///
/// [`ProbeContext`]: ../sonde_ebpf/struct.ProbeContext.html
#[proc_macro_attribute]
pub fn uprobe(attr: TokenStream, item: TokenStream) -> TokenStream {
    probe(attr, item, ProbeKind::Entry)
}

/// Marks a function as a uretprobe program (function return).
///
/// The function takes a [`RetProbeContext`] and returns `u32`. Options as for
/// `#[uprobe]`.
///
/// [`RetProbeContext`]: ../sonde_ebpf/struct.RetProbeContext.html
#[proc_macro_attribute]
pub fn uretprobe(attr: TokenStream, item: TokenStream) -> TokenStream {
    probe(attr, item, ProbeKind::Return)
}

/// Marks a function as a uprobe session program: one program at the entry and
/// at the return of each function, with a per-call 8-byte value between them.
///
/// The function takes a [`SessionContext`] and returns `u32`: at entry, 1 skips
/// this call's return run. Native on Linux 6.13+ (`uprobe.session/NAME`, one
/// `BPF_TRACE_UPROBE_SESSION` link); sonde emulates it on older kernels (an
/// entry and a return copy of the same code). Options as for `#[uprobe]`.
///
/// [`SessionContext`]: ../sonde_ebpf/struct.SessionContext.html
#[proc_macro_attribute]
pub fn uprobe_session(attr: TokenStream, item: TokenStream) -> TokenStream {
    probe(attr, item, ProbeKind::Session)
}

/// Marks a function as a kernel tracepoint program (Linux 4.7):
/// `#[tracepoint(category = "sched", event = "sched_process_fork")]`.
///
/// The function takes a [`TracePointContext`] and returns `u32`; the section is
/// `tracepoint/CATEGORY/EVENT`. User space attaches it with
/// `Object::tracepoint(NAME)?.attach()`.
///
/// [`TracePointContext`]: ../sonde_ebpf/struct.TracePointContext.html
#[proc_macro_attribute]
pub fn tracepoint(attr: TokenStream, item: TokenStream) -> TokenStream {
    let metas = match Punctuated::<Meta, Token![,]>::parse_terminated.parse(attr) {
        Ok(m) => m,
        Err(e) => return e.to_compile_error().into(),
    };
    let (mut category, mut event) = (None, None);
    for meta in &metas {
        let value = match meta {
            Meta::NameValue(nv) if nv.path.is_ident("category") || nv.path.is_ident("event") => lit_str(&nv.value),
            _ => Err(Error::new_spanned(
                meta,
                "expected `category = \"...\"` and `event = \"...\"`",
            )),
        };
        match value {
            Ok(v) if meta.path().is_ident("category") => category = Some(v),
            Ok(v) => event = Some(v),
            Err(e) => return e.to_compile_error().into(),
        }
    }
    let (Some(category), Some(event)) = (category, event) else {
        return Error::new(
            Span::call_site(),
            "#[tracepoint] needs `category = \"...\"` and `event = \"...\"`",
        )
        .to_compile_error()
        .into();
    };
    let section = format!("{}/{category}/{event}", sonde_abi::program::TRACEPOINT_SECTION_PREFIX);
    if sonde_abi::program::tracepoint_of_section(&section).is_none() {
        return Error::new(
            Span::call_site(),
            "category and event are tracefs names: letters, digits and `_`",
        )
        .to_compile_error()
        .into();
    }
    let func = parse_macro_input!(item as ItemFn);
    let ident = &func.sig.ident;
    let export = format_ident!("{}", ident, span = Span::call_site());
    quote! {
        #[no_mangle]
        #[link_section = #section]
        pub extern "C" fn #export(ctx: *mut ::core::ffi::c_void) -> u32 {
            // SAFETY: the kernel passes the tracepoint's record as `ctx`.
            return #ident(unsafe { ::sonde_ebpf::TracePointContext::new(ctx) });
            #func
        }
    }
    .into()
}

/// Marks a function as a USDT program: attached at `<sys/sdt.h>` probe
/// points (with their semaphores), its [`UsdtContext`] reading the probe's
/// arguments as the note's specs say.
///
/// [`UsdtContext`]: ../sonde_ebpf/usdt/struct.UsdtContext.html
#[proc_macro_attribute]
pub fn usdt(attr: TokenStream, item: TokenStream) -> TokenStream {
    probe(attr, item, ProbeKind::Usdt)
}

/// Declares a map: places the static in the `maps` section under its own name
/// (or `#[map(name = "X")]`), where the user-space loader finds it.
#[proc_macro_attribute]
pub fn map(attr: TokenStream, item: TokenStream) -> TokenStream {
    let metas = match Punctuated::<Meta, Token![,]>::parse_terminated.parse(attr) {
        Ok(m) => m,
        Err(e) => return e.to_compile_error().into(),
    };
    let item = parse_macro_input!(item as ItemStatic);
    let mut name = item.ident.to_string();
    for meta in metas {
        match &meta {
            Meta::NameValue(nv) if nv.path.is_ident("name") => match lit_str(&nv.value) {
                Ok(n) => name = n,
                Err(e) => return e.to_compile_error().into(),
            },
            _ => {
                return Error::new_spanned(meta, "expected `name = \"...\"`")
                    .to_compile_error()
                    .into()
            }
        }
    }
    quote! {
        #[link_section = "maps"]
        #[export_name = #name]
        #item
    }
    .into()
}

/// Derives `Pod` (plain data for map keys, values and ring buffer records) for a
/// `#[repr(C)]` struct, checking at compile time that it has no padding and that
/// every field is `Pod`. `Pod` must be in scope: `use sonde::Pod;` on the host,
/// `use sonde_ebpf::Pod;` in a program (each names the trait and this derive).
///
/// ```ignore
/// #[derive(Clone, Copy, Pod)]
/// #[repr(C)]
/// struct Event { pid: u32, cookie: u32, ts_ns: u64 }
/// ```
#[proc_macro_derive(Pod)]
pub fn derive_pod(item: TokenStream) -> TokenStream {
    let input = parse_macro_input!(item as DeriveInput);
    let ident = &input.ident;
    let repr_c = input.attrs.iter().any(|a| {
        a.path().is_ident("repr")
            && a.parse_args_with(Punctuated::<Meta, Token![,]>::parse_terminated)
                .is_ok_and(|m| {
                    m.iter()
                        .any(|m| m.path().is_ident("C") || m.path().is_ident("transparent"))
                })
    });
    if !repr_c {
        return Error::new_spanned(
            ident,
            "#[derive(Pod)] needs #[repr(C)]: the layout must be the same on both sides",
        )
        .to_compile_error()
        .into();
    }
    if !input.generics.params.is_empty() {
        return Error::new_spanned(&input.generics, "#[derive(Pod)] takes no generic parameters")
            .to_compile_error()
            .into();
    }
    let Data::Struct(data) = &input.data else {
        return Error::new_spanned(ident, "#[derive(Pod)] is for structs")
            .to_compile_error()
            .into();
    };
    let types: Vec<&syn::Type> = data.fields.iter().map(|f| &f.ty).collect();
    let message = format!("{ident} has padding: add explicit fields (e.g. `_pad: [u8; N]`) so every byte is a field");
    quote! {
        // SAFETY: repr(C), every field Pod and no padding (both checked below).
        unsafe impl Pod for #ident {}
        const _: () = {
            #[allow(dead_code)]
            fn fields_are_pod() {
                fn is_pod<T: Pod>() {}
                #( is_pod::<#types>(); )*
            }
            assert!(
                ::core::mem::size_of::<#ident>() == 0 #( + ::core::mem::size_of::<#types>() )*,
                #message
            );
        };
    }
    .into()
}
