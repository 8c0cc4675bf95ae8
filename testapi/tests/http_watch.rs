//! Watches over raw HTTP: chunked JSON lines, replay from a resourceVersion, 410 as an ERROR
//! event, bookmarks, `sendInitialEvents`, `timeoutSeconds`, selector transitions, pause and
//! cut, and cutting a watcher that does not read.

mod common;

use std::time::Duration;

use common::{Raw, config_map, summary};
use dermaga_testapi::{ApiServer, resources};
use serde_json::json;

const CM: &str = "/api/v1/namespaces/default/configmaps";

fn event(kind: &str, name: &str) -> Option<(String, String)> {
    Some((kind.to_string(), name.to_string()))
}

#[tokio::test]
async fn events_in_order_and_replay_from_a_resource_version() {
    let server = ApiServer::start().await.unwrap();
    let raw = Raw::new(&server);
    server
        .apply(config_map("default", "a", json!({}), json!({})))
        .unwrap();
    let (code, mut lines) = raw.watch(&format!("{CM}?watch=true")).await;
    assert_eq!(code, 200);
    let added = lines.next().await.unwrap();
    assert_eq!(summary(&added), ("ADDED".into(), "a".into()));
    assert_eq!(
        (
            added["object"]["kind"].as_str(),
            added["object"]["apiVersion"].as_str()
        ),
        (Some("ConfigMap"), Some("v1"))
    );
    let start = added["object"]["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();

    server
        .apply(config_map("default", "b", json!({}), json!({})))
        .unwrap();
    server
        .apply(config_map("default", "a", json!({}), json!({"k": "v"})))
        .unwrap();
    server
        .apply(config_map("other", "elsewhere", json!({}), json!({})))
        .unwrap();
    let deleted = server
        .delete(&resources::CONFIGMAPS, "default", "b")
        .unwrap();
    assert_eq!(lines.next().await.map(|e| summary(&e)), event("ADDED", "b"));
    assert_eq!(
        lines.next().await.map(|e| summary(&e)),
        event("MODIFIED", "a")
    );
    let gone = lines.next().await.unwrap();
    assert_eq!(summary(&gone), ("DELETED".into(), "b".into()));
    assert_eq!(
        gone["object"]["metadata"]["resourceVersion"],
        deleted["metadata"]["resourceVersion"]
    );

    let (_, mut replay) = raw
        .watch(&format!("{CM}?watch=1&resourceVersion={start}"))
        .await;
    let replayed: Vec<_> = [
        replay.next().await,
        replay.next().await,
        replay.next().await,
    ]
    .into_iter()
    .map(|e| summary(&e.unwrap()))
    .collect();
    assert_eq!(
        replayed,
        [
            ("ADDED".into(), "b".into()),
            ("MODIFIED".into(), "a".into()),
            ("DELETED".into(), "b".into())
        ]
    );

    let (_, mut everywhere) = raw.watch("/api/v1/configmaps?watch=true").await;
    let mut names = vec![
        summary(&everywhere.next().await.unwrap()).1,
        summary(&everywhere.next().await.unwrap()).1,
    ];
    names.sort();
    assert_eq!(names, ["a", "elsewhere"]);
}

#[tokio::test]
async fn too_old_resource_version_is_an_error_event() {
    let server = ApiServer::start().await.unwrap();
    let raw = Raw::new(&server);
    let first = server
        .apply(config_map("default", "a", json!({}), json!({})))
        .unwrap();
    server
        .apply(config_map("default", "b", json!({}), json!({})))
        .unwrap();
    server.drop_history();
    let old = first["metadata"]["resourceVersion"].as_str().unwrap();
    let (code, mut lines) = raw
        .watch(&format!("{CM}?watch=true&resourceVersion={old}"))
        .await;
    assert_eq!(code, 200);
    let error = lines.next().await.unwrap();
    assert_eq!(error["type"], "ERROR");
    let status = &error["object"];
    assert_eq!(
        (
            status["kind"].as_str(),
            status["code"].as_i64(),
            status["reason"].as_str()
        ),
        (Some("Status"), Some(410), Some("Expired"))
    );
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .starts_with(&format!("too old resource version: {old} ("))
    );
    assert!(
        lines.next().await.is_none(),
        "the stream ends after the error"
    );

    // Watching from the current resourceVersion is fine.
    let now =
        server.get(&resources::CONFIGMAPS, "default", "b").unwrap()["metadata"]["resourceVersion"]
            .clone();
    let (_, mut lines) = raw
        .watch(&format!(
            "{CM}?watch=true&resourceVersion={}",
            now.as_str().unwrap()
        ))
        .await;
    server
        .apply(config_map("default", "c", json!({}), json!({})))
        .unwrap();
    assert_eq!(lines.next().await.map(|e| summary(&e)), event("ADDED", "c"));
}

#[tokio::test]
async fn bookmarks_and_timeout() {
    let server = ApiServer::start().await.unwrap();
    server.set_bookmark_interval(Duration::from_millis(100));
    let raw = Raw::new(&server);
    let (_, mut quiet) = raw
        .watch(&format!("{CM}?watch=true&timeoutSeconds=1"))
        .await;
    let (_, mut lines) = raw
        .watch(&format!(
            "{CM}?watch=true&allowWatchBookmarks=true&timeoutSeconds=1"
        ))
        .await;
    let bookmark = lines.next().await.unwrap();
    assert_eq!(bookmark["type"], "BOOKMARK");
    let object = bookmark["object"].as_object().unwrap();
    assert_eq!(
        (object["kind"].as_str(), object["apiVersion"].as_str()),
        (Some("ConfigMap"), Some("v1"))
    );
    let revision = server.list(&resources::NAMESPACES, None).len();
    assert!(
        bookmark["object"]["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse::<usize>()
            .unwrap()
            >= revision
    );
    let started = std::time::Instant::now();
    while lines.next().await.is_some() {}
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "timeoutSeconds ends the stream"
    );
    assert!(
        quiet.next().await.is_none(),
        "no bookmarks unless asked for"
    );
}

#[tokio::test]
async fn send_initial_events_ends_with_an_annotated_bookmark() {
    let server = ApiServer::start().await.unwrap();
    let raw = Raw::new(&server);
    server
        .apply(config_map("default", "a", json!({}), json!({})))
        .unwrap();
    let last = server
        .apply(config_map("default", "b", json!({}), json!({})))
        .unwrap();
    let query = "watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true";
    let (_, mut lines) = raw.watch(&format!("{CM}?{query}")).await;
    assert_eq!(lines.next().await.map(|e| summary(&e)), event("ADDED", "a"));
    assert_eq!(lines.next().await.map(|e| summary(&e)), event("ADDED", "b"));
    let end = lines.next().await.unwrap();
    assert_eq!(end["type"], "BOOKMARK");
    assert_eq!(
        end["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"],
        "true"
    );
    assert_eq!(
        end["object"]["metadata"]["resourceVersion"],
        last["metadata"]["resourceVersion"]
    );
    server
        .apply(config_map("default", "c", json!({}), json!({})))
        .unwrap();
    assert_eq!(
        lines.next_change().await.map(|e| summary(&e)),
        event("ADDED", "c")
    );

    let (code, body) = raw
        .get(&format!("{CM}?watch=true&sendInitialEvents=true"))
        .await;
    assert_eq!(
        (code, body["reason"].as_str()),
        (422, Some("Invalid")),
        "needs resourceVersionMatch=NotOlderThan"
    );
}

#[tokio::test]
async fn selector_transitions_per_watcher() {
    let server = ApiServer::start().await.unwrap();
    let raw = Raw::new(&server);
    let (_, mut web) = raw
        .watch(&format!("{CM}?watch=true&labelSelector=app%3Dweb"))
        .await;
    let (_, mut named) = raw
        .watch(&format!("{CM}?watch=true&fieldSelector=metadata.name%3Dx"))
        .await;
    server
        .apply(config_map("default", "x", json!({"app": "web"}), json!({})))
        .unwrap();
    server
        .apply(config_map("default", "y", json!({"app": "web"}), json!({})))
        .unwrap();
    let moved = server
        .apply(config_map("default", "x", json!({"app": "db"}), json!({})))
        .unwrap();
    server
        .apply(config_map("default", "x", json!({"app": "web"}), json!({})))
        .unwrap();

    assert_eq!(web.next().await.map(|e| summary(&e)), event("ADDED", "x"));
    assert_eq!(web.next().await.map(|e| summary(&e)), event("ADDED", "y"));
    let left = web.next().await.unwrap();
    assert_eq!(
        summary(&left),
        ("DELETED".into(), "x".into()),
        "stops matching: DELETED"
    );
    assert_eq!(
        left["object"]["metadata"]["labels"]["app"], "web",
        "with the previous content"
    );
    assert_eq!(
        left["object"]["metadata"]["resourceVersion"], moved["metadata"]["resourceVersion"],
        "at the change's revision"
    );
    assert_eq!(
        web.next().await.map(|e| summary(&e)),
        event("ADDED", "x"),
        "matches again: ADDED"
    );

    let kinds: Vec<String> = [named.next().await, named.next().await, named.next().await]
        .into_iter()
        .map(|e| summary(&e.unwrap()).0)
        .collect();
    assert_eq!(kinds, ["ADDED", "MODIFIED", "MODIFIED"]);
}

#[tokio::test]
async fn pause_and_cut_end_open_watches() {
    let server = ApiServer::start().await.unwrap();
    let raw = Raw::new(&server);
    let (_, mut lines) = raw.watch(&format!("{CM}?watch=true")).await;
    wait_for_open_watches(&server, 1).await;
    server.cut_watches();
    assert!(lines.next().await.is_none(), "cut_watches ends the stream");
    wait_for_open_watches(&server, 0).await;

    let (_, mut lines) = raw.watch(&format!("{CM}?watch=true")).await;
    server.pause();
    assert!(lines.next().await.is_none(), "pause ends the stream");
    let (code, body) = raw.get(CM).await;
    assert_eq!(
        (code, body["reason"].as_str(), body["kind"].as_str()),
        (503, Some("ServiceUnavailable"), Some("Status"))
    );
    let (code, _) = raw.get(&format!("{CM}?watch=true")).await;
    assert_eq!(code, 503);
    server.resume();
    assert_eq!(raw.get(CM).await.0, 200);
}

async fn wait_for_open_watches(server: &ApiServer, expected: usize) {
    let deadline = tokio::time::Instant::now() + common::WAIT;
    while server.stats().open_watches != expected {
        assert!(
            tokio::time::Instant::now() < deadline,
            "open watches never became {expected}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_watcher_that_does_not_read_is_cut() {
    let server = ApiServer::start().await.unwrap();
    let raw = Raw::new(&server);
    let (_, mut lines) = raw.watch(&format!("{CM}?watch=true")).await;
    wait_for_open_watches(&server, 1).await;
    let payload = "x".repeat(8 * 1024);
    let writes = 4000;
    for i in 0..writes {
        server
            .apply(config_map(
                "default",
                "big",
                json!({}),
                json!({"i": i.to_string(), "p": payload}),
            ))
            .unwrap();
    }
    let mut received = 0;
    while lines.next().await.is_some() {
        received += 1;
    }
    assert!(
        received < writes,
        "the stream ended early after {received} events"
    );
    wait_for_open_watches(&server, 0).await;
}

#[tokio::test]
async fn requests_are_recorded() {
    let server = ApiServer::start().await.unwrap();
    let raw = Raw::new(&server);
    raw.get(CM).await;
    raw.post(CM, config_map("default", "a", json!({}), json!({})))
        .await;
    raw.get(&format!("{CM}/a")).await;
    let (_, mut lines) = raw
        .watch(&format!("{CM}?watch=true&timeoutSeconds=1"))
        .await;
    while lines.next().await.is_some() {}
    raw.get("/api").await;
    let stats = server.stats();
    for verb in ["list", "create", "get", "watch"] {
        assert_eq!(stats.count(verb, &resources::CONFIGMAPS), 1, "{verb}");
    }
    assert!(stats.bytes_sent > 0);
    let records = server.requests();
    let create = records.iter().find(|r| r.verb == "create").unwrap();
    assert_eq!(
        (
            create.method.as_str(),
            create.status,
            create.namespace.as_deref()
        ),
        ("POST", 201, Some("default"))
    );
    assert_eq!(create.resource.as_deref(), Some("configmaps"));
    let watch = records.iter().find(|r| r.verb == "watch").unwrap();
    assert_eq!(watch.query, "watch=true&timeoutSeconds=1");
    assert_eq!(records.last().unwrap().resource, None);
}
