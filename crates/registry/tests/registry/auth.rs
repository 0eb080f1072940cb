//! Basic authentication against distribution's htpasswd mode, and credential refresh.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use registry::{BoxFuture, CredentialSource, Credentials, Error};
use testkit::proxy::{FaultPlan, FaultProxy};
use testkit::registry::LocalRegistry;

use crate::support::*;

const USER: &str = "alice";
const PASSWORD: &str = "correct-horse";

#[tokio::test]
async fn basic_auth_success_and_failures() {
    let registry = LocalRegistry::start_with_basic_auth(USER, PASSWORD).await.unwrap();
    let proxy = FaultProxy::start(registry.addr(), FaultPlan::new()).await.unwrap();
    let repo = repo(&proxy.host(), "private/app");

    let client = basic_client(USER, PASSWORD);
    let image = push_image(&client, &repo, "v1", 100_000, 20).await;
    assert_eq!(client.get_manifest(&repo, "v1").await.unwrap().bytes, image.manifest);
    let stream = client.get_blob(&repo, &image.layer_digest, Some(image.layer.len() as u64)).await.unwrap();
    assert!(collect(stream).await.unwrap().0 == image.layer);
    // One challenge, then the basic header is sent up front.
    let challenged = proxy.requests_log().iter().filter(|r| r.status == 401).count();
    assert_eq!(challenged, 1, "{:?}", proxy.requests_log());

    let wrong = basic_client(USER, "wrong-password");
    match wrong.get_manifest(&repo, "v1").await {
        Err(error @ Error::Unauthorized { credentials_sent: true, .. }) => {
            let message = error.to_string();
            assert!(message.contains("the registry rejected the credentials"), "{message}");
            assert_says_what_not_what_to_do(&message);
            assert!(!message.contains("wrong-password"), "{message}");
            assert!(!error.is_retryable());
        }
        other => panic!("{other:?}"),
    }

    match anonymous_client().get_manifest(&repo, "v1").await {
        Err(error @ Error::Unauthorized { credentials_sent: false, .. }) => {
            let message = error.to_string();
            assert!(message.contains("the registry requires credentials"), "{message}");
            assert_says_what_not_what_to_do(&message);
            let Error::Unauthorized { registry: r, .. } = error else { unreachable!() };
            assert_eq!(r, proxy.host());
        }
        other => panic!("{other:?}"),
    }
}

/// The library says what happened; the CLI and the Lambda add their own hints (flags, IAM).
fn assert_says_what_not_what_to_do(message: &str) {
    for advice in ["--", "CLI", "Lambda", "GetAuthorizationToken", "permission"] {
        assert!(!message.contains(advice), "{advice:?} in {message}");
    }
}

/// Hands out a stale password until told it was rejected, like a cached ECR token that expired.
struct RotatingSource {
    calls: AtomicUsize,
    invalidations: AtomicUsize,
}

impl CredentialSource for RotatingSource {
    fn credentials<'a>(&'a self, _registry: &'a str) -> BoxFuture<'a, Result<Option<Credentials>, Error>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let password = if self.invalidations.load(Ordering::SeqCst) == 0 { "stale" } else { PASSWORD };
        Box::pin(async move { Ok(Some(Credentials::new(USER, password))) })
    }

    fn invalidate(&self, _registry: &str) {
        self.invalidations.fetch_add(1, Ordering::SeqCst);
    }
}

#[tokio::test]
async fn rejected_credentials_are_refreshed_from_the_source() {
    let registry = LocalRegistry::start_with_basic_auth(USER, PASSWORD).await.unwrap();
    let repo = repo(&registry.host(), "private/rotate");
    push_image(&basic_client(USER, PASSWORD), &repo, "v1", 1000, 21).await;

    let source = Arc::new(RotatingSource { calls: AtomicUsize::new(0), invalidations: AtomicUsize::new(0) });
    let client = client_with(source.clone(), 2);
    client.get_manifest(&repo, "v1").await.unwrap();
    assert_eq!(source.invalidations.load(Ordering::SeqCst), 1);
    assert_eq!(source.calls.load(Ordering::SeqCst), 2);
}
