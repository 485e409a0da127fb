//! The kernel's view of what is ours: loaded programs, links holding them,
//! and their run times (for leak checks, tests and `record --bpf-stats`).
use super::loader::PROGRAM_PREFIX;

/// Names of loaded kernel programs that are ours (for leak checks).
pub fn loaded_flowdar_programs() -> Vec<String> {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .filter_map(|p| p.name_as_str().map(str::to_string))
        .filter(|n| n.starts_with(PROGRAM_PREFIX))
        .collect()
}

/// IDs of loaded kernel programs that are ours.
pub fn loaded_flowdar_program_ids() -> std::collections::HashSet<u32> {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .filter(|p| {
            p.name_as_str()
                .is_some_and(|n| n.starts_with(PROGRAM_PREFIX))
        })
        .map(|p| p.id())
        .collect()
}

/// BPF links whose program is ours (uprobe_multi and perf links alike), as
/// "link ID -> program": the kernel's own view of what is still attached.
pub fn loaded_flowdar_links() -> Vec<String> {
    let ours: std::collections::HashMap<u32, String> = aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .filter_map(|p| Some((p.id(), p.name_as_str()?.to_string())))
        .filter(|(_, n)| n.starts_with(PROGRAM_PREFIX))
        .collect();
    aya::programs::loaded_links()
        .filter_map(Result::ok)
        .filter_map(|l| {
            let name = ours.get(&l.program_id())?;
            Some(format!("link {} -> {name}", l.id()))
        })
        .collect()
}

/// Run time per program of ours, while kernel BPF statistics are on
/// (`record --bpf-stats`): (name, runs, total ns).
pub fn program_run_times() -> Vec<(String, u64, u64)> {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .filter_map(|p| {
            let name = p.name_as_str()?.to_string();
            name.starts_with(PROGRAM_PREFIX)
                .then(|| (name, p.run_count(), p.run_time().as_nanos() as u64))
        })
        .filter(|(_, runs, _)| *runs > 0)
        .collect()
}
