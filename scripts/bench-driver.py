#!/usr/bin/env python3
"""Measurement half of scripts/bench (which sets up the namespaces, listeners, the router, Samba,
PostgreSQL and the TDS peer and passes them in the environment). Runs each case's tools
alternately (paired: machine noise hits both alike), records wall time and peak RSS (wait4 rusage
of the tool's own process: `ip netns exec` execs the tool in place), prints medians and min-max,
each case's `ROW` line (the issue 26 table: dtcprobe, the yardstick, their ratio) and checks
each figure against its goal. Every run's output is checked (outcomes, exit codes), so a broken
run is never counted. The output file is rewritten."""

import collections
import json
import os
import statistics
import subprocess
import sys
import time

BIN = os.environ["BENCH_BIN"]
WEB = os.environ["BENCH_WEB"]
LO = os.environ["BENCH_LO"]
SCRATCH = os.environ["BENCH_SCRATCH"]
PEER_PORT = os.environ["BENCH_PEER_PORT"]
RUNS = int(os.environ.get("BENCH_RUNS", "7"))
CASES = os.environ.get("BENCH_CASES", "one d parse path epm pg c").split()
SQL = "198.18.1.2"  # behind the router (cases a, b)
# Set up by scripts/bench for the issue 26 rows.
OPEN_PORT = os.environ.get("BENCH_OPEN_PORT", "10000")
ROUTED = os.environ.get("BENCH_ROUTED", "")          # namespace behind the router's near side
ROUTED_HOST = "198.18.1.2"
EPM_HOST = os.environ.get("BENCH_EPM_HOST", "")
PG_PORT = os.environ.get("BENCH_PG_PORT", "")
ROWS = []
# CPU time (user + system) of each process timed, in order: read back by run_case. On a machine
# shared with builds, wall times swing with the load; CPU times much less.
TIMED_CPU = []

out = open(sys.argv[1], "w")


def emit(line=""):
    print(line, flush=True)
    out.write(line + "\n")
    out.flush()


def loadavg():
    return " ".join(open("/proc/loadavg").read().split()[:3])


def run_case(name, tools, runs, check, pause=0):
    """tools: [(label, argv, stdin)]; alternated `runs` times (`pause` seconds between rounds).
    Returns {label: (median wall, min, max, median RSS MiB, max RSS MiB)}."""
    emit(f"## case {name}: load average before {loadavg()}")
    results = collections.defaultdict(list)
    for i in range(runs):
        if i and pause:
            time.sleep(pause)
        for label, argv, stdin_text in tools:
            wall, rss, code, stdout, stderr = timed(argv, stdin_text)
            cpu = TIMED_CPU[-1]
            problem = check(label, code, stdout, stderr)
            if problem:
                emit(f"{label:<10} run {i + 1}: INVALID ({problem}); not counted")
                continue
            results[label].append((wall, rss, cpu))
            emit(f"{label:<10} run {i + 1}: wall {wall:.3f} s  cpu {cpu * 1000:.1f} ms  peak RSS {rss / 1024:.1f} MiB")
    emit(f"# load average after {loadavg()}")
    summary = {}
    for label, v in results.items():
        walls = sorted(w for w, _, _ in v)
        rss = sorted(r for _, r, _ in v)
        cpus = sorted(c for _, _, c in v)
        summary[label] = (statistics.median(walls), walls[0], walls[-1], statistics.median(rss) / 1024,
                          rss[-1] / 1024, statistics.median(cpus))
        emit(f"# median {label}: wall {summary[label][0]:.3f} s (min {walls[0]:.3f}, max {walls[-1]:.3f}), "
             f"cpu {summary[label][5] * 1000:.1f} ms, "
             f"peak RSS {summary[label][3]:.1f} MiB (max {summary[label][4]:.1f}), n={len(v)}")
    return summary


def timed(argv, stdin_text):
    """Wall time and peak RSS of one process (fork + exec + wait4, no shell in between)."""
    r, w = os.pipe()
    started = time.perf_counter()
    stdout_path = os.path.join(SCRATCH, "stdout")
    stderr_path = os.path.join(SCRATCH, "stderr")
    with open(stdout_path, "wb") as so, open(stderr_path, "wb") as se:
        pid = os.fork()
        if pid == 0:
            os.dup2(r, 0)
            os.close(w)
            os.dup2(so.fileno(), 1)
            os.dup2(se.fileno(), 2)
            try:
                os.execvp(argv[0], argv)
            finally:
                os._exit(127)
        os.close(r)
        if stdin_text:
            os.write(w, stdin_text.encode())
        os.close(w)
        _, status, ru = os.wait4(pid, 0)
    wall = time.perf_counter() - started
    TIMED_CPU.append(ru.ru_utime + ru.ru_stime)
    code = os.waitstatus_to_exitcode(status)
    stdout = open(stdout_path, errors="replace").read()
    stderr = open(stderr_path, errors="replace").read()
    os.unlink(stdout_path)
    os.unlink(stderr_path)
    return wall, ru.ru_maxrss, code, stdout, stderr


def nmap(ns, timeout_ms, ports, host):
    t = f"{timeout_ms}ms"
    return ["ip", "netns", "exec", ns, "nmap", "-sT", "-Pn", "-n", "--max-retries", "0",
            "--min-rtt-timeout", t, "--max-rtt-timeout", t, "--initial-rtt-timeout", t,
            "--min-parallelism", "1000", "--host-timeout", "120s", "-p", ports, host]


def ranges(ports):
    """Compact nmap port list: 1,2,3,7 -> 1-3,7."""
    ports = sorted(ports)
    spans = [[ports[0], ports[0]]]
    for p in ports[1:]:
        if p == spans[-1][1] + 1:
            spans[-1][1] = p
        else:
            spans.append([p, p])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in spans)


def tcp_outcomes(report):
    r = json.loads(report)
    return dict(collections.Counter(
        f"{h['status']}/{h.get('cause') or '-'}" for c in r["checks"] for h in c["hops"] if h["hop"] == "tcp"))


def verdict(ok):
    return "MET" if ok else "NOT MET"


def row(text):
    """One line of the issue's table: what scripts/bench prints again at the end."""
    ROWS.append(text)
    emit(f"ROW {text}")


def cpu_note(s, a, b):
    """The CPU-time ratio of tools a and b, for rows measured on a busy machine."""
    return f" (CPU {s[a][5] * 1000:.1f} / {s[b][5] * 1000:.1f} ms = {s[a][5] / s[b][5]:.2f} x)"


def ms(seconds):
    return f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds:.3f} s"


emit(f"# scripts/bench {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} on {os.cpu_count()} cores, "
     f"{os.uname().release}; dist build (whole-program LTO); {RUNS} runs per tool (case c: {3 * RUNS}), alternating")
emit(f"# machine shared with other builds: load average at start {loadavg()}")
emit(f"# dtcprobe {subprocess.run([BIN, '--version'], capture_output=True, text=True).stdout.strip()}, "
     f"{subprocess.run(['nmap', '--version'], capture_output=True, text=True).stdout.splitlines()[0]}")
targets_met = []

if "a" in CASES:
    emit()
    emit("# (a) 1,000 TCP targets: 16 dropped (one per 64, at the start of each window of 64), "
         "492 open, 492 refused; default flags (timeout 3 s, default concurrency) vs nmap -sT at 3 s")
    targets, opened, refused, dropped = [], 0, 0, 0
    for i in range(1000):
        if i % 64 == 0:
            port = 30000 + dropped; dropped += 1
        elif i % 2:
            port = 10000 + opened; opened += 1
        else:
            port = 20000 + refused; refused += 1
        targets.append(port)
    dtc = ["ip", "netns", "exec", WEB, BIN, "check", "-f", "json"] + [f"tcp://{SQL}:{p}" for p in targets]
    expect = {"fail/timeout": dropped, "fail/refused": refused, "pass/-": opened}

    def check_a(label, code, stdout, stderr):
        if label == "dtcprobe":
            got = tcp_outcomes(stdout)
            return None if got == expect else f"outcomes {got}, expected {expect}"
        return None if f"{dropped} filtered" in stdout or "filtered" in stdout else "nmap saw no filtered ports"

    s = run_case("a", [("dtcprobe", dtc, None), ("nmap", nmap(WEB, 3000, ranges(targets), SQL), None)], RUNS, check_a)
    d, n = s["dtcprobe"][0], s["nmap"][0]
    emit(f"# target (a): <= 1.3 x 3 s = 3.9 s: {d:.3f} s {verdict(d <= 3.9)}; within 10% of nmap "
         f"({n:.3f} s, limit {1.1 * n:.3f} s): {d / n:.3f} x {verdict(d <= 1.1 * n)}")

if "b" in CASES:
    emit()
    emit("# (b) 200 dropped targets, --timeout 1s, default concurrency, vs nmap -sT at 1 s")
    ports = list(range(30000, 30200))
    dtc = ["ip", "netns", "exec", WEB, BIN, "check", "-f", "json", "--timeout", "1s"] + \
        [f"tcp://{SQL}:{p}" for p in ports]

    def check_b(label, code, stdout, stderr):
        if label == "dtcprobe":
            got = tcp_outcomes(stdout)
            return None if got == {"fail/timeout": 200} else f"outcomes {got}"
        return None if "200 filtered" in stdout else "nmap did not see 200 filtered ports"

    s = run_case("b", [("dtcprobe", dtc, None), ("nmap", nmap(WEB, 1000, ranges(ports), SQL), None)], RUNS, check_b)
    d = s["dtcprobe"][0]
    emit(f"# target (b): <= 1.3 s: {d:.3f} s {verdict(d <= 1.3)} (nmap {s['nmap'][0]:.3f} s)")

if "c" in CASES:
    emit()
    emit("# (c) whole process: mssql login (full TLS) + tx_local against the TDS test peer on 127.0.0.1 "
         "vs FreeTDS tsql (encryption = require) doing the same login and statements")
    pw = os.path.join(SCRATCH, "pw")
    url = f"mssql://probe@127.0.0.1:{PEER_PORT}/app?tx=local&trust_server_certificate=true"
    dtc = [BIN, "check", "-f", "json", "--password-file", pw, url]
    password = open(pw).read().strip()
    script = ("BEGIN TRANSACTION\ngo\nCREATE TABLE #dtcprobe (id int NOT NULL PRIMARY KEY, note nvarchar(64) NOT NULL)\ngo\n"
              "INSERT INTO #dtcprobe (id, note) VALUES (1, N'bench')\ngo\nSELECT id, note FROM #dtcprobe\ngo\n"
              "ROLLBACK TRANSACTION\ngo\nSELECT @@TRANCOUNT AS trancount\ngo\nexit\n")
    tsql = ["env", f"FREETDSCONF={SCRATCH}/freetds.conf", "tsql", "-H", "127.0.0.1", "-p", PEER_PORT,
            "-U", "probe", "-P", password, "-D", "app"]

    def check_c(label, code, stdout, stderr):
        if label == "dtcprobe":
            if code != 0:
                return f"exit {code}: {stderr.strip()[:200]}"
            hops = {h["hop"]: h["status"] for c in json.loads(stdout)["checks"] for h in c["hops"]}
            return None if hops.get("login") == "pass" and hops.get("tx_local") == "pass" else f"hops {hops}"
        return None if code == 0 and "bench" in stdout else f"tsql exit {code}"

    s = run_case("c", [("dtcprobe", dtc, None), ("tsql", tsql, script)], 3 * RUNS, check_c)
    d, t = s["dtcprobe"][0], s["tsql"][0]
    emit(f"# target (c): dtcprobe <= 1.5 x tsql ({t * 1000:.1f} ms, limit {1.5 * t * 1000:.1f} ms): "
         f"{d * 1000:.1f} ms = {d / t:.2f} x {verdict(d <= 1.5 * t)}")
    row(f"SQL Server login with TLS + local tx: dtcprobe {ms(d)} | FreeTDS tsql {ms(t)} | {d / t:.2f} x"
        + cpu_note(s, "dtcprobe", "tsql"))

BASE_RSS = {}

if "one" in CASES:
    emit()
    emit("# (one) whole process, one open loopback port (a namespace with only lo, one listener): "
         "dtcprobe check -f json vs nc -z")
    url = f"tcp://127.0.0.1:{OPEN_PORT}"
    dtc = ["ip", "netns", "exec", LO, BIN, "check", "-f", "json", url]
    nc = ["ip", "netns", "exec", LO, "nc", "-z", "127.0.0.1", OPEN_PORT]

    def check_one(label, code, stdout, stderr):
        if label == "dtcprobe":
            got = tcp_outcomes(stdout)
            return None if code == 0 and got == {"pass/-": 1} else f"exit {code}, outcomes {got}"
        return None if code == 0 else f"nc exit {code}"

    s = run_case("one", [("dtcprobe", dtc, None), ("nc", nc, None)], 3 * RUNS, check_one)
    d, n = s["dtcprobe"][0], s["nc"][0]
    BASE_RSS["dtcprobe"] = s["dtcprobe"][3]
    emit(f"# goal (issue 26): within 1.3 x nc -z: {d / n:.2f} x {verdict(d <= 1.3 * n)}")
    row(f"one open loopback port, whole process: dtcprobe {ms(d)} | nc -z {ms(n)} | {d / n:.2f} x"
        + cpu_note(s, "dtcprobe", "nc"))

if "d" in CASES:
    emit()
    emit("# (d) N refused loopback targets (a namespace with only lo: nothing listens), dtcprobe from a "
         "config file of N [[check]] tables (planning + run, default flags) vs nmap -sT on the same ports")
    per_target = {}
    rss_of = {}
    for n in (1000, 5000, 10000):
        cfg = os.path.join(SCRATCH, f"refused{n}.toml")
        with open(cfg, "w") as f:
            for i in range(n):
                f.write(f'[[check]]\nname = "r{i}"\nkind = "tcp"\nhost = "127.0.0.1"\nport = {20000 + i}\n\n')
        dtc = ["ip", "netns", "exec", LO, BIN, "check", "-f", "json", "-c", cfg]

        def check_d(label, code, stdout, stderr, n=n):
            if label == "dtcprobe":
                got = tcp_outcomes(stdout)
                return None if got == {"fail/refused": n} else f"outcomes {got}"
            return None if f"{n} closed" in stdout else "nmap did not see every port closed"

        s = run_case(f"d{n}", [("dtcprobe", dtc, None),
                               ("nmap", nmap(LO, 3000, f"20000-{20000 + n - 1}", "127.0.0.1"), None)],
                     RUNS, check_d)
        os.unlink(cfg)
        d, nm, rss = s["dtcprobe"][0], s["nmap"][0], s["dtcprobe"][3]
        per_target[n] = d / n
        emit(f"# (d) {n}: dtcprobe {d:.3f} s = {d / nm:.2f} x nmap ({nm:.3f} s), "
             f"{d / n * 1e6:.1f} us/target, peak RSS {rss:.1f} MiB (nmap {s['nmap'][3]:.1f} MiB)")
        rss_of[n] = rss
        label = f"{n:,} refused loopback targets (config file, JSON)"
        extra = ""
        if n == 10000:
            base = BASE_RSS.get("dtcprobe")
            per_check = f"{(rss - base) * 1024 / n:.1f} KiB/check above one check's {base:.1f} MiB" if base else ""
            slope = f"{(rss - rss_of[1000]) * 1024 / (n - 1000):.1f} KiB/check from 1,000 to 10,000" \
                if 1000 in rss_of else ""
            extra = f", {rss:.1f} MiB ({'; '.join(x for x in (per_check, slope) if x)}) vs {s['nmap'][3]:.1f} MiB"
            emit(f"# goals (issue 26): 10,000 at or below nmap (aim 0.8 x): {d / nm:.2f} x {verdict(d <= nm)}; "
                 f"<= 2 KiB per check above the base: {per_check or 'base not measured'}")
        row(f"{label}: dtcprobe {ms(d)} | nmap -sT -Pn -n {ms(nm)} | {d / nm:.2f} x{extra}"
            + cpu_note(s, "dtcprobe", "nmap"))
    growth = per_target[10000] / per_target[1000]
    emit(f"# target (d): no super-linear term: time per target at 10,000 / at 1,000 = {growth:.2f} "
         f"{verdict(growth <= 1.25)} (a quadratic term would show as a per-target time growing with N)")


if "parse" in CASES:
    emit()
    emit("# (parse) config parsing + planning of 10,000 checks, whole process: a config of 10,000 [[check]] "
         "tables run with --only (one check runs) against the same one check from the command line; "
         "the difference is reading, parsing and planning the file")
    cfg = os.path.join(SCRATCH, "parse10000.toml")
    with open(cfg, "w") as f:
        for i in range(10000):
            f.write(f'[[check]]\nname = "r{i}"\nkind = "tcp"\nhost = "127.0.0.1"\nport = {20000 + i}\n\n')
    with_cfg = ["ip", "netns", "exec", LO, BIN, "check", "-f", "json", "-c", cfg, "--only", "r0"]
    alone = ["ip", "netns", "exec", LO, BIN, "check", "-f", "json", "tcp://127.0.0.1:20000"]

    def check_parse(label, code, stdout, stderr):
        got = tcp_outcomes(stdout)
        return None if got == {"fail/refused": 1} else f"exit {code}, outcomes {got}"

    s = run_case("parse", [("config", with_cfg, None), ("alone", alone, None)], 3 * RUNS, check_parse)
    os.unlink(cfg)
    wall = s["config"][0] - s["alone"][0]
    cpu = s["config"][5] - s["alone"][5]
    emit(f"# goal (issue 26): config parsing of 10,000 checks under 10 ms: {wall * 1000:.1f} ms wall, "
         f"{cpu * 1000:.1f} ms CPU {verdict(wall <= 0.010)}")
    row(f"config parsing + planning of 10,000 checks: {wall * 1000:.1f} ms wall, {cpu * 1000:.1f} ms CPU "
        f"(whole process with the file minus without) | goal 10 ms | {wall / 0.010:.2f} x")

if "path" in CASES and ROUTED:
    emit()
    emit("# (path) 1,000 ports of one host behind a router (333 open, 333 refused, 334 dropped at the "
         "router), timeout 1 s, default flags (path trace on, reset origins read as root) and --no-trace, "
         "vs nmap -sT with its timeouts pinned to 1 s; 6 s between rounds (the router's ICMP budget)")
    ports = list(range(10000, 10333)) + list(range(20000, 20333)) + list(range(30000, 30334))
    targets = [f"tcp://{ROUTED_HOST}:{p}" for p in ports]
    base = ["ip", "netns", "exec", ROUTED, BIN, "check", "-f", "json", "--timeout", "1s"]
    expect = {"pass/-": 333, "fail/refused": 333, "fail/timeout": 334}

    route_us = []

    def check_path(label, code, stdout, stderr):
        if label == "dtcprobe":
            route_us.extend(h["duration_seconds"] * 1e6 for c in json.loads(stdout)["checks"]
                            for h in c["hops"] if h["hop"] == "route")
        if label in ("dtcprobe", "no-trace"):
            got = tcp_outcomes(stdout)
            return None if got == expect else f"outcomes {got}"
        return None if "334 filtered" in stdout or "filtered" in stdout else "nmap saw no filtered ports"

    tools = [("dtcprobe", base + targets, None),
             ("nmap", nmap(ROUTED, 1000, "10000-10332,20000-20332,30000-30333", ROUTED_HOST), None),
             ("no-trace", base + ["--no-trace"] + targets, None)]
    s = run_case("path", tools, RUNS, check_path, pause=6)
    d, n, nt = s["dtcprobe"][0], s["nmap"][0], s["no-trace"][0]
    emit(f"# goal (issue 26): within 1.03 x tuned nmap: {d / n:.3f} x {verdict(d <= 1.03 * n)}")
    row(f"1,000 mixed through a router, 1 s timeout, default flags: dtcprobe {ms(d)} | tuned nmap {ms(n)} | "
        f"{d / n:.3f} x ({nt / n:.3f} x with --no-trace)")
    route_us.sort()
    if route_us:
        row(f"hop route of those 1,000 checks (one host): median {statistics.median(route_us):.0f} us, "
            f"p99 {route_us[int(len(route_us) * 0.99)]:.0f} us, max {route_us[-1]:.0f} us per check "
            f"(over {len(route_us)} hops of {RUNS} runs)")

if "epm" in CASES and EPM_HOST:
    emit()
    emit("# (epm) the endpoint mapper (Samba's samba-dcerpcd behind the router): dtcprobe epm lookup of "
         "lsarpc with --list-endpoints vs impacket listing every entry (ept_lookup) and mapping lsarpc")
    lsarpc = "12345778-1234-abcd-ef00-0123456789ab/v0.0"
    dtc = ["ip", "netns", "exec", ROUTED, BIN, "check", "-f", "json", "--list-endpoints",
           f"epm://{EPM_HOST}?iface={lsarpc}"]
    impacket = ["ip", "netns", "exec", ROUTED, "/usr/bin/python3", os.path.join(os.path.dirname(__file__),
                "bench-impacket-epm.py"), EPM_HOST]

    def check_epm(label, code, stdout, stderr):
        if label == "dtcprobe":
            hops = {h["hop"]: h["status"] for c in json.loads(stdout)["checks"] for h in c["hops"]}
            return None if code == 0 and hops.get("epm") == "pass" else f"exit {code}, hops {hops}"
        return None if code == 0 and "lsarpc" in stdout else f"impacket exit {code}: {stderr[-200:]}"

    s = run_case("epm", [("dtcprobe", dtc, None), ("impacket", impacket, None)], RUNS, check_epm)
    d, i = s["dtcprobe"][0], s["impacket"][0]
    row(f"EPM lookup + listing: dtcprobe {ms(d)} | impacket {ms(i)} | {d / i:.2f} x"
        + cpu_note(s, "dtcprobe", "impacket"))

if "pg" in CASES and PG_PORT:
    emit()
    emit("# (pg) PostgreSQL two-phase commit on 127.0.0.1 (SCRAM login, no TLS: the server has none): "
         "dtcprobe tx=twophase vs psql doing BEGIN, txid_current(), PREPARE TRANSACTION, COMMIT PREPARED")
    pw = os.path.join(SCRATCH, "pgpw")
    dtc = [BIN, "check", "-f", "json", "--password-file", pw,
           f"postgres://postgres@127.0.0.1:{PG_PORT}/postgres?tx=twophase"]
    script = ("BEGIN;\nSELECT txid_current();\nPREPARE TRANSACTION 'bench-psql';\n"
              "COMMIT PREPARED 'bench-psql';\n")
    psql = ["env", f"PGPASSWORD={open(pw).read().strip()}", "psql", "-X", "-q", "-h", "127.0.0.1",
            "-p", PG_PORT, "-U", "postgres", "-d", "postgres", "-v", "ON_ERROR_STOP=1", "-f", "-"]

    def check_pg(label, code, stdout, stderr):
        if label == "dtcprobe":
            hops = {h["hop"]: h["status"] for c in json.loads(stdout)["checks"] for h in c["hops"]}
            return None if code == 0 and hops.get("twophase") == "pass" else f"exit {code}, hops {hops}"
        return None if code == 0 else f"psql exit {code}: {stderr[-200:]}"

    s = run_case("pg", [("dtcprobe", dtc, None), ("psql", psql, script)], 3 * RUNS, check_pg)
    d, p = s["dtcprobe"][0], s["psql"][0]
    row(f"PostgreSQL two-phase: dtcprobe {ms(d)} | psql {ms(p)} | {d / p:.2f} x" + cpu_note(s, "dtcprobe", "psql"))

emit()
emit(f"# load average at end {loadavg()}")
emit("# summary (issue 26 table): case: dtcprobe | yardstick | ratio")
for r in ROWS:
    emit(f"ROW {r}")
