//! The commands hints tell a sysadmin to run, in the form the platform dtcprobe runs on has.
//!
//! Why macros and not `const`s: hints are `&'static str` constants assembled with `concat!`, which
//! takes literals only; a macro that expands to a literal is the one way to choose per platform
//! at compile time and still write each hint once. On Windows the commands are the PowerShell
//! cmdlets a Windows admin has on every server (`Get-NetTCPConnection`, `Test-NetConnection`,
//! `Get-NetFirewallRule`) with the cmd.exe `netsh`/`netstat` equivalents; elsewhere `ss`, `nc`
//! and `nft`. The hint about the *far* host names both forms, since that host's platform is not
//! known from here (SQL Server and MSDTC hosts are mostly Windows).

/// How to see what listens on a port on the server.
#[cfg(windows)]
macro_rules! listeners_cmd {
    () => {
        "PowerShell `Get-NetTCPConnection -State Listen -LocalPort <port>` or `netstat -ano` \
(`ss -ltn` if it runs Linux)"
    };
}
#[cfg(not(windows))]
macro_rules! listeners_cmd {
    () => {
        "`ss -ltn` on Linux, PowerShell `Get-NetTCPConnection -State Listen -LocalPort <port>` or \
`netstat -ano` on Windows"
    };
}

/// How to retest one port from this host, outside dtcprobe.
#[cfg(windows)]
macro_rules! retest_cmd {
    () => {
        "PowerShell `Test-NetConnection <host> -Port <port>`"
    };
}
#[cfg(not(windows))]
macro_rules! retest_cmd {
    () => {
        "`nc -vz <host> <port>`"
    };
}

/// How to list this host's own firewall rules.
#[cfg(windows)]
macro_rules! local_firewall_cmd {
    () => {
        "PowerShell `Get-NetFirewallRule -Enabled True | Get-NetFirewallPortFilter`, \
or `netsh advfirewall firewall show rule name=all`"
    };
}
#[cfg(not(windows))]
macro_rules! local_firewall_cmd {
    () => {
        "`nft list ruleset` (or `iptables -S`)"
    };
}

/// Where this host's DNS servers are configured and how to query them.
#[cfg(windows)]
macro_rules! dns_config_cmd {
    () => {
        "the adapter settings: PowerShell `Get-DnsClientServerAddress`, `Resolve-DnsName <name>`"
    };
}
#[cfg(not(windows))]
macro_rules! dns_config_cmd {
    () => {
        "/etc/resolv.conf, `resolvectl status`"
    };
}

pub(crate) use {dns_config_cmd, listeners_cmd, local_firewall_cmd, retest_cmd};

#[cfg(test)]
mod tests {
    /// Every hint that names a command, as this build writes it.
    fn hints() -> Vec<&'static str> {
        vec![
            crate::classify::HINT_TIMEOUT,
            crate::classify::HINT_REFUSED,
            crate::hops::reset_origin::HINT_REFUSED_BY_TARGET,
            crate::hops::reset_origin::HINT_REFUSED_LOOPBACK,
            crate::classify::HINT_LOCAL_FIREWALL,
            crate::classify::winsock::HINT_REFUSED_WINDOWS,
            crate::hops::resolve::HINT_DNS_TIMEOUT,
            crate::agent::client::HINT_BIDIRECTIONAL,
        ]
    }

    /// Runs in the Windows build under wine (scripts/test): no Linux-only command is offered.
    #[cfg(windows)]
    #[test]
    fn windows_hints_name_windows_commands() {
        let all = hints().join("\n");
        for cmd in [
            "Get-NetTCPConnection",
            "Test-NetConnection",
            "Get-NetFirewallRule",
            "netsh advfirewall",
            "Get-DnsClientServerAddress",
        ] {
            assert!(all.contains(cmd), "no {cmd} in:\n{all}");
        }
        for linux_only in [
            "nft list",
            "iptables",
            "nc -vz",
            "resolv.conf",
            "resolvectl",
        ] {
            assert!(!all.contains(linux_only), "{linux_only} in:\n{all}");
        }
        // `ss` only as the alternative for a Linux server, never as the one command offered.
        assert!(!crate::classify::HINT_TIMEOUT.contains("ss -"));
    }

    #[cfg(not(windows))]
    #[test]
    fn unix_hints_name_unix_commands() {
        let all = hints().join("\n");
        for cmd in ["ss -ltn", "nc -vz", "nft list ruleset", "resolv.conf"] {
            assert!(all.contains(cmd), "no {cmd} in:\n{all}");
        }
        for windows_only in ["Test-NetConnection", "Get-NetFirewallRule", "Get-DnsClient"] {
            assert!(!all.contains(windows_only), "{windows_only} in:\n{all}");
        }
    }
}
