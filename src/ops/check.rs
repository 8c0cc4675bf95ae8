//! `dermaga check FILE...`: the gateway's judgement of a configuration, offline, before
//! `kubectl apply`.
//!
//! It uses the gateway's own code end to end: each FILE is read by the `--config` loader
//! (`ConfigFile`: regular files only, `--config-max-bytes`, the same manifest reader and the
//! same duplicate rule, applied across the files too), the objects go into the same [`Index`]
//! with the same port-map names and reserved ports, and the same [`build`] judges them. The
//! split between errors and warnings follows what the gateway would do:
//!
//! - **error** (exit code 1): the gateway would refuse the file, or would not serve an entry as
//!   written (`EntryError::affects_routing`), or there is no port map to check at all;
//! - **warning**: the gateway serves what it can, but something is worth knowing: an unknown
//!   per-port option (ignored, as ingress-nginx does), a reference or port map not in the input
//!   (it may exist in the cluster), a mapped port that the input's LoadBalancer Service does
//!   not expose (unless `--manage-service-ports` says the gateway adds it), the UDP map read
//!   without `--udp-services-configmap`.

use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::control::build::build;
use crate::control::index::{Index, IndexSettings, Object};
use crate::control::provider::config_file::ConfigFile;
use crate::control::provider::manifest::{Position, find_duplicate};
use crate::control::table::{ConfigProblem, RouteTable};
use crate::names::{ObjectName, Protocol, RouteKey};

/// What a check found.
#[derive(Debug, Default)]
pub struct CheckReport {
    /// Problems that fail the check.
    pub errors: Vec<String>,
    /// Problems worth knowing that do not fail it.
    pub warnings: Vec<String>,
    /// Entries checked.
    pub entries: usize,
    /// Port maps checked.
    pub maps: Vec<ObjectName>,
}

/// Checks the manifests in `files` (read together, as one configuration), each read as the
/// gateway reads `--config` with `max_bytes` as `--config-max-bytes`.
pub fn check_files(
    files: &[impl AsRef<Path>],
    settings: &IndexSettings,
    max_bytes: u64,
    managed_service: Option<&ObjectName>,
) -> CheckReport {
    let mut report = CheckReport::default();
    let mut objects: Vec<(Object, String, Position)> = Vec::new();
    for file in files {
        let file = ConfigFile::new(file.as_ref(), max_bytes);
        match file.read().and_then(|loaded| file.parse(&loaded.text)) {
            Err(e) => report.errors.push(e.to_string()),
            Ok(m) => {
                let name = file.path().display().to_string();
                objects.extend(
                    m.objects
                        .into_iter()
                        .zip(m.positions)
                        .map(|(o, p)| (o, name.clone(), p)),
                );
            }
        }
    }
    // The duplicate rule of one file, across the files (a copy in one file is already an error
    // of that file).
    let copies = objects
        .iter()
        .map(|(o, file, p)| (o.kind(), o.name(), (file, *p)));
    if let Some(d) = find_duplicate(copies) {
        let ((file, second), (first_file, first)) = (d.second, d.first);
        report.errors.push(format!(
            "{file}: {second}: {} {} repeats {first_file}: {first}; an object may appear only once",
            d.kind.as_str(),
            d.name
        ));
    }
    check_objects(
        objects.into_iter().map(|(o, _, _)| o).collect(),
        settings,
        managed_service,
        &mut report,
    );
    report
}

fn check_objects(
    objects: Vec<Object>,
    settings: &IndexSettings,
    managed_service: Option<&ObjectName>,
    report: &mut CheckReport,
) {
    // References are checked when the input holds the backends' Services; the LoadBalancer
    // Service in front of dermaga alone does not make it a list of Services.
    let has_services = objects
        .iter()
        .any(|o| matches!(o, Object::Service(s) if !is_load_balancer(s)));
    let load_balancers: Vec<(ObjectName, Service)> = objects
        .iter()
        .filter_map(|o| match o {
            Object::Service(s) if is_load_balancer(s) => Some((o.name(), s.clone())),
            _ => None,
        })
        .collect();
    let table = judge(objects, settings, has_services, report);
    // With --manage-service-ports the gateway puts every mapped port on that Service itself.
    if let Some(table) = table
        && managed_service.is_none()
    {
        report
            .warnings
            .extend(unexposed_ports(&table, &load_balancers));
    }
}

/// The gateway's judgement of `objects` (port maps, Services, EndpointSlices, ...), added to
/// `report`; the table built when a port map is there. Unresolved references are reported
/// only when `has_services` (the input is meant to hold the backends' Services).
pub(crate) fn judge(
    objects: Vec<Object>,
    settings: &IndexSettings,
    has_services: bool,
    report: &mut CheckReport,
) -> Option<RouteTable> {
    let config_maps: Vec<ObjectName> = objects
        .iter()
        .filter(|o| matches!(o, Object::ConfigMap(_)))
        .map(Object::name)
        .collect();
    let mut settings = settings.clone();
    let tcp_map = settings
        .port_maps
        .iter()
        .find(|(p, _)| *p == Protocol::Tcp)
        .map(|(_, n)| n.clone());
    // The UDP map is read only when a flag names it; the usual one is not checked silently.
    if !settings.port_maps.iter().any(|(p, _)| *p == Protocol::Udp)
        && let Some(tcp) = &tcp_map
    {
        let udp = ObjectName::new(tcp.namespace.clone(), "udp-services");
        if config_maps.contains(&udp) {
            report.warnings.push(format!(
                "ConfigMap {udp} is checked as the UDP port map, but the gateway reads it only when started with --udp-services-configmap {udp} (give that flag to check too)"
            ));
            settings.port_maps.push((Protocol::Udp, udp));
        }
    }
    let present: Vec<ObjectName> = settings
        .port_maps
        .iter()
        .map(|(_, n)| n.clone())
        .filter(|n| config_maps.contains(n))
        .collect();
    if present.is_empty() {
        let wanted: Vec<String> = settings
            .port_maps
            .iter()
            .map(|(p, n)| match p {
                Protocol::Tcp => format!("{n} (--tcp-services-configmap)"),
                Protocol::Udp => format!("{n} (--udp-services-configmap)"),
            })
            .collect();
        let found = if config_maps.is_empty() {
            "no ConfigMap".to_owned()
        } else {
            let names: Vec<String> = config_maps.iter().map(ToString::to_string).collect();
            format!("ConfigMap {}", names.join(", "))
        };
        report.errors.push(format!(
            "no port map in the input: the gateway reads ConfigMap {}, and the input has {found}",
            wanted.join(" and ")
        ));
        return None;
    }
    for o in &objects {
        if let Object::ConfigMap(cm) = o
            && present.contains(&o.name())
        {
            report.entries += cm.data.as_ref().map_or(0, |d| d.len());
        }
    }
    report.maps = present;

    let mut index = Index::new(settings);
    index.reset_all(objects);
    let table = build(&index, None);
    // The map's own problems first (in key order), then what they refer to.
    let (own, references): (Vec<_>, Vec<_>) = table
        .problems
        .iter()
        .partition(|p| matches!(p, ConfigProblem::Entry(_)));
    for problem in own.into_iter().chain(references) {
        match problem {
            ConfigProblem::Entry(e) if e.affects_routing => report.errors.push(e.to_string()),
            ConfigProblem::Entry(e) => report.warnings.push(e.to_string()),
            ConfigProblem::MissingPortMap { .. } => report.warnings.push(problem.to_string()),
            ConfigProblem::Unresolved { .. } if has_services => {
                report.warnings.push(problem.to_string())
            }
            ConfigProblem::Unresolved { .. } => {}
            ConfigProblem::GatewayApi { .. } => report.warnings.push(problem.to_string()),
        }
    }
    Some(table)
}

fn is_load_balancer(service: &Service) -> bool {
    service.spec.as_ref().and_then(|s| s.type_.as_deref()) == Some("LoadBalancer")
}

/// Whether `service` sends traffic of `key`'s protocol to `key`'s port of its pods.
fn exposes(service: &Service, key: RouteKey) -> bool {
    let ports = service.spec.as_ref().and_then(|s| s.ports.as_ref());
    ports.into_iter().flatten().any(|p| {
        let target = match &p.target_port {
            None => p.port,
            Some(IntOrString::Int(n)) => *n,
            // A named container port: taken as the Service port's number.
            Some(IntOrString::String(_)) => p.port,
        };
        p.protocol.as_deref().unwrap_or("TCP") == key.protocol.as_k8s()
            && target == i32::from(key.port.get())
    })
}

/// One warning per mapped port that no LoadBalancer Service of the input exposes.
pub(crate) fn unexposed_ports(
    table: &RouteTable,
    load_balancers: &[(ObjectName, Service)],
) -> Vec<String> {
    if load_balancers.is_empty() {
        return Vec::new();
    }
    let names: Vec<String> = load_balancers.iter().map(|(n, _)| n.to_string()).collect();
    table
        .keys()
        .filter(|key| !load_balancers.iter().any(|(_, s)| exposes(s, **key)))
        .map(|key| {
            format!(
                "port {key} is mapped but not on the LoadBalancer Service {}: clients cannot reach it until it is added to the Service's ports (protocol {}, targetPort {})",
                names.join(" or "),
                key.protocol.as_k8s(),
                key.port
            )
        })
        .collect()
}

/// The `dermaga check` command: prints the report, returns the exit code.
pub fn run(
    files: &[PathBuf],
    settings: &IndexSettings,
    max_bytes: u64,
    managed_service: Option<&ObjectName>,
) -> std::process::ExitCode {
    let report = check_files(files, settings, max_bytes, managed_service);
    for error in &report.errors {
        println!("error: {error}");
    }
    for warning in &report.warnings {
        println!("warning: {warning}");
    }
    let maps: Vec<String> = report.maps.iter().map(|m| m.to_string()).collect();
    let checked = if maps.is_empty() {
        "no port map was checked".to_owned()
    } else {
        format!("{} entries in {} checked", report.entries, maps.join(", "))
    };
    println!(
        "{checked}: {} error(s), {} warning(s)",
        report.errors.len(),
        report.warnings.len()
    );
    if report.errors.is_empty() {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    }
}
