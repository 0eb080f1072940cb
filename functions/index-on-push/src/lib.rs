//! The `index-on-push` Lambda function: builds the SOCI index of every image pushed to Amazon ECR.
//!
//! EventBridge delivers ECR's `ECR Image Action` events; for each successful push the function decides
//! from the event alone whether to index (`plan`: filters, soci-indexer's own output, media types; a
//! skip says why with a [`SkipReason`]), or, for a deletion, prunes its SOCI output. It then runs the
//! `index` pipeline against the account's ECR registry, logged in through `GetAuthorizationToken`
//! (`ecr`), reusing zTOCs recorded in DynamoDB ([`DynamoCache`]), reports one log line and CloudWatch
//! metrics ([`Report`]) and puts a completion event on EventBridge ([`EventBridge`]). A scheduled
//! reconcile request and the SQS work queue it fills (`reconcile`) sync and prune whole repositories.
//!
//! `main.rs` only wires: [`Config::from_env`], then [`wiring`] builds the AWS SDK, the registry client,
//! the EventBridge client and the zTOC cache once per execution environment, then every event goes
//! through [`invoke`] ([`dispatch`] tells a push event from a reconcile request or an SQS batch).
//!
//! The modules are private; what `main.rs` and the integration tests use is re-exported below.

mod cache;
mod completion;
mod config;
mod dispatch;
mod ecr;
mod ecr_registry;
mod event;
mod filter;
mod handler;
pub mod logging;
mod outcome;
mod plan;
mod reconcile;
mod skip;
pub mod wiring;

pub use app::{HttpRegistries, Registries};
pub use cache::DynamoCache;
pub use completion::{CompletionError, CompletionEvents, Detail, EventBridge};
pub use config::{Config, ConfigError};
pub use dispatch::dispatch;
pub use ecr::{EcrCredentials, EcrTokenSource};
pub use ecr_registry::{EcrRegistries, EcrRepository};
pub use handler::{handle, invoke, safety_margin, Invocation, Services};
pub use index::cache::BoxFuture;
pub use outcome::{Outcome, Report};
pub use reconcile::{
    consume, EcrRepositories, Lifecycle, Listed, ReconcileError, RepositoryList, SqsQueue, WorkItem,
    WorkQueue, MAX_ATTEMPTS, REQUEUE_DELAY,
};
pub use skip::SkipReason;
