//! `metav1.Status`: the body of every error answer, and the constructors for the errors the real
//! API server returns, with its reasons, codes and message wording.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::catalog::Resource;

/// An API error (or a `Success` answer to a delete), serialized as a `metav1.Status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// HTTP status code, e.g. 404.
    pub code: u16,
    /// Machine-readable reason, e.g. `NotFound`, `Conflict`, `Expired`.
    pub reason: String,
    /// Human-readable message, worded as the real API server words it.
    pub message: String,
    /// `details`: the object the error is about and per-field causes, when the real server sets them.
    pub details: Option<Box<StatusDetails>>,
}

/// `metav1.StatusDetails`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusDetails {
    /// Name of the object the error is about.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// API group of that object.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub group: String,
    /// Kind (or, as the real server does for most errors, the plural resource name).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kind: String,
    /// UID of the object (on a delete's `Success`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uid: String,
    /// One entry per invalid field.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub causes: Vec<StatusCause>,
    /// Seconds a client should wait before retrying.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_seconds: Option<u32>,
}

/// `metav1.StatusCause`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusCause {
    /// e.g. `FieldValueInvalid`, `FieldValueRequired`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// e.g. `Invalid value: "Bad": a lowercase RFC 1123 subdomain must ...`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// JSON path of the field, e.g. `metadata.name`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub field: String,
}

/// The wire form of a `metav1.Status`.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StatusWire {
    kind: String,
    api_version: String,
    #[serde(default)]
    metadata: Value,
    #[serde(default)]
    status: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    message: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    details: Option<StatusDetails>,
    #[serde(default)]
    code: u16,
}

impl Serialize for Status {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        StatusWire {
            kind: "Status".into(),
            api_version: "v1".into(),
            metadata: Value::Object(Default::default()),
            status: if self.code < 400 {
                "Success"
            } else {
                "Failure"
            }
            .into(),
            message: self.message.clone(),
            reason: self.reason.clone(),
            details: self.details.as_deref().cloned(),
            code: self.code,
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Status {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let wire = StatusWire::deserialize(deserializer)?;
        Ok(Status {
            code: wire.code,
            reason: wire.reason,
            message: wire.message,
            details: wire.details.map(Box::new),
        })
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.code, self.reason, self.message)
    }
}

impl std::error::Error for Status {}

/// One invalid field, as `field.Error` in apimachinery.
#[derive(Debug, Clone)]
pub(crate) struct FieldError {
    pub field: String,
    pub kind: FieldErrorKind,
}

/// The field error types used here.
#[derive(Debug, Clone)]
pub(crate) enum FieldErrorKind {
    Invalid {
        value: String,
        detail: String,
    },
    Required {
        detail: String,
    },
    Forbidden {
        detail: String,
    },
    NotSupported {
        value: String,
        supported: Vec<String>,
    },
}

impl FieldError {
    pub fn invalid(field: &str, value: &str, detail: impl Into<String>) -> Self {
        let kind = FieldErrorKind::Invalid {
            value: value.to_string(),
            detail: detail.into(),
        };
        FieldError {
            field: field.to_string(),
            kind,
        }
    }

    pub fn required(field: &str, detail: impl Into<String>) -> Self {
        let kind = FieldErrorKind::Required {
            detail: detail.into(),
        };
        FieldError {
            field: field.to_string(),
            kind,
        }
    }

    pub fn forbidden(field: &str, detail: impl Into<String>) -> Self {
        let kind = FieldErrorKind::Forbidden {
            detail: detail.into(),
        };
        FieldError {
            field: field.to_string(),
            kind,
        }
    }

    pub fn not_supported(field: &str, value: &str, supported: &[&str]) -> Self {
        let supported = supported.iter().map(|s| format!("\"{s}\"")).collect();
        let kind = FieldErrorKind::NotSupported {
            value: value.to_string(),
            supported,
        };
        FieldError {
            field: field.to_string(),
            kind,
        }
    }

    fn reason(&self) -> &'static str {
        match self.kind {
            FieldErrorKind::Invalid { .. } => "FieldValueInvalid",
            FieldErrorKind::Required { .. } => "FieldValueRequired",
            FieldErrorKind::Forbidden { .. } => "FieldValueForbidden",
            FieldErrorKind::NotSupported { .. } => "FieldValueNotSupported",
        }
    }

    /// The message without the field path (a `StatusCause.message`).
    fn body(&self) -> String {
        match &self.kind {
            FieldErrorKind::Invalid { value, detail } => {
                format!("Invalid value: \"{value}\": {detail}")
            }
            FieldErrorKind::Required { detail } if detail.is_empty() => "Required value".into(),
            FieldErrorKind::Required { detail } => format!("Required value: {detail}"),
            FieldErrorKind::Forbidden { detail } => format!("Forbidden: {detail}"),
            FieldErrorKind::NotSupported { value, supported } => {
                format!(
                    "Unsupported value: \"{value}\": supported values: {}",
                    supported.join(", ")
                )
            }
        }
    }
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.body())
    }
}

impl Status {
    fn new(
        code: u16,
        reason: &str,
        message: impl Into<String>,
        details: Option<StatusDetails>,
    ) -> Self {
        Status {
            code,
            reason: reason.into(),
            message: message.into(),
            details: details.map(Box::new),
        }
    }

    fn about(resource: &Resource, name: &str) -> Option<StatusDetails> {
        Some(StatusDetails {
            name: name.into(),
            group: resource.group.into(),
            kind: resource.plural.into(),
            ..Default::default()
        })
    }

    /// 404 `<resource> "<name>" not found`.
    pub(crate) fn not_found(resource: &Resource, name: &str) -> Self {
        let message = format!("{} \"{name}\" not found", resource.group_resource());
        Self::new(404, "NotFound", message, Self::about(resource, name))
    }

    /// 404 for a path the server does not serve.
    pub(crate) fn path_not_found() -> Self {
        let details = Some(StatusDetails::default());
        Self::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
            details,
        )
    }

    /// 409 `<resource> "<name>" already exists`.
    pub(crate) fn already_exists(resource: &Resource, name: &str) -> Self {
        let message = format!("{} \"{name}\" already exists", resource.group_resource());
        Self::new(409, "AlreadyExists", message, Self::about(resource, name))
    }

    /// 409 Conflict: the object has been modified since the given resourceVersion.
    pub(crate) fn conflict(resource: &Resource, name: &str) -> Self {
        let message = format!(
            "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; \
             please apply your changes to the latest version and try again",
            resource.group_resource()
        );
        Self::new(409, "Conflict", message, Self::about(resource, name))
    }

    /// 409 Conflict with a free-form cause (e.g. a UID precondition).
    pub(crate) fn conflict_because(resource: &Resource, name: &str, cause: &str) -> Self {
        let message = format!(
            "Operation cannot be fulfilled on {} \"{name}\": {cause}",
            resource.group_resource()
        );
        Self::new(409, "Conflict", message, Self::about(resource, name))
    }

    /// 422 `<Kind> "<name>" is invalid: <errors>` with one cause per field error.
    pub(crate) fn invalid(resource: &Resource, name: &str, errors: &[FieldError]) -> Self {
        Self::invalid_kind(resource.kind, resource.group, name, errors)
    }

    /// 422 Invalid for a kind that is not a served resource (e.g. `ListOptions`).
    pub(crate) fn invalid_kind(kind: &str, group: &str, name: &str, errors: &[FieldError]) -> Self {
        let qualified = if group.is_empty() {
            kind.to_string()
        } else {
            format!("{kind}.{group}")
        };
        let listed = match errors {
            [one] => one.to_string(),
            many => format!(
                "[{}]",
                many.iter()
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        let causes = errors
            .iter()
            .map(|e| StatusCause {
                reason: e.reason().into(),
                message: e.body(),
                field: e.field.clone(),
            })
            .collect();
        let details = StatusDetails {
            name: name.into(),
            group: group.into(),
            kind: kind.into(),
            causes,
            ..Default::default()
        };
        Self::new(
            422,
            "Invalid",
            format!("{qualified} \"{name}\" is invalid: {listed}"),
            Some(details),
        )
    }

    /// 400 BadRequest.
    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message, None)
    }

    /// 410 Expired (a resourceVersion or continue token older than the history window).
    pub(crate) fn expired(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message, None)
    }

    /// 503 ServiceUnavailable (the server is paused).
    pub(crate) fn service_unavailable(message: impl Into<String>) -> Self {
        Self::new(503, "ServiceUnavailable", message, None)
    }

    /// 415 UnsupportedMediaType naming the accepted media types.
    pub(crate) fn unsupported_media_type(accepted: &[&str]) -> Self {
        let message = format!(
            "the body of the request was in an unknown format - accepted media types include: {}",
            accepted.join(", ")
        );
        Self::new(415, "UnsupportedMediaType", message, None)
    }

    /// 405 MethodNotAllowed.
    pub(crate) fn method_not_supported(resource: &Resource, action: &str) -> Self {
        let message = format!(
            "{action} is not supported on resources of kind \"{}\"",
            resource.group_resource()
        );
        Self::new(405, "MethodNotAllowed", message, Self::about(resource, ""))
    }

    /// 504 Timeout for a resourceVersion newer than any the server has.
    pub(crate) fn too_large_resource_version(requested: u64, current: u64) -> Self {
        let details = StatusDetails {
            causes: vec![StatusCause {
                reason: "ResourceVersionTooLarge".into(),
                message: "Too large resource version".into(),
                field: String::new(),
            }],
            retry_after_seconds: Some(1),
            ..Default::default()
        };
        let message = format!("Too large resource version: {requested}, current: {current}");
        Self::new(504, "Timeout", message, Some(details))
    }

    /// 500 InternalError.
    pub(crate) fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "InternalError", message, None)
    }

    /// 200 `Success` for a delete: details name the deleted object (kind is the plural, as in
    /// the real server).
    pub(crate) fn deleted(resource: &Resource, name: &str, uid: &str) -> Self {
        let details = StatusDetails {
            name: name.into(),
            group: resource.group.into(),
            kind: resource.plural.into(),
            uid: uid.into(),
            ..Default::default()
        };
        Self::new(200, "", "", Some(details))
    }

    /// This Status as a JSON value.
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).expect("a Status always serializes")
    }
}
