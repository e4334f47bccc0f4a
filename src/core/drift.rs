//! Schema drift: where Nectar's payloads and the typed model ([`NectarEvent`])
//! part ways, so a field Nectar adds, drops or retypes is noticed before a
//! handler misses it.
//!
//! - [`model_paths`]: the field paths the model names for an event type, with
//!   the JSON kinds it reads there, read from the model's JSON Schema, which
//!   `schemars` derives from the same serde attributes as the parser (so a
//!   field added to the model is known here without a second list). Decimals
//!   and id lists say by hand what they stand for: a string or a number (the
//!   parser keeps any value's text). A test holds the paths to the parser.
//! - [`for_each_field`]: every field path of a payload, with its JSON kind.
//! - [`DriftReport`]: payloads of a time window in, [`Finding`]s out.
//! - [`unknown_paths`]: the per-webhook count for the router's metric.
//!
//! Paths are dotted, with array elements folded as `[]`: `lineItems[].quantity`,
//! `accountIds[]`. Field names are written as received (Nectar's are
//! identifiers, so the notation is unambiguous).
//!
//! Findings and text carry paths, kinds, counts, times and webhook ids, never
//! a payload's values. Field names are the one thing read from payloads, and
//! only down to the first one the model does not name: a new object keyed by
//! data shows up as its one field, not as its keys.
//!
//! `null` reads as absent for every field the model names (all are optional,
//! lists included): a named field sent as `null` is neither a type change nor
//! missing, and a new field sent as `null` is still unknown. An array element
//! that is `null` is a type change where the model reads no `null` (its lists
//! of strings and of objects).
//!
//! [`NectarEvent`]: super::events::NectarEvent

use super::events::NECTAR_EVENT_TYPES;
use super::events::model::{Connection, Document};
use chrono::{DateTime, SecondsFormat, Utc};
use schemars::JsonSchema;
use serde::Serialize;
use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};
use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt::{self, Write as _};
use std::sync::LazyLock;
use thiserror::Error;

/// A JSON value's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    String,
    Number,
    Boolean,
    Object,
    Array,
    Null,
}

impl Kind {
    const ALL: [Kind; 6] = [Kind::String, Kind::Number, Kind::Boolean, Kind::Object, Kind::Array, Kind::Null];

    fn name(self) -> &'static str {
        match self {
            Self::String => "string",
            Self::Number => "number",
            Self::Boolean => "boolean",
            Self::Object => "object",
            Self::Array => "array",
            Self::Null => "null",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What the model reads at one path.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expected {
    /// The kinds it reads. Every named field reads `null` (as absent): the
    /// model's fields are all optional. All six kinds: it takes any value.
    pub kinds: BTreeSet<Kind>,
    /// Whether it takes fields or elements under this path without naming
    /// them (`old`, the previous values of whatever changed; a raw JSON value).
    pub open: bool,
}

impl Expected {
    /// Whether a value of `kind` here fits the model.
    pub fn accepts(&self, kind: Kind) -> bool {
        self.kinds.contains(&kind)
    }
}

/// The model's paths for one payload shape.
struct Model {
    paths: BTreeMap<String, Expected>,
}

static CONNECTION: LazyLock<Model> = LazyLock::new(Model::of::<Connection>);
static DOCUMENT: LazyLock<Model> = LazyLock::new(Model::of::<Document>);

/// The field paths Nectar's catalog documents for each event type: those of
/// its example payload (`events/payloads/`, copied from the catalog with its
/// placeholder values). A model field is *missing* only where the catalog
/// says this type sends it: v1 and v2 share one model, and a v2 payload is
/// not expected to carry v1's `meterSiteUsageData`.
static DOCUMENTED: LazyLock<BTreeMap<&'static str, BTreeSet<String>>> = LazyLock::new(|| {
    CATALOG_EXAMPLES
        .iter()
        .map(|(event_type, body)| {
            let mut paths = BTreeSet::new();
            // The examples are committed JSON objects: a failure here is a broken build, caught by the tests.
            let _ = for_each_field(body, |field| {
                paths.insert(field.path.to_owned());
            });
            (*event_type, paths)
        })
        .collect()
});

/// Nectar's catalog example of each of its twelve event types.
const CATALOG_EXAMPLES: [(&str, &[u8]); 12] = [
    ("connection.created", include_bytes!("../../events/payloads/connection.created.json")),
    ("connection.updated", include_bytes!("../../events/payloads/connection.updated.json")),
    ("connection.validated", include_bytes!("../../events/payloads/connection.validated.json")),
    ("document.created", include_bytes!("../../events/payloads/document.created.json")),
    ("document.updated", include_bytes!("../../events/payloads/document.updated.json")),
    ("document.deleted", include_bytes!("../../events/payloads/document.deleted.json")),
    ("connection.created.v2", include_bytes!("../../events/payloads/connection.created.v2.json")),
    ("connection.updated.v2", include_bytes!("../../events/payloads/connection.updated.v2.json")),
    ("connection.validated.v2", include_bytes!("../../events/payloads/connection.validated.v2.json")),
    ("document.created.v2", include_bytes!("../../events/payloads/document.created.v2.json")),
    ("document.updated.v2", include_bytes!("../../events/payloads/document.updated.v2.json")),
    ("document.deleted.v2", include_bytes!("../../events/payloads/document.deleted.v2.json")),
];

/// The model for one of Nectar's event types; `None` for any other type.
/// v1 and v2 share one model ([`Connection`] or [`Document`]), which names
/// the fields of both versions.
fn model_for(event_type: &str) -> Option<&'static Model> {
    if !NECTAR_EVENT_TYPES.contains(&event_type) {
        return None;
    }
    Some(if event_type.starts_with("connection.") { &CONNECTION } else { &DOCUMENT })
}

/// The field paths the model names for `event_type`, with what it reads at
/// each; `None` if it is not one of [`NECTAR_EVENT_TYPES`].
pub fn model_paths(event_type: &str) -> Option<&'static BTreeMap<String, Expected>> {
    model_for(event_type).map(|model| &model.paths)
}

/// Where a payload's field stands against the model.
#[derive(Debug, PartialEq, Eq)]
enum Place {
    Named,
    /// Not named, under a path the model names as an object or array it
    /// reads field by field: the shallowest unknown path.
    Unknown,
    /// Under an unknown path, an open one, or one that arrived as another
    /// kind than the model reads there: already accounted for above it.
    Beneath,
}

impl Model {
    fn of<T: JsonSchema>() -> Self {
        let schema = schemars::schema_for!(T);
        let root = schema.as_value();
        let no_definitions = Map::new();
        let definitions = root.get("$defs").and_then(Value::as_object).unwrap_or(&no_definitions);
        let mut paths = BTreeMap::new();
        collect(root, definitions, At::Payload, &mut paths);
        Self { paths }
    }

    fn place(&self, field: FieldSeen<'_>) -> Place {
        if self.paths.contains_key(field.path) {
            return Place::Named;
        }
        if field.parent.is_empty() {
            return Place::Unknown;
        }
        let holds = if field.is_element() { Kind::Array } else { Kind::Object };
        match self.paths.get(field.parent) {
            Some(parent) if !parent.open && parent.kinds.contains(&holds) => Place::Unknown,
            _ => Place::Beneath,
        }
    }
}

/// Where a (sub)schema sits.
#[derive(Clone, Copy)]
enum At<'p> {
    Payload,
    /// A named field, at this path: optional, like every field of the model.
    Field(&'p str),
    /// An array's elements, at this path (`…[]`).
    Element(&'p str),
}

/// Adds the paths a (sub)schema of the model describes.
fn collect(schema: &Value, definitions: &Map<String, Value>, at: At<'_>, paths: &mut BTreeMap<String, Expected>) {
    let path = match at {
        At::Payload => None,
        At::Field(path) | At::Element(path) => Some(path),
    };
    for alternative in alternatives(schema, definitions) {
        let types = alternative.get("type");
        let names = match types {
            Some(Value::Array(names)) => names.iter().collect(),
            Some(name) => vec![name],
            None => Vec::new(),
        };
        let mut kinds: BTreeSet<Kind> = names
            .into_iter()
            .filter_map(|name| match name.as_str()? {
                "string" => Some(Kind::String),
                "number" | "integer" => Some(Kind::Number),
                "boolean" => Some(Kind::Boolean),
                "object" => Some(Kind::Object),
                "array" => Some(Kind::Array),
                "null" => Some(Kind::Null),
                _ => None,
            })
            .collect();
        let properties = alternative.get("properties").and_then(Value::as_object);
        let items = alternative.get("items");
        let takes_anything = types.is_none();
        let open = takes_anything
            || (kinds.contains(&Kind::Object) && properties.is_none())
            || (kinds.contains(&Kind::Array) && items.is_none());
        if takes_anything {
            kinds.extend(Kind::ALL);
        }
        if let At::Field(_) = at {
            kinds.insert(Kind::Null);
        }
        if let Some(path) = path {
            let expected = paths.entry(path.to_owned()).or_default();
            expected.kinds.extend(kinds);
            expected.open |= open;
        }
        for (name, property) in properties.into_iter().flatten() {
            let child = path.map_or_else(|| name.clone(), |path| format!("{path}.{name}"));
            collect(property, definitions, At::Field(&child), paths);
        }
        if let Some(items) = items.filter(|_| !open) {
            collect(items, definitions, At::Element(&format!("{}[]", path.unwrap_or_default())), paths);
        }
    }
}

/// The concrete schemas a schema stands for: `$ref`s followed, `anyOf` and
/// `oneOf` spread out (an `Option`'s `null` is one of them).
fn alternatives<'s>(schema: &'s Value, definitions: &'s Map<String, Value>) -> Vec<&'s Value> {
    if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
        let name = reference.rsplit('/').next().unwrap_or_default();
        return definitions.get(name).map(|d| alternatives(d, definitions)).unwrap_or_default();
    }
    match schema.get("anyOf").or_else(|| schema.get("oneOf")).and_then(Value::as_array) {
        Some(choices) => choices.iter().flat_map(|choice| alternatives(choice, definitions)).collect(),
        None => vec![schema],
    }
}

/// A body that cannot be walked: not JSON, or JSON but not an object.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("the body is not a JSON object")]
pub struct NotAnObject;

/// One field of a payload, as [`for_each_field`] finds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldSeen<'a> {
    /// Its path: `site.id`, `lineItems[].quantity`, `accountIds[]`.
    pub path: &'a str,
    /// Its parent's path, a prefix of `path` (`""` at the top level).
    pub parent: &'a str,
    /// The kind of value found there.
    pub kind: Kind,
}

impl FieldSeen<'_> {
    /// Whether this is an array's element (`accountIds[]`) rather than a
    /// named field.
    fn is_element(&self) -> bool {
        !self.parent.is_empty() && self.path.len() == self.parent.len() + 2 && self.path.ends_with("[]")
    }
}

/// Calls `visit` for every field of a payload, nested ones and array elements
/// included, once per occurrence (an array's elements each), children before
/// their parent. Streams the body: nothing of it is kept.
///
/// A body that is not a JSON object is an error, found only once the walk
/// reaches the fault: `visit` may have been called for what came before.
pub fn for_each_field(body: &[u8], mut visit: impl FnMut(FieldSeen<'_>)) -> Result<(), NotAnObject> {
    let mut path = String::new();
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    deserializer.deserialize_map(Walk { path: &mut path, visit: &mut visit, top: true }).map_err(|_| NotAnObject)?;
    deserializer.end().map_err(|_| NotAnObject)
}

/// Walks one value at `path`, returning its kind. `top`: the payload itself,
/// whose fields' paths have no leading dot.
struct Walk<'w, F> {
    path: &'w mut String,
    visit: &'w mut F,
    top: bool,
}

impl<'de, F: FnMut(FieldSeen<'_>)> DeserializeSeed<'de> for Walk<'_, F> {
    type Value = Kind;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Kind, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de, F: FnMut(FieldSeen<'_>)> Visitor<'de> for Walk<'_, F> {
    type Value = Kind;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Kind, E> {
        Ok(Kind::Boolean)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Kind, E> {
        Ok(Kind::Number)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Kind, E> {
        Ok(Kind::Number)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Kind, E> {
        Ok(Kind::Number)
    }

    fn visit_str<E>(self, _: &str) -> Result<Kind, E> {
        Ok(Kind::String)
    }

    fn visit_unit<E>(self) -> Result<Kind, E> {
        Ok(Kind::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut elements: A) -> Result<Kind, A::Error> {
        let parent = self.path.len();
        self.path.push_str("[]");
        while let Some(kind) =
            elements.next_element_seed(Walk { path: &mut *self.path, visit: &mut *self.visit, top: false })?
        {
            (self.visit)(FieldSeen { path: self.path, parent: &self.path[..parent], kind });
        }
        self.path.truncate(parent);
        Ok(Kind::Array)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut fields: A) -> Result<Kind, A::Error> {
        let parent = self.path.len();
        while fields.next_key_seed(Name { path: &mut *self.path, top: self.top })?.is_some() {
            let kind = fields.next_value_seed(Walk { path: &mut *self.path, visit: &mut *self.visit, top: false })?;
            (self.visit)(FieldSeen { path: self.path, parent: &self.path[..parent], kind });
            self.path.truncate(parent);
        }
        Ok(Kind::Object)
    }
}

/// Appends a field's name to the path, without keeping a copy of it.
struct Name<'w> {
    path: &'w mut String,
    top: bool,
}

impl<'de> DeserializeSeed<'de> for Name<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Name<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E>(self, name: &str) -> Result<(), E> {
        if !self.top {
            self.path.push('.');
        }
        self.path.push_str(name);
        Ok(())
    }
}

/// How many distinct field paths of a webhook the model does not name (the
/// shallowest of each unknown branch), for the router's metric. 0 for other
/// event types than Nectar's, and for bodies that are not JSON objects.
/// Streams the body and allocates only for unknown paths.
pub fn unknown_paths(event_type: &str, body: &[u8]) -> usize {
    let Some(model) = model_for(event_type) else {
        return 0;
    };
    let mut unknown = HashSet::new();
    let walked = for_each_field(body, |field| {
        if model.place(field) == Place::Unknown && !unknown.contains(field.path) {
            unknown.insert(field.path.to_owned());
        }
    });
    if walked.is_ok() { unknown.len() } else { 0 }
}

/// What a finding says of its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    /// Sent, but the model does not name it.
    Unknown,
    /// Named by the model, and never sent in any payload of that type.
    Missing,
    /// Named by the model, and sent as a kind it does not read there.
    TypeChanged,
}

/// One difference between the model and a window of payloads of one type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Finding {
    pub event_type: String,
    pub path: String,
    pub kind: FindingKind,
    /// Webhooks it was seen in: for `missing`, those that could have had it
    /// (of that type, with the field's parent object present).
    pub count: u64,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    /// Up to two of those webhooks' ids, the first observed.
    pub samples: Vec<String>,
    /// What the model reads there (`missing` and `type_changed`).
    #[serde(skip_serializing_if = "BTreeSet::is_empty")]
    pub expected: BTreeSet<Kind>,
    /// The kinds found there: all of them for `unknown`, those the model does
    /// not read for `type_changed`.
    #[serde(skip_serializing_if = "BTreeSet::is_empty")]
    pub found: BTreeSet<Kind>,
}

/// Webhooks [`DriftReport::observe`] could not compare with the model.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Skipped {
    /// Of other types than Nectar's twelve (`unknown`, `nector.*`, new ones).
    pub unknown_event_types: u64,
    /// Bodies that are not a JSON object.
    pub not_objects: u64,
}

/// Which webhooks showed something, and when.
#[derive(Debug, Clone)]
struct Sightings {
    count: u64,
    first: DateTime<Utc>,
    last: DateTime<Utc>,
    samples: Vec<String>,
}

impl Sightings {
    const SAMPLES: usize = 2;

    fn new(webhook_id: &str, received: DateTime<Utc>) -> Self {
        Self { count: 1, first: received, last: received, samples: vec![webhook_id.to_owned()] }
    }

    fn add(&mut self, webhook_id: &str, received: DateTime<Utc>) {
        self.count += 1;
        self.first = self.first.min(received);
        self.last = self.last.max(received);
        if self.samples.len() < Self::SAMPLES && !self.samples.iter().any(|id| id == webhook_id) {
            self.samples.push(webhook_id.to_owned());
        }
    }

    /// Adds to the sightings under `key`, or starts them.
    fn note<K: Ord>(map: &mut BTreeMap<K, Self>, key: K, webhook_id: &str, received: DateTime<Utc>) {
        match map.entry(key) {
            Entry::Occupied(sightings) => sightings.into_mut().add(webhook_id, received),
            Entry::Vacant(entry) => {
                entry.insert(Self::new(webhook_id, received));
            }
        }
    }
}

/// One path's sightings within one event type.
#[derive(Debug)]
struct PathSightings {
    sent: Sightings,
    by_kind: BTreeMap<Kind, Sightings>,
    /// Those that sent it as a kind the model does not read there.
    misread: Option<Sightings>,
}

/// One event type's webhooks and the paths they sent (those the model names,
/// and the shallowest unknown ones).
#[derive(Debug)]
struct TypeSightings {
    webhooks: Sightings,
    paths: BTreeMap<String, PathSightings>,
}

/// Accumulates webhooks of a window and reports how they differ from the
/// model, per event type. Pure: the caller reads the webhooks.
#[derive(Debug, Default)]
pub struct DriftReport {
    by_type: BTreeMap<String, TypeSightings>,
    skipped: Skipped,
}

impl DriftReport {
    /// Compares one webhook with the model. Webhooks of other types than
    /// Nectar's twelve, and bodies that are not JSON objects, are counted in
    /// [`Self::skipped`] and otherwise left out.
    pub fn observe(&mut self, event_type: &str, webhook_id: &str, received: DateTime<Utc>, body: &[u8]) {
        let Some(model) = model_for(event_type) else {
            self.skipped.unknown_event_types += 1;
            return;
        };
        let mut sent: BTreeMap<String, BTreeSet<Kind>> = BTreeMap::new();
        let walked = for_each_field(body, |field| {
            if model.place(field) == Place::Beneath {
                return;
            }
            match sent.get_mut(field.path) {
                Some(kinds) => {
                    kinds.insert(field.kind);
                }
                None => {
                    sent.insert(field.path.to_owned(), BTreeSet::from([field.kind]));
                }
            }
        });
        if walked.is_err() {
            self.skipped.not_objects += 1;
            return;
        }
        let of_type = match self.by_type.entry(event_type.to_owned()) {
            Entry::Occupied(of_type) => {
                let of_type = of_type.into_mut();
                of_type.webhooks.add(webhook_id, received);
                of_type
            }
            Entry::Vacant(entry) => {
                entry.insert(TypeSightings { webhooks: Sightings::new(webhook_id, received), paths: BTreeMap::new() })
            }
        };
        for (path, kinds) in sent {
            let misread =
                model.paths.get(&path).is_some_and(|expected| kinds.iter().any(|&kind| !expected.accepts(kind)));
            let sightings = match of_type.paths.entry(path) {
                Entry::Occupied(sightings) => {
                    let sightings = sightings.into_mut();
                    sightings.sent.add(webhook_id, received);
                    sightings
                }
                Entry::Vacant(entry) => entry.insert(PathSightings {
                    sent: Sightings::new(webhook_id, received),
                    by_kind: BTreeMap::new(),
                    misread: None,
                }),
            };
            for kind in kinds {
                Sightings::note(&mut sightings.by_kind, kind, webhook_id, received);
            }
            if misread {
                match &mut sightings.misread {
                    Some(misread) => misread.add(webhook_id, received),
                    None => sightings.misread = Some(Sightings::new(webhook_id, received)),
                }
            }
        }
    }

    /// The webhooks left out so far.
    pub fn skipped(&self) -> Skipped {
        self.skipped
    }

    /// Every difference found so far, sorted by event type, then path.
    ///
    /// `missing` is said only of named fields (not of array elements: an
    /// empty list is data, not drift), and only when the field's parent was
    /// sent as an object: `company.name` is not missing from payloads whose
    /// `company` is an id string. And only fields Nectar's catalog documents
    /// for this event type: v1 and v2 share one model.
    pub fn findings(&self) -> Vec<Finding> {
        let mut findings = Vec::new();
        for (event_type, of_type) in &self.by_type {
            let Some(model) = model_for(event_type) else { continue };
            let finding = |path: &str, kind, sightings: &Sightings, expected, found| Finding {
                event_type: event_type.clone(),
                path: path.to_owned(),
                kind,
                count: sightings.count,
                first_seen: sightings.first,
                last_seen: sightings.last,
                samples: sightings.samples.clone(),
                expected,
                found,
            };
            for (path, sightings) in &of_type.paths {
                let found = sightings.by_kind.keys().copied();
                match (model.paths.get(path), &sightings.misread) {
                    (None, _) => findings.push(finding(
                        path,
                        FindingKind::Unknown,
                        &sightings.sent,
                        BTreeSet::new(),
                        found.collect(),
                    )),
                    (Some(expected), Some(misread)) => findings.push(finding(
                        path,
                        FindingKind::TypeChanged,
                        misread,
                        expected.kinds.clone(),
                        found.filter(|&kind| !expected.accepts(kind)).collect(),
                    )),
                    (Some(_), None) => {}
                }
            }
            let documented = DOCUMENTED.get(event_type.as_str());
            for (path, expected) in &model.paths {
                if of_type.paths.contains_key(path) || !documented.is_some_and(|paths| paths.contains(path)) {
                    continue;
                }
                let could_have_had = match path.rsplit_once('.') {
                    None if !path.ends_with("[]") => Some(&of_type.webhooks),
                    Some((parent, name)) if !name.ends_with("[]") => {
                        of_type.paths.get(parent).and_then(|parent| parent.by_kind.get(&Kind::Object))
                    }
                    _ => None,
                };
                if let Some(sightings) = could_have_had {
                    findings.push(finding(
                        path,
                        FindingKind::Missing,
                        sightings,
                        expected.kinds.clone(),
                        BTreeSet::new(),
                    ));
                }
            }
        }
        findings.sort_by(|a, b| (&a.event_type, &a.path, a.kind).cmp(&(&b.event_type, &b.path, b.kind)));
        findings
    }
}

/// The findings for a terminal: per event type, unknown fields, missing
/// fields, then type changes, each with its counts, first and last times and
/// sample webhook ids.
pub fn render_text(findings: &[Finding]) -> String {
    if findings.is_empty() {
        return "No drift: every payload fits the model.\n".to_owned();
    }
    let mut text = String::new();
    let event_types: BTreeSet<&str> = findings.iter().map(|f| f.event_type.as_str()).collect();
    for event_type in event_types {
        let _ = writeln!(text, "{event_type}");
        for (kind, heading) in [
            (FindingKind::Unknown, "unknown fields (sent, not in the model)"),
            (FindingKind::Missing, "missing fields (in the model, never sent)"),
            (FindingKind::TypeChanged, "type changes"),
        ] {
            let mut of_kind = findings.iter().filter(|f| f.event_type == event_type && f.kind == kind).peekable();
            if of_kind.peek().is_none() {
                continue;
            }
            let _ = writeln!(text, "  {heading}:");
            for finding in of_kind {
                let what = match kind {
                    FindingKind::Unknown => format!("sent as {}", kinds_text(&finding.found)),
                    FindingKind::Missing => format!("expected {}", kinds_text(&finding.expected)),
                    FindingKind::TypeChanged => {
                        format!("expected {}, found {}", kinds_text(&finding.expected), kinds_text(&finding.found))
                    }
                };
                let times = |n| if n == 1 { "1 webhook".to_owned() } else { format!("{n} webhooks") };
                let counted = match kind {
                    FindingKind::Missing => format!("absent from {}", times(finding.count)),
                    _ => format!("in {}", times(finding.count)),
                };
                let _ = writeln!(
                    text,
                    "    {}  {what}; {counted}, first {}, last {}; e.g. {}",
                    finding.path,
                    finding.first_seen.to_rfc3339_opts(SecondsFormat::Secs, true),
                    finding.last_seen.to_rfc3339_opts(SecondsFormat::Secs, true),
                    finding.samples.join(", "),
                );
            }
        }
    }
    text
}

/// `string or number`; `any` when every kind is read.
fn kinds_text(kinds: &BTreeSet<Kind>) -> String {
    if Kind::ALL.iter().all(|kind| kinds.contains(kind)) {
        return "any".to_owned();
    }
    kinds.iter().map(|kind| kind.name()).collect::<Vec<_>>().join(" or ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::events::NectarEvent;
    use serde_json::json;

    /// The committed samples, with the event type each is sent as: the
    /// catalog's examples and the v2 connection sent without `eventType`.
    static SAMPLES: LazyLock<Vec<(&str, &[u8])>> = LazyLock::new(|| {
        let untyped: &[u8] = include_bytes!("../../events/payloads/connection.created.v2.no-event-type.json");
        CATALOG_EXAMPLES.into_iter().chain([("connection.created.v2", untyped)]).collect()
    });

    /// `"accountIds": [0137746423]`: a leading zero, not JSON.
    const INVALID_JSON: &[u8] = include_bytes!("../../events/payloads/connection.created.invalid-json.json");

    fn sample(event_type: &str) -> Value {
        let (_, body) = SAMPLES.iter().find(|(t, _)| *t == event_type).unwrap();
        serde_json::from_slice(body).unwrap()
    }

    fn at(minute: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_750_000_000 + 60 * minute, 0).unwrap()
    }

    fn report_of(webhooks: &[(&str, &Value)]) -> DriftReport {
        let mut report = DriftReport::default();
        for (i, (event_type, body)) in webhooks.iter().enumerate() {
            report.observe(event_type, &format!("msg_{i}"), at(i as i64), body.to_string().as_bytes());
        }
        report
    }

    /// `event type, kind, path` of each finding.
    fn summary(findings: &[Finding]) -> Vec<String> {
        findings.iter().map(|f| format!("{} {:?} {}", f.event_type, f.kind, f.path)).collect()
    }

    /// The findings of `webhooks` that the same types' unchanged samples do
    /// not have, and those they no longer have.
    fn drift_from_samples(webhooks: &[(&str, &Value)]) -> (Vec<String>, Vec<String>) {
        let originals: Vec<(&str, Value)> = webhooks.iter().map(|(t, _)| (*t, sample(t))).collect();
        let originals: Vec<(&str, &Value)> = originals.iter().map(|(t, v)| (*t, v)).collect();
        let before = summary(&report_of(&originals).findings());
        let after = summary(&report_of(webhooks).findings());
        let added = after.iter().filter(|f| !before.contains(f)).cloned().collect();
        let gone = before.iter().filter(|f| !after.contains(f)).cloned().collect();
        (added, gone)
    }

    #[test]
    fn the_model_s_paths_and_kinds() {
        let kinds = |event_type: &str, path: &str| {
            let expected = &model_paths(event_type).unwrap()[path];
            (expected.kinds.iter().map(|k| k.name()).collect::<Vec<_>>().join("|"), expected.open)
        };
        assert_eq!(kinds("document.created.v2", "company"), ("string|object|null".into(), false));
        assert_eq!(kinds("document.created.v2", "company.publicId"), ("string|null".into(), false));
        assert_eq!(kinds("document.created", "lineItems"), ("array|null".into(), false));
        assert_eq!(kinds("document.created", "lineItems[]"), ("object".into(), false));
        assert_eq!(kinds("document.created", "lineItems[].quantity"), ("string|number|null".into(), false));
        assert_eq!(kinds("document.created", "lineItems[].multipliers[]"), ("string|number".into(), false));
        assert_eq!(kinds("document.created", "lineItems[].accountIds[]"), ("string|number".into(), false));
        assert_eq!(kinds("document.created", "supersededDocumentIds[]"), ("string".into(), false));
        assert_eq!(kinds("document.created", "billDate"), ("string|null".into(), false));
        assert_eq!(kinds("document.created", "isFlagged"), ("boolean|null".into(), false));
        assert_eq!(kinds("document.updated", "old"), ("object|null".into(), true));
        assert_eq!(kinds("connection.created", "accounts[].site.id"), ("string|null".into(), false));
        assert_eq!(kinds("connection.created", "sitesRelations[].accountIds[]"), ("string|number".into(), false));
        assert!(!model_paths("document.created").unwrap().contains_key("extra"));
        for event_type in NECTAR_EVENT_TYPES {
            let v1 = event_type.trim_end_matches(".v2");
            assert_eq!(model_paths(event_type), model_paths(v1), "{event_type}");
        }
        for other in ["unknown", "document.archived", "nector.coupon.created", "connection"] {
            assert_eq!(model_paths(other), None, "{other}");
        }
    }

    /// The payload `{"a": [{"b": value}]}` for the path `a[].b`.
    fn payload_with(path: &str, value: Value) -> Value {
        let mut steps = Vec::new();
        for name in path.split('.') {
            let bare = name.trim_end_matches("[]");
            steps.push(Some(bare));
            steps.extend(std::iter::repeat_n(None, (name.len() - bare.len()) / 2));
        }
        steps.into_iter().rev().fold(value, |inner, step| match step {
            Some(name) => Value::Object(Map::from_iter([(name.to_owned(), inner)])),
            None => Value::Array(vec![inner]),
        })
    }

    /// The paths and the parser agree: every kind the paths say the model
    /// reads, the parser reads; every other kind, the parser refuses, but
    /// where the paths say `string or number` (decimals and ids), whose text
    /// the parser keeps whatever the value.
    #[test]
    fn the_paths_agree_with_the_parser() {
        let example = |kind| match kind {
            Kind::String => json!("x"),
            Kind::Number => json!(1),
            Kind::Boolean => json!(true),
            Kind::Object => json!({}),
            Kind::Array => json!([]),
            Kind::Null => json!(null),
        };
        let lenient = |kinds: &BTreeSet<Kind>| kinds.contains(&Kind::String) && kinds.contains(&Kind::Number);
        for event_type in ["connection.created", "document.created"] {
            for (path, expected) in model_paths(event_type).unwrap() {
                for kind in Kind::ALL {
                    let body = payload_with(path, example(kind)).to_string();
                    let parsed = NectarEvent::parse(event_type, body.as_bytes());
                    if expected.accepts(kind) || lenient(&expected.kinds) {
                        assert!(parsed.is_ok(), "{event_type} {path} as {kind}: {parsed:?}");
                    } else {
                        assert!(parsed.is_err(), "{event_type} {path} as {kind} parses");
                    }
                }
            }
        }
    }

    #[test]
    fn fields_are_found_with_arrays_folded() {
        let body = br#"{"a":{"b":[1,{"c":null},{"c":"x"}],"d":"x"},"e":[[true]],"f":[]}"#;
        let mut fields = Vec::new();
        for_each_field(body, |field| fields.push(format!("{} < {:?}: {}", field.path, field.parent, field.kind)))
            .unwrap();
        fields.sort();
        fields.dedup();
        assert_eq!(
            fields,
            [
                r#"a < "": object"#,
                r#"a.b < "a": array"#,
                r#"a.b[] < "a.b": number"#,
                r#"a.b[] < "a.b": object"#,
                r#"a.b[].c < "a.b[]": null"#,
                r#"a.b[].c < "a.b[]": string"#,
                r#"a.d < "a": string"#,
                r#"e < "": array"#,
                r#"e[] < "e": array"#,
                r#"e[][] < "e[]": boolean"#,
                r#"f < "": array"#,
            ]
        );
    }

    #[test]
    fn bodies_that_are_not_objects_are_refused() {
        for body in [&b"[1]"[..], b"null", b"\"x\"", b"", b"{\"a\":", b"{} x", b"{\"a\":1,}", INVALID_JSON] {
            assert_eq!(for_each_field(body, |_| {}), Err(NotAnObject), "{}", String::from_utf8_lossy(body));
        }
        let deep = format!("{}{}", r#"{"a":"#.repeat(1000), "}".repeat(1000));
        assert_eq!(for_each_field(deep.as_bytes(), |_| {}), Err(NotAnObject));
    }

    #[test]
    fn the_samples_fit_the_model() {
        let mut report = DriftReport::default();
        for (i, (event_type, body)) in SAMPLES.iter().enumerate() {
            report.observe(event_type, &format!("msg_{i}"), at(i as i64), body);
            assert_eq!(unknown_paths(event_type, body), 0, "{event_type}");
        }
        assert_eq!(summary(&report.findings()), Vec::<String>::new());
        assert_eq!(report.skipped(), Skipped::default());
        assert_eq!(DOCUMENTED.len(), NECTAR_EVENT_TYPES.len());
    }

    #[test]
    fn an_added_field_is_unknown_at_its_shallowest_path() {
        let mut document = sample("document.created.v2");
        document["site"]["newThing"] = json!(1);
        document["meter"] = json!({"serial": "S-1", "reading": {"value": 1, "at": null}});
        let mut connection = sample("connection.created.v2");
        connection["accounts"][0]["tariff"] = json!({"name": "T"});
        let webhooks = [("document.created.v2", &document), ("connection.created.v2", &connection)];
        let (added, gone) = drift_from_samples(&webhooks);
        assert_eq!(
            added,
            [
                "connection.created.v2 Unknown accounts[].tariff",
                "document.created.v2 Unknown meter",
                "document.created.v2 Unknown site.newThing",
            ]
        );
        assert!(gone.is_empty(), "{gone:?}");
        assert_eq!(unknown_paths("document.created.v2", document.to_string().as_bytes()), 2);
        let findings = report_of(&webhooks).findings();
        let meter = findings.iter().find(|f| f.path == "meter").unwrap();
        assert_eq!(
            (meter.count, &meter.found, &meter.samples),
            (1, &BTreeSet::from([Kind::Object]), &vec!["msg_0".into()])
        );
    }

    #[test]
    fn a_changed_type_is_reported_with_what_was_expected_and_found() {
        let mut connection = sample("connection.created.v2");
        connection["status"] = json!(3);
        connection["accounts"][0]["isTracked"] = json!("yes");
        connection["company"] = json!(["c1"]);
        let (added, gone) = drift_from_samples(&[("connection.created.v2", &connection)]);
        assert_eq!(
            added,
            [
                "connection.created.v2 TypeChanged accounts[].isTracked",
                "connection.created.v2 TypeChanged company",
                "connection.created.v2 TypeChanged status",
            ]
        );
        // `company` is no longer an object: its fields are not missing.
        assert!(gone.is_empty(), "{gone:?}");
        let findings = report_of(&[("connection.created.v2", &connection)]).findings();
        let status = findings.iter().find(|f| f.path == "status").unwrap();
        let string = BTreeSet::from([Kind::String, Kind::Null]);
        assert_eq!((&status.expected, &status.found), (&string, &BTreeSet::from([Kind::Number])));
        let company = findings.iter().find(|f| f.path == "company").unwrap();
        let object_or_string = BTreeSet::from([Kind::String, Kind::Object, Kind::Null]);
        assert_eq!((&company.expected, &company.found), (&object_or_string, &BTreeSet::from([Kind::Array])));
        let is_tracked = findings.iter().find(|f| f.path == "accounts[].isTracked").unwrap();
        let boolean = BTreeSet::from([Kind::Boolean, Kind::Null]);
        assert_eq!((&is_tracked.expected, &is_tracked.found), (&boolean, &BTreeSet::from([Kind::String])));
        assert_eq!(unknown_paths("connection.created.v2", connection.to_string().as_bytes()), 0);
    }

    #[test]
    fn a_removed_field_is_missing_only_when_no_payload_of_its_type_had_it() {
        let mut connection = sample("connection.created.v2");
        connection.as_object_mut().unwrap().remove("country");
        connection["datasource"].as_object_mut().unwrap().remove("url");
        let (added, gone) = drift_from_samples(&[("connection.created.v2", &connection)]);
        assert_eq!(added, ["connection.created.v2 Missing country", "connection.created.v2 Missing datasource.url"]);
        assert!(gone.is_empty(), "{gone:?}");

        let original = sample("connection.created.v2");
        let both = [("connection.created.v2", &original), ("connection.created.v2", &connection)];
        let missing = summary(&report_of(&both).findings());
        assert!(!missing.iter().any(|f| f.ends_with(" country") || f.ends_with(" datasource.url")), "{missing:?}");
    }

    #[test]
    fn fields_of_a_company_sent_as_an_id_are_not_missing() {
        let mut document = sample("document.created.v2");
        document["company"] = json!("c1");
        let findings = summary(&report_of(&[("document.created.v2", &document)]).findings());
        assert!(!findings.iter().any(|f| f.contains(" company")), "{findings:?}");
        // The model reads company.publicId, which v1's catalog does not document: not missing there.
        let mut v1 = sample("connection.created");
        v1["company"].as_object_mut().unwrap().remove("name");
        let findings = summary(&report_of(&[("connection.created", &v1)]).findings());
        assert_eq!(findings, ["connection.created Missing company.name"]);
    }

    #[test]
    fn array_elements_are_folded_into_one_path() {
        let mut connection = sample("connection.created.v2");
        let account = connection["accounts"][0].clone();
        let accounts: Vec<Value> = [json!(7), json!({"serial": "S-1"}), json!(null)]
            .into_iter()
            .map(|new_thing| {
                let mut account = account.clone();
                account["newThing"] = new_thing;
                account
            })
            .collect();
        connection["accounts"] = Value::Array(accounts);
        let findings = report_of(&[("connection.created.v2", &connection)]).findings();
        let unknown: Vec<&Finding> = findings.iter().filter(|f| f.kind == FindingKind::Unknown).collect();
        assert_eq!(unknown.len(), 1, "{unknown:?}");
        assert_eq!(unknown[0].path, "accounts[].newThing");
        assert_eq!(unknown[0].count, 1);
        assert_eq!(unknown[0].found, BTreeSet::from([Kind::Number, Kind::Object, Kind::Null]));
        assert_eq!(unknown_paths("connection.created.v2", connection.to_string().as_bytes()), 1);
    }

    #[test]
    fn null_is_absent_for_fields_but_not_for_elements() {
        let mut connection = sample("connection.created.v2");
        connection["status"] = json!(null);
        connection["accounts"] = json!(null);
        connection["newThing"] = json!(null);
        let (added, gone) = drift_from_samples(&[("connection.created.v2", &connection)]);
        assert_eq!(added, ["connection.created.v2 Unknown newThing"]);
        // `accounts` was sent, but no account: their fields cannot be missing.
        assert!(gone.iter().all(|f| f.contains(" Missing accounts[].")), "{gone:?}");

        let mut connection = sample("connection.created.v2");
        connection["accounts"] = json!([null]);
        connection["emails"] = json!([null]);
        let (added, _) = drift_from_samples(&[("connection.created.v2", &connection)]);
        assert_eq!(
            added,
            ["connection.created.v2 TypeChanged accounts[]", "connection.created.v2 TypeChanged emails[]"]
        );
    }

    #[test]
    fn other_event_types_and_bodies_that_are_not_objects_are_counted_and_skipped() {
        let mut report = DriftReport::default();
        for event_type in ["unknown", "document.archived", "nector.coupon.created"] {
            report.observe(event_type, "msg_1", at(0), b"{\"newThing\":1}");
            assert_eq!(unknown_paths(event_type, b"{\"newThing\":1}"), 0);
        }
        for body in [INVALID_JSON, b"[]", b"", b"{\"newThing\":1", b"\xff\xfe"] {
            report.observe("connection.created", "msg_2", at(1), body);
            assert_eq!(unknown_paths("connection.created", body), 0);
        }
        assert_eq!(report.skipped(), Skipped { unknown_event_types: 3, not_objects: 5 });
        assert!(report.findings().is_empty());
    }

    #[test]
    fn times_and_samples_cover_the_window_in_any_order() {
        let body = br#"{"status": 1}"#;
        let mut report = DriftReport::default();
        for (id, minute) in [("msg_b", 5), ("msg_a", 2), ("msg_b", 5), ("msg_c", 9)] {
            report.observe("connection.updated", id, at(minute), body);
        }
        let findings = report.findings();
        let status = findings.iter().find(|f| f.path == "status").unwrap();
        assert_eq!((status.count, status.first_seen, status.last_seen), (4, at(2), at(9)));
        assert_eq!(status.samples, ["msg_b", "msg_a"]);
        let country = findings.iter().find(|f| f.path == "country").unwrap();
        assert_eq!(
            (country.kind, country.count, country.first_seen, country.last_seen),
            (FindingKind::Missing, 4, at(2), at(9))
        );
    }

    #[test]
    fn findings_serialise_in_camel_case_with_rfc_3339_times() {
        let finding = Finding {
            event_type: "document.created.v2".into(),
            path: "lineItems[].quantity".into(),
            kind: FindingKind::TypeChanged,
            count: 3,
            first_seen: at(0),
            last_seen: at(90),
            samples: vec!["msg_1".into(), "msg_2".into()],
            expected: BTreeSet::from([Kind::String, Kind::Number]),
            found: BTreeSet::from([Kind::Boolean]),
        };
        assert_eq!(
            serde_json::to_value(&finding).unwrap(),
            json!({
                "eventType": "document.created.v2", "path": "lineItems[].quantity", "kind": "type_changed",
                "count": 3, "firstSeen": "2025-06-15T15:06:40Z", "lastSeen": "2025-06-15T16:36:40Z",
                "samples": ["msg_1", "msg_2"], "expected": ["string", "number"], "found": ["boolean"]
            })
        );
        let unknown = Finding { kind: FindingKind::Unknown, expected: BTreeSet::new(), ..finding };
        let unknown = serde_json::to_value(&unknown).unwrap();
        assert_eq!((&unknown["kind"], unknown.get("expected")), (&json!("unknown"), None));
    }

    #[test]
    fn the_text_groups_findings_by_event_type() {
        let finding = |event_type: &str, path: &str, kind, expected: &[Kind], found: &[Kind]| Finding {
            event_type: event_type.into(),
            path: path.into(),
            kind,
            count: 2,
            first_seen: at(0),
            last_seen: at(90),
            samples: vec!["msg_1".into(), "msg_2".into()],
            expected: expected.iter().copied().collect(),
            found: found.iter().copied().collect(),
        };
        let findings = [
            finding("connection.created.v2", "meter", FindingKind::Unknown, &[], &[Kind::Object]),
            finding("connection.created.v2", "status", FindingKind::TypeChanged, &[Kind::String], &[Kind::Number]),
            finding("connection.created.v2", "url", FindingKind::Missing, &[Kind::String], &[]),
            finding("document.created", "old.x", FindingKind::Unknown, &[], &[Kind::String, Kind::Null]),
        ];
        assert_eq!(
            render_text(&findings),
            "\
connection.created.v2
  unknown fields (sent, not in the model):
    meter  sent as object; in 2 webhooks, first 2025-06-15T15:06:40Z, last 2025-06-15T16:36:40Z; e.g. msg_1, msg_2
  missing fields (in the model, never sent):
    url  expected string; absent from 2 webhooks, first 2025-06-15T15:06:40Z, last 2025-06-15T16:36:40Z; e.g. msg_1, msg_2
  type changes:
    status  expected string, found number; in 2 webhooks, first 2025-06-15T15:06:40Z, last 2025-06-15T16:36:40Z; e.g. msg_1, msg_2
document.created
  unknown fields (sent, not in the model):
    old.x  sent as string or null; in 2 webhooks, first 2025-06-15T15:06:40Z, last 2025-06-15T16:36:40Z; e.g. msg_1, msg_2
"
        );
        assert_eq!(render_text(&[]), "No drift: every payload fits the model.\n");
    }

    /// Every string in a JSON value.
    fn strings(value: &Value, into: &mut Vec<String>) {
        match value {
            Value::String(text) => into.push(text.clone()),
            Value::Array(values) => values.iter().for_each(|v| strings(v, into)),
            Value::Object(fields) => fields.values().for_each(|v| strings(v, into)),
            _ => {}
        }
    }

    #[test]
    fn no_payload_value_reaches_the_findings_or_the_text() {
        let mut webhooks: Vec<(&str, Value)> =
            SAMPLES.iter().map(|(t, body)| (*t, serde_json::from_slice(body).unwrap())).collect();
        let mut document = sample("document.created.v2");
        document["isFlagged"] = json!("MARKER-flag");
        document["meter"] = json!({"serial": "MARKER-serial", "MARKER-key": 1});
        document["site"]["name"] = json!(["MARKER-site"]);
        document["old"] = json!({"MARKER-old": "MARKER-old-value"});
        webhooks.push(("document.created.v2", document));
        let webhooks: Vec<(&str, &Value)> = webhooks.iter().map(|(t, v)| (*t, v)).collect();
        let findings = report_of(&webhooks).findings();
        let output = format!("{}{}", render_text(&findings), serde_json::to_string(&findings).unwrap());
        let mut values = Vec::new();
        webhooks.iter().for_each(|(_, body)| strings(body, &mut values));
        // Longer than the catalog's placeholders ("string", "decimal"), which
        // are also kind names.
        for value in values.iter().filter(|v| v.len() > 8 && !NECTAR_EVENT_TYPES.contains(&v.as_str())) {
            assert!(!output.contains(value.as_str()), "{value:?} in the output");
        }
        assert!(!output.contains("MARKER"), "{output}");
        assert!(output.contains("meter") && output.contains("isFlagged") && output.contains("site.name"));
    }
}
