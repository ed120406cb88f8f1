//! CPU accounting from `/proc`, to tell whether a figure is bound by CPU, and whose.

/// CPU time used so far, read from `/proc` (Linux only; `None` elsewhere), to tell
/// whether a figure is bound by CPU, and whose.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CpuSample {
    /// This process (scheduler, worker, database client; SQLite itself), in ticks.
    process: u64,
    /// Its waited-for children: the `true` processes the runs started, in ticks.
    children: u64,
    /// The whole machine: busy ticks (everything but idle and I/O wait) and all ticks,
    /// summed over the cores.
    machine_busy: u64,
    machine_total: u64,
}

/// Kernel clock ticks per second (`USER_HZ`): 100 on every Linux target Rust supports.
const TICKS_PER_SECOND: f64 = 100.0;

impl CpuSample {
    pub(crate) fn take() -> Option<Self> {
        let own = std::fs::read_to_string("/proc/self/stat").ok()?;
        // Fields after the command name (which may contain spaces) start at field 3;
        // utime, stime, cutime and cstime are fields 14 to 17.
        let fields: Vec<u64> = own
            .rsplit_once(')')?
            .1
            .split_whitespace()
            .map(|f| f.parse().unwrap_or(0))
            .collect();
        let machine = std::fs::read_to_string("/proc/stat").ok()?;
        let cpu: Vec<u64> = machine
            .lines()
            .next()?
            .split_whitespace()
            .skip(1)
            .map(|f| f.parse().unwrap_or(0))
            .collect();
        let total: u64 = cpu.iter().take(8).sum();
        let idle = cpu.get(3)? + cpu.get(4)?;
        Some(CpuSample {
            process: fields.get(11)? + fields.get(12)?,
            children: fields.get(13)? + fields.get(14)?,
            machine_busy: total - idle,
            machine_total: total,
        })
    }
}

/// CPU used between two samples.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct CpuUse {
    /// Milliseconds of this process's CPU.
    pub(crate) process_ms: f64,
    /// Milliseconds of its children's CPU.
    pub(crate) children_ms: f64,
    /// Share of the machine's CPU that was busy (all processes), 0 to 1.
    pub(crate) machine_busy: f64,
}

impl CpuUse {
    pub(crate) fn between(a: Option<CpuSample>, b: Option<CpuSample>) -> Option<Self> {
        let (a, b) = (a?, b?);
        let ms = |ticks: u64| ticks as f64 * 1000.0 / TICKS_PER_SECOND;
        Some(CpuUse {
            process_ms: ms(b.process - a.process),
            children_ms: ms(b.children - a.children),
            machine_busy: (b.machine_busy - a.machine_busy) as f64
                / (b.machine_total - a.machine_total).max(1) as f64,
        })
    }

    /// [`CpuUse::per_run`] of a measurement, or "-" where there was none.
    pub(crate) fn per_run_of(cpu: Option<CpuUse>, runs: usize) -> String {
        cpu.map_or("-".into(), |c| c.per_run(runs))
    }

    /// "process + children ms per run, machine busy %".
    fn per_run(&self, runs: usize) -> String {
        let n = runs.max(1) as f64;
        format!(
            "{:.2} + {:.2} / {:.0}%",
            self.process_ms / n,
            self.children_ms / n,
            self.machine_busy * 100.0
        )
    }
}
