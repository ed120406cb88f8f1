//! The `cronflow` binary, built inside this package so integration tests can start the
//! real program through `CARGO_BIN_EXE_cronflow-under-test` (cargo provides that variable
//! only for a package's own binaries). Same entry point as `app/src/main.rs`.

fn main() -> std::process::ExitCode {
    cronflow::cli::main_entry()
}
