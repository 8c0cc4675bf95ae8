//! The `dermaga` process around the in-process [`crate::gateway::Gateway`]: flags → Index
//! settings and gateway options → signals, access log, provider, admin thread, Events → run
//! until a signal, then drain and exit.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::cli::RunArgs;
use crate::control::configmap::ReservedPorts;
use crate::control::index::{Index, IndexSettings};
use crate::control::provider::file::FileProvider;
use crate::control::provider::kube::client as kube_client;
use crate::control::provider::kube::{KubeProvider, WatchPlan};
use crate::data::context::TcpSettings;
use crate::data::context::UdpSettings;
use crate::data::health::HealthSettings;
use crate::data::health::checker::CheckSettings;
use crate::data::listener::ListenAddress;
use crate::gateway::{Gateway, GatewayOptions};
use crate::names::Protocol;
use crate::ops::admin::{self, AdminState};
use crate::ops::signals;
use crate::status::{events, gateway_api, service_ports};
use crate::telemetry::access_log::AccessLog;
use crate::telemetry::log_writer;
use crate::telemetry::metrics::Metrics;

/// At exit, how long the access log and then the log may take to be written out (the log's
/// share is `log_writer::FLUSH_TIMEOUT`, 1 s, at the end of `main`; the access log has the
/// rest). Shutdown takes at most `--shutdown-delay` + `--shutdown-grace` + this (+ well under a
/// second to exit): the pod's `terminationGracePeriodSeconds` must be longer.
pub const ACCESS_LOG_FLUSH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

impl RunArgs {
    /// The longest a shutdown may take after the first SIGTERM, exit included.
    pub fn shutdown_budget(&self) -> std::time::Duration {
        self.shutdown_delay + self.shutdown_grace + ACCESS_LOG_FLUSH_TIMEOUT
    }

    /// What the Index needs to know from the flags.
    pub fn index_settings(&self) -> IndexSettings {
        let mut reserved = ReservedPorts::default();
        reserved.reserve(
            self.admin_address.port(),
            format!(
                "the admin server listens there (--admin-address {})",
                self.admin_address
            ),
        );
        if let Some(health) = self.health_address {
            reserved.reserve(
                health.port(),
                format!("the probes are served there (--health-address {health})"),
            );
        }
        reserved.max_range_ports = usize::from(self.max_port_range);
        let mut port_maps = vec![(Protocol::Tcp, self.tcp_services_configmap.clone())];
        if let Some(udp) = &self.udp_services_configmap {
            port_maps.push((Protocol::Udp, udp.clone()));
        }
        IndexSettings {
            port_maps,
            reserved,
            gateway_controller: self.gateway_controller_name.clone(),
            publish_service: self.publish_service.clone(),
        }
    }

    /// Data-plane options from the flags.
    pub fn gateway_options(&self) -> GatewayOptions {
        GatewayOptions {
            address: self
                .listen_address
                .map_or(ListenAddress::All, ListenAddress::Ip),
            tcp: TcpSettings {
                connect_timeout: self.connect_timeout,
                connect_attempts: usize::from(self.connect_attempts),
                proxy_header_timeout: self.proxy_header_timeout,
                idle_timeout: self.idle_timeout,
                max_connections: self.max_connections,
                max_connections_per_port: self.max_connections_per_port,
            },
            drain_timeout: self.drain_timeout,
            shutdown_grace: self.shutdown_grace,
            reuse_port: self.reuse_port,
            max_pipes: self.max_pipes,
            pipe_size: self.pipe_size as usize,
            udp_sockets_per_port: usize::from(self.udp_sockets_per_port),
            tcp_listeners_per_port: usize::from(self.tcp_listeners_per_port),
            udp: UdpSettings {
                idle_timeout: self.udp_idle_timeout,
                max_flows: self.udp_max_flows,
            },
            health: HealthSettings {
                eject_after: self.eject_after_failures,
                base_ejection: self.ejection_time,
                max_ejection: self.max_ejection_time.max(self.ejection_time),
                checks: CheckSettings {
                    interval: Some(self.health_check_interval).filter(|d| !d.is_zero()),
                    timeout: self.health_check_timeout,
                    healthy_threshold: self.health_check_healthy_threshold,
                    unhealthy_threshold: self.health_check_unhealthy_threshold,
                },
            },
        }
    }
}

/// Where the objects come from.
enum Provider {
    /// `--config FILE`.
    File(FileProvider, PathBuf),
    /// The Kubernetes API.
    Kube(KubeProvider),
}

/// Runs the gateway until SIGTERM/SIGINT, then drains and returns. SIGHUP reloads `--config`.
pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    if let (Some(config), Some(service)) = (&args.config, &args.manage_service_ports) {
        anyhow::bail!(
            "--manage-service-ports {service} needs the Kubernetes API, but --config {} reads the configuration from a file: drop one of them",
            config.display()
        );
    }
    if !args.reuse_port {
        for (flag, count) in [
            ("--tcp-listeners-per-port", args.tcp_listeners_per_port),
            ("--udp-sockets-per-port", args.udp_sockets_per_port),
        ] {
            if count > 1 {
                anyhow::bail!(
                    "{flag} {count} binds {count} sockets per port with SO_REUSEPORT, but --reuse-port is false: drop one of them"
                );
            }
        }
    }
    let provider = match args.config.clone() {
        Some(path) => Provider::File(
            FileProvider::new(&path, args.config_poll_interval, args.config_max_bytes),
            path,
        ),
        None => {
            let client = kube_client::connect(args.kubeconfig.as_deref()).await?;
            tracing::info!(
                tcp = %args.tcp_services_configmap,
                udp = ?args.udp_services_configmap.as_ref().map(ToString::to_string),
                "watching the Kubernetes API for the port maps"
            );
            Provider::Kube(KubeProvider::new(
                client,
                WatchPlan {
                    port_maps: args.index_settings().port_maps,
                    gateway_api: args.gateway_api,
                    publish_service: args.publish_service.clone(),
                },
            ))
        }
    };
    run_with(args, provider).await
}

async fn run_with(args: RunArgs, provider: Provider) -> anyhow::Result<()> {
    // First of all, before any port is bound and logged as listening: a SIGTERM from then on
    // drains instead of killing the process with the signal's default action.
    let draining = CancellationToken::new();
    let hangup = match &provider {
        Provider::File(file, path) => signals::OnHangup::Reload(path.clone(), file.reload_handle()),
        Provider::Kube(_) => signals::OnHangup::Ignore,
    };
    signals::install(draining.clone(), hangup).context("installing signal handlers")?;
    let metrics = Arc::new(Metrics::new());
    let access_log = Arc::new(AccessLog::start(
        args.access_log,
        args.access_log_buffer,
        Box::new(std::io::stdout()),
        metrics.clone(),
    ));
    let gateway = Gateway::start_with(
        Index::new(args.index_settings()),
        args.gateway_options(),
        metrics.clone(),
        access_log.clone(),
    );

    let provider = match provider {
        Provider::File(mut file, config) => {
            file.load(&gateway.publisher)
                .await
                .with_context(|| format!("cannot start with --config {}", config.display()))?;
            tracing::info!(config = %config.display(), "configuration loaded; watching for changes");
            Provider::File(file, config)
        }
        kube @ Provider::Kube(_) => kube,
    };

    let admin_listener = tokio::net::TcpListener::bind(args.admin_address)
        .await
        .with_context(|| {
            format!(
                "admin server cannot listen on --admin-address {}",
                args.admin_address
            )
        })?;
    let admin_address = admin_listener.local_addr()?;
    let health_listener =
        match args.health_address {
            None => None,
            Some(address) => Some(tokio::net::TcpListener::bind(address).await.with_context(
                || format!("the probes cannot be served on --health-address {address}"),
            )?),
        };
    let health_address = match &health_listener {
        Some(listener) => Some(listener.local_addr()?),
        None => None,
    };
    // SIGTERM first makes /readyz fail (draining), then, after --shutdown-delay, closes the
    // listeners (shutdown) and drains; load balancers stop sending in between.
    let admin_stop = CancellationToken::new();
    let admin = admin::spawn_thread(
        admin_listener.into_std()?,
        health_listener.map(|l| l.into_std()).transpose()?,
        AdminState {
            snapshot: gateway.publisher.snapshot().clone(),
            status: gateway.status(),
            metrics,
            pipes: gateway.pipes.clone(),
            health: gateway.health.clone(),
            draining: draining.clone(),
        },
        admin_stop.clone(),
    )
    .context("starting the admin server's thread")?;
    tracing::info!(address = %admin_address, "admin server listening (/healthz /readyz /metrics /routes)");
    if let Some(address) = health_address {
        tracing::info!(%address, "probes listening (/healthz /readyz)");
    }

    let publisher = Arc::clone(&gateway.publisher);
    let watcher = match provider {
        Provider::File(file, _) => tokio::spawn(file.watch(publisher, draining.clone())),
        Provider::Kube(kube) => {
            // Events on the port maps, for as long as the provider watches.
            let events = tokio::spawn(events::record(
                events::Reporting::new(kube.client()),
                events::EventSources {
                    problems: publisher.subscribe_problems(),
                    listeners: gateway.status(),
                    port_maps: kube.port_map_refs(),
                    map_of: args.index_settings().port_maps.into_iter().collect(),
                },
                publisher.metrics().clone(),
            ));
            // The Gateway API status, written by the replica that holds the Lease.
            let status = args.gateway_api.then(|| {
                let writer = gateway_api::StatusWriter {
                    client: kube.client(),
                    snapshot: publisher.snapshot().clone(),
                    controller: args.gateway_controller_name.clone(),
                    lease_namespace: args.tcp_services_configmap.namespace.clone(),
                    metrics: publisher.metrics().clone(),
                };
                tokio::spawn(writer.run(draining.clone()))
            });
            // The LoadBalancer Service's ports, kept equal to the mapped ports.
            let service_ports = args.manage_service_ports.clone().map(|service| {
                let sync = service_ports::ServicePortSync {
                    client: kube.client(),
                    snapshot: publisher.snapshot().clone(),
                    service,
                    reporting: events::Reporting::new(kube.client()),
                    metrics: publisher.metrics().clone(),
                };
                tokio::spawn(sync.run(draining.clone()))
            });
            let draining = draining.clone();
            tokio::spawn(async move {
                kube.run(publisher, draining).await;
                events.abort();
                if let Some(service_ports) = service_ports {
                    let _ = service_ports.await;
                }
                if let Some(status) = status {
                    let _ = status.await;
                }
            })
        }
    };
    draining.cancelled().await;
    tracing::info!(delay = ?args.shutdown_delay, grace = ?args.shutdown_grace, "unready (/readyz 503); still accepting for --shutdown-delay, then closing listeners; open connections get --shutdown-grace");
    tokio::time::sleep(args.shutdown_delay).await;
    let _ = watcher.await;
    gateway.shutdown().await;
    let access_log_flush = ACCESS_LOG_FLUSH_TIMEOUT - log_writer::FLUSH_TIMEOUT;
    let flushed = tokio::task::spawn_blocking(move || access_log.flush(access_log_flush));
    if !flushed.await.unwrap_or(false) {
        tracing::warn!(
            "the access log could not be written out at exit (stdout not read for {:?}, or not within {access_log_flush:?}); its last lines may be lost",
            crate::telemetry::access_log::STALLED
        );
    }
    admin_stop.cancel();
    let _ = tokio::task::spawn_blocking(move || admin.join()).await;
    tracing::info!("all connections closed; exiting");
    Ok(())
}
