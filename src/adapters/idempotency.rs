//! The durable idempotency store: a DynamoDB table with a TTL, shared by
//! every router container, so a webhook is delivered once per destination
//! however often Svix or SQS deliver it.
//!
//! One item per (webhook, destination) key: `state` is `delivering` (a
//! lease, until `lease_until`, held by `owner`) or `delivered`; `expires_at`
//! is the table's TTL attribute. Every change is a conditional write, so two
//! containers never both acquire the same key, and only a claim's owner
//! completes or releases it.

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
        let now = now();
        let lease = Lease::new()?;
        let written = self
            .client
            .put_item()
            .table_name(&self.table)
            .item(KEY, AttributeValue::S(key.to_owned()))
            .item(STATE, AttributeValue::S(DELIVERING.into()))
            .item(LEASE_UNTIL, number(now + self.lease.as_secs()))
            .item(OWNER, AttributeValue::S(lease.owner().to_owned()))
            .item(EXPIRES_AT, number(now + self.ttl.as_secs()))
            .condition_expression(
                "attribute_not_exists(#key) OR #expires < :now OR (#state = :delivering AND #lease < :now)",
            )
            .expression_attribute_names("#key", KEY)
            .expression_attribute_names("#state", STATE)
            .expression_attribute_names("#lease", LEASE_UNTIL)
            .expression_attribute_names("#expires", EXPIRES_AT)
            .expression_attribute_values(":now", number(now))
            .expression_attribute_values(":delivering", AttributeValue::S(DELIVERING.into()))
            .send()
            .await;
        match written {
            Ok(_) => Ok(Claim::Acquired(lease)),
            Err(err) if err.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception()) => {
                let item = self
                    .client
                    .get_item()
                    .table_name(&self.table)
                    .key(KEY, AttributeValue::S(key.to_owned()))
                    .consistent_read(true)
                    .send()
                    .await
                    .map_err(|err| failed("GetItem", err))?;
                let delivered = item.item().and_then(|i| i.get(STATE)).and_then(|s| s.as_s().ok()).map(String::as_str)
                    == Some(DELIVERED);
                Ok(if delivered { Claim::AlreadyDelivered } else { Claim::InProgress })
            }
            Err(err) => Err(failed("PutItem", err)),
        }
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
}
