//! Query parameters: parsing, and the checks of `ListOptions` the real server makes before a
//! list or watch (`resourceVersionMatch`, `sendInitialEvents`, `continue` combinations).

use std::collections::HashMap;

use crate::catalog::Resource;
use crate::selector::{FieldSelector, LabelSelector};
use crate::status::{FieldError, Status};

/// The query string as a map (the last of repeated keys wins).
#[derive(Debug, Default)]
pub(crate) struct Query(HashMap<String, String>);

impl Query {
    pub fn parse(query: &str) -> Self {
        Query(
            form_urlencoded::parse(query.as_bytes())
                .into_owned()
                .collect(),
        )
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// A boolean parameter with Go's `strconv.ParseBool` spellings.
    pub fn bool(&self, key: &str) -> Result<Option<bool>, Status> {
        match self.get(key) {
            None => Ok(None),
            Some("1" | "t" | "T" | "true" | "TRUE" | "True") => Ok(Some(true)),
            Some("0" | "f" | "F" | "false" | "FALSE" | "False" | "") => Ok(Some(false)),
            Some(other) => Err(Status::bad_request(format!(
                "invalid boolean value {other:?} for query parameter {key:?}"
            ))),
        }
    }

    /// Whether `dryRun=All` was asked for (any other value is refused, as the real server does).
    pub fn dry_run(&self, options_kind: &str) -> Result<bool, Status> {
        dry_run_values(self.get("dryRun").into_iter(), options_kind)
    }
}

/// Checks `dryRun` values (`All` is the only one) and tells whether one was given.
pub(crate) fn dry_run_values<'a>(
    values: impl Iterator<Item = &'a str>,
    options_kind: &str,
) -> Result<bool, Status> {
    let mut dry_run = false;
    for value in values {
        if value != "All" {
            let error = FieldError::not_supported("dryRun", value, &["All"]);
            return Err(Status::invalid_kind(
                options_kind,
                "meta.k8s.io",
                "",
                &[error],
            ));
        }
        dry_run = true;
    }
    Ok(dry_run)
}

/// The options of a list or watch request.
#[derive(Debug, Default)]
pub(crate) struct ListOptions {
    pub watch: bool,
    pub labels: LabelSelector,
    pub fields: FieldSelector,
    pub resource_version: Option<String>,
    pub resource_version_match: Option<String>,
    pub limit: Option<usize>,
    pub continue_token: Option<String>,
    pub send_initial_events: Option<bool>,
    pub allow_watch_bookmarks: bool,
    pub timeout_seconds: Option<u64>,
}

fn non_empty(value: Option<&str>) -> Option<String> {
    value.filter(|v| !v.is_empty()).map(str::to_string)
}

impl ListOptions {
    /// Parses and checks the options of a list or watch of `resource`.
    pub fn parse(query: &Query, resource: &Resource) -> Result<Self, Status> {
        let labels = LabelSelector::parse(query.get("labelSelector").unwrap_or(""))
            .map_err(Status::bad_request)?;
        let fields = FieldSelector::parse(query.get("fieldSelector").unwrap_or(""), resource)
            .map_err(Status::bad_request)?;
        let limit = match query.get("limit") {
            None | Some("") => None,
            Some(text) => match text.parse::<i64>() {
                Ok(n) if n > 0 => Some(n as usize),
                Ok(_) => None,
                Err(_) => {
                    return Err(Status::bad_request(format!(
                        "invalid value {text:?} for limit"
                    )));
                }
            },
        };
        let timeout_seconds = match query.get("timeoutSeconds") {
            None | Some("") => None,
            Some(text) => Some(text.parse::<u64>().map_err(|_| {
                Status::bad_request(format!("invalid value {text:?} for timeoutSeconds"))
            })?),
        };
        let options = ListOptions {
            watch: query.bool("watch")?.unwrap_or(false),
            labels,
            fields,
            resource_version: non_empty(query.get("resourceVersion")),
            resource_version_match: non_empty(query.get("resourceVersionMatch")),
            limit,
            continue_token: non_empty(query.get("continue")),
            send_initial_events: query.bool("sendInitialEvents")?,
            allow_watch_bookmarks: query.bool("allowWatchBookmarks")?.unwrap_or(false),
            timeout_seconds,
        };
        let errors = if options.watch {
            options.watch_errors()
        } else {
            options.list_errors()
        };
        if !errors.is_empty() {
            return Err(Status::invalid_kind(
                "ListOptions",
                "meta.k8s.io",
                "",
                &errors,
            ));
        }
        if options.continue_token.is_some() && options.resource_version.is_some() && !options.watch
        {
            return Err(Status::bad_request(
                "specifying resource version is not allowed when using continue",
            ));
        }
        Ok(options)
    }

    /// `ValidateListOptions` for a list.
    fn list_errors(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        if let Some(matching) = &self.resource_version_match {
            if self.resource_version.is_none() {
                let detail = "resourceVersionMatch is forbidden unless resourceVersion is provided";
                errors.push(FieldError::forbidden("resourceVersionMatch", detail));
            }
            if self.continue_token.is_some() {
                errors.push(FieldError::forbidden(
                    "resourceVersionMatch",
                    "resourceVersionMatch is forbidden when continue is provided",
                ));
            }
            if matching != "Exact" && matching != "NotOlderThan" {
                errors.push(FieldError::not_supported(
                    "resourceVersionMatch",
                    matching,
                    &["Exact", "NotOlderThan", ""],
                ));
            }
            if matching == "Exact" && self.resource_version.as_deref() == Some("0") {
                let detail =
                    "resourceVersionMatch \"exact\" is forbidden for resourceVersion \"0\"";
                errors.push(FieldError::forbidden("resourceVersionMatch", detail));
            }
        }
        if self.send_initial_events.is_some() {
            errors.push(FieldError::forbidden(
                "sendInitialEvents",
                "sendInitialEvents is forbidden for list",
            ));
        }
        errors
    }

    /// `ValidateListOptions` for a watch.
    fn watch_errors(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        if self.send_initial_events.is_some()
            && self.resource_version_match.as_deref() != Some("NotOlderThan")
        {
            let detail = "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan";
            errors.push(FieldError::forbidden("resourceVersionMatch", detail));
        }
        if let Some(matching) = &self.resource_version_match {
            if self.send_initial_events.is_none() {
                let detail = "resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided";
                errors.push(FieldError::forbidden("resourceVersionMatch", detail));
            }
            if matching != "NotOlderThan" {
                errors.push(FieldError::not_supported(
                    "resourceVersionMatch",
                    matching,
                    &["NotOlderThan"],
                ));
            }
            if self.continue_token.is_some() {
                errors.push(FieldError::forbidden(
                    "resourceVersionMatch",
                    "resourceVersionMatch is forbidden when continue is provided",
                ));
            }
        }
        errors
    }
}

/// Parses a resourceVersion parameter as the real server does (a decimal revision).
pub(crate) fn parse_resource_version(text: &str) -> Result<u64, Status> {
    text.parse::<u64>()
        .map_err(|_| Status::bad_request(format!("invalid resource version {text:?}")))
}
