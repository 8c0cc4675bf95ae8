//! The server through a real client: kube-rs typed `Api`s and `kube::runtime::watcher`.

mod common;

use dermaga_testapi::{ApiServer, resources};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher::{self, Event};
use serde_json::json;

fn config_map(name: &str, labels: &[(&str, &str)], data: &[(&str, &str)]) -> ConfigMap {
    let mut cm = ConfigMap::default();
    cm.metadata.name = Some(name.into());
    cm.metadata.labels = Some(
        labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    );
    cm.data = Some(
        data.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    );
    cm
}

fn status_code(error: kube::Error) -> u16 {
    match error {
        kube::Error::Api(status) => status.code,
        other => panic!("expected an API error, got {other}"),
    }
}

#[tokio::test]
async fn typed_crud_and_patch_kinds() {
    let server = ApiServer::start().await.unwrap();
    let client = common::kube_client(&server).await;
    let api: Api<ConfigMap> = Api::namespaced(client, "dermaga");

    let created = api
        .create(
            &PostParams::default(),
            &config_map(
                "tcp-services",
                &[("app", "dermaga")],
                &[("10000", "default/web:80")],
            ),
        )
        .await
        .unwrap();
    assert!(created.metadata.uid.is_some() && created.metadata.resource_version.is_some());
    let again = config_map("tcp-services", &[], &[]);
    assert_eq!(
        status_code(
            api.create(&PostParams::default(), &again)
                .await
                .unwrap_err()
        ),
        409
    );
    assert_eq!(
        status_code(
            api.create(&PostParams::default(), &created)
                .await
                .unwrap_err()
        ),
        500,
        "resourceVersion set on create"
    );

    let mut changed = created.clone();
    changed
        .data
        .as_mut()
        .unwrap()
        .insert("20000".into(), "default/web:443".into());
    let replaced = api
        .replace("tcp-services", &PostParams::default(), &changed)
        .await
        .unwrap();
    assert_eq!(
        status_code(
            api.replace("tcp-services", &PostParams::default(), &changed)
                .await
                .unwrap_err()
        ),
        409,
        "stale"
    );

    let params = PatchParams::default();
    let merged = api
        .patch(
            "tcp-services",
            &params,
            &Patch::Merge(json!({"data": {"10000": null}})),
        )
        .await
        .unwrap();
    assert_eq!(merged.data.unwrap().keys().collect::<Vec<_>>(), ["20000"]);
    let strategic = api
        .patch(
            "tcp-services",
            &params,
            &Patch::Strategic(json!({"metadata": {"labels": {"x": "y"}}})),
        )
        .await
        .unwrap();
    assert_eq!(strategic.metadata.labels.unwrap().len(), 2);
    let ops: json_patch::Patch =
        serde_json::from_value(json!([{"op": "add", "path": "/data/3000", "value": "a/b:1"}]))
            .unwrap();
    let patched = api
        .patch("tcp-services", &params, &Patch::Json::<()>(ops))
        .await
        .unwrap();
    assert_eq!(patched.data.unwrap().len(), 2);
    assert_ne!(
        patched.metadata.resource_version,
        replaced.metadata.resource_version
    );

    let stored = server
        .get(&resources::CONFIGMAPS, "dermaga", "tcp-services")
        .unwrap();
    assert_eq!(
        stored["data"],
        json!({"20000": "default/web:443", "3000": "a/b:1"})
    );

    let deleted = api
        .delete("tcp-services", &DeleteParams::default())
        .await
        .unwrap();
    assert!(deleted.is_right(), "ConfigMaps answer a Status");
    assert_eq!(status_code(api.get("tcp-services").await.unwrap_err()), 404);
    assert!(
        server
            .get(&resources::CONFIGMAPS, "dermaga", "tcp-services")
            .is_none()
    );
}

#[tokio::test]
async fn list_with_selectors_and_pages() {
    let server = ApiServer::start().await.unwrap();
    let client = common::kube_client(&server).await;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    for (name, app) in [("a", "web"), ("b", "web"), ("c", "db"), ("d", "cache")] {
        api.create(
            &PostParams::default(),
            &config_map(name, &[("app", app)], &[]),
        )
        .await
        .unwrap();
    }
    let names = |list: kube::core::ObjectList<ConfigMap>| {
        list.items
            .into_iter()
            .map(|c| c.metadata.name.unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        names(
            api.list(&ListParams::default().labels("app=web"))
                .await
                .unwrap()
        ),
        ["a", "b"]
    );
    assert_eq!(
        names(
            api.list(&ListParams::default().labels("app in (db,cache)"))
                .await
                .unwrap()
        ),
        ["c", "d"]
    );
    assert_eq!(
        names(
            api.list(&ListParams::default().fields("metadata.name=d"))
                .await
                .unwrap()
        ),
        ["d"]
    );
    let first = api.list(&ListParams::default().limit(3)).await.unwrap();
    let token = first.metadata.continue_.clone().expect("a continue token");
    assert_eq!(names(first), ["a", "b", "c"]);
    assert_eq!(
        names(
            api.list(&ListParams::default().limit(3).continue_token(&token))
                .await
                .unwrap()
        ),
        ["d"]
    );
    let all: Api<ConfigMap> = Api::all(client);
    assert_eq!(
        all.list(&ListParams::default()).await.unwrap().items.len(),
        4
    );
}

#[tokio::test]
async fn services_and_endpoint_slices_typed() {
    let server = ApiServer::start().await.unwrap();
    let client = common::kube_client(&server).await;
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let service: Service = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}
    }))
    .unwrap();
    let created = services
        .create(&PostParams::default(), &service)
        .await
        .unwrap();
    let spec = created.spec.unwrap();
    assert!(spec.cluster_ip.unwrap().starts_with("10.96."));
    assert_eq!(spec.ports.unwrap()[0].protocol.as_deref(), Some("TCP"));

    let slices: Api<EndpointSlice> = Api::namespaced(client, "default");
    let slice: EndpointSlice = serde_json::from_value(json!({
        "metadata": {"name": "web-x", "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080}],
        "endpoints": [{"addresses": ["10.1.0.1"], "conditions": {"ready": true, "serving": true, "terminating": false}}]
    }))
    .unwrap();
    slices.create(&PostParams::default(), &slice).await.unwrap();
    let listed = slices
        .list(&ListParams::default().labels("kubernetes.io/service-name=web"))
        .await
        .unwrap();
    assert_eq!(
        listed.items[0].endpoints.as_ref().unwrap()[0].addresses,
        ["10.1.0.1"]
    );
    assert_eq!(listed.items[0].metadata.generation, Some(1));
}

/// Waits for the next watcher event that is not an error.
async fn next_event<S>(stream: &mut S) -> Event<ConfigMap>
where
    S: futures::Stream<Item = Result<Event<ConfigMap>, watcher::Error>> + Unpin,
{
    loop {
        let item = tokio::time::timeout(common::WAIT, stream.next())
            .await
            .expect("a watcher event in time")
            .expect("stream goes on");
        if let Ok(event) = item {
            return event;
        }
    }
}

/// Waits for the end of an initial list and returns the object names it listed.
async fn initial_names<S>(stream: &mut S) -> Vec<String>
where
    S: futures::Stream<Item = Result<Event<ConfigMap>, watcher::Error>> + Unpin,
{
    let mut names = Vec::new();
    loop {
        match next_event(stream).await {
            Event::Init => names.clear(),
            Event::InitApply(cm) => names.push(cm.metadata.name.unwrap()),
            Event::InitDone => return names,
            other => panic!("unexpected event during the initial list: {other:?}"),
        }
    }
}

#[tokio::test]
async fn watcher_relists_after_history_loss() {
    let server = ApiServer::start().await.unwrap();
    let client = common::kube_client(&server).await;
    server.apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "namespace": "default"}})).unwrap();
    let api: Api<ConfigMap> = Api::namespaced(client, "default");
    let mut stream = watcher::watcher(api, watcher::Config::default()).boxed();
    assert_eq!(initial_names(&mut stream).await, ["a"]);

    server.apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "b", "namespace": "default"}})).unwrap();
    match next_event(&mut stream).await {
        Event::Apply(cm) => assert_eq!(cm.metadata.name.as_deref(), Some("b")),
        other => panic!("expected Apply(b), got {other:?}"),
    }
    server.delete(&resources::CONFIGMAPS, "default", "a");
    match next_event(&mut stream).await {
        Event::Delete(cm) => assert_eq!(cm.metadata.name.as_deref(), Some("a")),
        other => panic!("expected Delete(a), got {other:?}"),
    }

    // History lost while the watcher is cut off, as on an apiserver restart: its resume from
    // its last resourceVersion (older than the change made meanwhile) gets 410 and it lists
    // again. (Cutting after the change would race: had the watcher already seen "c", resuming
    // from the newest resourceVersion is valid and needs no list.)
    let lists_before = server.stats().count("list", &resources::CONFIGMAPS);
    server.pause();
    server.apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "default"}})).unwrap();
    server.drop_history();
    server.resume();
    let names = loop {
        match next_event(&mut stream).await {
            Event::Apply(cm) if cm.metadata.name.as_deref() == Some("c") => {}
            Event::Init => break initial_names_after_init(&mut stream).await,
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(names, ["b", "c"]);
    assert!(server.stats().count("list", &resources::CONFIGMAPS) > lists_before);
    let expired = server
        .requests()
        .iter()
        .filter(|r| r.verb == "watch")
        .count();
    assert!(expired >= 2);
}

async fn initial_names_after_init<S>(stream: &mut S) -> Vec<String>
where
    S: futures::Stream<Item = Result<Event<ConfigMap>, watcher::Error>> + Unpin,
{
    let mut names = Vec::new();
    loop {
        match next_event(stream).await {
            Event::InitApply(cm) => names.push(cm.metadata.name.unwrap()),
            Event::InitDone => return names,
            other => panic!("unexpected event during the initial list: {other:?}"),
        }
    }
}

#[tokio::test]
async fn streaming_list_watcher() {
    let server = ApiServer::start().await.unwrap();
    let client = common::kube_client(&server).await;
    for name in ["a", "b"] {
        server.apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": "default", "labels": {"app": "web"}}})).unwrap();
    }
    server.apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "other", "namespace": "default"}})).unwrap();
    let api: Api<ConfigMap> = Api::namespaced(client, "default");
    let config = watcher::Config::default()
        .streaming_lists()
        .labels("app=web");
    let mut stream = watcher::watcher(api, config).boxed();
    assert_eq!(initial_names(&mut stream).await, ["a", "b"]);
    assert_eq!(
        server.stats().count("list", &resources::CONFIGMAPS),
        0,
        "no list: the watch sends the initial state"
    );
}

#[tokio::test]
async fn errors_reach_the_client_as_statuses() {
    let server = ApiServer::start().await.unwrap();
    // kube's default client retries 429/503/504 with backoff (15 times): turn that off to see the 503.
    let mut config = common::kube_config(&server).await;
    config.default_retry = false;
    let api: Api<ConfigMap> = Api::namespaced(kube::Client::try_from(config).unwrap(), "default");
    server.pause();
    match api.list(&ListParams::default()).await.unwrap_err() {
        kube::Error::Api(status) => assert_eq!(
            (status.code, status.reason.as_str()),
            (503, "ServiceUnavailable")
        ),
        other => panic!("expected 503, got {other}"),
    }
    server.resume();
    let bad = config_map("Not_Valid", &[], &[]);
    match api.create(&PostParams::default(), &bad).await.unwrap_err() {
        kube::Error::Api(status) => {
            assert_eq!((status.code, status.reason.as_str()), (422, "Invalid"))
        }
        other => panic!("expected 422, got {other}"),
    }
    let listed: Vec<ConfigMap> = api.list(&ListParams::default()).await.unwrap().items;
    assert!(listed.is_empty());
}
