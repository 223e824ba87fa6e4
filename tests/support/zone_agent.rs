//! The agent config of a matrix zone, as `dtcprobe matrix --print-allow` prints it. (The agent
//! process itself is tests/agent_netns.rs's `AgentProc`.)

/// The `zone = ...` / `allow = [...]` section `matrix --print-allow` printed for `zone`.
pub fn allow_section(print_allow: &str, zone: &str) -> String {
    print_allow
        .split("\n\n")
        .find(|s| s.contains(&format!("# zone {zone}:")))
        .unwrap_or_else(|| panic!("no allow section for {zone}:\n{print_allow}"))
        .to_string()
}
