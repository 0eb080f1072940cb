//! An open blob response and the byte ranges of blobs: what the single-stream download, the ranged
//! download and the blob operations share.

use bytes::Bytes;
use reqwest::header::HeaderValue;
use tokio::sync::OwnedSemaphorePermit;

/// A blob response whose body, after dropping `skip` bytes, starts at the requested offset.
pub(crate) struct OpenedBlob {
    pub(crate) response: reqwest::Response,
    /// Non-zero when the server ignored `Range` and resent the blob from its start.
    pub(crate) skip: u64,
    /// The whole blob's size, if the response tells it.
    pub(crate) total_size: Option<u64>,
    /// The connection budget's permit, held while the body downloads.
    pub(crate) permit: OwnedSemaphorePermit,
}

/// Drops from `chunk` what remains of the `skip` bytes a body starts with, counting them off.
pub(crate) fn skip_prefix(chunk: Bytes, skip: &mut u64) -> Bytes {
    let n = (*skip).min(chunk.len() as u64);
    *skip -= n;
    chunk.slice(n as usize..)
}

pub(crate) fn range_header(start: u64, end_inclusive: Option<u64>) -> HeaderValue {
    let value = match end_inclusive {
        Some(end) => format!("bytes={start}-{end}"),
        None => format!("bytes={start}-"),
    };
    HeaderValue::from_str(&value).expect("digits and dashes are a valid header value")
}

/// `bytes START-END/TOTAL` (TOTAL may be `*`).
pub(crate) fn parse_content_range(value: &str) -> Option<(u64, u64, Option<u64>)> {
    let rest = value.trim().strip_prefix("bytes")?.trim_start();
    let (range, total) = rest.split_once('/')?;
    let (start, end) = range.trim().split_once('-')?;
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse().ok()?),
    };
    Some((start.trim().parse().ok()?, end.trim().parse().ok()?, total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range() {
        assert_eq!(parse_content_range("bytes 10-19/100"), Some((10, 19, Some(100))));
        assert_eq!(parse_content_range("bytes 0-0/*"), Some((0, 0, None)));
        assert_eq!(parse_content_range("bytes */100"), None);
        assert_eq!(parse_content_range("items 1-2/3"), None);
    }
}
