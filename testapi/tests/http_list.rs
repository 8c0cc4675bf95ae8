//! Lists over raw HTTP: selectors, pagination with continue tokens, resourceVersion semantics,
//! defaults filled on create, and discovery documents.

mod common;

use common::{Raw, config_map};
use dermaga_testapi::{ApiServer, resources};
use serde_json::{Value, json};

const CM: &str = "/api/v1/namespaces/default/configmaps";

fn names(list: &Value) -> Vec<String> {
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap().to_string())
        .collect()
}

async fn seed(server: &ApiServer) {
    let labels = [
        ("a", json!({"app": "web", "tier": "front"})),
        ("b", json!({"app": "web", "tier": "back"})),
        ("c", json!({"app": "db"})),
        ("d", json!({})),
        ("e", json!({"app": "cache", "tier": "back"})),
    ];
    for (name, labels) in labels {
        server
            .apply(config_map("default", name, labels, json!({})))
            .unwrap();
    }
    server
        .apply(config_map("other", "z", json!({"app": "web"}), json!({})))
        .unwrap();
}

#[tokio::test]
async fn label_and_field_selectors() {
    let server = ApiServer::start().await.unwrap();
    seed(&server).await;
    let raw = Raw::new(&server);
    let cases = [
        ("labelSelector=app%3Dweb", vec!["a", "b"]),
        ("labelSelector=app%3D%3Dweb,tier%3Dback", vec!["b"]),
        ("labelSelector=app!%3Dweb", vec!["c", "d", "e"]),
        ("labelSelector=app%20in%20(db,cache)", vec!["c", "e"]),
        ("labelSelector=tier%20notin%20(back)", vec!["a", "c", "d"]),
        ("labelSelector=tier", vec!["a", "b", "e"]),
        ("labelSelector=!app", vec!["d"]),
        ("fieldSelector=metadata.name%3Dc", vec!["c"]),
        (
            "fieldSelector=metadata.name!%3Dc,metadata.namespace%3D%3Ddefault",
            vec!["a", "b", "d", "e"],
        ),
    ];
    for (query, expected) in cases {
        let (code, list) = raw.get(&format!("{CM}?{query}")).await;
        assert_eq!(code, 200, "{query}: {list}");
        assert_eq!(names(&list), expected, "{query}");
    }
    let (code, all) = raw.get("/api/v1/configmaps?labelSelector=app%3Dweb").await;
    assert_eq!(
        (code, names(&all)),
        (200, vec!["a".to_string(), "b".into(), "z".into()])
    );

    let (code, body) = raw.get(&format!("{CM}?fieldSelector=spec.x%3D1")).await;
    assert_eq!((code, body["reason"].as_str()), (400, Some("BadRequest")));
    assert_eq!(body["message"], "field label not supported: spec.x");
    let (code, _) = raw.get(&format!("{CM}?labelSelector=app%20in%20web")).await;
    assert_eq!(code, 400);
}

#[tokio::test]
async fn list_shape_and_pagination() {
    let server = ApiServer::start().await.unwrap();
    seed(&server).await;
    let raw = Raw::new(&server);
    let (_, list) = raw.get(CM).await;
    assert_eq!(
        (list["kind"].as_str(), list["apiVersion"].as_str()),
        (Some("ConfigMapList"), Some("v1"))
    );
    assert!(list["items"][0].get("kind").is_none() && list["items"][0].get("apiVersion").is_none());
    let revision = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();

    let (_, page) = raw.get(&format!("{CM}?limit=2")).await;
    assert_eq!(names(&page), ["a", "b"]);
    assert_eq!(page["metadata"]["remainingItemCount"], 3);
    assert_eq!(
        page["metadata"]["resourceVersion"].as_str(),
        Some(revision.as_str())
    );
    // A change between pages does not show: the continue token reads the first page's snapshot.
    server
        .apply(config_map("default", "ca", json!({}), json!({})))
        .unwrap();
    server.delete(&resources::CONFIGMAPS, "default", "e");
    let first_token = page["metadata"]["continue"].as_str().unwrap();
    let (code, next) = raw
        .get(&format!("{CM}?limit=2&continue={first_token}"))
        .await;
    assert_eq!(
        (code, names(&next)),
        (200, vec!["c".to_string(), "d".into()])
    );
    let token = next["metadata"]["continue"].as_str().unwrap();
    let (_, last) = raw.get(&format!("{CM}?limit=2&continue={token}")).await;
    assert_eq!(names(&last), ["e"]);
    assert!(last["metadata"].get("continue").is_none());

    let (_, selected) = raw.get(&format!("{CM}?limit=1&labelSelector=app")).await;
    assert!(
        selected["metadata"].get("remainingItemCount").is_none(),
        "not counted with a selector"
    );

    let (code, body) = raw
        .get(&format!("{CM}?limit=2&continue={token}&resourceVersion=1"))
        .await;
    assert_eq!(code, 400, "{body}");
    let (code, body) = raw.get(&format!("{CM}?continue=garbage")).await;
    assert_eq!((code, body["reason"].as_str()), (400, Some("BadRequest")));

    server.drop_history();
    let (code, body) = raw
        .get(&format!("{CM}?limit=2&continue={first_token}"))
        .await;
    assert_eq!((code, body["reason"].as_str()), (410, Some("Expired")));
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .starts_with("The provided continue parameter is too old")
    );
    let fresh = body["metadata"]["continue"]
        .as_str()
        .expect("an inconsistent continue token");
    let (code, rest) = raw.get(&format!("{CM}?limit=10&continue={fresh}")).await;
    let expected = vec!["c".to_string(), "ca".into(), "d".into()];
    assert_eq!(
        (code, names(&rest)),
        (200, expected),
        "continues after the same key, at the newest state"
    );
}

#[tokio::test]
async fn resource_version_semantics() {
    let server = ApiServer::start().await.unwrap();
    let raw = Raw::new(&server);
    let first = server
        .apply(config_map("default", "a", json!({}), json!({"v": "1"})))
        .unwrap();
    let old = first["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    server
        .apply(config_map("default", "a", json!({}), json!({"v": "2"})))
        .unwrap();
    server
        .apply(config_map("default", "b", json!({}), json!({})))
        .unwrap();

    let (_, any) = raw.get(&format!("{CM}?resourceVersion=0")).await;
    assert_eq!(names(&any), ["a", "b"]);
    let (_, not_older) = raw.get(&format!("{CM}?resourceVersion={old}")).await;
    assert_eq!(
        names(&not_older),
        ["a", "b"],
        "not older than: the newest state"
    );
    let (code, exact) = raw
        .get(&format!(
            "{CM}?resourceVersion={old}&resourceVersionMatch=Exact"
        ))
        .await;
    assert_eq!(code, 200, "{exact}");
    assert_eq!(names(&exact), ["a"]);
    assert_eq!(exact["items"][0]["data"]["v"], "1");
    assert_eq!(
        exact["metadata"]["resourceVersion"].as_str(),
        Some(old.as_str())
    );
    let (_, legacy_exact) = raw
        .get(&format!("{CM}?resourceVersion={old}&limit=5"))
        .await;
    assert_eq!(
        names(&legacy_exact),
        ["a"],
        "a limit with a resourceVersion reads exactly"
    );

    let (code, body) = raw.get(&format!("{CM}?resourceVersionMatch=Exact")).await;
    assert_eq!((code, body["reason"].as_str()), (422, Some("Invalid")));
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("resourceVersionMatch is forbidden unless resourceVersion is provided")
    );
    let (code, _) = raw
        .get(&format!(
            "{CM}?resourceVersion=0&resourceVersionMatch=Exact"
        ))
        .await;
    assert_eq!(code, 422);
    let (code, _) = raw.get(&format!("{CM}?resourceVersion=abc")).await;
    assert_eq!(code, 400);

    // A resourceVersion from the future is waited for ...
    let future: u64 =
        server.get(&resources::CONFIGMAPS, "default", "b").unwrap()["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            + 1;
    let writer = server.clone();
    let write = tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        writer
            .apply(config_map("default", "c", json!({}), json!({})))
            .unwrap();
    });
    let (code, fresh) = raw.get(&format!("{CM}?resourceVersion={future}")).await;
    write.await.unwrap();
    assert_eq!((code, names(&fresh).len()), (200, 3));
    // ... and answered 504 when it does not come.
    let (code, body) = raw
        .get(&format!("{CM}?resourceVersion={}", future + 100))
        .await;
    assert_eq!((code, body["reason"].as_str()), (504, Some("Timeout")));
    assert_eq!(
        body["details"]["causes"][0]["reason"],
        "ResourceVersionTooLarge"
    );

    server.drop_history();
    let (code, body) = raw
        .get(&format!(
            "{CM}?resourceVersion={old}&resourceVersionMatch=Exact"
        ))
        .await;
    assert_eq!((code, body["reason"].as_str()), (410, Some("Expired")));
}

#[tokio::test]
async fn create_fills_system_fields_and_kind_defaults() {
    let server = ApiServer::start().await.unwrap();
    let raw = Raw::new(&server);
    let (code, cm) = raw
        .post(
            CM,
            json!({"metadata": {"generateName": "gen-"}, "data": {}}),
        )
        .await;
    assert_eq!(code, 201);
    let name = cm["metadata"]["name"].as_str().unwrap();
    assert!(name.starts_with("gen-") && name.len() == 9, "{name}");
    assert_eq!(
        (cm["kind"].as_str(), cm["apiVersion"].as_str()),
        (Some("ConfigMap"), Some("v1"))
    );
    assert_eq!(cm["metadata"]["uid"].as_str().unwrap().len(), 36);
    assert!(
        cm["metadata"]["creationTimestamp"]
            .as_str()
            .unwrap()
            .ends_with('Z')
    );
    assert!(cm["metadata"].get("generation").is_none());

    let service = json!({"metadata": {"name": "web"}, "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}, "status": {"x": 1}});
    let (code, svc) = raw
        .post("/api/v1/namespaces/default/services", service)
        .await;
    assert_eq!(code, 201, "{svc}");
    let spec = &svc["spec"];
    assert_eq!(spec["type"], "ClusterIP");
    assert_eq!(spec["sessionAffinity"], "None");
    assert_eq!(
        spec["ports"][0],
        json!({"port": 80, "protocol": "TCP", "targetPort": 80})
    );
    assert!(spec["clusterIP"].as_str().unwrap().starts_with("10.96."));
    assert_eq!(spec["clusterIPs"], json!([spec["clusterIP"]]));
    assert_eq!(spec["ipFamilies"], json!(["IPv4"]));
    assert_eq!(
        svc["status"],
        json!({"loadBalancer": {}}),
        "status is reset on create"
    );
    let (code, body) = raw
        .post(
            "/api/v1/namespaces/default/services",
            json!({"metadata": {"name": "noports"}}),
        )
        .await;
    assert_eq!(code, 422, "{body}");

    let slice = json!({"metadata": {"name": "web-1", "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4", "ports": [{"port": 8080}], "endpoints": [{"addresses": ["10.0.0.1"]}]});
    let path = "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices";
    let (code, eps) = raw.post(path, slice).await;
    assert_eq!(code, 201, "{eps}");
    assert_eq!(eps["metadata"]["generation"], 1);
    assert_eq!(
        eps["ports"][0],
        json!({"name": "", "port": 8080, "protocol": "TCP"})
    );
    let annotate = json!({"metadata": {"annotations": {"note": "x"}}});
    let (_, eps) = raw
        .patch(
            &format!("{path}/web-1"),
            "application/merge-patch+json",
            annotate,
        )
        .await;
    assert_eq!(
        eps["metadata"]["generation"], 1,
        "an annotation is not a spec change"
    );
    let readdress = json!({"endpoints": [{"addresses": ["10.0.0.2"]}]});
    let (_, eps) = raw
        .patch(
            &format!("{path}/web-1"),
            "application/strategic-merge-patch+json",
            readdress,
        )
        .await;
    assert_eq!(eps["metadata"]["generation"], 2);
    let (code, body) = raw.post(path, json!({"metadata": {"name": "bad"}})).await;
    assert_eq!(
        (code, body["details"]["causes"][0]["field"].as_str()),
        (422, Some("addressType"))
    );
}

#[tokio::test]
async fn discovery_documents() {
    let server = ApiServer::start().await.unwrap();
    let raw = Raw::new(&server);
    let (_, version) = raw.get("/version").await;
    assert_eq!(version["major"], "1");
    let (_, api) = raw.get("/api").await;
    assert_eq!(
        (api["kind"].as_str(), &api["versions"]),
        (Some("APIVersions"), &json!(["v1"]))
    );
    let (_, core) = raw.get("/api/v1").await;
    assert_eq!(core["kind"], "APIResourceList");
    let configmaps = core["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "configmaps")
        .unwrap();
    assert_eq!(configmaps["shortNames"], json!(["cm"]));
    assert_eq!(configmaps["namespaced"], true);
    assert!(
        configmaps["verbs"]
            .as_array()
            .unwrap()
            .contains(&json!("watch"))
    );
    let namespaces = core["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "namespaces")
        .unwrap();
    assert_eq!(
        (
            namespaces["namespaced"].as_bool(),
            &namespaces["shortNames"]
        ),
        (Some(false), &json!(["ns"]))
    );
    let (_, groups) = raw.get("/apis").await;
    let group_names: Vec<&str> = groups["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["name"].as_str().unwrap())
        .collect();
    assert_eq!(group_names, ["discovery.k8s.io", "events.k8s.io"]);
    let (_, discovery) = raw.get("/apis/discovery.k8s.io/v1").await;
    assert_eq!(discovery["resources"][0]["kind"], "EndpointSlice");
    let (code, openapi) = raw.get("/openapi/v3").await;
    assert_eq!(code, 200);
    let url = openapi["paths"]["api/v1"]["serverRelativeURL"]
        .as_str()
        .unwrap();
    let (code, document) = raw.get(url).await;
    assert_eq!(code, 200);
    let patch = &document["paths"]["/api/v1/namespaces/{namespace}/configmaps/{name}"]["patch"];
    assert_eq!(
        patch["x-kubernetes-group-version-kind"]["kind"],
        "ConfigMap"
    );
    assert_eq!(raw.get("/openapi/v2").await.0, 404);
}
