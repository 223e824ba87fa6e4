//! Issue 12 items 4-8 through the binary: the first run (`init` then `check`), every command
//! written in the example configs' comments, the human/plain table (zones, NAME=URL, width,
//! colours, --quiet), watch's refusals and --textfile-name, the peer's usage errors and default
//! port, far-side hints, output-file errors, help examples, completions and the man page.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::netns::{self, dtcprobe_bin, Daemon, Netns};
use crate::support::{parse_report, run_bin};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs dtcprobe in `dir` with `env` (and NO_COLOR unset unless given); (code, stdout, stderr).
fn run_in(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = Command::new(dtcprobe_bin());
    cmd.args(args)
        .current_dir(dir)
        .env_remove("NO_COLOR")
        .env_remove("DTCPROBE_CONFIG")
        .env_remove("COLUMNS")
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run dtcprobe");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A port on 127.0.0.1 where nothing listens (bound, then released).
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

#[test]
fn first_run_init_then_check_reads_the_local_config() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out, _) = run_in(dir.path(), &["init"], &[]);
    assert_eq!(code, 0);
    assert!(out.contains("next: run `dtcprobe check`"), "{out}");

    let (code, out, err) = run_in(dir.path(), &["check"], &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        err.contains("reading dtcprobe.toml (found in the current directory"),
        "{err}"
    );
    assert!(out.contains("localhost-dns"), "{out}");
    assert!(out.contains("1 check: 1 pass"), "{out}");

    // Elsewhere, $DTCPROBE_CONFIG names it.
    let other = tempfile::tempdir().unwrap();
    let file = dir.path().join("dtcprobe.toml");
    let (code, _, err) = run_in(
        other.path(),
        &["check"],
        &[("DTCPROBE_CONFIG", file.to_str().unwrap())],
    );
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("from $DTCPROBE_CONFIG"), "{err}");

    // Neither: a usage error that says what to do.
    let (code, _, err) = run_in(other.path(), &["check"], &[]);
    assert_eq!(code, 2);
    assert!(err.contains("dtcprobe init"), "{err}");

    // `init DIR` says how to run it from here.
    let (code, out, _) = run_in(other.path(), &["init", "sub"], &[]);
    assert_eq!(code, 0);
    assert!(out.contains("dtcprobe check -c sub/dtcprobe.toml"), "{out}");
}

/// `dtcprobe ...` commands in the comments of a config file, in order.
fn commands_in_comments(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for line in text.lines().filter(|l| l.trim_start().starts_with('#')) {
        let mut rest = line;
        while let Some(at) = rest.find("dtcprobe ") {
            let tail = &rest[at..];
            let sub = tail["dtcprobe ".len()..]
                .split_whitespace()
                .next()
                .unwrap_or("");
            let end = tail.find('`').unwrap_or(tail.len());
            if [
                "check",
                "init",
                "agent",
                "peer",
                "watch",
                "matrix",
                "prometheus-config",
            ]
            .contains(&sub)
            {
                found.push(tail[..end].trim().to_string());
            }
            rest = &tail[end.min(tail.len())..];
            if rest.starts_with('`') {
                rest = &rest[1..];
            }
            if end == tail.len() {
                break;
            }
        }
    }
    found
}

/// The commented-out examples of config/example.toml, uncommented.
fn uncommented(text: &str) -> String {
    let mut out = String::new();
    let mut in_examples = false;
    for line in text.lines() {
        if line.starts_with("# ---- Examples") {
            in_examples = true;
        }
        let active = line
            .strip_prefix("# ")
            .filter(|l| in_examples && (l.starts_with("[[check]]") || l.contains(" = ")));
        out.push_str(active.unwrap_or(line));
        out.push('\n');
    }
    out
}

#[test]
fn every_command_in_the_example_configs_runs() {
    if !netns::can_run_netns_tests("every_command_in_the_example_configs_runs") {
        return;
    }
    // Inside a namespace with only loopback: what the examples resolve or connect to never
    // leaves this machine (a name in the examples fails to resolve there, quickly).
    let ns = Netns::new("uxcfg");
    ns.etc_file("resolv.conf", "nameserver 127.0.0.1\n");
    let run = |dir: &Path, command: &str| -> (i32, String, String) {
        let args: Vec<&str> = command.split_whitespace().skip(1).collect();
        let out = ns
            .command(dtcprobe_bin())
            .args(&args)
            .current_dir(dir)
            .env("NO_COLOR", "1")
            .env_remove("DTCPROBE_CONFIG")
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    // config/example.toml: what `init` writes, run where `init` wrote it.
    let example = std::fs::read_to_string(repo().join("config/example.toml")).unwrap();
    let commands = commands_in_comments(&example);
    assert!(commands.len() >= 4, "{commands:?}");
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(run(dir.path(), "dtcprobe init").0, 0);
    let (active, examples): (Vec<&String>, Vec<&String>) =
        commands.iter().partition(|c| !c.contains("sql01"));
    for command in active {
        let (code, out, err) = run(dir.path(), command);
        assert_eq!(code, 0, "`{command}` as written by init: {out}{err}");
    }
    // The commented-out examples, once uncommented, are a valid config and the command shown
    // with them names real checks: they run (and fail: the REPLACE-ME host does not exist).
    std::fs::write(dir.path().join("dtcprobe.toml"), uncommented(&example)).unwrap();
    assert!(!examples.is_empty(), "{commands:?}");
    for command in examples {
        let (code, out, err) = run(dir.path(), command);
        assert_eq!(
            code, 1,
            "`{command}` on the uncommented examples: {out}{err}"
        );
        assert!(
            out.contains("sql01-epm") || out.contains("sql01-tds"),
            "{out}"
        );
    }

    // config/demo-localhost.toml: run from the repository, as its comment says; exit 1 expected.
    let demo = std::fs::read_to_string(repo().join("config/demo-localhost.toml")).unwrap();
    for command in commands_in_comments(&demo) {
        let (code, out, err) = run(&repo(), &command);
        assert_eq!(code, 1, "`{command}`: {out}{err}");
        assert!(out.contains("refused"), "{out}");
    }

    // config/agent.example.toml: the agent starts as written, in the namespace (its 0.0.0.0 is
    // the namespace's), with the config copied as agent.toml and stays up. The one thing
    // replaced is the key file's path (/etc/dtcprobe is the machine's, not the test's).
    let agent = std::fs::read_to_string(repo().join("config/agent.example.toml")).unwrap();
    let commands = commands_in_comments(&agent);
    assert!(!commands.is_empty());
    let adir = tempfile::tempdir().unwrap();
    let key = adir.path().join("agent.key");
    crate::support::write_key(
        &key,
        "32ae9e99f1c49d3b8ba390724722e55f89c94e612892484a9dd9d4db400a362c",
    );
    std::fs::write(adir.path().join("agent.toml"), &agent).unwrap();
    for command in commands {
        assert!(command.contains("/etc/dtcprobe/agent.key"), "{command}");
        let command = command.replace("/etc/dtcprobe/agent.key", key.to_str().unwrap());
        let port = command
            .split_whitespace()
            .find_map(|w| w.strip_prefix("0.0.0.0:"))
            .unwrap_or("7135");
        let _agent = serves_as_written(&ns, adir.path(), &command, port);
    }
}

/// Starts `command` (a `dtcprobe ...` line from an example) in `ns` from `dir` and asserts that
/// it stays up and listens on `port`; the running process, stopped on drop.
fn serves_as_written(ns: &Netns, dir: &Path, command: &str, port: &str) -> Daemon {
    let args: Vec<&str> = command.split_whitespace().skip(1).collect();
    let child = ns
        .command(dtcprobe_bin())
        .args(&args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut daemon = Daemon::adopt(child, "dtcprobe (an example's command)");
    let listening = netns::wait_until(Duration::from_secs(10), || {
        ns.command("sh")
            .args(["-c", &format!("ss -ltn | grep -q ':{port} '")])
            .status()
            .is_ok_and(|s| s.success())
    });
    daemon.assert_running();
    assert!(listening, "`{command}` did not listen on {port}");
    daemon
}

/// config/matrix.example.toml: every command in its comments, as written, in a namespace with
/// only loopback (its agents' names do not resolve there: the grid reports them unreachable, it
/// does not refuse the command). `watch` as written starts and serves its metrics.
#[test]
fn every_command_in_the_matrix_example_runs() {
    if !netns::can_run_netns_tests("every_command_in_the_matrix_example_runs") {
        return;
    }
    let ns = Netns::new("uxmtx");
    ns.etc_file("resolv.conf", "nameserver 127.0.0.1\n");
    let dir = tempfile::tempdir().unwrap();
    let example = std::fs::read_to_string(repo().join("config/matrix.example.toml")).unwrap();
    std::fs::write(dir.path().join("matrix.toml"), &example).unwrap();
    for key in ["agent.key", "sql-agent.key"] {
        crate::support::write_key(
            &dir.path().join(key),
            "b9d9abd8f355455c15b104e58b64091bb523971bb5105afbb4e2d84c43d4b2cf",
        );
    }
    let commands = commands_in_comments(&example);
    assert!(commands.len() >= 6, "{commands:?}");
    for command in &commands {
        // The header lists each command, then two or more spaces, then what it does.
        let command = command.split("  ").next().unwrap().trim();
        // `... > app.toml`: the redirection is the shell's; the test writes the file.
        let (command, into) = match command.split_once(" > ") {
            Some((c, file)) => (c.trim(), Some(file.trim())),
            None => (command, None),
        };
        let args: Vec<&str> = command.split_whitespace().skip(1).collect();
        if args.first() == Some(&"watch") {
            let port = command
                .split_whitespace()
                .find_map(|w| w.strip_prefix("0.0.0.0:"))
                .expect("watch's example names its metrics address");
            let _watch = serves_as_written(&ns, dir.path(), command, port);
            continue;
        }
        let out = ns
            .command(dtcprobe_bin())
            .args(&args)
            .current_dir(dir.path())
            .env("NO_COLOR", "1")
            .output()
            .unwrap();
        let code = out.status.code().unwrap_or(-1);
        let stderr = String::from_utf8_lossy(&out.stderr);
        // 0; a grid whose agents cannot be reached here is inconclusive (3); never a usage (2)
        // or config (78) error.
        let grid = args.first() == Some(&"matrix") && into.is_none() && args.len() <= 5;
        assert!(
            code == 0 || (grid && code == 3),
            "`{command}` exited {code}: {stderr}"
        );
        if let Some(file) = into {
            std::fs::write(dir.path().join(file), &out.stdout).unwrap();
        }
    }
    assert!(
        dir.path().join("app.toml").is_file(),
        "the example derives app.toml before watch reads it: {commands:?}"
    );
}

#[test]
fn human_table_zones_names_width_colours_and_quiet() {
    let dir = tempfile::tempdir().unwrap();
    let port = closed_port();
    let cfg = dir.path().join("z.toml");
    std::fs::write(
        &cfg,
        format!(
            "[defaults]\nzone = \"web\"\n[[check]]\nname = \"db\"\ntarget = \"tcp://127.0.0.1:{port}\"\nto = \"sql\"\n"
        ),
    )
    .unwrap();
    let long = format!("epm://127.0.0.1:{port}?iface=4d9f4ab8-7d1c-11cf-861e-0020af6e7c57/v1.0");
    let named = format!("mapper={long}");
    let cfg_s = cfg.to_str().unwrap();
    let (code, out, err) = run_in(
        dir.path(),
        &["check", "-c", cfg_s, &long, &named, "--color", "never"],
        &[("COLUMNS", "72")],
    );
    assert_eq!(code, 1, "{err}");
    assert!(out.contains("ZONES"), "{out}");
    assert!(out.contains("web -> sql"), "{out}");
    // Ad-hoc checks are `from` this host's zone; their `to` is unknown.
    assert!(out.contains("web -> ?"), "{out}");
    assert!(out.lines().any(|l| l.starts_with("mapper ")), "{out}");
    for line in out.lines() {
        assert!(
            line.chars().count() <= 72,
            "wider than COLUMNS=72: {line:?}\n{out}"
        );
    }
    assert!(out.contains("3 checks: 0 pass, 0 warn, 3 fail"), "{out}");
    assert!(!out.contains('\x1b'), "{out}");

    // The same as JSON: the named check kept its name, the URL with `=` in its query its own.
    let (_, json, _) = run_in(dir.path(), &["check", &named, &long, "-f", "json"], &[]);
    let report = parse_report(&json);
    let names: Vec<&str> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["mapper", long.as_str()]);

    // --color always: each count in its colour (the pass count green, the fail count red).
    let open = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let up = format!("tcp://{}", open.local_addr().unwrap());
    let (_, out, _) = run_in(
        dir.path(),
        &["check", "-c", cfg_s, &up, "--color", "always"],
        &[],
    );
    assert!(out.contains("\x1b[32m1 pass\x1b[0m"), "{out:?}");
    assert!(out.contains("\x1b[31;1m1 fail\x1b[0m"), "{out:?}");
    assert!(out.contains("2 checks:"), "{out}");
    let (_, out, _) = run_in(dir.path(), &["check", "-c", cfg_s, "--color", "never"], &[]);
    assert!(out.contains("1 check:"), "{out}");

    // --quiet: the failing hop only (not the passing resolve), then the summary.
    let (_, out, _) = run_in(dir.path(), &["check", "-c", cfg_s, "--quiet"], &[]);
    assert!(!out.contains("resolve"), "{out}");
    assert!(out.contains("refused"), "{out}");
    let (_, plain, _) = run_in(
        dir.path(),
        &["check", "-c", cfg_s, "-f", "plain", "-q"],
        &[],
    );
    let rows: Vec<&str> = plain
        .lines()
        .filter(|l| !l.starts_with("summary"))
        .collect();
    assert_eq!(rows.len(), 1, "{plain}");
    let cols: Vec<&str> = rows[0].split('\t').collect();
    assert_eq!(cols[..3], ["db", "tcp", "fail"], "{plain}");
    assert_eq!(cols[6..], ["web", "sql"], "{plain}");
}

/// Runs `args` under a pseudo-terminal (util-linux `script`), so that `--color auto` sees a TTY.
fn on_a_tty(args: &str, env: &[(&str, &str)]) -> String {
    let mut cmd = Command::new("script");
    cmd.args([
        "-qec",
        &format!("{} check {args}", dtcprobe_bin()),
        "/dev/null",
    ])
    .env_remove("NO_COLOR")
    .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("script (util-linux)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn colour_auto_follows_the_terminal_and_term_dumb() {
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("SKIP colour_auto_follows_the_terminal_and_term_dumb: no `script` (util-linux)");
        return;
    }
    let port = closed_port();
    let target = format!("tcp://127.0.0.1:{port}");
    let tty = on_a_tty(&target, &[("TERM", "xterm")]);
    assert!(tty.contains("\x1b[31;1mFAIL"), "{tty:?}");
    let dumb = on_a_tty(&target, &[("TERM", "dumb")]);
    assert!(dumb.contains("FAIL") && !dumb.contains('\x1b'), "{dumb:?}");
    let no_color = on_a_tty(&target, &[("TERM", "xterm"), ("NO_COLOR", "1")]);
    assert!(
        no_color.contains("FAIL") && !no_color.contains('\x1b'),
        "{no_color:?}"
    );
    let never = on_a_tty(&format!("--color never {target}"), &[("TERM", "xterm")]);
    assert!(
        never.contains("FAIL") && !never.contains('\x1b'),
        "{never:?}"
    );
}

#[test]
fn watch_refuses_one_run_options_and_names_its_textfile() {
    let port = closed_port();
    let target = format!("tcp://127.0.0.1:{port}");
    for format in ["nagios", "junit", "prometheus"] {
        let (code, _, err) = run_bin(&["watch", "--interval", "1s", "-f", format, &target]);
        assert_eq!(code, 2, "-f {format}: {err}");
        assert!(err.contains("--metrics-listen"), "{err}");
    }
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("b.json");
    std::fs::write(&base, "{}").unwrap();
    let (code, _, err) = run_bin(&[
        "watch",
        "--interval",
        "1s",
        "--baseline",
        base.to_str().unwrap(),
        &target,
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--baseline"), "{err}");
    let (_, help, _) = run_bin(&["watch", "--help"]);
    assert!(!help.contains("--baseline"), "{help}");
    assert!(help.contains("--textfile-name"), "{help}");

    let d = dir.path().to_str().unwrap();
    let (code, out, err) = run_bin(&[
        "watch",
        "--interval",
        "1s",
        "--count",
        "1",
        "--textfile-dir",
        d,
        "--textfile-name",
        "dtcprobe-web.prom",
        &target,
    ]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("summary: 1 round;"), "{out}");
    let prom = std::fs::read_to_string(dir.path().join("dtcprobe-web.prom")).unwrap();
    assert!(prom.contains("dtcprobe_check_success"), "{prom}");
    assert!(!dir.path().join("dtcprobe.prom").exists());
    for bad in ["a/b.prom", ".hidden.prom", "x.txt"] {
        let (code, _, err) = run_bin(&[
            "check",
            "--textfile-dir",
            d,
            "--textfile-name",
            bad,
            &target,
        ]);
        assert_eq!(code, 2, "{bad}: {err}");
    }
}

#[test]
fn output_file_errors_keep_the_run_exit_code() {
    let port = closed_port();
    let target = format!("tcp://127.0.0.1:{port}");
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("missing-dir/report.json");
    let good = dir.path().join("report.xml");
    let spec = format!("json={}", bad.display());
    let good_spec = format!("junit={}", good.display());
    let (code, _, err) = run_bin(&["check", &target, "--output", &spec, "--output", &good_spec]);
    assert_eq!(code, 1, "a failed check stays 1: {err}");
    assert!(err.contains("cannot write json output to"), "{err}");
    assert!(err.contains("missing-dir/report.json"), "{err}");
    // The other output was still written.
    assert!(good.exists());
    // A clean run whose output cannot be written: inconclusive.
    let (code, _, err) = run_bin(&["check", "dns://localhost", "--output", &spec]);
    assert_eq!(code, 3, "{err}");
}

#[test]
fn peer_usage_errors_and_far_side_hints() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k");
    crate::support::write_key(
        &key,
        "32ae9e99f1c49d3b8ba390724722e55f89c94e612892484a9dd9d4db400a362c",
    );
    let key_s = key.to_str().unwrap();
    let (code, _, err) = run_bin(&["peer", "sql01:http", "--key-file", key_s]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("port"), "{err}");
    let (code, _, err) = run_bin(&[
        "peer",
        "127.0.0.1",
        "--key-file",
        key_s,
        "--reverse",
        "mssql://sa@caller/master",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("never runs `mssql`"), "{err}");

    if !netns::can_run_netns_tests("peer_usage_errors_and_far_side_hints (agent part)") {
        return;
    }
    // An agent on the default port in a namespace whose DNS answers nothing: `peer 127.0.0.1`
    // reaches it on 7135, and the agent's failed lookup of the caller's name comes back with a
    // hint about the agent's side, not "this host".
    let ns = Netns::new("uxpeer");
    ns.etc_file("resolv.conf", "nameserver 127.0.0.1\n");
    let mut agent = Daemon::spawn(
        &ns,
        dtcprobe_bin(),
        &["agent", "--listen", "127.0.0.1:7135", "--key-file", key_s],
    );
    let up = netns::wait_until(Duration::from_secs(10), || {
        ns.command("sh")
            .args(["-c", "ss -ltn | grep -q ':7135 '"])
            .status()
            .is_ok_and(|s| s.success())
    });
    agent.assert_running();
    assert!(up, "agent did not listen");
    let (code, out, err) = netns::dtcprobe_in(
        &ns,
        &[
            "peer",
            "127.0.0.1",
            "--key-file",
            key_s,
            "--caller-name",
            "nosuchhost.invalid",
            "-f",
            "json",
            "--timeout",
            "2s",
        ],
    );
    let report = parse_report(&out);
    let checks = report["checks"].as_array().unwrap();
    let agent_tcp = &checks[0]["hops"][0];
    assert!(
        agent_tcp["detail"]
            .as_str()
            .unwrap()
            .contains("127.0.0.1:7135"),
        "{out}{err}"
    );
    let callback = checks
        .iter()
        .find(|c| c["name"] == "callback")
        .unwrap_or_else(|| panic!("{out}"));
    let resolve = &callback["hops"][0];
    assert_ne!(resolve["status"], "pass", "{out}");
    let hint = resolve["hint"].as_str().unwrap_or_else(|| panic!("{out}"));
    assert!(hint.starts_with("on the agent's side: "), "{hint}");
    assert!(!hint.contains("this host"), "{hint}");
    assert!(code == 1, "{code}: {err}");
}

#[test]
fn help_examples_completions_and_man_page() {
    for sub in ["check", "init", "agent", "peer", "watch"] {
        let (code, out, _) = run_bin(&[sub, "--help"]);
        assert_eq!(code, 0);
        assert!(out.contains("Examples:"), "{sub} --help: {out}");
        assert!(
            out.contains(&format!("dtcprobe {sub}")),
            "{sub} --help: {out}"
        );
    }
    let (_, out, _) = run_bin(&["--help"]);
    assert!(out.contains("Examples:"), "{out}");
    let (_, out, _) = run_bin(&["check", "--help"]);
    assert!(out.contains("postgres://"), "{out}");

    // bash: the generated script loads and registers a completion for dtcprobe.
    let (code, script, _) = run_bin(&["completions", "bash"]);
    assert_eq!(code, 0);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dtcprobe.bash");
    std::fs::write(&file, &script).unwrap();
    let out = Command::new("bash")
        .args([
            "-c",
            &format!(". {} && complete -p dtcprobe", file.display()),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("dtcprobe"));
    for shell in ["zsh", "fish", "powershell", "elvish"] {
        let (code, script, _) = run_bin(&["completions", shell]);
        assert_eq!(code, 0, "{shell}");
        assert!(script.contains("textfile-name"), "{shell}");
    }
    assert_eq!(run_bin(&["completions", "tcsh"]).0, 2);

    // The man page: roff that man(1) renders, with every subcommand.
    let (code, roff, _) = run_bin(&["man"]);
    assert_eq!(code, 0);
    assert!(roff.contains(".TH dtcprobe"), "{roff}");
    let page = dir.path().join("dtcprobe.1");
    std::fs::write(&page, &roff).unwrap();
    let rendered = Command::new("man")
        .args(["-l", page.to_str().unwrap()])
        .env("MANPAGER", "cat")
        .env("MANWIDTH", "100")
        .output();
    if let Some(r) = rendered.ok().filter(|r| r.status.success()) {
        let text = String::from_utf8_lossy(&r.stdout);
        for sub in ["dtcprobe-check", "dtcprobe-peer", "dtcprobe-watch"] {
            assert!(
                text.contains(sub),
                "{sub} missing from the man page: {text}"
            );
        }
    } else {
        for sub in ["dtcprobe-check", "dtcprobe-peer", "dtcprobe-watch"] {
            assert!(roff.contains(sub), "{sub} missing from the man page");
        }
    }
}

/// tests/wine/runner given the release build, as a user trying the Windows binary would run
/// it: its wine prefix goes under the target directory, not into the repository root (it
/// assumed `deps/` three levels below the target directory). Run with a stand-in `wine` that
/// prints the prefix it was given, and a stand-in shim builder: no wine needed.
#[test]
fn the_wine_runner_keeps_its_prefix_in_the_target_directory() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let tools = dir.path().join("tools");
    std::fs::create_dir_all(&tools).unwrap();
    std::fs::copy(repo().join("tests/wine/runner"), tools.join("runner")).unwrap();
    let script = |path: &Path, body: &str| {
        std::fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    };
    script(&tools.join("build-shim"), "exit 0");
    script(&tools.join("build-fake-export"), "exit 0");
    let bin = dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    script(&bin.join("wine"), "echo \"$WINEPREFIX\"");
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    for build in ["release", "debug/deps"] {
        let repo_root = dir
            .path()
            .join(format!("checkout-{}", build.replace('/', "-")));
        let exe_dir = repo_root.join("target/x86_64-pc-windows-gnu").join(build);
        std::fs::create_dir_all(&exe_dir).unwrap();
        let exe = exe_dir.join("dtcprobe.exe");
        std::fs::write(&exe, b"MZ").unwrap();
        let out = Command::new(tools.join("runner"))
            .arg(&exe)
            .env("PATH", &path)
            .env_remove("DTCPROBE_WINEPREFIX")
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let prefix = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert_eq!(
            PathBuf::from(&prefix),
            repo_root.join("target/wine/prefix-runner"),
            "{build}"
        );
        assert!(
            !repo_root.join("wine").exists(),
            "{build}: a wine/ beside target/"
        );
    }
}
