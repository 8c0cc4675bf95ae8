//! The Helm chart `deploy/helm/dermaga`, with helm v4 built from its Go module: `helm lint`;
//! `helm template` of an ingress-nginx values file parsed into typed objects that pass the
//! same checks as `deploy/base` (RBAC exactly `API_ACCESS`, the hardened Deployment, every
//! mapped port on the LoadBalancer Service, the NetworkPolicy) and carry the values' maps and
//! Service settings; the chart's RBAC equal to the base's; `helm install` into the real API
//! server.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use k8s_openapi::api::core::v1::{ConfigMap, Service};

use super::manifest::{self, Doc, Object};
use super::{
    built, deployment_problems, fail, gateway, policy_problems, port_problems, rbac_problems,
    service_ports_rbac_problems,
};
use crate::support::kube_api::KubeApi;
use crate::support::netns::NetNs;
use crate::support::testenv::binaries;

fn chart() -> PathBuf {
    manifest::repo().join("deploy/helm/dermaga")
}

fn values() -> PathBuf {
    manifest::repo().join("tests/it/deploy/ingress-nginx-values.yaml")
}

/// Runs helm; (success, stdout, stderr).
fn helm(args: &[&str], kubeconfig: Option<&Path>) -> (bool, String, String) {
    let mut command = Command::new(&binaries().helm);
    command.args(args);
    // Hermetic: no user config, cache or repositories.
    let home = tempfile::tempdir().unwrap();
    command
        .env("HELM_CONFIG_HOME", home.path().join("config"))
        .env("HELM_CACHE_HOME", home.path().join("cache"))
        .env("HELM_DATA_HOME", home.path().join("data"));
    if let Some(k) = kubeconfig {
        command.env("KUBECONFIG", k);
    }
    let out = command.output().expect("run helm");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `helm template dermaga <chart> -n dermaga <extra>`: (success, stdout, stderr).
fn template_text(extra: &[&str]) -> (bool, String, String) {
    let chart = chart();
    let mut args = vec![
        "template",
        "dermaga",
        chart.to_str().unwrap(),
        "-n",
        "dermaga",
    ];
    args.extend(extra);
    helm(&args, None)
}

/// [`template_text`], parsed strictly into typed objects.
fn template(extra: &[&str]) -> Vec<Doc> {
    let (ok, out, err) = template_text(extra);
    assert!(ok, "helm template failed: {err}");
    manifest::parse_documents("helm template", &out, "dermaga")
        .unwrap_or_else(|e| fail("the chart's output does not parse into its types", &e))
}

fn config_map<'a>(docs: &'a [Doc], name: &str) -> &'a ConfigMap {
    docs.iter()
        .find_map(|d| match &d.object {
            Object::ConfigMap(c) if c.metadata.name.as_deref() == Some(name) => Some(c),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no ConfigMap {name}"))
}

fn load_balancer(docs: &[Doc]) -> &Service {
    docs.iter()
        .find_map(|d| match &d.object {
            Object::Service(s)
                if s.spec.as_ref().and_then(|s| s.type_.as_deref()) == Some("LoadBalancer") =>
            {
                Some(s)
            }
            _ => None,
        })
        .expect("a LoadBalancer Service")
}

fn data(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn the_chart_renders_ingress_nginx_values_into_the_same_maps_and_ports_and_passes_the_base_checks()
{
    let (ok, out, err) = helm(&["lint", chart().to_str().unwrap()], None);
    assert!(ok && out.contains("0 chart(s) failed"), "{out}{err}");

    let values = values();
    let docs = template(&["-f", values.to_str().unwrap()]);
    for (what, problems) in [
        ("RBAC differs from API_ACCESS", rbac_problems(&docs)),
        ("the Deployment", deployment_problems(&docs)),
        ("the ports", port_problems(&docs)),
        ("the NetworkPolicy", policy_problems(&docs)),
    ] {
        if !problems.is_empty() {
            fail(&format!("helm template: {what}"), &problems);
        }
    }
    // The maps, as the values wrote them (options and PROXY flags too).
    assert_eq!(
        config_map(&docs, "tcp-services")
            .data
            .clone()
            .unwrap_or_default(),
        data(&[
            ("9000", "shop/db:5432"),
            ("9001", "shop/redis:6379:PROXY"),
            ("9001.idle-timeout", "10m"),
        ])
    );
    assert_eq!(
        config_map(&docs, "udp-services")
            .data
            .clone()
            .unwrap_or_default(),
        data(&[("53", "kube-system/kube-dns:53")])
    );
    // The controller Service's settings, and each mapped port on it.
    let lb = load_balancer(&docs);
    let spec = lb.spec.as_ref().unwrap();
    assert_eq!(spec.load_balancer_ip.as_deref(), Some("192.0.2.10"));
    assert_eq!(spec.external_traffic_policy.as_deref(), Some("Local"));
    assert_eq!(
        lb.metadata.annotations.as_ref().unwrap()["service.beta.kubernetes.io/aws-load-balancer-type"],
        "nlb"
    );
    let ports: Vec<(String, i32, String)> = spec
        .ports
        .iter()
        .flatten()
        .map(|p| {
            (
                p.name.clone().unwrap_or_default(),
                p.port,
                p.protocol.clone().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        ports,
        [
            ("tcp-9000".into(), 9000, "TCP".into()),
            ("tcp-9001".into(), 9001, "TCP".into()),
            ("udp-53".into(), 53, "UDP".into()),
        ]
    );
    // Replicas, resources, scheduling; dermaga's image, not the values' nginx image.
    let gw = gateway(&docs);
    assert_eq!(gw.deployment.spec.replicas, Some(3));
    let pod = gw.pod();
    assert_eq!(
        pod.tolerations.as_ref().unwrap()[0].key.as_deref(),
        Some("dedicated")
    );
    let container = &pod.containers[0];
    assert_eq!(
        container.image.as_deref(),
        Some("ghcr.io/dermaga/dermaga:0.1.0")
    );
    let limits = container
        .resources
        .as_ref()
        .unwrap()
        .limits
        .as_ref()
        .unwrap();
    assert_eq!(limits["memory"].0, "512Mi");
    // controller.metrics.enabled: a Service for the admin port's /metrics.
    assert!(docs.iter().any(|d| matches!(&d.object, Object::Service(s)
        if s.metadata.name.as_deref() == Some("dermaga-metrics"))));

    // A ServiceMonitor (a CRD's kind, so only its text is read here) when asked for.
    let (ok, out, err) = template_text(&[
        "-f",
        values.to_str().unwrap(),
        "--set",
        "controller.metrics.serviceMonitor.enabled=true",
    ]);
    assert!(ok, "{err}");
    assert!(
        out.contains("kind: ServiceMonitor") && out.contains("port: metrics"),
        "{out}"
    );

    // dermaga.manageServicePorts: the flag, and exactly the RBAC of the component.
    let docs = template(&[
        "-f",
        values.to_str().unwrap(),
        "--set",
        "dermaga.manageServicePorts=true",
    ]);
    let gw = gateway(&docs);
    let managed = gw.flags.manage_service_ports.clone();
    assert_eq!(
        managed.as_ref().map(|s| s.to_string()).as_deref(),
        Some("dermaga/dermaga")
    );
    let problems = service_ports_rbac_problems(&docs);
    if !problems.is_empty() {
        fail("manageServicePorts: RBAC", &problems);
    }

    // Whole numbers written without quotes (Helm reads them as floats) and an empty `udp:`.
    let dir = tempfile::tempdir().unwrap();
    let numbers = dir.path().join("values.yaml");
    std::fs::write(
        &numbers,
        "tcp:\n  \"9000\": \"shop/db:5432\"\n  \"9000.max-connections\": 1000000\nudp:\ndermaga:\n  maxConnections: 1000000\n",
    )
    .unwrap();
    let docs = template(&["-f", numbers.to_str().unwrap()]);
    assert_eq!(
        config_map(&docs, "tcp-services")
            .data
            .clone()
            .unwrap_or_default()["9000.max-connections"],
        "1000000"
    );
    assert_eq!(gateway(&docs).flags.max_connections, 1_000_000);
    let (ok, out, err) = helm(
        &[
            "install",
            "dermaga",
            chart().to_str().unwrap(),
            "-n",
            "dermaga",
            "--dry-run=client",
            "-f",
            numbers.to_str().unwrap(),
        ],
        None,
    );
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("(keys: 2) and dermaga/udp-services (keys: 0)"),
        "{out}"
    );

    // No port at all: a clear refusal, not a Service the API server rejects.
    let (ok, _, err) = template_text(&[]);
    assert!(!ok);
    assert!(err.contains("values tcp and udp map no port"), "{err}");
}

/// The RBAC objects (kind, name, namespace, rules or roleRef and subjects), labels left out.
fn rbac_objects(docs: &[Doc]) -> BTreeMap<String, String> {
    docs.iter()
        .filter_map(|d| {
            let (kind, body) = match &d.object {
                Object::Role(r) => ("Role", serde_json::to_string(&r.rules).unwrap()),
                Object::ClusterRole(r) => ("ClusterRole", serde_json::to_string(&r.rules).unwrap()),
                Object::RoleBinding(b) => (
                    "RoleBinding",
                    serde_json::to_string(&(&b.role_ref, &b.subjects)).unwrap(),
                ),
                Object::ClusterRoleBinding(b) => (
                    "ClusterRoleBinding",
                    serde_json::to_string(&(&b.role_ref, &b.subjects)).unwrap(),
                ),
                Object::ServiceAccount(_) => ("ServiceAccount", String::new()),
                _ => return None,
            };
            let m = d.object.meta();
            Some((
                format!(
                    "{kind} {}/{}",
                    m.namespace.clone().unwrap_or_default(),
                    m.name.clone().unwrap_or_default()
                ),
                body,
            ))
        })
        .collect()
}

#[test]
fn the_chart_and_the_kustomize_base_render_the_same_rbac() {
    let values = values();
    let chart = rbac_objects(&template(&["-f", values.to_str().unwrap()]));
    let base = rbac_objects(&built());
    assert!(!base.is_empty());
    assert_eq!(chart, base);
}

#[test]
fn helm_installs_the_chart_with_ingress_nginx_values_into_the_api_server() {
    NetNs::create().block_on(async {
        let api = KubeApi::start();
        let chart = chart();
        let values = values();
        let (ok, out, err) = helm(
            &[
                "install",
                "dermaga",
                chart.to_str().unwrap(),
                "-n",
                "dermaga",
                "--create-namespace",
                "-f",
                values.to_str().unwrap(),
            ],
            Some(api.kubeconfig()),
        );
        assert!(ok, "helm install failed: {out}{err}");
        println!("{out}");
        assert!(
            out.contains("Ignored values (ingress-nginx's, with no meaning for dermaga): defaultBackend, controller.admissionWebhooks, controller.config, controller.image, controller.ingressClassResource, controller.service.enableHttp"),
            "{out}"
        );
        let map = api.get("configmap", "dermaga", "tcp-services");
        assert_eq!(map["data"]["9001"], "shop/redis:6379:PROXY");
        assert_eq!(map["data"]["9001.idle-timeout"], "10m");
        let udp = api.get("configmap", "dermaga", "udp-services");
        assert_eq!(udp["data"]["53"], "kube-system/kube-dns:53");
        let service = api.get("service", "dermaga", "dermaga");
        let ports: Vec<(i64, String)> = service["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p["port"].as_i64().unwrap(), p["protocol"].as_str().unwrap().to_owned()))
            .collect();
        assert_eq!(
            ports,
            [(9000, "TCP".into()), (9001, "TCP".into()), (53, "UDP".into())]
        );
        let deployment = api.get("deployment", "dermaga", "dermaga");
        assert_eq!(deployment["spec"]["replicas"], 3);
        let (ok, _, err) = helm(&["uninstall", "dermaga", "-n", "dermaga"], Some(api.kubeconfig()));
        assert!(ok, "{err}");
    });
}
