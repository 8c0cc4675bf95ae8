//! The Gateway API as the real API server serves it: the standard-channel CRDs of
//! `sigs.k8s.io/gateway-api` (the version `testenv/gateway-api/go.mod` requires, read from that
//! Go module by `testenv/build.sh`) install, and TCPRoute, UDPRoute and TLSRoute are served as
//! `v1` with the upstream validation in force; then dermaga with `--gateway-api`, installed by
//! `deploy/overlays/gateway-api` and judged by the real RBAC authorizer, serves the routes and
//! writes their status from one of two replicas.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::kube_api::{GATEWAY_USER, KubeApi};
use crate::support::netns::NetNs;
use crate::support::process::Dermaga;
use crate::support::testenv::binaries;
use crate::support::{Backend, greeting, http_get, metric_in};
use dermaga::Protocol;
use dermaga::fixture::{self, Fixture};

/// Applies the standard-channel CRDs and waits until they are served.
fn install_crds(api: &KubeApi) {
    let crds = binaries().gateway_api_crds.to_str().unwrap().to_owned();
    api.kubectl(&["apply", "--server-side", "-f", &crds]);
    api.kubectl(&[
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd",
        "tcproutes.gateway.networking.k8s.io",
        "udproutes.gateway.networking.k8s.io",
        "tlsroutes.gateway.networking.k8s.io",
        "gateways.gateway.networking.k8s.io",
        "gatewayclasses.gateway.networking.k8s.io",
        "referencegrants.gateway.networking.k8s.io",
    ]);
}

const GATEWAY: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: dermaga}
spec: {controllerName: dermaga.io/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge, namespace: default}
spec:
  gatewayClassName: dermaga
  listeners:
  - {name: shop, protocol: TCP, port: 10000, allowedRoutes: {kinds: [{kind: TCPRoute}]}}
  - {name: dns, protocol: UDP, port: 53, allowedRoutes: {kinds: [{kind: UDPRoute}]}}
  - name: tls
    protocol: TLS
    port: 443
    tls: {mode: Passthrough}
    allowedRoutes: {namespaces: {from: All}, kinds: [{kind: TLSRoute}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: TCPRoute
metadata: {name: shop, namespace: default}
spec:
  parentRefs: [{name: edge, sectionName: shop}]
  rules:
  - backendRefs:
    - {name: web, port: 80, weight: 90}
    - {name: web-canary, port: 80, weight: 10}
---
apiVersion: gateway.networking.k8s.io/v1
kind: UDPRoute
metadata: {name: dns, namespace: default}
spec:
  parentRefs: [{name: edge, port: 53}]
  rules:
  - backendRefs: [{name: kube-dns, namespace: kube-system, port: 53}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: TLSRoute
metadata: {name: sites, namespace: default}
spec:
  parentRefs: [{name: edge, sectionName: tls}]
  hostnames: [shop.example.com, "*.example.org"]
  rules:
  - backendRefs: [{name: sites, port: 443}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: ReferenceGrant
metadata: {name: from-default, namespace: kube-system}
spec:
  from: [{group: gateway.networking.k8s.io, kind: UDPRoute, namespace: default}]
  to: [{group: "", kind: Service}]
"#;

#[test]
fn the_upstream_standard_crds_install_and_serve_l4_routes_as_v1_with_their_validation() {
    NetNs::create().block_on(async {
        let api = KubeApi::start();
        install_crds(&api);
        api.apply(GATEWAY);

        let route: Value = api.get("tcproutes.v1.gateway.networking.k8s.io", "default", "shop");
        assert_eq!(route["apiVersion"], "gateway.networking.k8s.io/v1");
        let refs = &route["spec"]["rules"][0]["backendRefs"];
        assert_eq!(
            (refs[0]["weight"].clone(), refs[1]["weight"].clone()),
            (90.into(), 10.into())
        );
        // Defaults the CRD's schema writes: the core group and kind Service of a backendRef.
        assert_eq!(refs[0]["kind"], "Service", "{refs}");
        let tls: Value = api.get("tlsroutes.v1.gateway.networking.k8s.io", "default", "sites");
        assert_eq!(tls["spec"]["hostnames"][1], "*.example.org");
        let udp: Value = api.get("udproutes.v1.gateway.networking.k8s.io", "default", "dns");
        assert_eq!(udp["spec"]["parentRefs"][0]["port"], 53);

        // The upstream validation is in force: a weight above 1,000,000 and a hostname that is
        // not one are refused by the API server itself.
        for (bad, expected, named) in [
            ("weight: 10", "weight: 1000001", "backendRefs[1].weight"),
            ("shop.example.com", "Shop_Example", "spec.hostnames[0]"),
        ] {
            let doc = GATEWAY
                .split("---")
                .find(|d| d.contains(bad) && (d.contains("TCPRoute") || d.contains("TLSRoute")))
                .unwrap()
                .replace(bad, expected);
            let out = api.try_apply(&doc);
            let err = out.expect_err(&format!("{expected} was accepted:\n{doc}"));
            assert!(err.contains(named), "{err}");
            println!("refused: {}", err.lines().next().unwrap_or(""));
        }
    });
}

/// Service `ns/name` with TCP port 80 named `main`, its one EndpointSlice with `backend`
/// (ready), as a List to apply.
fn service_at(ns: &str, name: &str, backend: SocketAddr) -> String {
    let items = vec![
        fixture::service(ns, name)
            .port(fixture::port(80).named("main").protocol(Protocol::Tcp))
            .json(),
        fixture::endpoint_slice(ns, &format!("{name}-1"), name)
            .port(
                fixture::port(backend.port())
                    .named("main")
                    .protocol(Protocol::Tcp),
            )
            .endpoint(fixture::endpoint(backend.ip()).ready(true))
            .json(),
    ];
    serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items}).to_string()
}

/// The condition `type_` of a status `conditions` list: (status, reason).
fn condition(conditions: &Value, type_: &str) -> Option<(String, String)> {
    conditions.as_array()?.iter().find_map(|c| {
        (c["type"] == type_).then(|| {
            (
                c["status"].as_str().unwrap_or("").to_owned(),
                c["reason"].as_str().unwrap_or("").to_owned(),
            )
        })
    })
}

/// Polls (bounded) until `check` holds of the object, printing it when it never does.
async fn wait_object(
    api: &KubeApi,
    resource: &str,
    ns: &str,
    name: &str,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let object = api.get(resource, ns, name);
        if check(&object) {
            return object;
        }
        assert!(
            Instant::now() < deadline,
            "{what} never held:\n{:#}",
            object["status"]
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits (bounded) until the first parent entry of route `ns/name` has `Accepted` and
/// `ResolvedRefs` with these (status, reason).
async fn wait_parent(
    api: &KubeApi,
    resource: &str,
    (ns, name): (&str, &str),
    accepted: (&str, &str),
    resolved: (&str, &str),
) -> Value {
    let what = format!("{name}: Accepted {accepted:?}, ResolvedRefs {resolved:?}");
    let pair = |(s, r): (&str, &str)| Some((s.to_owned(), r.to_owned()));
    wait_object(api, resource, ns, name, &what, |r| {
        let p = &r["status"]["parents"][0];
        condition(&p["conditions"], "Accepted") == pair(accepted)
            && condition(&p["conditions"], "ResolvedRefs") == pair(resolved)
    })
    .await
}

async fn metrics(admin: SocketAddr) -> String {
    http_get(admin, "/metrics").await.1
}

fn writes(text: &str) -> f64 {
    [
        "Gateway",
        "GatewayClass",
        "TCPRoute",
        "UDPRoute",
        "TLSRoute",
    ]
    .iter()
    .map(|kind| {
        metric_in(
            text,
            "dermaga_gateway_status_writes_total",
            &[("kind", kind), ("result", "written")],
        )
    })
    .sum()
}

const ROUTE: &str = "tcproutes.v1.gateway.networking.k8s.io";
const GATEWAY_RESOURCE: &str = "gateways.v1.gateway.networking.k8s.io";

#[test]
fn two_replicas_serve_tcp_routes_from_the_api_server_and_one_writes_their_status() {
    NetNs::create().block_on(async {
        let api = KubeApi::start();
        install_crds(&api);
        let overlay =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/overlays/gateway-api");
        api.kubectl(&["apply", "-k", overlay.to_str().unwrap()]);
        api.kubectl(&["delete", "configmap", "tcp-services", "-n", "dermaga"]);
        for ns in ["infra", "shop", "payments"] {
            api.kubectl(&["create", "namespace", ns]);
        }
        let web = Backend::start("10.233.19.1", "web").await;
        let canary = Backend::start("10.233.19.2", "canary").await;
        let pay = Backend::start("10.233.19.3", "pay").await;
        api.apply(&service_at("shop", "web", web.addr));
        api.apply(&service_at("shop", "canary", canary.addr));
        api.apply(&service_at("payments", "pay", pay.addr));
        api.apply(
            &fixture::gateway("infra", "edge", "dermaga")
                .listener("shop", "TCP", 10000)
                .allow_from("All")
                .listener("pay", "TCP", 10001)
                .allow_from("All")
                .listener("sites", "TLS", 10443)
                .passthrough()
                .allow_from("All")
                .yaml(),
        );
        api.apply(
            &fixture::tls_route("shop", "sites")
                .parent("infra/edge", Some("sites"))
                .hostname("shop.example.com")
                .backend("web", 80, None)
                .yaml(),
        );
        api.apply(
            &fixture::tcp_route("shop", "shop")
                .parent("infra/edge", Some("shop"))
                .backend("web", 80, Some(1))
                .backend("canary", 80, Some(0))
                .yaml(),
        );
        // A backend in another namespace, without a ReferenceGrant there yet.
        api.apply(
            &fixture::tcp_route("shop", "pay")
                .parent("infra/edge", Some("pay"))
                .backend("payments/pay", 80, None)
                .yaml(),
        );

        let kubeconfig = api.service_account_kubeconfig("dermaga", "dermaga");
        let start = |listen: &str| {
            let admin = format!("{listen}:0");
            Dermaga::start(&[
                "--kubeconfig",
                kubeconfig.to_str().unwrap(),
                "--tcp-services-configmap",
                "dermaga/tcp-services",
                "--gateway-api",
                "--publish-service",
                "dermaga/dermaga",
                "--listen-address",
                listen,
                "--admin-address",
                &admin,
                "--shutdown-delay",
                "0s",
                "--drain-timeout",
                "2s",
            ])
        };
        let mut one = start("127.1.19.1");
        let mut two = start("127.1.19.2");
        let (admin_one, admin_two) = (one.admin_address(), two.admin_address());
        for (d, listen) in [(&mut one, "127.1.19.1"), (&mut two, "127.1.19.2")] {
            d.wait_log(&["listening", "10000/TCP"]);
            // Weight 0 gets nothing: every connection reaches web.
            for _ in 0..20 {
                let to: SocketAddr = format!("{listen}:10000").parse().unwrap();
                assert_eq!(greeting(to).await.unwrap(), "web");
            }
            // The cross-namespace backend is refused until granted.
            let to: SocketAddr = format!("{listen}:10001").parse().unwrap();
            assert!(greeting(to).await.is_err(), "RefNotPermitted: refused");
        }

        // Status, written by one replica.
        let gateway = wait_object(
            &api,
            GATEWAY_RESOURCE,
            "infra",
            "edge",
            "Gateway Programmed with 1 route per listener",
            |g| {
                let s = &g["status"];
                condition(&s["conditions"], "Programmed")
                    == Some(("True".into(), "Programmed".into()))
                    && s["listeners"][0]["attachedRoutes"] == 1
                    && s["listeners"][1]["attachedRoutes"] == 1
            },
        )
        .await;
        let generation = gateway["metadata"]["generation"].clone();
        assert_eq!(
            gateway["status"]["conditions"][0]["observedGeneration"],
            generation
        );
        assert_eq!(
            gateway["status"]["listeners"][0]["supportedKinds"][0]["kind"],
            "TCPRoute"
        );
        let accepted = ("True", "Accepted");
        let resolved = ("True", "ResolvedRefs");
        let not_permitted = ("False", "RefNotPermitted");
        let shop = wait_parent(&api, ROUTE, ("shop", "shop"), accepted, resolved).await;
        assert_eq!(
            shop["status"]["parents"][0]["controllerName"],
            "dermaga.io/gateway-controller"
        );
        // A TLSRoute through the API server: watched, attached to the passthrough listener.
        let tls = "tlsroutes.v1.gateway.networking.k8s.io";
        wait_parent(&api, tls, ("shop", "sites"), accepted, resolved).await;
        wait_parent(&api, ROUTE, ("shop", "pay"), accepted, not_permitted).await;
        wait_object(
            &api,
            "gatewayclasses.v1.gateway.networking.k8s.io",
            "",
            "dermaga",
            "class Accepted",
            |c| {
                condition(&c["status"]["conditions"], "Accepted")
                    == Some(("True".into(), "Accepted".into()))
            },
        )
        .await;

        // The grant: traffic, and the condition turns.
        api.apply(
            &fixture::reference_grant("payments", "from-shop", "TCPRoute", "shop", Some("pay"))
                .yaml(),
        );
        wait_parent(&api, ROUTE, ("shop", "pay"), accepted, resolved).await;
        for listen in ["127.1.19.1", "127.1.19.2"] {
            let to: SocketAddr = format!("{listen}:10001").parse().unwrap();
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                match greeting(to).await {
                    Ok(tag) => {
                        assert_eq!(tag, "pay");
                        break;
                    }
                    Err(e) => assert!(
                        Instant::now() < deadline,
                        "{listen}: never served after the grant: {e}"
                    ),
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }

        // The grant deleted (TCPRouteReferenceGrant's second step): RefNotPermitted again,
        // and refused again.
        api.kubectl(&["delete", "referencegrant", "from-shop", "-n", "payments"]);
        wait_parent(&api, ROUTE, ("shop", "pay"), accepted, not_permitted).await;
        for listen in ["127.1.19.1", "127.1.19.2"] {
            let to: SocketAddr = format!("{listen}:10001").parse().unwrap();
            let deadline = Instant::now() + Duration::from_secs(30);
            while greeting(to).await.is_ok() {
                assert!(
                    Instant::now() < deadline,
                    "{listen}: still served without the grant"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }

        // One writer: one replica leads and has written, the other has written nothing.
        let (m1, m2) = (metrics(admin_one).await, metrics(admin_two).await);
        let leaders = [&m1, &m2].map(|m| metric_in(m, "dermaga_gateway_status_leader", &[]));
        let written = [writes(&m1), writes(&m2)];
        println!("leader gauge {leaders:?}, status writes {written:?}");
        assert_eq!(leaders.iter().sum::<f64>(), 1.0, "exactly one leader");
        let leader = if leaders[0] == 1.0 { 0 } else { 1 };
        assert_eq!(written[1 - leader], 0.0, "the follower writes nothing");
        assert!(
            written[leader] >= 7.0,
            "class, Gateway, three routes, and the pay route twice more"
        );

        // No update storm: a change that does not change any status (an endpoint moves) is
        // seen by both replicas and costs no write.
        let before = written[leader];
        let web2 = Backend::start("10.233.19.4", "web").await;
        api.apply(&service_at("shop", "web", web2.addr));
        for admin in [admin_one, admin_two] {
            let deadline = Instant::now() + Duration::from_secs(30);
            while !http_get(admin, "/routes")
                .await
                .1
                .contains(&web2.addr.to_string())
            {
                assert!(
                    Instant::now() < deadline,
                    "the moved endpoint never arrived"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        let admins = [admin_one, admin_two];
        let after = writes(&metrics(admins[leader]).await);
        assert_eq!(after, before, "an endpoint change wrote status");
        let audit_writes = api
            .requests_of(GATEWAY_USER)
            .iter()
            .filter(|r| r.resource.ends_with("/status"))
            .count();
        println!("status writes seen by the API server's audit log: {audit_writes}");

        // The LoadBalancer gets its address (what a cloud's controller writes): the Gateway
        // reports it, from --publish-service.
        api.kubectl(&[
            "patch",
            "service",
            "dermaga",
            "-n",
            "dermaga",
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"status":{"loadBalancer":{"ingress":[{"ip":"192.0.2.10"},{"hostname":"lb.example.com"}]}}}"#,
        ]);
        let gateway = wait_object(&api, GATEWAY_RESOURCE, "infra", "edge", "Gateway addresses", |g| {
            g["status"]["addresses"].as_array().is_some_and(|a| a.len() == 2)
        })
        .await;
        assert_eq!(
            gateway["status"]["addresses"],
            serde_json::json!([
                {"type": "IPAddress", "value": "192.0.2.10"},
                {"type": "Hostname", "value": "lb.example.com"},
            ])
        );

        // The leader stops (and releases the Lease): the other takes over and reports the next
        // change (a new generation of the route).
        let follower_admin = admins[1 - leader];
        if leader == 0 {
            assert!(one.terminate().success());
        } else {
            assert!(two.terminate().success());
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while metric_in(
            &metrics(follower_admin).await,
            "dermaga_gateway_status_leader",
            &[],
        ) != 1.0
        {
            assert!(
                Instant::now() < deadline,
                "the other replica never took the Lease"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Connections held open across the weight change keep working.
        let survivor = if leader == 0 {
            "127.1.19.2"
        } else {
            "127.1.19.1"
        };
        let to: SocketAddr = format!("{survivor}:10000").parse().unwrap();
        let mut held = Vec::new();
        for _ in 0..5 {
            use tokio::io::AsyncBufReadExt;
            let stream = tokio::net::TcpStream::connect(to).await.unwrap();
            let mut reader = tokio::io::BufReader::new(stream);
            let mut tag = String::new();
            reader.read_line(&mut tag).await.unwrap();
            assert_eq!(tag.trim_end(), "web");
            held.push(reader);
        }
        api.apply(
            &fixture::tcp_route("shop", "shop")
                .parent("infra/edge", Some("shop"))
                .backend("web", 80, Some(0))
                .backend("canary", 80, Some(1))
                .yaml(),
        );
        let route = wait_object(&api, ROUTE, "shop", "shop", "observedGeneration 2", |r| {
            r["status"]["parents"][0]["conditions"][0]["observedGeneration"] == 2
        })
        .await;
        assert_eq!(route["metadata"]["generation"], 2);
        let deadline = Instant::now() + Duration::from_secs(30);
        while greeting(to).await.ok().as_deref() != Some("canary") {
            assert!(
                Instant::now() < deadline,
                "the new weights never took effect"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for (i, reader) in held.iter_mut().enumerate() {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let message = format!("still here {i}\n");
            reader.get_mut().write_all(message.as_bytes()).await.unwrap();
            let mut echo = vec![0u8; message.len()];
            reader
                .read_exact(&mut echo)
                .await
                .unwrap_or_else(|e| panic!("held connection {i} broke across the change: {e}"));
            assert_eq!(echo, message.as_bytes());
        }
        drop(held);
        let survivor = if leader == 0 { &mut two } else { &mut one };
        assert!(survivor.terminate().success());
        let requests = api.requests_of(GATEWAY_USER);
        for r in &requests {
            // The authorizer refuses with 403 (401: credentials). Other answers are not
            // refusals: 404 for the Lease before it exists, 409 for a conflicting write, 429
            // for a watch of a CRD whose watch cache is still filling (retried).
            assert!(
                r.code != 401 && r.code != 403,
                "the API server refused a call of the gateway: {r:?}"
            );
            assert!(
                dermaga::API_ACCESS
                    .iter()
                    .chain(dermaga::GATEWAY_API_ACCESS)
                    .any(|a| a.group == r.group
                        && a.resource == r.resource
                        && a.verbs.contains(&r.verb.as_str())),
                "an undeclared call: {r:?}"
            );
        }
        println!(
            "{} API calls by the two replicas, each declared and allowed",
            requests.len()
        );
    });
}
