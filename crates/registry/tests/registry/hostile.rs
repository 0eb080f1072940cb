//! What a broken or hostile registry can make the client hold or wait for: bodies that never end,
//! answers that drip, stall or never come.

use std::time::Duration;

use futures_util::StreamExt;
use registry::{sha256_digest, Error};

use crate::script::{head, ScriptServer, Step};
use crate::support::*;

/// Reads a blob stream to its end: how many bytes came as items, and the error that ended it.
async fn drain(mut stream: registry::BlobStream) -> (u64, Option<Error>) {
    let mut received = 0;
    while let Some(item) = stream.next().await {
        match item {
            Ok(chunk) => received += chunk.len() as u64,
            Err(error) => return (received, Some(error)),
        }
    }
    (received, None)
}

#[tokio::test]
async fn an_endless_blob_body_fails_as_soon_as_it_passes_the_declared_size() {
    // An image config is read whole into memory: its declared size must bound what is held.
    let declared = 1000u64;
    let digest = sha256_digest(b"the config the manifest declares");
    let chunk_of = |framing: &str| {
        let data = vec![b'x'; 4096];
        match framing {
            "chunked" => [format!("{:x}\r\n", data.len()).into_bytes(), data, b"\r\n".to_vec()].concat(),
            _ => data,
        }
    };
    let framings = [
        ("close-delimited", vec![("Connection", "close")]),
        ("chunked", vec![("Transfer-Encoding", "chunked")]),
        ("Content-Length far above", vec![("Content-Length", "1000000000000")]),
    ];
    for (framing, headers) in framings {
        let bytes = chunk_of(framing);
        let server = ScriptServer::start(move |_, _| {
            vec![head(200, &headers), Step::Endless { bytes: bytes.clone(), every: Duration::ZERO }]
        })
        .await;
        let client = anonymous_client();
        let repo = repo(&server.host(), "a/b");
        let read = async {
            let stream = client.get_blob(&repo, &digest, Some(declared)).await.unwrap();
            drain(stream).await
        };
        let (received, error) =
            tokio::time::timeout(Duration::from_secs(20), read).await.expect("the endless body is cut off");
        assert!(received <= declared, "{framing}: {received} bytes passed on");
        match error {
            Some(Error::SizeMismatch { expected, actual, .. }) => {
                assert_eq!(expected, declared, "{framing}");
                assert!(actual > declared && actual <= declared + 1024 * 1024, "{framing}: {actual}");
            }
            other => panic!("{framing}: {other:?}"),
        }
        assert_eq!(server.connections(), 1, "{framing}: a body too long is not resumed");
    }
}
