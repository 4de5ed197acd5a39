//! Validation of user input. Each check names the field and says what is allowed.

use crate::error::InputError;

/// The most bytes a project's environment variables (names and values) may hold.
pub const MAX_ENV_BYTES: usize = 64 * 1024;

/// Longest slug; leaves room for `-<8 chars>` within a 63-byte DNS label.
pub const MAX_SLUG_LEN: usize = 48;

/// A DNS-safe slug from a project name: lowercase ASCII letters, digits and single
/// dashes. A name that ends like a deployment host (`-` + 8 hex characters) gets a
/// `-site` suffix so that `<slug>.<domain>` and `<slug>-<id>.<domain>` never collide.
pub fn slugify(name: &str) -> Result<String, InputError> {
    let mut slug = String::new();
    for c in name.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_alphanumeric() {
            slug.push(c);
        } else if !slug.is_empty() && !slug.ends_with('-') {
            slug.push('-');
        }
    }
    slug.truncate(MAX_SLUG_LEN);
    while slug.ends_with('-') {
        slug.pop();
    }
    if slug.is_empty() {
        return Err(InputError::new(
            "name",
            "must contain at least one ASCII letter or digit",
        ));
    }
    if looks_like_deployment_suffix(&slug) {
        slug.truncate(MAX_SLUG_LEN - 5);
        slug.push_str("-site");
    }
    Ok(slug)
}

/// True when `slug` ends in `-` followed by 8 hex characters.
pub fn looks_like_deployment_suffix(slug: &str) -> bool {
    let bytes = slug.as_bytes();
    bytes.len() > 9
        && bytes[bytes.len() - 9] == b'-'
        && bytes[bytes.len() - 8..].iter().all(u8::is_ascii_hexdigit)
}

pub fn project_name(name: &str) -> Result<(), InputError> {
    let trimmed = name.trim();
    if trimmed.is_empty() || trimmed.len() > 100 {
        return Err(InputError::new("name", "must be 1 to 100 characters"));
    }
    if trimmed.chars().any(char::is_control) {
        return Err(InputError::new(
            "name",
            "must not contain control characters",
        ));
    }
    Ok(())
}

/// Environment variable names: `[A-Za-z_][A-Za-z0-9_]*`, at most 256 bytes.
pub fn env_key(key: &str) -> Result<(), InputError> {
    let field = format!("env.{key}");
    let mut chars = key.chars();
    let valid_start = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if !valid_start || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_') || key.len() > 256 {
        return Err(InputError::new(
            field,
            "names must match [A-Za-z_][A-Za-z0-9_]* (at most 256 characters)",
        ));
    }
    Ok(())
}

pub fn env_value(key: &str, value: &str) -> Result<(), InputError> {
    if value.len() > 32 * 1024 || value.contains('\0') {
        return Err(InputError::new(
            format!("env.{key}"),
            "values must be at most 32 KiB and contain no NUL byte",
        ));
    }
    Ok(())
}

/// A secret's value must be long enough to mask: a short one would hide ordinary words
/// of the log and be guessed from what is left.
pub fn secret_value(key: &str, value: &str) -> Result<(), InputError> {
    let min = crate::logs::MIN_SECRET_LEN;
    // What the masker matches: the value without surrounding space, or, for a value of
    // several lines, one of its lines.
    let longest_line = value.lines().map(|l| l.trim().chars().count()).max();
    if value.trim().chars().count() < min || longest_line.unwrap_or(0) < min {
        return Err(InputError::new(
            format!("env.{key}"),
            format!(
                "secret values must be at least {min} characters (a shorter one would mask ordinary words in build logs)"
            ),
        ));
    }
    Ok(())
}

/// A folder inside the repository: relative, no `..`, no NUL.
pub fn relative_dir(field: &str, dir: &str) -> Result<(), InputError> {
    let bad = dir.is_empty()
        || dir.len() > 1024
        || dir.starts_with('/')
        || dir.contains('\0')
        || dir.contains('\\')
        || dir.split('/').any(|part| part == "..");
    if bad {
        return Err(InputError::new(
            field,
            "must be a relative folder inside the repository, without '..' (e.g. \"dist\" or \"apps/web\")",
        ));
    }
    Ok(())
}

pub fn command(field: &str, command: &str) -> Result<(), InputError> {
    if command.len() > 4096 || command.contains('\0') {
        return Err(InputError::new(
            field,
            "must be at most 4096 bytes without NUL",
        ));
    }
    Ok(())
}

/// A branch, tag or commit name as git accepts it, without options or odd characters.
pub fn git_ref(field: &str, name: &str) -> Result<(), InputError> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || "-_./+@".contains(c);
    let bad = name.is_empty()
        || name.len() > 255
        || name.starts_with('-')
        || name.starts_with('/')
        || name.ends_with('/')
        || name.ends_with(".lock")
        || name.contains("..")
        || name.contains("@{")
        || name.contains("//")
        || !name.chars().all(allowed);
    if bad {
        return Err(InputError::new(
            field,
            "must be a branch, tag or commit name (letters, digits and -_./+@; not starting with '-')",
        ));
    }
    Ok(())
}

/// Where a build's source comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GitSource {
    /// An https (or, locally, http) URL.
    Remote(String),
    /// A repository on this machine (local mode only), as a `file://` URL.
    Local(String),
}

impl GitSource {
    pub fn url(&self) -> &str {
        match self {
            Self::Remote(url) | Self::Local(url) => url,
        }
    }
}

/// Checks a git URL. `allow_local` (local mode) also accepts `http://`, absolute paths
/// and `file://` URLs; cloud mode accepts only `https://` to public hosts.
pub fn git_url(url: &str, allow_local: bool) -> Result<GitSource, InputError> {
    let field = "git_url";
    if url.is_empty() || url.len() > 2048 || url.chars().any(|c| c.is_control() || c == ' ') {
        return Err(InputError::new(
            field,
            "must be a non-empty URL without spaces or control characters",
        ));
    }
    if url.starts_with('-') {
        return Err(InputError::new(field, "must not start with '-'"));
    }
    if let Some(rest) = url
        .strip_prefix("https://")
        .or_else(|| allow_local.then(|| url.strip_prefix("http://")).flatten())
    {
        let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
        let host = split_authority(authority).0;
        if host.is_empty() || rest.len() == authority.len() {
            return Err(InputError::new(
                field,
                "must name a host and a repository path, e.g. https://github.com/owner/repo.git",
            ));
        }
        if !allow_local && is_private_host(host) {
            return Err(InputError::new(
                field,
                "must point to a public host (no loopback, link-local or private addresses)",
            ));
        }
        return Ok(GitSource::Remote(url.to_string()));
    }
    if allow_local {
        if let Some(path) = url.strip_prefix("file://") {
            if path.starts_with('/') {
                return Ok(GitSource::Local(url.to_string()));
            }
        } else if url.starts_with('/') {
            return Ok(GitSource::Local(format!("file://{url}")));
        }
        return Err(InputError::new(
            field,
            "must be an https:// or http:// URL, a file:// URL or an absolute path",
        ));
    }
    Err(InputError::new(
        field,
        "must be an https:// URL, e.g. https://github.com/owner/repo.git",
    ))
}

/// The host (without brackets) and the port, if given, of a URL's authority
/// (`user:pass@host:port`).
fn split_authority(authority: &str) -> (&str, Option<&str>) {
    let host_port = authority.rsplit('@').next().unwrap_or("");
    match host_port.strip_prefix('[') {
        Some(v6) => {
            let (host, after) = v6.split_once(']').unwrap_or((v6, ""));
            (host, after.strip_prefix(':'))
        }
        None => match host_port.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (host_port, None),
        },
    }
}

/// The host and port an `https://` or `http://` git URL connects to (443 or 80 when
/// the URL names none); `None` for any other URL.
pub fn remote_endpoint(url: &str) -> Option<(String, u16)> {
    let (rest, default_port) = match url.strip_prefix("https://") {
        Some(rest) => (rest, 443),
        None => (url.strip_prefix("http://")?, 80),
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let (host, port) = split_authority(authority);
    let port = match port {
        None | Some("") => default_port,
        Some(port) => port.parse().ok()?,
    };
    (!host.is_empty()).then(|| (host.trim_end_matches('.').to_ascii_lowercase(), port))
}

/// True when an `https://` or `http://` git URL names, as spelled, a host on this
/// machine or a private network (locally such URLs follow the local-paths rule).
pub fn names_private_host(url: &str) -> bool {
    remote_endpoint(url).is_some_and(|(host, _)| is_private_host(&host))
}

fn is_private_host(host: &str) -> bool {
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .trim_end_matches('.')
        .to_ascii_lowercase();
    if host == "localhost"
        || host.ends_with(".localhost")
        || host.ends_with(".internal")
        || host.ends_with(".local")
    {
        return true;
    }
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return is_private_ip(ip);
    }
    // The forms inet_aton and curl accept besides dotted decimal: `2852039166`,
    // `0177.0.0.1`, `0x7f.1`.
    if let Some(v4) = legacy_ipv4(&host) {
        return is_private_ip(v4.into());
    }
    // Wildcard DNS names that answer with the address they spell
    // (`169.254.169.254.nip.io`, `10-0-0-1.sslip.io`). Any other name is checked where
    // it resolves, by the builder.
    let labels: Vec<&str> = host.split('.').collect();
    let dotted = (labels.len() > 4).then(|| labels[..4].join("."));
    let dashed = labels.first().map(|first| first.replace('-', "."));
    [dotted, dashed]
        .into_iter()
        .flatten()
        .filter_map(|spelled| spelled.parse::<std::net::Ipv4Addr>().ok())
        .any(|v4| is_private_ip(v4.into()))
}

/// Loopback, private, link-local (cloud metadata), carrier-grade NAT, unspecified,
/// broadcast, benchmarking, multicast and reserved addresses.
pub fn is_private_ip(ip: std::net::IpAddr) -> bool {
    match ip {
        std::net::IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || a == 0
                || a >= 240
                || a == 100 && (64..128).contains(&b)
                || a == 198 && (18..20).contains(&b)
        }
        std::net::IpAddr::V6(v6) => {
            let s = v6.segments();
            let embedded = |high: u16, low: u16| {
                std::net::Ipv4Addr::new((high >> 8) as u8, high as u8, (low >> 8) as u8, low as u8)
            };
            // IPv6 forms that carry an IPv4 address a gateway may forward to: mapped
            // (::ffff:a.b.c.d), NAT64 (64:ff9b::/96, 64:ff9b:1::/48) and 6to4
            // (2002:aabb:ccdd::/48). IPv4-compatible (::a.b.c.d) is deprecated: refused.
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_private_ip(v4.into());
            }
            if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0] {
                return is_private_ip(embedded(s[6], s[7]).into());
            }
            if s[0] == 0x64 && s[1] == 0xff9b && s[2] == 1 {
                return true;
            }
            if s[0] == 0x2002 {
                return is_private_ip(embedded(s[1], s[2]).into());
            }
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || s[..6] == [0, 0, 0, 0, 0, 0]
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
                || (s[0] & 0xffc0) == 0xfec0
                || (s[0] == 0x2001 && s[1] == 0x0db8)
        }
    }
}

/// An IPv4 address in one of inet_aton's older spellings: one to four parts, each
/// decimal, octal (leading `0`) or hex (`0x`), the last filling the remaining bytes.
fn legacy_ipv4(host: &str) -> Option<std::net::Ipv4Addr> {
    let parts: Vec<&str> = host.split('.').collect();
    if parts.is_empty() || parts.len() > 4 {
        return None;
    }
    let mut values = Vec::with_capacity(parts.len());
    for part in &parts {
        let value = if let Some(hex) = part.strip_prefix("0x") {
            u32::from_str_radix(hex, 16).ok()?
        } else if part.len() > 1 && part.starts_with('0') {
            u32::from_str_radix(&part[1..], 8).ok()?
        } else if !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()) {
            part.parse().ok()?
        } else {
            return None;
        };
        values.push(value);
    }
    let (last, leading) = values.split_last()?;
    if leading.iter().any(|v| *v > 255) {
        return None;
    }
    let remaining_bits = 8 * (4 - leading.len() as u32);
    if remaining_bits < 32 && *last >= 1u32 << remaining_bits {
        return None;
    }
    let high = leading
        .iter()
        .enumerate()
        .fold(0u32, |n, (i, v)| n | (v << (24 - 8 * i)));
    Some(std::net::Ipv4Addr::from(high | last))
}

/// A URL fit for logs: `user:password@` is replaced by `***@`.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{}://***@{}", &url[..scheme_end], &rest[at + 1..]),
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_addresses_include_ipv6_forms_of_private_ipv4() {
        let private = [
            "127.0.0.1",
            "10.0.0.5",
            "169.254.169.254",
            "100.64.0.1",
            "::1",
            "fd00::1",
            "fe80::1",
            "fec0::1",
            "::ffff:127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b:1::1",
            "2002:7f00:1::1",
            "2002:a00:5::",
            "::7f00:1",
            "2001:db8::1",
        ];
        for ip in private {
            assert!(is_private_ip(ip.parse().unwrap()), "{ip} is private");
        }
        let public = [
            "140.82.112.3",
            "2606:4700::1111",
            "64:ff9b::8c52:7003",
            "2002:8c52:7003::1",
        ];
        for ip in public {
            assert!(!is_private_ip(ip.parse().unwrap()), "{ip} is public");
        }
    }

    #[test]
    fn remote_endpoints_name_the_host_and_port_git_connects_to() {
        let cases = [
            ("https://github.com/a/b.git", Some(("github.com", 443))),
            (
                "http://git.example.com:8080/a.git",
                Some(("git.example.com", 8080)),
            ),
            (
                "https://user:p%40ss@Host.Example./r",
                Some(("host.example", 443)),
            ),
            ("https://[::1]:8443/r.git", Some(("::1", 8443))),
            ("https://[2001:db8::1]/r.git", Some(("2001:db8::1", 443))),
            ("https://h:notaport/r.git", None),
            ("file:///srv/repo", None),
        ];
        for (url, want) in cases {
            let got = remote_endpoint(url);
            assert_eq!(got.as_ref().map(|(h, p)| (h.as_str(), *p)), want, "{url}");
        }
        assert!(names_private_host("http://127.0.0.1:3000/r.git"));
        assert!(names_private_host("http://gitea.local/r.git"));
        assert!(!names_private_host("https://github.com/a/b.git"));
    }

    #[test]
    fn slugs_are_dns_safe() {
        assert_eq!(slugify("My Site!").unwrap(), "my-site");
        assert_eq!(slugify("  --Ünïcode__Blog--").unwrap(), "n-code-blog");
        assert!(slugify("!!!").is_err());
        let long = slugify(&"a".repeat(200)).unwrap();
        assert_eq!(long.len(), MAX_SLUG_LEN);
    }

    #[test]
    fn slug_never_looks_like_a_deployment_host() {
        let slug = slugify("shop-deadbeef").unwrap();
        assert_eq!(slug, "shop-deadbeef-site");
        assert!(!looks_like_deployment_suffix(&slug));
    }

    #[test]
    fn git_urls_in_cloud_and_local_mode() {
        assert!(git_url("https://github.com/a/b.git", false).is_ok());
        assert!(git_url("http://github.com/a/b.git", false).is_err());
        assert!(git_url("file:///srv/repo", false).is_err());
        assert!(git_url("https://127.0.0.1/a.git", false).is_err());
        assert!(git_url("https://169.254.169.254/latest", false).is_err());
        assert!(git_url("https://10.1.2.3/a.git", false).is_err());
        assert!(git_url("https://[::ffff:169.254.169.254]/x", false).is_err());
        assert!(git_url("https://[::1]/x", false).is_err());
        assert!(git_url("https://github.com", false).is_err());
        // Addresses spelled the other ways resolvers and git's curl accept.
        for url in [
            "https://0177.0.0.1/x.git",
            "https://2852039166/x.git",
            "https://0x7f.1/x.git",
            "https://0xa9.0xfe.0xa9.0xfe/x.git",
            "https://127.1/x.git",
            "https://localhost./x.git",
            "https://169.254.169.254.nip.io/x.git",
            "https://10-0-0-1.sslip.io/x.git",
            "https://100.64.0.1/x.git",
            "https://[fe80::1]/x.git",
        ] {
            assert!(git_url(url, false).is_err(), "{url}");
        }
        for url in [
            "https://8.8.8.8/x.git",
            "https://134744072/x.git",
            "https://gitlab.com/a/b.git",
            "https://1.2.3.4.example.com/x.git",
        ] {
            assert!(git_url(url, false).is_ok(), "{url}");
        }
        assert!(git_url("--upload-pack=evil", true).is_err());
        assert!(git_url("ssh://git@host/a.git", true).is_err());
        assert_eq!(
            git_url("/srv/repo", true).unwrap(),
            GitSource::Local("file:///srv/repo".into())
        );
        assert_eq!(
            git_url("file:///srv/repo", true).unwrap().url(),
            "file:///srv/repo"
        );
    }

    #[test]
    fn credentials_never_reach_logs() {
        assert_eq!(
            redact_url("https://user:tok@github.com/a/b.git"),
            "https://***@github.com/a/b.git"
        );
        assert_eq!(
            redact_url("https://github.com/a/b@c.git"),
            "https://github.com/a/b@c.git"
        );
        assert_eq!(redact_url("file:///srv/repo"), "file:///srv/repo");
    }

    #[test]
    fn refs_and_dirs() {
        assert!(git_ref("ref", "main").is_ok());
        assert!(git_ref("ref", "feature/x-1").is_ok());
        assert!(git_ref("ref", "v1.2.3").is_ok());
        assert!(git_ref("ref", "--upload-pack=x").is_err());
        assert!(git_ref("ref", "a..b").is_err());
        assert!(git_ref("ref", "a b").is_err());
        assert!(relative_dir("output_dir", "dist").is_ok());
        assert!(relative_dir("output_dir", "apps/web/dist").is_ok());
        assert!(relative_dir("output_dir", "../etc").is_err());
        assert!(relative_dir("output_dir", "/etc").is_err());
    }

    #[test]
    fn env_keys() {
        assert!(env_key("API_URL").is_ok());
        assert!(env_key("_X1").is_ok());
        assert!(env_key("1X").is_err());
        assert!(env_key("A-B").is_err());
        assert!(env_key("").is_err());
    }
}
