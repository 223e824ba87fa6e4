#!/usr/bin/env node
// tedious (npm, the Microsoft-sponsored pure-JavaScript TDS driver) against the TDS test peer.
//
// Run by tests/ms_drivers.rs with node, from tests/clients (node_modules made by `npm ci` in
// scripts/install-test-deps). Arguments are key=value: host, port, user, database, encrypt
// (no|yes|strict), trust (yes|no), cert (a PEM file to trust), tds (7_1|7_2|7_3_A|7_3_B|7_4),
// auth (ntlm: Windows authentication, with domain),
// ciphers (an OpenSSL cipher list), scenario. The password comes from DTCPROBE_TEST_PASSWORD. Prints ONE JSON line: {"driver",
// "ok", "rows", "error": {"number", "state", "class", "message", "code"} (the last server error),
// "serverErrors" (all of them, in order), "infos", "tdsVersion", "steps"}; the exit code is 0 whenever that line was printed.
'use strict';

const fs = require('fs');
const { Connection, Request, TYPES } = require('tedious');

const args = Object.fromEntries(
  process.argv.slice(2).map((a) => {
    const i = a.indexOf('=');
    return [a.slice(0, i), a.slice(i + 1)];
  }),
);
const out = { driver: 'tedious', ok: false, rows: null, error: null, infos: [], serverErrors: [], steps: [] };
let lastServerError = null;
let printed = false;

function finish(err) {
  if (printed) return;
  printed = true;
  if (err) {
    const e = lastServerError || {};
    out.error = {
      number: e.number ?? err.number ?? null,
      state: e.state ?? err.state ?? null,
      class: e.class ?? err.class ?? null,
      message: String(err.message || err),
      code: err.code ?? null,
    };
  } else {
    out.ok = true;
  }
  process.stdout.write(JSON.stringify(out) + '\n');
  process.exit(0);
}

const encrypt = { no: false, yes: true, strict: 'strict' }[args.encrypt || 'no'];
const options = {
  port: Number(args.port),
  database: args.database || 'app',
  encrypt,
  trustServerCertificate: (args.trust || 'yes') === 'yes',
  tdsVersion: args.tds || '7_4',
  connectTimeout: 10000,
  requestTimeout: 10000,
};
options.cryptoCredentialsDetails = {};
if (args.cert) options.cryptoCredentialsDetails.ca = fs.readFileSync(args.cert);
// ciphers=AES128-SHA: a client that shares no cipher suite with the server.
if (args.ciphers) options.cryptoCredentialsDetails.ciphers = args.ciphers;
if (args.server_name) options.serverName = args.server_name;

// auth=ntlm (with domain=...): Windows authentication through tedious's own NTLMv2, which the
// peer verifies from the password (tests/support/tds_peer_ntlm.rs).
const password = process.env.DTCPROBE_TEST_PASSWORD || '';
const authentication =
  args.auth === 'ntlm'
    ? { type: 'ntlm', options: { userName: args.user || 'probe', password, domain: args.domain || '' } }
    : { type: 'default', options: { userName: args.user || 'probe', password } };
const connection = new Connection({
  server: args.host,
  authentication,
  options,
});
connection.on('errorMessage', (m) => {
  out.serverErrors.push({ number: m.number, state: m.state, message: m.message });
  lastServerError = { number: m.number, state: m.state, class: m.class, message: m.message };
});
connection.on('infoMessage', (m) => out.infos.push({ number: m.number, message: m.message }));
connection.on('error', (e) => finish(e));
// Bounded: whatever happens, one line within 20 s.
setTimeout(() => finish(new Error('client timed out')), 20000).unref();

// Runs one request; resolves with its rows (arrays of column values) and row count.
function run(sql, params, how) {
  return new Promise((resolve, reject) => {
    const rows = [];
    const req = new Request(sql, (err, rowCount) => (err ? reject(err) : resolve({ rows, rowCount })));
    req.on('row', (cols) => rows.push(cols.map((c) => c.value)));
    for (const [name, type, value] of params || []) req.addParameter(name, type, value);
    if (how === 'batch') connection.execSqlBatch(req);
    else connection.execSql(req);
  });
}

// `name`: a transaction name, which tedious writes as B_VARBYTE (a byte count, MS-TDS 2.2.6.9):
// the peer decodes it with dtcprobe's own codec, so a character-count reading fails here.
function tx(method, name) {
  return new Promise((resolve, reject) =>
    connection[method]((err) => (err ? reject(err) : resolve()), name));
}

// sp_prepare, sp_execute, sp_unprepare: tedious's prepare/execute/unprepare on one request.
// After sp_prepare tedious emits 'prepared' (not the callback); the callback then runs once after
// sp_execute and once after sp_unprepare.
function prepared(sql, params, values) {
  return new Promise((resolve, reject) => {
    const rows = [];
    let step = 'execute';
    const req = new Request(sql, (err) => {
      if (err) return reject(err);
      if (step === 'execute') {
        step = 'unprepare';
        connection.unprepare(req);
      } else {
        resolve(rows);
      }
    });
    for (const [name, type] of params) req.addParameter(name, type);
    req.on('row', (cols) => rows.push(cols.map((c) => c.value)));
    req.on('prepared', () => connection.execute(req, values));
    req.on('error', reject);
    connection.prepare(req);
  });
}

async function scenario() {
  out.tdsVersion = connection.config.options.tdsVersion;
  out.steps.push('connected');
  switch (args.scenario || 'login') {
    case 'login':
      out.rows = (await run('SELECT 1', [], 'batch')).rows;
      break;
    case 'tx_local': {
      for (const sql of [
        'BEGIN TRANSACTION',
        'CREATE TABLE #dtcprobe (id int NOT NULL PRIMARY KEY, note nvarchar(64) NOT NULL)',
        "INSERT INTO #dtcprobe (id, note) VALUES (1, N'tedious')",
      ]) {
        await run(sql, [], 'batch');
        out.steps.push(sql.split(' (')[0]);
      }
      out.rows = (await run('SELECT id, note FROM #dtcprobe', [], 'batch')).rows;
      await run('ROLLBACK TRANSACTION', [], 'batch');
      out.trancount = (await run('SELECT @@TRANCOUNT AS trancount', [], 'batch')).rows[0][0];
      break;
    }
    case 'batch':
      // Statements separated by '||', one batch each; the rows of the last one.
      for (const sql of args.sql.split('||')) {
        out.rows = (await run(sql, [], 'batch')).rows;
        out.steps.push(sql);
      }
      break;
    case 'rpc_select':
      out.rows = (await run('SELECT @p1', [['p1', TYPES.Int, 42]])).rows;
      break;
    case 'rpc_insert': {
      await run('CREATE TABLE #notes (id int NOT NULL PRIMARY KEY, note nvarchar(64) NOT NULL)', [], 'batch');
      const ins = await run('INSERT INTO #notes (id, note) VALUES (@id, @note)', [
        ['id', TYPES.Int, 7],
        ['note', TYPES.NVarChar, "param'note"],
      ]);
      out.rowcount = ins.rowCount;
      out.rows = (await run('SELECT id, note FROM #notes WHERE id = @id', [['id', TYPES.Int, 7]])).rows;
      break;
    }
    case 'rpc_types': {
      // One parameter of each common type, read back through SELECT @p1 each.
      out.rows = [];
      for (const [type, value, extra] of [
        [TYPES.Int, -7],
        [TYPES.BigInt, 2 ** 40],
        [TYPES.Bit, true],
        [TYPES.Float, 1.5],
        [TYPES.Decimal, -123.45, { precision: 10, scale: 2 }],
        [TYPES.NVarChar, "x'y"],
        [TYPES.VarChar, 'abc'],
        [TYPES.Int, null],
      ]) {
        const req = await new Promise((resolve, reject) => {
          const rows = [];
          const r = new Request('SELECT @p1', (err) => (err ? reject(err) : resolve(rows)));
          r.on('row', (cols) => rows.push(cols.map((c) => (c.value === null ? null : String(c.value)))));
          r.addParameter('p1', type, value, extra);
          connection.execSql(r);
        });
        out.rows.push(req[0]);
      }
      break;
    }
    case 'rpc_error':
      // A parameterised statement that fails inside sp_executesql.
      await run('SELECT id, note FROM #missing WHERE id = @id', [['id', TYPES.Int, 1]]);
      break;
    case 'call_proc':
      // A stored procedure by name (an RPC with ProcName, not a ProcID).
      await new Promise((resolve, reject) => {
        const r = new Request('dbo.no_such_proc', (err) => (err ? reject(err) : resolve()));
        connection.callProcedure(r);
      });
      break;
    case 'rpc_prepared':
      out.rows = await prepared('SELECT @p1', [['p1', TYPES.Int]], { p1: 42 });
      break;
    case 'transaction':
      // tedious's beginTransaction/commitTransaction are transaction manager requests (0x0E).
      await tx('beginTransaction', 'dtcprobe_tx');
      await run('CREATE TABLE #notes (id int NOT NULL PRIMARY KEY, note nvarchar(64) NOT NULL)', [], 'batch');
      await tx('commitTransaction', 'dtcprobe_tx');
      out.steps.push('committed');
      break;
    default:
      throw new Error(`unknown scenario ${args.scenario}`);
  }
  connection.close();
  out.steps.push('closed');
}

connection.connect((err) => {
  if (err) return finish(err);
  scenario().then(() => finish(null), (e) => finish(e));
});
