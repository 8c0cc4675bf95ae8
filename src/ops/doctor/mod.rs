//! `dermaga doctor`: names the mistakes behind the field reports before anyone investigates.
//!
//! It reads, with the user's kubeconfig and read-only calls, the Services, EndpointSlices,
//! Pods, ReplicaSets and Jobs of a namespace (or all), and the gateway's port maps, and
//! reports each finding with its objects, why it matters and the fix ([`findings`]): a
//! selector over several workloads whose pods do not declare the Service's port (S1), pods of
//! Jobs and CronJobs behind a long-running Service (S2), backends without a readiness probe or a
//! shutdown delay, a grace period shorter than the delay (S4); for the port maps, what
//! `dermaga check` reports, entries with no ready endpoint, mapped ports missing on the
//! LoadBalancer Service and Services without a selector. With `--gateway-metrics`, the
//! gateway's failed connects per endpoint are joined to the pod and workload behind each
//! ([`gateway_metrics`]).
//!
//! Exit code: 0 with no finding of warning level or above, 1 with one, 2 when it could not read
//! what it needs (the message names the call and the namespace).

mod cluster;
mod findings;
mod gateway_metrics;
mod render;
mod workloads;

use std::process::ExitCode;

pub use findings::{Finding, Level};

use crate::cli::{DoctorArgs, RunArgs};

/// The `dermaga doctor` command: reads, judges, prints; returns the exit code.
pub fn run(run: &RunArgs, args: &DoctorArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("dermaga doctor: cannot start: {e}");
            return ExitCode::from(2);
        }
    };
    let report = runtime.block_on(cluster::examine(run, args));
    match report {
        Err(e) => {
            eprintln!("dermaga doctor: {e:#}");
            ExitCode::from(2)
        }
        Ok(report) => {
            let colour = args.output == crate::cli::DoctorOutput::Text && render::colour_wanted();
            let text = match args.output {
                crate::cli::DoctorOutput::Text => render::text(&report, colour),
                crate::cli::DoctorOutput::Json => render::json(&report),
            };
            println!("{text}");
            if report.findings.iter().any(|f| f.level >= Level::Warning) {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
    }
}

/// What one run found, and where it looked.
#[derive(Debug, serde::Serialize)]
pub struct Report {
    /// The namespaces read (`None`: all).
    pub namespaces: Option<Vec<String>>,
    /// The findings, most severe first.
    pub findings: Vec<Finding>,
}
