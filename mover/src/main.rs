//! `mover`: the shmover daemon (`mover serve`) and its command-line client.

#![forbid(unsafe_code)]

mod catalog;
mod cli;
mod config;
mod forward;
mod journal;
mod local;
mod manifest_cache;
mod metrics;
mod names;
mod peer;
mod server;
mod streams;
mod timefmt;

use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// mimalloc rather than glibc's allocator. The mover's large buffers (gRPC
/// receive buffers of up to 4 MiB, object-store parts, restore reads) are
/// held until a part is stored and then freed, from another thread than
/// the one that allocated them. glibc maps buffers above its threshold
/// afresh and trims freed heap tops, so the peer took a page fault and a
/// zeroed page for every 4 KiB it received; mimalloc keeps freed segments
/// for the next allocation.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The shmover mover: moves backup streams between shared-memory rings and
/// object storage.
#[derive(Debug, Parser)]
#[command(name = "mover", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the daemon.
    Serve(Box<config::ServeArgs>),
    /// Back up FILE (- for stdin) as NAME.
    Put(cli::PutArgs),
    /// Restore NAME into FILE (- for stdout).
    Get(cli::GetArgs),
    /// List backups, newest first.
    Ls(cli::LsArgs),
    /// Show one backup's manifest.
    Info(cli::NameArgs),
    /// Delete a backup.
    Rm(cli::NameArgs),
    /// Read a backup back and check its size and CRC32C.
    Verify(cli::NameArgs),
    /// Show live streams.
    Status(cli::ClientArgs),
    /// Remove what failed writes left behind (unreferenced data, staging files).
    Gc(cli::GcArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve(*args),
        other => cli::run(other_into(other)),
    }
}

fn other_into(c: Command) -> cli::Command {
    match c {
        Command::Put(a) => cli::Command::Put(a),
        Command::Get(a) => cli::Command::Get(a),
        Command::Ls(a) => cli::Command::Ls(a),
        Command::Info(a) => cli::Command::Info(a),
        Command::Rm(a) => cli::Command::Rm(a),
        Command::Verify(a) => cli::Command::Verify(a),
        Command::Status(a) => cli::Command::Status(a),
        Command::Gc(a) => cli::Command::Gc(a),
        Command::Serve(_) => unreachable!("handled by main"),
    }
}

fn serve(args: config::ServeArgs) -> ExitCode {
    let cfg = match config::Config::resolve(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("mover: {e:#}");
            return ExitCode::from(2);
        }
    };
    let metrics = Arc::new(metrics::Metrics::default());
    let filter = match tracing_subscriber::EnvFilter::try_new(&cfg.log) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("mover: log filter {:?}: {e}", cfg.log);
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
        )
        .with(metrics::RetryCounter(Arc::clone(&metrics)))
        .init();
    raise_fd_limit();
    // Clients share the open file of each eventfd we ring: none may park a
    // mover thread in an eventfd write.
    shmover_ring::guard_writes();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("mover: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(server::serve(cfg, metrics));
    // Streams still running (a stalled client's restore thread) must not
    // keep the process alive after SIGTERM.
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("mover: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Raises the soft limit on open descriptors to the hard one. Each stream
/// holds several (its socket, ring memfd, two eventfds, a watched dup of
/// the socket, store files), and the soft limit a service starts with
/// (often 1024) is below what `max_streams` and `max_connections` allow.
fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => tracing::debug!(from = soft, to = hard, "raised the descriptor limit"),
            Err(e) => tracing::warn!(soft, hard, error = %e, "cannot raise the descriptor limit"),
        },
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "cannot read the descriptor limit"),
    }
}
