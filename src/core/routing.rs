//! The route table: which destinations get which event types.
//!
//! Syntax (the same for the router Lambda's `ROUTES` and local mode):
//! rules `PATTERN=DEST[,DEST...]` separated by `;` or newlines, tried in
//! order, first match wins. A pattern is an event type in which `*` matches
//! any run of characters (`document.*`, `*.v2`, `*`). Blank lines and lines
//! starting with `#` are ignored.

use std::fmt;
use thiserror::Error;

/// Where a routed webhook goes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Destination {
    /// An SQS queue, by URL.
    Sqs(String),
    /// A file that gets one JSON line per webhook.
    File(String),
    /// Standard output, one JSON line per webhook.
    Stdout,
    /// Discarded on purpose, with a log line.
    Drop,
}

impl Destination {
    fn parse(text: &str) -> Result<Self, RouteError> {
        match text {
            "stdout" => Ok(Self::Stdout),
            "drop" => Ok(Self::Drop),
            _ if text.starts_with("https://") || text.starts_with("http://") => Ok(Self::Sqs(text.to_owned())),
            _ => match text.strip_prefix("file:") {
                Some(path) if !path.is_empty() => Ok(Self::File(path.to_owned())),
                _ => Err(RouteError::UnknownDestination(text.to_owned())),
            },
        }
    }
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sqs(url) => f.write_str(url),
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
    pub fn matches(&self, event_type: &str) -> bool {
        glob_matches(self.0.as_bytes(), event_type.as_bytes())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
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

/// One rule of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub pattern: Pattern,
    pub destinations: Vec<Destination>,
}

/// Why a route table was refused at start-up.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum RouteError {
    #[error("rule {rule}: expected PATTERN=DEST[,DEST...], got {text:?}")]
    MalformedRule { rule: usize, text: String },
    #[error("unknown destination {0:?} (expected an SQS queue URL, file:PATH, stdout or drop)")]
    UnknownDestination(String),
}

/// Ordered rules; the first whose pattern matches wins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteTable {
    routes: Vec<Route>,
}

impl RouteTable {
    /// The table used when none is configured: everything to standard output.
    pub fn everything_to_stdout() -> Self {
        Self { routes: vec![Route { pattern: Pattern("*".into()), destinations: vec![Destination::Stdout] }] }
    }

    /// Parses the route syntax; an empty text gives [`Self::everything_to_stdout`].
    pub fn parse(text: &str) -> Result<Self, RouteError> {
        let rules = text.split(['\n', ';']).map(str::trim).filter(|rule| !rule.is_empty() && !rule.starts_with('#'));
        let mut routes = Vec::new();
        for (index, rule) in rules.enumerate() {
            let malformed = || RouteError::MalformedRule { rule: index + 1, text: rule.to_owned() };
            let (pattern, destinations) = rule.split_once('=').ok_or_else(malformed)?;
            let pattern = pattern.trim();
            if pattern.is_empty() {
                return Err(malformed());
            }
            let destinations = destinations
                .split(',')
                .map(str::trim)
                .map(|d| if d.is_empty() { Err(malformed()) } else { Destination::parse(d) })
                .collect::<Result<Vec<_>, _>>()?;
            routes.push(Route { pattern: Pattern(pattern.to_owned()), destinations });
        }
        if routes.is_empty() {
            return Ok(Self::everything_to_stdout());
        }
        Ok(Self { routes })
    }

    /// The rule for an event type, if any matches.
    pub fn route(&self, event_type: &str) -> Option<&Route> {
        self.routes.iter().find(|route| route.pattern.matches(event_type))
    }

    /// Every destination named anywhere in the table.
    pub fn destinations(&self) -> impl Iterator<Item = &Destination> {
        self.routes.iter().flat_map(|route| route.destinations.iter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(table.route("document.deleted.v2").unwrap().destinations, vec![Destination::Drop]);
        assert_eq!(
            table.route("document.created").unwrap().destinations,
            vec![Destination::Sqs("https://sqs.eu-west-1.amazonaws.com/1/docs".into())]
        );
        assert_eq!(
            table.route("unknown").unwrap().destinations,
            vec![Destination::Stdout, Destination::File("/tmp/all.jsonl".into())]
        );
    }

    #[test]
    fn no_match_is_none() {
        let table = RouteTable::parse("document.*=stdout").unwrap();
        assert!(table.route("connection.created").is_none());
    }

    #[test]
    fn empty_text_routes_everything_to_stdout() {
        assert_eq!(RouteTable::parse(" \n# comment\n").unwrap(), RouteTable::everything_to_stdout());
    }

    #[test]
    fn bad_rules_are_explained() {
        assert!(matches!(RouteTable::parse("document.*"), Err(RouteError::MalformedRule { rule: 1, .. })));
        assert!(matches!(RouteTable::parse("*=stdout;=drop"), Err(RouteError::MalformedRule { rule: 2, .. })));
        assert_eq!(RouteTable::parse("*=kafka:topic"), Err(RouteError::UnknownDestination("kafka:topic".into())));
        assert!(matches!(RouteTable::parse("*=stdout,"), Err(RouteError::MalformedRule { .. })));
    }
}
