//! The `dermaga` binary: parses flags, sets up logging and the runtime, runs the gateway or a
//! subcommand. `anyhow` is used here only.

use std::process::ExitCode;

use clap::Parser;
use dermaga::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Check(check)) = &cli.command {
        return dermaga::ops::check::run(&check.files, &cli.run.index_settings());
    }
    dermaga::ops::logging::init(cli.run.log_format, &cli.run.log_level);
    let result: anyhow::Result<()> = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|runtime| {
            runtime.block_on(async move {
                match cli.command {
                    Some(Command::Demo(demo)) => dermaga::demo::run(cli.run, demo).await,
                    Some(Command::Check(_)) => unreachable!("handled above"),
                    None => dermaga::app::run(cli.run).await,
                }
            })
        });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // The whole cause chain on one line, no backtrace: this is for operators.
            tracing::error!("dermaga stopped: {err:#}");
            ExitCode::FAILURE
        }
    }
}
