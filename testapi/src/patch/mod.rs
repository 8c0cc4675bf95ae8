//! PATCH bodies: JSON Patch (RFC 6902) and JSON merge patch (RFC 7386) through the `json-patch`
//! crate, strategic merge patch implemented here; server-side apply is refused with 415.

mod schema;
mod strategic;

use serde_json::Value;

use crate::catalog::Resource;
use crate::status::Status;

/// The patch formats this server accepts, by media type.
pub(crate) const SUPPORTED_MEDIA_TYPES: &[&str] = &[
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
];

/// A patch format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PatchType {
    Json,
    Merge,
    Strategic,
}

impl PatchType {
    /// The format named by a request's `Content-Type` (parameters ignored).
    pub fn from_content_type(content_type: &str) -> Result<Self, Status> {
        let media_type = content_type
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match media_type.as_str() {
            "application/json-patch+json" => Ok(PatchType::Json),
            "application/merge-patch+json" => Ok(PatchType::Merge),
            "application/strategic-merge-patch+json" => Ok(PatchType::Strategic),
            _ => Err(Status::unsupported_media_type(SUPPORTED_MEDIA_TYPES)),
        }
    }
}

/// Applies a patch body of `patch_type` to `original`, returning the patched object.
pub(crate) fn apply(
    resource: &Resource,
    patch_type: PatchType,
    original: &Value,
    body: &[u8],
) -> Result<Value, Status> {
    let decode_error =
        |e: serde_json::Error| Status::bad_request(format!("error decoding patch: {e}"));
    match patch_type {
        PatchType::Json => {
            let patch: json_patch::Patch = serde_json::from_slice(body).map_err(decode_error)?;
            let mut patched = original.clone();
            json_patch::patch(&mut patched, &patch).map_err(|_| Status {
                code: 422,
                reason: "Invalid".into(),
                message: "the server rejected our request due to an error in our request".into(),
                details: Some(Box::default()),
            })?;
            Ok(patched)
        }
        PatchType::Merge => {
            let patch: Value = serde_json::from_slice(body).map_err(decode_error)?;
            let mut patched = original.clone();
            json_patch::merge(&mut patched, &patch);
            Ok(patched)
        }
        PatchType::Strategic => {
            let patch: Value = serde_json::from_slice(body).map_err(decode_error)?;
            strategic::apply(resource, original, &patch).map_err(Status::bad_request)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::resources;
    use serde_json::json;

    #[test]
    fn json_patch_test_failure_is_invalid() {
        let original = json!({"data": {"a": "1"}});
        let body = br#"[{"op": "test", "path": "/data/a", "value": "2"}]"#;
        let err = apply(&resources::CONFIGMAPS, PatchType::Json, &original, body).unwrap_err();
        assert_eq!((err.code, err.reason.as_str()), (422, "Invalid"));
    }

    #[test]
    fn merge_patch_removes_nulls() {
        let original = json!({"data": {"a": "1", "b": "2"}});
        let patched = apply(
            &resources::CONFIGMAPS,
            PatchType::Merge,
            &original,
            br#"{"data": {"a": null}}"#,
        )
        .unwrap();
        assert_eq!(patched, json!({"data": {"b": "2"}}));
    }

    #[test]
    fn apply_patch_is_unsupported() {
        let err = PatchType::from_content_type("application/apply-patch+yaml").unwrap_err();
        assert_eq!(err.code, 415);
        assert!(
            err.message
                .contains("application/strategic-merge-patch+json")
        );
    }
}
