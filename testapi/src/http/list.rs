//! Lists: the resourceVersion semantics of the API concepts doc (unset = most recent, `0` =
//! any, a number = not older than, or exact with `resourceVersionMatch=Exact` or a `limit`),
//! pagination with opaque continue tokens that read a consistent snapshot, and 410 Expired
//! once the snapshot has left the history window.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::Failure;
use super::options::{ListOptions, parse_resource_version};
use crate::Shared;
use crate::catalog::Resource;
use crate::object;
use crate::status::Status;
use crate::store::{ObjectFilter, ReadAt, RevisionError};

/// How long a request for a resourceVersion newer than the store's waits for it to appear.
pub(crate) const FRESHNESS_WAIT: Duration = Duration::from_secs(3);

/// The content of a continue token (the real server's shape: version, revision, start key).
#[derive(Debug, Serialize, Deserialize)]
struct ContinueToken {
    v: String,
    rv: i64,
    start: String,
}

fn encode_continue(revision: u64, start: &str) -> String {
    let token = ContinueToken {
        v: "meta.k8s.io/v1".into(),
        rv: revision as i64,
        start: start.to_string(),
    };
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(&token).expect("a token always serializes"))
}

fn decode_continue(text: &str) -> Result<ContinueToken, Status> {
    let invalid = |why: &str| Status::bad_request(format!("continue key is not valid: {why}"));
    let trimmed = text.trim_end_matches('=');
    let bytes = URL_SAFE_NO_PAD
        .decode(trimmed)
        .map_err(|_| invalid("incorrect encoded start resourceVersion (version meta.k8s.io/v1)"))?;
    let token: ContinueToken = serde_json::from_slice(&bytes)
        .map_err(|_| invalid("incorrect encoded start resourceVersion (version meta.k8s.io/v1)"))?;
    if token.v != "meta.k8s.io/v1" {
        return Err(invalid("server does not recognize this encoded key"));
    }
    if token.rv <= 0 {
        return Err(invalid(
            "incorrect encoded start resourceVersion (version meta.k8s.io/v1)",
        ));
    }
    if token.start.contains("..") || token.start.starts_with('/') {
        return Err(invalid("path traversal not allowed"));
    }
    Ok(token)
}

const INCONSISTENT_CONTINUE: &str = "The provided continue parameter is too old to display a consistent list result. \
You can start a new list without the continue parameter, or use the continue token in this response to retrieve \
the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that \
were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.";

/// Waits until the store has reached `revision`, up to [`FRESHNESS_WAIT`].
pub(crate) async fn wait_for_revision(shared: &Shared, revision: u64) -> Result<(), Status> {
    let mut receiver = shared.registry.store.subscribe_revision();
    let reached = tokio::time::timeout(
        FRESHNESS_WAIT,
        receiver.wait_for(|current| *current >= revision),
    )
    .await;
    match reached {
        Ok(Ok(_)) => Ok(()),
        _ => Err(Status::too_large_resource_version(
            revision,
            shared.registry.store.revision(),
        )),
    }
}

/// Serves a list of `resource` in `namespace` (all namespaces when `None`).
pub(crate) async fn list(
    shared: &Arc<Shared>,
    resource: &Resource,
    namespace: Option<String>,
    options: ListOptions,
) -> Result<Value, Failure> {
    let filter = ObjectFilter {
        resource: *resource,
        namespace,
        labels: options.labels.clone(),
        fields: options.fields.clone(),
    };
    let (read_at, start) = match &options.continue_token {
        Some(text) => {
            let token = decode_continue(text)?;
            (ReadAt::Exact(token.rv as u64), Some(token.start))
        }
        None => {
            let exact = options.resource_version_match.as_deref() == Some("Exact")
                || (options.resource_version_match.is_none() && options.limit.is_some());
            match options.resource_version.as_deref() {
                None | Some("0") => (ReadAt::Latest, None),
                Some(text) => {
                    let revision = parse_resource_version(text)?;
                    if revision > shared.registry.store.revision() {
                        wait_for_revision(shared, revision).await?;
                    }
                    (
                        if exact {
                            ReadAt::Exact(revision)
                        } else {
                            ReadAt::Latest
                        },
                        None,
                    )
                }
            }
        }
    };
    let listing = match shared.registry.store.list(&filter, read_at) {
        Ok(listing) => listing,
        Err(RevisionError::TooNew { current }) => {
            let ReadAt::Exact(revision) = read_at else {
                unreachable!("only exact reads can be too new")
            };
            return Err(Status::too_large_resource_version(revision, current).into());
        }
        Err(RevisionError::TooOld { .. }) => {
            return Err(match start {
                Some(start) => Failure {
                    status: Status::expired(INCONSISTENT_CONTINUE),
                    list_continue: Some(encode_continue(shared.registry.store.revision(), &start)),
                },
                None => {
                    Status::expired("The resourceVersion for the provided list is too old.").into()
                }
            });
        }
    };
    let mut items: Vec<(String, Arc<Value>)> = listing.items;
    if let Some(start) = &start {
        items.retain(|(key, _)| key.as_str() >= start.as_str());
    }
    let mut metadata = json!({"resourceVersion": listing.revision.to_string()});
    if let Some(limit) = options.limit
        && items.len() > limit
    {
        let remaining = items.len() - limit;
        items.truncate(limit);
        let last_key = &items.last().expect("limit is positive").0;
        metadata["continue"] = json!(encode_continue(
            listing.revision,
            &format!("{last_key}\u{0}")
        ));
        if options.labels.is_empty() && options.fields.is_empty() {
            metadata["remainingItemCount"] = json!(remaining);
        }
    }
    let items: Vec<Value> = items
        .iter()
        .map(|(_, object)| object::without_type_meta(object))
        .collect();
    Ok(json!({
        "kind": resource.list_kind(),
        "apiVersion": resource.api_version(),
        "metadata": metadata,
        "items": items,
    }))
}
