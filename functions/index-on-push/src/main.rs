//! `index-on-push`: the Lambda function's entry point. It only wires: settings from the environment,
//! the AWS SDK, the registry client, the EventBridge client, the zTOC cache and the reconcile's clients
//! (once, at cold start),
//! then the runtime loop.

use std::process::ExitCode;

use index_on_push::{logging, wiring, Config};
use index_on_push::{Invocation, Services};
use index_on_push::{Lifecycle, WorkQueue};
use lambda_runtime::{service_fn, LambdaEvent};

/// What the Lambda runtime client insists on (it panics without them).
const RUNTIME_VARIABLES: [&str; 4] = [
    "AWS_LAMBDA_RUNTIME_API",
    "AWS_LAMBDA_FUNCTION_NAME",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
    "AWS_LAMBDA_FUNCTION_VERSION",
];

fn main() -> ExitCode {
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("index-on-push: bad setting: {e}");
            return ExitCode::FAILURE;
        }
    };
    logging::init(&config.log_filter);
    if let Some(missing) = RUNTIME_VARIABLES.iter().find(|name| std::env::var_os(name).is_none()) {
        eprintln!(
            "index-on-push: {missing} is not set: this binary runs inside AWS Lambda (or `cargo lambda watch`, \
             or `sam local`), which sets it"
        );
        return ExitCode::FAILURE;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("index-on-push: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "index-on-push stopped");
            eprintln!("index-on-push: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: Config) -> Result<(), lambda_runtime::Error> {
    let sdk = wiring::aws_config_from_env().await;
    let (http, _credentials) = wiring::registries(&config, &sdk)?;
    let registries = wiring::ecr_registries(&config, &sdk, http);
    let completion = wiring::completion_events(&sdk);
    let services = Services {
        registries: &registries,
        completion: &completion,
        ztoc_cache: wiring::ztoc_cache(&config, &sdk),
    };
    let (repositories, queue) = wiring::reconcile(&config, &sdk);
    let lifecycle =
        Lifecycle { repositories: &repositories, queue: queue.as_ref().map(|q| q as &dyn WorkQueue) };
    tracing::debug!(
        index_version = ?config.index_version,
        registry_override = config.registry_override.as_ref().map(|r| r.host.as_str()),
        completion_event_bus = config.completion_event_bus.as_deref(),
        ztoc_cache_table = config.ztoc_cache_table.as_deref(),
        reconcile_queue_url = config.reconcile_queue_url.as_deref(),
        "ready"
    );
    let config = &config;
    let services = &services;
    let lifecycle = &lifecycle;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<serde_json::Value>| async move {
        let invocation = Invocation::from_context(&event.context);
        // Boxed: the future is deep enough to overflow the compiler's layout query limit otherwise.
        Box::pin(index_on_push::dispatch(&event.payload, &invocation, config, services, lifecycle)).await
    }))
    .await
}
