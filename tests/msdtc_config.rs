//! Kind `msdtc` (hop `dtc_config`) end to end: the Linux build says it cannot read a registry;
//! the Windows build, under wine, reads registry fixtures written with `wine reg add` into the
//! test's own wine prefix and the MSDTC service state from wine's real service control manager;
//! and a Windows peer and a Windows agent (two prefixes) compare their configurations.
//!
//! What wine shows and what it cannot: the registry API and the SCM query are wine's real
//! implementations (the same calls a Windows host answers). Wine has no MSDTC service: a fresh
//! prefix answers "does not exist", which is asserted as such; the running and stopped states come
//! from a stand-in service registered as `MSDTC` (tests/wine/msdtc-standin.c), which proves the
//! SCM query, not MSDTC. That Windows' own MSDTC keeps its settings where and as these fixtures
//! do is for a real Windows host to confirm (docs/msdtc.md).

use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::report_schema::assert_valid;
use crate::support::netns::{dtcprobe_in, Daemon, Netns};
use crate::support::{hop, parse_report, run_bin};
use crate::windows_wine::{target_dir, wine, Agent, WinHost, KEY};

// ---------------------------------------------------------------------------------------------
// The Linux build
// ---------------------------------------------------------------------------------------------

#[cfg(not(windows))]
#[test]
fn linux_build_skips_with_the_reason_and_refuses_other_hosts() {
    let (code, out, err) = run_bin(&["check", "-f", "json", "msdtc://localhost?role=client"]);
    let report = parse_report(&out);
    assert_valid("msdtc on Linux", &report);
    let h = hop(&report, "msdtc://localhost?role=client", "dtc_config");
    assert_eq!(h["status"], "skip", "{h:#}");
    assert!(
        h["detail"]
            .as_str()
            .unwrap()
            .contains("needs the Windows build: reads this host's registry"),
        "{h:#}"
    );
    assert_eq!(h["cause"], "unsupported", "{h:#}");
    assert!(h.get("data").is_none(), "{h:#}");
    // Nothing was read: the check is `skip` and the run inconclusive (3), never a clean 0.
    assert_eq!(report["summary"]["skip"], 1, "{report:#}");
    assert_eq!(code, 3, "{err}");

    let (code, _, err) = run_bin(&["check", "msdtc://sql01"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("`sql01` is not this host"), "{err}");
    assert!(err.contains("--reverse msdtc://localhost"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("zones.toml");
    std::fs::write(
        &config,
        "[[check]]\nname = \"dtc\"\nkind = \"msdtc\"\nhost = \"sql01\"\nrole = \"server\"\n",
    )
    .unwrap();
    let (code, _, err) = run_bin(&["check", "-c", config.to_str().unwrap()]);
    assert_eq!(code, 78, "{err}");
    assert!(err.contains("zones.toml:4:8:"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// The Windows build under wine
// ---------------------------------------------------------------------------------------------

const SECURITY: &str = r"HKLM\SOFTWARE\Microsoft\MSDTC\Security";
const MSDTC: &str = r"HKLM\SOFTWARE\Microsoft\MSDTC";
const RPC_INTERNET: &str = r"HKLM\SOFTWARE\Microsoft\Rpc\Internet";
const RPC_POLICY: &str = r"HKLM\SOFTWARE\Policies\Microsoft\Windows NT\Rpc";
pub(crate) const TCPIP: &str = r"HKLM\SYSTEM\CurrentControlSet\Services\Tcpip\Parameters";
const LSA: &str = r"HKLM\SYSTEM\CurrentControlSet\Control\Lsa";
pub(crate) const MSV1_0: &str = r"HKLM\SYSTEM\CurrentControlSet\Control\Lsa\MSV1_0";
pub(crate) const CID_A: &str = "5d1e0000-aaaa-bbbb-cccc-000000000001";
const CID_B: &str = "5d1e0000-aaaa-bbbb-cccc-000000000002";

/// A namespace with loopback only, its DNS server on loopback (nothing answers there): after
/// reading `Domain`, hop `dtc_config` looks for the domain's KDCs (SRV records) and tries TCP 88
/// (KDC reachability, `data.kdc_reachable`); the fixtures' domains are made up, and this keeps
/// those lookups inside the test. The Windows build then finds no KDC (`not_checked`).
fn offline_zone() -> Netns {
    let zone = Netns::new("dpmc");
    zone.etc_file(
        "resolv.conf",
        "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n",
    );
    zone.etc_file("hosts", "127.0.0.1 localhost\n");
    zone
}

/// `wine ARGS` (`reg`, `sc`) in the host's prefix; returns (exit code, stdout, stderr). Output
/// goes through files, not pipes: the first SCM call in a prefix starts wine's services.exe, which
/// inherits the caller's stdio and outlives it while the prefix is kept up, so a reader waiting
/// for the end of a pipe would wait for services.exe. Bounded: killed after 90 s.
fn wine_run(win: &WinHost, args: &[&str]) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let (out_path, err_path) = (dir.path().join("out"), dir.path().join("err"));
    let mut child = win
        .wine_command(args)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .expect("wine");
    let mut status = None;
    let finished = crate::support::netns::wait_until(std::time::Duration::from_secs(90), || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    if !finished {
        let _ = child.kill();
        let _ = child.wait();
        panic!("wine {args:?} did not finish within 90 s");
    }
    (
        status.unwrap().code().unwrap_or(-1),
        std::fs::read_to_string(&out_path).unwrap_or_default(),
        std::fs::read_to_string(&err_path).unwrap_or_default(),
    )
}

/// `wine reg add KEY /v NAME /t TYPE /d DATA /f` in the host's prefix (name "" is the key's
/// default value, `/ve`).
pub(crate) fn reg_add(win: &WinHost, key: &str, name: &str, ty: &str, data: &str) {
    let mut args = vec!["reg", "add", key];
    if name.is_empty() {
        args.push("/ve");
    } else {
        args.extend(["/v", name]);
    }
    args.extend(["/t", ty, "/d", data, "/f"]);
    let (code, out, err) = wine_run(win, &args);
    assert_eq!(code, 0, "wine {args:?}: {out}{err}");
}

pub(crate) fn dword(win: &WinHost, key: &str, name: &str, value: u32) {
    reg_add(win, key, name, "REG_DWORD", &value.to_string());
}

/// The settings Microsoft's checklist asks for: network access, both directions, the given
/// authentication (AllowOnlySecureRpcCalls, FallbackToUnsecureRPCIfNecessary,
/// TurnOffRpcSecurity) on a member of domain dtcprobe.test, MSDTC pinned to 5200, outside the RPC range 5000-5100 and 6000 (as
/// Microsoft advises for a fixed server port), a CID.
pub(crate) fn good_config(win: &WinHost, auth: (u32, u32, u32), cid: &str) {
    for name in [
        "NetworkDtcAccess",
        "NetworkDtcAccessTransactions",
        "NetworkDtcAccessInbound",
        "NetworkDtcAccessOutbound",
    ] {
        dword(win, SECURITY, name, 1);
    }
    dword(win, SECURITY, "XaTransactions", 0);
    dword(win, MSDTC, "AllowOnlySecureRpcCalls", auth.0);
    dword(win, MSDTC, "FallbackToUnsecureRPCIfNecessary", auth.1);
    dword(win, MSDTC, "TurnOffRpcSecurity", auth.2);
    dword(win, MSDTC, "ServerTcpPort", 5200);
    // A domain member: wine's own prefix says `Domain` = "" (a workgroup machine), where
    // Mutual Authentication cannot work (`dtc_auth`). Wine writes that value again whenever the
    // prefix starts (wineboot, from the Unix host's domain), so a test that relies on it keeps
    // the prefix up from before this write (keep_prefix_up).
    reg_add(win, TCPIP, "Domain", "REG_SZ", "dtcprobe.test");
    // REG_MULTI_SZ entries separated by \0 (reg's default separator).
    reg_add(
        win,
        RPC_INTERNET,
        "Ports",
        "REG_MULTI_SZ",
        r"5000-5100\06000",
    );
    reg_add(win, RPC_INTERNET, "PortsInternetAvailable", "REG_SZ", "Y");
    reg_add(win, RPC_INTERNET, "UseInternetPorts", "REG_SZ", "Y");
    let cid_key = format!(r"HKCR\CID\{{{}}}\Description", cid.to_ascii_uppercase());
    reg_add(win, &cid_key, "", "REG_SZ", "MSDTC");
    // Another CID entry, as Windows has several (MSDTCUIS, XATM ...): not the one reported.
    reg_add(
        win,
        r"HKCR\CID\{00000000-1111-2222-3333-444444444444}\Description",
        "",
        "REG_SZ",
        "MSDTCUIS",
    );
}

/// Builds the stand-in service (tests/wine/build-msdtc-standin) and registers it as `MSDTC`
/// (start type: `sc create`'s default, demand).
fn install_standin(win: &WinHost) {
    install_standin_starting(win, None);
}

/// [`install_standin`] with `start= START` (`auto`, `demand`, `disabled`): wine's `sc` has no
/// `config` verb, so a start type is set by creating the service with it.
fn install_standin_starting(win: &WinHost, start: Option<&str>) {
    let dir = target_dir().join("wine");
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/wine/build-msdtc-standin");
    let built = Command::new(&script)
        .arg(&dir)
        .output()
        .expect("build-msdtc-standin");
    assert!(
        built.status.success(),
        "building the MSDTC stand-in: {}",
        String::from_utf8_lossy(&built.stderr)
    );
    let exe = PathBuf::from(String::from_utf8_lossy(&built.stdout).trim());
    let bin_path = WinHost::win_path(&exe);
    let mut args = vec!["sc", "create", "MSDTC", "binPath=", &bin_path];
    if let Some(start) = start {
        args.extend(["start=", start]);
    }
    let (code, out, err) = wine_run(win, &args);
    assert_eq!(code, 0, "sc create {start:?}: {out}{err}");
}

/// Wine ends its services (the stand-in too) once the prefix's last ordinary process exits, as
/// Windows does at shutdown: between two `wine` runs MSDTC would be seen stopped. A `cmd` waiting
/// on its stdin keeps the prefix up for the test (killed on drop).
pub(crate) fn keep_prefix_up(win: &WinHost) -> Daemon {
    let child = win
        .wine_command(&["cmd"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("wine cmd");
    Daemon::adopt(child, "wine cmd (keeps the prefix up)")
}

fn sc(win: &WinHost, verb: &str) {
    let (code, out, err) = wine_run(win, &["sc", verb, "MSDTC"]);
    assert_eq!(code, 0, "sc {verb} MSDTC: {out}{err}");
}

/// Runs `check -f json URL` in the host; returns (exit code, the dtc_config hop, the report).
pub(crate) fn dtc_config(win: &WinHost, url: &str) -> (i32, Value, Value) {
    let (code, out, err) = win.run(&["check", "-f", "json", url]);
    assert!(err.trim().is_empty(), "stderr: {err}");
    let report = parse_report(&out);
    assert_valid(url, &report);
    let h = hop(&report, url, "dtc_config").clone();
    (code, h, report)
}

pub(crate) fn findings(h: &Value) -> Vec<(String, String)> {
    h["data"]["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["cause"].as_str().unwrap().to_string(),
                f["setting"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn windows_build_reads_registry_fixtures_and_the_service_state_under_wine() {
    let test = "windows_build_reads_registry_fixtures_and_the_service_state_under_wine";
    let Some(setup) = wine(test, true) else {
        return;
    };
    let zone = offline_zone();
    let win = WinHost::new(setup, Some(&zone));
    let url = "msdtc://localhost";

    // 1. A fresh prefix: wine's SCM has no MSDTC service, and no value exists. Every value is
    //    reported as null (absent, not zero); authentication is mutual because
    //    AllowOnlySecureRpcCalls is missing (MS-CMOM 3.3.1.2.3).
    let (code, h, _) = dtc_config(&win, url);
    assert_eq!(code, 1, "{h:#}");
    assert_eq!(
        (h["status"].as_str(), h["cause"].as_str()),
        (Some("fail"), Some("dtc_unavailable")),
        "{h:#}"
    );
    assert_eq!(h["data"]["service_state"], "not_installed", "{h:#}");
    assert!(
        h["detail"].as_str().unwrap().contains("not installed"),
        "{h:#}"
    );
    for key in [
        "network_dtc_access",
        "server_tcp_port",
        "rpc_ports",
        "cid",
        "restrict_remote_clients",
    ] {
        assert_eq!(h["data"][key], Value::Null, "{key}: {h:#}");
    }
    assert_eq!(h["data"]["authentication"], "mutual");
    assert!(findings(&h).contains(&("dtc_network_disabled".into(), "NetworkDtcAccess".into())));

    // 2. The checklist's settings and a running (stand-in) MSDTC service: pass, every value read
    //    back as written.
    // Kept up from before the fixtures: wine rewrites `Domain` whenever the prefix starts.
    let _up = keep_prefix_up(&win);
    good_config(&win, (1, 0, 0), CID_A);
    install_standin(&win);
    sc(&win, "start");
    let (code, h, _) = dtc_config(&win, url);
    assert_eq!(code, 0, "{h:#}");
    assert_eq!(h["status"], "pass", "{h:#}");
    let d = &h["data"];
    assert_eq!(d["service_state"], "running");
    assert_eq!(
        (
            d["network_dtc_access"].as_u64(),
            d["network_dtc_access_inbound"].as_u64(),
            d["network_dtc_access_outbound"].as_u64(),
            d["xa_transactions"].as_u64(),
            d["lu_transactions"].as_u64(),
        ),
        (Some(1), Some(1), Some(1), Some(0), None),
        "{h:#}"
    );
    assert_eq!(d["server_tcp_port"], 5200);
    assert_eq!(d["rpc_ports"], serde_json::json!(["5000-5100", "6000"]));
    assert_eq!(
        d["rpc_port_ranges"],
        serde_json::json!(["5000-5100", "6000-6000"])
    );
    assert_eq!(d["cid"], CID_A);
    assert_eq!(d["authentication"], "mutual");
    assert_eq!(d["findings"], serde_json::json!([]));

    // 3. Network DTC Access off: fail with the cause, the setting named, the dialog in the hint.
    dword(&win, SECURITY, "NetworkDtcAccess", 0);
    let (code, h, _) = dtc_config(&win, url);
    assert_eq!(code, 1);
    assert_eq!(h["cause"], "dtc_network_disabled", "{h:#}");
    assert_eq!(
        findings(&h),
        [(
            "dtc_network_disabled".to_string(),
            "NetworkDtcAccess".to_string()
        )]
    );
    let hint = h["hint"].as_str().unwrap();
    assert!(
        hint.contains("Network DTC Access") && hint.contains("Set-DtcNetworkSetting"),
        "{hint}"
    );
    dword(&win, SECURITY, "NetworkDtcAccess", 1);

    // 4. ServerTcpPort inside the RPC dynamic range: warn (exit 0 without --fail-on warning).
    dword(&win, MSDTC, "ServerTcpPort", 5050);
    let (code, h, _) = dtc_config(&win, url);
    assert_eq!(code, 0, "{h:#}");
    assert_eq!(
        (h["status"].as_str(), h["cause"].as_str()),
        (Some("warn"), Some("dtc_port_range")),
        "{h:#}"
    );
    assert!(
        h["detail"]
            .as_str()
            .unwrap()
            .contains("ServerTcpPort 5050 is inside the RPC dynamic port range (5000-5100, 6000)"),
        "{h:#}"
    );
    dword(&win, MSDTC, "ServerTcpPort", 5200);

    // 5. Inbound off: a client does not need it, a server does.
    dword(&win, SECURITY, "NetworkDtcAccessInbound", 0);
    let (_, h, _) = dtc_config(&win, "msdtc://localhost?role=client");
    assert_eq!(h["status"], "pass", "{h:#}");
    let (_, h, _) = dtc_config(&win, "msdtc://localhost?role=server");
    assert_eq!(
        findings(&h),
        [(
            "dtc_network_disabled".to_string(),
            "NetworkDtcAccessInbound".to_string()
        )]
    );
    assert!(
        h["hint"].as_str().unwrap().contains("Allow Inbound"),
        "{h:#}"
    );
    dword(&win, SECURITY, "NetworkDtcAccessInbound", 1);

    // 5b. A failover cluster's clustered DTC (issue 23 finding 3): its settings under
    //     HKLM\Cluster\Resources\<id>\MSDTCPRIVATE are read and judged with the same rules,
    //     under its own name; Inbound off there fails a server while the local DTC is fine.
    let resource = r"HKLM\Cluster\Resources\{7f4d0c1e-0000-4000-8000-00000000c1d7}";
    reg_add(&win, resource, "Name", "REG_SZ", "SQLDTC");
    let cluster_security = format!(r"{resource}\MSDTCPRIVATE\MSDTC\Security");
    for (name, value) in [
        ("NetworkDtcAccess", 1),
        ("NetworkDtcAccessTransactions", 1),
        ("NetworkDtcAccessInbound", 0),
        ("NetworkDtcAccessOutbound", 1),
    ] {
        dword(&win, &cluster_security, name, value);
    }
    dword(
        &win,
        &format!(r"{resource}\MSDTCPRIVATE\MSDTC"),
        "AllowOnlySecureRpcCalls",
        1,
    );
    // Another cluster resource (no MSDTCPRIVATE): not a DTC, not reported.
    reg_add(
        &win,
        r"HKLM\Cluster\Resources\{11111111-0000-4000-8000-000000000001}",
        "Name",
        "REG_SZ",
        "Cluster IP Address",
    );
    let (code, h, _) = dtc_config(&win, "msdtc://localhost?role=server");
    assert_eq!(code, 1, "{h:#}");
    assert_eq!(
        findings(&h),
        [(
            "dtc_network_disabled".to_string(),
            "NetworkDtcAccessInbound".to_string()
        )]
    );
    assert!(
        h["detail"]
            .as_str()
            .unwrap()
            .contains("clustered DTC `SQLDTC`"),
        "{h:#}"
    );
    assert!(
        h["hint"].as_str().unwrap().contains("-DtcName 'SQLDTC'"),
        "{h:#}"
    );
    let clustered = &h["data"]["clustered_dtcs"];
    assert_eq!(clustered.as_array().map(Vec::len), Some(1), "{h:#}");
    assert_eq!(clustered[0]["name"], "SQLDTC");
    assert_eq!(clustered[0]["network_dtc_access_inbound"], 0);
    assert_eq!(clustered[0]["allow_only_secure_rpc_calls"], 1);
    let (code, out, err) = wine_run(&win, &["reg", "delete", r"HKLM\Cluster", "/f"]);
    assert_eq!(code, 0, "reg delete: {out}{err}");

    // 6. A value of the wrong type is named, not taken for absent; RestrictRemoteClients = 2.
    reg_add(&win, SECURITY, "NetworkDtcAccessAdmin", "REG_SZ", "1");
    dword(&win, RPC_POLICY, "RestrictRemoteClients", 2);
    let (_, h, _) = dtc_config(&win, url);
    assert_eq!(h["data"]["network_dtc_access_admin"], Value::Null);
    assert!(
        h["data"]["read_errors"]["NetworkDtcAccessAdmin"]
            .as_str()
            .unwrap()
            .contains("REG_DWORD"),
        "{h:#}"
    );
    assert_eq!(h["data"]["restrict_remote_clients"], 2);
    assert_eq!(
        (h["status"].as_str(), h["cause"].as_str()),
        (Some("warn"), Some("dtc_auth_mismatch")),
        "{h:#}"
    );

    // 7. The service stopped, as wine's SCM reports it.
    sc(&win, "stop");
    let stopped = crate::support::netns::wait_until(std::time::Duration::from_secs(10), || {
        let (_, out, _) = wine_run(&win, &["sc", "query", "MSDTC"]);
        out.contains("STOPPED")
    });
    assert!(stopped, "the stand-in did not stop");
    // Judged by its start type, set by re-creating the stopped stand-in with `sc create ...
    // start=` and read back through the SCM's QueryServiceConfig: Automatic (it should be
    // running) and Disabled (nothing can start it) fail; Manual (starts on demand) warns and
    // says so.
    for (start, read_as, status, code, hint) in [
        ("auto", "automatic", "fail", 1, "Start-Service MSDTC"),
        ("disabled", "disabled", "fail", 1, "nothing can start it"),
        ("demand", "manual", "warn", 0, "starts on demand"),
    ] {
        sc(&win, "delete");
        install_standin_starting(&win, Some(start));
        let (exit, h, _) = dtc_config(&win, url);
        assert_eq!(h["data"]["service_state"], "stopped", "{start}: {h:#}");
        assert_eq!(h["data"]["service_start_type"], read_as, "{start}: {h:#}");
        assert_eq!(
            (h["status"].as_str(), h["cause"].as_str()),
            (Some(status), Some("dtc_unavailable")),
            "{start}: {h:#}"
        );
        assert_eq!(exit, code, "{start}: {h:#}");
        assert!(h["hint"].as_str().unwrap().contains(hint), "{start}: {h:#}");
        assert!(
            h["detail"]
                .as_str()
                .unwrap()
                .contains(&format!("start type {read_as}")),
            "{start}: {h:#}"
        );
    }
}

/// The authentication path's registry values (issue 28, `dtc_auth`) read back through wine's
/// registry API: the machine's domain (Tcpip\Parameters `Domain`, `NV Domain`) and the NTLM
/// policy (Lsa `LmCompatibilityLevel`, MSV1_0 `RestrictSendingNTLMTraffic`,
/// `RestrictReceivingNTLMTraffic`); a workgroup machine (empty `Domain`) with Mutual and all
/// outgoing NTLM denied is warned `dtc_auth` naming both settings; in a domain it is not.
#[test]
fn windows_build_reads_the_domain_and_ntlm_policy_and_predicts_dtc_auth_under_wine() {
    let test = "windows_build_reads_the_domain_and_ntlm_policy_and_predicts_dtc_auth_under_wine";
    let Some(setup) = wine(test, true) else {
        return;
    };
    let zone = offline_zone();
    let win = WinHost::new(setup, Some(&zone));
    // Up for the whole test: wine rewrites `Domain` at every start of a prefix (see good_config).
    let _up = keep_prefix_up(&win);
    let url = "msdtc://localhost";
    good_config(&win, (1, 0, 0), CID_A);
    reg_add(&win, TCPIP, "Domain", "REG_SZ", "");
    reg_add(&win, TCPIP, "NV Domain", "REG_SZ", "corp.example");
    dword(&win, LSA, "LmCompatibilityLevel", 2);
    dword(&win, MSV1_0, "RestrictSendingNTLMTraffic", 2);
    dword(&win, MSV1_0, "RestrictReceivingNTLMTraffic", 1);
    let (_, h, _) = dtc_config(&win, url);
    let d = &h["data"];
    assert_eq!(
        (
            d["domain"].as_str(),
            d["nv_domain"].as_str(),
            d["lm_compatibility_level"].as_u64(),
            d["restrict_sending_ntlm_traffic"].as_u64(),
            d["restrict_receiving_ntlm_traffic"].as_u64(),
        ),
        (Some(""), Some("corp.example"), Some(2), Some(2), Some(1)),
        "{h:#}"
    );
    let found = findings(&h);
    for setting in ["AllowOnlySecureRpcCalls", "RestrictSendingNTLMTraffic"] {
        assert!(
            found.contains(&("dtc_auth".into(), setting.into())),
            "{setting}: {h:#}"
        );
    }
    // Receiving 1 (deny domain accounts) does not matter to a workgroup machine on its own.
    assert!(
        !found.contains(&("dtc_auth".into(), "RestrictReceivingNTLMTraffic".into())),
        "{h:#}"
    );
    assert!(h["detail"].as_str().unwrap().contains("no domain"), "{h:#}");
    // No domain, no KDC to look for.
    assert_eq!(
        (
            h["data"]["kdc_reachable"].as_str(),
            h["data"]["kdc_detail"].as_str()
        ),
        (
            Some("not_checked"),
            Some("this host is in no domain (workgroup)")
        ),
        "{h:#}"
    );

    // Joined to a domain: Kerberos is possible, nothing to predict for this host alone.
    reg_add(&win, TCPIP, "Domain", "REG_SZ", "corp.example");
    let (_, h, _) = dtc_config(&win, url);
    assert_eq!(h["data"]["domain"], "corp.example");
    assert!(
        !findings(&h).iter().any(|(cause, _)| cause == "dtc_auth"),
        "{h:#}"
    );
    // The Windows build looked for corp.example's KDCs after reading `Domain` (DNS SRV, from
    // the offline zone: none found), so the decision had no KDC fact: not checked, and why.
    assert_eq!(h["data"]["kdc_reachable"], "not_checked", "{h:#}");
    assert!(
        h["data"]["kdc_detail"]
            .as_str()
            .unwrap_or_default()
            .starts_with("no KDC found for corp.example"),
        "{h:#}"
    );
    // A value of the wrong type is a read error, never judged as absent.
    reg_add(&win, MSV1_0, "RestrictSendingNTLMTraffic", "REG_SZ", "2");
    let (_, h, _) = dtc_config(&win, url);
    assert_eq!(h["data"]["restrict_sending_ntlm_traffic"], Value::Null);
    assert!(
        h["data"]["read_errors"]["RestrictSendingNTLMTraffic"]
            .as_str()
            .unwrap_or_default()
            .contains("REG_DWORD"),
        "{h:#}"
    );
}

/// `peer LISTEN --key-file KEY -f json --timeout 3s msdtc://localhost --reverse msdtc://localhost`.
fn peer_args<'a>(listen: &'a str, key: &'a str) -> [&'a str; 11] {
    [
        "peer",
        listen,
        "--key-file",
        key,
        "-f",
        "json",
        "--timeout",
        "3s",
        "msdtc://localhost",
        "--reverse",
        "msdtc://localhost",
    ]
}

/// A Windows peer and a Windows agent (each its own wine prefix, on loopback): the agent reads
/// its own registry for `--reverse msdtc://localhost` and the near side compares the two.
#[test]
fn windows_peer_and_windows_agent_compare_their_msdtc_configs_under_wine() {
    let test = "windows_peer_and_windows_agent_compare_their_msdtc_configs_under_wine";
    let Some(setup) = wine(test, true) else {
        return;
    };
    let zone = offline_zone();
    let near = WinHost::new(setup, Some(&zone));
    let far = WinHost::new(setup, Some(&zone));
    // Both up for the whole test: wine rewrites `Domain` at every start of a prefix.
    let (_near_up, _far_up) = (keep_prefix_up(&near), keep_prefix_up(&far));
    // Here mutual authentication; there none, and the same CID (a cloned image).
    good_config(&near, (1, 0, 0), CID_A);
    good_config(&far, (0, 0, 1), CID_A);
    let dir = tempfile::tempdir().unwrap();
    crate::support::write_key(&dir.path().join("agent.key"), format!("{KEY}\n"));
    let key = WinHost::win_path(&dir.path().join("agent.key"));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let agent = Agent::start(
        far.command(&["agent", "-v", "--listen", &listen, "--key-file", &key]),
        "windows agent",
    );
    let run = |near: &WinHost| {
        let (code, out, err) = near.run(&peer_args(&listen, &key));
        let report = parse_report(&out);
        assert_valid("peer with msdtc on both sides", &report);
        (
            code,
            report,
            format!("stderr: {err}\nagent log:\n{}", agent.log()),
        )
    };

    let (code, report, context) = run(&near);
    assert_eq!(code, 1, "{context}\n{report:#}");
    let far_hop = hop(&report, "reverse msdtc://localhost", "dtc_config");
    assert_eq!(far_hop["data"]["authentication"], "none", "{far_hop:#}");
    assert_eq!(far_hop["data"]["cid"], CID_A);
    // The agent's hint is worded for the agent's host.
    assert!(
        far_hop["hint"]
            .as_str()
            .unwrap()
            .starts_with("on the agent's side: "),
        "{far_hop:#}"
    );
    let pair = hop(&report, "msdtc_pair", "dtc_config");
    assert_eq!(
        (pair["status"].as_str(), pair["cause"].as_str()),
        (Some("fail"), Some("dtc_auth_mismatch")),
        "{pair:#}"
    );
    assert_eq!(pair["data"]["local_authentication"], "mutual");
    assert_eq!(pair["data"]["remote_authentication"], "none");
    let cid = hop(&report, "msdtc_cid", "dtc_cid");
    assert_eq!(cid["cause"], "duplicate_cid", "{cid:#}");

    // Compatible levels (incoming there) and another CID: both comparisons pass.
    dword(&far, MSDTC, "FallbackToUnsecureRPCIfNecessary", 1);
    reg_add(
        &far,
        r"HKCR\CID\{5D1E0000-AAAA-BBBB-CCCC-000000000001}\Description",
        "",
        "REG_SZ",
        "old",
    );
    reg_add(
        &far,
        &format!(r"HKCR\CID\{{{CID_B}}}\Description"),
        "",
        "REG_SZ",
        "MSDTC",
    );
    let (_, report, context) = run(&near);
    let pair = hop(&report, "msdtc_pair", "dtc_config");
    assert_eq!(pair["status"], "pass", "{context}\n{pair:#}");
    assert_eq!(pair["data"]["remote_authentication"], "incoming");
    let cid = hop(&report, "msdtc_cid", "dtc_cid");
    assert_eq!(cid["status"], "pass", "{cid:#}");
    assert_eq!(cid["data"]["cid"]["remote"], CID_B);

    // Mutual here, incoming there, in two different domains (issue 28, `dtc_auth`): Kerberos
    // only across a trust, so this host's Mutual is warned, naming the setting and the side.
    reg_add(&near, TCPIP, "Domain", "REG_SZ", "corp.example");
    reg_add(&far, TCPIP, "Domain", "REG_SZ", "branch.example");
    let (_, report, context) = run(&near);
    let pair = hop(&report, "msdtc_pair", "dtc_config");
    assert_eq!(
        (pair["status"].as_str(), pair["cause"].as_str()),
        (Some("warn"), Some("dtc_auth")),
        "{context}\n{pair:#}"
    );
    assert!(
        findings(pair).contains(&("dtc_auth".into(), "AllowOnlySecureRpcCalls".into())),
        "{pair:#}"
    );
    let detail = pair["detail"].as_str().unwrap();
    assert!(
        detail.contains("corp.example") && detail.contains("branch.example"),
        "{pair:#}"
    );
    assert!(
        pair["hint"].as_str().unwrap().starts_with("on this host:"),
        "{pair:#}"
    );
    // The same domain: nothing to predict.
    reg_add(&far, TCPIP, "Domain", "REG_SZ", "CORP.example");
    let (_, report, context) = run(&near);
    let pair = hop(&report, "msdtc_pair", "dtc_config");
    assert_eq!(pair["status"], "pass", "{context}\n{pair:#}");

    // A Linux peer against the same Windows agent: the agent's side is read, this side cannot
    // be (skip), so the pair is not compared, and says which side is missing.
    let linux_key = dir.path().join("agent.key");
    let (code, out, err) = dtcprobe_in(&zone, &peer_args(&listen, linux_key.to_str().unwrap()));
    let report = parse_report(&out);
    assert_valid("linux peer, windows agent", &report);
    let context = format!("stderr: {err}\n{report:#}\nagent log:\n{}", agent.log());
    let near_hop = hop(&report, "msdtc://localhost", "dtc_config");
    assert_eq!(near_hop["status"], "skip", "{context}");
    assert_eq!(near_hop["cause"], "unsupported", "{context}");
    let far_hop = hop(&report, "reverse msdtc://localhost", "dtc_config");
    assert_eq!(far_hop["data"]["cid"], CID_B, "{context}");
    // The agent's prefix has no MSDTC service: its side fails, so the run does.
    assert_eq!(far_hop["cause"], "dtc_unavailable", "{context}");
    assert_eq!(code, 1, "{context}");
    let pair = hop(&report, "msdtc_pair", "dtc_config");
    assert_eq!(pair["status"], "skip", "{context}");
    assert!(
        pair["detail"]
            .as_str()
            .unwrap()
            .contains("not compared: this host has no MSDTC configuration"),
        "{pair:#}"
    );
    assert!(
        !report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == "msdtc_cid"),
        "{context}"
    );
    drop(agent);
}
