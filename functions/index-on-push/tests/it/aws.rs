//! The AWS side of the end-to-end tests, all in moto's server: the SDK pointed at it, an EventBridge
//! rule that delivers what it matches to an SQS queue, and the zTOC cache table.

use std::collections::HashMap;

use aws_config::SdkConfig;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
};
use aws_sdk_sqs::types::QueueAttributeName;
use index_on_push::wiring;
use serde_json::Value;

/// moto (ECR's control plane among the rest) and a docker-registry that takes moto's ECR login, with a
/// registry client logged in as the function is.
pub async fn ecr_stand_ins() -> (testkit::moto::MotoServer, testkit::registry::LocalRegistry, registry::Client)
{
    use testkit::moto::MotoServer;
    let moto = MotoServer::start().await.unwrap();
    let registry = testkit::registry::LocalRegistry::start_with_basic_auth("AWS", MotoServer::ECR_PASSWORD)
        .await
        .unwrap();
    let credentials =
        registry::StaticCredentials(registry::Credentials::new("AWS", MotoServer::ECR_PASSWORD));
    let config = registry::ClientConfig { plain_http: true, ..registry::ClientConfig::default() };
    let client = registry::Client::new(config, std::sync::Arc::new(credentials)).unwrap();
    (moto, registry, client)
}

/// Pushes `image` to `repository` of the registry behind `client` as `tag`; returns its digest.
pub async fn push_image(
    client: &registry::Client,
    repository: &registry::Repository,
    image: &testkit::image::TestImage,
    tag: &str,
) -> String {
    use bytes::Bytes;
    for (digest, _, bytes) in &image.blobs {
        client.push_blob(repository, digest, Bytes::from(bytes.clone())).await.unwrap();
    }
    for (digest, media_type, bytes) in &image.manifests {
        client.put_manifest(repository, digest, media_type, Bytes::from(bytes.clone())).await.unwrap();
    }
    let (digest, media_type, bytes) = &image.root;
    client.put_manifest(repository, tag, media_type, Bytes::from(bytes.clone())).await.unwrap();
    digest.clone()
}

/// The function's settings, as the environment would give them: the registry at `registry_url`,
/// small layers and spans for generated images, then `extra`.
pub fn config(registry_url: String, extra: &[(&str, &str)]) -> index_on_push::Config {
    let mut vars: HashMap<String, String> = [
        ("SOCI_REGISTRY_URL", registry_url),
        ("SOCI_MIN_LAYER_SIZE", "50000".into()),
        ("SOCI_SPAN_SIZE", "65536".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    vars.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    index_on_push::Config::from_lookup(|name| vars.get(name).cloned()).unwrap()
}

/// The zTOC cache table the tests create.
pub const CACHE_TABLE: &str = "soci-ztoc-cache";

/// The SDK configuration `main.rs` builds, with every service at `endpoint` (as `AWS_ENDPOINT_URL`
/// does) and test credentials.
pub async fn sdk(endpoint: &str) -> SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .http_client(wiring::http_client())
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(aws_sdk_ecr::config::Credentials::new("testing", "testing", None, None, "test"))
        .load()
        .await
}

/// An SQS queue that an EventBridge rule on the default bus fills with the events it matches.
pub struct Queue {
    sqs: aws_sdk_sqs::Client,
    url: String,
}

impl Queue {
    /// The queue `name` and the rule `name` with `pattern`, targeting it.
    pub async fn for_rule(sdk: &SdkConfig, name: &str, pattern: &Value) -> Queue {
        let sqs = aws_sdk_sqs::Client::new(sdk);
        let created = sqs.create_queue().queue_name(name).send().await.unwrap();
        let url = created.queue_url().unwrap().to_owned();
        let attributes = sqs
            .get_queue_attributes()
            .queue_url(&url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .unwrap();
        let arn = attributes.attributes().unwrap()[&QueueAttributeName::QueueArn].clone();
        let events = aws_sdk_eventbridge::Client::new(sdk);
        events.put_rule().name(name).event_pattern(pattern.to_string()).send().await.unwrap();
        let target = aws_sdk_eventbridge::types::Target::builder().id("queue").arn(arn).build().unwrap();
        let put = events.put_targets().rule(name).targets(target).send().await.unwrap();
        assert_eq!(put.failed_entry_count(), 0, "{put:?}");
        Queue { sqs, url }
    }

    /// The messages that arrived since the last call (deleted from the queue), their bodies parsed.
    pub async fn take(&self) -> Vec<Value> {
        let mut all = Vec::new();
        loop {
            let received = self
                .sqs
                .receive_message()
                .queue_url(&self.url)
                .max_number_of_messages(10)
                .wait_time_seconds(0)
                .send()
                .await
                .unwrap();
            if received.messages().is_empty() {
                return all;
            }
            for message in received.messages() {
                all.push(serde_json::from_str(message.body().unwrap()).unwrap());
                let handle = message.receipt_handle().unwrap();
                self.sqs.delete_message().queue_url(&self.url).receipt_handle(handle).send().await.unwrap();
            }
        }
    }
}

/// The zTOC cache table, as the template declares it: partition key `pk` (S), on demand.
pub async fn create_cache_table(sdk: &SdkConfig) {
    let dynamodb = aws_sdk_dynamodb::Client::new(sdk);
    dynamodb
        .create_table()
        .table_name(CACHE_TABLE)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("pk")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
        .key_schema(KeySchemaElement::builder().attribute_name("pk").key_type(KeyType::Hash).build().unwrap())
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
        .unwrap();
}

/// Every item of the cache table.
pub async fn cache_items(sdk: &SdkConfig) -> Vec<HashMap<String, AttributeValue>> {
    let scan = aws_sdk_dynamodb::Client::new(sdk).scan().table_name(CACHE_TABLE).send().await.unwrap();
    scan.items().to_vec()
}

/// A loopback address nothing listens on.
pub fn closed_port() -> String {
    let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    format!("http://{addr}")
}
