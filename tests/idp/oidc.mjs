// oidc-provider (panva) on 127.0.0.1 for postcanary's tests.
//
//   node oidc.mjs --port P --client-id ID --client-secret S --redirect-uri URI
//
// Prints exactly one line "READY http://127.0.0.1:P" to stdout once listening
// (the issuer is that URL); everything else goes to stderr. Exits when stdin
// closes, or on SIGTERM/SIGINT. See README.md for the pages a browser meets.
import http from 'node:http';
import crypto from 'node:crypto';
import { parseArgs } from 'node:util';

// Keep stdout for the READY line only.
const stdoutWrite = process.stdout.write.bind(process.stdout);
process.stdout.write = process.stderr.write.bind(process.stderr);
console.log = console.error;
console.info = console.error;
console.warn = console.error;

const { values: opt } = parseArgs({
  options: {
    port: { type: 'string' },
    'client-id': { type: 'string' },
    'client-secret': { type: 'string' },
    'redirect-uri': { type: 'string', multiple: true },
  },
  strict: true,
});

function die(msg) {
  process.stderr.write(`oidc.mjs: ${msg}\n`);
  process.exit(2);
}
if (!opt.port || !/^\d+$/.test(opt.port)) die('--port P is required');
if (!opt['client-id']) die('--client-id is required');
if (!opt['client-secret']) die('--client-secret is required');
if (!opt['redirect-uri'] || opt['redirect-uri'].length === 0) die('--redirect-uri is required');

const { default: Provider } = await import('oidc-provider');

const port = Number(opt.port);
const issuer = `http://127.0.0.1:${port}`;

const provider = new Provider(issuer, {
  clients: [
    {
      client_id: opt['client-id'],
      client_secret: opt['client-secret'],
      redirect_uris: opt['redirect-uri'],
      response_types: ['code'],
      grant_types: ['authorization_code'],
      token_endpoint_auth_method: 'client_secret_basic',
    },
  ],
  // The dev login form ("any login, any password") and the consent form.
  features: { devInteractions: { enabled: true } },
  // PKCE is accepted but not required, so a plain code flow works.
  pkce: { required: () => false },
  cookies: { keys: [crypto.randomBytes(32).toString('hex')] },
  claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['name'] },
  async findAccount(ctx, sub) {
    return {
      accountId: sub,
      async claims() {
        return { sub, email: `${sub}@example.test`, email_verified: true, name: sub };
      },
    };
  },
});
// Plain http on loopback: no proxy in front of it.
provider.proxy = false;
provider.on('server_error', (ctx, err) => process.stderr.write(`server_error: ${err.stack}\n`));

const server = http.createServer(provider.callback());

let stopping = false;
function stop() {
  if (stopping) return;
  stopping = true;
  server.close(() => process.exit(0));
  server.closeAllConnections?.();
  setTimeout(() => process.exit(0), 2000).unref();
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
process.stdin.on('end', stop);
process.stdin.on('close', stop);
process.stdin.on('error', stop);
process.stdin.resume();

server.on('error', (err) => die(`listen: ${err.message}`));
server.listen(port, '127.0.0.1', () => {
  stdoutWrite(`READY ${issuer}\n`);
});
