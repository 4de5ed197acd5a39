//! The routing crate behind a byte-buffer ABI, for the Lambda@Edge handler (Node.js
//! loads this as wasm32-unknown-unknown). One call in, one JSON answer out:
//!
//! - `{"op":"host","method","host","domain"}` -> `{"label"}` or `{"decision"}`
//! - `{"op":"manifest","key","manifest"}` -> `{"ok":true}` (parsed and kept)
//! - `{"op":"route","method","uri","if_none_match","deployment_id","manifest_key"}`
//!   -> `{"decision"}`, or `{"need_manifest":true}` when the manifest is not kept yet
//! - `{"op":"plain","reason":"no_deployment"|"no_files"|"unavailable"}` -> `{"decision"}`
//!   (the answer when a lookup finds nothing, or fails)
//!
//! The handler does the I/O (S3 reads, caching of host records with a short TTL);
//! every routing rule lives in `deploysphere-edge-router`, shared with the local router.

use std::cell::RefCell;
use std::collections::HashMap;

use deploysphere_core::Manifest;
use deploysphere_edge_router::{Decision, RouteOptions, decide, decide_host, messages};
use serde::Deserialize;
use serde_json::{Value, json};

/// Parsed manifests kept between requests (immutable, keyed by their S3 key).
const MAX_MANIFESTS: usize = 64;

thread_local! {
    static MANIFESTS: RefCell<HashMap<String, Manifest>> = RefCell::new(HashMap::new());
}

#[derive(Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum Call {
    Host {
        method: String,
        host: String,
        domain: String,
    },
    Manifest {
        key: String,
        manifest: Manifest,
    },
    Route {
        method: String,
        uri: String,
        if_none_match: Option<String>,
        deployment_id: String,
        manifest_key: String,
        #[serde(default)]
        spa_fallback: bool,
    },
    Plain {
        reason: String,
    },
}

fn decision(decision: Decision) -> Value {
    json!({ "decision": decision })
}

/// Answers one call (the whole logic, callable from native tests too).
pub fn call(input: &[u8]) -> Value {
    let call: Call = match serde_json::from_slice(input) {
        Ok(call) => call,
        Err(e) => return json!({ "error": format!("bad call: {e}") }),
    };
    match call {
        Call::Host {
            method,
            host,
            domain,
        } => match decide_host(&method, &host, &domain) {
            Ok(label) => json!({ "label": label }),
            Err(answer) => decision(answer),
        },
        Call::Manifest { key, manifest } => {
            MANIFESTS.with(|kept| {
                let mut kept = kept.borrow_mut();
                if kept.len() >= MAX_MANIFESTS {
                    kept.clear();
                }
                kept.insert(key, manifest);
            });
            json!({ "ok": true })
        }
        Call::Route {
            method,
            uri,
            if_none_match,
            deployment_id,
            manifest_key,
            spa_fallback,
        } => MANIFESTS.with(|kept| match kept.borrow().get(&manifest_key) {
            Some(manifest) => decision(decide(
                &method,
                &uri,
                if_none_match.as_deref(),
                &deployment_id,
                manifest,
                &RouteOptions { spa_fallback },
            )),
            None => json!({ "need_manifest": true }),
        }),
        Call::Plain { reason } => decision(match reason.as_str() {
            "no_deployment" => Decision::plain(404, messages::NO_DEPLOYMENT),
            "no_files" => Decision::plain(404, messages::NO_FILES),
            _ => Decision::plain(502, messages::UNAVAILABLE),
        }),
    }
}

fn layout(len: usize) -> std::alloc::Layout {
    // Length 0 still gets one byte, so every pointer handed out is a real allocation.
    std::alloc::Layout::array::<u8>(len.max(1)).expect("a buffer under isize::MAX")
}

/// Reserves `len` bytes for the caller to write a call into.
#[unsafe(no_mangle)]
pub extern "C" fn alloc(len: usize) -> *mut u8 {
    let layout = layout(len);
    // SAFETY: the layout has a non-zero size.
    let ptr = unsafe { std::alloc::alloc(layout) };
    if ptr.is_null() {
        std::alloc::handle_alloc_error(layout);
    }
    ptr
}

/// Frees a buffer from [`alloc`] or an answer from [`handle`].
///
/// # Safety
/// `ptr` and `len` must come from `alloc(len)` or from `handle`'s answer, once.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dealloc(ptr: *mut u8, len: usize) {
    // SAFETY: per the contract, `ptr` was allocated with `layout(len)`.
    unsafe { std::alloc::dealloc(ptr, layout(len)) };
}

/// Answers the call in `ptr[..len]` (and frees it); returns the answer's pointer in
/// the high 32 bits and its length in the low 32 bits. The caller frees the answer
/// with [`dealloc`].
///
/// # Safety
/// `ptr[..len]` must be a buffer from `alloc(len)`, written by the caller.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn handle(ptr: *mut u8, len: usize) -> u64 {
    // SAFETY: per the contract, `ptr` holds `len` initialized bytes.
    let answer = call(unsafe { std::slice::from_raw_parts(ptr, len) })
        .to_string()
        .into_bytes();
    // SAFETY: `ptr` came from `alloc(len)` and is not used again.
    unsafe { dealloc(ptr, len) };
    let out = alloc(answer.len());
    // SAFETY: `out` has room for `answer.len()` bytes and does not overlap `answer`.
    unsafe { std::ptr::copy_nonoverlapping(answer.as_ptr(), out, answer.len()) };
    ((out as usize as u64) << 32) | answer.len() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manifest_is_asked_for_once_then_kept() {
        let route = json!({
            "op": "route", "method": "GET", "uri": "/", "if_none_match": null,
            "deployment_id": "d1", "manifest_key": "manifests/d1.json"
        });
        let input = route.to_string();
        assert_eq!(call(input.as_bytes()), json!({ "need_manifest": true }));
        let manifest = json!({
            "op": "manifest", "key": "manifests/d1.json",
            "manifest": {"deployment_id": "d1", "files": {"/index.html": {
                "blob": "ab", "size": 3, "content_type": "text/html",
                "cache_control": "no-cache"}}}
        });
        assert_eq!(call(manifest.to_string().as_bytes()), json!({ "ok": true }));
        let answer = call(input.as_bytes());
        assert_eq!(answer["decision"]["kind"], "file");
        assert_eq!(answer["decision"]["blob"], "ab");
    }

    #[test]
    fn a_bad_call_is_an_error_not_a_panic() {
        assert!(call(b"not json")["error"].is_string());
        assert!(call(br#"{"op":"route"}"#)["error"].is_string());
    }
}
