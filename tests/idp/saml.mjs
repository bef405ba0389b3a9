// saml-idp (mcguinness) on 127.0.0.1 for postcanary's tests.
//
//   node saml.mjs --port P --acs-url URL --audience SP_ENTITY_ID
//                 [--issuer IDP_ENTITY_ID] [--cert cert.pem --key key.pem]
//
// Without --cert/--key a throwaway RSA key and self-signed certificate are
// made with the openssl CLI in a temp dir (removed on exit). The IdP entity id
// (Issuer) defaults to http://127.0.0.1:P/metadata, which also serves the
// metadata. SSO (HTTP-Redirect and HTTP-POST bindings): http://127.0.0.1:P/saml/sso.
//
// Prints exactly one line "READY http://127.0.0.1:P" to stdout once listening;
// saml-idp's own logging goes to stderr. Exits when stdin closes, or on
// SIGTERM/SIGINT. See README.md for the pages a browser meets.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';

// Keep stdout for the READY line only (saml-idp logs with console.log and morgan).
const stdoutWrite = process.stdout.write.bind(process.stdout);
process.stdout.write = process.stderr.write.bind(process.stderr);
console.log = console.error;
console.info = console.error;
console.warn = console.error;

const { values: opt } = parseArgs({
  options: {
    port: { type: 'string' },
    'acs-url': { type: 'string' },
    audience: { type: 'string' },
    issuer: { type: 'string' },
    cert: { type: 'string' },
    key: { type: 'string' },
  },
  strict: true,
});

function die(msg) {
  process.stderr.write(`saml.mjs: ${msg}\n`);
  cleanup();
  process.exit(2);
}

let tmpDir;
function cleanup() {
  if (tmpDir) {
    fs.rmSync(tmpDir, { recursive: true, force: true });
    tmpDir = undefined;
  }
}

if (!opt.port || !/^\d+$/.test(opt.port)) die('--port P is required');
if (!opt['acs-url']) die('--acs-url is required');
if (!opt.audience) die('--audience is required');
if (Boolean(opt.cert) !== Boolean(opt.key)) die('--cert and --key go together');

const port = Number(opt.port);
const baseUrl = `http://127.0.0.1:${port}`;
const issuer = opt.issuer || `${baseUrl}/metadata`;

let certPath = opt.cert;
let keyPath = opt.key;
if (!certPath) {
  tmpDir = fs.mkdtempSync(path.join(os.tmpdir(), 'pc-saml-idp-'));
  certPath = path.join(tmpDir, 'idp-cert.pem');
  keyPath = path.join(tmpDir, 'idp-key.pem');
  const r = spawnSync('openssl', [
    'req', '-x509', '-new', '-newkey', 'rsa:2048', '-nodes', '-sha256', '-days', '2',
    '-subj', '/CN=postcanary test SAML IdP', '-keyout', keyPath, '-out', certPath,
  ], { encoding: 'utf8' });
  if (r.status !== 0) die(`openssl failed: ${r.error || r.stderr}`);
}

// saml-idp reads HOST/PORT from the environment before its options.
delete process.env.PORT;
delete process.env.HOST;

// saml-idp does not hand out its server: catch it as it is made.
let server;
const createServer = http.createServer;
http.createServer = function patchedCreateServer(...args) {
  server = createServer.apply(this, args);
  server.on('listening', () => stdoutWrite(`READY ${baseUrl}\n`));
  server.on('error', (err) => die(`listen: ${err.message}`));
  return server;
};

let stopping = false;
function stop() {
  if (stopping) return;
  stopping = true;
  cleanup();
  if (server) {
    server.close(() => process.exit(0));
    server.closeAllConnections?.();
  }
  setTimeout(() => process.exit(0), 2000).unref();
  if (!server) process.exit(0);
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
process.on('exit', cleanup);
process.stdin.on('end', stop);
process.stdin.on('close', stop);
process.stdin.on('error', stop);
process.stdin.resume();

// Run saml-idp's own command line (bin/run.js does the same).
process.argv = [
  process.argv[0], 'saml-idp',
  '--host', '127.0.0.1',
  '--port', String(port),
  '--cert', certPath,
  '--key', keyPath,
  '--issuer', issuer,
  '--acsUrl', opt['acs-url'],
  '--audience', opt.audience,
];
const require = createRequire(import.meta.url);
require('saml-idp').main();
