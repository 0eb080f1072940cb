//! The retry budget of a download that resumes where its body broke (one stream or one range).

use std::time::Duration;

use crate::{Client, Error};

/// The retry budget of a download that resumes where its body broke: consecutive failures, restarted
/// by progress of at least the minimum throughput's bytes.
#[derive(Debug, Default)]
pub(crate) struct Resumes {
    failures: u32,
    received_at_last_failure: u64,
}

impl Resumes {
    /// Counts a failure after `received` bytes in all: the delay before resuming, or the error that
    /// ends the download when the budget is spent.
    pub(crate) fn after_failure(
        &mut self,
        client: &Client,
        received: u64,
        error: Error,
    ) -> Result<Duration, Error> {
        // Progress restarts the budget, but only as much as the minimum throughput asks of a
        // window: a registry that sends a few bytes per connection must not get endless attempts.
        let progress = received - self.received_at_last_failure;
        if progress > 0 && progress >= client.config().blob_min_bytes {
            self.failures = 0;
        }
        self.received_at_last_failure = received;
        self.failures += 1;
        if self.failures >= client.max_attempts(&error) {
            return Err(if self.failures > 1 {
                Error::RetriesExhausted { attempts: self.failures, last: Box::new(error) }
            } else {
                error
            });
        }
        Ok(client.retry_policy().delay(self.failures, None))
    }

    /// Failures so far since the last progress.
    pub(crate) fn failures(&self) -> u32 {
        self.failures
    }
}
