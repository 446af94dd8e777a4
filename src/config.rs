//! The gateway's configuration: the TOML schema, its defaults, and validation that names
//! the file, line and key of every problem.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::uri::{Authority, Scheme};
use http::Uri;
use serde::Deserialize;

/// Everything `config.toml` can say. Field docs mirror the commented `config.toml`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Config {
    pub server: ServerConfig,
    pub upstream: UpstreamConfig,
    pub log: LogConfig,
}

/// The listeners callers and operators connect to, and the bounds on what callers send.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct ServerConfig {
    /// Address callers use as their HubSpot base URL.
    pub listen: String,
    /// Address of the admin listener (`/healthz`, `/readyz`, `/metrics`).
    pub admin_listen: String,
    /// Largest request body accepted; larger ones get 413.
    pub max_body_bytes: u64,
    /// Largest total size of request headers (names + values) accepted; larger get 431.
    pub max_header_bytes: usize,
    /// A caller must finish sending request headers within this time.
    pub header_read_timeout_ms: u64,
    /// On SIGTERM/SIGINT, in-flight requests get this long to finish.
    pub shutdown_grace_ms: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:8080".into(),
            admin_listen: "127.0.0.1:9090".into(),
            max_body_bytes: 256 * 1024 * 1024,
            max_header_bytes: 64 * 1024,
            header_read_timeout_ms: 10_000,
            shutdown_grace_ms: 30_000,
        }
    }
}

/// Where calls are forwarded and how the pooled client behaves.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct UpstreamConfig {
    /// HubSpot's API base URL (or the simulator's); `http://` is allowed for tests.
    pub base_url: String,
    /// Extra PEM bundle of CAs to trust besides the webpki roots; empty for none.
    pub ca_file: String,
    /// Time allowed to open a TCP (and TLS) connection to the upstream; past it: 502.
    pub connect_timeout_ms: u64,
    /// Time allowed from sending a call until the upstream's response headers arrive,
    /// upload included; past it: 504.
    pub response_timeout_ms: u64,
    /// Idle pooled connections are closed after this long.
    pub pool_idle_timeout_ms: u64,
    /// At most this many idle connections are kept per upstream host.
    pub pool_max_idle_per_host: usize,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        UpstreamConfig {
            base_url: "https://api.hubapi.com".into(),
            ca_file: String::new(),
            connect_timeout_ms: 5_000,
            response_timeout_ms: 60_000,
            pool_idle_timeout_ms: 90_000,
            pool_max_idle_per_host: 256,
        }
    }
}

/// How hubgate logs.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct LogConfig {
    /// `text` for people, `json` for log pipelines.
    pub format: String,
    /// A `tracing` filter such as `info` or `hubgate=debug`; `RUST_LOG` overrides it.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: "text".into(),
            level: "info".into(),
        }
    }
}

/// The upstream base URL split into what the forwarder needs.
#[derive(Debug, Clone)]
pub struct UpstreamTarget {
    pub scheme: Scheme,
    pub authority: Authority,
    /// Path prefix of the base URL without a trailing slash (usually empty).
    pub base_path: String,
}

impl UpstreamTarget {
    pub fn parse(base_url: &str) -> Result<UpstreamTarget, String> {
        let uri: Uri = base_url.parse().map_err(|e| {
            format!("'{base_url}' is not a URL ({e}); use e.g. https://api.hubapi.com")
        })?;
        let scheme = uri.scheme().cloned().ok_or_else(|| {
            format!(
                "'{base_url}' has no scheme; use https://api.hubapi.com or http://127.0.0.1:8081"
            )
        })?;
        if scheme != Scheme::HTTP && scheme != Scheme::HTTPS {
            return Err(format!("'{base_url}' must start with http:// or https://"));
        }
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| format!("'{base_url}' has no host"))?;
        if uri.query().is_some() {
            return Err(format!("'{base_url}' must not carry a query string"));
        }
        let base_path = uri.path().trim_end_matches('/').to_string();
        Ok(UpstreamTarget {
            scheme,
            authority,
            base_path,
        })
    }

    /// The host name without port, as compared against absolute-form request targets.
    pub fn host(&self) -> &str {
        self.authority.host()
    }

    pub fn display(&self) -> String {
        format!("{}://{}{}", self.scheme, self.authority, self.base_path)
    }
}

/// One thing wrong with a config file, located as precisely as the file allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted key path, e.g. `server.listen`; empty for syntax errors.
    pub key: String,
    /// 1-based line in the file, when known.
    pub line: Option<usize>,
    pub message: String,
}

/// Every problem found in one file.
#[derive(Debug, Clone)]
pub struct ConfigErrors {
    pub file: PathBuf,
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}", self.file.display())?;
            if let Some(line) = p.line {
                write!(f, ":{line}")?;
            }
            if p.key.is_empty() {
                write!(f, ": {}", p.message)?;
            } else {
                write!(f, ": {}: {}", p.key, p.message)?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl Config {
    /// Reads, parses and validates `path`, returning every problem at once.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigErrors {
            file: path.to_path_buf(),
            problems: vec![Problem {
                key: String::new(),
                line: None,
                message: format!("cannot read the file: {e}"),
            }],
        })?;
        Config::from_toml(&text).map_err(|problems| ConfigErrors {
            file: path.to_path_buf(),
            problems,
        })
    }

    /// Parses and validates TOML text. Unknown keys are problems too: a typo must not
    /// silently fall back to a default.
    pub fn from_toml(text: &str) -> Result<Config, Vec<Problem>> {
        let mut unknown = Vec::new();
        let deserializer =
            toml::Deserializer::parse(text).map_err(|e| vec![toml_problem(text, &e)])?;
        let parsed: Result<Config, _> = serde_ignored::deserialize(deserializer, |path| {
            unknown.push(path.to_string());
        });
        let config = parsed.map_err(|e| vec![toml_problem(text, &e)])?;
        let mut problems: Vec<Problem> = unknown
            .into_iter()
            .map(|key| Problem {
                key,
                line: None,
                message: "unknown key; see config.toml in the hubgate repository for every key"
                    .into(),
            })
            .collect();
        problems.extend(config.validate());
        if problems.is_empty() {
            return Ok(config);
        }
        let locator = KeyLocator::new(text);
        for p in &mut problems {
            p.line = p.line.or_else(|| locator.line_of(&p.key));
        }
        problems.sort_by_key(|p| p.line.unwrap_or(usize::MAX));
        Err(problems)
    }

    /// Semantic checks that serde cannot express.
    pub fn validate(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        let mut bad = |key: &str, message: String| {
            problems.push(Problem {
                key: key.into(),
                line: None,
                message,
            })
        };
        if let Err(e) = parse_addr(&self.server.listen) {
            bad("server.listen", e);
        }
        if let Err(e) = parse_addr(&self.server.admin_listen) {
            bad("server.admin_listen", e);
        }
        if self.server.listen == self.server.admin_listen {
            bad(
                "server.admin_listen",
                "must differ from server.listen: the admin listener is a separate port".into(),
            );
        }
        if self.server.max_body_bytes == 0 {
            bad("server.max_body_bytes", "must be greater than 0".into());
        }
        if self.server.max_header_bytes < 1024 {
            bad(
                "server.max_header_bytes",
                "must be at least 1024: HubSpot calls carry a bearer token and more".into(),
            );
        }
        if self.server.header_read_timeout_ms == 0 {
            bad(
                "server.header_read_timeout_ms",
                "must be greater than 0".into(),
            );
        }
        if let Err(e) = UpstreamTarget::parse(&self.upstream.base_url) {
            bad("upstream.base_url", e);
        }
        if !self.upstream.ca_file.is_empty() && !Path::new(&self.upstream.ca_file).is_file() {
            bad(
                "upstream.ca_file",
                format!("'{}' is not a readable file", self.upstream.ca_file),
            );
        }
        for (key, value) in [
            (
                "upstream.connect_timeout_ms",
                self.upstream.connect_timeout_ms,
            ),
            (
                "upstream.response_timeout_ms",
                self.upstream.response_timeout_ms,
            ),
        ] {
            if value == 0 {
                bad(key, "must be greater than 0".into());
            }
        }
        if !matches!(self.log.format.as_str(), "text" | "json") {
            bad(
                "log.format",
                format!(
                    "'{}' is not a log format; use \"text\" or \"json\"",
                    self.log.format
                ),
            );
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            bad(
                "log.level",
                format!(
                    "'{}' is not a tracing filter ({e}); use e.g. \"info\"",
                    self.log.level
                ),
            );
        }
        problems
    }

    /// The upstream target; only valid configs reach the gateway, so this cannot fail there.
    pub fn upstream_target(&self) -> Result<UpstreamTarget, String> {
        UpstreamTarget::parse(&self.upstream.base_url)
    }
}

impl ServerConfig {
    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_millis(self.header_read_timeout_ms)
    }
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_millis(self.shutdown_grace_ms)
    }
}

fn parse_addr(value: &str) -> Result<SocketAddr, String> {
    value
        .parse()
        .map_err(|_| format!("'{value}' is not an address like 127.0.0.1:8080 or [::1]:8080"))
}

fn toml_problem(text: &str, e: &toml::de::Error) -> Problem {
    let key = e
        .span()
        .and_then(|span| KeyLocator::new(text).key_at(span.start))
        .unwrap_or_default();
    Problem {
        key,
        line: e.span().map(|span| line_of_offset(text, span.start)),
        message: e.message().trim().to_string(),
    }
}

fn line_of_offset(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// Finds the line of a dotted key path (`server.listen`, `callers.0.name`) in the
/// original text, using `toml_edit`'s spans so formatting and comments do not matter.
struct KeyLocator<'a> {
    text: &'a str,
    document: Option<toml_edit::Document<&'a str>>,
}

impl<'a> KeyLocator<'a> {
    fn new(text: &'a str) -> Self {
        KeyLocator {
            text,
            document: toml_edit::Document::parse(text).ok(),
        }
    }

    fn line_of(&self, key_path: &str) -> Option<usize> {
        /// Array-of-tables elements are `Table`s, everything else is reached as an `Item`.
        enum Node<'d> {
            Item(&'d toml_edit::Item),
            Table(&'d toml_edit::Table),
        }
        let document = self.document.as_ref()?;
        let mut node = Node::Item(document.as_item());
        let mut best_span = None;
        for segment in key_path.split('.') {
            if let (Node::Item(toml_edit::Item::ArrayOfTables(array)), Ok(index)) =
                (&node, segment.parse::<usize>())
            {
                let Some(table) = array.get(index) else { break };
                best_span = table.span().or(best_span);
                node = Node::Table(table);
                continue;
            }
            let table_like: Option<&dyn toml_edit::TableLike> = match node {
                Node::Item(item) => item.as_table_like(),
                Node::Table(table) => Some(table),
            };
            let Some((key, value)) = table_like.and_then(|t| t.get_key_value(segment)) else {
                break;
            };
            best_span = key.span().or(value.span()).or(best_span);
            node = Node::Item(value);
        }
        best_span.map(|span| line_of_offset(self.text, span.start))
    }

    /// The dotted path of the innermost key whose value covers `offset` (where serde
    /// reported a type error), so that such errors name their key too.
    fn key_at(&self, offset: usize) -> Option<String> {
        fn search(table: &dyn toml_edit::TableLike, offset: usize, path: &mut Vec<String>) -> bool {
            for (key, item) in table.iter() {
                let covers = item.span().is_some_and(|s| s.contains(&offset));
                path.push(key.to_string());
                match item {
                    toml_edit::Item::ArrayOfTables(array) => {
                        for (index, element) in array.iter().enumerate() {
                            path.push(index.to_string());
                            if search(element, offset, path) {
                                return true;
                            }
                            path.pop();
                        }
                    }
                    _ => {
                        if let Some(inner) = item.as_table_like() {
                            if search(inner, offset, path) {
                                return true;
                            }
                        }
                    }
                }
                if covers && item.as_table_like().is_none() {
                    return true;
                }
                path.pop();
            }
            false
        }
        let document = self.document.as_ref()?;
        let mut path = Vec::new();
        search(document.as_table(), offset, &mut path).then(|| path.join("."))
    }
}
