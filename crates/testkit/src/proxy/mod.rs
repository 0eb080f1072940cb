//! HTTP fixtures that sit in front of a registry (usually a [`LocalRegistry`](crate::registry::LocalRegistry))
//! on loopback, to reproduce what real registries do and `docker-registry` does not:
//!
//! - [`RedirectProxy`]: blob GETs are redirected to a second origin (like ECR → S3 presigned URLs),
//!   which rejects requests that carry an `Authorization` header.
//! - [`ReferrersProxy`]: the OCI 1.1 referrers API and the `OCI-Subject` header.
//! - [`FaultProxy`]: injected 500/429 answers and blob bodies cut mid-way.
//! - [`ThrottleProxy`]: every connection capped at a byte rate, connections counted.
//! - [`QuotaProxy`]: ECR's per-account API quotas (manifest `PUT`s, uploads) shared by all clients,
//!   429 `TOOMANYREQUESTS` over them.
//!
//! Every fixture forwards everything else faithfully (method, path and query, headers including
//! `Authorization`, streamed bodies both ways), rewrites a `Location` that points at the upstream so
//! clients keep going through the proxy, keeps a log of the requests it saw, and stops serving when
//! its handle is dropped. Plain HTTP only, on `127.0.0.1`.

use std::sync::{Arc, Mutex};

use http::header;
use http::{Request, StatusCode};

mod fault;
mod path;
mod quota;
mod redirect;
mod referrers;
mod relay;
mod throttle;

pub use fault::{Fault, FaultPlan, FaultProxy, RequestFilter};
pub use quota::{QuotaCounts, QuotaProxy, Quotas};
pub use redirect::{RedirectProxy, AUTH_LEAK_MESSAGE};
pub use referrers::{PushedReferrer, ReferrersProxy, OCI_INDEX_MEDIA_TYPE};
pub use throttle::ThrottleProxy;

/// One request a fixture answered, as recorded in its log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestRecord {
    /// The HTTP method, e.g. `GET`.
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// The query string, if any (without `?`).
    pub query: Option<String>,
    /// The `Range` header, if the request had one.
    pub range: Option<String>,
    /// Whether the request carried an `Authorization` header.
    pub authorization: bool,
    /// The status the fixture answered with.
    pub status: u16,
}

impl RequestRecord {
    /// Whether the request had a `Range` header.
    pub fn had_range(&self) -> bool {
        self.range.is_some()
    }

    /// Whether the request could change the registry (`PUT`, `POST`, `PATCH` or `DELETE`).
    pub fn is_write(&self) -> bool {
        matches!(self.method.as_str(), "PUT" | "POST" | "PATCH" | "DELETE")
    }

    /// The `(method, path, had_range_header)` triple, handy in assertions.
    pub fn triple(&self) -> (String, String, bool) {
        (self.method.clone(), self.path.clone(), self.had_range())
    }

    /// The record of `request`, before it is answered (`status` 0).
    fn of<B>(request: &Request<B>) -> RequestRecord {
        RequestRecord {
            method: request.method().to_string(),
            path: request.uri().path().to_owned(),
            query: request.uri().query().map(str::to_owned),
            range: request.headers().get(header::RANGE).map(|v| String::from_utf8_lossy(v.as_bytes()).into()),
            authorization: request.headers().contains_key(header::AUTHORIZATION),
            status: 0,
        }
    }
}

/// The requests a listener answered, shared between its handle and its connections.
#[derive(Clone, Debug, Default)]
struct RequestLog(Arc<Mutex<Vec<RequestRecord>>>);

impl RequestLog {
    fn finish(&self, mut record: RequestRecord, status: StatusCode) {
        record.status = status.as_u16();
        self.0.lock().unwrap().push(record);
    }

    fn snapshot(&self) -> Vec<RequestRecord> {
        self.0.lock().unwrap().clone()
    }
}
