//! What is built once per execution environment: the AWS SDK configuration, the ECR client, the
//! credential hook, the registry client, the EventBridge client, the zTOC cache and the reconcile's
//! ECR listing and SQS work queue.

use std::sync::Arc;
use std::time::Duration;

use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};

use crate::cache::DynamoCache;
use crate::completion::EventBridge;
use crate::config::Config;
use crate::ecr::{EcrCredentials, EcrTokenSource};
use crate::ecr_registry::EcrRegistries;
use app::HttpRegistries;

/// The User-Agent of registry requests.
pub const USER_AGENT: &str = app::LAMBDA_USER_AGENT;

/// The most a zTOC cache request may take, retries included: a slow cache must not slow indexing
/// down much (a miss only means building the zTOC).
pub const CACHE_OPERATION_TIMEOUT: Duration = Duration::from_secs(5);

/// The SDK's HTTPS client: hyper 1 and rustls on ring, the crypto the registry client uses too.
pub fn http_client() -> aws_sdk_ecr::config::SharedHttpClient {
    aws_smithy_http_client::Builder::new().tls_provider(tls::Provider::Rustls(CryptoMode::Ring)).build_https()
}

/// The AWS SDK configuration from the environment (region, credentials, and the endpoint variables
/// `AWS_ENDPOINT_URL_ECR`, `AWS_ENDPOINT_URL_EVENTBRIDGE`, `AWS_ENDPOINT_URL_DYNAMODB` or
/// `AWS_ENDPOINT_URL` for local stand-ins such as moto), with [`http_client`].
pub async fn aws_config_from_env() -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .http_client(http_client())
        .retry_config(sdk_retries())
        .load()
        .await
}

/// The AWS SDK's retries: adaptive (a client-side rate limiter that slows down on
/// `ThrottlingException`), more attempts than the standard 3 so that throttling is waited out;
/// each call is still bounded by its operation timeout (the zTOC cache's) or the invocation's
/// deadline.
pub fn sdk_retries() -> aws_config::retry::RetryConfig {
    aws_config::retry::RetryConfig::adaptive().with_max_attempts(8)
}

/// The registries the handler indexes in: one registry client for the life of the execution
/// environment, authenticated with ECR tokens from `GetAuthorizationToken` (also when
/// `SOCI_REGISTRY_URL` moves the registry elsewhere: a local run exercises the same login).
pub fn registries(
    config: &Config,
    sdk: &aws_config::SdkConfig,
) -> Result<(HttpRegistries, Arc<EcrCredentials<EcrTokenSource>>), registry::Error> {
    let credentials = Arc::new(EcrCredentials::new(EcrTokenSource::new(aws_sdk_ecr::Client::new(sdk))));
    let plain_http = config.registry_override.as_ref().is_some_and(|r| r.plain_http);
    let downloads = app::Downloads { max_connections: config.max_connections, ..app::Downloads::default() };
    // Throttling is counted per invocation (the report's `throttled`, the `Throttled` metric).
    let writes = app::Writes { max_background_write_rate: Some(config.max_write_rate), on_throttle: None };
    let client = app::client_writing(plain_http, USER_AGENT, credentials.clone(), downloads, writes)?;
    Ok((HttpRegistries::new(client), credentials))
}

/// The registries with ECR's own API beside the registry client (one listing of every tag and digest,
/// removing one tag), unless `SOCI_REGISTRY_URL` moves the registry off ECR.
pub fn ecr_registries(config: &Config, sdk: &aws_config::SdkConfig, http: HttpRegistries) -> EcrRegistries {
    let ecr = config.registry_override.is_none().then(|| aws_sdk_ecr::Client::new(sdk));
    EcrRegistries::new(http, ecr)
}

/// Where completion events go: EventBridge's `PutEvents` (used only when `SOCI_COMPLETION_EVENT_BUS`
/// names a bus; building the client does no I/O).
pub fn completion_events(sdk: &aws_config::SdkConfig) -> EventBridge {
    EventBridge::new(aws_sdk_eventbridge::Client::new(sdk))
}

/// The zTOC cache in the DynamoDB table of `SOCI_ZTOC_CACHE_TABLE`, if set.
pub fn ztoc_cache(config: &Config, sdk: &aws_config::SdkConfig) -> Option<Arc<dyn index::ZtocCache>> {
    let table = config.ztoc_cache_table.as_deref()?;
    let timeouts = aws_sdk_dynamodb::config::timeout::TimeoutConfig::builder()
        .operation_timeout(CACHE_OPERATION_TIMEOUT)
        .build();
    let dynamodb = aws_sdk_dynamodb::config::Builder::from(sdk).timeout_config(timeouts).build();
    Some(Arc::new(DynamoCache::new(aws_sdk_dynamodb::Client::from_conf(dynamodb), table)))
}

/// The reconcile's ECR repository listing and, when `SOCI_RECONCILE_QUEUE_URL` names one, its SQS work
/// queue (building the clients does no I/O).
pub fn reconcile(
    config: &Config,
    sdk: &aws_config::SdkConfig,
) -> (crate::reconcile::EcrRepositories, Option<crate::reconcile::SqsQueue>) {
    let repositories = crate::reconcile::EcrRepositories::new(aws_sdk_ecr::Client::new(sdk));
    let queue = config
        .reconcile_queue_url
        .as_deref()
        .map(|url| crate::reconcile::SqsQueue::new(aws_sdk_sqs::Client::new(sdk), url));
    (repositories, queue)
}
