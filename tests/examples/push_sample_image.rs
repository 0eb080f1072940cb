//! Pushes a sample multi-layer, multi-platform image to a registry, for the local demo
//! (`infra/local-demo.sh`) and for trying soci-indexer by hand.
//!
//! ```sh
//! cargo run -p soci-indexer-e2e --example push_sample_image -- \
//!     --registry 127.0.0.1:5000 --repository demo/app --tag v1 [--user U --password P] [--https] \
//!     [--variant N]
//! ```
//!
//! The image is an OCI index for linux/amd64 and linux/arm64: per platform a base layer (shared),
//! an application layer and a small config layer, generated from fixed seeds by `testkit` (so the same
//! image, with the same digests, every time). The base and application layers are a few MB of gzip,
//! the config layer about 100 KB (below a 1 MiB `SOCI_MIN_LAYER_SIZE`, to show a skipped layer).
//! `--variant N` (default 0) changes the application and config layers and keeps the base layer: another
//! image that shares a layer with the first, to show zTOC reuse.
//! stdout: the image (index) digest alone; stderr: what was pushed.

use std::process::ExitCode;
use std::sync::Arc;

use bytes::Bytes;
use registry::{Client, ClientConfig, CredentialSource, Credentials, Repository, StaticCredentials};
use testkit::image::{image, Style, TestImage, TestLayer};
use testkit::LayerConfig;

struct Args {
    registry: String,
    repository: String,
    tag: String,
    user: Option<String>,
    password: Option<String>,
    https: bool,
    variant: u64,
}

const USAGE: &str = "usage: push_sample_image --registry HOST[:PORT] --repository NAME --tag TAG \
                     [--user U --password P] [--https] [--variant N]";

fn parse_args() -> Result<Args, String> {
    let mut registry = None;
    let mut repository = None;
    let mut tag = None;
    let mut user = None;
    let mut password = None;
    let mut https = false;
    let mut variant = 0;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value\n{USAGE}"));
        match arg.as_str() {
            "--registry" => registry = Some(value()?),
            "--repository" => repository = Some(value()?),
            "--tag" => tag = Some(value()?),
            "--user" => user = Some(value()?),
            "--password" => password = Some(value()?),
            "--https" => https = true,
            "--variant" => {
                variant = value()?.parse().map_err(|_| format!("--variant needs a number\n{USAGE}"))?
            }
            "-h" | "--help" => return Err(USAGE.to_owned()),
            other => return Err(format!("unknown argument {other}\n{USAGE}")),
        }
    }
    let missing = |what: &str| format!("{what} is required\n{USAGE}");
    Ok(Args {
        registry: registry.ok_or_else(|| missing("--registry"))?,
        repository: repository.ok_or_else(|| missing("--repository"))?,
        tag: tag.ok_or_else(|| missing("--tag"))?,
        user,
        password,
        https,
        variant,
    })
}

/// The sample image: fixed seeds, so every run pushes the same digests; `variant` changes every layer but
/// the base.
fn sample_image(variant: u64) -> TestImage {
    let seed = |seed: u64| seed + 10 * variant;
    let big = LayerConfig { entries: 240, max_file_size: 256 * 1024, pax_percent: 10 };
    let small = LayerConfig { entries: 12, max_file_size: 24 * 1024, pax_percent: 0 };
    let base = TestLayer::gzip(101, &big, 6, false);
    image(
        Style::Oci,
        vec![
            (
                "linux/amd64".into(),
                vec![
                    base.clone(),
                    TestLayer::gzip(seed(102), &big, 6, false),
                    TestLayer::gzip(seed(103), &small, 6, false),
                ],
            ),
            (
                "linux/arm64".into(),
                vec![
                    base,
                    TestLayer::gzip(seed(104), &big, 6, false),
                    TestLayer::gzip(seed(105), &small, 6, false),
                ],
            ),
        ],
        true,
        false,
    )
}

async fn push(args: &Args) -> Result<String, registry::Error> {
    let credentials: Arc<dyn CredentialSource> = match (&args.user, &args.password) {
        (Some(user), Some(password)) => Arc::new(StaticCredentials(Credentials::new(user, password))),
        _ => Arc::new(registry::Anonymous),
    };
    let client =
        Client::new(ClientConfig { plain_http: !args.https, ..ClientConfig::default() }, credentials)?;
    let repo = Repository::new(&args.registry, &args.repository)?;
    let image = sample_image(args.variant);
    for (digest, kind, bytes) in &image.blobs {
        client.push_blob(&repo, digest, Bytes::from(bytes.clone())).await?;
        eprintln!("blob     {digest} {:>9} bytes  {kind}", bytes.len());
    }
    for (digest, media_type, bytes) in &image.manifests {
        client.put_manifest(&repo, digest, media_type, Bytes::from(bytes.clone())).await?;
        eprintln!("manifest {digest} {media_type}");
    }
    let (digest, media_type, bytes) = &image.root;
    client.put_manifest(&repo, &args.tag, media_type, Bytes::from(bytes.clone())).await?;
    eprintln!("index    {digest} {media_type}");
    for (platform, layers) in &image.platforms {
        let sizes: Vec<String> = layers.iter().map(|l| format!("{} B", l.blob.len())).collect();
        eprintln!("{platform}: {} layers ({})", layers.len(), sizes.join(", "));
    }
    eprintln!("pushed {}/{}:{} = {digest}", args.registry, args.repository, args.tag);
    Ok(digest.clone())
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    match push(&args).await {
        Ok(digest) => {
            println!("{digest}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("push_sample_image: {error}");
            ExitCode::FAILURE
        }
    }
}
