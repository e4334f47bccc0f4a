//! Replaying archived webhooks: which ones a replay takes, under which
//! identity, and how far a run got.
//!
//! A replay re-delivers through the same router code as live traffic, with
//! its deliveries keyed by a replay id ([`crate::core::router::Router::with_key_scope`]):
//! not swallowed as duplicates of the original deliveries, but one replay
//! run twice (or resumed) delivers each webhook once.

use crate::core::archive::ArchiveRecord;
use crate::core::routing::{RouteError, RouteTable};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Which archived webhooks a replay takes, beyond its time window: an
/// event-type pattern and payload filters, in the route table's syntax
/// (`document.*`, `[site.id=42]`), so they mean what they mean in `ROUTES`.
#[derive(Debug, Clone)]
pub struct Selection {
    matcher: RouteTable,
    filters: bool,
}

impl Selection {
    /// Every webhook of types matching `pattern` (default `*`) whose payload
    /// passes `filters` (`[field=value]...`).
    pub fn new(pattern: Option<&str>, filters: Option<&str>) -> Result<Self, RouteError> {
        let pattern = pattern.unwrap_or("*");
        let filters = filters.unwrap_or("").trim();
        let matcher = RouteTable::parse(&format!("{pattern}{filters}=drop"))?;
        Ok(Self { matcher, filters: !filters.is_empty() })
    }

    /// Whether [`Self::takes`] reads the payload: a claim-checked body must
    /// be fetched first.
    pub fn needs_body(&self) -> bool {
        self.filters
    }

    /// Whether the replay takes a webhook of this type with this body.
    pub fn takes(&self, event_type: &str, body: &[u8]) -> bool {
        self.matcher.route(event_type, body).is_some()
    }
}

/// How far a replay got: every webhook up to and including `through`, in
/// the archive's order (received, source, id), was delivered. Kept between
/// runs so an interrupted replay resumes after it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Checkpoint {
    pub through: Option<Position>,
    pub delivered: u64,
}

/// A webhook's place in the archive's order.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Position {
    pub received: DateTime<Utc>,
    pub source: String,
    pub id: String,
}

impl Position {
    pub fn of(record: &ArchiveRecord) -> Self {
        Self { received: record.received, source: record.source.clone(), id: record.id.clone() }
    }
}

impl Checkpoint {
    /// Whether a webhook was delivered by an earlier run of this replay.
    pub fn covers(&self, record: &ArchiveRecord) -> bool {
        self.through.as_ref().is_some_and(|through| Position::of(record) <= *through)
    }
}

/// A fresh replay id: `rp_` and 64 random bits in hex.
pub fn new_replay_id() -> Result<String, String> {
    use aws_lc_rs::rand::{SecureRandom as _, SystemRandom};
    let mut bytes = [0u8; 8];
    SystemRandom::new().fill(&mut bytes).map_err(|_| "no random numbers for a replay id".to_owned())?;
    Ok(format!("rp_{}", bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()))
}

/// Whether a replay id can name a checkpoint file and an idempotency scope.
pub fn valid_replay_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::archive::ArchivedBody;
    use chrono::TimeZone as _;

    #[test]
    fn selection_by_type_pattern_and_payload_filter() {
        let all = Selection::new(None, None).unwrap();
        assert!(all.takes("document.created.v2", b"{}") && !all.needs_body());
        let documents = Selection::new(Some("document.*"), Some("[site.id=42]")).unwrap();
        assert!(documents.needs_body());
        assert!(documents.takes("document.created.v2", br#"{"site":{"id":42}}"#));
        assert!(!documents.takes("document.created.v2", br#"{"site":{"id":41}}"#));
        assert!(!documents.takes("connection.created.v2", br#"{"site":{"id":42}}"#));
        assert!(Selection::new(Some("document.*"), Some("[site.id")).is_err());
    }

    #[test]
    fn a_checkpoint_covers_what_came_before_it_in_archive_order() {
        let at = |second| Utc.with_ymd_and_hms(2026, 12, 5, 9, 0, second).unwrap();
        let record = |id: &str, second| ArchiveRecord {
            id: id.into(),
            source: "nectar".into(),
            timestamp: 0,
            event_type: "t".into(),
            received: at(second),
            resource_id: None,
            body: ArchivedBody::inline(b"{}"),
        };
        let checkpoint = Checkpoint { through: Some(Position::of(&record("b", 1))), delivered: 2 };
        assert!(checkpoint.covers(&record("a", 0)) && checkpoint.covers(&record("a", 1)));
        assert!(checkpoint.covers(&record("b", 1)));
        assert!(!checkpoint.covers(&record("c", 1)) && !checkpoint.covers(&record("a", 2)));
        assert!(!Checkpoint::default().covers(&record("a", 0)));
    }

    #[test]
    fn replay_ids_are_fresh_and_safe_in_file_names() {
        let (a, b) = (new_replay_id().unwrap(), new_replay_id().unwrap());
        assert_ne!(a, b);
        assert!(valid_replay_id(&a) && a.starts_with("rp_") && a.len() == 19);
        assert!(!valid_replay_id("../x") && !valid_replay_id("") && !valid_replay_id("a b"));
    }
}
