//! Single-object verbs (get, create, update, patch, delete) and deletecollection.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::{Value, json};

use super::options::{ListOptions, Query, dry_run_values};
use crate::Shared;
use crate::catalog::Resource;
use crate::object;
use crate::patch::PatchType;
use crate::protobuf;
use crate::registry::{Origin, Preconditions};
use crate::status::Status;
use crate::store::{ObjectFilter, ReadAt};

/// Decodes a create or update body of `resource` after checking its `Content-Type`: JSON, or
/// protobuf for the kinds [`protobuf::supports`].
pub(crate) fn decode_body(
    resource: &Resource,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<Value, Status> {
    let media_type = content_type
        .and_then(|c| c.split(';').next())
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match media_type.as_str() {
        "" | "application/json" | "*/*" => serde_json::from_slice(body).map_err(|e| {
            Status::bad_request(format!("the body of the request could not be decoded: {e}"))
        }),
        protobuf::MEDIA_TYPE if protobuf::supports(resource) => protobuf::decode(resource, body)
            .map_err(|e| {
                Status::bad_request(format!("the body of the request could not be decoded: {e}"))
            }),
        _ if protobuf::supports(resource) => Err(Status::unsupported_media_type(&[
            "application/json",
            protobuf::MEDIA_TYPE,
        ])),
        _ => Err(Status::unsupported_media_type(&["application/json"])),
    }
}

/// GET one object.
pub(crate) fn get(
    shared: &Shared,
    resource: &Resource,
    namespace: &str,
    name: &str,
) -> Result<Value, Status> {
    let object = shared
        .registry
        .store
        .get(resource, namespace, name)
        .ok_or_else(|| Status::not_found(resource, name))?;
    Ok((*object).clone())
}

/// POST: 201 with the created object.
pub(crate) fn create(
    shared: &Shared,
    resource: &Resource,
    namespace: Option<&str>,
    query: &Query,
    body: Value,
) -> Result<(u16, Value), Status> {
    let dry_run = query.dry_run("CreateOptions")?;
    let created = shared
        .registry
        .create(resource, namespace, body, dry_run, Origin::Request)?;
    Ok((201, (*created).clone()))
}

/// PUT: 200 with the updated object, or 201 when the kind creates on update.
pub(crate) fn update(
    shared: &Shared,
    resource: &Resource,
    namespace: Option<&str>,
    name: &str,
    query: &Query,
    body: Value,
) -> Result<(u16, Value), Status> {
    let dry_run = query.dry_run("UpdateOptions")?;
    let (object, created) =
        shared
            .registry
            .update(resource, namespace, name, body, dry_run, Origin::Request)?;
    Ok((if created { 201 } else { 200 }, (*object).clone()))
}

/// PATCH: 200 with the patched object.
pub(crate) fn patch(
    shared: &Shared,
    resource: &Resource,
    namespace: &str,
    name: &str,
    query: &Query,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<Value, Status> {
    let patch_type = PatchType::from_content_type(content_type.unwrap_or(""))?;
    let dry_run = query.dry_run("PatchOptions")?;
    let object = shared
        .registry
        .patch(resource, namespace, name, patch_type, body, dry_run)?;
    Ok((*object).clone())
}

/// The parts of `DeleteOptions` this server honours.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeleteOptions {
    #[serde(default)]
    preconditions: Option<DeletePreconditions>,
    #[serde(default)]
    dry_run: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeletePreconditions {
    uid: Option<String>,
    resource_version: Option<String>,
}

fn delete_options(query: &Query, body: &[u8]) -> Result<(Preconditions, bool), Status> {
    let options: DeleteOptions = if body.iter().all(u8::is_ascii_whitespace) {
        DeleteOptions::default()
    } else {
        serde_json::from_slice(body).map_err(|e| {
            Status::bad_request(format!("the body of the request could not be decoded: {e}"))
        })?
    };
    let from_body = dry_run_values(options.dry_run.iter().map(String::as_str), "DeleteOptions")?;
    let dry_run = query.dry_run("DeleteOptions")? || from_body;
    let preconditions = options
        .preconditions
        .map(|p| Preconditions {
            uid: p.uid,
            resource_version: p.resource_version,
        })
        .unwrap_or_default();
    Ok((preconditions, dry_run))
}

/// DELETE: 200 with a `Success` Status, or with the object for kinds that return it.
pub(crate) fn delete(
    shared: &Shared,
    resource: &Resource,
    namespace: &str,
    name: &str,
    query: &Query,
    body: &[u8],
) -> Result<Value, Status> {
    let (preconditions, dry_run) = delete_options(query, body)?;
    let deleted = shared
        .registry
        .delete(resource, namespace, name, &preconditions, dry_run)?;
    if resource.details().delete_returns_object {
        Ok((*deleted).clone())
    } else {
        Ok(Status::deleted(resource, name, object::uid(&deleted)).to_value())
    }
}

/// DELETE on a collection: deletes every matching object and answers the list of them.
pub(crate) fn delete_collection(
    shared: &Arc<Shared>,
    resource: &Resource,
    namespace: Option<String>,
    query: &Query,
    body: &[u8],
) -> Result<Value, Status> {
    let (_, dry_run) = delete_options(query, body)?;
    let options = ListOptions::parse(query, resource)?;
    let filter = ObjectFilter {
        resource: *resource,
        namespace,
        labels: options.labels,
        fields: options.fields,
    };
    let listing = shared
        .registry
        .store
        .list(&filter, ReadAt::Latest)
        .map_err(|_| Status::internal("list failed"))?;
    let mut deleted = Vec::new();
    for (_, object) in listing.items {
        let (namespace, name) = (object::namespace(&object), object::name(&object));
        if let Ok(gone) = shared.registry.delete(
            resource,
            namespace,
            name,
            &Preconditions::default(),
            dry_run,
        ) {
            deleted.push(object::without_type_meta(&gone));
        }
    }
    Ok(json!({
        "kind": resource.list_kind(),
        "apiVersion": resource.api_version(),
        "metadata": {"resourceVersion": shared.registry.store.revision().to_string()},
        "items": deleted,
    }))
}
