//! Project config files: a repository's `vercel.json` or `netlify.toml` text in, a
//! [`ProjectConfig`] out. Parsing only: the caller reads the files, the builder applies
//! the build settings, and a later step applies the routing rules.
//!
//! How the caller uses it:
//! 1. Read `vercel.json` and `netlify.toml` from the project's `root_dir` when it sets one
//!    (vercel.json lives in Vercel's Root Directory; a netlify.toml may sit in the base
//!    folder of a monorepo), else, or when that folder has neither, the repository root.
//! 2. [`parse_project_config`] picks one file ([`which_config`] says which) and parses it.
//! 3. [`ProjectConfig::build_for_context`] with `"production"` gives the build settings,
//!    which `plan::resolve_plan` settles against the project's and detection's.
//!
//! Precedence here: the project's own [`BuildSettings`](crate::plan::BuildSettings) (set through the API, on purpose,
//! for this platform) override the file, which overrides detection. Netlify and Vercel
//! document the other order for their dashboards (the file wins); a DeploySphere project
//! setting is the more specific choice, and the build log names each setting's origin.
//!
//! Paths: netlify.toml's `publish` is relative to `base` when `base` is set and to the
//! repository root otherwise (Netlify's file-based configuration docs; @netlify/config
//! resolves it against the build directory), which is exactly our `output_dir` relative to
//! `root_dir`, so it is kept as written. (Netlify's older docs, and sites created before the
//! change, read publish from the repository root with base included; a publish that repeats
//! base gets a warning.) Netlify reads a leading `/` as the folder itself (`base = "/"` is
//! the repository root), so does this module; vercel.json's `outputDirectory` is relative
//! to the project's Root Directory and must not start with `/`. No path may climb out of
//! its folder with `..`.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::Fault;
use crate::validate;

/// Which config file a setting or rule came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConfigFile {
    #[serde(rename = "vercel.json")]
    VercelJson,
    #[serde(rename = "netlify.toml")]
    NetlifyToml,
}

impl ConfigFile {
    /// The file's name in the repository.
    pub fn name(self) -> &'static str {
        match self {
            Self::VercelJson => "vercel.json",
            Self::NetlifyToml => "netlify.toml",
        }
    }
}

impl fmt::Display for ConfigFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where a routing rule was written, shown as `netlify.toml:12`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleSource {
    pub file: ConfigFile,
    /// 1-based line of the rule (its `[[redirects]]` header or opening `{`).
    pub line: usize,
}

impl fmt::Display for RuleSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// A config file that cannot be used, said so that the user can fix it:
/// `netlify.toml:3: build.publish must be a string, found an integer`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConfigError {
    pub file: ConfigFile,
    /// 1-based line of the offending value, when known.
    pub line: Option<usize>,
    pub message: String,
}

impl ConfigError {
    /// Always the user's: the file in their repository has to change.
    pub fn fault(&self) -> Fault {
        Fault::User
    }

    /// Never: the same text fails the same way.
    pub fn retryable(&self) -> bool {
        false
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}: {}", self.file, self.message),
            None => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

/// Build settings a config file sets; `None` is "not set here", so that the project's
/// own settings or detection decide.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigBuild {
    /// netlify.toml `base`: the repository folder that holds the app, `.` for the root.
    /// vercel.json has no such field: Vercel's Root Directory is a dashboard setting, and
    /// vercel.json lives inside it.
    pub root_dir: Option<String>,
    /// vercel.json `installCommand`; netlify.toml has none (Netlify installs by itself).
    /// An empty command means "run none".
    pub install_command: Option<String>,
    /// vercel.json `buildCommand`, netlify.toml `command`. An empty command means "run none".
    pub build_command: Option<String>,
    /// vercel.json `outputDirectory`, netlify.toml `publish`: relative to `root_dir`,
    /// without leading `/`, trailing `/` or `.` parts; `.` is `root_dir` itself.
    pub output_dir: Option<String>,
    /// vercel.json `framework`: the Vercel slug as written (`nextjs`, `docusaurus-2`), or
    /// `other` where it says `null` (Vercel's "Other" preset: no framework).
    pub framework: Option<String>,
    /// vercel.json `ignoreCommand`, netlify.toml `ignore`: decides whether a build can be
    /// skipped. Parsed and kept; nothing runs it yet.
    pub ignore_command: Option<String>,
}

impl ConfigBuild {
    /// Each field `other` sets replaces this one's.
    fn overlay(&mut self, other: &ConfigBuild) {
        let fields = [
            (&mut self.root_dir, &other.root_dir),
            (&mut self.install_command, &other.install_command),
            (&mut self.build_command, &other.build_command),
            (&mut self.output_dir, &other.output_dir),
            (&mut self.framework, &other.framework),
            (&mut self.ignore_command, &other.ignore_command),
        ];
        for (mine, theirs) in fields {
            if theirs.is_some() {
                mine.clone_from(theirs);
            }
        }
    }
}

/// One netlify.toml `[context.<name>]` section: what a deploy in that context (or of that
/// branch) sets over `[build]` and over the file's top-level rules.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContextOverride {
    pub build: ConfigBuild,
    /// Merged into `[build.environment]` name by name.
    pub environment: BTreeMap<String, String>,
    /// Replaces the top-level redirects in this context: Netlify replaces lists, it does
    /// not append to them.
    pub redirects: Option<Vec<RedirectRule>>,
    /// Replaces the top-level header rules in this context.
    pub headers: Option<Vec<HeaderRule>>,
}

/// What a deploy builds with in one context: `[build]` with the matching
/// `[context.*]` sections merged over it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContextBuild {
    pub build: ConfigBuild,
    pub environment: BTreeMap<String, String>,
}

/// The routing rules of a config file, in the file's order, for a later step to apply.
///
/// Netlify writes rewrites and proxies as redirects with status 200 in one ordered list
/// (the first rule that matches wins), so netlify.toml's rules all stay in `redirects` to
/// keep that order. Vercel keeps rewrites apart and applies headers, then redirects, then
/// the file system, then rewrites.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Routing {
    pub redirects: Vec<RedirectRule>,
    pub rewrites: Vec<RewriteRule>,
    pub headers: Vec<HeaderRule>,
    /// vercel.json `cleanUrls`: serve `/about` from `about.html`, redirect `/about.html` there.
    pub clean_urls: Option<bool>,
    /// vercel.json `trailingSlash`: `true` adds one by redirect, `false` removes it; unset
    /// leaves paths as they come.
    pub trailing_slash: Option<bool>,
}

/// A redirect, or (from netlify.toml, with status 200) a rewrite or proxy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RedirectRule {
    pub source: RuleSource,
    /// The path pattern as written: Netlify's splats and `:placeholders`, or Vercel's
    /// path-to-regexp `source`.
    pub from: String,
    pub to: String,
    /// netlify.toml `status`, default 301. vercel.json `statusCode`, else 308 when
    /// `permanent` (the default) and 307 when not.
    pub status: u16,
    /// netlify.toml `force`: apply even where a file exists at the path.
    pub force: bool,
    /// netlify.toml `query`: the query parameters the rule needs, name to placeholder.
    pub query: BTreeMap<String, String>,
    /// netlify.toml `conditions` (`Language`, `Country`, `Role`, `Cookie`…), each a list.
    pub conditions: BTreeMap<String, Vec<String>>,
    /// netlify.toml `headers`: request headers sent along with a proxied request.
    pub headers: BTreeMap<String, String>,
    /// netlify.toml `signed`: the variable that holds the secret to sign proxied requests.
    pub signed: Option<String>,
    /// vercel.json `has`: conditions as written (`[{ "type": "host", "value": … }]`).
    pub has: Option<serde_json::Value>,
    /// vercel.json `missing`: conditions that must not hold, as written.
    pub missing: Option<serde_json::Value>,
}

impl RedirectRule {
    fn new(source: RuleSource) -> Self {
        Self {
            source,
            from: String::new(),
            to: String::new(),
            status: 301,
            force: false,
            query: BTreeMap::new(),
            conditions: BTreeMap::new(),
            headers: BTreeMap::new(),
            signed: None,
            has: None,
            missing: None,
        }
    }
}

/// A vercel.json rewrite: serve `to` at `from` without changing the URL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RewriteRule {
    pub source: RuleSource,
    pub from: String,
    pub to: String,
    pub has: Option<serde_json::Value>,
    pub missing: Option<serde_json::Value>,
}

/// Response headers for the paths that match `path` (vercel.json `source`, netlify.toml `for`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeaderRule {
    pub source: RuleSource,
    pub path: String,
    /// Name and value, in the file's order (netlify.toml's: by name). Netlify's lists and
    /// comma-separated multi-line values are joined with `", "`.
    pub headers: Vec<(String, String)>,
    pub has: Option<serde_json::Value>,
    pub missing: Option<serde_json::Value>,
}

/// A project's config file, parsed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProjectConfig {
    pub file: ConfigFile,
    /// The settings every deploy uses (netlify.toml `[build]`); contexts go over them.
    pub build: ConfigBuild,
    /// Build-time variables: netlify.toml `[build.environment]`, vercel.json `build.env`.
    pub environment: BTreeMap<String, String>,
    pub routing: Routing,
    /// netlify.toml `[context.<name>]` sections by name: `production`, `deploy-preview`,
    /// `branch-deploy`, or a branch name.
    pub contexts: BTreeMap<String, ContextOverride>,
    /// What was ignored and why, one line each (`vercel.json:5: "functions" is not
    /// supported here and is ignored`), for the build log.
    pub warnings: Vec<String>,
}

impl ProjectConfig {
    fn new(file: ConfigFile) -> Self {
        Self {
            file,
            build: ConfigBuild::default(),
            environment: BTreeMap::new(),
            routing: Routing::default(),
            contexts: BTreeMap::new(),
            warnings: Vec::new(),
        }
    }

    /// The build settings and variables of a deploy in `context` (`production`,
    /// `deploy-preview`, `branch-deploy`) of `branch`: `[build]`, then `[context.<context>]`,
    /// then `[context.<branch>]`, each later one winning field by field, as Netlify merges.
    pub fn build_for_context(&self, context: &str, branch: &str) -> ContextBuild {
        let mut merged = ContextBuild {
            build: self.build.clone(),
            environment: self.environment.clone(),
        };
        for section in self.matching_contexts(context, branch) {
            merged.build.overlay(&section.build);
            merged.environment.extend(section.environment.clone());
        }
        merged
    }

    /// The routing rules of a deploy in `context` of `branch`: the top-level rules, with
    /// the lists that a matching `[context.*]` section sets replacing them.
    pub fn routing_for_context(&self, context: &str, branch: &str) -> Routing {
        let mut routing = self.routing.clone();
        for section in self.matching_contexts(context, branch) {
            if let Some(redirects) = &section.redirects {
                routing.redirects.clone_from(redirects);
            }
            if let Some(headers) = &section.headers {
                routing.headers.clone_from(headers);
            }
        }
        routing
    }

    fn matching_contexts<'a>(
        &'a self,
        context: &'a str,
        branch: &'a str,
    ) -> impl Iterator<Item = &'a ContextOverride> + 'a {
        let branch = (branch != context).then_some(branch);
        std::iter::once(context)
            .chain(branch)
            .filter(|name| !name.is_empty())
            .filter_map(|name| self.contexts.get(name))
    }
}

/// Which file a repository's settings come from: netlify.toml when it has one, else
/// vercel.json, else none.
///
/// A repository with both most often deploys, or once deployed, to both platforms; mixing
/// the two files field by field would build with settings neither platform uses, so one
/// file is read whole and the other is named in a warning. netlify.toml comes first
/// because it is the one that can describe the whole build (`base`, per-context settings,
/// variables), where vercel.json leaves the root folder and variables to Vercel's
/// dashboard. A chosen file that does not parse is an error; the other is not tried.
pub fn which_config(has_vercel_json: bool, has_netlify_toml: bool) -> Option<ConfigFile> {
    match (has_vercel_json, has_netlify_toml) {
        (_, true) => Some(ConfigFile::NetlifyToml),
        (true, false) => Some(ConfigFile::VercelJson),
        (false, false) => None,
    }
}

/// Parses the file [`which_config`] picks from the texts the caller found (`None`: no such
/// file), with a warning when the other file is ignored.
pub fn parse_project_config(
    vercel_json: Option<&str>,
    netlify_toml: Option<&str>,
) -> Result<Option<ProjectConfig>, ConfigError> {
    match (vercel_json, netlify_toml) {
        (_, Some(toml)) => {
            let mut config = parse_netlify_toml(toml)?;
            if vercel_json.is_some() {
                config.warnings.push(
                    "vercel.json: ignored, because this repository also has netlify.toml and \
                     only one config file is read (netlify.toml first); delete the one you \
                     don't deploy with"
                        .into(),
                );
            }
            Ok(Some(config))
        }
        (Some(json), None) => parse_vercel_json(json).map(Some),
        (None, None) => Ok(None),
    }
}

/// Parses a `vercel.json`: build settings, `build.env` and routing rules.
pub fn parse_vercel_json(text: &str) -> Result<ProjectConfig, ConfigError> {
    let root = json_tree(strip_bom(text))?;
    let mut reader = Reader::new(ConfigFile::VercelJson);
    let mut config = ProjectConfig::new(ConfigFile::VercelJson);
    for entry in reader.table("the file", &root)? {
        reader.vercel_entry(&mut config, entry)?;
    }
    config.warnings = reader.into_warnings();
    Ok(config)
}

/// Parses a `netlify.toml`: `[build]`, `[context.*]`, `[[redirects]]` and `[[headers]]`.
pub fn parse_netlify_toml(text: &str) -> Result<ProjectConfig, ConfigError> {
    let root = toml_tree(strip_bom(text))?;
    let mut reader = Reader::new(ConfigFile::NetlifyToml);
    let mut config = ProjectConfig::new(ConfigFile::NetlifyToml);
    for entry in reader.table("the file", &root)? {
        reader.netlify_entry(&mut config, entry)?;
    }
    reader.check_publish_under_base(&config);
    config.warnings = reader.into_warnings();
    Ok(config)
}

fn strip_bom(text: &str) -> &str {
    text.strip_prefix('\u{feff}').unwrap_or(text)
}

// ---------------------------------------------------------------------------------------
// One tree for both formats, each value with its line, so that every message can say where.

struct Node {
    line: usize,
    item: Item,
}

enum Item {
    Null,
    Bool(bool),
    Integer(i64),
    /// As written: a float, or a JSON number that is no `i64`.
    Float(String),
    String(String),
    Datetime(String),
    Array(Vec<Node>),
    Table(Vec<Entry>),
}

struct Entry {
    key: String,
    line: usize,
    node: Node,
}

/// Byte offset to 1-based line.
struct Lines(Vec<usize>);

impl Lines {
    fn new(text: &str) -> Self {
        Self(text.match_indices('\n').map(|(at, _)| at).collect())
    }

    fn line(&self, offset: usize) -> usize {
        self.0.partition_point(|&newline| newline < offset) + 1
    }
}

fn toml_tree(text: &str) -> Result<Node, ConfigError> {
    let lines = Lines::new(text);
    let table = toml::de::DeTable::parse(text).map_err(|e| ConfigError {
        file: ConfigFile::NetlifyToml,
        line: e.span().map(|span| lines.line(span.start)),
        message: format!(
            "not valid TOML: {}",
            e.message().lines().next().unwrap_or("syntax error")
        ),
    })?;
    Ok(Node {
        line: lines.line(table.span().start),
        item: Item::Table(toml_entries(&lines, table.get_ref())),
    })
}

fn toml_entries(lines: &Lines, table: &toml::de::DeTable<'_>) -> Vec<Entry> {
    table
        .iter()
        .map(|(key, value)| Entry {
            key: key.get_ref().to_string(),
            line: lines.line(key.span().start),
            node: toml_node(lines, value),
        })
        .collect()
}

fn toml_node(lines: &Lines, value: &toml::Spanned<toml::de::DeValue<'_>>) -> Node {
    use toml::de::DeValue;
    let item = match value.get_ref() {
        DeValue::String(text) => Item::String(text.to_string()),
        DeValue::Integer(integer) => i64::from_str_radix(integer.as_str(), integer.radix())
            .map_or_else(|_| Item::Float(integer.to_string()), Item::Integer),
        DeValue::Float(float) => Item::Float(float.as_str().to_string()),
        DeValue::Boolean(flag) => Item::Bool(*flag),
        DeValue::Datetime(datetime) => Item::Datetime(datetime.to_string()),
        DeValue::Array(array) => Item::Array(array.iter().map(|v| toml_node(lines, v)).collect()),
        DeValue::Table(table) => Item::Table(toml_entries(lines, table)),
    };
    Node {
        line: lines.line(value.span().start),
        item,
    }
}

/// serde_json checks the syntax and says where it breaks; [`JsonScanner`] then builds the
/// tree with lines, which serde_json does not keep.
fn json_tree(text: &str) -> Result<Node, ConfigError> {
    if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(text) {
        return Err(ConfigError {
            file: ConfigFile::VercelJson,
            line: Some(e.line()),
            message: format!(
                "not valid JSON at column {}: {}",
                e.column(),
                json_syntax_message(text, &e)
            ),
        });
    }
    JsonScanner {
        text,
        pos: 0,
        line: 1,
    }
    .value()
    .ok_or_else(|| ConfigError {
        file: ConfigFile::VercelJson,
        line: None,
        message: "could not be read (a bug in DeploySphere's JSON reader; please report it)".into(),
    })
}

/// serde_json's message without its position, and in words for the commonest slip (its
/// own words for `{"a": 1,}` are "key must be a string").
fn json_syntax_message(text: &str, e: &serde_json::Error) -> String {
    let line_start: usize = text
        .split_inclusive('\n')
        .take(e.line().saturating_sub(1))
        .map(str::len)
        .sum();
    let offset = line_start + e.column().saturating_sub(1);
    let before = text.get(..offset).unwrap_or_default().trim_end();
    let after = text.get(offset..).unwrap_or_default().trim_start();
    if before.ends_with(',') && (after.starts_with('}') || after.starts_with(']')) {
        return "a comma after the last entry, which JSON does not allow".into();
    }
    let message = e.to_string();
    message
        .rsplit_once(" at line ")
        .map_or(message.as_str(), |(head, _)| head)
        .to_string()
}

/// Reads JSON that serde_json has already accepted.
struct JsonScanner<'t> {
    text: &'t str,
    pos: usize,
    line: usize,
}

impl JsonScanner<'_> {
    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.pos).copied()
    }

    fn skip_space(&mut self) {
        while let Some(byte) = self.peek() {
            match byte {
                b'\n' => self.line += 1,
                b' ' | b'\t' | b'\r' => {}
                _ => return,
            }
            self.pos += 1;
        }
    }

    fn eat(&mut self, byte: u8) -> Option<()> {
        self.skip_space();
        (self.peek()? == byte).then(|| self.pos += 1)
    }

    fn value(&mut self) -> Option<Node> {
        self.skip_space();
        let line = self.line;
        let item = match self.peek()? {
            b'{' => Item::Table(self.object()?),
            b'[' => Item::Array(self.array()?),
            b'"' => Item::String(self.string()?),
            b't' => self.word("true", Item::Bool(true))?,
            b'f' => self.word("false", Item::Bool(false))?,
            b'n' => self.word("null", Item::Null)?,
            _ => self.number()?,
        };
        Some(Node { line, item })
    }

    fn word(&mut self, word: &str, item: Item) -> Option<Item> {
        self.text[self.pos..].starts_with(word).then(|| {
            self.pos += word.len();
            item
        })
    }

    fn string(&mut self) -> Option<String> {
        self.skip_space();
        let start = self.pos;
        (self.peek()? == b'"').then_some(())?;
        self.pos += 1;
        loop {
            match self.peek()? {
                b'\\' => self.pos += 2,
                b'"' => break,
                _ => self.pos += 1,
            }
        }
        self.pos += 1;
        serde_json::from_str(&self.text[start..self.pos]).ok()
    }

    fn number(&mut self) -> Option<Item> {
        let start = self.pos;
        while self
            .peek()
            .is_some_and(|b| b.is_ascii_digit() || b"+-.eE".contains(&b))
        {
            self.pos += 1;
        }
        let text = &self.text[start..self.pos];
        let number: serde_json::Number = serde_json::from_str(text).ok()?;
        Some(match number.as_i64() {
            Some(integer) => Item::Integer(integer),
            None => Item::Float(text.to_string()),
        })
    }

    fn object(&mut self) -> Option<Vec<Entry>> {
        self.eat(b'{')?;
        let mut entries = Vec::new();
        if self.eat(b'}').is_some() {
            return Some(entries);
        }
        loop {
            self.skip_space();
            let line = self.line;
            let key = self.string()?;
            self.eat(b':')?;
            let node = self.value()?;
            entries.push(Entry { key, line, node });
            if self.eat(b',').is_none() {
                return self.eat(b'}').map(|()| entries);
            }
        }
    }

    fn array(&mut self) -> Option<Vec<Node>> {
        self.eat(b'[')?;
        let mut nodes = Vec::new();
        if self.eat(b']').is_some() {
            return Some(nodes);
        }
        loop {
            nodes.push(self.value()?);
            if self.eat(b',').is_none() {
                return self.eat(b']').map(|()| nodes);
            }
        }
    }
}

/// The JSON a vercel.json `has` or `missing` list is kept as.
fn to_json(node: &Node) -> serde_json::Value {
    use serde_json::Value;
    match &node.item {
        Item::Null => Value::Null,
        Item::Bool(flag) => Value::Bool(*flag),
        Item::Integer(integer) => Value::from(*integer),
        Item::Float(text) => serde_json::from_str(text).unwrap_or(Value::Null),
        Item::String(text) | Item::Datetime(text) => Value::String(text.clone()),
        Item::Array(nodes) => Value::Array(nodes.iter().map(to_json).collect()),
        Item::Table(entries) => Value::Object(
            entries
                .iter()
                .map(|entry| (entry.key.clone(), to_json(&entry.node)))
                .collect(),
        ),
    }
}

// ---------------------------------------------------------------------------------------
// Typed reads over the tree; each failure names the field, its line and what was found.

/// How a path may begin with `/`.
#[derive(Clone, Copy)]
enum LeadingSlash {
    /// Netlify: `/` is the repository root, and the path is relative anyway.
    Strip,
    /// Vercel: an absolute path is an error.
    Reject,
}

/// A `publish` seen while reading, checked against `base` once the whole file is read.
struct Publish {
    context: Option<String>,
    field: String,
    line: usize,
    dir: String,
}

struct Reader {
    file: ConfigFile,
    /// With their lines, to list them in file order: TOML tables come by name.
    warnings: Vec<(usize, String)>,
    publishes: Vec<Publish>,
}

impl Reader {
    fn new(file: ConfigFile) -> Self {
        Self {
            file,
            warnings: Vec::new(),
            publishes: Vec::new(),
        }
    }

    fn error(&self, line: usize, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file,
            line: Some(line),
            message: message.into(),
        }
    }

    fn warn(&mut self, line: usize, message: String) {
        self.warnings
            .push((line, format!("{}:{line}: {message}", self.file)));
    }

    fn ignored(&mut self, field: &str, line: usize) {
        self.warn(
            line,
            format!("\"{field}\" is not supported here and is ignored"),
        );
    }

    fn into_warnings(mut self) -> Vec<String> {
        self.warnings.sort_by_key(|(line, _)| *line);
        self.warnings
            .into_iter()
            .map(|(_, warning)| warning)
            .collect()
    }

    fn source(&self, node: &Node) -> RuleSource {
        RuleSource {
            file: self.file,
            line: node.line,
        }
    }

    fn kind(&self, item: &Item) -> &'static str {
        let json = self.file == ConfigFile::VercelJson;
        match item {
            Item::Null => "null",
            Item::Bool(_) => "a boolean",
            Item::Integer(_) | Item::Float(_) if json => "a number",
            Item::Integer(_) => "an integer",
            Item::Float(_) => "a float",
            Item::String(_) => "a string",
            Item::Datetime(_) => "a date-time",
            Item::Array(_) => "an array",
            Item::Table(_) => self.table_word(),
        }
    }

    fn table_word(&self) -> &'static str {
        match self.file {
            ConfigFile::VercelJson => "an object",
            ConfigFile::NetlifyToml => "a table",
        }
    }

    fn expected(&self, field: &str, what: &str, node: &Node) -> ConfigError {
        let found = self.kind(&node.item);
        self.error(node.line, format!("{field} must be {what}, found {found}"))
    }

    fn string<'n>(&self, field: &str, node: &'n Node) -> Result<&'n str, ConfigError> {
        match &node.item {
            Item::String(text) => Ok(text),
            _ => Err(self.expected(field, "a string", node)),
        }
    }

    fn boolean(&self, field: &str, node: &Node) -> Result<bool, ConfigError> {
        match node.item {
            Item::Bool(flag) => Ok(flag),
            _ => Err(self.expected(field, "true or false", node)),
        }
    }

    fn table<'n>(&self, field: &str, node: &'n Node) -> Result<&'n [Entry], ConfigError> {
        match &node.item {
            Item::Table(entries) => Ok(entries),
            _ => Err(self.expected(field, self.table_word(), node)),
        }
    }

    fn array<'n>(&self, field: &str, node: &'n Node) -> Result<&'n [Node], ConfigError> {
        match &node.item {
            Item::Array(nodes) => Ok(nodes),
            _ => Err(self.expected(field, "an array", node)),
        }
    }

    /// `read` on each element of the array at `field`, named `field[i]`.
    fn each<T>(
        &mut self,
        field: &str,
        node: &Node,
        mut read: impl FnMut(&mut Self, &str, &Node) -> Result<T, ConfigError>,
    ) -> Result<Vec<T>, ConfigError> {
        let nodes = self.array(field, node)?;
        nodes
            .iter()
            .enumerate()
            .map(|(i, node)| read(self, &format!("{field}[{i}]"), node))
            .collect()
    }

    fn required<T>(
        &self,
        field: &str,
        key: &str,
        value: Option<T>,
        node: &Node,
    ) -> Result<T, ConfigError> {
        value.ok_or_else(|| self.error(node.line, format!("{field} needs \"{key}\"")))
    }

    fn command(&self, field: &str, node: &Node) -> Result<String, ConfigError> {
        let command = self.string(field, node)?;
        validate::command(field, command)
            .map_err(|e| self.error(node.line, format!("{field} {}", e.message)))?;
        Ok(command.to_string())
    }

    /// A command where `null` is "not set" (vercel.json).
    fn nullable_command(&self, field: &str, node: &Node) -> Result<Option<String>, ConfigError> {
        match node.item {
            Item::Null => Ok(None),
            _ => self.command(field, node).map(Some),
        }
    }

    fn status(&self, field: &str, node: &Node) -> Result<u16, ConfigError> {
        match node.item {
            Item::Integer(code) => u16::try_from(code)
                .ok()
                .filter(|code| (100..=599).contains(code))
                .ok_or_else(|| {
                    self.error(
                        node.line,
                        format!("{field} must be an HTTP status between 100 and 599, found {code}"),
                    )
                }),
            _ => Err(self.expected(field, "an integer (e.g. 301)", node)),
        }
    }

    fn string_map(
        &self,
        field: &str,
        node: &Node,
    ) -> Result<BTreeMap<String, String>, ConfigError> {
        self.table(field, node)?
            .iter()
            .map(|entry| {
                let name = format!("{field}.{}", entry.key);
                let value = self.string(&name, &entry.node)?;
                Ok((entry.key.clone(), value.to_string()))
            })
            .collect()
    }

    /// A folder, normalized (see [`normalize_dir`]); an empty string is "not set".
    fn dir(
        &self,
        field: &str,
        node: &Node,
        slash: LeadingSlash,
        inside: &str,
    ) -> Result<Option<String>, ConfigError> {
        let raw = self.string(field, node)?;
        let dir = normalize_dir(raw, slash, inside).map_err(|problem| {
            self.error(node.line, format!("{field} {problem}, found \"{raw}\""))
        })?;
        if let Some(dir) = &dir {
            validate::relative_dir(field, dir)
                .map_err(|e| self.error(node.line, format!("{field} {}", e.message)))?;
        }
        Ok(dir)
    }

    /// Build-time variables. `scalars`: numbers and booleans are taken as their text
    /// (netlify.toml's `NODE_VERSION = 20`); otherwise only strings are.
    fn variables(
        &self,
        field: &str,
        node: &Node,
        scalars: bool,
    ) -> Result<BTreeMap<String, String>, ConfigError> {
        let mut variables = BTreeMap::new();
        for entry in self.table(field, node)? {
            let name = format!("{field}.{}", entry.key);
            let value = match &entry.node.item {
                Item::String(text) => text.clone(),
                Item::Integer(integer) if scalars => integer.to_string(),
                Item::Float(text) if scalars => text.clone(),
                Item::Bool(flag) if scalars => flag.to_string(),
                _ => return Err(self.expected(&name, "a string", &entry.node)),
            };
            validate::env_key(&entry.key).map_err(|e| {
                let key = &entry.key;
                let why = &e.message;
                self.error(
                    entry.line,
                    format!("{field}: \"{key}\" is not a valid variable name: {why}"),
                )
            })?;
            validate::env_value(&entry.key, &value)
                .map_err(|e| self.error(entry.node.line, format!("{name}: {}", e.message)))?;
            variables.insert(entry.key.clone(), value);
        }
        Ok(variables)
    }
}

/// A folder path as the config file wrote it, made canonical: no leading `/` (when
/// `slash` allows one), no trailing `/`, no empty or `.` parts, `..` resolved; `.` for the
/// folder itself; `None` for an empty string. `inside` names what it must stay in.
fn normalize_dir(raw: &str, slash: LeadingSlash, inside: &str) -> Result<Option<String>, String> {
    if raw.is_empty() {
        return Ok(None);
    }
    if raw.contains('\\') {
        return Err("must use / between folders, not \\".into());
    }
    let relative = match (raw.strip_prefix('/'), slash) {
        (Some(rest), LeadingSlash::Strip) => rest,
        (Some(_), LeadingSlash::Reject) => {
            return Err(format!(
                "must be a folder relative to {inside}, not an absolute path"
            ));
        }
        (None, _) => raw,
    };
    let mut parts: Vec<&str> = Vec::new();
    for (i, part) in relative.split('/').enumerate() {
        match part {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return Err(format!(
                        "must stay inside {inside}, but \"..\" climbs out of it"
                    ));
                }
            }
            drive if i == 0 && drive.len() == 2 && drive.ends_with(':') => {
                return Err(format!(
                    "must be a folder relative to {inside}, not a drive path"
                ));
            }
            part => parts.push(part),
        }
    }
    Ok(Some(if parts.is_empty() {
        ".".into()
    } else {
        parts.join("/")
    }))
}

// ---------------------------------------------------------------------------------------
// vercel.json

const VERCEL_ROOT: &str = "the project's root directory";

impl Reader {
    fn vercel_entry(
        &mut self,
        config: &mut ProjectConfig,
        entry: &Entry,
    ) -> Result<(), ConfigError> {
        let (key, node) = (entry.key.as_str(), &entry.node);
        let build = &mut config.build;
        let routing = &mut config.routing;
        match key {
            "buildCommand" => build.build_command = self.nullable_command(key, node)?,
            "installCommand" => build.install_command = self.nullable_command(key, node)?,
            "ignoreCommand" => build.ignore_command = self.nullable_command(key, node)?,
            "outputDirectory" => {
                build.output_dir = match node.item {
                    Item::Null => None,
                    _ => self.dir(key, node, LeadingSlash::Reject, VERCEL_ROOT)?,
                }
            }
            "framework" => {
                build.framework = Some(match node.item {
                    Item::Null => "other".into(),
                    _ => self.string(key, node)?.to_string(),
                })
            }
            "cleanUrls" => routing.clean_urls = Some(self.boolean(key, node)?),
            "trailingSlash" => routing.trailing_slash = Some(self.boolean(key, node)?),
            "redirects" => routing.redirects = self.each(key, node, Self::vercel_redirect)?,
            "rewrites" => routing.rewrites = self.each(key, node, Self::vercel_rewrite)?,
            "headers" => routing.headers = self.each(key, node, Self::vercel_header)?,
            "build" => config.environment = self.vercel_build_env(node)?,
            // Editor metadata, and the command of `vercel dev`: nothing a deploy uses.
            "$schema" | "devCommand" => {}
            _ => self.ignored(key, entry.line),
        }
        Ok(())
    }

    /// `build.env`, Vercel's (legacy) build-time variables.
    fn vercel_build_env(&mut self, node: &Node) -> Result<BTreeMap<String, String>, ConfigError> {
        let mut variables = BTreeMap::new();
        for entry in self.table("build", node)? {
            match entry.key.as_str() {
                "env" => variables = self.variables("build.env", &entry.node, false)?,
                key => self.ignored(&format!("build.{key}"), entry.line),
            }
        }
        Ok(variables)
    }

    /// `has` and `missing`: kept as written, but they must be lists of conditions.
    fn vercel_conditions(
        &self,
        field: &str,
        node: &Node,
    ) -> Result<serde_json::Value, ConfigError> {
        for (i, condition) in self.array(field, node)?.iter().enumerate() {
            self.table(&format!("{field}[{i}]"), condition)?;
        }
        Ok(to_json(node))
    }

    fn vercel_redirect(&mut self, field: &str, node: &Node) -> Result<RedirectRule, ConfigError> {
        let mut rule = RedirectRule::new(self.source(node));
        let (mut from, mut to, mut permanent, mut status_code) = (None, None, None, None);
        for entry in self.table(field, node)? {
            let (name, value) = (format!("{field}.{}", entry.key), &entry.node);
            match entry.key.as_str() {
                "source" => from = Some(self.string(&name, value)?.to_string()),
                "destination" => to = Some(self.string(&name, value)?.to_string()),
                "permanent" => permanent = Some(self.boolean(&name, value)?),
                "statusCode" => status_code = Some(self.status(&name, value)?),
                "has" => rule.has = Some(self.vercel_conditions(&name, value)?),
                "missing" => rule.missing = Some(self.vercel_conditions(&name, value)?),
                _ => self.ignored(&name, entry.line),
            }
        }
        rule.from = self.required(field, "source", from, node)?;
        rule.to = self.required(field, "destination", to, node)?;
        rule.status = match (status_code, permanent) {
            (Some(_), Some(_)) => {
                return Err(self.error(
                    node.line,
                    format!(
                        "{field} sets both statusCode and permanent; Vercel allows one of them"
                    ),
                ));
            }
            (Some(code), None) => code,
            (None, Some(false)) => 307,
            (None, _) => 308,
        };
        Ok(rule)
    }

    fn vercel_rewrite(&mut self, field: &str, node: &Node) -> Result<RewriteRule, ConfigError> {
        let (mut from, mut to, mut has, mut missing) = (None, None, None, None);
        for entry in self.table(field, node)? {
            let (name, value) = (format!("{field}.{}", entry.key), &entry.node);
            match entry.key.as_str() {
                "source" => from = Some(self.string(&name, value)?.to_string()),
                "destination" => to = Some(self.string(&name, value)?.to_string()),
                "has" => has = Some(self.vercel_conditions(&name, value)?),
                "missing" => missing = Some(self.vercel_conditions(&name, value)?),
                _ => self.ignored(&name, entry.line),
            }
        }
        Ok(RewriteRule {
            source: self.source(node),
            from: self.required(field, "source", from, node)?,
            to: self.required(field, "destination", to, node)?,
            has,
            missing,
        })
    }

    fn vercel_header(&mut self, field: &str, node: &Node) -> Result<HeaderRule, ConfigError> {
        let (mut path, mut headers, mut has, mut missing) = (None, None, None, None);
        for entry in self.table(field, node)? {
            let (name, value) = (format!("{field}.{}", entry.key), &entry.node);
            match entry.key.as_str() {
                "source" => path = Some(self.string(&name, value)?.to_string()),
                "headers" => headers = Some(self.each(&name, value, Self::vercel_header_pair)?),
                "has" => has = Some(self.vercel_conditions(&name, value)?),
                "missing" => missing = Some(self.vercel_conditions(&name, value)?),
                _ => self.ignored(&name, entry.line),
            }
        }
        Ok(HeaderRule {
            source: self.source(node),
            path: self.required(field, "source", path, node)?,
            headers: self.required(field, "headers", headers, node)?,
            has,
            missing,
        })
    }

    fn vercel_header_pair(
        &mut self,
        field: &str,
        node: &Node,
    ) -> Result<(String, String), ConfigError> {
        let (mut key, mut value) = (None, None);
        for entry in self.table(field, node)? {
            let name = format!("{field}.{}", entry.key);
            match entry.key.as_str() {
                "key" => key = Some(self.string(&name, &entry.node)?.to_string()),
                "value" => value = Some(self.string(&name, &entry.node)?.to_string()),
                _ => self.ignored(&name, entry.line),
            }
        }
        Ok((
            self.required(field, "key", key, node)?,
            self.required(field, "value", value, node)?,
        ))
    }
}

// ---------------------------------------------------------------------------------------
// netlify.toml

const NETLIFY_REPO: &str = "the repository";
const NETLIFY_BASE: &str = "the base folder (the repository when base is not set)";

impl Reader {
    fn netlify_entry(
        &mut self,
        config: &mut ProjectConfig,
        entry: &Entry,
    ) -> Result<(), ConfigError> {
        let (key, node) = (entry.key.as_str(), &entry.node);
        match key {
            "build" => {
                for inner in self.table(key, node)? {
                    let known = self.netlify_build_key(
                        None,
                        inner,
                        &mut config.build,
                        &mut config.environment,
                    )?;
                    if !known {
                        self.ignored(&format!("build.{}", inner.key), inner.line);
                    }
                }
            }
            "context" => config.contexts = self.netlify_contexts(node)?,
            "redirects" => {
                config.routing.redirects = self.each(key, node, Self::netlify_redirect)?
            }
            "headers" => {
                let rules = self.each(key, node, Self::netlify_header)?;
                config.routing.headers = rules.into_iter().flatten().collect();
            }
            _ => self.ignored(key, entry.line),
        }
        Ok(())
    }

    /// One build setting of `[build]` (`context` None) or `[context.<name>]`; false when
    /// `entry` is no build setting.
    fn netlify_build_key(
        &mut self,
        context: Option<&str>,
        entry: &Entry,
        build: &mut ConfigBuild,
        environment: &mut BTreeMap<String, String>,
    ) -> Result<bool, ConfigError> {
        let section = context.map_or_else(|| "build".to_string(), |name| format!("context.{name}"));
        let field = format!("{section}.{}", entry.key);
        let node = &entry.node;
        match entry.key.as_str() {
            "base" => build.root_dir = self.dir(&field, node, LeadingSlash::Strip, NETLIFY_REPO)?,
            "publish" => {
                build.output_dir = self.dir(&field, node, LeadingSlash::Strip, NETLIFY_BASE)?;
                if let Some(dir) = &build.output_dir {
                    self.publishes.push(Publish {
                        context: context.map(str::to_string),
                        field,
                        line: node.line,
                        dir: dir.clone(),
                    });
                }
            }
            "command" => build.build_command = Some(self.command(&field, node)?),
            "ignore" => build.ignore_command = Some(self.command(&field, node)?),
            "environment" => environment.extend(self.variables(&field, node, true)?),
            _ => return Ok(false),
        }
        Ok(true)
    }

    fn netlify_contexts(
        &mut self,
        node: &Node,
    ) -> Result<BTreeMap<String, ContextOverride>, ConfigError> {
        let mut contexts = BTreeMap::new();
        for entry in self.table("context", node)? {
            let name = entry.key.as_str();
            let mut section = ContextOverride::default();
            for inner in self.table(&format!("context.{name}"), &entry.node)? {
                if self.netlify_build_key(
                    Some(name),
                    inner,
                    &mut section.build,
                    &mut section.environment,
                )? {
                    continue;
                }
                let field = format!("context.{name}.{}", inner.key);
                match inner.key.as_str() {
                    "redirects" => {
                        section.redirects =
                            Some(self.each(&field, &inner.node, Self::netlify_redirect)?);
                    }
                    "headers" => {
                        let rules = self.each(&field, &inner.node, Self::netlify_header)?;
                        section.headers = Some(rules.into_iter().flatten().collect());
                    }
                    _ => self.ignored(&field, inner.line),
                }
            }
            contexts.insert(name.to_string(), section);
        }
        Ok(contexts)
    }

    fn netlify_redirect(&mut self, field: &str, node: &Node) -> Result<RedirectRule, ConfigError> {
        let mut rule = RedirectRule::new(self.source(node));
        let (mut from, mut to) = (None, None);
        for entry in self.table(field, node)? {
            let (name, value) = (format!("{field}.{}", entry.key), &entry.node);
            match entry.key.as_str() {
                "from" => from = Some(self.string(&name, value)?.to_string()),
                "to" => to = Some(self.string(&name, value)?.to_string()),
                "status" => rule.status = self.status(&name, value)?,
                "force" => rule.force = self.boolean(&name, value)?,
                "query" => rule.query = self.string_map(&name, value)?,
                "conditions" => rule.conditions = self.netlify_conditions(&name, value)?,
                "headers" => rule.headers = self.string_map(&name, value)?,
                "signed" => rule.signed = Some(self.string(&name, value)?.to_string()),
                _ => self.ignored(&name, entry.line),
            }
        }
        let from = self.required(field, "from", from, node)?;
        // Netlify's forward rule: `from = "/blog/*"` with a 2xx status and no `to` serves
        // `/blog/:splat`.
        rule.to = match (to, from.strip_suffix("/*")) {
            (Some(to), _) => to,
            (None, Some(prefix)) if (200..300).contains(&rule.status) => format!("{prefix}/:splat"),
            (None, _) => {
                return Err(self.error(
                    node.line,
                    format!("{field} needs \"to\" (only a \"/*\" rule with a 2xx status may leave it out)"),
                ));
            }
        };
        rule.from = from;
        Ok(rule)
    }

    /// `conditions`: lists of strings; Netlify also takes a comma-separated string for
    /// `Language`, `Country` and `Role`, and their lowercase names.
    fn netlify_conditions(
        &self,
        field: &str,
        node: &Node,
    ) -> Result<BTreeMap<String, Vec<String>>, ConfigError> {
        let mut conditions = BTreeMap::new();
        for entry in self.table(field, node)? {
            let name = format!("{field}.{}", entry.key);
            let key = match entry.key.as_str() {
                "language" => "Language",
                "country" => "Country",
                "role" => "Role",
                key => key,
            };
            let listed = ["Language", "Country", "Role"].contains(&key);
            let values = match &entry.node.item {
                Item::String(text) if listed => {
                    text.split(',').map(|v| v.trim().to_string()).collect()
                }
                Item::String(text) => vec![text.clone()],
                Item::Array(nodes) => nodes
                    .iter()
                    .map(|value| self.string(&name, value).map(str::to_string))
                    .collect::<Result<_, _>>()?,
                _ => return Err(self.expected(&name, "an array of strings", &entry.node)),
            };
            conditions.insert(key.to_string(), values);
        }
        Ok(conditions)
    }

    /// One `[[headers]]` rule; `None` when it sets no values (Netlify skips those).
    fn netlify_header(
        &mut self,
        field: &str,
        node: &Node,
    ) -> Result<Option<HeaderRule>, ConfigError> {
        let (mut path, mut values) = (None, Vec::new());
        for entry in self.table(field, node)? {
            let (name, value) = (format!("{field}.{}", entry.key), &entry.node);
            match entry.key.as_str() {
                "for" => path = Some(self.string(&name, value)?.trim().to_string()),
                "values" => values = self.netlify_header_values(&name, value)?,
                _ => self.ignored(&name, entry.line),
            }
        }
        let path = self.required(field, "for", path, node)?;
        Ok((!values.is_empty()).then(|| HeaderRule {
            source: self.source(node),
            path,
            headers: values,
            has: None,
            missing: None,
        }))
    }

    /// As Netlify normalizes them: a list is joined with `", "`, and a string's
    /// comma-separated parts (a multi-line `'''` value) are too.
    fn netlify_header_values(
        &self,
        field: &str,
        node: &Node,
    ) -> Result<Vec<(String, String)>, ConfigError> {
        let mut headers = Vec::new();
        for entry in self.table(field, node)? {
            let name = format!("{field}.{}", entry.key);
            let key = entry.key.trim();
            if key.is_empty() {
                return Err(self.error(entry.line, format!("{field} has a header without a name")));
            }
            let parts: Vec<String> = match &entry.node.item {
                Item::String(text) => text
                    .trim()
                    .split(',')
                    .map(|v| v.trim().to_string())
                    .collect(),
                Item::Array(nodes) => nodes
                    .iter()
                    .map(|value| self.string(&name, value).map(|v| v.trim().to_string()))
                    .collect::<Result<_, _>>()?,
                _ => return Err(self.expected(&name, "a string", &entry.node)),
            };
            headers.push((key.to_string(), parts.join(", ")));
        }
        Ok(headers)
    }

    /// Warns where `publish` repeats `base`: old Netlify docs said publish is relative to
    /// the repository and includes base; today it is relative to base, so `site/build` with
    /// `base = "site"` means `site/site/build`.
    fn check_publish_under_base(&mut self, config: &ProjectConfig) {
        for publish in std::mem::take(&mut self.publishes) {
            let base = publish
                .context
                .as_ref()
                .and_then(|name| config.contexts.get(name))
                .and_then(|section| section.build.root_dir.as_ref())
                .or(config.build.root_dir.as_ref());
            let Some(base) = base.filter(|base| base.as_str() != ".") else {
                continue;
            };
            let Some(inner) = publish
                .dir
                .strip_prefix(base.as_str())
                .and_then(|rest| rest.strip_prefix('/'))
            else {
                continue;
            };
            let (field, dir) = (&publish.field, &publish.dir);
            self.warn(
                publish.line,
                format!(
                    "{field} \"{dir}\" starts with base \"{base}\", but publish is relative to \
                     base, so the site is published from \"{base}/{dir}\"; if you meant \
                     \"{dir}\", write publish = \"{inner}\""
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn netlify(text: &str) -> ProjectConfig {
        parse_netlify_toml(text).unwrap_or_else(|e| panic!("{e}"))
    }

    fn vercel(text: &str) -> ProjectConfig {
        parse_vercel_json(text).unwrap_or_else(|e| panic!("{e}"))
    }

    fn netlify_error(text: &str) -> String {
        parse_netlify_toml(text)
            .expect_err("should fail")
            .to_string()
    }

    fn vercel_error(text: &str) -> String {
        parse_vercel_json(text)
            .expect_err("should fail")
            .to_string()
    }

    fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn some(text: &str) -> Option<String> {
        Some(text.to_string())
    }

    /// Modelled on vuejs/docs: `[build.environment]` written before `[build]`.
    #[test]
    fn vitepress_docs_with_environment_before_build() {
        let config = netlify(
            r#"[build.environment]
  NODE_VERSION = "20"

[build]
  publish = ".vitepress/dist"
  command = "pnpm run build"
"#,
        );
        assert_eq!(config.file, ConfigFile::NetlifyToml);
        assert_eq!(config.build.build_command, some("pnpm run build"));
        assert_eq!(config.build.output_dir, some(".vitepress/dist"));
        assert_eq!(config.build.root_dir, None);
        assert_eq!(config.environment, vars(&[("NODE_VERSION", "20")]));
        assert!(config.warnings.is_empty(), "{:?}", config.warnings);
    }

    /// Modelled on a Vite + Vue single-page app: SPA fallback and header rules.
    #[test]
    fn vite_spa_with_fallback_and_headers() {
        let config = netlify(
            r#"[build]
  command = "pnpm build"
  publish = "dist/"
  environment = { NODE_VERSION = "20" }

[[redirects]]
  from = "/*"
  to = "/index.html"
  status = 200

[[headers]]
  for = "/*"
  [headers.values]
    X-Frame-Options = "DENY"
    X-Content-Type-Options = "nosniff"

[[headers]]
  for = "/assets/*"
  [headers.values]
    Cache-Control = '''
    public,
    max-age=31536000,
    immutable'''
"#,
        );
        assert_eq!(config.build.output_dir, some("dist"));
        assert_eq!(config.environment, vars(&[("NODE_VERSION", "20")]));
        let [fallback] = config.routing.redirects.as_slice() else {
            panic!("{:?}", config.routing.redirects)
        };
        assert_eq!(
            (fallback.from.as_str(), fallback.to.as_str()),
            ("/*", "/index.html")
        );
        assert_eq!((fallback.status, fallback.force), (200, false));
        assert_eq!(fallback.source.to_string(), "netlify.toml:6");
        let [all, assets] = config.routing.headers.as_slice() else {
            panic!("{:?}", config.routing.headers)
        };
        assert_eq!(all.path, "/*");
        assert_eq!(
            all.headers,
            vec![
                ("X-Content-Type-Options".to_string(), "nosniff".to_string()),
                ("X-Frame-Options".to_string(), "DENY".to_string()),
            ]
        );
        assert_eq!(assets.path, "/assets/*");
        assert_eq!(
            assets.headers,
            vec![(
                "Cache-Control".to_string(),
                "public, max-age=31536000, immutable".to_string()
            )]
        );
        assert_eq!(assets.source.line, 17);
    }

    /// Modelled on vueuse/vueuse: a forced host redirect before the SPA fallback; order kept.
    #[test]
    fn host_redirect_then_fallback_in_file_order() {
        let config = netlify(
            r#"[build]
publish = "packages/.vitepress/dist"
command = "pnpm run install-fonts && pnpm run docs:build"

[build.environment]
NODE_OPTIONS = "--max_old_space_size=4096"
NODE_VERSION = "18"

[[redirects]]
from = "https://old.example.org/*"
to = "https://example.org/:splat"
status = 301
force = true

[[redirects]]
from = "/*"
to = "/index.html"
status = 200
"#,
        );
        let redirects = &config.routing.redirects;
        assert_eq!(redirects.len(), 2);
        assert_eq!(redirects[0].from, "https://old.example.org/*");
        assert_eq!((redirects[0].status, redirects[0].force), (301, true));
        assert_eq!((redirects[1].status, redirects[1].force), (200, false));
        assert_eq!(
            config.environment["NODE_OPTIONS"],
            "--max_old_space_size=4096"
        );
    }

    /// Modelled on facebook/docusaurus: `base = "/"`, and a deploy-preview context with its
    /// own command, publish folder and redirects (the second without a status: 301).
    #[test]
    fn docusaurus_contexts() {
        let config = netlify(
            r#"
# default/production build
[build]
  base = "/"
  command = "yarn netlify:build:production"
  publish = "website/build"

[context.deploy-preview]
  command = "yarn netlify:build:deployPreview"
  publish = "website/netlifyDeploy"
  [[context.deploy-preview.redirects]]
    from = "/build/*"
    to = "/build/404.html"
    status = 200
  [[context.deploy-preview.redirects]]
    from = "/*"
    to = "/build/:splat"
"#,
        );
        let production = config.build_for_context("production", "main");
        assert_eq!(production.build.root_dir, some("."));
        assert_eq!(
            production.build.build_command,
            some("yarn netlify:build:production")
        );
        assert_eq!(production.build.output_dir, some("website/build"));
        assert!(
            config
                .routing_for_context("production", "main")
                .redirects
                .is_empty()
        );

        let preview = config.build_for_context("deploy-preview", "fix-typo");
        assert_eq!(preview.build.root_dir, some("."));
        assert_eq!(
            preview.build.build_command,
            some("yarn netlify:build:deployPreview")
        );
        assert_eq!(preview.build.output_dir, some("website/netlifyDeploy"));
        let redirects = config
            .routing_for_context("deploy-preview", "fix-typo")
            .redirects;
        let statuses: Vec<u16> = redirects.iter().map(|r| r.status).collect();
        assert_eq!(statuses, [200, 301]);
        assert_eq!(redirects[1].source.line, 15);
        assert!(config.warnings.is_empty(), "{:?}", config.warnings);
    }

    /// Modelled on a Hugo docs site (salesagility/SuiteDocs): variables per context and per
    /// branch; the branch section goes over the context one, variables merge by name.
    #[test]
    fn context_then_branch_overrides() {
        let config = netlify(
            r#"[build]
publish = "public"
command = "./build.sh"

[build.environment]
HUGO_VERSION = "0.85.0"
NODE_VERSION = "20"

[context.production.environment]
HUGO_ENV = "production"

[context.deploy-preview]
command = "./build.sh -b $DEPLOY_PRIME_URL"

[context.branch-deploy]
command = "./build.sh -b $DEPLOY_PRIME_URL"
[context.branch-deploy.environment]
HUGO_VERSION = "0.86.0"

[context.staging]
publish = "public-staging"
[context.staging.environment]
HUGO_BASEURL = "https://staging.example.org"
"#,
        );
        let production = config.build_for_context("production", "main");
        assert_eq!(production.build.build_command, some("./build.sh"));
        assert_eq!(
            production.environment,
            vars(&[
                ("HUGO_ENV", "production"),
                ("HUGO_VERSION", "0.85.0"),
                ("NODE_VERSION", "20")
            ])
        );

        let staging = config.build_for_context("branch-deploy", "staging");
        assert_eq!(
            staging.build.build_command,
            some("./build.sh -b $DEPLOY_PRIME_URL")
        );
        assert_eq!(staging.build.output_dir, some("public-staging"));
        assert_eq!(
            staging.environment,
            vars(&[
                ("HUGO_BASEURL", "https://staging.example.org"),
                ("HUGO_VERSION", "0.86.0"),
                ("NODE_VERSION", "20"),
            ])
        );
        // A branch without a section of its own gets only the context's.
        let other = config.build_for_context("branch-deploy", "feature/x");
        assert_eq!(other.build.output_dir, some("public"));
    }

    /// Modelled on mui/material-ui: a build plugin, which we don't run.
    #[test]
    fn plugins_and_functions_are_warnings() {
        let config = netlify(
            r#"[build]
  publish = "docs/export/"
  command = "pnpm docs:build"
  functions = "netlify/functions"

[build.environment]
  NODE_VERSION = 20
  PNPM_FLAGS = "--shamefully-hoist"

[[plugins]]
  package = "./packages/netlify-plugin-cache-docs"

[dev]
  port = 8888
"#,
        );
        assert_eq!(config.build.output_dir, some("docs/export"));
        assert_eq!(config.environment["NODE_VERSION"], "20");
        assert_eq!(
            config.warnings,
            [
                "netlify.toml:4: \"build.functions\" is not supported here and is ignored",
                "netlify.toml:10: \"plugins\" is not supported here and is ignored",
                "netlify.toml:13: \"dev\" is not supported here and is ignored",
            ]
        );
    }

    /// Modelled on the old docs' sample (styleguidist/react-styleguidist): publish repeats base.
    #[test]
    fn publish_repeating_base_keeps_the_rule_and_warns() {
        let config = netlify(
            r#"[build]
base = "site/"
publish = "site/build/"
command = "npm run deploy"
"#,
        );
        assert_eq!(config.build.root_dir, some("site"));
        assert_eq!(config.build.output_dir, some("site/build"));
        assert_eq!(
            config.warnings,
            [
                "netlify.toml:3: build.publish \"site/build\" starts with base \"site\", but \
              publish is relative to base, so the site is published from \"site/site/build\"; \
              if you meant \"site/build\", write publish = \"build\""
            ]
        );
    }

    #[test]
    fn netlify_paths_are_normalized() {
        let config = netlify("[build]\nbase = \"./apps//web/\"\npublish = \"/public\"\n");
        assert_eq!(config.build.root_dir, some("apps/web"));
        assert_eq!(config.build.output_dir, some("public"));
        let config = netlify("[build]\nbase = \"\"\npublish = \"out/../dist\"\n");
        assert_eq!(config.build.root_dir, None);
        assert_eq!(config.build.output_dir, some("dist"));
    }

    #[test]
    fn forward_rule_may_leave_out_to() {
        let config = netlify("[[redirects]]\nfrom = \"/blog/*\"\nstatus = 200\n");
        assert_eq!(config.routing.redirects[0].to, "/blog/:splat");
        let error = netlify_error("\n[[redirects]]\nfrom = \"/old\"\n");
        assert_eq!(
            error,
            "netlify.toml:2: redirects[0] needs \"to\" (only a \"/*\" rule with a 2xx status may leave it out)"
        );
    }

    #[test]
    fn redirect_conditions_query_and_proxy_headers() {
        let config = netlify(
            r#"[[redirects]]
  from = "/store"
  to = "/blog/:id"
  query = {id = ":id"}
  status = 302
  conditions = {language = "en, es", Country = ["US"], Cookie = ["ab_test"]}

[[redirects]]
  from = "/api/*"
  to = "https://api.example.com/:splat"
  status = 200
  force = true
  signed = "API_SIGNATURE_TOKEN"
  headers = {X-From = "Netlify"}
"#,
        );
        let [store, api] = config.routing.redirects.as_slice() else {
            panic!()
        };
        assert_eq!(store.status, 302);
        assert_eq!(store.query, vars(&[("id", ":id")]));
        let conditions: Vec<(&str, Vec<&str>)> = store
            .conditions
            .iter()
            .map(|(k, v)| (k.as_str(), v.iter().map(String::as_str).collect()))
            .collect();
        assert_eq!(
            conditions,
            [
                ("Cookie", vec!["ab_test"]),
                ("Country", vec!["US"]),
                ("Language", vec!["en", "es"])
            ]
        );
        assert_eq!(api.signed, some("API_SIGNATURE_TOKEN"));
        assert_eq!(api.headers, vars(&[("X-From", "Netlify")]));
        assert!(api.force);
    }

    #[test]
    fn netlify_errors_name_the_line_and_the_field() {
        assert_eq!(
            netlify_error("[build]\ncommand = \"npm run build\"\npublish = 3\n"),
            "netlify.toml:3: build.publish must be a string, found an integer"
        );
        assert_eq!(
            netlify_error("[build]\npublish = \"../dist\"\n"),
            "netlify.toml:2: build.publish must stay inside the base folder (the repository when \
             base is not set), but \"..\" climbs out of it, found \"../dist\""
        );
        assert_eq!(
            netlify_error("[context.production]\nbase = \"apps/../../up\"\n"),
            "netlify.toml:2: context.production.base must stay inside the repository, but \"..\" \
             climbs out of it, found \"apps/../../up\""
        );
        assert_eq!(
            netlify_error("[build]\npublish = 'dist\\site'\n"),
            "netlify.toml:2: build.publish must use / between folders, not \\, found \"dist\\site\""
        );
        assert_eq!(
            netlify_error("[[redirects]]\nfrom = \"/a\"\nto = \"/b\"\nstatus = \"301\"\n"),
            "netlify.toml:4: redirects[0].status must be an integer (e.g. 301), found a string"
        );
        assert_eq!(
            netlify_error("[[redirects]]\nfrom = \"/a\"\nto = \"/b\"\nstatus = 3010\n"),
            "netlify.toml:4: redirects[0].status must be an HTTP status between 100 and 599, found 3010"
        );
        assert_eq!(
            netlify_error("[build.environment]\nNODE-VERSION = \"20\"\n"),
            "netlify.toml:2: build.environment: \"NODE-VERSION\" is not a valid variable name: \
             names must match [A-Za-z_][A-Za-z0-9_]* (at most 256 characters)"
        );
        assert_eq!(
            netlify_error("[build]\nenvironment = { NODE_VERSION = [20] }\n"),
            "netlify.toml:2: build.environment.NODE_VERSION must be a string, found an array"
        );
        assert_eq!(
            netlify_error("build = \"npm run build\"\n"),
            "netlify.toml:1: build must be a table, found a string"
        );
        assert_eq!(
            netlify_error("[[headers]]\nfor = \"/*\"\nvalues = { X-Frame-Options = 1 }\n"),
            "netlify.toml:3: headers[0].values.X-Frame-Options must be a string, found an integer"
        );
    }

    #[test]
    fn bad_toml_says_where() {
        let error = parse_netlify_toml("[build]\ncommand = \"npm run build\npublish = \"dist\"\n")
            .expect_err("unterminated string");
        assert_eq!(error.line, Some(2), "{error}");
        assert!(error.message.starts_with("not valid TOML: "), "{error}");
        assert_eq!(error.fault(), Fault::User);
        assert!(!error.retryable());

        let error =
            parse_netlify_toml("[build]\npublish = \"a\"\n[build]\n").expect_err("duplicate");
        assert_eq!(error.line, Some(3), "{error}");
    }

    /// Modelled on withastro/docs: a build command, clean URLs with trailing slashes, and
    /// redirects, one of them to a 404 status.
    #[test]
    fn astro_docs_redirects() {
        let config = vercel(
            r#"{
  "$schema": "https://openapi.vercel.sh/vercel.json",

  "buildCommand": "NODE_OPTIONS=--max_old_space_size=4096 pnpm build",

  "trailingSlash": true,
  "cleanUrls": true,

  "redirects": [
    {
      "source": "/reference/renderer-reference",
      "destination": "/en/reference/integrations-reference"
    },
    { "source": "/docs/:path", "destination": "/:path" },
    { "source": "/:lang/(.*)", "destination": "/:lang/404/", "statusCode": 404 }
  ]
}"#,
        );
        assert_eq!(config.file, ConfigFile::VercelJson);
        assert_eq!(
            config.build.build_command,
            some("NODE_OPTIONS=--max_old_space_size=4096 pnpm build")
        );
        assert_eq!(config.routing.trailing_slash, Some(true));
        assert_eq!(config.routing.clean_urls, Some(true));
        let statuses: Vec<u16> = config.routing.redirects.iter().map(|r| r.status).collect();
        assert_eq!(statuses, [308, 308, 404]);
        assert_eq!(
            config.routing.redirects[0].source.to_string(),
            "vercel.json:10"
        );
        assert_eq!(config.routing.redirects[2].source.line, 15);
        assert!(config.warnings.is_empty(), "{:?}", config.warnings);
        assert_eq!(
            config.build_for_context("production", "main").build,
            config.build
        );
    }

    /// Modelled on a Next.js app's vercel.json: framework, install command, functions and
    /// regions (ours to ignore), headers, a host-conditioned rewrite, a temporary redirect.
    #[test]
    fn nextjs_app_with_rewrites_and_headers() {
        let config = vercel(
            r#"{
  "version": 2,
  "framework": "nextjs",
  "installCommand": "npm install --legacy-peer-deps",
  "buildCommand": "npm run build",
  "devCommand": "next dev",
  "outputDirectory": ".next",
  "regions": ["iad1"],
  "functions": { "app/api/**": { "maxDuration": 30 } },
  "build": { "env": { "NEXT_TELEMETRY_DISABLED": "1" } },
  "headers": [
    {
      "source": "/(.*)",
      "headers": [
        { "key": "X-Content-Type-Options", "value": "nosniff" },
        { "key": "X-Frame-Options", "value": "DENY" }
      ]
    }
  ],
  "rewrites": [
    { "source": "/:path*", "has": [{ "type": "host", "value": "en.example.net" }], "destination": "/en/:path*" },
    { "source": "/(.*)", "destination": "/" }
  ],
  "redirects": [
    { "source": "/.well-known/farcaster.json", "destination": "https://api.example.com/manifest", "permanent": false }
  ]
}"#,
        );
        assert_eq!(config.build.framework, some("nextjs"));
        assert_eq!(
            config.build.install_command,
            some("npm install --legacy-peer-deps")
        );
        assert_eq!(config.build.output_dir, some(".next"));
        assert_eq!(
            config.environment,
            vars(&[("NEXT_TELEMETRY_DISABLED", "1")])
        );
        assert_eq!(config.routing.redirects[0].status, 307);
        let [host, fallback] = config.routing.rewrites.as_slice() else {
            panic!()
        };
        assert_eq!(
            host.has,
            Some(serde_json::json!([{ "type": "host", "value": "en.example.net" }]))
        );
        assert_eq!((host.to.as_str(), host.source.line), ("/en/:path*", 21));
        assert_eq!(
            (fallback.from.as_str(), fallback.has.clone()),
            ("/(.*)", None)
        );
        let [headers] = config.routing.headers.as_slice() else {
            panic!()
        };
        assert_eq!(
            headers.headers[1],
            ("X-Frame-Options".into(), "DENY".into())
        );
        assert_eq!(
            config.warnings,
            [
                "vercel.json:2: \"version\" is not supported here and is ignored",
                "vercel.json:8: \"regions\" is not supported here and is ignored",
                "vercel.json:9: \"functions\" is not supported here and is ignored",
            ]
        );
    }

    #[test]
    fn vercel_nulls_and_other_framework() {
        let config = vercel(
            r#"{ "framework": null, "buildCommand": null, "installCommand": "", "outputDirectory": "public/" }"#,
        );
        assert_eq!(config.build.framework, some("other"));
        assert_eq!(config.build.build_command, None);
        assert_eq!(config.build.install_command, some(""));
        assert_eq!(config.build.output_dir, some("public"));
        assert_eq!(config.build.root_dir, None);
    }

    #[test]
    fn vercel_errors_name_the_line_and_the_field() {
        assert_eq!(
            vercel_error("{\n  \"outputDirectory\": \"/dist\"\n}"),
            "vercel.json:2: outputDirectory must be a folder relative to the project's root \
             directory, not an absolute path, found \"/dist\""
        );
        assert_eq!(
            vercel_error("{\n  \"outputDirectory\": \"../dist\"\n}"),
            "vercel.json:2: outputDirectory must stay inside the project's root directory, but \
             \"..\" climbs out of it, found \"../dist\""
        );
        assert_eq!(
            vercel_error("{\n  \"buildCommand\": 42\n}"),
            "vercel.json:2: buildCommand must be a string, found a number"
        );
        assert_eq!(
            vercel_error("{\n  \"cleanUrls\": \"yes\"\n}"),
            "vercel.json:2: cleanUrls must be true or false, found a string"
        );
        assert_eq!(
            vercel_error(
                "{\"redirects\": [\n {\"source\": \"/a\", \"destination\": \"/b\", \"permanent\": true, \"statusCode\": 301}]}"
            ),
            "vercel.json:2: redirects[0] sets both statusCode and permanent; Vercel allows one of them"
        );
        assert_eq!(
            vercel_error("{\"rewrites\": [\n\n {\"source\": \"/a\"}]}"),
            "vercel.json:3: rewrites[0] needs \"destination\""
        );
        assert_eq!(
            vercel_error("{\"headers\": [{\"source\": \"/a\", \"headers\": {\"key\": \"X\"}}]}"),
            "vercel.json:1: headers[0].headers must be an array, found an object"
        );
        assert_eq!(
            vercel_error("[]"),
            "vercel.json:1: the file must be an object, found an array"
        );
    }

    #[test]
    fn bad_json_says_where() {
        let error = parse_vercel_json("{\n  \"buildCommand\": \"npm run build\",\n}\n")
            .expect_err("trailing comma");
        assert_eq!(error.line, Some(3), "{error}");
        assert_eq!(
            error.to_string(),
            "vercel.json:3: not valid JSON at column 1: a comma after the last entry, which JSON \
             does not allow"
        );
        let error = vercel_error("{\"regions\": [\"iad1\", ]}");
        assert_eq!(
            error,
            "vercel.json:1: not valid JSON at column 22: a comma after the last entry, which \
             JSON does not allow"
        );
        let error = vercel_error("{\n  \"cleanUrls\": true\n  \"trailingSlash\": false\n}");
        assert_eq!(
            error,
            "vercel.json:3: not valid JSON at column 3: expected `,` or `}`"
        );
    }

    #[test]
    fn json_strings_keep_escapes_and_duplicates_take_the_last() {
        let config = vercel(
            "\u{feff}{\"buildCommand\": \"echo \\\"hi\\\" \\u00e9\", \"buildCommand\": \"make\",\n \"outputDirectory\": \"d\u{e9}j\u{e0}\"}",
        );
        assert_eq!(config.build.build_command, some("make"));
        assert_eq!(config.build.output_dir, some("d\u{e9}j\u{e0}"));
        let config = vercel("{\"buildCommand\": \"echo \\\"hi\\\" \\u00e9\"}");
        assert_eq!(config.build.build_command, some("echo \"hi\" \u{e9}"));
    }

    #[test]
    fn netlify_toml_wins_when_both_files_exist() {
        assert_eq!(which_config(true, true), Some(ConfigFile::NetlifyToml));
        assert_eq!(which_config(true, false), Some(ConfigFile::VercelJson));
        assert_eq!(which_config(false, true), Some(ConfigFile::NetlifyToml));
        assert_eq!(which_config(false, false), None);

        let vercel_json = r#"{ "outputDirectory": "out" }"#;
        let netlify_toml = "[build]\npublish = \"dist\"\n";
        let config = parse_project_config(Some(vercel_json), Some(netlify_toml))
            .expect("parses")
            .expect("a config");
        assert_eq!(config.file, ConfigFile::NetlifyToml);
        assert_eq!(config.build.output_dir, some("dist"));
        assert_eq!(config.warnings.len(), 1);
        assert!(
            config.warnings[0].starts_with("vercel.json: ignored"),
            "{:?}",
            config.warnings
        );

        let config = parse_project_config(Some(vercel_json), None).expect("parses");
        assert_eq!(config.map(|c| c.file), Some(ConfigFile::VercelJson));
        assert_eq!(parse_project_config(None, None), Ok(None));
        // The ignored file is not read, so its mistakes don't matter.
        assert!(parse_project_config(Some("{"), Some(netlify_toml)).is_ok());
    }
}
