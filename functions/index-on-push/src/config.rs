//! Settings, read once at cold start from the environment. A bad value stops the function before it
//! takes any event, with a message that names the variable.

use std::fmt;

use app::settings::{self, SettingError};
pub use app::DEFAULT_BUILD_TOOL;
use index::{CreateOptions, IndexVersion};

use crate::filter::Filters;

/// Where the images are, when not in the event's account's ECR registry (local runs and tests).
pub type RegistryOverride = app::Endpoint;

/// The default of `SOCI_UNTAGGED_OLDER_THAN`.
pub const DEFAULT_UNTAGGED_OLDER_THAN: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// Everything the function is told through its environment.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// `SOCI_FILTERS`: which `repository:tag` pushes to index (default `*:*`).
    pub filters: Filters,
    /// `SOCI_INDEX_VERSION`: `v2` (default) or `v1`.
    pub index_version: IndexVersion,
    /// `SOCI_MIN_LAYER_SIZE`: smaller layers (compressed bytes) get no zTOC (default 10 MiB).
    pub min_layer_size: u64,
    /// `SOCI_SPAN_SIZE`: uncompressed bytes between zTOC checkpoints (default 4 MiB).
    pub span_size: u64,
    /// `SOCI_MAX_ZTOC_SIZE`: a layer whose zTOC would be larger is left out (default 128 MiB).
    pub max_ztoc_size: u64,
    /// `SOCI_TAG_SUFFIX`: v2 pushes `<tag><suffix>` (default `-soci`); tags ending in it are skipped.
    pub tag_suffix: String,
    /// `SOCI_CONCURRENCY`: layers built at once (default: one per core).
    pub concurrency: usize,
    /// `SOCI_MAX_CONNECTIONS`: layer downloads in flight at once, their ranges included (default 16).
    pub max_connections: usize,
    /// `SOCI_MAX_WRITE_RATE`: manifest writes a second to one registry for the reconcile (background
    /// work; default 3, under ECR's `PutImage` quota of 10 a second per account), so that a backfill
    /// leaves most of the quota to pushes. Events are not held under it.
    pub max_write_rate: f64,
    /// `SOCI_UNTAGGED_OLDER_THAN`: the reconcile removes untagged SOCI output pushed longer ago than
    /// this that nothing uses (default 24h: far longer than any run, whose manifests are untagged until
    /// its tag moves).
    pub untagged_older_than: std::time::Duration,
    /// `SOCI_BUILD_TOOL_IDENTIFIER`: written into zTOCs and SOCI indexes.
    pub build_tool_identifier: String,
    /// `LOG_LEVEL`: a level (`info`, `debug`, ...) or `tracing` filter directives.
    pub log_filter: String,
    /// `SOCI_REGISTRY_URL`: index images in this registry instead of the event's ECR registry.
    pub registry_override: Option<RegistryOverride>,
    /// `SOCI_COMPLETION_EVENT_BUS`: the EventBridge bus (name or ARN) that gets a `SOCI Index Action`
    /// event after each ECR event handled; unset or empty: none is sent.
    pub completion_event_bus: Option<String>,
    /// `SOCI_ZTOC_CACHE_TABLE`: the DynamoDB table (name or ARN) of the zTOC cache; unset or empty: no
    /// cache, every layer is built.
    pub ztoc_cache_table: Option<String>,
    /// `SOCI_RECONCILE_QUEUE_URL`: the SQS queue a reconcile request fills with one message per
    /// repository, and which the function consumes; unset or empty: reconcile requests fail.
    pub reconcile_queue_url: Option<String>,
}

/// A setting that cannot be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The environment variable.
    pub variable: &'static str,
    /// What is wrong with it.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.variable, self.message)
    }
}

impl std::error::Error for ConfigError {}

fn error(variable: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError { variable, message: message.into() }
}

/// Parses a variable's value (if set) with the rule the CLI uses for the same setting.
fn read<T>(
    value: Option<(&'static str, String)>,
    parse: impl Fn(&str) -> Result<T, SettingError>,
) -> Result<Option<T>, ConfigError> {
    value.map(|(name, v)| parse(&v).map_err(|e| error(name, e.0))).transpose()
}

impl Config {
    /// Reads the settings from the process environment.
    pub fn from_env() -> Result<Config, ConfigError> {
        Config::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the settings through `lookup` (the environment, or a map in tests). Unset and empty
    /// variables take their defaults.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let get = |name: &str| lookup(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());

        let filters = match get("SOCI_FILTERS") {
            Some(list) => Filters::parse(&list).map_err(|e| error("SOCI_FILTERS", e.to_string()))?,
            None => Filters::default(),
        };
        let parsed = |name: &'static str| get(name).map(|v| (name, v));
        let index_version =
            read(parsed("SOCI_INDEX_VERSION"), settings::parse_index_version)?.unwrap_or(IndexVersion::V2);
        let min_layer_size = read(parsed("SOCI_MIN_LAYER_SIZE"), settings::parse_min_layer_size)?
            .unwrap_or(index::DEFAULT_MIN_LAYER_SIZE);
        let span_size =
            read(parsed("SOCI_SPAN_SIZE"), settings::parse_span_size)?.unwrap_or(ztoc::DEFAULT_SPAN_SIZE);
        let max_ztoc_size = read(parsed("SOCI_MAX_ZTOC_SIZE"), |v| settings::parse_bytes(v, 1))?
            .unwrap_or(index::DEFAULT_MAX_ZTOC_SIZE);
        let tag_suffix = read(parsed("SOCI_TAG_SUFFIX"), settings::parse_tag_suffix)?
            .unwrap_or_else(|| index::DEFAULT_TAG_SUFFIX.into());
        let concurrency = read(parsed("SOCI_CONCURRENCY"), settings::parse_concurrency)?
            .unwrap_or_else(index::default_concurrency);
        let max_connections = read(parsed("SOCI_MAX_CONNECTIONS"), settings::parse_max_connections)?
            .unwrap_or(registry::DEFAULT_MAX_CONNECTIONS);
        let max_write_rate = read(parsed("SOCI_MAX_WRITE_RATE"), settings::parse_write_rate)?
            .unwrap_or(settings::DEFAULT_MAX_WRITE_RATE);
        let untagged_older_than = read(parsed("SOCI_UNTAGGED_OLDER_THAN"), settings::parse_duration)?
            .unwrap_or(DEFAULT_UNTAGGED_OLDER_THAN);
        let build_tool_identifier =
            get("SOCI_BUILD_TOOL_IDENTIFIER").unwrap_or_else(|| DEFAULT_BUILD_TOOL.into());
        let log_filter = log_filter(get("LOG_LEVEL").as_deref().unwrap_or("info"))?;
        let registry_override = read(parsed("SOCI_REGISTRY_URL"), RegistryOverride::parse)?;
        let completion_event_bus = read(parsed("SOCI_COMPLETION_EVENT_BUS"), parse_event_bus)?;
        let ztoc_cache_table = read(parsed("SOCI_ZTOC_CACHE_TABLE"), parse_table)?;
        let reconcile_queue_url = read(parsed("SOCI_RECONCILE_QUEUE_URL"), parse_queue_url)?;
        Ok(Config {
            filters,
            index_version,
            min_layer_size,
            span_size,
            max_ztoc_size,
            tag_suffix,
            concurrency,
            max_connections,
            max_write_rate,
            untagged_older_than,
            build_tool_identifier,
            log_filter,
            registry_override,
            completion_event_bus,
            ztoc_cache_table,
            reconcile_queue_url,
        })
    }

    /// What `index::create` is asked to make: the engine's defaults for what no setting names (every
    /// platform, no rebuild), no zTOC cache (the handler adds it).
    pub fn create_options(&self) -> CreateOptions {
        CreateOptions {
            index_version: self.index_version,
            min_layer_size: self.min_layer_size,
            span_size: self.span_size,
            max_ztoc_size: self.max_ztoc_size,
            tag_suffix: self.tag_suffix.clone(),
            concurrency: self.concurrency,
            ..CreateOptions::new(self.build_tool_identifier.clone())
        }
    }
}

/// An EventBridge bus: a name (1 to 256 of `A-Z a-z 0-9 . - _ /`) or an ARN (up to 1600 characters).
fn parse_event_bus(text: &str) -> Result<String, SettingError> {
    let name = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '/');
    let valid = if text.starts_with("arn:") {
        text.len() <= 1600 && text.contains(":event-bus/") && !text.contains(char::is_whitespace)
    } else {
        text.len() <= 256 && text.chars().all(name)
    };
    if valid {
        Ok(text.to_owned())
    } else {
        Err(SettingError(format!(
            "expected an EventBridge bus name (e.g. default) or ARN (arn:aws:events:REGION:ACCOUNT:event-bus/NAME), \
             got {text:?}"
        )))
    }
}

/// An SQS queue URL (`https://sqs.REGION.amazonaws.com/ACCOUNT/NAME`, or a local stand-in's).
fn parse_queue_url(text: &str) -> Result<String, SettingError> {
    let valid = (text.starts_with("https://") || text.starts_with("http://"))
        && text.len() <= 2048
        && !text.contains(char::is_whitespace)
        && text.rsplit('/').next().is_some_and(|name| !name.is_empty());
    if valid {
        Ok(text.to_owned())
    } else {
        Err(SettingError(format!(
            "expected an SQS queue URL (https://sqs.REGION.amazonaws.com/ACCOUNT/NAME), got {text:?}"
        )))
    }
}

/// A DynamoDB table: a name (3 to 255 of `A-Z a-z 0-9 . - _`) or an ARN (up to 1024 characters).
fn parse_table(text: &str) -> Result<String, SettingError> {
    let name = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_');
    let valid = if text.starts_with("arn:") {
        text.len() <= 1024 && text.contains(":table/") && !text.contains(char::is_whitespace)
    } else {
        (3..=255).contains(&text.len()) && text.chars().all(name)
    };
    if valid {
        Ok(text.to_owned())
    } else {
        Err(SettingError(format!(
            "expected a DynamoDB table name (3 to 255 characters of A-Z a-z 0-9 . - _) or ARN \
             (arn:aws:dynamodb:REGION:ACCOUNT:table/NAME), got {text:?}"
        )))
    }
}

/// `LOG_LEVEL` as `tracing` directives. A bare level applies to this function and the soci-indexer
/// libraries; the AWS SDK and HTTP stacks stay at `warn` unless named in full directives, and never go
/// below `info` whatever they say ([`crate::logging`]).
fn log_filter(value: &str) -> Result<String, ConfigError> {
    const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];
    let lower = value.to_ascii_lowercase();
    if LEVELS.contains(&lower.as_str()) {
        return Ok(format!("warn,index_on_push={lower},index={lower},registry={lower}"));
    }
    match tracing_subscriber::EnvFilter::try_new(value) {
        Ok(_) if value.contains('=') => Ok(value.to_owned()),
        _ => Err(error(
            "LOG_LEVEL",
            format!("expected trace, debug, info, warn, error or off (or tracing directives), got {value:?}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn defaults() {
        let config = config(&[]).unwrap();
        assert_eq!(config.filters, Filters::default());
        assert_eq!(config.index_version, IndexVersion::V2);
        assert_eq!(config.min_layer_size, 10 << 20);
        assert_eq!(config.span_size, 4 << 20);
        assert_eq!(config.tag_suffix, "-soci");
        assert!(config.concurrency >= 1);
        assert_eq!(config.max_connections, 16);
        assert_eq!(config.max_write_rate, 3.0);
        assert_eq!(config.untagged_older_than, std::time::Duration::from_secs(86_400));
        assert_eq!(config.build_tool_identifier, DEFAULT_BUILD_TOOL);
        assert_eq!(config.log_filter, "warn,index_on_push=info,index=info,registry=info");
        assert_eq!(config.registry_override, None);
        assert_eq!((&config.completion_event_bus, &config.ztoc_cache_table), (&None, &None));
        assert_eq!(config.reconcile_queue_url, None);
        assert_eq!(config.max_ztoc_size, index::DEFAULT_MAX_ZTOC_SIZE);
        let options = config.create_options();
        assert!(!options.force && options.platforms.is_empty());
        assert_eq!(options.max_ztoc_size, index::DEFAULT_MAX_ZTOC_SIZE);
    }

    #[test]
    fn every_setting_is_read() {
        let config = config(&[
            ("SOCI_FILTERS", "prod*:latest,!prod-x:*"),
            ("SOCI_INDEX_VERSION", "V1"),
            ("SOCI_MIN_LAYER_SIZE", "5MiB"),
            ("SOCI_SPAN_SIZE", "65536"),
            ("SOCI_TAG_SUFFIX", ".lazy"),
            ("SOCI_CONCURRENCY", "3"),
            ("SOCI_MAX_CONNECTIONS", "40"),
            ("SOCI_MAX_WRITE_RATE", "0.5"),
            ("SOCI_UNTAGGED_OLDER_THAN", "2h"),
            ("SOCI_BUILD_TOOL_IDENTIFIER", "my builder"),
            ("LOG_LEVEL", "DEBUG"),
            ("SOCI_REGISTRY_URL", "http://127.0.0.1:5000/"),
            ("SOCI_COMPLETION_EVENT_BUS", "deployments"),
            ("SOCI_ZTOC_CACHE_TABLE", "soci-ztoc-cache"),
            ("SOCI_MAX_ZTOC_SIZE", "64MiB"),
            ("SOCI_RECONCILE_QUEUE_URL", "https://sqs.us-east-1.amazonaws.com/123456789012/work"),
        ])
        .unwrap();
        assert_eq!(config.max_ztoc_size, 64 << 20);
        assert_eq!(config.create_options().max_ztoc_size, 64 << 20);
        assert!(config.reconcile_queue_url.as_deref().is_some_and(|url| url.ends_with("/work")));
        assert!(config.filters.selects("prod-api", "latest") && !config.filters.selects("prod-x", "latest"));
        assert_eq!(config.index_version, IndexVersion::V1);
        assert_eq!(config.min_layer_size, 5 << 20);
        assert_eq!(config.span_size, 65536);
        assert_eq!(config.tag_suffix, ".lazy");
        assert_eq!(config.concurrency, 3);
        assert_eq!(config.max_connections, 40);
        assert_eq!(config.max_write_rate, 0.5);
        assert_eq!(config.untagged_older_than, std::time::Duration::from_secs(7200));
        assert_eq!(config.build_tool_identifier, "my builder");
        assert_eq!(config.log_filter, "warn,index_on_push=debug,index=debug,registry=debug");
        assert_eq!(
            config.registry_override,
            Some(RegistryOverride { host: "127.0.0.1:5000".into(), plain_http: true })
        );
        assert_eq!(config.completion_event_bus.as_deref(), Some("deployments"));
        assert_eq!(config.ztoc_cache_table.as_deref(), Some("soci-ztoc-cache"));
        let options = config.create_options();
        assert_eq!(
            (options.index_version, options.min_layer_size, options.span_size),
            (IndexVersion::V1, 5 << 20, 65536)
        );
        assert_eq!((options.tag_suffix.as_str(), options.concurrency), (".lazy", 3));
    }

    #[test]
    fn registry_urls() {
        let https = config(&[("SOCI_REGISTRY_URL", "https://registry.example.com")]).unwrap();
        assert_eq!(
            https.registry_override,
            Some(RegistryOverride { host: "registry.example.com".into(), plain_http: false })
        );
        let bare = config(&[("SOCI_REGISTRY_URL", "localhost:5000")]).unwrap();
        assert_eq!(
            bare.registry_override,
            Some(RegistryOverride { host: "localhost:5000".into(), plain_http: false })
        );
        assert!(config(&[("LOG_LEVEL", "warn,index_on_push=trace")]).is_ok());
        // Empty means unset (templates pass "" for parameters left blank).
        let blank =
            config(&[("SOCI_TAG_SUFFIX", ""), ("SOCI_FILTERS", " "), ("SOCI_INDEX_VERSION", "")]).unwrap();
        assert_eq!((blank.tag_suffix.as_str(), blank.index_version), ("-soci", IndexVersion::V2));
        // The template passes "" to turn the completion event and the cache off.
        let off = config(&[("SOCI_COMPLETION_EVENT_BUS", ""), ("SOCI_ZTOC_CACHE_TABLE", "")]).unwrap();
        assert_eq!((off.completion_event_bus, off.ztoc_cache_table), (None, None));
        let arns = config(&[
            ("SOCI_COMPLETION_EVENT_BUS", "arn:aws:events:eu-west-1:210987654321:event-bus/central"),
            ("SOCI_ZTOC_CACHE_TABLE", "arn:aws:dynamodb:us-east-1:123456789012:table/ztocs"),
        ])
        .unwrap();
        assert!(arns.completion_event_bus.is_some_and(|bus| bus.ends_with("event-bus/central")));
        assert!(arns.ztoc_cache_table.is_some_and(|table| table.ends_with("table/ztocs")));
    }

    #[test]
    fn bad_settings_name_their_variable() {
        let cases: &[(&str, &str, &str)] = &[
            ("SOCI_FILTERS", "myrepo", "can never match"),
            ("SOCI_INDEX_VERSION", "v3", "expected v2 or v1"),
            ("SOCI_MIN_LAYER_SIZE", "ten", "expected a number of bytes"),
            ("SOCI_MIN_LAYER_SIZE", "-1", "expected a number of bytes"),
            ("SOCI_MIN_LAYER_SIZE", "10 parsecs", "expected a number of bytes"),
            ("SOCI_SPAN_SIZE", "0", "at least 1"),
            ("SOCI_SPAN_SIZE", "99999999999999999999", "expected a number of bytes"),
            ("SOCI_TAG_SUFFIX", "-so ci", "A-Z a-z 0-9"),
            ("SOCI_TAG_SUFFIX", "/soci", "A-Z a-z 0-9"),
            ("SOCI_CONCURRENCY", "0", "from 1 to 256"),
            ("SOCI_CONCURRENCY", "many", "from 1 to 256"),
            ("SOCI_MAX_CONNECTIONS", "0", "from 1 to 1024"),
            ("SOCI_MAX_WRITE_RATE", "0", "manifest writes a second above 0"),
            ("SOCI_UNTAGGED_OLDER_THAN", "a day", "expected a duration"),
            ("SOCI_MAX_WRITE_RATE", "fast", "manifest writes a second above 0"),
            ("LOG_LEVEL", "verbose", "expected trace, debug"),
            ("SOCI_REGISTRY_URL", "ftp://host", "http:// or https://"),
            ("SOCI_REGISTRY_URL", "http://host/path", "without a path"),
            ("SOCI_REGISTRY_URL", "http://", "without a path"),
            ("SOCI_COMPLETION_EVENT_BUS", "my bus", "expected an EventBridge bus name"),
            ("SOCI_COMPLETION_EVENT_BUS", "arn:aws:sqs:us-east-1:1:q", "expected an EventBridge bus name"),
            ("SOCI_ZTOC_CACHE_TABLE", "ab", "expected a DynamoDB table name"),
            ("SOCI_MAX_ZTOC_SIZE", "big", "expected a number of bytes"),
            ("SOCI_MAX_ZTOC_SIZE", "0", "at least 1"),
            ("SOCI_RECONCILE_QUEUE_URL", "work-queue", "expected an SQS queue URL"),
            ("SOCI_ZTOC_CACHE_TABLE", "zt\u{f6}cs", "expected a DynamoDB table name"),
        ];
        for (variable, value, expected) in cases {
            let error = config(&[(variable, value)]).unwrap_err();
            assert_eq!(error.variable, *variable, "{variable}={value:?}");
            let text = error.to_string();
            assert!(text.starts_with(&format!("{variable}: ")), "{text}");
            assert!(text.contains(expected), "{variable}={value:?}: {text}");
        }
    }
}
