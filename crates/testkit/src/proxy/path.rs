//! Registry API paths and query strings, as the proxies need to tell requests apart.

/// Registry API endpoints the fixtures care about, parsed from a request path.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Endpoint<'a> {
    /// `/v2/<name>/blobs/<digest>`
    Blob {
        name: &'a str,
        digest: &'a str,
    },
    /// `/v2/<name>/blobs/uploads/...`
    Upload,
    /// `/v2/<name>/manifests/<reference>`
    Manifest {
        name: &'a str,
        reference: &'a str,
    },
    /// `/v2/<name>/referrers/<digest>`
    Referrers {
        name: &'a str,
        digest: &'a str,
    },
    Other,
}

/// The endpoint `path` addresses.
pub(super) fn endpoint(path: &str) -> Endpoint<'_> {
    let Some(rest) = path.strip_prefix("/v2/") else { return Endpoint::Other };
    if let Some((name, tail)) = rest.split_once("/blobs/uploads") {
        if !name.is_empty() && (tail.is_empty() || tail.starts_with('/')) {
            return Endpoint::Upload;
        }
    }
    if let Some((name, digest)) = rest.rsplit_once("/blobs/") {
        if !name.is_empty() && digest.contains(':') && !digest.contains('/') {
            return Endpoint::Blob { name, digest };
        }
    }
    if let Some((name, reference)) = rest.rsplit_once("/manifests/") {
        if !name.is_empty() && !reference.is_empty() && !reference.contains('/') {
            return Endpoint::Manifest { name, reference };
        }
    }
    if let Some((name, digest)) = rest.rsplit_once("/referrers/") {
        if !name.is_empty() && !digest.is_empty() && !digest.contains('/') {
            return Endpoint::Referrers { name, digest };
        }
    }
    Endpoint::Other
}

/// The percent-decoded value of `key` in a query string (`+` is kept as a literal plus).
pub(super) fn query_param(query: &str, key: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(k) == key).then(|| percent_decode(v))
    })
}

/// `s` with its `%XX` escapes decoded (invalid UTF-8 replaced).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && bytes[i + 1].is_ascii_hexdigit()
            && bytes[i + 2].is_ascii_hexdigit()
        {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("0");
            out.push(u8::from_str_radix(hex, 16).unwrap_or(0));
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_told_apart_by_their_path() {
        let digest = "sha256:abc";
        assert_eq!(endpoint("/v2/a/b/blobs/sha256:abc"), Endpoint::Blob { name: "a/b", digest });
        assert_eq!(endpoint("/v2/a/blobs/uploads/"), Endpoint::Upload);
        assert_eq!(endpoint("/v2/a/blobs/uploads/some-uuid"), Endpoint::Upload);
        assert_eq!(endpoint("/v2/a/manifests/latest"), Endpoint::Manifest { name: "a", reference: "latest" });
        assert_eq!(endpoint("/v2/a/referrers/sha256:abc"), Endpoint::Referrers { name: "a", digest });
        assert_eq!(endpoint("/v2/"), Endpoint::Other);
        assert_eq!(endpoint("/v2/a/blobs/not-a-digest"), Endpoint::Other);
        assert_eq!(endpoint("/v1/a/manifests/latest"), Endpoint::Other);
    }

    #[test]
    fn query_params_are_percent_decoded_and_plus_is_literal() {
        let query = "artifactType=application%2Fvnd.x%2Bjson&X-Amz-Signature=a+b&flag";
        assert_eq!(query_param(query, "artifactType").as_deref(), Some("application/vnd.x+json"));
        assert_eq!(query_param(query, "X-Amz-Signature").as_deref(), Some("a+b"));
        assert_eq!(query_param(query, "flag").as_deref(), Some(""));
        assert_eq!(query_param(query, "missing"), None);
        assert_eq!(query_param("k=%zz%4", "k").as_deref(), Some("%zz%4"));
    }
}
