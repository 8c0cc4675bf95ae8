//! Helpers shared by the integration tests: a kube-rs client for a test server, and a raw
//! HTTP client that returns status and JSON body, or reads a watch stream line by line.

#![allow(dead_code)]

use std::time::Duration;

use bytes::Bytes;
use dermaga_testapi::ApiServer;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

/// Upper bound for any single wait in the tests.
pub const WAIT: Duration = Duration::from_secs(10);

/// The kube-rs configuration from the server's kubeconfig.
pub async fn kube_config(server: &ApiServer) -> kube::Config {
    let kubeconfig =
        kube::config::Kubeconfig::from_yaml(&server.kubeconfig_yaml()).expect("valid kubeconfig");
    let options = kube::config::KubeConfigOptions::default();
    kube::Config::from_custom_kubeconfig(kubeconfig, &options)
        .await
        .expect("usable kubeconfig")
}

/// A kube-rs client configured from the server's kubeconfig.
pub async fn kube_client(server: &ApiServer) -> kube::Client {
    kube::Client::try_from(kube_config(server).await).expect("client")
}

/// A plain HTTP/1.1 client for exact-semantics checks.
pub struct Raw {
    base: String,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Raw {
    pub fn new(server: &ApiServer) -> Self {
        Raw {
            base: server.url(),
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    async fn send(
        &self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: Option<Vec<u8>>,
    ) -> hyper::Response<Incoming> {
        let mut request = hyper::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        let request = request
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .expect("valid request");
        tokio::time::timeout(WAIT, self.client.request(request))
            .await
            .expect("answer in time")
            .expect("HTTP works")
    }

    /// Sends a request and returns the status code and the JSON body (`Null` when empty).
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let body = body.map(|b| serde_json::to_vec(&b).expect("serializable"));
        let response = self.send(method, path, content_type, body).await;
        let status = response.status().as_u16();
        let bytes = tokio::time::timeout(WAIT, response.into_body().collect())
            .await
            .expect("body in time")
            .expect("body")
            .to_bytes();
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).expect("a JSON body")
        };
        (status, value)
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.request("GET", path, None, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.request("POST", path, Some("application/json"), Some(body))
            .await
    }

    pub async fn put(&self, path: &str, body: Value) -> (u16, Value) {
        self.request("PUT", path, Some("application/json"), Some(body))
            .await
    }

    pub async fn patch(&self, path: &str, content_type: &str, body: Value) -> (u16, Value) {
        self.request("PATCH", path, Some(content_type), Some(body))
            .await
    }

    pub async fn delete(&self, path: &str) -> (u16, Value) {
        self.request("DELETE", path, None, None).await
    }

    /// Opens a watch (or any streaming GET) and returns its status and a line reader.
    pub async fn watch(&self, path: &str) -> (u16, Lines) {
        let response = self.send("GET", path, None, None).await;
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap_or("").to_string());
        assert_eq!(content_type.as_deref(), Some("application/json"));
        (
            status,
            Lines {
                body: response.into_body(),
                buffer: Vec::new(),
            },
        )
    }
}

/// The lines of a streaming body, each parsed as JSON.
pub struct Lines {
    body: Incoming,
    buffer: Vec<u8>,
}

impl Lines {
    /// The next line, or `None` when the stream ended; panics after [`WAIT`].
    pub async fn next(&mut self) -> Option<Value> {
        self.next_within(WAIT)
            .await
            .expect("a watch line or the end of the stream in time")
    }

    /// The next line within `limit`: `Err(())` on timeout, `Ok(None)` at the end of the stream.
    pub async fn next_within(&mut self, limit: Duration) -> Result<Option<Value>, ()> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(end) = self.buffer.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buffer.drain(..=end).collect();
                return Ok(Some(
                    serde_json::from_slice(&line).expect("each line is one JSON document"),
                ));
            }
            match tokio::time::timeout_at(deadline, self.body.frame()).await {
                Err(_) => return Err(()),
                Ok(None) => {
                    assert!(self.buffer.is_empty(), "the stream ended mid-line");
                    return Ok(None);
                }
                Ok(Some(frame)) => {
                    if let Ok(data) = frame.expect("body frame").into_data() {
                        self.buffer.extend_from_slice(&data);
                    }
                }
            }
        }
    }

    /// The next line, skipping BOOKMARK events.
    pub async fn next_change(&mut self) -> Option<Value> {
        loop {
            let event = self.next().await?;
            if event["type"] != "BOOKMARK" {
                return Some(event);
            }
        }
    }
}

/// `(type, metadata.name)` of a watch event.
pub fn summary(event: &Value) -> (String, String) {
    let kind = event["type"].as_str().unwrap_or("").to_string();
    let name = event["object"]["metadata"]["name"]
        .as_str()
        .unwrap_or("")
        .to_string();
    (kind, name)
}

/// A ConfigMap manifest.
pub fn config_map(namespace: &str, name: &str, labels: Value, data: Value) -> Value {
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "data": data,
    })
}
