//! The function's log: JSON lines on stdout (CloudWatch Logs), filtered by `LOG_LEVEL`, with the AWS
//! SDK and the HTTP stack held at `info` whatever `LOG_LEVEL` says.
//!
//! The cap is a filter of its own, not directives appended to the user's: `tracing`'s more specific
//! directive wins (`aws_smithy_runtime::client=trace` beats `aws_smithy_runtime=info`), and span
//! directives (`[event]=trace`) enable every target inside the span. Both filters must let an event
//! through, so no directive can reach past the cap.

use tracing::level_filters::LevelFilter;
use tracing::Subscriber;
use tracing_subscriber::filter::{EnvFilter, Targets};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt as _;

/// Targets (prefixes: `aws_` is every AWS SDK crate) that log request and response bodies, headers or
/// credentials below `info`: the AWS SDK logs the raw `GetAuthorizationToken` answer, ECR token
/// included, at `trace`.
pub const CAPPED_TARGETS: [&str; 7] = ["aws_", "hyper", "h2", "reqwest", "rustls", "tower", "http"];

/// The most verbose level [`CAPPED_TARGETS`] log at.
pub const CAPPED_LEVEL: LevelFilter = LevelFilter::INFO;

/// The cap: [`CAPPED_TARGETS`] at [`CAPPED_LEVEL`], everything else as the directives decide.
pub fn cap() -> Targets {
    CAPPED_TARGETS.iter().fold(Targets::new().with_default(LevelFilter::TRACE), |cap, target| {
        cap.with_target(*target, CAPPED_LEVEL)
    })
}

/// The subscriber: `directives` (`info` if they do not parse) and [`cap`], JSON lines to `writer`,
/// each with its event's span (which carries the request id).
pub fn subscriber<W>(directives: &str, writer: W) -> impl Subscriber + Send + Sync
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_new(directives).unwrap_or_else(|_| EnvFilter::new("info"));
    let format = tracing_subscriber::fmt::layer()
        .json()
        .flatten_event(true)
        .with_current_span(true)
        .with_span_list(false)
        .with_target(true)
        .with_ansi(false)
        .with_writer(writer);
    tracing_subscriber::registry().with(format).with(filter).with(cap())
}

/// Installs [`subscriber`] on stdout for the process (and `log` records through it).
pub fn init(directives: &str) {
    let _ = tracing_subscriber::util::SubscriberInitExt::try_init(subscriber(directives, std::io::stdout));
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use super::*;

    /// Collects what the subscriber writes.
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'w> MakeWriter<'w> for Buffer {
        type Writer = Buffer;

        fn make_writer(&'w self) -> Buffer {
            self.clone()
        }
    }

    /// What `directives` let through of one event per level and target, inside an `event` span.
    fn logged(directives: &str) -> String {
        let buffer = Buffer::default();
        tracing::subscriber::with_default(subscriber(directives, buffer.clone()), || {
            let span = tracing::info_span!("event", request_id = "req-1");
            let _entered = span.enter();
            tracing::trace!(target: "aws_smithy_runtime::client::orchestrator", "sdk-trace");
            tracing::debug!(target: "aws_sdk_ecr::operation", "sdk-debug");
            tracing::info!(target: "aws_config::meta", "sdk-info");
            tracing::trace!(target: "hyper_util::client", "hyper-trace");
            tracing::trace!(target: "rustls::client::hs", "rustls-trace");
            tracing::trace!(target: "aws_sigv4::http_request::sign", "sigv4-trace");
            tracing::trace!(target: "index_on_push::ecr", "own-trace");
            tracing::debug!(target: "registry::transport", "registry-debug");
            tracing::info!(target: "index_on_push::outcome", "own-info");
        });
        let bytes = buffer.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn no_directive_lets_the_sdk_or_http_stack_log_below_info() {
        for directives in [
            "trace",
            "trace,aws_smithy_runtime=trace,aws_sdk_ecr=trace,hyper=trace",
            "trace,aws_smithy_runtime::client::orchestrator=trace,aws_sdk_ecr::operation=trace,rustls=trace",
            "hyper_util::client=trace,aws=trace,h=trace,a=trace,index_on_push=trace",
            "[event]=trace",
            "[{request_id}]=trace",
            "[event{request_id=req-1}]=trace,trace",
        ] {
            let logged = logged(directives);
            for message in ["sdk-trace", "sdk-debug", "hyper-trace", "rustls-trace", "sigv4-trace"] {
                assert!(!logged.contains(message), "{directives}: {message} logged:\n{logged}");
            }
            assert!(logged.contains("sdk-info"), "{directives}: the SDK's info lines stay:\n{logged}");
            assert!(logged.contains("own-trace"), "{directives}: the function's trace lines stay:\n{logged}");
        }
    }

    #[test]
    fn the_directives_still_choose_everything_else() {
        let logged = logged("warn,index_on_push=info");
        assert!(logged.contains("own-info") && !logged.contains("own-trace"), "{logged}");
        assert!(!logged.contains("registry-debug") && !logged.contains("sdk-info"), "{logged}");
        let logged = logged_lines("registry=debug,index_on_push=info");
        assert_eq!(logged, ["registry-debug", "own-info"]);
        // Directives that do not parse read as `info`.
        let logged = logged_lines("[unclosed=trace");
        assert_eq!(logged, ["sdk-info", "own-info"]);
    }

    fn logged_lines(directives: &str) -> Vec<String> {
        logged(directives)
            .lines()
            .map(|line| {
                let line: serde_json::Value = serde_json::from_str(line).unwrap();
                line["message"].as_str().unwrap().to_owned()
            })
            .collect()
    }

    #[test]
    fn lines_are_json_with_the_events_span() {
        let logged = logged("index_on_push=info");
        let line: serde_json::Value = serde_json::from_str(logged.trim()).unwrap();
        assert_eq!(line["message"], "own-info");
        assert_eq!(line["target"], "index_on_push::outcome");
        assert_eq!(line["span"]["request_id"], "req-1");
    }
}
