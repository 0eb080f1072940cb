//! The function's zTOC cache: one DynamoDB item per zTOC (`SOCI_ZTOC_CACHE_TABLE`), so that a layer
//! shared by many images (a base image) is built once per registry, whichever execution environment
//! meets it first.
//!
//! Item: partition key `pk` (S) = [`index::CacheKey::id`], then `ztoc_digest` (S), `ztoc_size` (N),
//! `registry` (S), `repository` (S), and `expires_at` (N, epoch seconds) for DynamoDB's time to live,
//! pushed forward on every put. An item that does not parse, or whose time is up (DynamoDB deletes
//! expired items within days, not at once), is a miss; the engine then builds and puts it again.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_dynamodb::error::DisplayErrorContext;
use aws_sdk_dynamodb::types::AttributeValue;
use index::cache::{BoxFuture, CacheError, CachedZtoc, ZtocCache};

/// How long an entry lives after its last put.
pub const DEFAULT_TIME_TO_LIVE: Duration = Duration::from_secs(30 * 24 * 3600);

/// The partition key attribute.
pub const PARTITION_KEY: &str = "pk";

/// The time-to-live attribute (epoch seconds).
pub const EXPIRES_AT: &str = "expires_at";

/// zTOC cache entries in a DynamoDB table.
#[derive(Clone, Debug)]
pub struct DynamoCache {
    client: aws_sdk_dynamodb::Client,
    table: String,
    time_to_live: Duration,
}

impl DynamoCache {
    /// The cache in `table` (a name or an ARN), entries living `DEFAULT_TIME_TO_LIVE`.
    pub fn new(client: aws_sdk_dynamodb::Client, table: impl Into<String>) -> DynamoCache {
        DynamoCache { client, table: table.into(), time_to_live: DEFAULT_TIME_TO_LIVE }
    }

    /// The same cache with entries living `time_to_live` after their last put.
    pub fn with_time_to_live(mut self, time_to_live: Duration) -> DynamoCache {
        self.time_to_live = time_to_live;
        self
    }

    /// The table.
    pub fn table(&self) -> &str {
        &self.table
    }

    fn error(&self, operation: &str, error: impl std::error::Error) -> CacheError {
        let message = format!("DynamoDB {operation} on table {}: {}", self.table, DisplayErrorContext(error));
        CacheError(message.into())
    }

    async fn read(&self, key: &str) -> Result<Option<CachedZtoc>, CacheError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(PARTITION_KEY, AttributeValue::S(key.to_owned()))
            .send()
            .await
            .map_err(|e| self.error("GetItem", e))?;
        let Some(item) = output.item() else { return Ok(None) };
        match parse(item, epoch_seconds(SystemTime::now())) {
            Some(value) => Ok(Some(value)),
            None => {
                tracing::debug!(table = %self.table, key, "expired or unreadable zTOC cache item ignored");
                Ok(None)
            }
        }
    }

    async fn write(&self, key: &str, value: &CachedZtoc) -> Result<(), CacheError> {
        let expires_at = epoch_seconds(SystemTime::now() + self.time_to_live);
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item(key, value, expires_at)))
            .send()
            .await
            .map_err(|e| self.error("PutItem", e))?;
        Ok(())
    }
}

impl ZtocCache for DynamoCache {
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<CachedZtoc>, CacheError>> {
        Box::pin(self.read(key))
    }

    fn put<'a>(&'a self, key: &'a str, value: &'a CachedZtoc) -> BoxFuture<'a, Result<(), CacheError>> {
        Box::pin(self.write(key, value))
    }
}

fn epoch_seconds(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default()
}

/// The item of `key`: the entry and when it expires.
pub fn item(key: &str, value: &CachedZtoc, expires_at: u64) -> HashMap<String, AttributeValue> {
    let s = |text: &str| AttributeValue::S(text.to_owned());
    HashMap::from([
        (PARTITION_KEY.to_owned(), s(key)),
        ("ztoc_digest".to_owned(), s(&value.ztoc_digest)),
        ("ztoc_size".to_owned(), AttributeValue::N(value.ztoc_size.to_string())),
        ("registry".to_owned(), s(&value.registry)),
        ("repository".to_owned(), s(&value.repository)),
        (EXPIRES_AT.to_owned(), AttributeValue::N(expires_at.to_string())),
    ])
}

/// The entry in `item`, unless it is malformed or expired at `now` (epoch seconds).
pub fn parse(item: &HashMap<String, AttributeValue>, now: u64) -> Option<CachedZtoc> {
    let text = |name: &str| item.get(name)?.as_s().ok().filter(|s| !s.is_empty()).cloned();
    let number = |name: &str| item.get(name)?.as_n().ok()?.parse::<u64>().ok();
    if number(EXPIRES_AT).is_some_and(|expires_at| expires_at <= now) {
        return None;
    }
    let ztoc_digest = text("ztoc_digest").filter(|d| d.starts_with("sha256:"))?;
    Some(CachedZtoc {
        ztoc_digest,
        ztoc_size: number("ztoc_size")?,
        registry: text("registry")?,
        repository: text("repository")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value() -> CachedZtoc {
        CachedZtoc {
            ztoc_digest: format!("sha256:{}", "ab".repeat(32)),
            ztoc_size: 4096,
            registry: "123456789012.dkr.ecr.us-east-1.amazonaws.com".into(),
            repository: "team/base".into(),
        }
    }

    #[test]
    fn an_item_round_trips_until_it_expires() {
        let item = item("ztoc/v0/key", &value(), 2_000);
        assert_eq!(item[PARTITION_KEY].as_s().unwrap(), "ztoc/v0/key");
        assert_eq!(item[EXPIRES_AT].as_n().unwrap(), "2000");
        assert_eq!(parse(&item, 1_999), Some(value()));
        assert_eq!(parse(&item, 2_000), None, "expired, even if DynamoDB has not deleted it yet");
    }

    #[test]
    fn a_malformed_item_is_a_miss() {
        let good = item("k", &value(), u64::MAX);
        for (name, bad) in [
            ("ztoc_digest", AttributeValue::S("md5:00".into())),
            ("ztoc_digest", AttributeValue::N("1".into())),
            ("ztoc_size", AttributeValue::N("-1".into())),
            ("ztoc_size", AttributeValue::S("4096".into())),
            ("registry", AttributeValue::S(String::new())),
            ("repository", AttributeValue::Bool(true)),
        ] {
            let mut item = good.clone();
            item.insert(name.into(), bad.clone());
            assert_eq!(parse(&item, 0), None, "{name} = {bad:?}");
            item.remove(name);
            assert_eq!(parse(&item, 0), None, "{name} missing");
        }
        // An item written without a time to live still counts.
        let mut forever = good;
        forever.remove(EXPIRES_AT);
        assert_eq!(parse(&forever, u64::MAX), Some(value()));
    }
}
