//! The Lambda's integration tests, linked into one binary: each test binary links the AWS SDK, the
//! registry client and the engine on its own, so one binary instead of five keeps a cold `cargo test`
//! smaller on disk (CI's machine once failed to link for lack of space) and quicker to link.
//!
//! - `handler`, `reconcile`: the handler over the in-memory registry, with hand-built events;
//! - `e2e`, `lifecycle`: the handler against docker-registry and moto (ECR, EventBridge, SQS, DynamoDB);
//! - `runtime`: the `index-on-push` binary itself under an emulated Lambda runtime API;
//! - `events`: replication, archive and restore, pull through cache, archived images in the reconcile;
//! - `ecr_api`: ECR's own API (DescribeImages, BatchDeleteImage by tag) against moto.

mod aws;
mod e2e;
mod ecr_api;
mod events;
mod handler;
mod lifecycle;
mod reconcile;
mod runtime;
mod smoke;
