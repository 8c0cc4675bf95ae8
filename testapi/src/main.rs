//! `dermaga-testapi`: runs a test API server until Ctrl-C, for manual use with kubectl.
//!
//! ```text
//! cargo run -p dermaga-testapi -- --listen 127.0.0.1:8080 --kubeconfig /tmp/kc
//! kubectl --kubeconfig /tmp/kc get configmaps -A
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use dermaga_testapi::ApiServer;

const USAGE: &str = "usage: dermaga-testapi [--listen ADDR:PORT] [--kubeconfig PATH]";

/// Command-line options.
struct Options {
    listen: SocketAddr,
    kubeconfig: Option<PathBuf>,
}

fn parse_args() -> Result<Options, String> {
    let mut options = Options {
        listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
        kubeconfig: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--listen" => {
                let value = args.next().ok_or("--listen needs ADDR:PORT")?;
                options.listen = value
                    .parse()
                    .map_err(|e| format!("--listen {value}: {e}"))?;
            }
            "--kubeconfig" => {
                options.kubeconfig = Some(args.next().ok_or("--kubeconfig needs PATH")?.into())
            }
            "-h" | "--help" => return Err(USAGE.to_string()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    Ok(options)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let options = match parse_args() {
        Ok(options) => options,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    let server = match ApiServer::start_on(options.listen).await {
        Ok(server) => server,
        Err(e) => {
            eprintln!("cannot listen on {}: {e}", options.listen);
            return ExitCode::FAILURE;
        }
    };
    if let Some(path) = &options.kubeconfig {
        if let Err(e) = server.write_kubeconfig(path) {
            eprintln!("cannot write {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
        eprintln!("kubeconfig written to {}", path.display());
    }
    eprintln!(
        "serving the test Kubernetes API at {} (Ctrl-C stops)",
        server.url()
    );
    let _ = tokio::signal::ctrl_c().await;
    ExitCode::SUCCESS
}
