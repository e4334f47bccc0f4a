//! Values Nectar sends as text or numbers, kept exactly as received.
//!
//! Money and usage figures must not pass through `f64`; dates come with or
//! without fractional seconds. Each type keeps the text it was given (so
//! nothing is lost, even the catalog's `"decimal"` placeholders) and parses on
//! demand.

use chrono::{NaiveDate, NaiveDateTime};
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::str::FromStr;

/// A decimal as written in the payload: a JSON number or a string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decimal(String);

impl Decimal {
    /// The exact value; `None` if the text is not a decimal number.
    pub fn value(&self) -> Option<rust_decimal::Decimal> {
        rust_decimal::Decimal::from_str(&self.0).or_else(|_| rust_decimal::Decimal::from_scientific(&self.0)).ok()
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for Decimal {
    /// Reads the raw JSON text, so numbers never become floats.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = Box::<RawValue>::deserialize(deserializer)?;
        let text = raw.get();
        if text.starts_with('"') {
            let unquoted: String = serde_json::from_str(text).map_err(serde::de::Error::custom)?;
            Ok(Self(unquoted))
        } else {
            Ok(Self(text.to_owned()))
        }
    }
}

/// What Nectar sends: a number or a string. The parser is more lenient
/// (it keeps any value's text, and `value()` says whether it is a number), so
/// a drift report still flags, say, an amount that became an object.
impl JsonSchema for Decimal {
    fn schema_name() -> Cow<'static, str> {
        "Decimal".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({"type": ["string", "number"]})
    }
}

/// A date-time without zone, as Nectar sends them (`2024-09-06T00:15:43.073014`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct Timestamp(String);

impl Timestamp {
    /// Parsed with or without fractional seconds (any precision), and with a
    /// `Z` or offset, which is converted to UTC.
    pub fn value(&self) -> Option<NaiveDateTime> {
        NaiveDateTime::parse_from_str(&self.0, "%Y-%m-%dT%H:%M:%S%.f")
            .ok()
            .or_else(|| chrono::DateTime::parse_from_rfc3339(&self.0).ok().map(|t| t.naive_utc()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A calendar date (`2025-05-10`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct Date(String);

impl Date {
    pub fn value(&self) -> Option<NaiveDate> {
        NaiveDate::parse_from_str(&self.0, "%Y-%m-%d").ok()
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Amounts {
        values: Vec<Decimal>,
    }

    #[test]
    fn decimals_are_exact_from_numbers_and_strings() {
        let amounts: Amounts =
            serde_json::from_str(r#"{"values": [0.1, "1234567890.123456789", 1e2, "decimal", 12]}"#).unwrap();
        let exact: Vec<Option<String>> = amounts.values.iter().map(|d| d.value().map(|v| v.to_string())).collect();
        assert_eq!(
            exact,
            [Some("0.1".into()), Some("1234567890.123456789".into()), Some("100".into()), None, Some("12".into())]
        );
        assert_eq!(amounts.values[3].as_str(), "decimal");
    }

    #[test]
    fn timestamps_with_or_without_fractions_parse() {
        let expected = NaiveDate::from_ymd_opt(2024, 9, 6).unwrap().and_hms_opt(0, 15, 43).unwrap();
        for text in ["2024-09-06T00:15:43", "2024-09-06T00:15:43Z", "2024-09-06T02:15:43+02:00"] {
            assert_eq!(Timestamp(text.into()).value(), Some(expected), "{text}");
        }
        for text in ["2024-09-06T00:15:43.073014", "2025-05-10T00:41:17.398683402"] {
            assert!(Timestamp(text.into()).value().is_some(), "{text}");
        }
        assert_eq!(Timestamp("yesterday".into()).value(), None);
        assert_eq!(Date("2025-05-30".into()).value(), NaiveDate::from_ymd_opt(2025, 5, 30));
    }
}
