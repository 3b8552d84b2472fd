//! `sluice`: one binary for the servers (`dev`, `controller`, `broker`) and every client
//! command (topics, produce, consume, cluster, perf). See DESIGN.md §10 for the contract
//! scripts depend on: names only ever get added.

mod cli;

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

/// Large allocations are lazily committed mappings: a Kafka request frame that claims
/// billions of elements must not abort the broker (`sluice_broker::alloc`).
#[global_allocator]
static ALLOCATOR: sluice_broker::alloc::Allocator = sluice_broker::alloc::Allocator;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    raise_open_files_limit();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            let _ = writeln!(
                std::io::stderr(),
                "error: cannot start the async runtime: {e}"
            );
            return ExitCode::from(1);
        }
    };
    let code = match runtime.block_on(cli::run(args)) {
        Ok(code) => code,
        Err(e) => {
            // Not `eprintln!`: it panics when stderr is a closed pipe.
            let _ = writeln!(std::io::stderr(), "error: {}", one_line(&e));
            ExitCode::from(1)
        }
    };
    // Dropping the runtime would wait for every blocking task still running (a read of
    // a slow disk, say) without bound: the command has its answer, so the process exits.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    code
}

/// Raises the soft limit on open descriptors to the hard limit, as servers with many
/// files do (the Go runtime does it for every program): a broker holds a descriptor per
/// log segment and per connection, and a soft limit of 1024 is reached near a thousand
/// partitions. Beyond the hard limit, a log that cannot be opened goes offline with the
/// error named, and docs/storage.md says to raise `LimitNOFILE` / `ulimit -n`.
fn raise_open_files_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit(2) with a valid pointer to an owned struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// The error and its causes on one line, `a: b: c`, leaving out a cause whose text
/// the line already holds (many error types print their source in their own message,
/// which `{:#}` would print twice).
fn one_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line.replace('\n', " ")
}
