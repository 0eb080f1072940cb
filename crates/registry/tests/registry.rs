//! Integration tests against a real registry (CNCF distribution 2.8, Debian's `docker-registry`),
//! behind testkit's proxies where a real registry cannot show a behaviour (ECR-style redirects,
//! injected faults, the referrers API), and scripted servers for bearer-token services and for
//! answers that are slow, stall, never come or never end.

#[path = "registry/auth.rs"]
mod auth;
#[path = "registry/blobs.rs"]
mod blobs;
#[path = "registry/fake.rs"]
mod fake;
#[path = "registry/hostile.rs"]
mod hostile;
#[path = "registry/manifests.rs"]
mod manifests;
#[path = "registry/mount.rs"]
mod mount;
#[path = "registry/protocol.rs"]
mod protocol;
#[path = "registry/ranged.rs"]
mod ranged;
#[path = "registry/redirects.rs"]
mod redirects;
#[path = "registry/referrers.rs"]
mod referrers;
#[path = "registry/retries.rs"]
mod retries;
#[path = "registry/script.rs"]
mod script;
#[path = "registry/support.rs"]
mod support;
#[path = "registry/tags.rs"]
mod tags;
#[path = "registry/throttling.rs"]
mod throttling;
