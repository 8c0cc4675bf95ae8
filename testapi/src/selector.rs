//! Label selectors (`=`, `==`, `!=`, `in`, `notin`, `key`, `!key`, `<`, `>`, comma-AND) and field
//! selectors (`=`, `==`, `!=` on the fields each kind supports), parsed and matched as the real
//! API server does.

use serde_json::Value;

use crate::catalog::{Resource, resources};
use crate::object;

/// One term of a label selector.
#[derive(Debug, Clone, PartialEq)]
enum LabelRequirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
    GreaterThan(String, i64),
    LessThan(String, i64),
}

impl LabelRequirement {
    fn matches(&self, object: &Value) -> bool {
        let get = |key: &str| object::label(object, key);
        match self {
            Self::Equals(k, v) => get(k) == Some(v),
            Self::NotEquals(k, v) => get(k) != Some(v),
            Self::In(k, vs) => get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            Self::NotIn(k, vs) => get(k).is_none_or(|x| vs.iter().all(|v| v != x)),
            Self::Exists(k) => get(k).is_some(),
            Self::DoesNotExist(k) => get(k).is_none(),
            Self::GreaterThan(k, n) => get(k)
                .and_then(|x| x.parse::<i64>().ok())
                .is_some_and(|x| x > *n),
            Self::LessThan(k, n) => get(k)
                .and_then(|x| x.parse::<i64>().ok())
                .is_some_and(|x| x < *n),
        }
    }
}

/// A parsed label selector; the empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct LabelSelector(Vec<LabelRequirement>);

/// Lexer tokens of the label selector grammar.
#[derive(Debug, Clone, PartialEq)]
enum Token {
    Word(String),
    Equals,
    DoubleEquals,
    NotEquals,
    Bang,
    Greater,
    Less,
    Open,
    Close,
    Comma,
}

fn tokenize(input: &str) -> Vec<Token> {
    let mut tokens = Vec::new();
    let mut chars = input.chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            c if c.is_whitespace() => {
                chars.next();
            }
            '=' => {
                chars.next();
                if chars.peek() == Some(&'=') {
                    chars.next();
                    tokens.push(Token::DoubleEquals);
                } else {
                    tokens.push(Token::Equals);
                }
            }
            '!' => {
                chars.next();
                if chars.peek() == Some(&'=') {
                    chars.next();
                    tokens.push(Token::NotEquals);
                } else {
                    tokens.push(Token::Bang);
                }
            }
            '>' | '<' | '(' | ')' | ',' => {
                chars.next();
                tokens.push(match c {
                    '>' => Token::Greater,
                    '<' => Token::Less,
                    '(' => Token::Open,
                    ')' => Token::Close,
                    _ => Token::Comma,
                });
            }
            _ => {
                let mut word = String::new();
                while let Some(&c) = chars.peek() {
                    if c.is_whitespace() || "=!<>(),".contains(c) {
                        break;
                    }
                    word.push(c);
                    chars.next();
                }
                tokens.push(Token::Word(word));
            }
        }
    }
    tokens
}

/// Recursive-descent parser over the tokens.
struct Parser {
    tokens: Vec<Token>,
    position: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.position)
    }

    fn next(&mut self) -> Option<Token> {
        let token = self.tokens.get(self.position).cloned();
        self.position += 1;
        token
    }

    fn key(&mut self) -> Result<String, String> {
        match self.next() {
            Some(Token::Word(word)) => Ok(word),
            other => Err(format!(
                "found '{}', expected: identifier",
                describe(other.as_ref())
            )),
        }
    }

    /// A value after `=`, `==` or `!=`; may be empty.
    fn optional_value(&mut self) -> String {
        match self.peek() {
            Some(Token::Word(_)) => match self.next() {
                Some(Token::Word(word)) => word,
                _ => unreachable!(),
            },
            _ => String::new(),
        }
    }

    fn value_set(&mut self) -> Result<Vec<String>, String> {
        match self.next() {
            Some(Token::Open) => {}
            other => {
                return Err(format!(
                    "found '{}', expected: '('",
                    describe(other.as_ref())
                ));
            }
        }
        let mut values = Vec::new();
        loop {
            match self.next() {
                Some(Token::Word(word)) => values.push(word),
                Some(Token::Close) if values.is_empty() => {
                    return Err("for 'in', 'notin' operators, values set can't be empty".into());
                }
                other => {
                    return Err(format!(
                        "found '{}', expected: identifier",
                        describe(other.as_ref())
                    ));
                }
            }
            match self.next() {
                Some(Token::Comma) => continue,
                Some(Token::Close) => return Ok(values),
                other => {
                    return Err(format!(
                        "found '{}', expected: ',' or ')'",
                        describe(other.as_ref())
                    ));
                }
            }
        }
    }

    fn requirement(&mut self) -> Result<LabelRequirement, String> {
        if self.peek() == Some(&Token::Bang) {
            self.next();
            return Ok(LabelRequirement::DoesNotExist(self.key()?));
        }
        let key = self.key()?;
        let requirement = match self.peek() {
            None | Some(Token::Comma) => LabelRequirement::Exists(key),
            Some(Token::Equals | Token::DoubleEquals) => {
                self.next();
                LabelRequirement::Equals(key, self.optional_value())
            }
            Some(Token::NotEquals) => {
                self.next();
                LabelRequirement::NotEquals(key, self.optional_value())
            }
            Some(Token::Greater | Token::Less) => {
                let greater = self.next() == Some(Token::Greater);
                let bound = self.key()?;
                let n = bound.parse::<i64>().map_err(|_| {
                    format!("for 'Gt', 'Lt' operators, the value must be an integer: {bound}")
                })?;
                if greater {
                    LabelRequirement::GreaterThan(key, n)
                } else {
                    LabelRequirement::LessThan(key, n)
                }
            }
            Some(Token::Word(op)) if op == "in" || op == "notin" => {
                let is_in = op == "in";
                self.next();
                let values = self.value_set()?;
                if is_in {
                    LabelRequirement::In(key, values)
                } else {
                    LabelRequirement::NotIn(key, values)
                }
            }
            other => {
                return Err(format!(
                    "found '{}', expected: in, notin, =, ==, !=, gt, lt",
                    describe(other)
                ));
            }
        };
        Ok(requirement)
    }
}

fn describe(token: Option<&Token>) -> String {
    match token {
        None => "".into(),
        Some(Token::Word(w)) => w.clone(),
        Some(Token::Equals) => "=".into(),
        Some(Token::DoubleEquals) => "==".into(),
        Some(Token::NotEquals) => "!=".into(),
        Some(Token::Bang) => "!".into(),
        Some(Token::Greater) => ">".into(),
        Some(Token::Less) => "<".into(),
        Some(Token::Open) => "(".into(),
        Some(Token::Close) => ")".into(),
        Some(Token::Comma) => ",".into(),
    }
}

impl LabelSelector {
    /// Parses a `labelSelector` query value; the error is the message of the 400 answer.
    pub(crate) fn parse(input: &str) -> Result<Self, String> {
        let mut parser = Parser {
            tokens: tokenize(input),
            position: 0,
        };
        let mut requirements = Vec::new();
        if parser.peek().is_none() {
            return Ok(LabelSelector(requirements));
        }
        loop {
            let requirement = parser
                .requirement()
                .map_err(|e| format!("unable to parse requirement: {e}"))?;
            requirements.push(requirement);
            match parser.next() {
                None => return Ok(LabelSelector(requirements)),
                Some(Token::Comma) => continue,
                other => {
                    return Err(format!(
                        "found '{}', expected: ',' or 'end of string'",
                        describe(other.as_ref())
                    ));
                }
            }
        }
    }

    /// Whether the labels of `object` satisfy every requirement.
    pub(crate) fn matches(&self, object: &Value) -> bool {
        self.0.iter().all(|r| r.matches(object))
    }

    /// Whether this selector matches everything.
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// One term of a field selector.
#[derive(Debug, Clone, PartialEq)]
struct FieldRequirement {
    field: String,
    value: String,
    negated: bool,
}

/// A parsed field selector; the empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct FieldSelector(Vec<FieldRequirement>);

/// Splits on `separator` where not escaped by a backslash; keeps escapes in the parts.
fn split_unescaped(input: &str, separator: char) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut escaped = false;
    for c in input.chars() {
        if escaped {
            parts.last_mut().expect("never empty").push(c);
            escaped = false;
        } else if c == '\\' {
            parts.last_mut().expect("never empty").push(c);
            escaped = true;
        } else if c == separator {
            parts.push(String::new());
        } else {
            parts.last_mut().expect("never empty").push(c);
        }
    }
    parts
}

fn unescape(value: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some(e @ ('\\' | ',' | '=')) => out.push(e),
                Some(e) => {
                    return Err(format!(
                        "invalid field selector: invalid escape sequence: \\{e}"
                    ));
                }
                None => return Err("invalid field selector: unterminated escape sequence".into()),
            }
        } else if c == ',' || c == '=' {
            return Err(format!(
                "invalid field selector: unescaped {c} in value {value}"
            ));
        } else {
            out.push(c);
        }
    }
    Ok(out)
}

/// The field labels of events.k8s.io/v1 Events and the core Event labels they select on (the
/// real server's `AddFieldLabelConversionsForEvent`): selectors match the stored core shape.
const EVENTS_V1_FIELDS: &[(&str, &str)] = &[
    ("regarding.kind", "involvedObject.kind"),
    ("regarding.namespace", "involvedObject.namespace"),
    ("regarding.name", "involvedObject.name"),
    ("regarding.uid", "involvedObject.uid"),
    ("regarding.apiVersion", "involvedObject.apiVersion"),
    (
        "regarding.resourceVersion",
        "involvedObject.resourceVersion",
    ),
    ("regarding.fieldPath", "involvedObject.fieldPath"),
    ("reportingController", "reportingComponent"),
    ("reason", "reason"),
    ("source", "source"),
    ("type", "type"),
];

/// The stored-shape field a selector on `field` of `resource` reads, if the kind supports it.
fn field_label(resource: &Resource, field: &str) -> Option<String> {
    if field == "metadata.name" || field == "metadata.namespace" {
        return Some(field.to_string());
    }
    if *resource == resources::EVENTS_V1 {
        return EVENTS_V1_FIELDS
            .iter()
            .find(|(label, _)| *label == field)
            .map(|(_, stored)| stored.to_string());
    }
    extra_fields(resource)
        .contains(&field)
        .then(|| field.to_string())
}

/// Fields beyond `metadata.name` and `metadata.namespace` that a kind supports in field selectors.
fn extra_fields(resource: &Resource) -> &'static [&'static str] {
    if *resource == resources::EVENTS {
        &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        ]
    } else if *resource == resources::NAMESPACES {
        &["status.phase"]
    } else {
        &[]
    }
}

/// The value a supported field has on `object`, as a string (missing fields are empty).
fn field_value(object: &Value, field: &str) -> String {
    let path: &[&str] = match field {
        "metadata.name" => &["metadata", "name"],
        "metadata.namespace" => &["metadata", "namespace"],
        "source" => &["source", "component"],
        other => return lookup_dotted(object, other),
    };
    lookup_path(object, path)
}

fn lookup_dotted(object: &Value, field: &str) -> String {
    let path: Vec<&str> = field.split('.').collect();
    lookup_path(object, &path)
}

fn lookup_path(object: &Value, path: &[&str]) -> String {
    let mut current = object;
    for step in path {
        match current.get(step) {
            Some(next) => current = next,
            None => return String::new(),
        }
    }
    match current {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

impl FieldSelector {
    /// Parses a `fieldSelector` for `resource`; the error is the message of the 400 answer
    /// (`field label not supported: ...` for a field the kind does not index).
    pub(crate) fn parse(input: &str, resource: &Resource) -> Result<Self, String> {
        let mut requirements = Vec::new();
        if input.trim().is_empty() {
            return Ok(FieldSelector(requirements));
        }
        for term in split_unescaped(input, ',') {
            let (field, negated, raw_value) = if let Some((f, v)) = term.split_once("!=") {
                (f, true, v)
            } else if let Some((f, v)) = term.split_once("==") {
                (f, false, v)
            } else if let Some((f, v)) = term.split_once('=') {
                (f, false, v)
            } else {
                return Err(format!(
                    "invalid selector: '{input}'; can't understand '{term}'"
                ));
            };
            let field = field.trim();
            let Some(field) = field_label(resource, field) else {
                return Err(format!("field label not supported: {field}"));
            };
            requirements.push(FieldRequirement {
                field,
                value: unescape(raw_value)?,
                negated,
            });
        }
        Ok(FieldSelector(requirements))
    }

    /// Whether `object` satisfies every term.
    pub(crate) fn matches(&self, object: &Value) -> bool {
        self.0
            .iter()
            .all(|r| (field_value(object, &r.field) == r.value) != r.negated)
    }

    /// Whether this selector matches everything.
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(labels: Value) -> Value {
        json!({"metadata": {"name": "a", "namespace": "ns", "labels": labels}})
    }

    #[test]
    fn label_selector_operators() {
        let o = object(json!({"app": "web", "tier": "front", "n": "5"}));
        let check = |s: &str| LabelSelector::parse(s).unwrap().matches(&o);
        assert!(check(""));
        assert!(check("app=web"));
        assert!(check("app==web,tier"));
        assert!(!check("app!=web"));
        assert!(check("missing!=x"));
        assert!(check("app in (api, web)"));
        assert!(!check("app notin (web)"));
        assert!(check("missing notin (web)"));
        assert!(check("!missing"));
        assert!(!check("!app"));
        assert!(check("n>4,n<6"));
        assert!(!check("app=web,tier=back"));
    }

    #[test]
    fn label_selector_errors() {
        assert!(LabelSelector::parse("app in web").is_err());
        assert!(LabelSelector::parse("app=web extra").is_err());
        assert!(LabelSelector::parse("app in ()").is_err());
        assert!(LabelSelector::parse("=x").is_err());
    }

    #[test]
    fn field_selector_fields() {
        let o = object(json!({}));
        let parse = |s: &str| FieldSelector::parse(s, &resources::CONFIGMAPS);
        assert!(parse("metadata.name=a").unwrap().matches(&o));
        assert!(
            parse("metadata.name==a,metadata.namespace!=other")
                .unwrap()
                .matches(&o)
        );
        assert!(!parse("metadata.name!=a").unwrap().matches(&o));
        assert_eq!(
            parse("spec.x=1").unwrap_err(),
            "field label not supported: spec.x"
        );
        let event = json!({"involvedObject": {"kind": "Pod"}, "type": "Warning"});
        let selector =
            FieldSelector::parse("involvedObject.kind=Pod,type=Warning", &resources::EVENTS)
                .unwrap();
        assert!(selector.matches(&event));
        // events.k8s.io labels select on the stored core shape
        let selector = FieldSelector::parse(
            "regarding.kind=Pod,type=Warning,reportingController=c",
            &resources::EVENTS_V1,
        )
        .unwrap();
        assert!(!selector.matches(&event));
        let event = json!({"involvedObject": {"kind": "Pod"}, "type": "Warning", "reportingComponent": "c"});
        assert!(selector.matches(&event));
        assert_eq!(
            FieldSelector::parse("involvedObject.kind=Pod", &resources::EVENTS_V1).unwrap_err(),
            "field label not supported: involvedObject.kind"
        );
    }
}
