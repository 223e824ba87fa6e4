#!/usr/bin/env python3
"""Microsoft ODBC Driver 18 (through PyPI mssql-python, which bundles it) against the TDS test peer.

Run by tests/ms_drivers.rs with the venv's python (/opt/dtcprobe-test/venv, made by
scripts/install-test-deps). Arguments are key=value: host, port, user, database, encrypt
(no|yes|strict), trust (yes|no), cert (a PEM file the driver trusts, for strict mode), instance,
autocommit (yes|no), scenario. The password comes from DTCPROBE_TEST_PASSWORD so it is never on a
command line. Prints ONE JSON line: {"driver", "ok", "rows", "error": {"class", "driver_error",
"message"}, "close_error", "steps"}; the exit code is 0 whenever that line was printed.
"""
import json
import os
import sys

os.environ.setdefault("MSSQL_PYTHON_NATIVE_PROVIDER", "msodbcsql18")

args = dict(a.split("=", 1) for a in sys.argv[1:])
out = {"driver": "odbc18", "ok": False, "rows": None, "error": None, "steps": []}


def fail(e):
    # mssql-python exposes one diagnostic: the server's message text (no native error number,
    # no state) and, in driver_error, the SQLSTATE's description (e.g. "Invalid authorization
    # specification" for 28000).
    out["error"] = {
        "class": type(e).__name__,
        "driver_error": str(getattr(e, "driver_error", "") or ""),
        "message": str(getattr(e, "ddbc_error", "") or e),
    }


def conn_str():
    instance = f"\\{args['instance']}" if args.get("instance") else ""
    # No port: the driver asks the SQL Server Browser (UDP 1434) for the instance's port.
    port = f",{args['port']}" if args.get("port") else ""
    server = f"tcp:{args['host']}{instance}{port}"
    parts = [
        f"Server={server}",
        f"UID={args.get('user', 'probe')}",
        f"PWD={{{os.environ.get('DTCPROBE_TEST_PASSWORD', '')}}}",
        f"Database={args.get('database', 'app')}",
        f"Encrypt={args.get('encrypt', 'no')}",
        f"TrustServerCertificate={args.get('trust', 'yes')}",
    ]
    if args.get("cert"):
        parts.append(f"ServerCertificate={args['cert']}")
    if args.get("hostname_in_cert"):
        parts.append(f"HostNameInCertificate={args['hostname_in_cert']}")
    return ";".join(parts)


def run():
    import mssql_python

    scenario = args.get("scenario", "login")
    autocommit = args.get("autocommit", "yes") == "yes"
    conn = mssql_python.connect(conn_str(), autocommit=autocommit, timeout=10)
    out["steps"].append("connected")
    cur = conn.cursor()
    if scenario == "login":
        cur.execute("SELECT 1")
        out["rows"] = [list(r) for r in cur.fetchall()]
    elif scenario == "tx_local":
        # The statements dtcprobe's tx_local hop sends (src/hops/mssql/run.rs tx_statements).
        for sql in [
            "BEGIN TRANSACTION",
            "CREATE TABLE #dtcprobe (id int NOT NULL PRIMARY KEY, note nvarchar(64) NOT NULL)",
            "INSERT INTO #dtcprobe (id, note) VALUES (1, N'odbc18')",
        ]:
            cur.execute(sql)
            out["steps"].append(sql.split(" (")[0])
        cur.execute("SELECT id, note FROM #dtcprobe")
        out["rows"] = [list(r) for r in cur.fetchall()]
        cur.execute("ROLLBACK TRANSACTION")
        cur.execute("SELECT @@TRANCOUNT AS trancount")
        out["trancount"] = cur.fetchone()[0]
    elif scenario == "batch":
        # Statements separated by '||', one execute each; the rows of the last one.
        for sql in args["sql"].split("||"):
            cur.execute(sql)
            out["steps"].append(sql)
            out["rows"] = [list(r) for r in cur.fetchall()] if cur.description else None
    elif scenario == "rpc_select":
        cur.execute("SELECT ?", (42,))
        out["rows"] = [list(r) for r in cur.fetchall()]
    elif scenario == "rpc_error":
        # A parameterised statement that fails inside the procedure call.
        cur.execute("SELECT id, note FROM #missing WHERE id = ?", (1,))
    elif scenario == "rpc_reuse":
        # The same statement twice on one cursor: prepared once, executed again by handle.
        out["rows"] = []
        for value in (1, 2):
            cur.execute("SELECT ?", (value,))
            out["rows"] += [list(r) for r in cur.fetchall()]
    elif scenario == "rpc_types":
        # One parameter of each common type, read back through SELECT @P1 each.
        from decimal import Decimal
        out["rows"] = []
        for value in (-7, 2**40, True, 1.5, Decimal("-123.45"), "x'y", None):
            cur.execute("SELECT ?", (value,))
            out["rows"].append([str(v) for v in cur.fetchone()])
    elif scenario == "rpc_insert":
        cur.execute("CREATE TABLE #notes (id int NOT NULL PRIMARY KEY, note nvarchar(64) NOT NULL)")
        cur.execute("INSERT INTO #notes (id, note) VALUES (?, ?)", (7, "param'note"))
        out["rowcount"] = cur.rowcount
        cur.execute("SELECT id, note FROM #notes WHERE id = ?", (7,))
        out["rows"] = [list(r) for r in cur.fetchall()]
    elif scenario == "autocommit_off":
        cur.execute("CREATE TABLE #notes (id int NOT NULL PRIMARY KEY, note nvarchar(64) NOT NULL)")
        cur.execute("INSERT INTO #notes (id, note) VALUES (1, N'x')")
        conn.commit()
        cur.execute("SELECT id, note FROM #notes")
        out["rows"] = [list(r) for r in cur.fetchall()]
        conn.rollback()
    else:
        raise SystemExit(f"unknown scenario {scenario}")
    cur.close()
    out["ok"] = True
    # Closing is its own step: the driver sends a transaction manager request (0x0E) here, which
    # the peer may not answer; that must not hide whether the scenario itself worked.
    try:
        conn.close()
        out["steps"].append("closed")
    except Exception as e:  # noqa: BLE001
        out["close_error"] = str(getattr(e, "ddbc_error", "") or e)


try:
    run()
except Exception as e:  # noqa: BLE001 - every failure is reported, not raised
    fail(e)
print(json.dumps(out, default=str))
