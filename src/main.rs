//! The `dermaga` binary: parses flags, sets up logging and the runtime, runs the gateway or a
//! subcommand. `anyhow` is used here only.

use clap::Parser;
use dermaga::cli::{Cli, Command};

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    dermaga::ops::logging::init(cli.run.log_format, &cli.run.log_level);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let result = runtime.block_on(async move {
        match cli.command {
            Some(Command::Demo(demo)) => dermaga::demo::run(cli.run, demo).await,
            None => dermaga::app::run(cli.run).await,
        }
    });
    if let Err(err) = &result {
        tracing::error!(error = format!("{err:#}"), "dermaga stopped");
    }
    result
}
