//! Object-metadata validation with the real API server's rules and messages: object names per
//! kind (RFC 1123 subdomain or label, RFC 1035 label), `generateName`, label keys and values.

use serde_json::Value;

use crate::catalog::NameRule;
use crate::object;
use crate::status::FieldError;

const DNS1123_LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric \
characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name', or \
'123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const DNS1123_SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case \
alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. \
'example.com', regex used for validation is \
'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const DNS1035_LABEL_MSG: &str = "a DNS-1035 label must consist of lower case alphanumeric characters \
or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. \
'my-name', or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')";
const LABEL_VALUE_MSG: &str = "a valid label must be an empty string or consist of alphanumeric \
characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. \
'MyValue', or 'my_value', or '12345', regex used for validation is \
'(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";
const QUALIFIED_NAME_MSG: &str = "name part must consist of alphanumeric characters, '-', '_' or \
'.', and must start and end with an alphanumeric character (e.g. 'MyName', or 'my.name', or \
'123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";

fn is_lower_alnum(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?`
fn is_dns1123_label(s: &str) -> bool {
    !s.is_empty()
        && s.chars().all(|c| is_lower_alnum(c) || c == '-')
        && s.starts_with(is_lower_alnum)
        && s.ends_with(is_lower_alnum)
}

/// The problems of `name` under `rule`, as the real validators word them.
fn name_problems(name: &str, rule: NameRule) -> Vec<String> {
    let mut problems = Vec::new();
    let (max, ok, msg) = match rule {
        NameRule::Dns1123Subdomain => (
            253,
            name.split('.').all(is_dns1123_label),
            DNS1123_SUBDOMAIN_MSG,
        ),
        NameRule::Dns1123Label => (63, is_dns1123_label(name), DNS1123_LABEL_MSG),
        NameRule::Dns1035Label => {
            let ok = is_dns1123_label(name) && name.starts_with(|c: char| c.is_ascii_lowercase());
            (63, ok, DNS1035_LABEL_MSG)
        }
    };
    if name.len() > max {
        problems.push(format!("must be no more than {max} characters"));
    }
    if !ok {
        problems.push(msg.to_string());
    }
    problems
}

/// Validates `metadata.name` / `metadata.generateName` of an object about to be stored.
/// `generated` tells that the name was made from `generateName` (its prefix is then what is checked).
pub(crate) fn validate_name(object: &Value, rule: NameRule) -> Vec<FieldError> {
    let name = object::name(object);
    let generate_name = object::meta_str(object, "generateName");
    let mut errors = Vec::new();
    if name.is_empty() {
        errors.push(FieldError::required(
            "metadata.name",
            "name or generateName is required",
        ));
        return errors;
    }
    for problem in name_problems(name, rule) {
        errors.push(FieldError::invalid("metadata.name", name, problem));
    }
    if !generate_name.is_empty() {
        // The prefix may end in '-': check it as the real server does, with the dash masked.
        let masked = match generate_name.strip_suffix('-') {
            Some(stem) => format!("{stem}a"),
            None => generate_name.to_string(),
        };
        for problem in name_problems(&masked, rule) {
            errors.push(FieldError::invalid(
                "metadata.generateName",
                generate_name,
                problem,
            ));
        }
    }
    errors
}

/// `(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?`, at most 63 characters.
fn label_value_problems(value: &str) -> Vec<String> {
    let mut problems = Vec::new();
    if value.len() > 63 {
        problems.push("must be no more than 63 characters".to_string());
    }
    let alnum = |c: char| c.is_ascii_alphanumeric();
    let ok = value.is_empty()
        || (value
            .chars()
            .all(|c| alnum(c) || matches!(c, '-' | '_' | '.'))
            && value.starts_with(alnum)
            && value.ends_with(alnum));
    if !ok {
        problems.push(LABEL_VALUE_MSG.to_string());
    }
    problems
}

/// A qualified name (`[prefix/]name`) as label and annotation keys use.
fn qualified_name_problems(key: &str) -> Vec<String> {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    let mut problems = Vec::new();
    if let Some(prefix) = prefix {
        if prefix.is_empty() {
            problems.push("prefix part must be non-empty".to_string());
        } else {
            for problem in name_problems(prefix, NameRule::Dns1123Subdomain) {
                problems.push(format!("prefix part {problem}"));
            }
        }
    }
    if name.is_empty() {
        problems.push("name part must be non-empty".to_string());
    } else {
        if name.len() > 63 {
            problems.push("name part must be no more than 63 characters".to_string());
        }
        let alnum = |c: char| c.is_ascii_alphanumeric();
        let ok = name
            .chars()
            .all(|c| alnum(c) || matches!(c, '-' | '_' | '.'))
            && name.starts_with(alnum)
            && name.ends_with(alnum);
        if !ok {
            problems.push(QUALIFIED_NAME_MSG.to_string());
        }
    }
    problems
}

/// Validates `metadata.labels` keys and values and `metadata.annotations` keys.
pub(crate) fn validate_labels_and_annotations(object: &Value) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let metadata = object.get("metadata");
    if let Some(labels) = metadata
        .and_then(|m| m.get("labels"))
        .and_then(Value::as_object)
    {
        for (key, value) in labels {
            for problem in qualified_name_problems(key) {
                errors.push(FieldError::invalid("metadata.labels", key, problem));
            }
            match value.as_str() {
                Some(text) => {
                    for problem in label_value_problems(text) {
                        errors.push(FieldError::invalid("metadata.labels", text, problem));
                    }
                }
                None => errors.push(FieldError::invalid(
                    "metadata.labels",
                    &value.to_string(),
                    "must be a string",
                )),
            }
        }
    }
    if let Some(annotations) = metadata
        .and_then(|m| m.get("annotations"))
        .and_then(Value::as_object)
    {
        for key in annotations.keys() {
            for problem in qualified_name_problems(&key.to_lowercase()) {
                errors.push(FieldError::invalid("metadata.annotations", key, problem));
            }
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_follow_the_kind_rule() {
        assert!(name_problems("a.b-c", NameRule::Dns1123Subdomain).is_empty());
        assert!(!name_problems("A", NameRule::Dns1123Subdomain).is_empty());
        assert!(!name_problems("a.b", NameRule::Dns1123Label).is_empty());
        assert!(!name_problems("1abc", NameRule::Dns1035Label).is_empty());
        assert!(name_problems("1abc", NameRule::Dns1123Label).is_empty());
        assert!(!name_problems(&"a".repeat(64), NameRule::Dns1123Label).is_empty());
    }

    #[test]
    fn labels_are_checked() {
        let ok = json!({"metadata": {"labels": {"app.kubernetes.io/name": "x_y.z", "a": ""}}});
        assert!(validate_labels_and_annotations(&ok).is_empty());
        let bad = json!({"metadata": {"labels": {"a b": "-x"}}});
        assert_eq!(validate_labels_and_annotations(&bad).len(), 2);
    }
}
