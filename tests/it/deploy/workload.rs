//! The gateway's Deployment, read with dermaga's own flag parser, and what must agree with it:
//! its security settings, probes, grace period, ConfigMaps, LoadBalancer Service,
//! PodDisruptionBudget and NetworkPolicy.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use clap::Parser;
use dermaga::{Cli, RunArgs};
use dermaga::{ObjectName, Protocol};
use dermaga::{ReservedPorts, parse_port_map};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Container, PodSpec, Probe};
use k8s_openapi::api::networking::v1::{NetworkPolicyIngressRule, NetworkPolicyPeer};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::manifest::{Doc, Object};

/// The gateway as the manifests run it.
#[derive(Debug, Clone)]
pub struct Gateway {
    /// The Deployment.
    pub deployment: Deployment,
    /// Its dermaga container.
    pub container: Container,
    /// The container's flags (args, and `DERMAGA_*` variables), parsed by dermaga's parser.
    pub flags: RunArgs,
}

impl Gateway {
    /// The pod spec.
    pub fn pod(&self) -> &PodSpec {
        self.deployment
            .spec
            .template
            .spec
            .as_ref()
            .expect("checked in find")
    }

    /// The pod template's labels.
    pub fn pod_labels(&self) -> BTreeMap<String, String> {
        self.deployment
            .spec
            .template
            .metadata
            .as_ref()
            .and_then(|m| m.labels.clone())
            .unwrap_or_default()
    }

    /// The Deployment's namespace.
    pub fn namespace(&self) -> String {
        self.deployment
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".to_owned())
    }

    /// The ServiceAccount the pods run as.
    pub fn account(&self) -> ObjectName {
        let name = self
            .pod()
            .service_account_name
            .clone()
            .unwrap_or_else(|| "default".to_owned());
        ObjectName::new(self.namespace(), name)
    }

    /// The port maps named by the flags, TCP first.
    pub fn port_maps(&self) -> Vec<(Protocol, ObjectName)> {
        let mut maps = vec![(Protocol::Tcp, self.flags.tcp_services_configmap.clone())];
        maps.extend(
            self.flags
                .udp_services_configmap
                .clone()
                .map(|m| (Protocol::Udp, m)),
        );
        maps
    }

    /// The admin server's port.
    pub fn admin_port(&self) -> u16 {
        self.flags.admin_address.port()
    }

    /// Where the kubelet's probes go: the `--health-address` port when set, else the admin
    /// port; and the flag that says so.
    pub fn probe_port(&self) -> (u16, String) {
        match self.flags.health_address {
            Some(health) => (health.port(), format!("--health-address {health}")),
            None => (
                self.admin_port(),
                format!("--admin-address {}", self.flags.admin_address),
            ),
        }
    }

    /// The ports no port-map entry may use, as the gateway reserves them.
    pub fn reserved_ports(&self) -> ReservedPorts {
        self.flags.index_settings().reserved
    }

    /// A container port by number or name.
    pub fn resolve(&self, port: &IntOrString) -> Option<i32> {
        match port {
            IntOrString::Int(n) => Some(*n),
            IntOrString::String(name) => self
                .container
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(name.as_str()))
                .map(|p| p.container_port),
        }
    }
}

/// Parses a container's command line as dermaga would: `DERMAGA_*` variables of the container
/// count as the flags they stand for, unless the flag is also in `args` (the flag wins).
pub fn parse_flags(container: &Container) -> Result<RunArgs, String> {
    if let Some((name, _)) = std::env::vars().find(|(k, _)| k.starts_with("DERMAGA_")) {
        return Err(format!(
            "{name} is set in the test's environment; dermaga's flag parser would read it: unset it to run this test"
        ));
    }
    if let Some(command) = &container.command {
        return Err(format!(
            "container {:?} sets command {command:?}: keep the image's entrypoint /dermaga",
            container.name
        ));
    }
    let args = container.args.clone().unwrap_or_default();
    let mut argv = vec!["dermaga".to_owned()];
    for var in container
        .env
        .iter()
        .flatten()
        .filter(|v| v.name.starts_with("DERMAGA_"))
    {
        let flag = format!(
            "--{}",
            var.name["DERMAGA_".len()..]
                .to_lowercase()
                .replace('_', "-")
        );
        let Some(value) = &var.value else {
            return Err(format!(
                "{} comes from valueFrom; this test cannot know its value",
                var.name
            ));
        };
        if !args
            .iter()
            .any(|a| *a == flag || a.starts_with(&format!("{flag}=")))
        {
            argv.push(format!("{flag}={value}"));
        }
    }
    argv.extend(args);
    let cli = Cli::try_parse_from(&argv)
        .map_err(|e| format!("dermaga would not start with {argv:?}:\n{e}"))?;
    if cli.command.is_some() {
        return Err(format!("{argv:?} runs a subcommand, not the gateway"));
    }
    Ok(cli.run)
}

/// Finds the one Deployment and parses its flags.
pub fn find(docs: &[Doc]) -> Result<Gateway, Vec<String>> {
    let deployments: Vec<(&Doc, &Deployment)> = docs
        .iter()
        .filter_map(|d| match &d.object {
            Object::Deployment(dep) => Some((d, dep)),
            _ => None,
        })
        .collect();
    let [(doc, deployment)] = deployments[..] else {
        return Err(vec![format!(
            "expected exactly one Deployment, found {}",
            deployments.len()
        )]);
    };
    let Some(pod) = deployment.spec.template.spec.as_ref() else {
        return Err(vec![format!(
            "{}: the Deployment has no pod template",
            doc.source
        )]);
    };
    let [container] = &pod.containers[..] else {
        return Err(vec![format!(
            "{}: expected one container, found {}",
            doc.source,
            pod.containers.len()
        )]);
    };
    let flags = parse_flags(container).map_err(|e| vec![format!("{}: {e}", doc.source)])?;
    Ok(Gateway {
        deployment: deployment.clone(),
        container: container.clone(),
        flags,
    })
}

/// Whether `selector` selects pods with `labels`.
pub fn selects(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let by_labels = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let by_expressions = selector.match_expressions.iter().flatten().all(|e| {
        let values = e.values.clone().unwrap_or_default();
        match e.operator.as_str() {
            "In" => labels.get(&e.key).is_some_and(|v| values.contains(v)),
            "NotIn" => labels.get(&e.key).is_none_or(|v| !values.contains(v)),
            "Exists" => labels.contains_key(&e.key),
            "DoesNotExist" => !labels.contains_key(&e.key),
            _ => false,
        }
    });
    let empty = selector.match_labels.as_ref().is_none_or(|m| m.is_empty())
        && selector
            .match_expressions
            .as_ref()
            .is_none_or(|m| m.is_empty());
    !empty && by_labels && by_expressions
}

fn check_probe(
    gw: &Gateway,
    what: &str,
    probe: Option<&Probe>,
    path: &str,
    problems: &mut Vec<String>,
) {
    let (port, flag) = gw.probe_port();
    let port = i32::from(port);
    let Some(get) = probe.and_then(|p| p.http_get.as_ref()) else {
        problems.push(format!(
            "{what}: expected httpGet {path} on port {port} ({flag})"
        ));
        return;
    };
    if get.path.as_deref() != Some(path) {
        problems.push(format!("{what}: path {:?}, expected {path:?}", get.path));
    }
    match gw.resolve(&get.port) {
        Some(p) if p == port => {}
        other => problems.push(format!(
            "{what}: port {:?} (container port {other:?}) is not the probes' port {port} of {flag}",
            get.port
        )),
    }
    if get.scheme.as_deref().is_some_and(|s| s != "HTTP") {
        problems.push(format!(
            "{what}: scheme {:?}; the admin server speaks plain HTTP",
            get.scheme
        ));
    }
    if get.host.is_some() {
        problems.push(format!(
            "{what}: host {:?} is set; the kubelet must probe the pod itself",
            get.host
        ));
    }
}

/// The Deployment's own settings: security, probes, grace period, resources, replicas, spread.
pub fn check_deployment(docs: &[Doc], gw: &Gateway) -> Vec<String> {
    let mut p = Vec::new();
    let c = &gw.container;
    let pod = gw.pod();
    let spec = &gw.deployment.spec;
    let labels = gw.pod_labels();

    if gw.flags.config.is_some() {
        p.push(
            "--config is set: the gateway would read a file instead of watching the API server"
                .to_owned(),
        );
    }
    if !selects(&spec.selector, &labels) {
        p.push("the Deployment's selector does not select its own pod template".to_owned());
    }
    let replicas = spec.replicas.unwrap_or(1);
    if replicas < 2 {
        p.push(format!(
            "replicas {replicas}: run at least 2 so that one can be drained while the other serves"
        ));
    }

    // Security.
    let pod_sc = pod.security_context.clone().unwrap_or_default();
    let sc = c.security_context.clone().unwrap_or_default();
    if sc.run_as_non_root.or(pod_sc.run_as_non_root) != Some(true) {
        p.push("runAsNonRoot is not true".to_owned());
    }
    match sc.run_as_user.or(pod_sc.run_as_user) {
        Some(uid) if uid != 0 => {}
        other => p.push(format!(
            "runAsUser is {other:?}: set a numeric non-root user (the image's is 65532)"
        )),
    }
    let seccomp = sc
        .seccomp_profile
        .or(pod_sc.seccomp_profile)
        .map(|s| s.type_);
    if seccomp.as_deref() != Some("RuntimeDefault") {
        p.push(format!(
            "seccompProfile type is {seccomp:?}, expected RuntimeDefault"
        ));
    }
    if sc.read_only_root_filesystem != Some(true) {
        p.push("readOnlyRootFilesystem is not true".to_owned());
    }
    if sc.allow_privilege_escalation != Some(false) {
        p.push("allowPrivilegeEscalation is not false".to_owned());
    }
    if sc.privileged == Some(true) {
        p.push("the container is privileged".to_owned());
    }
    let caps = sc.capabilities.unwrap_or_default();
    if caps.drop.as_deref() != Some(&["ALL".to_owned()][..]) {
        p.push(format!(
            "capabilities.drop is {:?}, expected [ALL]",
            caps.drop
        ));
    }
    if caps.add.as_deref() != Some(&["NET_BIND_SERVICE".to_owned()][..]) {
        p.push(format!(
            "capabilities.add is {:?}, expected [NET_BIND_SERVICE] and nothing else",
            caps.add
        ));
    }
    if pod.host_network == Some(true) {
        p.push("hostNetwork is true".to_owned());
    }

    // The API server is needed: the token must be mounted.
    let account = gw.account();
    let sa_automount = docs.iter().find_map(|d| match &d.object {
        Object::ServiceAccount(sa)
            if sa.metadata.name.as_deref() == Some(account.name.as_str())
                && sa.metadata.namespace.as_deref() == Some(account.namespace.as_str()) =>
        {
            Some(sa.automount_service_account_token)
        }
        _ => None,
    });
    match sa_automount {
        None => p.push(format!(
            "ServiceAccount {account} (serviceAccountName) is not in the manifests"
        )),
        Some(sa) => {
            if pod.automount_service_account_token.or(sa) == Some(false) {
                p.push(
                    "automountServiceAccountToken is false: the kube provider needs the token"
                        .to_owned(),
                );
            }
        }
    }
    if pod.automount_service_account_token != Some(true) {
        p.push("set automountServiceAccountToken: true on the pod (it needs the API)".to_owned());
    }

    // Probes.
    check_probe(
        gw,
        "readinessProbe",
        c.readiness_probe.as_ref(),
        "/readyz",
        &mut p,
    );
    check_probe(
        gw,
        "livenessProbe",
        c.liveness_probe.as_ref(),
        "/healthz",
        &mut p,
    );

    // Shutdown: the kubelet must wait for --shutdown-delay, then --shutdown-grace, then the
    // access-log flush.
    let needed = gw.flags.shutdown_budget();
    let grace =
        Duration::from_secs(pod.termination_grace_period_seconds.unwrap_or(30).max(0) as u64);
    if grace <= needed {
        p.push(format!(
            "terminationGracePeriodSeconds {}s does not exceed --shutdown-delay {:?} + --shutdown-grace {:?} + the access-log flush {:?}: the kubelet would kill draining connections",
            grace.as_secs(),
            gw.flags.shutdown_delay,
            gw.flags.shutdown_grace,
            dermaga::ACCESS_LOG_FLUSH_TIMEOUT
        ));
    }

    // Resources.
    let resources = c.resources.clone().unwrap_or_default();
    for (what, set) in [
        ("requests", &resources.requests),
        ("limits", &resources.limits),
    ] {
        for r in ["cpu", "memory"] {
            if !set.as_ref().is_some_and(|m| m.contains_key(r)) {
                p.push(format!("resources.{what}.{r} is not set"));
            }
        }
    }

    // Replicas on different nodes when possible.
    let spread = pod
        .affinity
        .as_ref()
        .and_then(|a| a.pod_anti_affinity.as_ref())
        .and_then(|a| {
            a.preferred_during_scheduling_ignored_during_execution
                .as_ref()
        })
        .is_some_and(|terms| {
            terms.iter().any(|t| {
                t.pod_affinity_term.topology_key == "kubernetes.io/hostname"
                    && t.pod_affinity_term
                        .label_selector
                        .as_ref()
                        .is_some_and(|s| selects(s, &labels))
            })
        });
    if !spread {
        p.push("no preferred podAntiAffinity on kubernetes.io/hostname selecting the gateway's own pods".to_owned());
    }

    // Voluntary disruptions leave one replica.
    let ns = gw.namespace();
    let pdbs: Vec<_> = docs
        .iter()
        .filter_map(|d| match &d.object {
            Object::PodDisruptionBudget(b)
                if b.metadata.namespace.as_deref() == Some(ns.as_str())
                    && b.spec
                        .as_ref()
                        .and_then(|s| s.selector.as_ref())
                        .is_some_and(|s| selects(s, &labels)) =>
            {
                b.spec.as_ref()
            }
            _ => None,
        })
        .collect();
    match pdbs[..] {
        [pdb] => match &pdb.min_available {
            Some(IntOrString::Int(n)) if *n >= 1 && *n < replicas => {}
            other => p.push(format!("PodDisruptionBudget minAvailable is {other:?}: expected at least 1 and fewer than the {replicas} replicas")),
        },
        _ => p.push(format!("expected one PodDisruptionBudget selecting the gateway's pods, found {}", pdbs.len())),
    }
    p
}

fn config_map<'a>(docs: &'a [Doc], name: &ObjectName) -> Option<&'a ConfigMap> {
    docs.iter().find_map(|d| match &d.object {
        Object::ConfigMap(cm)
            if cm.metadata.name.as_deref() == Some(name.name.as_str())
                && cm.metadata.namespace.as_deref() == Some(name.namespace.as_str()) =>
        {
            Some(cm)
        }
        _ => None,
    })
}

/// The port maps the flags name exist, their entries are valid, and every mapped port (and
/// nothing else) is exposed on the LoadBalancer Service of the gateway's pods.
pub fn check_ports(docs: &[Doc], gw: &Gateway) -> Vec<String> {
    let mut p = Vec::new();
    let reserved = gw.reserved_ports();
    let mut mapped: BTreeSet<(String, i32)> = BTreeSet::new();
    for (protocol, name) in gw.port_maps() {
        let Some(cm) = config_map(docs, &name) else {
            p.push(format!(
                "ConfigMap {name} (named by the Deployment's flags) is not in the manifests"
            ));
            continue;
        };
        let map = parse_port_map(
            &name,
            &cm.data.clone().unwrap_or_default(),
            protocol,
            &reserved,
        );
        p.extend(map.errors.iter().map(|e| format!("rejected entry: {e}")));
        mapped.extend(
            map.entries
                .keys()
                .map(|port| (protocol.as_k8s().to_owned(), i32::from(port.get()))),
        );
    }

    let labels = gw.pod_labels();
    let ns = gw.namespace();
    let services: Vec<_> = docs
        .iter()
        .filter_map(|d| match &d.object {
            Object::Service(s) if s.metadata.namespace.as_deref() == Some(ns.as_str()) => Some(s),
            _ => None,
        })
        .filter(|s| {
            let spec = s.spec.clone().unwrap_or_default();
            spec.type_.as_deref() == Some("LoadBalancer")
                && spec.selector.as_ref().is_some_and(|sel| {
                    !sel.is_empty() && sel.iter().all(|(k, v)| labels.get(k) == Some(v))
                })
        })
        .collect();
    if services.is_empty() {
        p.push(format!(
            "no LoadBalancer Service in namespace {ns} selects the gateway's pods"
        ));
    }
    // Several LoadBalancer Services may share the ports (e.g. one for TCP, one for UDP where
    // the cloud cannot mix protocols): together they must expose every mapped port.
    let mut exposed = BTreeSet::new();
    let mut names = Vec::new();
    for svc in services {
        let name = format!(
            "Service {ns}/{}",
            svc.metadata.name.as_deref().unwrap_or("")
        );
        let spec = svc.spec.clone().unwrap_or_default();
        if spec.external_traffic_policy.as_deref() != Some("Local") {
            p.push(format!(
                "{name}: externalTrafficPolicy is {:?}, expected Local",
                spec.external_traffic_policy
            ));
        }
        for port in spec.ports.iter().flatten() {
            let protocol = port.protocol.clone().unwrap_or_else(|| "TCP".to_owned());
            let target = match &port.target_port {
                None => Some(port.port),
                Some(t) => gw.resolve(t),
            };
            let Some(target) = target else {
                p.push(format!(
                    "{name}: port {} targets {:?}, which is no container port",
                    port.port, port.target_port
                ));
                continue;
            };
            let why = u16::try_from(target)
                .ok()
                .filter(|_| protocol == "TCP")
                .and_then(|t| reserved.reason(t));
            if let Some(why) = why {
                p.push(format!(
                    "{name}: port {} exposes port {target} to the load balancer: {why}",
                    port.port
                ));
            } else if !mapped.contains(&(protocol.clone(), target)) {
                p.push(format!(
                    "{name}: port {} targets {target}/{protocol}, which no port-map entry opens",
                    port.port
                ));
            }
            exposed.insert((protocol, target));
        }
        names.push(name);
    }
    if !names.is_empty() {
        for (protocol, port) in mapped.difference(&exposed) {
            p.push(format!(
                "{}: mapped port {port}/{protocol} is not exposed; add `- {{name: {}-{port}, protocol: {protocol}, port: {port}, targetPort: {port}}}` to its ports",
                names.join(", "),
                protocol.to_lowercase()
            ));
        }
    }
    p
}

/// Who an ingress rule admits: everyone (no `from`, or an ipBlock of a whole address space
/// without exceptions), or only some.
fn admits_everyone(rule: &NetworkPolicyIngressRule) -> bool {
    let whole = |peer: &NetworkPolicyPeer| {
        peer.ip_block.as_ref().is_some_and(|b| {
            (b.cidr == "0.0.0.0/0" || b.cidr == "::/0")
                && b.except.as_ref().is_none_or(|e| e.is_empty())
        })
    };
    rule.from
        .as_ref()
        .is_none_or(|from| from.is_empty() || from.iter().any(whole))
}

/// Whether `rule` opens `port`/`protocol` (a rule without ports opens every port).
fn opens(rule: &NetworkPolicyIngressRule, gw: &Gateway, protocol: &str, port: i32) -> bool {
    let Some(ports) = rule.ports.as_ref().filter(|p| !p.is_empty()) else {
        return true;
    };
    ports.iter().any(|p| {
        if p.protocol.as_deref().unwrap_or("TCP") != protocol {
            return false;
        }
        let Some(first) = p.port.as_ref() else {
            return true;
        };
        let Some(first) = gw.resolve(first) else {
            return false;
        };
        port == first || p.end_port.is_some_and(|end| (first..=end).contains(&port))
    })
}

/// The NetworkPolicy of the gateway's pods: every mapped port (and every port a map could
/// add, but the reserved ones) open to everyone; the admin port open to some peers only (the
/// scrapers), never to everyone; the probes' own port (`--health-address`) to no pod.
pub fn check_network_policy(docs: &[Doc], gw: &Gateway) -> Vec<String> {
    let mut p = Vec::new();
    let labels = gw.pod_labels();
    let ns = gw.namespace();
    let policies: Vec<_> = docs
        .iter()
        .filter_map(|d| match &d.object {
            Object::NetworkPolicy(n) if n.metadata.namespace.as_deref() == Some(ns.as_str()) => {
                Some(n)
            }
            _ => None,
        })
        .filter(|n| {
            n.spec.as_ref().is_some_and(|s| {
                s.pod_selector
                    .as_ref()
                    .is_some_and(|sel| selects(sel, &labels))
            })
        })
        .collect();
    let [policy] = policies.as_slice() else {
        p.push(format!(
            "expected one NetworkPolicy in namespace {ns} selecting the gateway's pods, found {}",
            policies.len()
        ));
        return p;
    };
    let spec = policy.spec.clone().unwrap_or_default();
    if !spec
        .policy_types
        .as_ref()
        .is_some_and(|t| t.iter().any(|t| t == "Ingress"))
    {
        p.push("policyTypes does not list Ingress".to_owned());
    }
    let rules = spec.ingress.unwrap_or_default();
    let open_to_all = |protocol: &str, port: i32| {
        rules
            .iter()
            .any(|r| admits_everyone(r) && opens(r, gw, protocol, port))
    };
    let open_to_some =
        |protocol: &str, port: i32| rules.iter().any(|r| opens(r, gw, protocol, port));

    let reserved = gw.reserved_ports();
    // Every port a map entry could use must be open to everyone: the edges of the ranges
    // and of the reserved ports are where a policy goes wrong.
    let mut candidates: BTreeSet<(&str, i32)> = BTreeSet::new();
    for protocol in ["TCP", "UDP"] {
        for port in [1, 1023, 1024, 10000, 20000, 65535] {
            candidates.insert((protocol, port));
        }
        for r in [gw.admin_port(), gw.probe_port().0] {
            let r = i32::from(r);
            candidates.extend([(protocol, r - 1), (protocol, r), (protocol, r + 1)]);
        }
    }
    for (protocol, port) in candidates {
        let is_reserved = protocol == "TCP"
            && u16::try_from(port)
                .ok()
                .and_then(|port| reserved.reason(port))
                .is_some();
        if !is_reserved && !(1..=65535).contains(&port) {
            continue;
        }
        if !is_reserved && !open_to_all(protocol, port) {
            p.push(format!(
                "port {port}/{protocol} is not open to everyone: a port-map entry could use it"
            ));
        }
    }
    let admin = i32::from(gw.admin_port());
    if open_to_all("TCP", admin) {
        p.push(format!(
            "the admin port {admin} (/metrics, /routes) is open to everyone"
        ));
    } else if !open_to_some("TCP", admin) {
        p.push(format!(
            "the admin port {admin} is open to no one: the metrics scraper needs it"
        ));
    }
    if let Some(health) = gw.flags.health_address {
        let port = i32::from(health.port());
        if open_to_some("TCP", port) {
            p.push(format!(
                "the probes' port {port} (--health-address) is open to pods; only the kubelet (always admitted) needs it"
            ));
        }
    }
    p
}
