//! Settings both binaries take, parsed by one rule each: the CLI calls these from clap, the Lambda from
//! its environment. Messages say what is expected; the caller names the flag or variable.

use index::{IndexVersion, MAX_CONCURRENCY};

/// The identifier written into zTOCs and SOCI indexes unless told otherwise.
pub const DEFAULT_BUILD_TOOL: &str = concat!("soci-indexer v", env!("CARGO_PKG_VERSION"));

/// The `User-Agent` of the CLI's registry requests (product/version, as HTTP wants it; the registry's
/// logs tell the CLI from the Lambda, [`LAMBDA_USER_AGENT`], by it).
pub const CLI_USER_AGENT: &str = concat!("soci-indexer/", env!("CARGO_PKG_VERSION"));
/// The `User-Agent` of the Lambda function's registry requests.
pub const LAMBDA_USER_AGENT: &str = concat!("soci-indexer-lambda/", env!("CARGO_PKG_VERSION"));

/// The longest tag suffix: a tag has at most 128 characters, and the suffix must leave room for one.
pub const MAX_TAG_SUFFIX: usize = 64;

/// A setting that cannot be used, with what was expected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SettingError(pub String);

/// `v2` or `v1`, in any case.
pub fn parse_index_version(text: &str) -> Result<IndexVersion, SettingError> {
    text.parse().map_err(|e: index::UnknownIndexVersion| SettingError(e.to_string()))
}

/// Layers built at once: 1 to [`MAX_CONCURRENCY`].
pub fn parse_concurrency(text: &str) -> Result<usize, SettingError> {
    match text.trim().parse::<usize>() {
        Ok(n) if (1..=MAX_CONCURRENCY).contains(&n) => Ok(n),
        _ => Err(SettingError(format!(
            "expected a number of layers from 1 to {MAX_CONCURRENCY}, got {text:?}"
        ))),
    }
}

/// The most blob downloads (layers and their ranges) in flight at once.
pub const MAX_CONNECTIONS: usize = 1024;
/// The most ranges of one layer in flight at once.
pub const MAX_RANGES_PER_LAYER: usize = 64;

/// Blob downloads in flight at once, layers and ranges together: 1 to [`MAX_CONNECTIONS`].
pub fn parse_max_connections(text: &str) -> Result<usize, SettingError> {
    match text.trim().parse::<usize>() {
        Ok(n) if (1..=MAX_CONNECTIONS).contains(&n) => Ok(n),
        _ => Err(SettingError(format!(
            "expected a number of connections from 1 to {MAX_CONNECTIONS}, got {text:?}"
        ))),
    }
}

/// The default ceiling of background writes (`sync --max-write-rate`, `SOCI_MAX_WRITE_RATE`): manifest
/// `PUT`s a second to one registry, well under ECR's default `PutImage` quota of 10 a second per
/// account and region, so that a backfill leaves most of it to the pushes of CI pipelines.
pub const DEFAULT_MAX_WRITE_RATE: f64 = 3.0;
/// The highest write rate that can be set.
pub const MAX_WRITE_RATE: f64 = 1000.0;

/// Manifest `PUT`s a second for background work: a number above 0, up to [`MAX_WRITE_RATE`]
/// (`0.5` is one every two seconds).
pub fn parse_write_rate(text: &str) -> Result<f64, SettingError> {
    match text.trim().parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate > 0.0 && rate <= MAX_WRITE_RATE => Ok(rate),
        _ => Err(SettingError(format!(
            "expected manifest writes a second above 0 and at most {MAX_WRITE_RATE} (e.g. 3, or 0.5), got {text:?}"
        ))),
    }
}

/// Ranges of one large layer downloading at once: 1 (one stream per layer) to
/// [`MAX_RANGES_PER_LAYER`].
pub fn parse_ranges_per_layer(text: &str) -> Result<usize, SettingError> {
    match text.trim().parse::<usize>() {
        Ok(n) if (1..=MAX_RANGES_PER_LAYER).contains(&n) => Ok(n),
        _ => Err(SettingError(format!(
            "expected a number of ranges from 1 (one stream per layer) to {MAX_RANGES_PER_LAYER}, got {text:?}"
        ))),
    }
}

/// The size of one range of a large layer: 64 KiB to 1 GiB.
pub fn parse_range_size(text: &str) -> Result<u64, SettingError> {
    let size = parse_bytes(text, 64 << 10)?;
    if size > 1 << 30 {
        return Err(SettingError(format!("expected a range size of at most 1GiB, got {text:?}")));
    }
    Ok(size)
}

/// A byte count of at least `min`: digits, optionally with a binary unit (`KiB`, `MiB`, `GiB`).
pub fn parse_bytes(text: &str, min: u64) -> Result<u64, SettingError> {
    let text = text.trim();
    let (digits, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text, ""),
    };
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" | "k" => 1 << 10,
        "mib" | "m" => 1 << 20,
        "gib" | "g" => 1 << 30,
        _ => 0,
    };
    match digits.parse::<u64>().ok().and_then(|n| n.checked_mul(multiplier)) {
        Some(n) if multiplier > 0 && n >= min => Ok(n),
        _ => Err(SettingError(format!(
            "expected a number of bytes{} (e.g. 10485760 or 10MiB), got {text:?}",
            if min > 0 { format!(" of at least {min}") } else { String::new() }
        ))),
    }
}

/// A minimum layer size in bytes (0 indexes every layer).
pub fn parse_min_layer_size(text: &str) -> Result<u64, SettingError> {
    parse_bytes(text, 0)
}

/// A zTOC span size: at least 1 byte, at most what the zTOC format can hold.
pub fn parse_span_size(text: &str) -> Result<u64, SettingError> {
    let size = parse_bytes(text, 1)?;
    if size > ztoc::MAX_SPAN_SIZE {
        return Err(SettingError(format!(
            "expected a span size of at most {} bytes (what a zTOC can hold), got {text:?}",
            ztoc::MAX_SPAN_SIZE
        )));
    }
    Ok(size)
}

/// The v2 tag suffix: tag characters only, not so long that no tag fits before it.
pub fn parse_tag_suffix(text: &str) -> Result<String, SettingError> {
    let valid = !text.is_empty()
        && text.len() <= MAX_TAG_SUFFIX
        && text.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !valid {
        return Err(SettingError(format!(
            "expected 1 to {MAX_TAG_SUFFIX} characters of A-Z a-z 0-9 _ . - (e.g. -soci), got {text:?}"
        )));
    }
    Ok(text.to_owned())
}

/// A duration: plain seconds (`30`), or a number with `ms`, `s`, `m` or `h` (`90s`, `10m`, `1h`).
pub fn parse_duration(text: &str) -> Result<std::time::Duration, SettingError> {
    let trimmed = text.trim();
    let split = trimmed.find(|c: char| !c.is_ascii_digit()).unwrap_or(trimmed.len());
    let (digits, unit) = trimmed.split_at(split);
    let millis_per_unit: u64 = match unit {
        "ms" => 1,
        "" | "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => 0,
    };
    match digits.parse::<u64>().ok().and_then(|n| n.checked_mul(millis_per_unit)) {
        Some(millis) if millis_per_unit > 0 => Ok(std::time::Duration::from_millis(millis)),
        _ => Err(SettingError(format!("expected a duration such as 30, 90s, 10m or 1h, got {text:?}"))),
    }
}

/// Where a registry is and how to talk to it: `http://` means plain HTTP, `https://` or no scheme TLS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// `host[:port]`, as in image references.
    pub host: String,
    /// Talk `http://`.
    pub plain_http: bool,
}

impl Endpoint {
    /// A registry URL without a path: `http://host:port`, `https://host` or a bare `host[:port]`.
    pub fn parse(url: &str) -> Result<Endpoint, SettingError> {
        let (rest, plain_http) = split_scheme(url)?;
        let host = rest.strip_suffix('/').unwrap_or(rest);
        let valid = !host.is_empty()
            && host.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'))
            && registry::Repository::new(host, "probe").is_ok();
        if !valid {
            return Err(SettingError(format!(
                "expected a registry URL without a path, e.g. http://127.0.0.1:5000, got {url:?}"
            )));
        }
        Ok(Endpoint { host: host.to_owned(), plain_http })
    }
}

/// Takes an `http://` or `https://` prefix off `text`: the rest, and whether it said plain HTTP.
pub fn split_scheme(text: &str) -> Result<(&str, bool), SettingError> {
    if let Some(rest) = text.strip_prefix("http://") {
        Ok((rest, true))
    } else if let Some(rest) = text.strip_prefix("https://") {
        Ok((rest, false))
    } else if text.contains("://") {
        Err(SettingError(format!("expected an http:// or https:// URL, got {text:?}")))
    } else {
        Ok((text, false))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_counts_take_binary_units_and_refuse_overflow() {
        assert_eq!(parse_bytes("10MiB", 0), Ok(10 << 20));
        assert_eq!(parse_bytes(" 65536 ", 1), Ok(65536));
        assert_eq!(parse_bytes("2g", 0), Ok(2 << 30));
        for bad in ["ten", "-1", "10 parsecs", "99999999999999999999", "18446744073709551615GiB"] {
            assert!(parse_bytes(bad, 0).unwrap_err().0.contains("expected a number of bytes"), "{bad}");
        }
        assert!(parse_bytes("0", 1).unwrap_err().0.contains("at least 1"));
    }

    #[test]
    fn span_sizes_stop_where_the_format_does() {
        assert_eq!(parse_span_size("4MiB"), Ok(4 << 20));
        let too_big = (ztoc::MAX_SPAN_SIZE + 1).to_string();
        assert!(parse_span_size(&too_big).unwrap_err().0.contains("what a zTOC can hold"));
        assert!(parse_span_size(&u64::MAX.to_string()).is_err());
    }

    #[test]
    fn one_concurrency_rule() {
        assert_eq!(parse_concurrency("1"), Ok(1));
        assert_eq!(parse_concurrency("256"), Ok(256));
        for bad in ["0", "257", "many", "-3"] {
            assert!(parse_concurrency(bad).unwrap_err().0.contains("from 1 to 256"), "{bad}");
        }
    }

    #[test]
    fn connection_and_range_rules() {
        assert_eq!(parse_max_connections("16"), Ok(16));
        assert_eq!(parse_max_connections(" 1 "), Ok(1));
        for bad in ["0", "1025", "lots", "-2"] {
            assert!(parse_max_connections(bad).unwrap_err().0.contains("from 1 to 1024"), "{bad}");
        }
        assert_eq!(parse_ranges_per_layer("1"), Ok(1));
        assert_eq!(parse_ranges_per_layer("64"), Ok(64));
        for bad in ["0", "65", "four"] {
            assert!(parse_ranges_per_layer(bad).unwrap_err().0.contains("one stream per layer"), "{bad}");
        }
        assert_eq!(parse_range_size("16MiB"), Ok(16 << 20));
        assert!(parse_range_size("1KiB").unwrap_err().0.contains("at least 65536"));
        assert!(parse_range_size("2GiB").unwrap_err().0.contains("at most 1GiB"));
    }

    #[test]
    fn index_versions_in_any_case() {
        assert_eq!(parse_index_version("V1"), Ok(IndexVersion::V1));
        assert_eq!(parse_index_version("v2"), Ok(IndexVersion::V2));
        assert!(parse_index_version("v3").unwrap_err().0.contains("expected v2 or v1"));
    }

    #[test]
    fn tag_suffixes_are_tag_characters() {
        assert_eq!(parse_tag_suffix(".lazy").as_deref(), Ok(".lazy"));
        for bad in [":x", "-so ci", "/soci", "", &"x".repeat(65)] {
            assert!(parse_tag_suffix(bad).unwrap_err().0.contains("A-Z a-z 0-9"), "{bad:?}");
        }
    }

    #[test]
    fn durations_in_seconds_minutes_and_hours() {
        use std::time::Duration;
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        for bad in ["", "s", "ten", "5 days", "-3s", "99999999999999999999h"] {
            assert!(parse_duration(bad).unwrap_err().0.contains("expected a duration"), "{bad:?}");
        }
    }

    #[test]
    fn http_means_plain_http() {
        assert_eq!(split_scheme("http://localhost:5000/app:1"), Ok(("localhost:5000/app:1", true)));
        assert_eq!(split_scheme("https://r.example.com/app"), Ok(("r.example.com/app", false)));
        assert_eq!(split_scheme("r.example.com/app"), Ok(("r.example.com/app", false)));
        assert!(split_scheme("ftp://host").unwrap_err().0.contains("http:// or https://"));
        assert_eq!(
            Endpoint::parse("http://127.0.0.1:5000/"),
            Ok(Endpoint { host: "127.0.0.1:5000".into(), plain_http: true })
        );
        for bad in ["http://host/path", "http://", "ftp://host"] {
            assert!(Endpoint::parse(bad).is_err(), "{bad}");
        }
    }
}
