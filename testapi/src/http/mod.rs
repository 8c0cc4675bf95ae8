//! The HTTP front: one handler that parses the path, refuses everything while paused, routes
//! to discovery, list, watch or the object verbs, answers errors as `metav1.Status` JSON, and
//! records each request for [`crate::ApiServer::requests`] and [`crate::ApiServer::stats`].

mod discovery;
mod list;
mod objects;
mod openapi;
mod options;
mod routes;
mod watch;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::Response;
use serde_json::{Value, json};

use crate::Shared;
use crate::stats::RequestRecord;
use crate::status::Status;
use options::{ListOptions, Query};
use routes::Route;

/// Largest request body accepted (the real server's limit is about 3 MiB).
const MAX_BODY: usize = 3 * 1024 * 1024;

/// An error answer: a Status, plus a fresh continue token for an expired one.
pub(crate) struct Failure {
    pub status: Status,
    pub list_continue: Option<String>,
}

impl From<Status> for Failure {
    fn from(status: Status) -> Self {
        Failure {
            status,
            list_continue: None,
        }
    }
}

/// The router serving the whole API.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new().fallback(handle).with_state(shared)
}

fn json_response(shared: &Shared, code: u16, body: &Value) -> Response {
    let bytes = serde_json::to_vec(body).expect("JSON values serialize");
    shared
        .bytes_sent
        .fetch_add(bytes.len() as u64, Ordering::Relaxed);
    Response::builder()
        .status(StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CACHE_CONTROL, "no-cache, private")
        .body(Body::from(bytes))
        .expect("a valid response")
}

fn failure_response(shared: &Shared, failure: Failure) -> Response {
    let mut body = failure.status.to_value();
    if let Some(token) = failure.list_continue {
        body["metadata"] = json!({"continue": token});
    }
    json_response(shared, failure.status.code, &body)
}

fn header_text(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

async fn handle(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path().to_string();
    let query_text = parts.uri.query().unwrap_or("").to_string();
    let query = Query::parse(&query_text);
    let route = Route::parse(&path);
    let watch = matches!(query.bool("watch"), Ok(Some(true)));
    let verb = route.verb(&parts.method, watch);
    let (resource, namespace) = route.resource_and_namespace();
    let response = if shared.paused.load(Ordering::SeqCst) {
        let status = Status::service_unavailable("the test API server is paused");
        failure_response(&shared, status.into())
    } else {
        let body = match axum::body::to_bytes(body, MAX_BODY).await {
            Ok(bytes) => bytes,
            Err(_) => {
                let status =
                    Status::bad_request("the request body could not be read or is too large");
                return failure_response(&shared, status.into());
            }
        };
        match dispatch(&shared, &parts.method, &parts.headers, route, &query, &body).await {
            Ok(response) => response,
            Err(failure) => failure_response(&shared, failure),
        }
    };
    shared.recorder.record(RequestRecord {
        method: parts.method.to_string(),
        path,
        query: query_text,
        verb: verb.to_string(),
        resource: resource.map(|r| r.group_resource()),
        namespace,
        status: response.status().as_u16(),
        user_agent: header_text(&parts.headers, header::USER_AGENT)
            .unwrap_or("")
            .to_string(),
    });
    response
}

async fn dispatch(
    shared: &Arc<Shared>,
    method: &Method,
    headers: &HeaderMap,
    route: Route,
    query: &Query,
    body: &[u8],
) -> Result<Response, Failure> {
    let content_type = header_text(headers, header::CONTENT_TYPE);
    let ok = |value: Value| Ok(json_response(shared, 200, &value));
    let read_only = *method == Method::GET || *method == Method::HEAD;
    match route {
        Route::Version if read_only => ok(discovery::version()),
        Route::CoreVersions if read_only => ok(discovery::core_versions(shared.addr)),
        Route::Groups if read_only => ok(discovery::group_list()),
        Route::Group(group) if read_only => ok(discovery::api_group(&group)),
        Route::ResourceList { group, version } if read_only => {
            ok(discovery::resource_list(&group, &version))
        }
        Route::OpenApiIndex if read_only => ok(openapi::index()),
        Route::OpenApiDocument { group, version } if read_only => {
            match openapi::document(&group, &version) {
                Some(document) => ok(document),
                None => Err(Status::path_not_found().into()),
            }
        }
        Route::Collection {
            resource,
            namespace,
        } if resource.namespaced && namespace.is_none() && !read_only => {
            Err(Status::method_not_supported(&resource, method.as_str()).into())
        }
        Route::Collection {
            resource,
            namespace,
        } => match *method {
            Method::GET | Method::HEAD => {
                let options = ListOptions::parse(query, &resource)?;
                if options.watch {
                    Ok(watch::watch(shared, &resource, namespace, options).await?)
                } else {
                    ok(list::list(shared, &resource, namespace, options).await?)
                }
            }
            Method::POST => {
                let object = objects::decode_body(&resource, content_type, body)?;
                let (code, created) =
                    objects::create(shared, &resource, namespace.as_deref(), query, object)?;
                Ok(json_response(shared, code, &created))
            }
            Method::DELETE => ok(objects::delete_collection(
                shared, &resource, namespace, query, body,
            )?),
            _ => Err(Status::method_not_supported(&resource, method.as_str()).into()),
        },
        Route::Object {
            resource,
            namespace,
            name,
        } => {
            let ns = namespace.as_deref().unwrap_or("");
            match *method {
                Method::GET | Method::HEAD => ok(objects::get(shared, &resource, ns, &name)?),
                Method::PUT => {
                    let object = objects::decode_body(&resource, content_type, body)?;
                    let (code, updated) = objects::update(
                        shared,
                        &resource,
                        namespace.as_deref(),
                        &name,
                        query,
                        object,
                    )?;
                    Ok(json_response(shared, code, &updated))
                }
                Method::PATCH => ok(objects::patch(
                    shared,
                    &resource,
                    ns,
                    &name,
                    query,
                    content_type,
                    body,
                )?),
                Method::DELETE => ok(objects::delete(shared, &resource, ns, &name, query, body)?),
                _ => Err(Status::method_not_supported(&resource, method.as_str()).into()),
            }
        }
        _ => Err(Status::path_not_found().into()),
    }
}
