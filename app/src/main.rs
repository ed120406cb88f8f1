//! `cronflow`: see `cronflow --help`.

/// mimalloc instead of glibc's malloc: under a delivery backlog glibc's allocator took
/// about a fifth of the process's CPU time (profiled with `perf`: arena locks contended
/// between the runtime's threads and SQLite's connection threads, and `malloc_consolidate`
/// walking freed chunks); see the README's benchmark notes.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    cronflow::cli::main_entry()
}
