//! `--gateway-metrics URL`: the gateway's own count of failed connects per endpoint
//! (`dermaga_upstream_connect_failures_total`), joined to the pod behind each endpoint, its
//! workload and the Services that select it, so that a count becomes a cause.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, bail};
use k8s_openapi::api::core::v1::{Pod, Service};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::findings::{Finding, Level, selected};
use super::workloads::Owners;

/// The metric read.
pub const CONNECT_FAILURES: &str = "dermaga_upstream_connect_failures_total";

/// At most this much of the metrics page is read.
const MAX_BYTES: u64 = 64 << 20;

/// Failed connects to one endpoint of one Service, summed over ports, by reason.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct EndpointFailures {
    /// `namespace/name` of the Service.
    pub service: (String, String),
    /// `ip:port`.
    pub endpoint: String,
    /// `namespace/name` of the pod, when the EndpointSlice named it.
    pub pod: Option<(String, String)>,
    /// Count per reason (`refused`, `timeout`, …).
    pub reasons: BTreeMap<String, f64>,
}

/// GETs `url` (`http://host:port/path`, as the gateway's admin server serves it), in 10 s.
pub async fn fetch(url: &str) -> anyhow::Result<String> {
    let rest = url
        .strip_prefix("http://")
        .with_context(|| format!("--gateway-metrics {url}: only http:// URLs are read"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/metrics"),
    };
    let read = async {
        let mut stream = tokio::net::TcpStream::connect(authority).await?;
        let request =
            format!("GET {path} HTTP/1.0\r\nHost: {authority}\r\nAccept: text/plain\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut body = Vec::new();
        stream.take(MAX_BYTES).read_to_end(&mut body).await?;
        Ok::<_, std::io::Error>(body)
    };
    let response = tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .with_context(|| format!("--gateway-metrics {url}: no answer in 10 s"))?
        .with_context(|| format!("--gateway-metrics {url}: cannot read"))?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .with_context(|| format!("--gateway-metrics {url}: not an HTTP response"))?;
    let status = head.lines().next().unwrap_or_default();
    if status.split_whitespace().nth(1).is_none_or(|c| c != "200") {
        bail!("--gateway-metrics {url}: answered {status:?}");
    }
    Ok(body.to_owned())
}

/// The labels of one sample line `name{a="x",b="y"} value`, with the value.
fn sample(line: &str) -> Option<(BTreeMap<String, String>, f64)> {
    let rest = line.strip_prefix(CONNECT_FAILURES)?.strip_prefix('{')?;
    let mut labels = BTreeMap::new();
    let mut chars = rest.chars();
    loop {
        let name: String = chars.by_ref().take_while(|c| *c != '=').collect();
        let name = name.trim_start_matches(',').trim().to_owned();
        if name.starts_with('}') {
            break;
        }
        if chars.next()? != '"' {
            return None;
        }
        let mut value = String::new();
        loop {
            match chars.next()? {
                '\\' => match chars.next()? {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                '"' => break,
                c => value.push(c),
            }
        }
        labels.insert(name, value);
        match chars.next()? {
            ',' => continue,
            '}' => break,
            _ => return None,
        }
    }
    let value = chars.as_str().split_whitespace().next()?.parse().ok()?;
    Some((labels, value))
}

fn split_name(s: &str) -> Option<(String, String)> {
    let (ns, name) = s.split_once('/')?;
    Some((ns.to_owned(), name.to_owned()))
}

/// The failed connects in a metrics page, per Service and endpoint (zero counts left out).
pub fn parse(text: &str) -> Vec<EndpointFailures> {
    let mut by: BTreeMap<(String, String, String), EndpointFailures> = BTreeMap::new();
    for (labels, value) in text.lines().filter_map(sample) {
        if value <= 0.0 {
            continue;
        }
        let get = |k: &str| labels.get(k).cloned().unwrap_or_default();
        let service = (get("namespace"), get("service"));
        let endpoint = get("endpoint");
        let entry = by
            .entry((service.0.clone(), service.1.clone(), endpoint.clone()))
            .or_insert_with(|| EndpointFailures {
                service,
                endpoint,
                // The label reads `pod ns/name` (the EndpointSlice's targetRef).
                pod: labels
                    .get("pod")
                    .and_then(|p| p.strip_prefix("pod "))
                    .and_then(split_name),
                reasons: BTreeMap::new(),
            });
        *entry.reasons.entry(get("reason")).or_default() += value;
    }
    by.into_values().collect()
}

/// One finding per endpoint that failed connects, naming its pod, workload, and what the pod
/// declares against the port the gateway connects to.
pub fn findings(
    failures: &[EndpointFailures],
    services: &[Service],
    pods: &[Pod],
    owners: &Owners,
) -> Vec<Finding> {
    failures
        .iter()
        .map(|f| {
            let ip = f.endpoint.rsplit_once(':').map_or(f.endpoint.as_str(), |(ip, _)| ip);
            let ip = ip.trim_start_matches('[').trim_end_matches(']');
            let port: Option<i32> = f.endpoint.rsplit_once(':').and_then(|(_, p)| p.parse().ok());
            let pod = pods.iter().find(|p| match &f.pod {
                Some((ns, name)) => {
                    p.metadata.namespace.as_deref() == Some(ns)
                        && p.metadata.name.as_deref() == Some(name)
                }
                None => p
                    .status
                    .as_ref()
                    .and_then(|s| s.pod_ip.as_deref())
                    .is_some_and(|a| a == ip),
            });
            let service = services.iter().find(|s| {
                s.metadata.namespace.as_deref() == Some(f.service.0.as_str())
                    && s.metadata.name.as_deref() == Some(f.service.1.as_str())
            });
            let counts: Vec<String> = f
                .reasons
                .iter()
                .map(|(reason, n)| match reason.as_str() {
                    "refused" => format!("refused {n} connects"),
                    other => format!("failed {n} connects ({other})"),
                })
                .collect();
            let service_name = format!("Service {}/{}", f.service.0, f.service.1);
            let mut objects = vec![service_name.clone()];
            let (who, cause) = match pod {
                None => (
                    match &f.pod {
                        Some((ns, name)) => format!("pod {ns}/{name}, gone now"),
                        None => "no pod has this address now".into(),
                    },
                    String::new(),
                ),
                Some(pod) => {
                    let workload = owners.workload_of(pod);
                    objects.push(workload.to_string());
                    let pod_name = pod.metadata.name.clone().unwrap_or_default();
                    let declares = port.is_some_and(|port| {
                        pod.spec.iter().flat_map(|s| &s.containers).any(|c| {
                            c.ports.iter().flatten().any(|p| p.container_port == port)
                        })
                    });
                    let selected_by = service.is_some_and(|s| {
                        selected(s, std::slice::from_ref(pod)).len() == 1
                    });
                    let cause = match (selected_by, declares, port) {
                        (true, false, Some(port)) => format!(
                            "; it is selected by {service_name} but declares no port {port}"
                        ),
                        (true, true, _) => format!(
                            "; it is selected by {service_name} and declares the port: is it listening on it, and ready when it says so?"
                        ),
                        _ => String::new(),
                    };
                    (format!("pod {pod_name}, {workload}"), cause)
                }
            };
            Finding {
                level: Level::Warning,
                check: "endpoint-connect-failures",
                summary: format!(
                    "endpoint {} ({who}) {}{cause}",
                    f.endpoint,
                    counts.join(", ")
                ),
                objects,
                why: "the gateway retried these connects on another endpoint where it could; each one cost a client latency, or its connection when no other endpoint was left".into(),
                fix: "see the other findings on this workload; a pod that does not serve the port should not be selected by the Service".into(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_summed_per_endpoint_with_escaped_labels() {
        let text = format!(
            "# TYPE {CONNECT_FAILURES} counter\n\
             {CONNECT_FAILURES}{{port=\"10000\",protocol=\"TCP\",namespace=\"shop\",service=\"bunga\",endpoint=\"10.0.3.7:10000\",pod=\"pod shop/backup-2891\",reason=\"refused\"}} 500\n\
             {CONNECT_FAILURES}{{port=\"10001\",protocol=\"TCP\",namespace=\"shop\",service=\"bunga\",endpoint=\"10.0.3.7:10000\",pod=\"pod shop/backup-2891\",reason=\"refused\"}} 32\n\
             {CONNECT_FAILURES}{{port=\"10000\",protocol=\"TCP\",namespace=\"shop\",service=\"bunga\",endpoint=\"10.0.3.8:10000\",pod=\"a \\\"quoted\\\" pod\",reason=\"timeout\"}} 0\n\
             dermaga_other_total 3\n"
        );
        let failures = parse(&text);
        assert_eq!(failures.len(), 1, "{failures:?}");
        assert_eq!(failures[0].endpoint, "10.0.3.7:10000");
        assert_eq!(
            failures[0].pod,
            Some(("shop".to_owned(), "backup-2891".to_owned()))
        );
        assert_eq!(failures[0].reasons["refused"], 532.0);
        let (labels, _) = sample(text.lines().nth(3).unwrap()).unwrap();
        assert_eq!(labels["pod"], "a \"quoted\" pod");
    }
}
