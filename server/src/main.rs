//! The `gridlake` binary; everything lives in the `server` library.

use std::process::ExitCode;

/// mimalloc instead of the system allocator: the write path allocates and frees small
/// strings and vectors per line on several threads at once, where glibc's malloc spent
/// a third of the server's CPU time in a profile of the HTTP write loop.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    raise_open_files_limit();
    match server::run_cli() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // The error's message already includes its causes: print it once, plainly.
            eprintln!("gridlake: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Raises the soft limit on open files to the hard limit. The Modbus collector keeps a
/// socket per device endpoint and the simulator one listener and one connection per
/// device; a soft limit of 1024, common by default, would cap both at a few hundred.
/// Failing to raise it is not fatal: running out shows later as a clear socket error.
fn raise_open_files_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
    {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}
