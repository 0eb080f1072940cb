//! Tests of the registry and moto launchers and the HTTP proxies, against a real `docker-registry`.

use testkit::moto::MotoServer;
use testkit::registry::LocalRegistry;

fn client() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

#[tokio::test]
async fn registry_starts_anonymous() {
    let registry = LocalRegistry::start().await.unwrap();
    let response = client().get(format!("{}/v2/", registry.url())).send().await.unwrap();
    assert_eq!(response.status(), 200, "{}", registry.logs());
}

#[tokio::test]
async fn registry_starts_with_basic_auth() {
    let registry = LocalRegistry::start_with_basic_auth("alice", "s3cret").await.unwrap();
    let url = format!("{}/v2/", registry.url());
    let response = client().get(&url).send().await.unwrap();
    assert_eq!(response.status(), 401);
    let challenge = response.headers()["www-authenticate"].to_str().unwrap().to_owned();
    assert!(challenge.starts_with("Basic"), "{challenge}");
    let response = client().get(&url).basic_auth("alice", Some("s3cret")).send().await.unwrap();
    assert_eq!(response.status(), 200, "{}", registry.logs());
    let response = client().get(&url).basic_auth("alice", Some("wrong")).send().await.unwrap();
    assert_eq!(response.status(), 401);
}

#[tokio::test]
async fn registry_stops_and_removes_its_storage_when_dropped() {
    let registry = LocalRegistry::start().await.unwrap();
    let (addr, storage) = (registry.addr(), registry.storage_dir());
    assert!(storage.is_dir());
    drop(registry);
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    assert!(!storage.exists());
}

#[tokio::test]
async fn moto_server_answers_and_stops_when_dropped() {
    let moto = MotoServer::start().await.unwrap();
    assert_eq!(moto.url(), format!("http://{}", moto.addr()));
    let response = client().get(moto.url()).send().await.unwrap();
    assert_eq!(response.status(), 200, "{}", moto.logs());
    assert!(moto.logs().contains("GET / "), "{}", moto.logs());
    let addr = moto.addr();
    drop(moto);
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

// ---------------------------------------------------------------------------------------------------
// Raw registry calls

use sha2::Digest as _;
use testkit::proxy::{
    Fault, FaultPlan, FaultProxy, RedirectProxy, ReferrersProxy, RequestFilter, AUTH_LEAK_MESSAGE,
    OCI_INDEX_MEDIA_TYPE,
};

type Auth<'a> = Option<(&'a str, &'a str)>;

fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(data)))
}

fn with_auth(request: reqwest::RequestBuilder, auth: Auth<'_>) -> reqwest::RequestBuilder {
    match auth {
        Some((user, password)) => request.basic_auth(user, Some(password)),
        None => request,
    }
}

/// Monolithic upload: POST for a session, then PUT its Location with `?digest=`; returns the digest.
/// `host` is where requests go; the Location must come back pointing there too.
async fn push_blob(host: &str, auth: Auth<'_>, repo: &str, data: &[u8]) -> String {
    let client = client();
    let digest = sha256(data);
    let response =
        with_auth(client.post(format!("http://{host}/v2/{repo}/blobs/uploads/")), auth).send().await.unwrap();
    assert_eq!(response.status(), 202, "{:?}", response.text().await);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let location = if location.starts_with('/') { format!("http://{host}{location}") } else { location };
    assert!(location.starts_with(&format!("http://{host}/")), "Location {location} does not point at {host}");
    let separator = if location.contains('?') { '&' } else { '?' };
    let response = with_auth(client.put(format!("{location}{separator}digest={digest}")), auth)
        .header("content-type", "application/octet-stream")
        .body(data.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201, "{:?}", response.text().await);
    digest
}

async fn put_manifest(
    host: &str,
    auth: Auth<'_>,
    repo: &str,
    reference: &str,
    body: &[u8],
) -> reqwest::Response {
    let media_type = "application/vnd.oci.image.manifest.v1+json";
    with_auth(client().put(format!("http://{host}/v2/{repo}/manifests/{reference}")), auth)
        .header("content-type", media_type)
        .body(body.to_vec())
        .send()
        .await
        .unwrap()
}

fn blob_data(len: usize) -> Vec<u8> {
    let mut rng = testkit::Rng::new(len as u64);
    (0..len).map(|_| rng.next_u64() as u8).collect()
}

// ---------------------------------------------------------------------------------------------------
// Forwarding (a FaultProxy without faults)

#[tokio::test]
async fn plain_forwarding_pushes_and_reads_back_through_the_proxy() {
    let registry = LocalRegistry::start_with_basic_auth("u", "p").await.unwrap();
    let proxy = FaultProxy::start(registry.addr(), FaultPlan::new()).await.unwrap();
    let auth = Some(("u", "p"));
    let data = blob_data(70_000);
    // The upload Location comes back on the proxy's host (asserted inside push_blob).
    let digest = push_blob(&proxy.host(), auth, "a/b", &data).await;

    let url = format!("http://{}/v2/a/b/blobs/{digest}", proxy.host());
    let response = client().get(&url).send().await.unwrap();
    assert_eq!(response.status(), 401);
    assert!(response.headers()["www-authenticate"].to_str().unwrap().starts_with("Basic"));

    let response = with_auth(client().get(&url), auth).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["docker-content-digest"], digest.as_str());
    assert_eq!(response.bytes().await.unwrap(), data);

    let response = with_auth(client().head(&url), auth).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-length"], "70000");

    let response = with_auth(client().get(&url), auth).header("range", "bytes=100-199").send().await.unwrap();
    assert_eq!(response.status(), 206);
    assert_eq!(response.bytes().await.unwrap(), data[100..200]);

    let log = proxy.requests_log();
    assert_eq!(proxy.requests(), log.len());
    assert_eq!(proxy.faults_injected(), 0);
    assert!(log.iter().any(|r| r.method == "PUT" && r.path.starts_with("/v2/a/b/blobs/uploads/")));
    assert_eq!(log.iter().filter(|r| r.had_range()).count(), 1);
    assert_eq!(log.last().unwrap().triple(), ("GET".into(), format!("/v2/a/b/blobs/{digest}"), true));
}

// ---------------------------------------------------------------------------------------------------
// RedirectProxy

#[tokio::test]
async fn redirect_proxy_redirects_blob_gets_to_another_origin() {
    let registry = LocalRegistry::start_with_basic_auth("u", "p").await.unwrap();
    let auth = Some(("u", "p"));
    let data = blob_data(50_000);
    let digest = push_blob(&registry.host(), auth, "repo", &data).await;
    let proxy = RedirectProxy::start(registry.addr()).await.unwrap();
    let url = format!("http://{}/v2/repo/blobs/{digest}", proxy.host());

    // Without credentials the registry's challenge comes through, no redirect.
    let response = client().get(&url).send().await.unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(proxy.redirects(), 0);

    // Unknown blobs are 404 from the registry, no redirect.
    let missing = format!("http://{}/v2/repo/blobs/{}", proxy.host(), sha256(b"missing"));
    assert_eq!(with_auth(client().get(&missing), auth).send().await.unwrap().status(), 404);

    // HEAD is answered by the registry itself.
    let response = with_auth(client().head(&url), auth).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-length"], "50000");
    assert_eq!(proxy.redirects(), 0);

    let response = with_auth(client().get(&url), auth).send().await.unwrap();
    assert_eq!(response.status(), 307);
    assert_eq!(proxy.redirects(), 1);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    assert!(location.starts_with(&format!("http://{}/", proxy.storage_addr())), "{location}");
    assert_ne!(proxy.storage_addr().port(), proxy.addr().port());
    assert!(location.contains("X-Amz-Signature="), "{location}");

    // The storage host serves the blob without credentials, whole or by range.
    let response = client().get(&location).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.bytes().await.unwrap(), data);
    let response = client().get(&location).header("range", "bytes=1000-1999").send().await.unwrap();
    assert_eq!(response.status(), 206);
    assert_eq!(response.headers()["content-range"], "bytes 1000-1999/50000");
    assert_eq!(response.bytes().await.unwrap(), data[1000..2000]);
    let response = client().get(&location).header("range", "bytes=49990-").send().await.unwrap();
    assert_eq!(response.status(), 206);
    assert_eq!(response.bytes().await.unwrap(), data[49990..]);

    // A tampered signature or unknown path is refused.
    let tampered = location.replace("X-Amz-Signature=", "X-Amz-Signature=x");
    assert_eq!(client().get(&tampered).send().await.unwrap().status(), 403);

    // Sending Authorization to the storage host is flagged.
    assert_eq!(proxy.auth_leaks(), 0);
    let response = with_auth(client().get(&location), auth).send().await.unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(response.text().await.unwrap(), AUTH_LEAK_MESSAGE);
    assert_eq!(proxy.auth_leaks(), 1);

    // A client that follows redirects and drops credentials across origins (reqwest's default) works.
    let following = reqwest::Client::new();
    let response = with_auth(following.get(&url), auth).header("range", "bytes=0-9").send().await.unwrap();
    assert_eq!(response.status(), 206);
    assert_eq!(response.bytes().await.unwrap(), data[..10]);
    assert_eq!(proxy.redirects(), 2);
    assert_eq!(proxy.auth_leaks(), 1);

    let storage = proxy.storage_log();
    assert_eq!(storage.iter().filter(|r| r.authorization).count(), 1);
    assert_eq!(storage.last().unwrap().range.as_deref(), Some("bytes=0-9"));
    assert!(proxy.requests_log().iter().all(|r| !r.is_write()));
}

// ---------------------------------------------------------------------------------------------------
// FaultProxy

#[tokio::test]
async fn fault_proxy_fails_the_first_matching_requests() {
    let registry = LocalRegistry::start().await.unwrap();
    let data = blob_data(1000);
    let digest = push_blob(&registry.host(), None, "repo", &data).await;
    let plan = FaultPlan::new().fail_first(2, Fault::ServerError).only(RequestFilter::BlobGets);
    let proxy = FaultProxy::start(registry.addr(), plan).await.unwrap();
    let url = format!("http://{}/v2/repo/blobs/{digest}", proxy.host());

    // Non-matching requests pass.
    assert_eq!(client().get(format!("http://{}/v2/", proxy.host())).send().await.unwrap().status(), 200);
    assert_eq!(client().head(&url).send().await.unwrap().status(), 200);
    for _ in 0..2 {
        let response = client().get(&url).send().await.unwrap();
        assert_eq!(response.status(), 500);
        assert!(response.text().await.unwrap().contains("UNKNOWN"));
    }
    let response = client().get(&url).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.bytes().await.unwrap(), data);
    assert_eq!(proxy.faults_injected(), 2);
    assert_eq!(proxy.requests(), 5);
    let statuses: Vec<u16> = proxy.requests_log().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [200, 200, 500, 500, 200]);
}

#[tokio::test]
async fn fault_proxy_answers_429_with_retry_after_to_uploads() {
    let registry = LocalRegistry::start().await.unwrap();
    let plan = FaultPlan::new()
        .fail_first(1, Fault::TooManyRequests { retry_after_secs: 1 })
        .only(RequestFilter::Uploads);
    let proxy = FaultProxy::start(registry.addr(), plan).await.unwrap();
    let response =
        client().post(format!("http://{}/v2/repo/blobs/uploads/", proxy.host())).send().await.unwrap();
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "1");
    // The second attempt goes through.
    let digest = push_blob(&proxy.host(), None, "repo", b"hello").await;
    assert_eq!(digest, sha256(b"hello"));
    assert_eq!(proxy.faults_injected(), 1);

    // A failed manifest PUT leaves nothing behind: the log shows what was attempted.
    let plan = FaultPlan::new().fail_first(1, Fault::ServerError).only(RequestFilter::ManifestPuts);
    let proxy = FaultProxy::start(registry.addr(), plan).await.unwrap();
    let response = put_manifest(&proxy.host(), None, "repo", "latest", b"{}").await;
    assert_eq!(response.status(), 500);
    let log = proxy.requests_log();
    assert_eq!(log.len(), 1);
    assert!(log[0].is_write());
}

#[tokio::test]
async fn fault_proxy_cuts_blob_bodies() {
    let registry = LocalRegistry::start().await.unwrap();
    let data = blob_data(300_000);
    let digest = push_blob(&registry.host(), None, "repo", &data).await;
    let proxy = FaultProxy::start(registry.addr(), FaultPlan::new().cut_blob_gets(2, 1000)).await.unwrap();
    let url = format!("http://{}/v2/repo/blobs/{digest}", proxy.host());

    // The first response announces the whole blob, sends 1000 bytes and dies.
    let mut response = client().get(&url).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.content_length(), Some(300_000));
    let mut received = Vec::new();
    let error = loop {
        match response.chunk().await {
            Ok(Some(chunk)) => received.extend_from_slice(&chunk),
            Ok(None) => panic!("body completed after {} bytes", received.len()),
            Err(error) => break error,
        }
    };
    assert_eq!(received, data[..1000], "{error}");

    // The client resumes with a Range: forwarded as is, and cut again (the second cut).
    let response = client().get(&url).header("range", "bytes=1000-").send().await.unwrap();
    assert_eq!(response.status(), 206);
    assert!(response.bytes().await.is_err());

    // Then bodies come through whole.
    let response = client().get(&url).header("range", "bytes=1000-").send().await.unwrap();
    assert_eq!(response.status(), 206);
    assert_eq!(response.bytes().await.unwrap(), data[1000..]);
    let response = client().get(&url).send().await.unwrap();
    assert_eq!(response.bytes().await.unwrap(), data);

    assert_eq!(proxy.faults_injected(), 2);
    let ranges: Vec<Option<String>> = proxy.requests_log().into_iter().map(|r| r.range).collect();
    assert_eq!(ranges, [None, Some("bytes=1000-".into()), Some("bytes=1000-".into()), None]);
}

#[tokio::test]
async fn fault_proxy_does_not_count_bodies_shorter_than_the_cut() {
    let registry = LocalRegistry::start().await.unwrap();
    let digest = push_blob(&registry.host(), None, "repo", b"short").await;
    let proxy = FaultProxy::start(registry.addr(), FaultPlan::new().cut_blob_gets(1, 5)).await.unwrap();
    let url = format!("http://{}/v2/repo/blobs/{digest}", proxy.host());
    assert_eq!(client().get(&url).send().await.unwrap().bytes().await.unwrap(), &b"short"[..]);
    assert_eq!(proxy.faults_injected(), 0);
}

// ---------------------------------------------------------------------------------------------------
// ReferrersProxy

fn manifest(config_media_type: &str, config: &(String, usize), extra: serde_json::Value) -> Vec<u8> {
    let mut manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": { "mediaType": config_media_type, "digest": config.0, "size": config.1 },
        "layers": [],
    });
    for (key, value) in extra.as_object().unwrap() {
        manifest[key] = value.clone();
    }
    serde_json::to_vec(&manifest).unwrap()
}

/// A registry with basic authentication behind a [`ReferrersProxy`], with an image and two referrers
/// to it pushed through the proxy: a SOCI index (artifactType, annotations) and a signature (typed by
/// its config media type).
struct ReferrersWorld {
    registry: LocalRegistry,
    proxy: ReferrersProxy,
    subject: String,
    soci: Vec<u8>,
    soci_digest: String,
}

const REFERRERS_AUTH: Auth<'static> = Some(("u", "p"));

async fn referrers_world() -> ReferrersWorld {
    let registry = LocalRegistry::start_with_basic_auth("u", "p").await.unwrap();
    let auth = REFERRERS_AUTH;
    let proxy = ReferrersProxy::start(registry.addr()).await.unwrap();
    let host = proxy.host();

    let config = b"{\"architecture\":\"amd64\",\"os\":\"linux\"}";
    let config = (push_blob(&host, auth, "img", config).await, config.len());
    let empty = (push_blob(&host, auth, "img", b"{}").await, 2);

    // The subject: an ordinary image manifest, pushed by tag. No OCI-Subject.
    let image = manifest("application/vnd.oci.image.config.v1+json", &config, serde_json::json!({}));
    let response = put_manifest(&host, auth, "img", "v1", &image).await;
    assert_eq!(response.status(), 201);
    assert!(response.headers().get("oci-subject").is_none());
    let subject = sha256(&image);
    let subject_descriptor = serde_json::json!({
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": subject, "size": image.len(),
    });

    // Two referrers: one with artifactType, one typed by its config media type.
    let soci = manifest(
        "application/vnd.oci.empty.v1+json",
        &empty,
        serde_json::json!({
            "artifactType": "application/vnd.amazon.soci.index.v2+json",
            "subject": subject_descriptor,
            "annotations": { "com.amazon.soci.index-digest": "x" },
        }),
    );
    let soci_digest = sha256(&soci);
    let response = put_manifest(&host, auth, "img", &soci_digest, &soci).await;
    assert_eq!(response.status(), 201);
    assert_eq!(response.headers()["oci-subject"], subject.as_str());
    let sig =
        manifest("application/vnd.example.sig", &empty, serde_json::json!({ "subject": subject_descriptor }));
    let response = put_manifest(&host, auth, "img", &sha256(&sig), &sig).await;
    assert_eq!(response.status(), 201);
    assert_eq!(proxy.referrers().len(), 2);
    ReferrersWorld { registry, proxy, subject, soci, soci_digest }
}

#[tokio::test]
async fn referrers_proxy_serves_the_referrers_api() {
    let ReferrersWorld { registry: _registry, proxy, subject, soci, soci_digest } = referrers_world().await;
    let (host, auth) = (proxy.host(), REFERRERS_AUTH);
    let referrers = format!("http://{host}/v2/img/referrers/{subject}");
    // Credentials are checked like the registry does.
    let response = client().get(&referrers).send().await.unwrap();
    assert_eq!(response.status(), 401);
    assert!(response.headers()["www-authenticate"].to_str().unwrap().starts_with("Basic"));

    let response = with_auth(client().get(&referrers), auth).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], OCI_INDEX_MEDIA_TYPE);
    assert!(response.headers().get("oci-filters-applied").is_none());
    let index: serde_json::Value = response.json().await.unwrap();
    assert_eq!(index["schemaVersion"], 2);
    assert_eq!(index["mediaType"], OCI_INDEX_MEDIA_TYPE);
    let manifests = index["manifests"].as_array().unwrap();
    assert_eq!(manifests.len(), 2);
    assert_eq!(
        manifests[0],
        serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": soci_digest,
            "size": soci.len(),
            "artifactType": "application/vnd.amazon.soci.index.v2+json",
            "annotations": { "com.amazon.soci.index-digest": "x" },
        })
    );
    assert_eq!(manifests[1]["artifactType"], "application/vnd.example.sig");
    assert!(manifests[1].get("annotations").is_none());

    // Filtered, with the type percent-encoded as clients should send it.
    let response = with_auth(
        client().get(format!("{referrers}?artifactType=application%2Fvnd.amazon.soci.index.v2%2Bjson")),
        auth,
    )
    .send()
    .await
    .unwrap();
    assert_eq!(response.headers()["oci-filters-applied"], "artifactType");
    let index: serde_json::Value = response.json().await.unwrap();
    assert_eq!(index["manifests"].as_array().unwrap().len(), 1);
    assert_eq!(index["manifests"][0]["digest"], soci_digest.as_str());
    let response = with_auth(client().get(format!("{referrers}?artifactType=application/none")), auth)
        .send()
        .await
        .unwrap();
    let index: serde_json::Value = response.json().await.unwrap();
    assert_eq!(index["manifests"], serde_json::json!([]));

    // Other repositories and subjects have none.
    let other = format!("http://{host}/v2/other/referrers/{subject}");
    let index: serde_json::Value =
        with_auth(client().get(&other), auth).send().await.unwrap().json().await.unwrap();
    assert_eq!(index["manifests"], serde_json::json!([]));
}

#[tokio::test]
async fn referrers_proxy_forgets_a_referrer_deleted_through_it() {
    let ReferrersWorld { registry, proxy, subject, soci, soci_digest } = referrers_world().await;
    let (host, auth) = (proxy.host(), REFERRERS_AUTH);
    let referrers = format!("http://{host}/v2/img/referrers/{subject}");
    // The manifests really are in the registry, and deleting one through the proxy forgets it.
    let stored = format!("http://{}/v2/img/manifests/{soci_digest}", registry.host());
    let response = with_auth(client().get(&stored), auth)
        .header("accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.bytes().await.unwrap(), soci);
    let response = with_auth(client().delete(format!("http://{host}/v2/img/manifests/{soci_digest}")), auth)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let index: serde_json::Value =
        with_auth(client().get(&referrers), auth).send().await.unwrap().json().await.unwrap();
    assert_eq!(index["manifests"].as_array().unwrap().len(), 1);
}

// ---------------------------------------------------------------------------------------------------
// ThrottleProxy

#[tokio::test]
async fn throttle_proxy_caps_each_connection_and_counts_them() {
    let registry = LocalRegistry::start().await.unwrap();
    let data = blob_data(400_000);
    let digest = push_blob(&registry.host(), None, "repo", &data).await;
    let proxy = testkit::proxy::ThrottleProxy::start(registry.addr(), 1_000_000).await.unwrap();
    let url = format!("http://{}/v2/repo/blobs/{digest}", proxy.host());

    // 400 kB at 1 MB/s: about 0.4 s, on one connection; a Range passes through.
    let started = std::time::Instant::now();
    let one = client().get(&url).send().await.unwrap().bytes().await.unwrap();
    let alone = started.elapsed();
    assert!(one == data, "bytes pass unchanged");
    assert!(alone >= std::time::Duration::from_millis(330), "capped at 1 MB/s: {alone:?}");
    let ranged = client().get(&url).header("range", "bytes=10-19").send().await.unwrap();
    assert_eq!(ranged.status(), 206);
    assert_eq!(ranged.bytes().await.unwrap(), data[10..20]);

    // Three at once on three connections: each has the cap, so together they take about as long.
    let fresh = || reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
    let started = std::time::Instant::now();
    let gets: Vec<_> = (0..3)
        .map(|_| {
            let (client, url) = (fresh(), url.clone());
            tokio::spawn(async move { client.get(&url).send().await.unwrap().bytes().await.unwrap() })
        })
        .collect();
    for get in gets {
        assert!(get.await.unwrap() == data);
    }
    let together = started.elapsed();
    assert!(together < alone * 2, "the cap is per connection: {together:?} for three, {alone:?} for one");
    assert_eq!(proxy.max_busy_connections(), 3);
    assert!(proxy.connections() >= 4, "{}", proxy.connections());
    assert!(proxy.max_open_connections() >= 3);

    // Ignoring Range: the whole blob, 200.
    proxy.ignore_range(true);
    let ignored = client().get(&url).header("range", "bytes=10-19").send().await.unwrap();
    assert_eq!(ignored.status(), 200);
    assert_eq!(ignored.bytes().await.unwrap(), data);
    let log = proxy.requests_log();
    assert_eq!(
        log.last().unwrap().range.as_deref(),
        Some("bytes=10-19"),
        "the log shows what the client sent"
    );
}

#[tokio::test]
async fn proxies_stop_when_dropped() {
    let registry = LocalRegistry::start().await.unwrap();
    let proxy = ReferrersProxy::start(registry.addr()).await.unwrap();
    let addr = proxy.addr();
    assert_eq!(client().get(format!("http://{addr}/v2/")).send().await.unwrap().status(), 200);
    drop(proxy);
    tokio::task::yield_now().await;
    assert!(client().get(format!("http://{addr}/v2/")).send().await.is_err());

    let registry_addr = registry.addr();
    drop(registry);
    assert!(tokio::net::TcpStream::connect(registry_addr).await.is_err());
}

#[tokio::test]
async fn quota_proxy_throttles_manifest_puts_over_its_rate_for_all_clients_together() {
    use testkit::proxy::{QuotaProxy, Quotas};
    let registry = LocalRegistry::start().await.unwrap();
    let quotas = Quotas { manifest_puts: 10.0, uploads: 20.0, retry_after_secs: Some(1) };
    let proxy = QuotaProxy::start(registry.addr(), quotas).await.unwrap();
    let host = proxy.host();
    // Fifteen manifest PUTs at once (distinct clients: a connection each): the bucket holds ten.
    let mut puts = tokio::task::JoinSet::new();
    for i in 0..15 {
        let host = host.clone();
        puts.spawn(async move { put_manifest(&host, None, "repo", &format!("t{i}"), b"{}").await });
    }
    let answers: Vec<reqwest::Response> = puts.join_all().await;
    let throttled: Vec<&reqwest::Response> = answers.iter().filter(|r| r.status() == 429).collect();
    assert!((5..=6).contains(&throttled.len()), "{} of 15 throttled", throttled.len());
    assert_eq!(throttled[0].headers()["retry-after"], "1");
    let counts = proxy.counts();
    assert_eq!(counts.manifest_puts + counts.manifest_puts_throttled, 15, "{counts:?}");
    assert_eq!(counts.manifest_puts_throttled, throttled.len());
    // Reads pass whatever the quota.
    for _ in 0..30 {
        let response = client().get(format!("http://{host}/v2/")).send().await.unwrap();
        assert_eq!(response.status(), 200);
    }
    assert!(proxy.bound() >= std::time::Duration::from_millis(900), "{:?}", proxy.bound());
}
