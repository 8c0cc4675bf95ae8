//! `dermaga demo`: the quick start without a cluster. Starts two example backends standing in
//! for the S1 pods (each greets with `respon dari port N` and then echoes), writes the example
//! configuration to a file, and runs the real gateway on it with the file provider.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::cli::{DemoArgs, RunArgs};

/// The example configuration, also at `deploy/examples/quickstart.yaml`.
pub const QUICKSTART_YAML: &str = include_str!("../deploy/examples/quickstart.yaml");

/// The example pods: address and greeting.
pub const BACKENDS: [(&str, &str); 2] = [
    ("127.0.0.2:10000", "respon dari port 10000"),
    ("127.0.0.3:20000", "respon dari port 20000"),
];

/// Runs the demo until SIGTERM/SIGINT.
pub async fn run(mut args: RunArgs, demo: DemoArgs) -> anyhow::Result<()> {
    for (addr, greeting) in BACKENDS {
        let addr: SocketAddr = addr.parse().expect("constant address");
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("example backend cannot listen on {addr}"))?;
        tokio::spawn(serve_backend(listener, greeting));
    }
    let path = demo
        .write_config
        .unwrap_or_else(|| std::env::temp_dir().join("dermaga-quickstart.yaml"));
    write_config(&path)?;
    args.config = Some(path.clone());
    if args.listen_address.is_none() {
        args.listen_address = Some("127.0.0.1".parse().expect("constant address"));
    }
    let listen = args.listen_address.expect("set above");
    eprintln!(
        "dermaga demo: example backends on {} and {}; configuration in {} (edit it: changes apply live).\n\
         Try:  nc {listen} 10000   and   nc {listen} 20000     (Ctrl-C stops the demo)",
        BACKENDS[0].0,
        BACKENDS[1].0,
        path.display()
    );
    crate::process::run(args).await
}

fn write_config(path: &PathBuf) -> anyhow::Result<()> {
    std::fs::write(path, QUICKSTART_YAML)
        .with_context(|| format!("cannot write {}", path.display()))
}

async fn serve_backend(listener: TcpListener, greeting: &'static str) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(greet_and_echo(stream, greeting));
            }
            Err(err) => {
                tracing::warn!(error = %err, "example backend accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

async fn greet_and_echo(mut stream: TcpStream, greeting: &str) {
    if stream
        .write_all(format!("{greeting}\n").as_bytes())
        .await
        .is_err()
    {
        return;
    }
    let mut buf = [0u8; 4096];
    while let Ok(n) = stream.read(&mut buf).await {
        if n == 0 || stream.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
}
