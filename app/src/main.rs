//! `cronflow`: see `cronflow --help`.

fn main() -> std::process::ExitCode {
    cronflow::cli::main_entry()
}
