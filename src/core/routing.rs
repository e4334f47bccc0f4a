//! The route table: which destinations get which webhooks.
//!
//! Syntax (the same for the router Lambda's `ROUTES` and local mode): rules
//! `PATTERN[FILTER]...=DEST[,DEST...]` separated by `;` or newlines, tried in
//! order, first match wins. A pattern is an event type in which `*` matches
//! any run of characters (`document.*`, `*.v2`, `*`). A filter
//! `[field=value]` or `[field!=value]` compares a payload field (a dotted path
//! such as `site.id`; `company` means the company's id, whether the payload
//! sends an object or an id) with a value (`true`, `42`, `abc`). A `#` at
//! the start of a line or after whitespace starts a comment to the end of
//! the line (`;` inside it separates nothing); blank lines are ignored.
//! Errors name the line and the rule as written.

use crate::core::events::types::NECTOR_SOURCE;
use serde_json::Value;
use std::cell::OnceCell;
use std::fmt;
use thiserror::Error;

/// Where a routed webhook goes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Destination {
    /// An SQS queue, by URL; a URL ending in `.fifo` is a FIFO queue.
    Sqs(String),
    /// An Amazon EventBridge event bus, by name or ARN.
    EventBridge(String),
    /// A handler registered in Rust under this name.
    Handler(String),
    /// A file that gets one JSON line per webhook.
    File(String),
    /// Standard output, one JSON line per webhook.
    Stdout,
    /// Discarded on purpose, with a log line.
    Drop,
}

impl Destination {
    fn parse(text: &str) -> Result<Self, RuleProblem> {
        let named = |prefix: &str| text.strip_prefix(prefix).filter(|name| !name.is_empty()).map(str::to_owned);
        match text {
            "stdout" => Ok(Self::Stdout),
            "drop" => Ok(Self::Drop),
            _ if text.starts_with("https://") || text.starts_with("http://") => Ok(Self::Sqs(text.to_owned())),
            _ => named("file:")
                .map(Self::File)
                .or_else(|| named("eventbridge:").map(Self::EventBridge))
                .or_else(|| named("handler:").map(Self::Handler))
                .ok_or(RuleProblem::UnknownDestination(text.to_owned())),
        }
    }

    /// Whether this is a FIFO queue, which needs group and deduplication ids.
    pub fn is_fifo_queue(&self) -> bool {
        matches!(self, Self::Sqs(url) if is_fifo_queue_url(url))
    }
}

/// Whether a queue URL names a FIFO queue (SQS requires the suffix): for
/// destinations, the ingest queue and the dead-letter queue alike.
pub fn is_fifo_queue_url(queue_url: &str) -> bool {
    queue_url.ends_with(".fifo")
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sqs(url) => f.write_str(url),
            Self::EventBridge(bus) => write!(f, "eventbridge:{bus}"),
            Self::Handler(name) => write!(f, "handler:{name}"),
            Self::File(path) => write!(f, "file:{path}"),
            Self::Stdout => f.write_str("stdout"),
            Self::Drop => f.write_str("drop"),
        }
    }
}

/// An event-type pattern with `*` wildcards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern(String);

impl Pattern {
    /// Whether `event_type` matches. Nector's events (`nector.…`) match only
    /// a pattern that names them: Nector's header is a fixed token that does
    /// not protect the body, so its events must not reach destinations
    /// through a catch-all such as `*` written for Svix-signed Nectar events.
    pub fn matches(&self, event_type: &str) -> bool {
        let named = !is_nector(event_type) || is_nector(&self.0);
        named && glob_matches(self.0.as_bytes(), event_type.as_bytes())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Whether an event type (or a pattern) is Nector's: `nector.` and more.
fn is_nector(text: &str) -> bool {
    text.strip_prefix(NECTOR_SOURCE).is_some_and(|rest| rest.starts_with('.'))
}

/// Iterative wildcard match: `*` matches any run of bytes, everything else itself.
fn glob_matches(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut backtrack: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            backtrack = Some((p, t));
            p += 1;
        } else if p < pattern.len() && pattern[p] == text[t] {
            p += 1;
            t += 1;
        } else if let Some((star, matched)) = backtrack {
            p = star + 1;
            t = matched + 1;
            backtrack = Some((star, matched + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&b| b == b'*')
}

/// A condition on one payload field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    path: Vec<String>,
    expected: String,
    negated: bool,
}

impl Filter {
    fn parse(text: &str) -> Option<Self> {
        let (field, expected, negated) = match text.split_once("!=") {
            Some((field, expected)) => (field, expected, true),
            None => text.split_once('=').map(|(field, expected)| (field, expected, false))?,
        };
        let path: Vec<String> = field.trim().split('.').map(str::to_owned).collect();
        if path.iter().any(String::is_empty) {
            return None;
        }
        Some(Self { path, expected: expected.trim().to_owned(), negated })
    }

    fn matches(&self, payload: &Value) -> bool {
        let found = self.path.iter().try_fold(payload, |value, key| value.get(key));
        let found = match found {
            Some(Value::Object(company)) if self.path == ["company"] => company.get("id"),
            other => other,
        };
        let equal = found.is_some_and(|value| match value {
            Value::String(text) => *text == self.expected,
            Value::Bool(flag) => self.expected == if *flag { "true" } else { "false" },
            Value::Number(number) => number.to_string() == self.expected,
            Value::Null | Value::Array(_) | Value::Object(_) => false,
        });
        equal != self.negated
    }
}

impl fmt::Display for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = if self.negated { "!=" } else { "=" };
        write!(f, "[{}{op}{}]", self.path.join("."), self.expected)
    }
}

/// One rule of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub pattern: Pattern,
    pub filters: Vec<Filter>,
    pub destinations: Vec<Destination>,
}

impl Route {
    /// The rule's left-hand side as written: pattern and filters.
    pub fn name(&self) -> String {
        let filters: String = self.filters.iter().map(ToString::to_string).collect();
        format!("{}{filters}", self.pattern.as_str())
    }
}

/// The whole rule, `PATTERN[FILTER]...=DEST[,DEST...]`, for messages.
impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let destinations: Vec<String> = self.destinations.iter().map(ToString::to_string).collect();
        write!(f, "{}={}", self.name(), destinations.join(","))
    }
}

/// Why a route table was refused at start-up: where, the rule as written,
/// and what was expected.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("line {line}: rule {rule:?}: {problem}")]
pub struct RouteError {
    pub line: usize,
    pub rule: String,
    pub problem: RuleProblem,
}

/// What is wrong with one rule.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum RuleProblem {
    #[error("no `=` outside brackets; expected PATTERN[field=value]...=DEST[,DEST...]")]
    NoEquals,
    #[error("unbalanced `[` `]`; a filter is [field=value] or [field!=value]")]
    UnbalancedBrackets,
    #[error("expected an event-type pattern before `=` or `[` (`*` for every type)")]
    NoPattern,
    #[error("filter {0:?} is not [field=value] or [field!=value]")]
    BadFilter(String),
    #[error("an empty destination (a stray `,`?)")]
    EmptyDestination,
    #[error(
        "unknown destination {0:?}: expected an SQS queue URL (https://…), eventbridge:BUS, handler:NAME, file:PATH, stdout or drop"
    )]
    UnknownDestination(String),
}

/// Ordered rules; the first whose pattern and filters match wins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteTable {
    routes: Vec<Route>,
}

impl RouteTable {
    /// The table used when none is configured: everything to standard output.
    pub fn everything_to_stdout() -> Self {
        let route =
            Route { pattern: Pattern("*".into()), filters: Vec::new(), destinations: vec![Destination::Stdout] };
        Self { routes: vec![route] }
    }

    /// Parses the route syntax; an empty text gives [`Self::everything_to_stdout`].
    pub fn parse(text: &str) -> Result<Self, RouteError> {
        let mut routes = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let rules = without_comment(line).split(';').map(str::trim).filter(|rule| !rule.is_empty());
            for rule in rules {
                let error = |problem| RouteError { line: index + 1, rule: rule.to_owned(), problem };
                routes.push(parse_rule(rule).map_err(error)?);
            }
        }
        if routes.is_empty() {
            return Ok(Self::everything_to_stdout());
        }
        Ok(Self { routes })
    }

    /// The rule for a payload of `event_type`, if any matches. The body is
    /// parsed only if a rule with filters is reached, and then only once.
    pub fn route(&self, event_type: &str, body: &[u8]) -> Option<&Route> {
        let payload = OnceCell::new();
        self.routes.iter().find(|route| {
            route.pattern.matches(event_type)
                && (route.filters.is_empty() || {
                    let payload = payload.get_or_init(|| serde_json::from_slice(body).unwrap_or(Value::Null));
                    route.filters.iter().all(|filter| filter.matches(payload))
                })
        })
    }

    /// The rules, in order.
    pub fn routes(&self) -> impl Iterator<Item = &Route> {
        self.routes.iter()
    }

    /// Every destination named anywhere in the table.
    pub fn destinations(&self) -> impl Iterator<Item = &Destination> {
        self.routes.iter().flat_map(|route| route.destinations.iter())
    }
}

/// A line up to its comment: a `#` at its start or after whitespace.
fn without_comment(line: &str) -> &str {
    let mut previous = ' ';
    for (index, c) in line.char_indices() {
        if c == '#' && previous.is_whitespace() {
            return &line[..index];
        }
        previous = c;
    }
    line
}

fn parse_rule(rule: &str) -> Result<Route, RuleProblem> {
    let (left, destinations) = split_rule(rule)?;
    let (pattern, filters) = parse_left(left)?;
    let destinations = destinations
        .split(',')
        .map(str::trim)
        .map(|d| if d.is_empty() { Err(RuleProblem::EmptyDestination) } else { Destination::parse(d) })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Route { pattern: Pattern(pattern.to_owned()), filters, destinations })
}

/// Splits at the first `=` outside brackets: `pattern[filters]` and
/// destinations; brackets must balance across the whole rule.
fn split_rule(rule: &str) -> Result<(&str, &str), RuleProblem> {
    let mut depth = 0usize;
    let mut split = None;
    for (index, c) in rule.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => depth = depth.checked_sub(1).ok_or(RuleProblem::UnbalancedBrackets)?,
            '=' if depth == 0 && split.is_none() => split = Some(index),
            _ => {}
        }
    }
    if depth != 0 {
        return Err(RuleProblem::UnbalancedBrackets);
    }
    let index = split.ok_or(RuleProblem::NoEquals)?;
    Ok((rule[..index].trim(), &rule[index + 1..]))
}

fn parse_left(left: &str) -> Result<(&str, Vec<Filter>), RuleProblem> {
    let (pattern, mut rest) = left.split_once('[').map_or((left, ""), |(p, _)| (p, &left[p.len()..]));
    let pattern = pattern.trim();
    if pattern.is_empty() {
        return Err(RuleProblem::NoPattern);
    }
    let mut filters = Vec::new();
    while !rest.is_empty() {
        let bad = || RuleProblem::BadFilter(rest.to_owned());
        let inner = rest.strip_prefix('[').ok_or_else(bad)?;
        let (filter, after) = inner.split_once(']').ok_or_else(bad)?;
        filters.push(Filter::parse(filter).ok_or_else(|| RuleProblem::BadFilter(format!("[{filter}]")))?);
        rest = after.trim_start();
    }
    Ok((pattern, filters))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nector_events_need_a_rule_that_names_them() {
        let table = RouteTable::parse("nector.order.*=drop; *=stdout").unwrap();
        assert_eq!(table.route("nector.order.paid", b"{}").unwrap().destinations, [Destination::Drop]);
        assert!(table.route("nector.unknown", b"{}").is_none(), "not through the catch-all");
        assert!(RouteTable::parse("*.unknown=stdout").unwrap().route("nector.unknown", b"{}").is_none());
        assert!(RouteTable::parse("nector.*=stdout").unwrap().route("nector.unknown", b"{}").is_some());
        assert!(table.route("nectorish.created", b"{}").is_some(), "only the source's own prefix");
        assert!(table.route("document.created.v2", b"{}").is_some());
    }

    #[test]
    fn wildcards_match_any_run_of_characters() {
        let cases = [
            ("document.*", "document.created.v2", true),
            ("document.*", "connection.created", false),
            ("*.v2", "connection.updated.v2", true),
            ("*.v2", "connection.updated", false),
            ("*", "unknown", true),
            ("connection.*.v2", "connection.validated.v2", true),
            ("document.created", "document.created.v2", false),
            ("a*b*c", "aXbYbZc", true),
        ];
        for (pattern, event_type, expected) in cases {
            assert_eq!(Pattern(pattern.into()).matches(event_type), expected, "{pattern} vs {event_type}");
        }
    }

    #[test]
    fn first_matching_rule_wins() {
        let table = RouteTable::parse(
            "document.deleted*=drop; document.*=https://sqs.eu-west-1.amazonaws.com/1/docs\n*=stdout,file:/tmp/all.jsonl",
        )
        .unwrap();
        assert_eq!(table.route("document.deleted.v2", b"{}").unwrap().destinations, vec![Destination::Drop]);
        assert_eq!(
            table.route("document.created", b"{}").unwrap().destinations,
            vec![Destination::Sqs("https://sqs.eu-west-1.amazonaws.com/1/docs".into())]
        );
        assert_eq!(
            table.route("unknown", b"{}").unwrap().destinations,
            vec![Destination::Stdout, Destination::File("/tmp/all.jsonl".into())]
        );
    }

    #[test]
    fn filters_select_on_payload_fields() {
        let table = RouteTable::parse(
            "document.*[isFlagged=true]=handler:review; document.*[company=c1][site.id!=s9]=eventbridge:acme; *=drop",
        )
        .unwrap();
        let route = |body: &str| table.route("document.created.v2", body.as_bytes()).unwrap().name();
        assert_eq!(route(r#"{"isFlagged":true,"company":"c1"}"#), "document.*[isFlagged=true]");
        assert_eq!(
            route(r#"{"isFlagged":false,"company":"c1","site":{"id":"s1"}}"#),
            "document.*[company=c1][site.id!=s9]"
        );
        assert_eq!(route(r#"{"company":{"id":"c1","name":"Demo"}}"#), "document.*[company=c1][site.id!=s9]");
        assert_eq!(route(r#"{"company":"c1","site":{"id":"s9"}}"#), "*");
        assert_eq!(route(r#"{"company":"c2"}"#), "*");
        assert_eq!(route("not json"), "*");
        assert_eq!(
            table.route("document.created.v2", br#"{"isFlagged":true}"#).unwrap().destinations,
            [Destination::Handler("review".into())]
        );
    }

    #[test]
    fn no_match_is_none() {
        let table = RouteTable::parse("document.*=stdout").unwrap();
        assert!(table.route("connection.created", b"{}").is_none());
    }

    #[test]
    fn destinations_of_every_kind_parse() {
        let table = RouteTable::parse(
            "*=https://sqs.us-east-1.amazonaws.com/1/q.fifo,eventbridge:default,handler:mine,file:/tmp/x,stdout,drop",
        )
        .unwrap();
        let all: Vec<String> = table.destinations().map(ToString::to_string).collect();
        assert_eq!(
            all,
            [
                "https://sqs.us-east-1.amazonaws.com/1/q.fifo",
                "eventbridge:default",
                "handler:mine",
                "file:/tmp/x",
                "stdout",
                "drop"
            ]
        );
        assert!(table.destinations().next().unwrap().is_fifo_queue());
    }

    #[test]
    fn empty_text_routes_everything_to_stdout() {
        assert_eq!(RouteTable::parse(" \n# comment\n").unwrap(), RouteTable::everything_to_stdout());
    }

    #[test]
    fn bad_rules_are_explained() {
        let problem = |text: &str| RouteTable::parse(text).unwrap_err().problem;
        assert_eq!(problem("document.*"), RuleProblem::NoEquals);
        assert_eq!(problem("*=kafka:topic"), RuleProblem::UnknownDestination("kafka:topic".into()));
        assert_eq!(problem("*=stdout,"), RuleProblem::EmptyDestination);
        assert_eq!(problem("*[isFlagged]=stdout"), RuleProblem::BadFilter("[isFlagged]".into()));
        assert_eq!(problem("*[a=b=stdout"), RuleProblem::UnbalancedBrackets);
        assert_eq!(problem("*[a=b]=stdout]"), RuleProblem::UnbalancedBrackets);
        assert_eq!(problem("[a=b]=stdout"), RuleProblem::NoPattern);
        assert_eq!(problem("*=eventbridge:"), RuleProblem::UnknownDestination("eventbridge:".into()));
    }

    #[test]
    fn errors_name_the_line_and_the_rule_as_written() {
        let err = RouteTable::parse("# all; of it\n\ndocument.*=stdout; connection.*=kafka:x # later\n").unwrap_err();
        assert_eq!((err.line, err.rule.as_str()), (3, "connection.*=kafka:x"));
        assert!(err.to_string().starts_with("line 3: rule \"connection.*=kafka:x\": unknown destination \"kafka:x\""));
        let err = RouteTable::parse("*=stdout;=drop").unwrap_err();
        assert_eq!((err.line, err.rule.as_str(), err.problem), (1, "=drop", RuleProblem::NoPattern));
    }

    #[test]
    fn a_hash_after_whitespace_starts_a_comment_wherever_it_is() {
        let table = RouteTable::parse("# routes; with a semicolon\n*=stdout # everything; really\n").unwrap();
        assert_eq!(table, RouteTable::everything_to_stdout());
        let table = RouteTable::parse("*[ref=a#1]=file:/tmp/a#b.jsonl").unwrap();
        assert_eq!(table.destinations().next(), Some(&Destination::File("/tmp/a#b.jsonl".into())));
    }
}
