//! The `index-on-push` Lambda function: builds the SOCI index of every image pushed to Amazon ECR.
//!
//! EventBridge delivers ECR's `ECR Image Action` events; for each successful push the function decides
//! from the event alone whether to index ([`plan`]: filters, soci-indexer's own output, media types),
//! (a deletion: prunes its SOCI output), then runs the `index` pipeline against the account's ECR registry, logged in through
//! `GetAuthorizationToken` ([`ecr`]), reusing zTOCs recorded in DynamoDB ([`cache`]), reports one log
//! line and CloudWatch metrics ([`outcome`]) and puts a completion event on EventBridge ([`completion`]).
//! A scheduled reconcile request and the SQS work queue it fills ([`reconcile`]) sync and prune whole
//! repositories.
//!
//! `main.rs` only wires: [`config::Config::from_env`], then [`wiring`] builds the AWS SDK, the registry
//! client, the EventBridge client and the zTOC cache once per execution environment, then every event
//! goes through [`handler::invoke`].

pub mod cache;
pub mod completion;
pub mod config;
pub mod dispatch;
pub mod ecr;
pub mod ecr_registry;
pub mod event;
pub mod filter;
pub mod handler;
pub mod logging;
pub mod outcome;
pub mod plan;
pub mod reconcile;
pub mod wiring;

pub use app::{HttpRegistries, Registries};
pub use cache::DynamoCache;
pub use completion::{CompletionEvents, EventBridge};
pub use config::{Config, ConfigError};
pub use dispatch::dispatch;
pub use ecr_registry::{EcrRegistries, EcrRepository};
pub use handler::{handle, invoke, Invocation, Services};
pub use outcome::{Outcome, Report};
pub use reconcile::Lifecycle;
