//! `gridlake-load`: see the library (`src/lib.rs`) and `benches/README.md`.

fn main() -> std::process::ExitCode {
    benches::main()
}
