//! The `dermaga` binary: parses flags, sets up logging and the runtime, runs the gateway or a
//! subcommand. `anyhow` is used here only.

use std::process::ExitCode;

/// mimalloc: size classes without per-allocation headers, and aligned allocations (tokio's
/// task cells and I/O registrations are 128-byte aligned) without the padding glibc's
/// memalign leaves around them.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::Parser;
use dermaga::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Check(check)) = &cli.command {
        return dermaga::run_check(
            &check.files,
            &cli.run.index_settings(),
            cli.run.config_max_bytes,
            cli.run.manage_service_ports.as_ref(),
        );
    }
    if let Some(Command::Doctor(doctor)) = &cli.command {
        return dermaga::run_doctor(&cli.run, doctor);
    }
    // Kept to the end of main: dropping it writes out the queued log lines (within 1 s).
    let _logs = dermaga::init_logging(cli.run.log_format, cli.run.log_level);
    match option_env!("DERMAGA_GIT_COMMIT") {
        Some(commit) => tracing::info!(commit, "dermaga {} starting", env!("CARGO_PKG_VERSION")),
        None => tracing::info!("dermaga {} starting", env!("CARGO_PKG_VERSION")),
    }
    let result: anyhow::Result<()> = runtime(usize::from(cli.run.worker_threads))
        .map_err(anyhow::Error::from)
        .and_then(|runtime| {
            runtime.block_on(async move {
                match cli.command {
                    Some(Command::Demo(demo)) => dermaga::run_demo(cli.run, demo).await,
                    Some(Command::Check(_) | Command::Doctor(_)) => {
                        unreachable!("handled above")
                    }
                    None => dermaga::run(cli.run).await,
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

/// The tokio runtime: `workers` threads (0: one per CPU this process may use, which honours
/// the CPU affinity mask and cgroup quota); for one, the single-threaded runtime, whose tasks
/// never wake across threads.
fn runtime(workers: usize) -> std::io::Result<tokio::runtime::Runtime> {
    let workers = match workers {
        0 => std::thread::available_parallelism().map_or(1, usize::from),
        n => n,
    };
    if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .build()
    }
}
