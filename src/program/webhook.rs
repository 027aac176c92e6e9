//! Trigger webhooks: one JSON POST per firing, sent from a task of its own (never on the tick
//! path) with a timeout per attempt and a few retries; what became of it is an [`Event`].

use std::time::Duration;

use serde::Serialize;

use crate::telemetry::Event;

/// The wait before the first retry; it doubles with each one.
const RETRY_WAIT_FIRST: Duration = Duration::from_millis(500);
/// The longest wait between two attempts.
const RETRY_WAIT_MAX: Duration = Duration::from_secs(30);

/// What a trigger's webhook receives.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Payload {
    pub watch: String,
    pub trigger: String,
    /// The firing tick's `ts_ms`.
    pub fired_ms: u64,
    /// The pinned range (Unix ms).
    pub from_ms: u64,
    pub to_ms: u64,
    /// What the condition measured on the firing tick (the p99 bucket's lower bound, or the
    /// share).
    pub value: f64,
    /// The page on the pinned range.
    pub permalink: String,
}

/// Where and how hard to try.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub url: String,
    pub timeout: Duration,
    pub retries: u32,
}

/// Posts `payload` until a 2xx answer or the retries are spent; every failed attempt and the
/// outcome are told as events. Runs on the current arbiter as a task of its own.
pub async fn deliver(delivery: Delivery, payload: Payload) {
    let client = awc::Client::builder()
        .connector(awc::Connector::new().timeout(delivery.timeout))
        .timeout(delivery.timeout)
        .finish();
    let mut wait = RETRY_WAIT_FIRST;
    for attempt in 1..=delivery.retries.saturating_add(1) {
        let outcome = match client.post(&delivery.url).send_json(&payload).await {
            Ok(response) if response.status().is_success() => Ok(()),
            Ok(response) => Err(format!("answered {}", response.status())),
            Err(e) => Err(e.to_string()),
        };
        match outcome {
            Ok(()) => {
                return Event::TriggerWebhookDelivered {
                    watch: &payload.watch,
                    trigger: &payload.trigger,
                    attempt,
                }
                .emit()
            }
            Err(error) => {
                let last = attempt > delivery.retries;
                Event::TriggerWebhookFailed {
                    watch: &payload.watch,
                    trigger: &payload.trigger,
                    attempt,
                    error: &error,
                    last,
                }
                .emit();
                if last {
                    return;
                }
                actix::clock::sleep(wait).await;
                wait = (wait * 2).min(RETRY_WAIT_MAX);
            }
        }
    }
}
