//! Site routing: which deployment a host names, and which file of its manifest a
//! request path names. Pure functions over strings and the manifest, free of tokio
//! and I/O, so the same code runs in the local proxy and, compiled to wasm32, in the
//! Lambda@Edge handler.
//!
//! A request goes through three named steps, each testable alone:
//! [`parse_host`] -> [`normalize_path`] -> [`resolve`].

use deploysphere_core::{Manifest, ManifestEntry};
use percent_encoding::percent_decode_str;

/// Number of deployment-id characters in an immutable deployment host.
pub const SHORT_ID_LEN: usize = 8;

/// What a host names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostTarget {
    /// `<slug>.<domain>`: the project's production alias.
    Production { slug: String },
    /// `<slug>-<short id>.<domain>`: one immutable deployment.
    Deployment { slug: String, short_id: String },
}

/// Parses a `Host` header (port allowed, any case) under `domain` (e.g. `localhost`).
/// Returns `None` for a host outside the domain or with more than one label before it.
pub fn parse_host(host: &str, domain: &str) -> Option<HostTarget> {
    let host = host.trim().trim_end_matches('.');
    let host = match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    };
    let host = host.to_ascii_lowercase();
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    let label = host.strip_suffix(&domain)?.strip_suffix('.')?;
    let valid = !label.is_empty()
        && label.len() <= 63
        && label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !label.starts_with('-')
        && !label.ends_with('-');
    if !valid {
        return None;
    }
    if let Some((slug, short_id)) = label.rsplit_once('-')
        && short_id.len() == SHORT_ID_LEN
        && short_id.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return Some(HostTarget::Deployment {
            slug: slug.to_string(),
            short_id: short_id.to_string(),
        });
    }
    Some(HostTarget::Production {
        slug: label.to_string(),
    })
}

/// Why a request path was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathError {
    /// Not valid UTF-8 after percent-decoding, or holds a NUL or backslash.
    Malformed,
}

/// Decodes and normalizes a request target (`/a/%2e%2e/b?x=1` -> `/b`). The query
/// and fragment are dropped, percent escapes decoded once, `.` and `..` segments
/// resolved (never above the root), repeated slashes folded. A trailing slash is kept:
/// it asks for a folder's `index.html`.
pub fn normalize_path(target: &str) -> Result<String, PathError> {
    let raw = target.split(['?', '#']).next().unwrap_or("");
    let decoded = percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| PathError::Malformed)?;
    if decoded.contains('\0') || decoded.contains('\\') {
        return Err(PathError::Malformed);
    }
    let mut parts: Vec<&str> = Vec::new();
    for segment in decoded.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            part => parts.push(part),
        }
    }
    let wants_folder = decoded.ends_with('/')
        || decoded.ends_with("/.")
        || decoded.ends_with("/..")
        || decoded == "."
        || decoded == "..";
    let mut path = String::with_capacity(decoded.len() + 1);
    for part in &parts {
        path.push('/');
        path.push_str(part);
    }
    if path.is_empty() || wants_folder {
        path.push('/');
    }
    Ok(path)
}

/// Per-site routing options.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteOptions {
    /// Serve `/index.html` (status 200) for paths that match no file: single-page apps.
    pub spa_fallback: bool,
}

/// Which file answers a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved<'m> {
    File {
        /// The manifest path that was found (e.g. `/about.html` for `/about`).
        path: String,
        entry: &'m ManifestEntry,
        /// 200, or 404 when this is the site's own `404.html`.
        status: u16,
    },
    /// No file and no `404.html`: a plain 404.
    NotFound,
}

/// Resolves a normalized path on a manifest: the exact file, the folder's
/// `index.html`, the clean URL (`/about` -> `/about.html`), the SPA fallback if on,
/// then the site's `/404.html` with status 404, else [`Resolved::NotFound`].
pub fn resolve<'m>(manifest: &'m Manifest, path: &str, options: &RouteOptions) -> Resolved<'m> {
    let found = |candidate: String, status: u16| {
        manifest.get(&candidate).map(|entry| Resolved::File {
            path: candidate,
            entry,
            status,
        })
    };
    let direct = if path.ends_with('/') {
        found(format!("{path}index.html"), 200)
    } else {
        found(path.to_string(), 200)
            .or_else(|| found(format!("{path}/index.html"), 200))
            .or_else(|| found(format!("{path}.html"), 200))
    };
    direct
        .or_else(|| {
            options
                .spa_fallback
                .then(|| found("/index.html".to_string(), 200))
                .flatten()
        })
        .or_else(|| found("/404.html".to_string(), 404))
        .unwrap_or(Resolved::NotFound)
}

/// The strong ETag of a file: its content hash.
pub fn etag(entry: &ManifestEntry) -> String {
    format!("\"{}\"", entry.blob)
}

/// Whether an `If-None-Match` header matches `etag` (a list, `*`, weak forms).
pub fn if_none_match(header: &str, etag: &str) -> bool {
    let bare = etag.trim_start_matches("W/");
    header
        .split(',')
        .map(str::trim)
        .any(|candidate| candidate == "*" || candidate.trim_start_matches("W/") == bare)
}

/// A plain-text answer's words, shared by every shape of the router.
pub mod messages {
    pub const METHOD: &str = "Only GET and HEAD are allowed.\n";
    pub const NO_SITE: &str = "No site is served at this host.\n";
    pub const NO_DEPLOYMENT: &str = "This project has no ready deployment.\n";
    pub const NO_FILES: &str = "This deployment has no files.\n";
    pub const MALFORMED: &str = "Malformed path.\n";
    pub const NOT_FOUND: &str = "Not found.\n";
    pub const UNAVAILABLE: &str = "The site is temporarily unavailable.\n";
}

/// What to answer a request with, decided without I/O. The local router and the
/// Lambda@Edge handler both carry it out: they differ only in where bytes come from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Decision {
    /// The content of blob `blob` (`size` bytes) with `status`; no body for HEAD.
    File {
        status: u16,
        blob: String,
        size: u64,
        body: bool,
        headers: Vec<(String, String)>,
    },
    /// 304: the client's copy is current.
    NotModified { headers: Vec<(String, String)> },
    /// A short plain-text answer (405, 400, 404, 502).
    Plain {
        status: u16,
        message: String,
        headers: Vec<(String, String)>,
    },
}

impl Decision {
    /// A plain-text answer, never cached; a 405 also says which methods are allowed.
    pub fn plain(status: u16, message: &str) -> Decision {
        let mut headers = vec![
            ("content-type".into(), "text/plain; charset=utf-8".into()),
            ("cache-control".into(), "no-store".into()),
        ];
        if status == 405 {
            headers.push(("allow".into(), "GET, HEAD".into()));
        }
        Decision::Plain {
            status,
            message: message.to_string(),
            headers,
        }
    }

    pub fn status(&self) -> u16 {
        match self {
            Decision::File { status, .. } | Decision::Plain { status, .. } => *status,
            Decision::NotModified { .. } => 304,
        }
    }

    pub fn headers(&self) -> &[(String, String)] {
        match self {
            Decision::File { headers, .. }
            | Decision::NotModified { headers }
            | Decision::Plain { headers, .. } => headers,
        }
    }
}

/// Which bytes of a file a GET with `Range` asks for (RFC 9110 §14; one range, as S3
/// and CloudFront serve: a request for several gets the whole file).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRange {
    /// 200 with the whole file (no `Range`, one this router ignores, or an `If-Range`
    /// that no longer matches).
    Full,
    /// 206 with bytes `start..=end`.
    Partial { start: u64, end: u64 },
    /// 416: the range starts past the end of the file.
    Unsatisfiable,
}

/// Reads `Range` (and `If-Range`, against the file's `etag`) for a file of `size`
/// bytes.
pub fn byte_range(range: Option<&str>, if_range: Option<&str>, etag: &str, size: u64) -> ByteRange {
    let Some(spec) = range.and_then(|r| r.trim().strip_prefix("bytes=")) else {
        return ByteRange::Full;
    };
    if if_range.is_some_and(|tag| tag.trim() != etag) || spec.contains(',') {
        return ByteRange::Full;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return ByteRange::Full;
    };
    let number = |text: &str| text.trim().parse::<u64>().ok();
    match (first.trim().is_empty(), last.trim().is_empty()) {
        // `-n`: the last n bytes.
        (true, false) => match number(last) {
            Some(0) => ByteRange::Unsatisfiable,
            Some(_) if size == 0 => ByteRange::Unsatisfiable,
            Some(n) => ByteRange::Partial {
                start: size - n.min(size),
                end: size - 1,
            },
            None => ByteRange::Full,
        },
        // `a-` or `a-b`.
        (false, open) => {
            let Some(start) = number(first) else {
                return ByteRange::Full;
            };
            let end = if open {
                u64::MAX
            } else {
                match number(last) {
                    Some(end) if end >= start => end,
                    _ => return ByteRange::Full,
                }
            };
            if start >= size {
                ByteRange::Unsatisfiable
            } else {
                ByteRange::Partial {
                    start,
                    end: end.min(size - 1),
                }
            }
        }
        (true, true) => ByteRange::Full,
    }
}

/// Step 0, before any lookup: the method and the host. `Ok` is the host's label (the
/// key of its route: `slug` or `slug-shortid`).
pub fn decide_host(method: &str, host: &str, domain: &str) -> Result<String, Decision> {
    if method != "GET" && method != "HEAD" {
        return Err(Decision::plain(405, messages::METHOD));
    }
    match parse_host(host, domain) {
        Some(HostTarget::Production { slug }) => Ok(slug),
        Some(HostTarget::Deployment { slug, short_id }) => Ok(format!("{slug}-{short_id}")),
        None => Err(Decision::plain(404, messages::NO_SITE)),
    }
}

/// The last step, once the host's deployment and its manifest are known: which file,
/// which status, which headers.
pub fn decide(
    method: &str,
    target: &str,
    if_none_match_header: Option<&str>,
    deployment_id: &str,
    manifest: &Manifest,
    options: &RouteOptions,
) -> Decision {
    let Ok(path) = normalize_path(target) else {
        return Decision::plain(400, messages::MALFORMED);
    };
    let (entry, status) = match resolve(manifest, &path, options) {
        Resolved::File { entry, status, .. } => (entry, status),
        Resolved::NotFound => return Decision::plain(404, messages::NOT_FOUND),
    };
    let tag = etag(entry);
    let headers = vec![
        ("content-type".to_string(), entry.content_type.clone()),
        ("cache-control".to_string(), entry.cache_control.clone()),
        ("etag".to_string(), tag.clone()),
        ("x-content-type-options".to_string(), "nosniff".to_string()),
        (
            "x-deploysphere-deployment".to_string(),
            deployment_id.to_string(),
        ),
    ];
    if status == 200 && if_none_match_header.is_some_and(|h| if_none_match(h, &tag)) {
        return Decision::NotModified { headers };
    }
    Decision::File {
        status,
        blob: entry.blob.clone(),
        size: entry.size,
        body: method != "HEAD",
        headers,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_ranges_follow_rfc_9110() {
        use ByteRange::*;
        let tag = "\"abc\"";
        let cases: &[(Option<&str>, Option<&str>, u64, ByteRange)] = &[
            (None, None, 100, Full),
            (Some("bytes=0-9"), None, 100, Partial { start: 0, end: 9 }),
            (Some("bytes=90-"), None, 100, Partial { start: 90, end: 99 }),
            (
                Some("bytes=90-500"),
                None,
                100,
                Partial { start: 90, end: 99 },
            ),
            (Some("bytes=-10"), None, 100, Partial { start: 90, end: 99 }),
            (Some("bytes=-500"), None, 100, Partial { start: 0, end: 99 }),
            (Some("bytes=100-"), None, 100, Unsatisfiable),
            (Some("bytes=-0"), None, 100, Unsatisfiable),
            (Some("bytes=0-0"), None, 0, Unsatisfiable),
            (Some("bytes=9-2"), None, 100, Full),
            (Some("bytes=0-1,5-6"), None, 100, Full),
            (Some("items=0-1"), None, 100, Full),
            (Some("bytes=x-1"), None, 100, Full),
            (
                Some("bytes=0-9"),
                Some("\"abc\""),
                100,
                Partial { start: 0, end: 9 },
            ),
            (Some("bytes=0-9"), Some("\"old\""), 100, Full),
        ];
        for (range, if_range, size, want) in cases {
            assert_eq!(
                byte_range(*range, *if_range, tag, *size),
                *want,
                "{range:?} {if_range:?} {size}"
            );
        }
    }

    fn entry(blob: &str) -> ManifestEntry {
        ManifestEntry {
            blob: blob.into(),
            size: 1,
            content_type: "text/html; charset=utf-8".into(),
            cache_control: "public, max-age=0, must-revalidate".into(),
        }
    }

    fn manifest(paths: &[&str]) -> Manifest {
        Manifest {
            deployment_id: "d".into(),
            files: paths.iter().map(|p| (p.to_string(), entry(p))).collect(),
        }
    }

    fn resolved_path(m: &Manifest, path: &str, options: &RouteOptions) -> Option<(String, u16)> {
        match resolve(m, path, options) {
            Resolved::File { path, status, .. } => Some((path, status)),
            Resolved::NotFound => None,
        }
    }

    #[test]
    fn hosts() {
        let prod = |s: &str| Some(HostTarget::Production { slug: s.into() });
        assert_eq!(parse_host("blog.localhost:8000", "localhost"), prod("blog"));
        assert_eq!(parse_host("BLOG.LocalHost", "localhost"), prod("blog"));
        assert_eq!(
            parse_host("my-blog.example.com.", "example.com"),
            prod("my-blog")
        );
        assert_eq!(
            parse_host("my-blog-0a1b2c3d.localhost:8000", "localhost"),
            Some(HostTarget::Deployment {
                slug: "my-blog".into(),
                short_id: "0a1b2c3d".into()
            })
        );
        assert_eq!(parse_host("localhost:8000", "localhost"), None);
        assert_eq!(parse_host("a.b.localhost", "localhost"), None);
        assert_eq!(parse_host("evil.com", "localhost"), None);
        assert_eq!(parse_host("xlocalhost", "localhost"), None);
        assert_eq!(parse_host("-x.localhost", "localhost"), None);
        assert_eq!(parse_host("a_b.localhost", "localhost"), None);
    }

    #[test]
    fn paths_never_leave_the_root() {
        assert_eq!(normalize_path("/").unwrap(), "/");
        assert_eq!(normalize_path("").unwrap(), "/");
        assert_eq!(normalize_path("/a/b?x=1#f").unwrap(), "/a/b");
        assert_eq!(normalize_path("/a//b/").unwrap(), "/a/b/");
        assert_eq!(normalize_path("/../../etc/passwd").unwrap(), "/etc/passwd");
        assert_eq!(
            normalize_path("/a/%2e%2e/%2E%2E/etc/passwd").unwrap(),
            "/etc/passwd"
        );
        assert_eq!(normalize_path("/a/%2F..%2F..%2Fb").unwrap(), "/b");
        assert_eq!(normalize_path("/a/..").unwrap(), "/");
        assert_eq!(
            normalize_path("/hello%20world.html").unwrap(),
            "/hello world.html"
        );
        assert_eq!(normalize_path("/%00"), Err(PathError::Malformed));
        assert_eq!(normalize_path("/%ff"), Err(PathError::Malformed));
        assert_eq!(normalize_path("/a\\..\\b"), Err(PathError::Malformed));
    }

    #[test]
    fn resolution_order() {
        let m = manifest(&[
            "/index.html",
            "/about.html",
            "/docs/index.html",
            "/app.js",
            "/404.html",
        ]);
        let none = RouteOptions::default();
        assert_eq!(
            resolved_path(&m, "/", &none),
            Some(("/index.html".into(), 200))
        );
        assert_eq!(
            resolved_path(&m, "/app.js", &none),
            Some(("/app.js".into(), 200))
        );
        assert_eq!(
            resolved_path(&m, "/about", &none),
            Some(("/about.html".into(), 200))
        );
        assert_eq!(
            resolved_path(&m, "/docs", &none),
            Some(("/docs/index.html".into(), 200))
        );
        assert_eq!(
            resolved_path(&m, "/docs/", &none),
            Some(("/docs/index.html".into(), 200))
        );
        assert_eq!(
            resolved_path(&m, "/nope", &none),
            Some(("/404.html".into(), 404))
        );
        assert_eq!(
            resolved_path(&m, "/about.html/", &none),
            Some(("/404.html".into(), 404))
        );
    }

    #[test]
    fn spa_fallback_and_plain_404() {
        let m = manifest(&["/index.html", "/app.js"]);
        assert_eq!(
            resolved_path(&m, "/users/7", &RouteOptions::default()),
            None
        );
        let spa = RouteOptions { spa_fallback: true };
        assert_eq!(
            resolved_path(&m, "/users/7", &spa),
            Some(("/index.html".into(), 200))
        );
    }

    #[test]
    fn etags() {
        let e = entry("abc");
        assert_eq!(etag(&e), "\"abc\"");
        assert!(if_none_match("\"abc\"", &etag(&e)));
        assert!(if_none_match("\"x\", W/\"abc\"", &etag(&e)));
        assert!(if_none_match("*", &etag(&e)));
        assert!(!if_none_match("\"abd\"", &etag(&e)));
    }
}
