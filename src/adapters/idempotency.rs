//! The durable idempotency store: a DynamoDB table with a TTL, shared by
//! every router container, so a webhook is delivered once per destination
//! however often Svix or SQS deliver it.
//!
//! One item per (webhook, destination) key: `state` is `delivering` (a
//! lease, until `lease_until`, held by `owner`) or `delivered`; `expires_at`
//! is the table's TTL attribute. Every claim is a conditional write, so two
//! containers never both acquire the same key, and only a claim's owner
//! completes or releases it.
//!
//! A wave of the router claims all its keys under one owner and remembers
//! what it delivered in one more item, `done/<owner>`, listing a digest of
//! each delivered key ([`SeenStore::complete_all`]): one write for up to
//! ten webhooks instead of one each, each write request unit being $0.625
//! per million. A claimed key is delivered if its owner's `done` item lists
//! it; if not, it is being delivered while its lease lasts, and after that
//! its delivery never finished (the router crashed or timed out), so the key
//! is claimed again and the webhook delivered rather than lost. That check
//! costs two reads, and only a copy of a webhook already claimed pays it.

use crate::adapters::local::durable_queue::DurableStore;
use crate::core::dedup::{Claim, InMemorySeen, Lease, SeenStore, StoreError};
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::AttributeValue;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const KEY: &str = "key";
const STATE: &str = "state";
const LEASE_UNTIL: &str = "lease_until";
const OWNER: &str = "owner";
const EXPIRES_AT: &str = "expires_at";
const DELIVERING: &str = "delivering";
const DELIVERED: &str = "delivered";
/// The item listing what one owner's wave delivered: `done/<owner>`.
const DONE: &str = "done/";
/// Its string set of key digests ([`digest`]).
const KEYS: &str = "keys";

/// A DynamoDB table with partition key `key` (string) and TTL on `expires_at`.
#[derive(Debug, Clone)]
pub struct DynamoSeen {
    client: Client,
    table: String,
    ttl: Duration,
    lease: Duration,
}

impl DynamoSeen {
    pub fn new(client: Client, table: impl Into<String>, ttl: Duration, lease: Duration) -> Self {
        Self { client, table: table.into(), ttl, lease }
    }
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}

fn number(value: u64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

fn failed(operation: &str, err: impl std::error::Error + 'static) -> StoreError {
    StoreError::Unavailable(format!("{operation}: {}", crate::adapters::aws::ErrorChain(&err)))
}

impl SeenStore for DynamoSeen {
    fn remembers(&self) -> Duration {
        self.ttl
    }

    async fn claim(&self, key: &str) -> Result<Claim, StoreError> {
        self.claim_as(key, &Lease::new()?).await
    }

    async fn claim_as(&self, key: &str, owner: &Lease) -> Result<Claim, StoreError> {
        let now = now();
        if self.put_claim(key, owner, now, None).await? {
            return Ok(Claim::Acquired(owner.clone()));
        }
        let Some(item) = self.get(key).await? else { return Ok(Claim::InProgress) };
        let text = |name: &str| item.get(name).and_then(|v| v.as_s().ok()).cloned().unwrap_or_default();
        if text(STATE) == DELIVERED {
            return Ok(Claim::AlreadyDelivered);
        }
        let previous = text(OWNER);
        let done = self.get(&format!("{DONE}{previous}")).await?;
        let listed = done.as_ref().and_then(|d| d.get(KEYS)).and_then(|keys| keys.as_ss().ok());
        if listed.is_some_and(|keys| keys.contains(&digest(key))) {
            return Ok(Claim::AlreadyDelivered);
        }
        let lease_until: u64 =
            item.get(LEASE_UNTIL).and_then(|v| v.as_n().ok()).and_then(|n| n.parse().ok()).unwrap_or(0);
        if lease_until >= now {
            return Ok(Claim::InProgress);
        }
        // Its delivery never finished: claimed again, if nobody else did first.
        Ok(if self.put_claim(key, owner, now, Some((&previous, lease_until))).await? {
            Claim::Acquired(owner.clone())
        } else {
            Claim::InProgress
        })
    }

    async fn complete(&self, key: &str, lease: &Lease) -> Result<(), StoreError> {
        let written = self
            .client
            .put_item()
            .table_name(&self.table)
            .item(KEY, AttributeValue::S(key.to_owned()))
            .item(STATE, AttributeValue::S(DELIVERED.into()))
            .item(EXPIRES_AT, number(now() + self.ttl.as_secs()))
            .condition_expression("attribute_not_exists(#key) OR (#state = :delivering AND #owner = :owner)")
            .expression_attribute_names("#key", KEY)
            .expression_attribute_names("#state", STATE)
            .expression_attribute_names("#owner", OWNER)
            .expression_attribute_values(":delivering", AttributeValue::S(DELIVERING.into()))
            .expression_attribute_values(":owner", AttributeValue::S(lease.owner().to_owned()))
            .send()
            .await;
        match written {
            Ok(_) => Ok(()),
            Err(err) if err.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception()) => {
                Err(StoreError::LeaseLost(key.to_owned()))
            }
            Err(err) => Err(failed("PutItem", err)),
        }
    }

    async fn release(&self, key: &str, lease: &Lease) -> Result<(), StoreError> {
        let deleted = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key(KEY, AttributeValue::S(key.to_owned()))
            .condition_expression("#state = :delivering AND #owner = :owner")
            .expression_attribute_names("#state", STATE)
            .expression_attribute_names("#owner", OWNER)
            .expression_attribute_values(":delivering", AttributeValue::S(DELIVERING.into()))
            .expression_attribute_values(":owner", AttributeValue::S(lease.owner().to_owned()))
            .send()
            .await;
        match deleted {
            Err(err) if !err.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception()) => {
                Err(failed("DeleteItem", err))
            }
            _ => Ok(()),
        }
    }

    /// One item for all of an owner's delivered keys, `done/<owner>`.
    /// Every key of an owner comes in one call (the router's wave), so
    /// writing the item whole, again on a retry, loses none.
    async fn complete_all<'a>(&'a self, done: &'a [(String, Lease)]) -> Vec<Result<(), StoreError>> {
        let mut owners: Vec<(&str, Vec<String>)> = Vec::new();
        for (key, lease) in done {
            match owners.iter_mut().find(|(owner, _)| *owner == lease.owner()) {
                Some((_, keys)) => keys.push(digest(key)),
                None => owners.push((lease.owner(), vec![digest(key)])),
            }
        }
        let writes = owners.iter().map(|(owner, keys)| async move {
            let written = self
                .client
                .put_item()
                .table_name(&self.table)
                .item(KEY, AttributeValue::S(format!("{DONE}{owner}")))
                .item(KEYS, AttributeValue::Ss(keys.clone()))
                .item(EXPIRES_AT, number(now() + self.ttl.as_secs()))
                .send()
                .await;
            (*owner, written.map(drop).map_err(|err| failed("PutItem", err).to_string()))
        });
        let written = futures_util::future::join_all(writes).await;
        done.iter()
            .map(|(_, lease)| match written.iter().find(|(owner, _)| *owner == lease.owner()) {
                Some((_, Err(err))) => Err(StoreError::Unavailable(err.clone())),
                _ => Ok(()),
            })
            .collect()
    }
}

impl DynamoSeen {
    /// Writes a claim of `key` for `owner`: if nobody holds the key, or its
    /// entry expired; with `previous` (an owner and its lease's end), only
    /// if that claim still stands unchanged. False if the condition failed.
    async fn put_claim(
        &self,
        key: &str,
        owner: &Lease,
        now: u64,
        previous: Option<(&str, u64)>,
    ) -> Result<bool, StoreError> {
        let mut put = self
            .client
            .put_item()
            .table_name(&self.table)
            .item(KEY, AttributeValue::S(key.to_owned()))
            .item(STATE, AttributeValue::S(DELIVERING.into()))
            .item(LEASE_UNTIL, number(now + self.lease.as_secs()))
            .item(OWNER, AttributeValue::S(owner.owner().to_owned()))
            .item(EXPIRES_AT, number(now + self.ttl.as_secs()))
            .expression_attribute_names("#expires", EXPIRES_AT)
            .expression_attribute_values(":now", number(now));
        put = match previous {
            None => put
                .condition_expression("attribute_not_exists(#key) OR #expires < :now")
                .expression_attribute_names("#key", KEY),
            Some((previous, lease_until)) => put
                .condition_expression(
                    "#expires >= :now AND #state = :delivering AND #owner = :previous AND #lease = :lease",
                )
                .expression_attribute_names("#state", STATE)
                .expression_attribute_names("#owner", OWNER)
                .expression_attribute_names("#lease", LEASE_UNTIL)
                .expression_attribute_values(":delivering", AttributeValue::S(DELIVERING.into()))
                .expression_attribute_values(":previous", AttributeValue::S(previous.to_owned()))
                .expression_attribute_values(":lease", number(lease_until)),
        };
        match put.send().await {
            Ok(_) => Ok(true),
            Err(err) if err.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception()) => Ok(false),
            Err(err) => Err(failed("PutItem", err)),
        }
    }

    /// An item, read consistently.
    async fn get(&self, key: &str) -> Result<Option<std::collections::HashMap<String, AttributeValue>>, StoreError> {
        let item = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(KEY, AttributeValue::S(key.to_owned()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|err| failed("GetItem", err))?;
        Ok(item.item)
    }
}

/// A key as a `done` item lists it: 64 bits of its SHA-256, in hex, so ten
/// webhooks' keys fit one write request unit (1 KB). Only the keys of one
/// wave share an item, so a collision is out of reach.
fn digest(key: &str) -> String {
    use sha2::{Digest as _, Sha256};
    Sha256::digest(key.as_bytes())[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// The store a router uses: DynamoDB when a table is configured, else memory;
/// for a replay run on a workstation, local mode's store.
pub enum IdempotencyStore {
    Dynamo(DynamoSeen),
    Memory(InMemorySeen),
    Durable(DurableStore),
}

impl SeenStore for IdempotencyStore {
    fn remembers(&self) -> Duration {
        match self {
            Self::Dynamo(store) => store.remembers(),
            Self::Memory(store) => store.remembers(),
            Self::Durable(store) => store.remembers(),
        }
    }

    async fn claim(&self, key: &str) -> Result<Claim, StoreError> {
        match self {
            Self::Dynamo(store) => store.claim(key).await,
            Self::Memory(store) => store.claim(key).await,
            Self::Durable(store) => store.claim(key).await,
        }
    }

    async fn complete(&self, key: &str, lease: &Lease) -> Result<(), StoreError> {
        match self {
            Self::Dynamo(store) => store.complete(key, lease).await,
            Self::Memory(store) => store.complete(key, lease).await,
            Self::Durable(store) => store.complete(key, lease).await,
        }
    }

    async fn release(&self, key: &str, lease: &Lease) -> Result<(), StoreError> {
        match self {
            Self::Dynamo(store) => store.release(key, lease).await,
            Self::Memory(store) => store.release(key, lease).await,
            Self::Durable(store) => store.release(key, lease).await,
        }
    }

    async fn claim_as(&self, key: &str, owner: &Lease) -> Result<Claim, StoreError> {
        match self {
            Self::Dynamo(store) => store.claim_as(key, owner).await,
            Self::Memory(store) => store.claim_as(key, owner).await,
            Self::Durable(store) => store.claim_as(key, owner).await,
        }
    }

    async fn complete_all<'a>(&'a self, done: &'a [(String, Lease)]) -> Vec<Result<(), StoreError>> {
        match self {
            Self::Dynamo(store) => store.complete_all(done).await,
            Self::Memory(store) => store.complete_all(done).await,
            Self::Durable(store) => store.complete_all(done).await,
        }
    }
}
