//! The generic REST logic between HTTP and the store, as the real generic registry does it:
//! system fields (`uid`, `creationTimestamp`, `generateName`), namespace and name checks,
//! preconditions and optimistic concurrency, per-kind strategies, validation, and the
//! namespace-deletion cascade.

mod strategy;

use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

use crate::catalog::{self, Resource, resources};
use crate::object;
use crate::patch::{self, PatchType};
use crate::status::{FieldError, Status};
use crate::store::{ObjectFilter, ReadAt, Store};
use crate::validation;
use strategy::Allocator;

/// How a write reaches the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    /// An API request: strategies reset fields users may not set (e.g. Service `status`).
    Request,
    /// [`crate::ApiServer::apply`]: the object is stored as given (status included).
    Direct,
}

/// Preconditions of a delete (`DeleteOptions.preconditions`).
#[derive(Debug, Clone, Default)]
pub(crate) struct Preconditions {
    pub uid: Option<String>,
    pub resource_version: Option<String>,
}

/// The registry: the store plus allocation state.
pub(crate) struct Registry {
    pub store: Store,
    allocator: Mutex<Allocator>,
}

fn allocator_lock(allocator: &Mutex<Allocator>) -> std::sync::MutexGuard<'_, Allocator> {
    allocator
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Checks `kind`/`apiVersion` of a request body against the resource and fills them in.
fn check_type_meta(resource: &Resource, object: &mut Value) -> Result<(), Status> {
    if !object.is_object() {
        return Err(Status::bad_request(
            "the body of the request was in an unknown format - a JSON object was expected",
        ));
    }
    let expected_version = resource.api_version();
    let api_version = object
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("");
    if !api_version.is_empty() && api_version != expected_version {
        return Err(Status::bad_request(format!(
            "the API version in the data ({api_version}) does not match the expected API version ({expected_version})"
        )));
    }
    let kind = object.get("kind").and_then(Value::as_str).unwrap_or("");
    if !kind.is_empty() && kind != resource.kind {
        return Err(Status::bad_request(format!(
            "the kind in the data ({kind}) does not match the expected kind ({})",
            resource.kind
        )));
    }
    object::set_type_meta(object, &expected_version, resource.kind);
    Ok(())
}

/// Reconciles the body's namespace with the URL's, as `rest.BeforeCreate`/`BeforeUpdate` do.
fn check_namespace(
    resource: &Resource,
    url_namespace: Option<&str>,
    object: &mut Value,
) -> Result<(), Status> {
    if !resource.namespaced {
        object::metadata_mut(object).remove("namespace");
        return Ok(());
    }
    let body_namespace = object::namespace(object).to_string();
    match url_namespace {
        Some(url) if body_namespace.is_empty() => object::set_meta(object, "namespace", url),
        Some(url) if body_namespace != url => {
            return Err(Status::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        _ => {}
    }
    Ok(())
}

/// Common and kind-specific validation, as a 422 Invalid when anything is wrong.
fn validate(resource: &Resource, object: &Value, old: Option<&Value>) -> Result<(), Status> {
    let rule = resource.details().name_rule;
    let mut errors = validation::validate_name(object, rule);
    if resource.namespaced && object::namespace(object).is_empty() {
        errors.push(FieldError::required("metadata.namespace", ""));
    }
    errors.extend(validation::validate_labels_and_annotations(object));
    match old {
        Some(old) => {
            if object::uid(object) != object::uid(old) {
                errors.push(FieldError::invalid(
                    "metadata.uid",
                    object::uid(object),
                    "field is immutable",
                ));
            }
            errors.extend(strategy::validate_update(resource, object, old));
        }
        None => errors.extend(strategy::validate(resource, object)),
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(Status::invalid(resource, object::name(object), &errors))
    }
}

impl Registry {
    pub fn new(store: Store) -> Self {
        let registry = Registry {
            store,
            allocator: Mutex::new(Allocator::default()),
        };
        for name in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            let namespace =
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
            registry
                .create(
                    &resources::NAMESPACES,
                    None,
                    namespace,
                    false,
                    Origin::Request,
                )
                .expect("the built-in namespaces are valid");
        }
        registry
    }

    /// The new object `body` completed for creation (system fields, defaults), not yet stored.
    fn prepare_create(
        &self,
        resource: &Resource,
        url_namespace: Option<&str>,
        mut body: Value,
        origin: Origin,
    ) -> Result<Value, Status> {
        check_type_meta(resource, &mut body)?;
        check_namespace(resource, url_namespace, &mut body)?;
        if !object::resource_version(&body).is_empty() {
            return Err(Status::internal(
                "resourceVersion should not be set on objects to be created",
            ));
        }
        let status = body.get("status").cloned();
        let generate_name = object::meta_str(&body, "generateName").to_string();
        let metadata = object::metadata_mut(&mut body);
        for field in [
            "uid",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "selfLink",
            "generation",
            "managedFields",
        ] {
            metadata.remove(field);
        }
        metadata.insert("uid".into(), json!(object::new_uid()));
        metadata.insert("creationTimestamp".into(), json!(object::now_rfc3339()));
        if object::name(&body).is_empty() && !generate_name.is_empty() {
            let name = format!("{generate_name}{}", object::generated_name_suffix());
            object::set_meta(&mut body, "name", name);
        }
        strategy::prepare_for_create(resource, &mut body, &mut allocator_lock(&self.allocator));
        if origin == Origin::Direct
            && let Some(status) = status
        {
            object::ensure_object(&mut body).insert("status".into(), status);
        }
        validate(resource, &body, None)?;
        Ok(body)
    }

    /// POST: creates `body` in `url_namespace`.
    pub fn create(
        &self,
        resource: &Resource,
        url_namespace: Option<&str>,
        body: Value,
        dry_run: bool,
        origin: Origin,
    ) -> Result<Arc<Value>, Status> {
        let object = self.prepare_create(resource, url_namespace, body, origin)?;
        self.store.create(resource, object, dry_run)
    }

    /// `body` made into the next version of `old` (preconditions checked), not yet stored.
    fn prepare_update(
        &self,
        resource: &Resource,
        mut body: Value,
        old: &Value,
        origin: Origin,
    ) -> Result<Value, Status> {
        let name = object::name(old).to_string();
        let requested = object::resource_version(&body).to_string();
        if !requested.is_empty() && requested != object::resource_version(old) {
            return Err(Status::conflict(resource, &name));
        }
        let status = body.get("status").cloned();
        let metadata = object::metadata_mut(&mut body);
        let old_metadata = old.get("metadata").cloned().unwrap_or_default();
        for field in [
            "creationTimestamp",
            "generation",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
        ] {
            match old_metadata.get(field) {
                Some(value) => metadata.insert(field.into(), value.clone()),
                None => metadata.remove(field),
            };
        }
        if metadata
            .get("uid")
            .and_then(Value::as_str)
            .unwrap_or("")
            .is_empty()
        {
            metadata.insert(
                "uid".into(),
                old_metadata.get("uid").cloned().unwrap_or_default(),
            );
        }
        metadata.remove("managedFields");
        metadata.remove("selfLink");
        object::set_meta(&mut body, "resourceVersion", object::resource_version(old));
        strategy::prepare_for_update(
            resource,
            &mut body,
            old,
            &mut allocator_lock(&self.allocator),
        );
        if origin == Origin::Direct
            && let Some(status) = status
        {
            object::ensure_object(&mut body).insert("status".into(), status);
        }
        validate(resource, &body, Some(old))?;
        Ok(body)
    }

    /// PUT: replaces the object `name` with `body` (creating it where the kind allows that).
    /// Returns the stored object and whether it was created.
    pub fn update(
        &self,
        resource: &Resource,
        url_namespace: Option<&str>,
        name: &str,
        mut body: Value,
        dry_run: bool,
        origin: Origin,
    ) -> Result<(Arc<Value>, bool), Status> {
        check_type_meta(resource, &mut body)?;
        check_namespace(resource, url_namespace, &mut body)?;
        let body_name = object::name(&body);
        if body_name != name {
            return Err(Status::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        let namespace = object::namespace(&body).to_string();
        let create_on_update = resource.details().create_on_update || origin == Origin::Direct;
        self.store.update_with(
            resource,
            &namespace,
            name,
            dry_run,
            |current| match current {
                Some(old) => self.prepare_update(resource, body, old, origin),
                None if create_on_update => {
                    object::metadata_mut(&mut body).remove("resourceVersion");
                    self.prepare_create(resource, url_namespace, body, origin)
                }
                None => Err(Status::not_found(resource, name)),
            },
        )
    }

    /// PATCH: applies `patch` to the object `name` (which must exist).
    pub fn patch(
        &self,
        resource: &Resource,
        namespace: &str,
        name: &str,
        patch_type: PatchType,
        patch: &[u8],
        dry_run: bool,
    ) -> Result<Arc<Value>, Status> {
        self.store
            .update_with(resource, namespace, name, dry_run, |current| {
                let old = current.ok_or_else(|| Status::not_found(resource, name))?;
                let mut patched = patch::apply(resource, patch_type, old, patch)?;
                check_type_meta(resource, &mut patched)?;
                let (patched_name, patched_namespace) = (object::name(&patched), object::namespace(&patched));
                if patched_name != name {
                    return Err(Status::bad_request(format!(
                        "the name of the object ({patched_name}) does not match the name on the URL ({name})"
                    )));
                }
                if resource.namespaced && patched_namespace != namespace {
                    return Err(Status::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ));
                }
                self.prepare_update(resource, patched, old, Origin::Request)
            })
            .map(|(object, _)| object)
    }

    /// DELETE: removes the object `name`; returns its last state. Deleting a Namespace first
    /// marks it Terminating, then deletes everything in it, then the Namespace itself.
    pub fn delete(
        &self,
        resource: &Resource,
        namespace: &str,
        name: &str,
        preconditions: &Preconditions,
        dry_run: bool,
    ) -> Result<Arc<Value>, Status> {
        let check = |current: &Value| -> Result<(), Status> {
            if let Some(uid) = preconditions.uid.as_deref().filter(|u| !u.is_empty())
                && uid != object::uid(current)
            {
                let cause = format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    object::uid(current)
                );
                return Err(Status::conflict_because(resource, name, &cause));
            }
            if let Some(version) = preconditions
                .resource_version
                .as_deref()
                .filter(|v| !v.is_empty())
                && version != object::resource_version(current)
            {
                let cause = format!(
                    "Precondition failed: ResourceVersion in precondition: {version}, ResourceVersion in object meta: {}",
                    object::resource_version(current)
                );
                return Err(Status::conflict_because(resource, name, &cause));
            }
            Ok(())
        };
        if *resource != resources::NAMESPACES {
            return self.store.delete(resource, namespace, name, dry_run, check);
        }
        let (terminating, _) = self
            .store
            .update_with(resource, "", name, dry_run, |current| {
                let current = current.ok_or_else(|| Status::not_found(resource, name))?;
                check(current)?;
                let mut terminating = current.clone();
                if object::meta_str(&terminating, "deletionTimestamp").is_empty() {
                    object::set_meta(&mut terminating, "deletionTimestamp", object::now_rfc3339());
                    object::metadata_mut(&mut terminating)
                        .insert("deletionGracePeriodSeconds".into(), json!(0));
                }
                object::ensure_object(&mut terminating)
                    .insert("status".into(), json!({"phase": "Terminating"}));
                Ok(terminating)
            })?;
        if dry_run {
            return Ok(terminating);
        }
        let stored = |d: &&catalog::ResourceDetails| {
            d.resource.namespaced && crate::conversion::storage_resource(&d.resource) == d.resource
        };
        for details in catalog::ALL.iter().filter(stored) {
            let filter = ObjectFilter {
                resource: details.resource,
                namespace: Some(name.to_string()),
                labels: Default::default(),
                fields: Default::default(),
            };
            let listing = self
                .store
                .list(&filter, ReadAt::Latest)
                .map_err(|_| Status::internal("list failed"))?;
            for (_, object) in listing.items {
                let _ = self.store.delete(
                    &details.resource,
                    name,
                    object::name(&object),
                    false,
                    |_| Ok(()),
                );
            }
        }
        self.store.delete(resource, "", name, false, |_| Ok(()))?;
        Ok(terminating)
    }

    /// [`crate::ApiServer::apply`]: creates the object or replaces it unconditionally.
    pub fn apply(&self, mut object: Value) -> Result<Arc<Value>, Status> {
        let api_version = object
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or("");
        let kind = object.get("kind").and_then(Value::as_str).unwrap_or("");
        let Some(resource) = catalog::by_api_version_kind(api_version, kind) else {
            return Err(Status::bad_request(format!(
                "no resource is served for apiVersion {api_version:?}, kind {kind:?}"
            )));
        };
        object::metadata_mut(&mut object).remove("resourceVersion");
        let name = object::name(&object).to_string();
        let namespace = object::namespace(&object).to_string();
        if name.is_empty() {
            return self.create(&resource, None, object, false, Origin::Direct);
        }
        let url_namespace = resource
            .namespaced
            .then_some(namespace.as_str())
            .filter(|n| !n.is_empty());
        self.update(
            &resource,
            url_namespace,
            &name,
            object,
            false,
            Origin::Direct,
        )
        .map(|(object, _)| object)
    }
}
