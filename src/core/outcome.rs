//! What happened to a webhook at each step, as one typed log field.
//!
//! Every log line that marks a step of a webhook's way carries
//! `outcome = Outcome::X.as_str()`; the metrics layer
//! (`adapters::metrics`) reads that field and nothing of the message, so the
//! wording of a log line can change without breaking a metric or an alarm.

/// The field that carries an [`Outcome`].
pub const OUTCOME_FIELD: &str = "outcome";

/// One step's result, as ingest and the router log it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Verified and accepted by the queue (2xx).
    Queued,
    /// Refused with a 4xx (`reason` names why).
    Rejected,
    /// Verified, but the queue or payload store did not take it (5xx).
    NotQueued,
    /// Delivered to every destination of its route, or found delivered.
    Routed,
    /// A batch's routed webhooks, named in one line.
    BatchRouted,
    /// A destination or the store failed; the record is retried.
    NotRouted,
    /// Given up after its last allowed receive, with its reason.
    DeadLettered,
    /// Routed or not, the archive did not take it; the record is retried.
    NotArchived,
}

impl Outcome {
    pub const ALL: [Outcome; 8] = [
        Self::Queued,
        Self::Rejected,
        Self::NotQueued,
        Self::Routed,
        Self::BatchRouted,
        Self::NotRouted,
        Self::DeadLettered,
        Self::NotArchived,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Rejected => "rejected",
            Self::NotQueued => "not_queued",
            Self::Routed => "routed",
            Self::BatchRouted => "batch_routed",
            Self::NotRouted => "not_routed",
            Self::DeadLettered => "dead_lettered",
            Self::NotArchived => "not_archived",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|outcome| outcome.as_str() == text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_outcome_reads_back() {
        for outcome in Outcome::ALL {
            assert_eq!(Outcome::parse(outcome.as_str()), Some(outcome));
        }
        assert_eq!(Outcome::parse("webhook queued"), None);
    }
}
