//! The `gridlake` binary; everything lives in the `server` library.

use std::process::ExitCode;

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
