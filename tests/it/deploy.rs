//! The Kubernetes manifests in `deploy/`: every document parses into its Kubernetes type, the
//! kustomize base builds, its RBAC grants exactly what the kube provider calls
//! (`API_ACCESS`), and the Deployment, its flags, its ConfigMaps and its LoadBalancer Service
//! agree with one another. The checks run on the files as written and on the output of
//! `kubectl kustomize deploy/base` (the kubectl that `testenv/build.sh` builds beside the API server). The tests at the end change one
//! thing at a time and show that each check fails and says why.

mod helm;
mod manifest;
mod rbac;
mod workload;

use std::path::PathBuf;

use k8s_openapi::api::core::v1::PodSpec;
use k8s_openapi::api::rbac::v1::PolicyRule;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use manifest::{Doc, Object};

fn base_dir() -> PathBuf {
    manifest::repo().join("deploy/base")
}

fn fail(what: &str, problems: &[String]) -> ! {
    panic!("{what}:\n  - {}", problems.join("\n  - "))
}

fn base() -> manifest::Base {
    manifest::read_base(&base_dir())
        .unwrap_or_else(|e: Vec<String>| fail("deploy/base does not parse", &e))
}

fn built() -> Vec<Doc> {
    manifest::kustomize_build(&base_dir())
        .unwrap_or_else(|e: Vec<String>| fail("kubectl kustomize deploy/base", &e))
}

/// The base as written and as kustomize builds it.
fn both() -> [(&'static str, Vec<Doc>); 2] {
    [
        ("deploy/base", base().docs),
        ("kubectl kustomize deploy/base", built()),
    ]
}

fn gateway(docs: &[Doc]) -> workload::Gateway {
    workload::find(docs).unwrap_or_else(|e: Vec<String>| fail("the gateway Deployment", &e))
}

fn rbac_problems(docs: &[Doc]) -> Vec<String> {
    let gw = gateway(docs);
    let maps: Vec<_> = gw.port_maps().into_iter().map(|(_, m)| m).collect();
    rbac::check(docs, dermaga::API_ACCESS, &gw.account(), &maps, None)
}

/// RBAC against `API_ACCESS` + `SERVICE_PORTS_ACCESS` for the Service the Deployment's
/// `--manage-service-ports` names.
fn service_ports_rbac_problems(docs: &[Doc]) -> Vec<String> {
    let gw = gateway(docs);
    let maps: Vec<_> = gw.port_maps().into_iter().map(|(_, m)| m).collect();
    let accesses: Vec<dermaga::ApiAccess> = dermaga::API_ACCESS
        .iter()
        .chain(dermaga::SERVICE_PORTS_ACCESS)
        .copied()
        .collect();
    let managed = gw.flags.manage_service_ports.as_ref();
    rbac::check(docs, &accesses, &gw.account(), &maps, managed)
}

fn deployment_problems(docs: &[Doc]) -> Vec<String> {
    workload::check_deployment(docs, &gateway(docs))
}

fn port_problems(docs: &[Doc]) -> Vec<String> {
    workload::check_ports(docs, &gateway(docs))
}

fn policy_problems(docs: &[Doc]) -> Vec<String> {
    workload::check_network_policy(docs, &gateway(docs))
}

#[test]
fn every_manifest_parses_into_its_kubernetes_type() {
    let base = base();
    assert!(!base.docs.is_empty(), "deploy/base lists no objects");
    let examples = manifest::read_plain_dir(&manifest::repo().join("deploy/examples"))
        .unwrap_or_else(|e: Vec<String>| fail("deploy/examples does not parse", &e));
    assert!(!examples.is_empty(), "deploy/examples holds no objects");
}

#[test]
fn kustomize_builds_exactly_the_base_with_its_image() {
    let base = base();
    let built = built();
    let (written, output) = (
        manifest::identities(&base.docs),
        manifest::identities(&built),
    );
    assert_eq!(
        written, output,
        "kubectl kustomize deploy/base does not produce the objects of the files it lists"
    );

    let image_of = |docs: &[Doc]| gateway(docs).container.image.clone().unwrap_or_default();
    let written_image = image_of(&base.docs);
    let repository = written_image.split([':', '@']).next().unwrap().to_owned();
    let [entry] = &base.kustomization.images[..] else {
        panic!("kustomization.yaml should set the gateway's image in `images` (one entry)");
    };
    assert_eq!(
        entry.name, repository,
        "the `images` entry of kustomization.yaml does not name the Deployment's image {written_image}, so it changes nothing"
    );
    let mut expected = entry.new_name.clone().unwrap_or_else(|| entry.name.clone());
    if let Some(tag) = &entry.new_tag {
        expected = format!("{expected}:{tag}");
    }
    if let Some(digest) = &entry.digest {
        expected = format!("{expected}@{digest}");
    }
    assert_eq!(
        image_of(&built),
        expected,
        "the built Deployment does not run the image kustomization.yaml sets"
    );
}

#[test]
fn rbac_grants_exactly_what_the_kube_provider_calls() {
    for (what, docs) in both() {
        let problems = rbac_problems(&docs);
        if !problems.is_empty() {
            fail(&format!("{what}: RBAC differs from API_ACCESS"), &problems);
        }
    }
}

/// `deploy/overlays/gateway-api` (the base and `deploy/components/gateway-api`): the base's
/// objects and the component's, the flags that turn the Gateway API on, and RBAC that grants
/// exactly `API_ACCESS` and `GATEWAY_API_ACCESS`.
#[test]
fn the_gateway_api_component_adds_its_class_flags_and_exactly_its_rbac() {
    let dir = manifest::repo().join("deploy/overlays/gateway-api");
    let docs = manifest::kustomize_build(&dir)
        .unwrap_or_else(|e: Vec<String>| fail("kubectl kustomize deploy/overlays/gateway-api", &e));
    let base = manifest::identities(&built());
    let with = manifest::identities(&docs);
    let added: Vec<&String> = with.difference(&base).collect();
    assert_eq!(
        added,
        [
            "ClusterRole dermaga-gateway-api",
            "ClusterRoleBinding dermaga-gateway-api",
            "GatewayClass dermaga",
            "Role dermaga/dermaga-gateway-status",
            "RoleBinding dermaga/dermaga-gateway-status",
        ],
        "the component adds these objects"
    );
    assert!(base.is_subset(&with), "the component removes nothing");
    let gw = gateway(&docs);
    assert!(gw.flags.gateway_api, "--gateway-api is on");
    assert_eq!(
        gw.flags
            .publish_service
            .as_ref()
            .map(|s| s.to_string())
            .as_deref(),
        Some("dermaga/dermaga"),
        "--publish-service names the LoadBalancer Service of deploy/base"
    );
    let class = docs.iter().find_map(|d| match &d.object {
        Object::GatewayClass(c) => Some(c.spec.controller_name.clone()),
        _ => None,
    });
    assert_eq!(
        class.as_deref(),
        Some(gw.flags.gateway_controller_name.as_str()),
        "the GatewayClass names the controller the Deployment serves"
    );
    let maps: Vec<_> = gw.port_maps().into_iter().map(|(_, m)| m).collect();
    let accesses: Vec<dermaga::ApiAccess> = dermaga::API_ACCESS
        .iter()
        .chain(dermaga::GATEWAY_API_ACCESS)
        .copied()
        .collect();
    let problems = rbac::check(&docs, &accesses, &gw.account(), &maps, None);
    if !problems.is_empty() {
        fail(
            "deploy/overlays/gateway-api: RBAC differs from API_ACCESS + GATEWAY_API_ACCESS",
            &problems,
        );
    }
    assert!(
        deployment_problems(&docs).is_empty(),
        "{:?}",
        deployment_problems(&docs)
    );
}

/// `deploy/overlays/manage-service-ports`: the base, the flag naming the base's LoadBalancer
/// Service, and RBAC that grants exactly `API_ACCESS` and `SERVICE_PORTS_ACCESS` (patch on that
/// Service by name).
#[test]
fn the_service_ports_component_adds_its_flag_and_exactly_its_rbac() {
    let dir = manifest::repo().join("deploy/overlays/manage-service-ports");
    let docs = manifest::kustomize_build(&dir).unwrap_or_else(|e: Vec<String>| {
        fail("kubectl kustomize deploy/overlays/manage-service-ports", &e)
    });
    let base = manifest::identities(&built());
    let with = manifest::identities(&docs);
    let added: Vec<&String> = with.difference(&base).collect();
    assert_eq!(
        added,
        [
            "Role dermaga/dermaga-service-ports",
            "RoleBinding dermaga/dermaga-service-ports",
        ],
        "the component adds these objects"
    );
    assert!(base.is_subset(&with), "the component removes nothing");
    let gw = gateway(&docs);
    let managed = gw.flags.manage_service_ports.clone();
    assert_eq!(
        managed.as_ref().map(|s| s.to_string()).as_deref(),
        Some("dermaga/dermaga"),
        "--manage-service-ports names the LoadBalancer Service of deploy/base"
    );
    let problems = service_ports_rbac_problems(&docs);
    if !problems.is_empty() {
        fail(
            "deploy/overlays/manage-service-ports: RBAC differs from API_ACCESS + SERVICE_PORTS_ACCESS",
            &problems,
        );
    }
    assert!(
        deployment_problems(&docs).is_empty(),
        "{:?}",
        deployment_problems(&docs)
    );
}

#[test]
fn deployment_is_hardened_and_agrees_with_its_flags() {
    for (what, docs) in both() {
        let problems = deployment_problems(&docs);
        if !problems.is_empty() {
            fail(&format!("{what}: the Deployment"), &problems);
        }
    }
}

#[test]
fn the_port_maps_exist_and_every_mapped_port_is_on_the_load_balancer() {
    for (what, docs) in both() {
        let gw = gateway(&docs);
        let tcp = gw.flags.tcp_services_configmap.to_string();
        assert_eq!(
            tcp, "dermaga/tcp-services",
            "{what}: the TCP map of the base"
        );
        let problems = port_problems(&docs);
        if !problems.is_empty() {
            fail(
                &format!("{what}: port maps and the LoadBalancer Service"),
                &problems,
            );
        }
    }
}

// ---- Each check fails, and says why, when the manifests are changed. ----

fn pod_mut(docs: &mut [Doc]) -> &mut PodSpec {
    docs.iter_mut()
        .find_map(|d| match &mut d.object {
            Object::Deployment(dep) => dep.spec.template.spec.as_mut(),
            _ => None,
        })
        .unwrap()
}

fn rules_mut<'a>(docs: &'a mut [Doc], kind: &str) -> &'a mut Vec<PolicyRule> {
    docs.iter_mut()
        .find_map(|d| match (&mut d.object, kind) {
            (Object::Role(r), "Role") => r.rules.as_mut(),
            (Object::ClusterRole(r), "ClusterRole") => r.rules.as_mut(),
            _ => None,
        })
        .unwrap()
}

fn assert_reports(problems: &[String], expected: &[&str]) {
    for e in expected {
        assert!(
            problems.iter().any(|p| p.contains(e)),
            "no problem mentions {e:?}; problems: {problems:#?}"
        );
    }
}

#[test]
fn rbac_check_names_every_difference() {
    let docs = built();

    let mut more = docs.clone();
    rules_mut(&mut more, "ClusterRole")[0]
        .verbs
        .push("get".to_owned());
    assert_reports(
        &rbac_problems(&more),
        &["more than needed: get services (core) (any name) in every namespace"],
    );

    let mut unnamed = docs.clone();
    for rule in rules_mut(&mut unnamed, "Role") {
        rule.resource_names = None;
    }
    assert_reports(
        &rbac_problems(&unnamed),
        &[
            "more than needed: list configmaps (core) (any name) in namespace dermaga (Role)",
            "missing: watch configmaps (core) named \"udp-services\" in namespace dermaga (Role)",
        ],
    );

    let mut renamed = docs.clone();
    let args = pod_mut(&mut renamed).containers[0].args.as_mut().unwrap();
    for a in args
        .iter_mut()
        .filter(|a| a.starts_with("--udp-services-configmap"))
    {
        *a = "--udp-services-configmap=dermaga/udp-ports".to_owned();
    }
    assert_reports(
        &rbac_problems(&renamed),
        &[
            "missing: list configmaps (core) named \"udp-ports\" in namespace dermaga (Role)",
            "more than needed: watch configmaps (core) named \"udp-services\"",
        ],
    );

    let mut cluster_events = docs.clone();
    let events = rules_mut(&mut cluster_events, "Role").remove(1);
    rules_mut(&mut cluster_events, "ClusterRole").push(events);
    assert_reports(
        &rbac_problems(&cluster_events),
        &[
            "missing: create events (events.k8s.io) (any name) in namespace dermaga (Role)",
            "more than needed: patch events (events.k8s.io) (any name) in every namespace",
        ],
    );

    let mut unbound = docs.clone();
    unbound.retain(|d| !matches!(d.object, Object::ClusterRoleBinding(_)));
    assert_reports(
        &rbac_problems(&unbound),
        &[
            "ClusterRole \"dermaga\"",
            "is not bound",
            "missing: list endpointslices (discovery.k8s.io)",
        ],
    );
}

#[test]
fn deployment_check_fails_on_each_weakened_setting() {
    let docs = built();
    let mut weak = docs.clone();
    let pod = pod_mut(&mut weak);
    pod.termination_grace_period_seconds = Some(70);
    pod.automount_service_account_token = Some(false);
    let c = &mut pod.containers[0];
    let sc = c.security_context.as_mut().unwrap();
    sc.allow_privilege_escalation = Some(true);
    sc.read_only_root_filesystem = None;
    sc.capabilities.as_mut().unwrap().add =
        Some(vec!["NET_BIND_SERVICE".to_owned(), "NET_ADMIN".to_owned()]);
    c.readiness_probe
        .as_mut()
        .unwrap()
        .http_get
        .as_mut()
        .unwrap()
        .path = Some("/healthz".to_owned());
    c.liveness_probe
        .as_mut()
        .unwrap()
        .http_get
        .as_mut()
        .unwrap()
        .port = IntOrString::Int(8080);
    c.resources.as_mut().unwrap().limits = None;
    weak.retain(|d| !matches!(d.object, Object::PodDisruptionBudget(_)));
    assert_reports(
        &deployment_problems(&weak),
        &[
            "terminationGracePeriodSeconds 70s does not exceed --shutdown-delay 5s + --shutdown-grace 60s + the access-log flush 5s",
            "automountServiceAccountToken is false",
            "allowPrivilegeEscalation is not false",
            "readOnlyRootFilesystem is not true",
            "expected [NET_BIND_SERVICE] and nothing else",
            "readinessProbe: path Some(\"/healthz\"), expected \"/readyz\"",
            "livenessProbe: port Int(8080)",
            "resources.limits.cpu is not set",
            "expected one PodDisruptionBudget",
        ],
    );

    // Flags move the checks: a longer shutdown grace needs a longer grace period, another
    // probes port needs other probes, and without --health-address the probes go to the
    // admin port.
    let mut flags = docs.clone();
    let args = pod_mut(&mut flags).containers[0].args.as_mut().unwrap();
    args.push("--shutdown-grace=2m".to_owned());
    args.retain(|a| !a.starts_with("--health-address"));
    args.push("--health-address=0.0.0.0:9000".to_owned());
    assert_reports(
        &deployment_problems(&flags),
        &[
            "--shutdown-grace 120s",
            "readinessProbe: port String(\"health\") (container port Some(10255)) is not the probes' port 9000 of --health-address 0.0.0.0:9000",
            "livenessProbe: port String(\"health\") (container port Some(10255)) is not the probes' port 9000 of --health-address 0.0.0.0:9000",
        ],
    );
    let mut no_health = docs.clone();
    pod_mut(&mut no_health).containers[0]
        .args
        .as_mut()
        .unwrap()
        .retain(|a| !a.starts_with("--health-address"));
    assert_reports(
        &deployment_problems(&no_health),
        &[
            "readinessProbe: port String(\"health\") (container port Some(10255)) is not the probes' port 10254 of --admin-address 0.0.0.0:10254",
        ],
    );

    let mut root = docs.clone();
    let pod = pod_mut(&mut root);
    pod.security_context.as_mut().unwrap().run_as_user = Some(0);
    pod.containers[0]
        .security_context
        .as_mut()
        .unwrap()
        .run_as_user = None;
    pod.containers[0].env = Some(vec![k8s_openapi::api::core::v1::EnvVar {
        name: "DERMAGA_CONFIG".to_owned(),
        value: Some("/etc/dermaga/routes.yaml".to_owned()),
        value_from: None,
    }]);
    assert_reports(
        &deployment_problems(&root),
        &["runAsUser is Some(0)", "--config is set"],
    );
}

#[test]
fn port_check_fails_when_a_mapped_port_is_not_exposed() {
    let docs = built();

    let mut added = docs.clone();
    for d in &mut added {
        if let Object::ConfigMap(cm) = &mut d.object
            && cm.metadata.name.as_deref() == Some("udp-services")
        {
            cm.data = Some([("53".to_owned(), "kube-system/kube-dns:dns".to_owned())].into());
        }
        if let Object::ConfigMap(cm) = &mut d.object
            && cm.metadata.name.as_deref() == Some("tcp-services")
        {
            let data = cm.data.get_or_insert_default();
            data.insert("30000".to_owned(), "default/web:80".to_owned());
            data.insert("10254".to_owned(), "default/web:80".to_owned());
        }
    }
    assert_reports(
        &port_problems(&added),
        &[
            "mapped port 30000/TCP is not exposed",
            "mapped port 53/UDP is not exposed; add `- {name: udp-53, protocol: UDP, port: 53, targetPort: 53}`",
            "rejected entry: ConfigMap dermaga/tcp-services: entry \"10254\"",
        ],
    );

    let mut extra = docs.clone();
    for d in &mut extra {
        if let Object::Service(s) = &mut d.object {
            let ports = s.spec.as_mut().unwrap().ports.as_mut().unwrap();
            ports.push(k8s_openapi::api::core::v1::ServicePort {
                name: Some("admin".to_owned()),
                port: 10254,
                ..Default::default()
            });
            ports.push(k8s_openapi::api::core::v1::ServicePort {
                name: Some("probes".to_owned()),
                port: 8080,
                target_port: Some(IntOrString::String("health".to_owned())),
                ..Default::default()
            });
            ports.push(k8s_openapi::api::core::v1::ServicePort {
                name: Some("udp-10000".to_owned()),
                port: 10000,
                protocol: Some("UDP".to_owned()),
                ..Default::default()
            });
            s.spec.as_mut().unwrap().external_traffic_policy = Some("Cluster".to_owned());
        }
    }
    assert_reports(
        &port_problems(&extra),
        &[
            "port 10254 exposes port 10254 to the load balancer: the admin server listens there (--admin-address 0.0.0.0:10254)",
            "port 8080 exposes port 10255 to the load balancer: the probes are served there (--health-address 0.0.0.0:10255)",
            "port 10000 targets 10000/UDP, which no port-map entry opens",
            "externalTrafficPolicy is Some(\"Cluster\"), expected Local",
        ],
    );

    let mut missing = docs.clone();
    missing.retain(|d| !matches!(&d.object, Object::ConfigMap(cm) if cm.metadata.name.as_deref() == Some("udp-services")));
    assert_reports(
        &port_problems(&missing),
        &[
            "ConfigMap dermaga/udp-services (named by the Deployment's flags) is not in the manifests",
        ],
    );
}

#[test]
fn the_network_policy_opens_every_data_port_and_closes_the_admin_port() {
    for (what, docs) in both() {
        let problems = policy_problems(&docs);
        if !problems.is_empty() {
            fail(&format!("{what}: the NetworkPolicy"), &problems);
        }
    }
}

fn ingress_mut(
    docs: &mut [Doc],
) -> &mut Vec<k8s_openapi::api::networking::v1::NetworkPolicyIngressRule> {
    docs.iter_mut()
        .find_map(|d| match &mut d.object {
            Object::NetworkPolicy(n) => n.spec.as_mut()?.ingress.as_mut(),
            _ => None,
        })
        .expect("a NetworkPolicy with ingress rules")
}

#[test]
fn network_policy_check_fails_on_each_opening_or_closing_too_much() {
    use k8s_openapi::api::networking::v1::{NetworkPolicyIngressRule, NetworkPolicyPort};
    let docs = built();

    // The admin port's rule loses its `from`: open to everyone.
    let mut open = docs.clone();
    ingress_mut(&mut open)[1].from = None;
    assert_reports(
        &policy_problems(&open),
        &["the admin port 10254 (/metrics, /routes) is open to everyone"],
    );

    // The data ranges stop one short, and the health port is opened to pods.
    let mut short = docs.clone();
    let rules = ingress_mut(&mut short);
    let data = rules[0].ports.as_mut().unwrap();
    data[1].end_port = Some(65534);
    data[2].port = Some(IntOrString::Int(2));
    rules.push(NetworkPolicyIngressRule {
        from: rules[1].from.clone(),
        ports: Some(vec![NetworkPolicyPort {
            port: Some(IntOrString::String("health".to_owned())),
            protocol: Some("TCP".to_owned()),
            end_port: None,
        }]),
    });
    assert_reports(
        &policy_problems(&short),
        &[
            "port 65535/TCP is not open to everyone",
            "port 1/UDP is not open to everyone",
            "the probes' port 10255 (--health-address) is open to pods",
        ],
    );

    // The admin port moves, the policy does not: 10254 is now a data port nobody may reach,
    // and the new admin port is open to everyone.
    let mut moved = docs.clone();
    pod_mut(&mut moved).containers[0]
        .args
        .as_mut()
        .unwrap()
        .push("--admin-address=0.0.0.0:9000".to_owned());
    assert_reports(
        &policy_problems(&moved),
        &[
            "port 10254/TCP is not open to everyone",
            "the admin port 9000 (/metrics, /routes) is open to everyone",
        ],
    );

    let mut none = docs.clone();
    none.retain(|d| !matches!(d.object, Object::NetworkPolicy(_)));
    assert_reports(
        &policy_problems(&none),
        &["expected one NetworkPolicy in namespace dermaga selecting the gateway's pods, found 0"],
    );
}

#[test]
fn the_reader_rejects_unknown_kinds_fields_and_files() {
    let secret = "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\n";
    let e = manifest::parse_documents("t.yaml", secret, "default").unwrap_err();
    assert!(
        e[0].contains("t.yaml#1: Secret \"s\": unknown kind \"Secret\""),
        "{e:?}"
    );

    let old_pdb = "apiVersion: policy/v1beta1\nkind: PodDisruptionBudget\nmetadata: {name: p}\n";
    let e = manifest::parse_documents("t.yaml", old_pdb, "default").unwrap_err();
    assert!(
        e[0].contains("unknown kind \"PodDisruptionBudget\" of apiVersion \"policy/v1beta1\""),
        "{e:?}"
    );

    let typo = "---\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\nspec:\n  selector: {}\n  template:\n    spec:\n      containers:\n      - name: c\n        readinesProbe: {httpGet: {path: /readyz, port: 10254}}\n";
    let e = manifest::parse_documents("t.yaml", typo, "default").unwrap_err();
    assert!(
        e[0].contains("t.yaml#2: Deployment \"d\": field .spec.template.spec.containers[0].readinesProbe is not a field of this kind"),
        "{e:?}"
    );

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("kustomization.yaml"),
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources: [missing.yaml]\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("stray.yaml"),
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n",
    )
    .unwrap();
    let e = manifest::read_base(dir.path()).unwrap_err();
    assert_reports(
        &e,
        &[
            "resource \"missing.yaml\" does not exist",
            "stray.yaml is not listed in the resources",
        ],
    );

    std::fs::write(
        dir.path().join("kustomization.yaml"),
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresource: [stray.yaml]\n",
    )
    .unwrap();
    let e = manifest::read_base(dir.path()).unwrap_err();
    assert_reports(&e, &["unknown field `resource`"]);
}

/// `deploy/components/doctor`: its own ServiceAccount gets exactly `DOCTOR_ACCESS` (the port
/// maps of the base by name, the rest read-only everywhere); the gateway's gains nothing.
#[test]
fn the_doctor_component_grants_exactly_doctor_access_to_its_own_account() {
    let file = manifest::repo().join("deploy/components/doctor/rbac.yaml");
    let text = std::fs::read_to_string(&file).unwrap();
    let docs = manifest::parse_documents("deploy/components/doctor/rbac.yaml", &text, "default")
        .unwrap_or_else(|e| fail("deploy/components/doctor does not parse", &e));
    let base = built();
    let gw = gateway(&base);
    let maps: Vec<_> = gw.port_maps().into_iter().map(|(_, m)| m).collect();
    let doctor = dermaga::ObjectName::new("dermaga", "dermaga-doctor");
    let problems = rbac::check(&docs, dermaga::DOCTOR_ACCESS, &doctor, &maps, None);
    if !problems.is_empty() {
        fail(
            "deploy/components/doctor: RBAC differs from DOCTOR_ACCESS",
            &problems,
        );
    }
    let (granted, _) = rbac::granted(&docs, &gw.account());
    assert!(
        granted.is_empty(),
        "the gateway's account gains {granted:?}"
    );
}
