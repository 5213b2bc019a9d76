/**
 * `chunkvault serve`: runs the media agent on a repository until SIGINT/SIGTERM.
 */
import type { Command } from 'commander';
import { ChunkvaultError } from '../../engine/index.js';
import { parseSize } from '../units.js';
import { repoDir } from './commands.js';

interface ServeCliOptions {
  repo?: string;
  listen: string;
  tlsCert?: string;
  tlsKey?: string;
  h2c?: boolean;
  sessionTimeout: string;
  maxSessions: string;
  maxBody: string;
  tenantSync: string;
  quiet?: boolean;
}

/** `HOST:PORT`, `[V6]:PORT` or `:PORT`. */
export function parseListen(text: string): { host: string; port: number } {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([A-Za-z0-9.-]*)):(\d{1,5})$/.exec(text);
  const port = Number(m?.[3]);
  if (!m || port > 65535) throw new ChunkvaultError('USAGE', `--listen takes HOST:PORT, not "${text}"`);
  return { host: m[1] ?? (m[2] || '127.0.0.1'), port };
}

function seconds(text: string, what: string): number {
  const n = Number(text.replace(/s$/, ''));
  if (!Number.isFinite(n) || n <= 0) throw new ChunkvaultError('USAGE', `${what} takes a number of seconds`);
  return n * 1000;
}

export async function cmdServe(o: ServeCliOptions): Promise<number> {
  const { host, port } = parseListen(o.listen);
  const maxSessions = Number(o.maxSessions);
  if (!Number.isSafeInteger(maxSessions) || maxSessions < 1) throw new ChunkvaultError('USAGE', '--max-sessions takes a positive integer');
  // Loaded here: the server (HTTP/2, TLS, tenancy) is not needed by other commands.
  const { startServer } = await import('../server/index.js');
  const server = await startServer({
    repoDir: repoDir(o),
    host,
    port,
    ...(o.tlsCert ? { tlsCert: o.tlsCert } : {}),
    ...(o.tlsKey ? { tlsKey: o.tlsKey } : {}),
    h2c: o.h2c ?? false,
    sessionTimeoutMs: seconds(o.sessionTimeout, '--session-timeout'),
    maxSessionsPerToken: maxSessions,
    limits: { extentBytes: parseSize(o.maxBody) },
    tenantSyncMs: seconds(o.tenantSync, '--tenant-sync'),
    ...(o.quiet ? { log: (e: Record<string, unknown>) => void (e['msg'] === 'request' || process.stderr.write(JSON.stringify({ time: new Date().toISOString(), ...e }) + '\n')) } : {}),
  });
  process.stdout.write(JSON.stringify({ listening: server.url, port: server.port }) + '\n');
  await new Promise<void>((resolve) => {
    process.once('SIGINT', resolve);
    process.once('SIGTERM', resolve);
  });
  await server.close();
  return 0;
}

export function registerServeCommand(program: Command, action: <A extends unknown[]>(fn: (...args: A) => Promise<number>) => (...args: A) => Promise<void>): void {
  program
    .command('serve')
    .description('run the media agent: an authenticated HTTP API (HTTP/1.1, HTTP/2 with TLS) that backup tools send disk data to')
    .option('--repo <repo>', 'repository directory (default: $CHUNKVAULT_REPO)')
    .option('--listen <host:port>', 'address to listen on', '127.0.0.1:8420')
    .option('--tls-cert <file>', 'PEM certificate (with --tls-key): serve HTTPS and HTTP/2')
    .option('--tls-key <file>', 'PEM private key')
    .option('--h2c', 'plain-text HTTP/2 (prior knowledge) instead of HTTP/1.1, without TLS')
    .option('--session-timeout <seconds>', 'abort a backup session idle this long', '600')
    .option('--max-sessions <n>', 'concurrent backup sessions per token', '8')
    .option('--max-body <size>', 'largest raw extent upload', '16M')
    .option('--tenant-sync <seconds>', 'how often the tenants\' digest sets are checked against the catalog (points forgotten meanwhile)', '60')
    .option('--quiet', 'do not log each request')
    .action(action(cmdServe));
}
