//! Which Node.js a build asks for, and which of the installed ones fits.
//!
//! A project names its Node.js in one of three places. They are read in this order, the
//! first one that names a version wins:
//!
//! 1. `.nvmrc`, then 2. `.node-version`: Netlify's order (its build image reads `.nvmrc`
//!    first, `.node-version` only when there is no `.nvmrc`; a file wins over the
//!    `NODE_VERSION` variable and the UI setting).
//! 3. `engines.node` in `package.json`: what Vercel reads (it never reads `.nvmrc`); it
//!    comes last because a file written for nvm names the version developers actually run,
//!    while `engines.node` is often a floor written for the package's consumers.
//!
//! Ranges follow npm's semver (node-semver): `20`, `20.x`, `>=18 <21`, `^20.11`,
//! `~22.3.0`, `18 || 20`, `20.10.0 - 22`, `*`, `>= 20`, `=20.1.0`, `v20`. Only release
//! versions are ever matched (Node.js ships no prerelease on this platform), so a
//! prerelease tag in a range only moves its bound to the release: `>=20.0.0-rc.1` is
//! `>=20.0.0`, `<21.0.0-0` is `<21.0.0`, and `=20.0.0-rc.1` matches nothing. Build
//! metadata (`+sha`) is ignored, as semver says.
//!
//! Pure: the caller reads the files; nothing here touches the file system.

use std::fmt;
use std::str::FromStr;

use crate::error::Fault;

/// Where [`NodeRequirement::source`] says a requirement came from.
pub const SOURCE_NVMRC: &str = ".nvmrc";
/// See [`SOURCE_NVMRC`].
pub const SOURCE_NODE_VERSION: &str = ".node-version";
/// See [`SOURCE_NVMRC`].
pub const SOURCE_ENGINES: &str = "engines.node in package.json";

/// The Node.js a project asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRequirement {
    /// An npm semver range, ready for [`satisfies`] and [`pick`]: nvm aliases in the
    /// version files are already translated (`lts/iron` is `20.x`, `lts/*` and `node`
    /// are `*`), a leading `v` is stripped.
    pub range: String,
    /// `.nvmrc`, `.node-version` or `engines.node in package.json`.
    pub source: &'static str,
}

/// The requirement the project states, if any: `.nvmrc`, then `.node-version`, then
/// `engines.node` (see the module doc for why). A file with no version in it (empty,
/// only comments) does not count, and the next place is read.
pub fn node_requirement(
    package_json: Option<&serde_json::Value>,
    nvmrc: Option<&str>,
    node_version_file: Option<&str>,
) -> Option<NodeRequirement> {
    let from_file = |text: Option<&str>, source| {
        version_file(text?).map(|range| NodeRequirement { range, source })
    };
    from_file(nvmrc, SOURCE_NVMRC)
        .or_else(|| from_file(node_version_file, SOURCE_NODE_VERSION))
        .or_else(|| {
            let range = match package_json?.get("engines")?.get("node")? {
                serde_json::Value::String(range) => range.trim().to_string(),
                serde_json::Value::Number(number) => number.to_string(),
                _ => return None,
            };
            (!range.is_empty()).then_some(NodeRequirement {
                range,
                source: SOURCE_ENGINES,
            })
        })
}

/// The version an `.nvmrc` or `.node-version` names, as a range. nvm's format: `#`
/// starts a comment, blank lines are ignored, the version is the one line that is not
/// a `key=value` pair (or the `node=` pair).
fn version_file(text: &str) -> Option<String> {
    let lines: Vec<&str> = text
        .lines()
        .map(|line| {
            let line = line.split('#').next().unwrap_or_default();
            line.trim_matches(|c: char| c.is_whitespace() || c == '\u{feff}')
        })
        .filter(|line| !line.is_empty())
        .collect();
    let bare = lines.iter().find(|line| !line.contains('='));
    let version = bare.copied().or_else(|| {
        lines.iter().find_map(|line| {
            let (key, value) = line.split_once('=')?;
            (key.trim() == "node").then(|| value.trim())
        })
    })?;
    let version = version.strip_prefix('v').unwrap_or(version);
    (!version.is_empty()).then(|| nvm_alias(version).unwrap_or(version).to_string())
}

/// nvm's names for a release line, as a range. The platform ships only LTS lines, so
/// "the newest LTS" and "the newest" are both the newest installed: `*`.
fn nvm_alias(name: &str) -> Option<&'static str> {
    let name = name.to_ascii_lowercase();
    Some(match name.as_str() {
        "node" | "latest" | "current" | "stable" | "system" | "lts/*" => "*",
        _ => {
            let codename = name.strip_prefix("lts/")?;
            let &(_, range) = LTS_LINES.iter().find(|(known, _)| *known == codename)?;
            range
        }
    })
}

/// Node.js LTS codenames (nodejs/Release), newest last.
const LTS_LINES: &[(&str, &str)] = &[
    ("argon", "4.x"),
    ("boron", "6.x"),
    ("carbon", "8.x"),
    ("dubnium", "10.x"),
    ("erbium", "12.x"),
    ("fermium", "14.x"),
    ("gallium", "16.x"),
    ("hydrogen", "18.x"),
    ("iron", "20.x"),
    ("jod", "22.x"),
    ("krypton", "24.x"),
    ("lithium", "26.x"),
];

/// A Node.js release: `20.20.2`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeVersion {
    pub major: u64,
    pub minor: u64,
    pub patch: u64,
}

impl NodeVersion {
    pub const fn new(major: u64, minor: u64, patch: u64) -> Self {
        Self {
            major,
            minor,
            patch,
        }
    }

    /// Reads `v20.20.2` or `20.20.2` (what `node --version` prints, surrounding space
    /// allowed). A prerelease or build suffix (`-nightly…`, `+sha`) is dropped.
    pub fn parse(text: &str) -> Result<Self, VersionError> {
        let trimmed = text.trim();
        let bare = trimmed.strip_prefix('v').unwrap_or(trimmed);
        let main = bare.split(['-', '+']).next().unwrap_or_default();
        let mut parts = main.split('.').map(|part| {
            Some(part)
                .filter(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|part| part.parse::<u64>().ok())
        });
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some(Some(major)), Some(Some(minor)), Some(Some(patch)), None) => {
                Ok(Self::new(major, minor, patch))
            }
            _ => Err(VersionError {
                text: trimmed.to_string(),
            }),
        }
    }
}

impl FromStr for NodeVersion {
    type Err = VersionError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse(text)
    }
}

impl fmt::Display for NodeVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// Text that is not a Node.js version like `20.20.2` (kept without surrounding space).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("\"{text}\" is not a Node.js version like 20.20.2")]
pub struct VersionError {
    pub text: String,
}

/// A version range that is not understood: which part, and why. It is the user's
/// input, so retrying cannot help.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("\"{part}\" in the range \"{range}\" is not understood: {reason}")]
pub struct RangeError {
    /// The whole range as given.
    pub range: String,
    /// The piece that could not be read.
    pub part: String,
    pub reason: String,
}

impl RangeError {
    /// Always the user's: the range comes from their repository.
    pub const fn fault(&self) -> Fault {
        Fault::User
    }
}

/// Whether `version` is in `range` (npm semver semantics, see the module doc).
pub fn satisfies(range: &str, version: &NodeVersion) -> Result<bool, RangeError> {
    Ok(Range::parse(range)?.matches(version))
}

/// The newest of `available` that is in `range`; `None` when none is.
pub fn pick(range: &str, available: &[NodeVersion]) -> Result<Option<NodeVersion>, RangeError> {
    let range = Range::parse(range)?;
    Ok(available
        .iter()
        .filter(|version| range.matches(version))
        .max()
        .copied())
}

/// Whether any release of the `major` line satisfies `range`, the way Vercel matches
/// an `engines.node` range to the one Node.js it ships per major: `20.11.1`, `^20.5`
/// and `>=18` allow line 20; `>=21` and `22` do not.
pub fn allows_major(range: &str, major: u64) -> Result<bool, RangeError> {
    let line = (
        NodeVersion::new(major, 0, 0),
        major
            .checked_add(1)
            .map_or(NodeVersion::new(u64::MAX, u64::MAX, u64::MAX), |next| {
                NodeVersion::new(next, 0, 0)
            }),
    );
    Ok(Range::parse(range)?.alternatives.iter().any(|set| {
        let (low, high) = interval(set);
        low.max(line.0) < high.min(line.1)
    }))
}

/// The releases a set of bounds allows, as `[low, high)`; empty when `low >= high`.
fn interval(set: &[Bound]) -> (NodeVersion, NodeVersion) {
    let next = |v: NodeVersion| NodeVersion::new(v.major, v.minor, v.patch.saturating_add(1));
    let mut low = NodeVersion::new(0, 0, 0);
    let mut high = NodeVersion::new(u64::MAX, u64::MAX, u64::MAX);
    for bound in set {
        let (at_least, below) = match *bound {
            Bound::Ge(v) => (Some(v), None),
            Bound::Gt(v) => (Some(next(v)), None),
            Bound::Le(v) => (None, Some(next(v))),
            Bound::Lt(v) => (None, Some(v)),
            Bound::Eq(v) => (Some(v), Some(next(v))),
            Bound::Never => (None, Some(NodeVersion::new(0, 0, 0))),
        };
        low = at_least.map_or(low, |v| low.max(v));
        high = below.map_or(high, |v| high.min(v));
    }
    (low, high)
}

/// One bound on a release version. A range is alternatives (`||`) of sets of bounds
/// that must all hold; an empty set matches everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bound {
    Ge(NodeVersion),
    Gt(NodeVersion),
    Le(NodeVersion),
    Lt(NodeVersion),
    Eq(NodeVersion),
    Never,
}

impl Bound {
    fn holds(self, version: &NodeVersion) -> bool {
        match self {
            Self::Ge(bound) => *version >= bound,
            Self::Gt(bound) => *version > bound,
            Self::Le(bound) => *version <= bound,
            Self::Lt(bound) => *version < bound,
            Self::Eq(bound) => *version == bound,
            Self::Never => false,
        }
    }
}

#[derive(Debug)]
struct Range {
    alternatives: Vec<Vec<Bound>>,
}

impl Range {
    fn parse(range: &str) -> Result<Self, RangeError> {
        let error = |part: &str, reason: &str| RangeError {
            range: range.to_string(),
            part: part.to_string(),
            reason: reason.to_string(),
        };
        let alternatives = range
            .split("||")
            .map(|alternative| {
                parse_set(alternative).map_err(|(part, reason)| error(part, &reason))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { alternatives })
    }

    fn matches(&self, version: &NodeVersion) -> bool {
        self.alternatives
            .iter()
            .any(|set| set.iter().all(|bound| bound.holds(version)))
    }
}

type PartError<'a> = (&'a str, String);

const OPERATORS: &[&str] = &["<=", ">=", "~>", "<", ">", "=", "~", "^"];

/// One alternative: space-separated comparators, or `A - B`. An operator may stand
/// apart from its version (`>= 20`), as node-semver allows.
fn parse_set(set: &str) -> Result<Vec<Bound>, PartError<'_>> {
    let mut words: Vec<(usize, usize)> = Vec::new();
    let mut start = None;
    for (at, c) in set.char_indices() {
        match (c.is_whitespace(), start) {
            (true, Some(from)) => {
                words.push((from, at));
                start = None;
            }
            (false, None) => start = Some(at),
            _ => {}
        }
    }
    if let Some(from) = start {
        words.push((from, set.len()));
    }
    let mut tokens: Vec<&str> = Vec::new();
    let mut pending: Option<usize> = None;
    for (from, to) in words {
        match pending.take() {
            // The operator and its version, with the space between, as one token.
            Some(operator_at) => tokens.push(&set[operator_at..to]),
            None if OPERATORS.contains(&&set[from..to]) => pending = Some(from),
            None => tokens.push(&set[from..to]),
        }
    }
    if let Some(operator_at) = pending {
        return Err((
            set[operator_at..].trim_end(),
            "an operator needs a version after it".into(),
        ));
    }

    let mut bounds = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        let token = tokens[i];
        if token == "-" {
            return Err((token, "a hyphen range needs a version on each side".into()));
        }
        if tokens.get(i + 1) == Some(&"-") {
            let Some(&upper) = tokens.get(i + 2) else {
                return Err((
                    tokens[i + 1],
                    "a hyphen range needs a version on each side".into(),
                ));
            };
            bounds.extend(hyphen(token, upper)?);
            i += 3;
        } else {
            bounds.extend(comparator(token)?);
            i += 1;
        }
    }
    Ok(bounds)
}

/// A version with parts possibly left out or wildcards (`20`, `20.x`, `*`).
#[derive(Debug, Clone, Copy)]
struct Partial {
    major: Option<u64>,
    minor: Option<u64>,
    patch: Option<u64>,
    prerelease: bool,
}

impl Partial {
    fn parse(text: &str) -> Result<Self, PartError<'_>> {
        let err = |reason: &str| Err((text, reason.to_string()));
        let bare = text.trim_start_matches(['v', '=']);
        if bare.is_empty() {
            return err("expected a version like 20, 20.x or 18.17.0");
        }
        if bare.to_ascii_lowercase().starts_with("lts/") {
            let known: Vec<String> = LTS_LINES
                .iter()
                .map(|(name, _)| format!("lts/{name}"))
                .collect();
            return err(&format!(
                "an nvm alias is not a semver range (an .nvmrc may use lts/* or one of {})",
                known.join(", ")
            ));
        }
        let without_build = bare.split('+').next().unwrap_or_default();
        let (main, prerelease) = match without_build.split_once('-') {
            Some((main, tag)) => {
                let valid = !tag.is_empty()
                    && tag.split('.').all(|id| {
                        !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    });
                if !valid {
                    return err("a prerelease tag is letters, digits and dots, like 20.0.0-rc.1");
                }
                (main, true)
            }
            None => (without_build, false),
        };
        let parts: Vec<&str> = main.split('.').collect();
        if parts.len() > 3 {
            return err("a version has at most three parts, like 20.11.1");
        }
        let mut numbers = [None; 3];
        let mut wildcard = false;
        for (slot, part) in numbers.iter_mut().zip(&parts) {
            if matches!(*part, "x" | "X" | "*") {
                wildcard = true;
            } else if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return err("expected a version like 20, 20.x or 18.17.0");
            } else if wildcard {
                return err("a number cannot follow a wildcard (write 1.x, not 1.x.3)");
            } else {
                *slot = Some(
                    part.parse::<u64>()
                        .map_err(|_| (text, "a version number is too large".to_string()))?,
                );
            }
        }
        let [major, minor, patch] = numbers;
        if prerelease && parts.len() < 3 {
            return err("a prerelease tag needs a full version, like 20.0.0-rc.1");
        }
        Ok(Self {
            major,
            minor,
            patch,
            prerelease,
        })
    }

    /// The lowest release in this partial: missing parts are 0.
    fn floor(self, major: u64) -> NodeVersion {
        NodeVersion::new(major, self.minor.unwrap_or(0), self.patch.unwrap_or(0))
    }
}

fn too_large(text: &str) -> PartError<'_> {
    (text, "a version number is too large".to_string())
}

/// The first release above every version the partial names (`20` → `21.0.0`,
/// `20.11` → `20.12.0`), for a partial with the major given.
fn next_after(text: &str, partial: Partial, major: u64) -> Result<NodeVersion, PartError<'_>> {
    match partial.minor {
        None => major
            .checked_add(1)
            .map(|next| NodeVersion::new(next, 0, 0))
            .ok_or_else(|| too_large(text)),
        Some(minor) => minor
            .checked_add(1)
            .map(|next| NodeVersion::new(major, next, 0))
            .ok_or_else(|| too_large(text)),
    }
}

fn comparator(token: &str) -> Result<Vec<Bound>, PartError<'_>> {
    let operator = OPERATORS
        .iter()
        .find(|operator| token.starts_with(**operator))
        .copied()
        .unwrap_or("");
    let text = token[operator.len()..].trim_start();
    if text.starts_with(['<', '>', '~', '^']) {
        return Err((
            token,
            "one operator per version, like >=18 or ^20.11".into(),
        ));
    }
    let partial = Partial::parse(text)?;
    match operator {
        "~" | "~>" => tilde(text, partial),
        "^" => caret(text, partial),
        _ => primitive(text, operator, partial),
    }
}

/// `<`, `<=`, `>`, `>=`, `=` or none, on a full or partial version.
fn primitive<'a>(
    text: &'a str,
    operator: &str,
    partial: Partial,
) -> Result<Vec<Bound>, PartError<'a>> {
    let Some(major) = partial.major else {
        // `*`, `>=*`, `<=*` are anything; `<*` and `>*` are nothing.
        return Ok(if matches!(operator, "<" | ">") {
            vec![Bound::Never]
        } else {
            Vec::new()
        });
    };
    if let (Some(minor), Some(patch)) = (partial.minor, partial.patch) {
        let version = NodeVersion::new(major, minor, patch);
        // A release is above `T-pre` exactly when it is at least `T`, below it exactly
        // when it is below `T`, and never equal to it.
        return Ok(vec![match (operator, partial.prerelease) {
            (">=", _) | (">", true) => Bound::Ge(version),
            (">", false) => Bound::Gt(version),
            ("<", _) | ("<=", true) => Bound::Lt(version),
            ("<=", false) => Bound::Le(version),
            (_, true) => Bound::Never,
            (_, false) => Bound::Eq(version),
        }]);
    }
    let floor = partial.floor(major);
    Ok(match operator {
        ">" => vec![Bound::Ge(next_after(text, partial, major)?)],
        ">=" => vec![Bound::Ge(floor)],
        "<" => vec![Bound::Lt(floor)],
        "<=" => vec![Bound::Lt(next_after(text, partial, major)?)],
        _ => vec![
            Bound::Ge(floor),
            Bound::Lt(next_after(text, partial, major)?),
        ],
    })
}

/// `~1.2.3` is `>=1.2.3 <1.3.0`; `~1.2` is `1.2.x`; `~1` is `1.x`.
fn tilde(text: &str, partial: Partial) -> Result<Vec<Bound>, PartError<'_>> {
    let Some(major) = partial.major else {
        return Ok(Vec::new());
    };
    let upper = match partial.minor {
        None => next_after(text, partial, major)?,
        Some(minor) => NodeVersion::new(
            major,
            minor.checked_add(1).ok_or_else(|| too_large(text))?,
            0,
        ),
    };
    Ok(vec![Bound::Ge(partial.floor(major)), Bound::Lt(upper)])
}

/// `^` allows changes that keep the leftmost non-zero part: `^20.11` is
/// `>=20.11.0 <21.0.0`, `^0.2.3` is `>=0.2.3 <0.3.0`, `^0.0.3` is `0.0.3` only.
fn caret(text: &str, partial: Partial) -> Result<Vec<Bound>, PartError<'_>> {
    let Some(major) = partial.major else {
        return Ok(Vec::new());
    };
    let bump = |n: u64| n.checked_add(1).ok_or_else(|| too_large(text));
    let upper = match (major, partial.minor, partial.patch) {
        (_, None, _) => NodeVersion::new(bump(major)?, 0, 0),
        (0, Some(minor), None) => NodeVersion::new(0, bump(minor)?, 0),
        (0, Some(0), Some(patch)) => NodeVersion::new(0, 0, bump(patch)?),
        (0, Some(minor), Some(_)) => NodeVersion::new(0, bump(minor)?, 0),
        (_, Some(_), _) => NodeVersion::new(bump(major)?, 0, 0),
    };
    Ok(vec![Bound::Ge(partial.floor(major)), Bound::Lt(upper)])
}

/// `A - B`: at least A (missing parts 0), at most B (a partial B covers all it names).
fn hyphen<'a>(lower: &'a str, upper: &'a str) -> Result<Vec<Bound>, PartError<'a>> {
    for side in [lower, upper] {
        if side.starts_with(['<', '>', '~', '^']) {
            return Err((
                side,
                "a hyphen range takes plain versions, like 20.10.0 - 22".into(),
            ));
        }
    }
    let low = Partial::parse(lower)?;
    let high = Partial::parse(upper)?;
    let mut bounds = Vec::new();
    if let Some(major) = low.major {
        bounds.push(Bound::Ge(low.floor(major)));
    }
    if let Some(major) = high.major {
        bounds.push(match (high.minor, high.patch) {
            (Some(minor), Some(patch)) if !high.prerelease => {
                Bound::Le(NodeVersion::new(major, minor, patch))
            }
            (Some(minor), Some(patch)) => Bound::Lt(NodeVersion::new(major, minor, patch)),
            _ => Bound::Lt(next_after(upper, high, major)?),
        });
    }
    Ok(bounds)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn v(text: &str) -> NodeVersion {
        NodeVersion::parse(text).unwrap()
    }

    fn ok(range: &str, version: &str) -> bool {
        satisfies(range, &v(version)).unwrap_or_else(|e| panic!("{range}: {e}"))
    }

    /// Every version in `yes` satisfies `range`, none in `no` does.
    fn check(range: &str, yes: &[&str], no: &[&str]) {
        for version in yes {
            assert!(ok(range, version), "{version} should satisfy {range:?}");
        }
        for version in no {
            assert!(
                !ok(range, version),
                "{version} should not satisfy {range:?}"
            );
        }
    }

    fn platform() -> Vec<NodeVersion> {
        vec![v("20.20.2"), v("22.23.0"), v("24.17.0")]
    }

    fn picked(range: &str) -> Option<String> {
        pick(range, &platform()).unwrap().map(|v| v.to_string())
    }

    #[test]
    fn versions_parse_and_display() {
        assert_eq!(v("v20.20.2"), NodeVersion::new(20, 20, 2));
        assert_eq!(v("20.20.2"), NodeVersion::new(20, 20, 2));
        assert_eq!(v(" v22.12.0\n"), NodeVersion::new(22, 12, 0));
        assert_eq!(v("v23.0.0-nightly20240101abc"), NodeVersion::new(23, 0, 0));
        assert_eq!(v("24.1.0").to_string(), "24.1.0");
        assert_eq!(
            "v24.1.0".parse::<NodeVersion>(),
            Ok(NodeVersion::new(24, 1, 0))
        );
        for bad in [
            "", "v", "20", "20.1", "20.1.2.3", "20.x.1", "node 20", "20..1", "-1.0.0",
        ] {
            assert!(NodeVersion::parse(bad).is_err(), "{bad:?} should not parse");
        }
        assert_eq!(
            NodeVersion::parse("twenty").unwrap_err().to_string(),
            "\"twenty\" is not a Node.js version like 20.20.2"
        );
        assert!(v("20.9.0") < v("20.10.0"));
        assert!(v("9.99.99") < v("10.0.0"));
    }

    #[test]
    fn majors_and_x_ranges() {
        check(
            "20",
            &["20.0.0", "20.20.2"],
            &["19.9.9", "21.0.0", "22.1.0"],
        );
        check("20.x", &["20.0.0", "20.20.2"], &["21.0.0"]);
        check("20.X", &["20.1.0"], &["21.0.0"]);
        check("20.*", &["20.1.0"], &["21.0.0"]);
        check("20.x.x", &["20.1.0"], &["21.0.0"]);
        check("20.11", &["20.11.0", "20.11.9"], &["20.10.9", "20.12.0"]);
        check("20.11.x", &["20.11.0", "20.11.9"], &["20.12.0"]);
        check("*", &["0.0.0", "20.20.2", "26.0.0"], &[]);
        check("x", &["24.17.0"], &[]);
        check("", &["24.17.0"], &[]);
        check("  ", &["24.17.0"], &[]);
        check("v20", &["20.3.0"], &["22.0.0"]);
        check("=20.1.0", &["20.1.0"], &["20.1.1", "20.0.9"]);
        check("20.1.0", &["20.1.0"], &["20.1.1"]);
        check("v20.1.0", &["20.1.0"], &["20.1.1"]);
        check("=v20.1.0", &["20.1.0"], &["20.1.1"]);
        check("= 20.1.0", &["20.1.0"], &["20.1.1"]);
    }

    #[test]
    fn comparators() {
        check(">=18", &["18.0.0", "24.17.0"], &["17.9.9"]);
        check(">= 20", &["20.0.0", "22.1.0"], &["19.9.9"]);
        check(">=18 <21", &["18.0.0", "20.20.2"], &["21.0.0", "17.0.0"]);
        check(">= 18 < 21", &["20.20.2"], &["21.0.0"]);
        check(">18", &["19.0.0"], &["18.99.0"]);
        check(">18.2", &["18.3.0"], &["18.2.9"]);
        check(">18.2.1", &["18.2.2"], &["18.2.1"]);
        check("<20", &["19.9.9"], &["20.0.0"]);
        check("<20.5", &["20.4.9"], &["20.5.0"]);
        check("<=20", &["20.99.0"], &["21.0.0"]);
        check("<=20.5", &["20.5.9"], &["20.6.0"]);
        check("<=20.5.1", &["20.5.1"], &["20.5.2"]);
        check(">*", &[], &["20.0.0"]);
        check("<*", &[], &["20.0.0"]);
        check(">=*", &["20.0.0"], &[]);
        check(">=18.0.0 || >=20", &["18.0.0", "24.0.0"], &["16.0.0"]);
    }

    #[test]
    fn tilde_and_caret() {
        check("~22.3.0", &["22.3.0", "22.3.9"], &["22.4.0", "22.2.9"]);
        check("~22.3", &["22.3.0", "22.3.9"], &["22.4.0"]);
        check("~22", &["22.0.0", "22.23.0"], &["23.0.0"]);
        check("~>22.3.0", &["22.3.5"], &["22.4.0"]);
        check("~ 22.3", &["22.3.5"], &["22.4.0"]);
        check("~*", &["1.0.0"], &[]);
        check("^20.11", &["20.11.0", "20.20.2"], &["20.10.9", "21.0.0"]);
        check("^20.11.1", &["20.11.1", "20.99.0"], &["20.11.0", "21.0.0"]);
        check("^20", &["20.0.0"], &["21.0.0"]);
        check("^20.x", &["20.0.0"], &["21.0.0"]);
        check("^0.2.3", &["0.2.3", "0.2.9"], &["0.3.0"]);
        check("^0.0.3", &["0.0.3"], &["0.0.4", "0.0.2"]);
        check("^0.0", &["0.0.9"], &["0.1.0"]);
        check("^0", &["0.9.0"], &["1.0.0"]);
        check("^ 20", &["20.1.0"], &["21.0.0"]);
        check("^*", &["24.0.0"], &[]);
    }

    #[test]
    fn or_and_hyphen() {
        check(
            "18 || 20 || 22",
            &["18.1.0", "20.0.0", "22.23.0"],
            &["19.0.0", "21.0.0", "24.0.0"],
        );
        check("18||20", &["18.1.0", "20.0.0"], &["19.0.0"]);
        check(
            "20.10.0 - 22",
            &["20.10.0", "22.99.0"],
            &["20.9.9", "23.0.0"],
        );
        check("20 - 22.3", &["20.0.0", "22.3.9"], &["22.4.0"]);
        check("20.10.0 - 22.1.0", &["22.1.0"], &["22.1.1"]);
        check("* - 22", &["0.1.0", "22.5.0"], &["23.0.0"]);
        check("20 - *", &["20.0.0", "99.0.0"], &["19.0.0"]);
        check("20 - 22 || >=24", &["21.0.0", "25.0.0"], &["23.0.0"]);
        // node-semver reads an empty alternative as "anything".
        check("20 ||", &["20.0.0", "24.0.0"], &[]);
    }

    #[test]
    fn prerelease_tags_move_bounds_to_the_release() {
        check(">=20.0.0-rc.1", &["20.0.0"], &["19.9.9"]);
        check(">20.0.0-rc.1", &["20.0.0"], &["19.9.9"]);
        check("<21.0.0-0", &["20.99.0"], &["21.0.0"]);
        check("<=21.0.0-rc", &["20.99.0"], &["21.0.0"]);
        check("=20.0.0-rc.1", &[], &["20.0.0"]);
        check("^20.0.0-beta", &["20.0.0", "20.5.0"], &["21.0.0"]);
        check("~20.1.0-beta.2", &["20.1.0"], &["20.2.0"]);
        check("20.0.0-rc - 21.0.0-rc", &["20.0.0", "20.99.0"], &["21.0.0"]);
        check(">=20.1.0+build.5", &["20.1.0"], &["20.0.9"]);
        check("20.1.x-rc", &["20.1.0", "20.1.5"], &["20.2.0"]);
        check("20+build", &["20.1.0"], &["21.0.0"]);
    }

    #[test]
    fn real_world_ranges() {
        // Next.js 14
        check(
            ">=18.17.0",
            &["18.17.0", "20.20.2", "24.17.0"],
            &["18.16.1", "16.20.0"],
        );
        // Vite 5
        check(
            "^18.0.0 || >=20.0.0",
            &["18.0.0", "20.0.0", "24.17.0"],
            &["19.9.0", "16.0.0"],
        );
        // Vite 6/7
        check("^18.0.0 || ^20.0.0 || >=22.0.0", &["22.0.0"], &["21.7.0"]);
        check(
            "^20.19.0 || >=22.12.0",
            &["20.19.0", "22.12.0"],
            &["20.18.9", "21.0.0", "22.11.0"],
        );
        // Docusaurus 3
        check(">=18.0", &["18.0.0", "24.1.0"], &["17.9.9"]);
        // Astro 4
        check(
            "^18.17.1 || ^20.3.0 || >=21.0.0",
            &["18.17.1", "20.3.0", "21.0.0", "24.17.0"],
            &["18.17.0", "19.0.0", "20.2.9"],
        );
        // Angular 17
        check(
            "^18.13.0 || ^20.9.0",
            &["18.13.0", "20.9.0", "20.20.2"],
            &["20.8.9", "21.0.0", "22.0.0"],
        );
        // Angular 19
        check(
            "^18.19.1 || ^20.11.1 || >=22.0.0",
            &["22.23.0"],
            &["21.0.0"],
        );
        // Gatsby 5, Nuxt 3, create-t3-app, Remix
        check(">=18.0.0", &["20.0.0"], &["16.0.0"]);
        check("^14.18.0 || >=16.10.0", &["16.10.0", "24.0.0"], &["15.0.0"]);
        check(">=18.18.0", &["18.18.0"], &["18.17.9"]);
        check(">=16.0.0 <=22", &["22.23.0"], &["23.0.0"]);
        check("20.x || 22.x", &["22.1.0"], &["24.0.0"]);
        check(">16.14.0 <17", &["16.14.1"], &["17.0.0", "16.14.0"]);
    }

    #[test]
    fn pick_takes_the_newest_that_fits() {
        assert_eq!(picked("*").as_deref(), Some("24.17.0"));
        assert_eq!(picked(">=18.17.0").as_deref(), Some("24.17.0"));
        assert_eq!(picked("20").as_deref(), Some("20.20.2"));
        assert_eq!(picked("^18.13.0 || ^20.9.0").as_deref(), Some("20.20.2"));
        assert_eq!(picked("20.x || 22.x").as_deref(), Some("22.23.0"));
        assert_eq!(picked(">=18 <23").as_deref(), Some("22.23.0"));
        assert_eq!(picked("22.12.0"), None);
        assert_eq!(picked(">=26"), None);
        assert_eq!(picked("18"), None);
        assert_eq!(pick("*", &[]).unwrap(), None);
        assert!(pick(">=20 <", &platform()).is_err());
    }

    #[test]
    fn major_lines_a_range_allows() {
        let lines = |range: &str| -> Vec<u64> {
            [18, 20, 22, 24, 26]
                .into_iter()
                .filter(|major| allows_major(range, *major).unwrap())
                .collect()
        };
        assert_eq!(lines("20.11.1"), [20]);
        assert_eq!(lines("^20.5"), [20]);
        assert_eq!(lines("~22.3.0"), [22]);
        assert_eq!(lines(">=18"), [18, 20, 22, 24, 26]);
        assert_eq!(lines(">=21"), [22, 24, 26]);
        assert_eq!(lines(">20.99.99 <22"), [20]);
        assert_eq!(lines(">=20.0.0 <20.0.0"), Vec::<u64>::new());
        assert_eq!(lines("<20.0.0"), [18]);
        assert_eq!(lines("<=20.0.0"), [18, 20]);
        assert_eq!(lines("=20.0.0-rc.1"), Vec::<u64>::new());
        assert_eq!(lines("^18.13.0 || ^20.9.0"), [18, 20]);
        assert_eq!(lines("20 - 22.1"), [20, 22]);
        assert_eq!(lines("*"), [18, 20, 22, 24, 26]);
        assert_eq!(lines(">=26"), [26]);
        assert!(allows_major("nope", 20).is_err());
        assert!(allows_major("*", u64::MAX).unwrap());
    }

    #[test]
    fn malformed_ranges_say_which_part() {
        let error = |range: &str| satisfies(range, &v("20.0.0")).unwrap_err();
        let cases = [
            (">=18 <", "<", "an operator needs a version after it"),
            (
                "latest",
                "latest",
                "expected a version like 20, 20.x or 18.17.0",
            ),
            ("node 20", "node", "expected a version"),
            (">=18 || banana", "banana", "expected a version"),
            ("20.", "20.", "expected a version"),
            ("1..2", "1..2", "expected a version"),
            ("1.2.3.4", "1.2.3.4", "at most three parts"),
            ("1.x.3", "1.x.3", "cannot follow a wildcard"),
            ("=>20", "=>20", "one operator per version"),
            (">>20", ">>20", "one operator per version"),
            ("20 -", "-", "a hyphen range needs a version on each side"),
            ("- 22", "-", "a hyphen range needs a version on each side"),
            (">=20 - 22", ">=20", "plain versions"),
            ("20-rc", "20-rc", "needs a full version"),
            ("20.0.0-", "20.0.0-", "prerelease tag"),
            ("99999999999999999999", "99999999999999999999", "too large"),
            ("^18446744073709551615", "18446744073709551615", "too large"),
            ("lts/iron", "lts/iron", "an nvm alias is not a semver range"),
            (">=20 <=>22", "<=>22", "one operator per version"),
        ];
        for (range, part, reason) in cases {
            let e = error(range);
            assert_eq!(e.range, range);
            assert_eq!(e.part, part, "{range:?}");
            assert!(e.reason.contains(reason), "{range:?}: {}", e.reason);
            assert_eq!(e.fault(), Fault::User);
        }
        assert_eq!(
            error(">=18 <").to_string(),
            "\"<\" in the range \">=18 <\" is not understood: an operator needs a version after it"
        );
    }

    #[test]
    fn no_panic_on_odd_input() {
        for range in [
            "||",
            "| |",
            "-",
            "- -",
            "v",
            "=",
            "~",
            "^",
            ">=",
            "x.x.x.x",
            "vvv",
            "1.2.3-+",
            "🦀",
            "20 - 22 - 24",
            "\u{0}",
            "> = 20",
            "^-1",
            "20\t||\n22",
        ] {
            let _ = satisfies(range, &v("20.0.0"));
            let _ = pick(range, &platform());
        }
        assert!(ok("20\t||\n22", "22.0.0"));
    }

    #[test]
    fn requirement_precedence() {
        let package = json!({"engines": {"node": ">=20"}});
        let got = node_requirement(Some(&package), Some("22\n"), Some("24")).unwrap();
        assert_eq!((got.range.as_str(), got.source), ("22", ".nvmrc"));
        let got = node_requirement(Some(&package), None, Some("24")).unwrap();
        assert_eq!((got.range.as_str(), got.source), ("24", ".node-version"));
        let got = node_requirement(Some(&package), None, None).unwrap();
        assert_eq!(
            (got.range.as_str(), got.source),
            (">=20", "engines.node in package.json")
        );
        assert_eq!(node_requirement(None, None, None), None);
        assert_eq!(
            node_requirement(Some(&json!({"name": "site"})), None, None),
            None
        );
    }

    #[test]
    fn empty_files_fall_through() {
        let package = json!({"engines": {"node": " ^20.11 "}});
        let got =
            node_requirement(Some(&package), Some("\n# pinned by CI\n\n"), Some("  ")).unwrap();
        assert_eq!((got.range.as_str(), got.source), ("^20.11", SOURCE_ENGINES));
        let blank = json!({"engines": {"node": ""}});
        assert_eq!(node_requirement(Some(&blank), Some(""), None), None);
        let not_text = json!({"engines": {"node": ["20"]}});
        assert_eq!(node_requirement(Some(&not_text), None, None), None);
        let number = json!({"engines": {"node": 20}});
        assert_eq!(
            node_requirement(Some(&number), None, None).unwrap().range,
            "20"
        );
        let no_node = json!({"engines": {"npm": ">=10"}});
        assert_eq!(node_requirement(Some(&no_node), None, None), None);
    }

    #[test]
    fn version_files_like_nvm_reads_them() {
        let range = |text: &str| node_requirement(None, Some(text), None).map(|r| r.range);
        assert_eq!(range("v20.11.1\n").as_deref(), Some("20.11.1"));
        assert_eq!(range("  22  ").as_deref(), Some("22"));
        assert_eq!(range("\u{feff}22\r\n").as_deref(), Some("22"));
        assert_eq!(
            range("# the LTS we test on\n\n20 # iron\n").as_deref(),
            Some("20")
        );
        assert_eq!(range("lts/*").as_deref(), Some("*"));
        assert_eq!(range("lts/iron").as_deref(), Some("20.x"));
        assert_eq!(range("lts/jod").as_deref(), Some("22.x"));
        assert_eq!(range("lts/krypton\n").as_deref(), Some("24.x"));
        assert_eq!(range("lts/Hydrogen").as_deref(), Some("18.x"));
        assert_eq!(range("lts/lithium").as_deref(), Some("26.x"));
        for newest in ["node", "latest", "current", "stable"] {
            assert_eq!(range(newest).as_deref(), Some("*"), "{newest}");
        }
        assert_eq!(range("npm=10\n22\n").as_deref(), Some("22"));
        assert_eq!(range("node=20\nnpm=10").as_deref(), Some("20"));
        assert_eq!(range("# only comments"), None);
        // An unknown alias goes through as written, and reads as a malformed range.
        assert_eq!(range("lts/unobtainium").as_deref(), Some("lts/unobtainium"));
        let e = satisfies("lts/unobtainium", &v("20.0.0")).unwrap_err();
        assert!(e.reason.contains("lts/krypton"), "{}", e.reason);
        // .node-version reads the same way.
        let got = node_requirement(None, None, Some("v24.1.0\n")).unwrap();
        assert_eq!(
            (got.range.as_str(), got.source),
            ("24.1.0", ".node-version")
        );
    }

    #[test]
    fn every_requirement_range_is_understood() {
        for file in [
            "lts/*",
            "lts/iron",
            "lts/jod",
            "lts/krypton",
            "node",
            "v22",
            "22.12.0",
        ] {
            let requirement = node_requirement(None, Some(file), None).unwrap();
            assert!(pick(&requirement.range, &platform()).is_ok(), "{file}");
        }
        let lts = node_requirement(None, Some("lts/iron"), None).unwrap();
        assert_eq!(pick(&lts.range, &platform()).unwrap(), Some(v("20.20.2")));
    }
}
