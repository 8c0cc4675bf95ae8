//! Exact status codes and `metav1.Status` bodies for the error cases of each verb, over raw HTTP.

mod common;

use common::{Raw, config_map};
use dermaga_testapi::{ApiServer, resources};
use serde_json::json;

const CM: &str = "/api/v1/namespaces/default/configmaps";

#[tokio::test]
async fn errors_are_status_objects_with_the_real_reasons() {
    let server = ApiServer::start().await.unwrap();
    let raw = Raw::new(&server);

    let (code, body) = raw.get(&format!("{CM}/nope")).await;
    assert_eq!(code, 404);
    assert_eq!(
        body,
        json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "configmaps \"nope\" not found", "reason": "NotFound",
            "details": {"name": "nope", "kind": "configmaps"}, "code": 404
        })
    );
    let (code, body) = raw
        .get("/apis/discovery.k8s.io/v1/namespaces/a/endpointslices/x")
        .await;
    assert_eq!(
        (code, body["message"].as_str()),
        (404, Some("endpointslices.discovery.k8s.io \"x\" not found"))
    );
    assert_eq!(body["details"]["group"], "discovery.k8s.io");

    for path in [
        "/api/v1/pods",
        "/apis/apps/v1/deployments",
        "/nothing",
        "/api/v1/configmaps/x",
    ] {
        let (code, body) = raw.get(path).await;
        assert_eq!(
            (code, body["kind"].as_str(), body["reason"].as_str()),
            (404, Some("Status"), Some("NotFound")),
            "{path}"
        );
    }

    let object = config_map("default", "a", json!({}), json!({"k": "v"}));
    assert_eq!(raw.post(CM, object.clone()).await.0, 201);
    let (code, body) = raw.post(CM, object.clone()).await;
    assert_eq!(
        (code, body["reason"].as_str()),
        (409, Some("AlreadyExists"))
    );
    assert_eq!(body["message"], "configmaps \"a\" already exists");

    let (code, body) = raw
        .post("/api/v1/namespaces/other/configmaps", object.clone())
        .await;
    assert_eq!((code, body["reason"].as_str()), (400, Some("BadRequest")));
    assert_eq!(
        body["message"],
        "the namespace of the provided object does not match the namespace sent on the request"
    );

    let (code, body) = raw
        .post(CM, config_map("default", "Bad_Name", json!({}), json!({})))
        .await;
    assert_eq!((code, body["reason"].as_str()), (422, Some("Invalid")));
    assert!(body["message"].as_str().unwrap().starts_with("ConfigMap \"Bad_Name\" is invalid: metadata.name: Invalid value: \"Bad_Name\": a lowercase RFC 1123 subdomain"));
    assert_eq!(body["details"]["kind"], "ConfigMap");
    assert_eq!(body["details"]["causes"][0]["field"], "metadata.name");
    assert_eq!(body["details"]["causes"][0]["reason"], "FieldValueInvalid");

    let (code, body) = raw.post(CM, json!({"metadata": {}})).await;
    assert_eq!(code, 422);
    assert_eq!(
        body["details"]["causes"][0]["message"],
        "Required value: name or generateName is required"
    );

    let mut with_version = config_map("default", "b", json!({}), json!({}));
    with_version["metadata"]["resourceVersion"] = json!("1");
    let (code, body) = raw.post(CM, with_version).await;
    assert_eq!(
        (code, body["message"].as_str()),
        (
            500,
            Some("resourceVersion should not be set on objects to be created")
        )
    );

    let service = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "1web"}, "spec": {"ports": [{"port": 80}]}});
    let (code, body) = raw
        .post("/api/v1/namespaces/default/services", service)
        .await;
    assert_eq!(code, 422, "Service names are RFC 1035 labels: {body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("a DNS-1035 label")
    );

    let (code, body) = raw
        .post(
            CM,
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"}}),
        )
        .await;
    assert_eq!(code, 400, "{body}");

    let (code, _) = raw
        .request("POST", CM, Some("application/yaml"), Some(json!({})))
        .await;
    assert_eq!(code, 415);
}

#[tokio::test]
async fn updates_are_optimistic_and_kind_specific() {
    let server = ApiServer::start().await.unwrap();
    let raw = Raw::new(&server);
    let (_, created) = raw
        .post(CM, config_map("default", "a", json!({}), json!({"k": "1"})))
        .await;
    let version = created["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();

    let mut update = created.clone();
    update["data"]["k"] = json!("2");
    let (code, updated) = raw.put(&format!("{CM}/a"), update.clone()).await;
    assert_eq!(code, 200);
    assert_ne!(updated["metadata"]["resourceVersion"], json!(version));
    assert_eq!(updated["metadata"]["uid"], created["metadata"]["uid"]);
    assert_eq!(
        updated["metadata"]["creationTimestamp"],
        created["metadata"]["creationTimestamp"]
    );

    let (code, body) = raw.put(&format!("{CM}/a"), update.clone()).await;
    assert_eq!(
        (code, body["reason"].as_str()),
        (409, Some("Conflict")),
        "stale resourceVersion"
    );
    assert!(body["message"].as_str().unwrap().starts_with(
        "Operation cannot be fulfilled on configmaps \"a\": the object has been modified"
    ));

    let mut unconditional = update.clone();
    unconditional["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("resourceVersion");
    unconditional["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("uid");
    unconditional["data"]["k"] = json!("3");
    let (code, body) = raw.put(&format!("{CM}/a"), unconditional).await;
    assert_eq!((code, body["data"]["k"].as_str()), (200, Some("3")));

    let (code, body) = raw.put(&format!("{CM}/b"), update.clone()).await;
    assert_eq!(
        (code, body["reason"].as_str()),
        (400, Some("BadRequest")),
        "name differs from the URL: {body}"
    );
    let missing = config_map("default", "missing", json!({}), json!({}));
    let (code, body) = raw.put(&format!("{CM}/missing"), missing).await;
    assert_eq!(
        (code, body["reason"].as_str()),
        (404, Some("NotFound")),
        "ConfigMaps are not created by PUT"
    );

    let service = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"}, "spec": {"ports": [{"port": 80}]}});
    let (code, body) = raw
        .put("/api/v1/namespaces/default/services/web", service)
        .await;
    assert_eq!(
        code, 201,
        "Services are created by PUT, as in the real API: {body}"
    );

    // An identical write is a no-op: same resourceVersion, no event.
    let current = server.get(&resources::CONFIGMAPS, "default", "a").unwrap();
    let (code, same) = raw.put(&format!("{CM}/a"), current.clone()).await;
    assert_eq!(
        (code, &same["metadata"]["resourceVersion"]),
        (200, &current["metadata"]["resourceVersion"])
    );

    let (code, body) = raw
        .request(
            "PUT",
            &format!("{CM}/a?dryRun=All"),
            Some("application/json"),
            Some(json!({"metadata": {"name": "a"}, "data": {"dry": "run"}})),
        )
        .await;
    assert_eq!((code, body["data"]["dry"].as_str()), (200, Some("run")));
    assert_eq!(
        server.get(&resources::CONFIGMAPS, "default", "a").unwrap()["data"]["k"],
        "3"
    );
    let (code, body) = raw
        .request(
            "POST",
            &format!("{CM}?dryRun=Some"),
            Some("application/json"),
            Some(json!({})),
        )
        .await;
    assert_eq!((code, body["reason"].as_str()), (422, Some("Invalid")));
}

#[tokio::test]
async fn patches_of_every_kind_and_their_errors() {
    let server = ApiServer::start().await.unwrap();
    let raw = Raw::new(&server);
    raw.post(
        CM,
        config_map("default", "a", json!({"x": "1"}), json!({"k": "1"})),
    )
    .await;
    let path = format!("{CM}/a");

    let (code, body) = raw
        .patch(
            &path,
            "application/merge-patch+json",
            json!({"data": {"k": null, "m": "2"}}),
        )
        .await;
    assert_eq!((code, &body["data"]), (200, &json!({"m": "2"})));
    let (code, body) = raw
        .patch(
            &path,
            "application/strategic-merge-patch+json",
            json!({"metadata": {"labels": {"y": "2"}}}),
        )
        .await;
    assert_eq!(
        (code, &body["metadata"]["labels"]),
        (200, &json!({"x": "1", "y": "2"}))
    );
    let ops = json!([{"op": "add", "path": "/data/n", "value": "3"}, {"op": "remove", "path": "/data/m"}]);
    let (code, body) = raw.patch(&path, "application/json-patch+json", ops).await;
    assert_eq!((code, &body["data"]), (200, &json!({"n": "3"})));

    let failing = json!([{"op": "test", "path": "/data/n", "value": "other"}]);
    let (code, body) = raw
        .patch(&path, "application/json-patch+json", failing)
        .await;
    assert_eq!((code, body["reason"].as_str()), (422, Some("Invalid")));
    let (code, body) = raw
        .patch(&path, "application/apply-patch+yaml", json!({}))
        .await;
    assert_eq!(
        (code, body["reason"].as_str()),
        (415, Some("UnsupportedMediaType"))
    );
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("application/strategic-merge-patch+json")
    );
    let (code, body) = raw
        .patch(
            &format!("{CM}/missing"),
            "application/merge-patch+json",
            json!({}),
        )
        .await;
    assert_eq!(
        (code, body["reason"].as_str()),
        (404, Some("NotFound")),
        "no create on patch"
    );
    let stale = json!({"metadata": {"resourceVersion": "1"}, "data": {"z": "9"}});
    let (code, body) = raw
        .patch(&path, "application/merge-patch+json", stale)
        .await;
    assert_eq!(
        (code, body["reason"].as_str()),
        (409, Some("Conflict")),
        "a resourceVersion in a patch is a precondition"
    );

    // Strategic merge on Service ports (merge key `port`) with kubectl's directives.
    let service = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
        "spec": {"ports": [{"name": "http", "port": 80}, {"name": "https", "port": 443}], "selector": {"app": "web"}}});
    raw.post("/api/v1/namespaces/default/services", service)
        .await;
    let patch = json!({"spec": {
        "$setElementOrder/ports": [{"port": 53}, {"port": 80}],
        "ports": [{"name": "dns", "port": 53, "protocol": "UDP"}, {"$patch": "delete", "port": 443}]
    }});
    let (code, body) = raw
        .patch(
            "/api/v1/namespaces/default/services/web",
            "application/strategic-merge-patch+json",
            patch,
        )
        .await;
    assert_eq!(code, 200, "{body}");
    let ports: Vec<i64> = body["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["port"].as_i64().unwrap())
        .collect();
    assert_eq!(ports, [53, 80]);
    assert_eq!(
        body["spec"]["ports"][1]["targetPort"], 80,
        "the kept port keeps its defaults"
    );
}

#[tokio::test]
async fn deletes_answer_like_the_real_registry() {
    let server = ApiServer::start().await.unwrap();
    let raw = Raw::new(&server);
    let (_, created) = raw
        .post(CM, config_map("default", "a", json!({}), json!({})))
        .await;
    let (code, body) = raw.delete(&format!("{CM}/a")).await;
    assert_eq!(code, 200);
    assert_eq!(
        body,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
               "details": {"name": "a", "kind": "configmaps", "uid": created["metadata"]["uid"]}, "code": 200})
    );
    let (code, body) = raw.delete(&format!("{CM}/a")).await;
    assert_eq!((code, body["reason"].as_str()), (404, Some("NotFound")));

    let service = json!({"metadata": {"name": "web"}, "spec": {"ports": [{"port": 80}]}});
    raw.post("/api/v1/namespaces/default/services", service)
        .await;
    let (code, body) = raw.delete("/api/v1/namespaces/default/services/web").await;
    assert_eq!(
        (code, body["kind"].as_str()),
        (200, Some("Service")),
        "Services return the deleted object"
    );

    raw.post(CM, config_map("default", "b", json!({}), json!({})))
        .await;
    let precondition = json!({"preconditions": {"uid": "not-the-uid"}});
    let (code, body) = raw
        .request(
            "DELETE",
            &format!("{CM}/b"),
            Some("application/json"),
            Some(precondition),
        )
        .await;
    assert_eq!((code, body["reason"].as_str()), (409, Some("Conflict")));
    let (code, _) = raw
        .request("DELETE", &format!("{CM}/b?dryRun=All"), None, None)
        .await;
    assert_eq!(code, 200);
    assert!(
        server.get(&resources::CONFIGMAPS, "default", "b").is_some(),
        "dry run keeps the object"
    );

    for name in ["c", "d"] {
        raw.post(
            CM,
            config_map("default", name, json!({"group": "x"}), json!({})),
        )
        .await;
    }
    let (code, body) = raw
        .request(
            "DELETE",
            &format!("{CM}?labelSelector=group%3Dx"),
            None,
            None,
        )
        .await;
    assert_eq!((code, body["kind"].as_str()), (200, Some("ConfigMapList")));
    assert_eq!(body["items"].as_array().unwrap().len(), 2);
    assert_eq!(
        server.list(&resources::CONFIGMAPS, Some("default")).len(),
        1
    );
}

#[tokio::test]
async fn namespace_deletion_takes_its_contents() {
    let server = ApiServer::start().await.unwrap();
    let raw = Raw::new(&server);
    let (code, namespace) = raw
        .post("/api/v1/namespaces", json!({"metadata": {"name": "team"}}))
        .await;
    assert_eq!(code, 201);
    assert_eq!(namespace["spec"]["finalizers"], json!(["kubernetes"]));
    assert_eq!(namespace["status"]["phase"], "Active");
    assert_eq!(
        namespace["metadata"]["labels"]["kubernetes.io/metadata.name"],
        "team"
    );
    raw.post(
        "/api/v1/namespaces/team/configmaps",
        config_map("team", "a", json!({}), json!({})),
    )
    .await;
    let (code, body) = raw.delete("/api/v1/namespaces/team").await;
    assert_eq!(
        (code, body["status"]["phase"].as_str()),
        (200, Some("Terminating"))
    );
    assert!(server.get(&resources::NAMESPACES, "", "team").is_none());
    assert!(server.list(&resources::CONFIGMAPS, Some("team")).is_empty());
}
