//! The `gridlake` binary; everything lives in the `server` library.

use std::process::ExitCode;

/// mimalloc instead of the system allocator: the write path allocates and frees small
/// strings and vectors per line on several threads at once, where glibc's malloc spent
/// a third of the server's CPU time in a profile of the HTTP write loop.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    match server::run_cli() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // The error's message already includes its causes: print it once, plainly.
            eprintln!("gridlake: {error}");
            ExitCode::FAILURE
        }
    }
}
