//! `cronflow`: see `cronflow --help`. The program is the library's
//! [`cronflow::cli::main_entry`]; this file only picks the allocator.

/// mimalloc instead of glibc's malloc, whose arena locks the runtime's threads and
/// SQLite's connection threads contend for under a delivery backlog. `cronflow-bench`
/// uses the same allocator, so its figures are this program's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    cronflow::cli::main_entry()
}
