//! The Gateway API as the real API server serves it: the standard-channel CRDs of
//! `sigs.k8s.io/gateway-api` (the version `testenv/gateway-api/go.mod` requires, read from that
//! Go module by `testenv/build.sh`) install, and TCPRoute, UDPRoute and TLSRoute are served as
//! `v1` with the upstream validation in force. The ground the Gateway API provider (#11) will
//! stand on; dermaga does not read these objects yet.

use serde_json::Value;

use crate::support::kube_api::KubeApi;
use crate::support::netns::NetNs;
use crate::support::testenv::binaries;

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
