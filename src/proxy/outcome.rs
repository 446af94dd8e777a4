//! How a call ended, as carried from the layer that decided it to the layer that counts it.

/// Attached to every response as an extension; the access log and metrics read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// HubSpot (or the configured upstream) answered; its status is passed through.
    Forwarded,
    /// hubgate refused the call as malformed or outside its bounds.
    BadRequest,
    /// The upstream could not be reached, failed, or timed out.
    UpstreamError,
    /// Refused because it could not be sent within its deadline.
    RejectedDeadline,
    /// Refused because its owner's queue was full.
    RejectedQueueFull,
    /// Refused because its portal's daily budget was exhausted.
    RejectedDaily,
    /// Refused because its caller was over its `max_rps` cap.
    RejectedCap,
    /// Refused because the shared budget store was unreachable (`on_failure = "fail_closed"`).
    RejectedStoreUnavailable,
    /// Refused on shutdown: its answer could not have come back before hubgate stopped.
    RejectedShutdown,
    /// The caller closed its connection before an answer was ready (while queued, say);
    /// nothing more was sent upstream for it.
    CallerGone,
    /// Refused without a known caller key (`[inbound] require_caller_key`).
    Unauthorized,
}

impl Outcome {
    pub const ALL: [Outcome; 11] = [
        Outcome::Forwarded,
        Outcome::BadRequest,
        Outcome::UpstreamError,
        Outcome::RejectedDeadline,
        Outcome::RejectedQueueFull,
        Outcome::RejectedDaily,
        Outcome::RejectedCap,
        Outcome::RejectedStoreUnavailable,
        Outcome::RejectedShutdown,
        Outcome::CallerGone,
        Outcome::Unauthorized,
    ];

    /// The `outcome` label value of `hubgate_requests_total`.
    pub fn as_label(self) -> &'static str {
        match self {
            Outcome::Forwarded => "forwarded",
            Outcome::BadRequest => "bad_request",
            Outcome::UpstreamError => "upstream_error",
            Outcome::RejectedDeadline => "rejected_deadline",
            Outcome::RejectedQueueFull => "rejected_queue_full",
            Outcome::RejectedDaily => "rejected_daily",
            Outcome::RejectedCap => "rejected_cap",
            Outcome::RejectedStoreUnavailable => "rejected_store_unavailable",
            Outcome::RejectedShutdown => "rejected_shutdown",
            Outcome::CallerGone => "caller_gone",
            Outcome::Unauthorized => "unauthorized",
        }
    }
}
