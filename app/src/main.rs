//! `cronflow`: see `cronflow --help`. The program is the library's
//! [`cronflow::cli::main_entry`]; this file only picks the allocator.

/// mimalloc instead of glibc's malloc: under a delivery backlog glibc's allocator spends
/// much of the process's CPU time on arena locks contended between the runtime's threads
/// and SQLite's connection threads (`docs/benchmarks.md` says how it is measured).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    cronflow::cli::main_entry()
}
