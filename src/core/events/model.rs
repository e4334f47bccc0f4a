//! Nectar's twelve event types as Rust types to match on.
//!
//! Parsing is tolerant because real payloads drift: every field is optional,
//! lists may be absent or `null`, `company` may be an object or an id string
//! (v2 documents send the id), decimals keep their exact text, dates parse
//! with or without fractional seconds, and top-level fields this model does
//! not know are kept in `extra`.
//!
//! The types also derive `JsonSchema`, from the same serde attributes: the
//! paths schema-drift reports hold payloads to ([`crate::core::drift`]).

use super::introspect::field_names;
use super::values::{Date, Decimal, Timestamp};
use schemars::JsonSchema;
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};
use thiserror::Error;

/// The payload shape: v1 (`connection.created`) or v2 (`connection.created.v2`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

/// A Nectar webhook, typed.
#[derive(Debug, Clone, PartialEq)]
pub enum NectarEvent {
    ConnectionCreated { version: Version, connection: Connection },
    ConnectionUpdated { version: Version, connection: Connection },
    ConnectionValidated { version: Version, connection: Connection },
    DocumentCreated { version: Version, document: Document },
    DocumentUpdated { version: Version, document: Document },
    DocumentDeleted { version: Version, document: Document },
}

/// Why a payload could not be typed. Its text goes into log lines and
/// dead-letter reasons, so it names where and what was expected, never a
/// value from the payload.
#[derive(Debug, Error)]
pub enum ParseError {
    #[error("{0:?} is not a Nectar event type")]
    UnknownType(String),
    #[error("payload is not a JSON object: {0}")]
    NotAnObject(ShapeError),
    #[error("payload does not fit the model: {0}")]
    Shape(ShapeError),
}

/// Where a payload did not fit and how, without its values: serde's own
/// messages quote the offending value (`invalid type: string "…"`), which
/// would carry customer data into logs and the dead-letter queue.
#[derive(Debug, Error)]
#[error("at `{path}`: {problem}")]
pub struct ShapeError {
    /// The field's path, as `lineItems[0].quantity` (`.` for the whole payload).
    pub path: String,
    /// What was expected and what kind of value was found.
    pub problem: String,
}

impl ShapeError {
    fn new(path: String, err: &serde_json::Error) -> Self {
        Self { path, problem: problem_without_values(err) }
    }
}

/// serde_json's message less the values it quotes: the kind of value found
/// (`string`, `integer`, …) and what the model expected, which the model's
/// code wrote.
fn problem_without_values(err: &serde_json::Error) -> String {
    use serde_json::error::Category;
    if matches!(err.classify(), Category::Syntax | Category::Eof | Category::Io) {
        return format!("not valid JSON (line {}, column {})", err.line(), err.column());
    }
    let message = err.to_string();
    let message = message.rsplit_once(" at line ").map_or(message.as_str(), |(text, _)| text);
    let expected = message.split_once(", expected ").map(|(_, expected)| expected);
    let kind = |rest: &str| rest.split([' ', ',']).next().unwrap_or("value").to_owned();
    match expected {
        Some(expected) if let Some(rest) = message.strip_prefix("invalid type: ") => {
            format!("expected {expected}, found {}", kind(rest))
        }
        Some(expected) if let Some(rest) = message.strip_prefix("invalid value: ") => {
            format!("invalid {}, expected {expected}", kind(rest))
        }
        Some(expected) if message.starts_with("invalid length ") => format!("wrong length, expected {expected}"),
        Some(expected) if message.starts_with("unknown variant ") => format!("unknown variant, expected {expected}"),
        _ if message.starts_with("missing field `") => message.to_owned(),
        _ => "does not fit the model".to_owned(),
    }
}

impl NectarEvent {
    /// Types a payload whose event type is already known (see [`super::probe`]).
    pub fn parse(event_type: &str, body: &[u8]) -> Result<Self, ParseError> {
        let (name, version) = match event_type.strip_suffix(".v2") {
            Some(name) => (name, Version::V2),
            None => (event_type, Version::V1),
        };
        let unknown = || ParseError::UnknownType(event_type.to_owned());
        let (resource, action) = name.split_once('.').ok_or_else(unknown)?;
        Ok(match (resource, action) {
            ("connection", "created") => Self::ConnectionCreated { version, connection: parse_object(body)? },
            ("connection", "updated") => Self::ConnectionUpdated { version, connection: parse_object(body)? },
            ("connection", "validated") => Self::ConnectionValidated { version, connection: parse_object(body)? },
            ("document", "created") => Self::DocumentCreated { version, document: parse_object(body)? },
            ("document", "updated") => Self::DocumentUpdated { version, document: parse_object(body)? },
            ("document", "deleted") => Self::DocumentDeleted { version, document: parse_object(body)? },
            _ => return Err(unknown()),
        })
    }

    pub fn version(&self) -> Version {
        match self {
            Self::ConnectionCreated { version, .. }
            | Self::ConnectionUpdated { version, .. }
            | Self::ConnectionValidated { version, .. }
            | Self::DocumentCreated { version, .. }
            | Self::DocumentUpdated { version, .. }
            | Self::DocumentDeleted { version, .. } => *version,
        }
    }
}

/// Objects that keep the top-level fields their model does not name.
trait WithExtra {
    fn extra_mut(&mut self) -> &mut Map<String, Value>;
}

fn parse_object<T: for<'de> Deserialize<'de> + WithExtra>(body: &[u8]) -> Result<T, ParseError> {
    let all: Map<String, Value> =
        serde_json::from_slice(body).map_err(|err| ParseError::NotAnObject(ShapeError::new(".".into(), &err)))?;
    let mut typed: T = serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_slice(body))
        .map_err(|err| ParseError::Shape(ShapeError::new(err.path().to_string(), err.inner())))?;
    let known = field_names::<T>();
    *typed.extra_mut() = all.into_iter().filter(|(key, _)| !known.contains(&key.as_str())).collect();
    Ok(typed)
}

/// A list that may also be absent or `null`.
fn list<'de, D: Deserializer<'de>, T: Deserialize<'de>>(deserializer: D) -> Result<Vec<T>, D::Error> {
    Ok(Option::<Vec<T>>::deserialize(deserializer)?.unwrap_or_default())
}

/// Strings that may have been sent as numbers (account ids).
fn id_list<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    let values: Vec<Value> = list(deserializer)?;
    Ok(values.into_iter().map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned)).collect())
}

/// What [`id_list`] is for, as the schema says it: ids as strings or numbers.
/// (The parser keeps any value's text, as it does for [`Decimal`].)
fn id_list_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({"type": "array", "items": {"type": ["string", "number"]}})
}

/// The company a connection or document belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum CompanyRef {
    Object(Company),
    Id(String),
}

impl CompanyRef {
    /// The company's id, whichever form was sent.
    pub fn id(&self) -> Option<&str> {
        match self {
            Self::Object(company) => company.id.as_deref(),
            Self::Id(id) => Some(id),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Company {
    pub id: Option<String>,
    pub external_id: Option<String>,
    pub public_id: Option<String>,
    pub name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
pub struct Site {
    pub id: Option<String>,
    pub name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
pub struct Datasource {
    pub name: Option<String>,
    pub url: Option<String>,
}

/// A utility account of a connection (v1 and v2 fields).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Account {
    pub id: Option<String>,
    pub account_number: Option<String>,
    #[serde(default, deserialize_with = "list")]
    pub datasource_types: Vec<String>,
    pub is_tracked: Option<bool>,
    pub start_date: Option<Date>,
    pub end_date: Option<Date>,
    pub data_collection_start_date: Option<Date>,
    pub is_collecting_invoice_data: Option<bool>,
    pub is_collecting_smart_meter_data: Option<bool>,
    pub is_duplicated: Option<bool>,
    #[serde(default, deserialize_with = "list")]
    pub meters: Vec<String>,
    pub site: Option<Site>,
}

/// Accounts tracked at a site.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SiteRelation {
    #[serde(default, deserialize_with = "id_list")]
    #[schemars(schema_with = "id_list_schema")]
    pub account_ids: Vec<String>,
    #[serde(default, deserialize_with = "list")]
    pub datasource_types: Vec<String>,
    pub site: Option<Site>,
}

/// A connection to a utility provider: `connection.*` events.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Connection {
    pub id: Option<String>,
    pub event_type: Option<String>,
    pub company: Option<CompanyRef>,
    pub status: Option<String>,
    pub url: Option<String>,
    pub country: Option<String>,
    pub datasource: Option<Datasource>,
    #[serde(default, deserialize_with = "list")]
    pub accounts: Vec<Account>,
    #[serde(default, deserialize_with = "list")]
    pub sites_relations: Vec<SiteRelation>,
    #[serde(default, deserialize_with = "list")]
    pub emails: Vec<String>,
    pub created: Option<Timestamp>,
    pub updated: Option<Timestamp>,
    /// Sensitive fields that changed (update and validate events).
    #[serde(default, deserialize_with = "list")]
    pub protected_changes: Vec<String>,
    /// Previous values of what changed (update events).
    pub old: Option<Map<String, Value>>,
    /// Top-level fields this model does not name, as received.
    #[serde(skip)]
    pub extra: Map<String, Value>,
}

impl WithExtra for Connection {
    fn extra_mut(&mut self) -> &mut Map<String, Value> {
        &mut self.extra
    }
}

/// One charge line of a bill.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LineItem {
    pub description: Option<String>,
    pub charge_type: Option<String>,
    pub billing_period: Option<String>,
    #[serde(default, deserialize_with = "id_list")]
    #[schemars(schema_with = "id_list_schema")]
    pub account_ids: Vec<String>,
    #[serde(default, deserialize_with = "id_list")]
    #[schemars(schema_with = "id_list_schema")]
    pub meter_ids: Vec<String>,
    pub quantity: Option<Decimal>,
    pub quantity_units: Option<String>,
    pub rate: Option<Decimal>,
    pub total_charge: Option<Decimal>,
    #[serde(default, deserialize_with = "list")]
    pub multipliers: Vec<Decimal>,
    pub electricity_is_demand: Option<bool>,
    pub electricity_time_of_use: Option<String>,
    /// v1 only, as are the rest of this struct's fields below.
    pub electricity_charge_type: Option<String>,
    pub gas_charge_type: Option<String>,
}

/// A name and value identifying a meter (v1 `meterSiteUsageData[].identifiers`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Identifier {
    pub name: Option<String>,
    pub value: Option<String>,
}

/// One meter's usage on a bill (`usageData` in v2, `meterSiteUsageData` in v1).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Usage {
    pub id: Option<String>,
    pub meter: Option<String>,
    pub meter_id: Option<String>,
    pub site_id: Option<String>,
    pub datasource_type: Option<String>,
    pub start_date: Option<Date>,
    pub end_date: Option<Date>,
    pub usage: Option<Decimal>,
    pub usage_units: Option<String>,
    pub billed_demand: Option<Decimal>,
    pub current_reading: Option<Decimal>,
    pub previous_reading: Option<Decimal>,
    pub is_estimated: Option<bool>,
    pub tariff: Option<String>,
    pub supplier_name: Option<String>,
    /// The fields below are v1's (`meterSiteUsageData`), as Nectar's catalog
    /// documents them.
    pub account_id: Option<String>,
    pub account_is_tracked: Option<bool>,
    /// Customer-defined fields, any shape.
    pub additional_fields: Option<Map<String, Value>>,
    pub audit_trail_url: Option<String>,
    pub created: Option<Timestamp>,
    pub updated: Option<Timestamp>,
    pub processed_date: Option<Timestamp>,
    pub custom_container_name: Option<String>,
    pub custom_container_size: Option<Decimal>,
    pub custom_container_units: Option<String>,
    pub custom_container_usage: Option<Decimal>,
    pub days_in_range: Option<Decimal>,
    pub document_date: Option<Date>,
    pub document_id: Option<String>,
    pub document_notes: Option<String>,
    pub document_source_type: Option<String>,
    pub exclusion: Option<bool>,
    pub icp: Option<String>,
    #[serde(default, deserialize_with = "list")]
    pub identifiers: Vec<Identifier>,
    pub is_flagged: Option<bool>,
    pub is_implied: Option<bool>,
    pub pod_id: Option<String>,
    pub shop_number: Option<String>,
    pub site_address: Option<String>,
    pub site_external_id: Option<String>,
    pub site_name: Option<String>,
    pub submeter_id: Option<String>,
    pub total_document_charges: Option<Decimal>,
    pub total_document_charges_units: Option<String>,
    pub utility_company: Option<String>,
}

/// A utility bill: `document.*` events.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Document {
    pub id: Option<String>,
    pub event_type: Option<String>,
    pub company: Option<CompanyRef>,
    pub site: Option<Site>,
    pub invoice_id: Option<String>,
    pub is_flagged: Option<bool>,
    pub url: Option<String>,
    pub audit_trail_url: Option<String>,
    pub notes: Option<String>,
    pub source_type: Option<String>,
    pub utility_company: Option<String>,
    pub file_name: Option<String>,
    pub revised_document_id: Option<String>,
    #[serde(default, deserialize_with = "list")]
    pub superseded_document_ids: Vec<String>,
    pub document_date: Option<Date>,
    pub bill_date: Option<Date>,
    pub due_date: Option<Date>,
    pub created: Option<Timestamp>,
    pub updated: Option<Timestamp>,
    pub processed_date: Option<Timestamp>,
    pub charges_units: Option<String>,
    pub total_charges: Option<Decimal>,
    pub current_charges: Option<Decimal>,
    pub tax_charges: Option<Decimal>,
    pub credits: Option<Decimal>,
    pub interest_charges: Option<Decimal>,
    pub current_open_balance: Option<Decimal>,
    pub previous_close_balance: Option<Decimal>,
    /// v1 only: charges broken down by commodity, and after previous balances.
    pub electricity_delivery_charges: Option<Decimal>,
    pub electricity_demand_charges: Option<Decimal>,
    pub electricity_supply_charges: Option<Decimal>,
    pub gas_delivery_charges: Option<Decimal>,
    pub gas_supply_charges: Option<Decimal>,
    pub after_previous_charges: Option<Decimal>,
    pub after_previous_credits: Option<Decimal>,
    pub after_previous_total_payment: Option<Decimal>,
    #[serde(default, deserialize_with = "list")]
    pub line_items: Vec<LineItem>,
    #[serde(default, deserialize_with = "list")]
    pub usage_data: Vec<Usage>,
    #[serde(default, deserialize_with = "list")]
    pub meter_site_usage_data: Vec<Usage>,
    /// Previous values of what changed (update events).
    pub old: Option<Map<String, Value>>,
    #[serde(default, deserialize_with = "list")]
    pub protected_changes: Vec<String>,
    /// Top-level fields this model does not name, as received.
    #[serde(skip)]
    pub extra: Map<String, Value>,
}

impl WithExtra for Document {
    fn extra_mut(&mut self) -> &mut Map<String, Value> {
        &mut self.extra
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_payload_that_does_not_fit_is_described_without_its_values() {
        let wrong_type = br#"{"id":"d1","lineItems":"MARKER-7f3a","site":{"id":["MARKER-7f3a"]}}"#;
        let err = NectarEvent::parse("document.created.v2", wrong_type).unwrap_err().to_string();
        assert_eq!(err, "payload does not fit the model: at `lineItems`: expected a sequence, found string");
        let not_an_object = NectarEvent::parse("document.created.v2", br#"["MARKER-7f3a"]"#).unwrap_err().to_string();
        assert_eq!(not_an_object, "payload is not a JSON object: at `.`: expected a map, found sequence");
        let broken = NectarEvent::parse("document.created.v2", br#"{"id": "MARKER-7f3a"#).unwrap_err().to_string();
        assert!(!broken.contains("MARKER"), "{broken}");
    }
    use super::*;

    #[test]
    fn a_v2_document_with_a_company_id_and_exact_amounts() {
        let body = br#"{"eventType":"document.created.v2","id":"d1","company":"c1","isFlagged":true,
            "totalCharges": 1234.5600000001, "billDate":"2025-05-30","newField":{"x":1},
            "lineItems":[{"totalCharge":"12.30","multipliers":[1.5]}]}"#;
        let NectarEvent::DocumentCreated { version, document } =
            NectarEvent::parse("document.created.v2", body).unwrap()
        else {
            panic!("not a document.created")
        };
        assert_eq!(version, Version::V2);
        assert_eq!(document.company.unwrap().id(), Some("c1"));
        assert_eq!(document.total_charges.unwrap().value().unwrap().to_string(), "1234.5600000001");
        assert_eq!(document.line_items[0].total_charge.as_ref().unwrap().as_str(), "12.30");
        assert_eq!(document.extra["newField"], serde_json::json!({"x": 1}));
        assert!(!document.extra.contains_key("totalCharges"));
    }

    #[test]
    fn updates_expose_old_values_and_protected_changes() {
        let body = br#"{"protectedChanges":["status"],"old":{"status":"PENDING"},"status":"CONNECTED",
            "company":{"id":"c1","name":"Demo"},"sitesRelations":[{"accountIds":["1", 2]}],"accounts":null}"#;
        let NectarEvent::ConnectionUpdated { connection, .. } =
            NectarEvent::parse("connection.updated.v2", body).unwrap()
        else {
            panic!("not a connection.updated")
        };
        assert_eq!(connection.protected_changes, ["status"]);
        assert_eq!(connection.old.unwrap()["status"], "PENDING");
        assert_eq!(connection.sites_relations[0].account_ids, ["1", "2"]);
        assert!(connection.accounts.is_empty());
    }

    /// Drift reports read the model through its JSON Schema: each struct's
    /// schema names exactly the fields serde reads.
    #[test]
    fn each_struct_s_schema_names_the_fields_serde_reads() {
        fn same_fields<T: for<'de> Deserialize<'de> + JsonSchema>() {
            let schema = schemars::schema_for!(T);
            let properties = schema.as_value()["properties"].as_object().unwrap();
            let mut in_schema: Vec<&str> = properties.keys().map(String::as_str).collect();
            let mut read = field_names::<T>().to_vec();
            in_schema.sort_unstable();
            read.sort_unstable();
            assert_eq!(in_schema, read, "{}", std::any::type_name::<T>());
        }
        same_fields::<Connection>();
        same_fields::<Account>();
        same_fields::<SiteRelation>();
        same_fields::<Company>();
        same_fields::<Site>();
        same_fields::<Datasource>();
        same_fields::<Document>();
        same_fields::<LineItem>();
        same_fields::<Usage>();
    }

    #[test]
    fn other_types_and_non_objects_are_errors() {
        assert!(matches!(NectarEvent::parse("unknown", b"{}"), Err(ParseError::UnknownType(_))));
        assert!(matches!(NectarEvent::parse("document.archived", b"{}"), Err(ParseError::UnknownType(_))));
        assert!(matches!(NectarEvent::parse("document.created", b"[1]"), Err(ParseError::NotAnObject(_))));
    }
}
