//! `dermaga check FILE...`: validates port maps offline, before `kubectl apply`.
//!
//! Every rejected entry is printed with its key, value and problem (exit code 1). When the
//! files also hold the Services and EndpointSlices, entries that name a missing Service or port
//! are printed as warnings (the objects may exist in the cluster, so they do not fail the check).

use std::path::Path;

use crate::control::build::build;
use crate::control::configmap::parse_port_map;
use crate::control::index::{Index, IndexSettings, Object};
use crate::control::names::ObjectName;
use crate::control::provider::manifest::parse_manifest;
use crate::control::table::ConfigProblem;

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

/// Checks the manifests in `files` (read together, as one configuration).
pub fn check_files(files: &[impl AsRef<Path>], settings: &IndexSettings) -> CheckReport {
    let mut report = CheckReport::default();
    let mut objects = Vec::new();
    for file in files {
        let file = file.as_ref();
        match std::fs::read_to_string(file) {
            Err(e) => report
                .errors
                .push(format!("{}: cannot read: {e}", file.display())),
            Ok(text) => match parse_manifest(&text) {
                Err(e) => report.errors.push(format!("{}: {e}", file.display())),
                Ok(m) => objects.extend(m.objects),
            },
        }
    }
    check_objects(objects, settings, &mut report);
    report
}

fn check_objects(objects: Vec<Object>, settings: &IndexSettings, report: &mut CheckReport) {
    let config_maps: Vec<ObjectName> = objects
        .iter()
        .filter(|o| matches!(o, Object::ConfigMap(_)))
        .map(Object::name)
        .collect();
    let mut port_maps: Vec<_> = settings
        .port_maps
        .iter()
        .filter(|(_, name)| config_maps.contains(name))
        .cloned()
        .collect();
    if port_maps.is_empty() && !config_maps.is_empty() {
        let (protocol, _) = settings.port_maps.first().cloned().unwrap_or((
            crate::control::names::Protocol::Tcp,
            ObjectName::new("", ""),
        ));
        report.warnings.push(format!(
            "no ConfigMap named {}; checking every ConfigMap in the input as a {protocol} port map",
            settings
                .port_maps
                .iter()
                .map(|(_, n)| n.to_string())
                .collect::<Vec<_>>()
                .join(" or ")
        ));
        port_maps = config_maps.iter().map(|n| (protocol, n.clone())).collect();
    }
    if port_maps.is_empty() {
        report.errors.push("no ConfigMap found in the input".into());
        return;
    }
    for (protocol, name) in &port_maps {
        let Some(Object::ConfigMap(cm)) = objects
            .iter()
            .find(|o| matches!(o, Object::ConfigMap(_)) && &o.name() == name)
        else {
            continue;
        };
        let data = cm.data.clone().unwrap_or_default();
        let parsed = parse_port_map(name, &data, *protocol, &settings.reserved);
        report.entries += data.len();
        for e in &parsed.errors {
            if e.affects_routing {
                report.errors.push(e.to_string());
            } else {
                report.warnings.push(e.to_string());
            }
        }
        report.maps.push(name.clone());
    }
    if objects.iter().any(|o| matches!(o, Object::Service(_))) {
        let mut index = Index::new(IndexSettings {
            port_maps,
            reserved: settings.reserved.clone(),
        });
        index.reset_all(objects);
        for problem in build(&index, None).problems {
            if let ConfigProblem::Unresolved { .. } = problem {
                report.warnings.push(problem.to_string());
            }
        }
    }
}

/// The `dermaga check` command: prints the report, returns the exit code.
pub fn run(files: &[std::path::PathBuf], settings: &IndexSettings) -> std::process::ExitCode {
    let report = check_files(files, settings);
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
