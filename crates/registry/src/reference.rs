//! Image references (`registry/repo:tag@digest`) and repositories.

use std::fmt;
use std::str::FromStr;

use crate::digest::validate_digest;
use crate::Error;

/// A parsed image reference, with Docker's defaults applied: no registry means `docker.io`, a
/// single-component name on Docker Hub gets `library/`, no tag and no digest means `:latest`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Reference {
    inner: oci_spec::distribution::Reference,
}

impl Reference {
    /// Parses `registry/repository[:tag][@sha256:...]`. Only sha256 digests are accepted, since they are
    /// the only ones this client can verify.
    pub fn parse(input: &str) -> Result<Reference, Error> {
        let inner = oci_spec::distribution::Reference::try_from(input)
            .map_err(|e| Error::InvalidReference { input: input.to_owned(), reason: e.to_string() })?;
        // The upstream grammar lets an uppercase first component through when it is not a host.
        validate_repository_name(inner.repository())
            .map_err(|e| Error::InvalidReference { input: input.to_owned(), reason: reason_of(e) })?;
        if let Some(digest) = inner.digest() {
            validate_digest(digest).map_err(|_| Error::InvalidReference {
                input: input.to_owned(),
                reason: "only sha256 digests (64 lowercase hex digits) are supported".into(),
            })?;
        }
        Ok(Reference { inner })
    }

    /// The registry host (with port if any), e.g. `docker.io`, `localhost:5000`,
    /// `123456789012.dkr.ecr.us-east-1.amazonaws.com`.
    pub fn registry(&self) -> &str {
        self.inner.registry()
    }

    /// The repository name, e.g. `library/alpine`.
    pub fn repository(&self) -> &str {
        self.inner.repository()
    }

    /// The tag, if the reference has one (`latest` when it had neither tag nor digest).
    pub fn tag(&self) -> Option<&str> {
        self.inner.tag()
    }

    /// The digest, if the reference has one.
    pub fn digest(&self) -> Option<&str> {
        self.inner.digest()
    }

    /// What to fetch the manifest by: the digest if there is one (it pins the content), else the tag.
    pub fn manifest_reference(&self) -> &str {
        // The parser always sets a tag when there is no digest.
        self.digest().or(self.tag()).unwrap_or("latest")
    }

    /// The repository this reference points into.
    pub fn to_repository(&self) -> Repository {
        Repository { registry: self.registry().to_owned(), name: self.repository().to_owned() }
    }
}

impl FromStr for Reference {
    type Err = Error;

    fn from_str(s: &str) -> Result<Reference, Error> {
        Reference::parse(s)
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.inner, f)
    }
}

/// A repository on a registry: what every registry operation is scoped to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Repository {
    registry: String,
    name: String,
}

impl Repository {
    /// A repository `name` (e.g. `library/alpine`) on `registry` (a host with optional port). The name
    /// is checked against the distribution grammar, which also makes it safe in URL paths.
    pub fn new(registry: impl Into<String>, name: impl Into<String>) -> Result<Repository, Error> {
        let registry = registry.into();
        let name = name.into();
        validate_registry(&registry)?;
        validate_repository_name(&name)?;
        Ok(Repository { registry, name })
    }

    /// The registry host, as written in image references.
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The repository name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The host that serves the registry API: Docker Hub's API is not on `docker.io` itself.
    pub fn api_host(&self) -> &str {
        api_host(&self.registry)
    }
}

impl fmt::Display for Repository {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.name)
    }
}

fn reason_of(error: Error) -> String {
    match error {
        Error::InvalidReference { reason, .. } => reason,
        other => other.to_string(),
    }
}

/// The host serving the API of `registry`.
pub(crate) fn api_host(registry: &str) -> &str {
    match registry {
        "docker.io" | "index.docker.io" => "registry-1.docker.io",
        other => other,
    }
}

fn validate_registry(registry: &str) -> Result<(), Error> {
    let ok = !registry.is_empty()
        && registry
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidReference {
            input: registry.to_owned(),
            reason: "a registry is a host name or IP address with an optional :port".into(),
        })
    }
}

/// Path components of `[a-z0-9]+` joined by `.`, `_`, `__` or runs of `-`, separated by `/`.
fn validate_repository_name(name: &str) -> Result<(), Error> {
    let component_ok = |c: &str| {
        let bytes = c.as_bytes();
        let is_alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
        if bytes.is_empty() || !is_alnum(bytes[0]) || !is_alnum(bytes[bytes.len() - 1]) {
            return false;
        }
        let mut i = 0;
        while i < bytes.len() {
            if is_alnum(bytes[i]) {
                i += 1;
                continue;
            }
            let start = i;
            while i < bytes.len() && !is_alnum(bytes[i]) {
                i += 1;
            }
            let separator = &c[start..i];
            let ok = matches!(separator, "." | "_" | "__") || separator.bytes().all(|b| b == b'-');
            if !ok {
                return false;
            }
        }
        true
    };
    if !name.is_empty() && name.len() <= 255 && name.split('/').all(component_ok) {
        Ok(())
    } else {
        Err(Error::InvalidReference {
            input: name.to_owned(),
            reason: "a repository name is lowercase [a-z0-9] components joined by '.', '_', '__' or '-', \
                     separated by '/'"
                .into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    /// input, registry, repository, tag, digest
    type Case<'a> = (&'a str, &'a str, &'a str, Option<&'a str>, Option<&'a str>);

    #[test]
    fn parse_table() {
        let d_ref = format!("example.com/a/b@{D}");
        let local_d = format!("localhost:5000/a/b:t@{D}");
        let cases: &[Case] = &[
            ("alpine", "docker.io", "library/alpine", Some("latest"), None),
            ("alpine:3.19", "docker.io", "library/alpine", Some("3.19"), None),
            ("user/app", "docker.io", "user/app", Some("latest"), None),
            ("docker.io/alpine", "docker.io", "library/alpine", Some("latest"), None),
            ("index.docker.io/library/alpine:3", "docker.io", "library/alpine", Some("3"), None),
            ("localhost/a:t", "localhost", "a", Some("t"), None),
            ("localhost:5000/a/b:t", "localhost:5000", "a/b", Some("t"), None),
            ("127.0.0.1:5000/a/b", "127.0.0.1:5000", "a/b", Some("latest"), None),
            (
                "123456789012.dkr.ecr.us-east-1.amazonaws.com/team/app:v1.2",
                "123456789012.dkr.ecr.us-east-1.amazonaws.com",
                "team/app",
                Some("v1.2"),
                None,
            ),
            (&d_ref, "example.com", "a/b", None, Some(D)),
            (&local_d, "localhost:5000", "a/b", Some("t"), Some(D)),
        ];
        for &(input, registry, repository, tag, digest) in cases {
            let r = Reference::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(r.registry(), registry, "{input}");
            assert_eq!(r.repository(), repository, "{input}");
            assert_eq!(r.tag(), tag, "{input}");
            assert_eq!(r.digest(), digest, "{input}");
            assert_eq!(r.manifest_reference(), digest.or(tag).unwrap(), "{input}");
            let repo = r.to_repository();
            assert_eq!((repo.registry(), repo.name()), (registry, repository));
            // Display round-trips.
            assert_eq!(Reference::parse(&r.to_string()).unwrap(), r);
        }
    }

    #[test]
    fn parse_rejects() {
        for bad in [
            "",
            "UPPER/case",
            "a/b:",
            ":tag",
            "a/b@sha256:abc",
            "a/b@sha512:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "a/b@sha256:0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef",
            "a//b",
            "a b",
        ] {
            match Reference::parse(bad) {
                Err(Error::InvalidReference { input, .. }) => assert_eq!(input, bad),
                other => panic!("{bad:?} gave {other:?}"),
            }
        }
    }

    #[test]
    fn api_host_of_docker_hub() {
        assert_eq!(Reference::parse("alpine").unwrap().to_repository().api_host(), "registry-1.docker.io");
        assert_eq!(Repository::new("ghcr.io", "a/b").unwrap().api_host(), "ghcr.io");
    }

    #[test]
    fn repository_names() {
        for good in ["a", "a/b", "a.b/c_d/e__f/g---h", "0/9"] {
            Repository::new("r.io", good).unwrap_or_else(|e| panic!("{good}: {e}"));
        }
        for bad in ["", "A", "a/", "/a", "a//b", "a..b", "a___b", "-a", "a-", "a/../b", "a?b", "a%2fb"] {
            assert!(Repository::new("r.io", bad).is_err(), "{bad}");
        }
        assert!(Repository::new("", "a").is_err());
        assert!(Repository::new("r.io/x", "a").is_err());
    }
}
