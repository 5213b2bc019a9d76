/**
 * The media-agent server: node:http (HTTP/1.1) in plain text, node:http2 with HTTP/1.1
 * fallback (ALPN) under TLS. One `Repository` is shared by every request; each backup
 * session writes its own containers. Routes are matched on the raw path (no `..`
 * resolution): a path that is not exactly a route is 404.
 */
import { readFileSync } from 'node:fs';
import { promises as fsp } from 'node:fs';
import { createServer as createHttpServer, type Server as HttpServer } from 'node:http';
import { createSecureServer, createServer as createH2cServer, type Http2SecureServer, type Http2Server } from 'node:http2';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { AddressInfo } from 'node:net';
import { ChunkvaultError, Repository } from '../../engine/index.js';
import { sendError, sendJson, type Req, type Res } from './http.js';
import { Metrics } from './metrics.js';
import { ReaderCache } from './readers.js';
import { ROUTES, type Context, type Limits, type Route } from './routes.js';
import { SessionManager } from './sessions.js';
import { TenantDigests } from './tenancy.js';
import { TokenStore, type Principal } from './tokens.js';

export interface ServeOptions {
  readonly repoDir: string;
  /** Default 127.0.0.1. */
  readonly host?: string;
  /** Default 8420; 0 picks a free port. */
  readonly port?: number;
  readonly tlsCert?: string;
  readonly tlsKey?: string;
  /** Plain-text HTTP/2 (prior knowledge) instead of HTTP/1.1; ignored with TLS. */
  readonly h2c?: boolean;
  /** A session with no activity for this long is aborted. Default 10 min. */
  readonly sessionTimeoutMs?: number;
  /** Concurrent sessions per token. Default 8. */
  readonly maxSessionsPerToken?: number;
  readonly limits?: Partial<Limits>;
  /** Largest request header block. Default 16 KiB. */
  readonly maxHeaderBytes?: number;
  /** How often tenant digest sets are checked against the catalog (points forgotten outside the agent). Default 60 s. */
  readonly tenantSyncMs?: number;
  /** Structured log sink (one object per event); default JSON lines on stderr. */
  readonly log?: (entry: Record<string, unknown>) => void;
}

export interface RunningServer {
  readonly url: string;
  readonly port: number;
  readonly metrics: Metrics;
  close(): Promise<void>;
}

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');

/** docs/openapi.json, shipped with the package (dist/src/server -> package root). */
function loadOpenApi(): string {
  for (const p of [join(ROOT, 'docs', 'openapi.json'), join(ROOT, '..', 'docs', 'openapi.json')]) {
    try {
      return readFileSync(p, 'utf8');
    } catch {
      // try the next place
    }
  }
  return '{}';
}

function defaultLog(entry: Record<string, unknown>): void {
  process.stderr.write(JSON.stringify({ time: new Date().toISOString(), ...entry }) + '\n');
}

async function authenticate(req: Req, tokens: TokenStore, route: Route): Promise<Principal | undefined> {
  if (route.scopes === null) return undefined;
  const header = req.headers.authorization;
  if (!header) throw new ChunkvaultError('AUTH_REQUIRED', 'this request needs an API token (Authorization: Bearer ...)');
  const m = /^Bearer ([^\s]{1,200})$/.exec(header);
  if (!m) throw new ChunkvaultError('AUTH_FAILED', 'the API token is not valid');
  const p = await tokens.authenticate(m[1]!);
  if (route.scopes.length > 0 && !p.scopes.has('admin') && !route.scopes.some((s) => p.scopes.has(s))) {
    throw new ChunkvaultError('FORBIDDEN', `this token may not do that (needs scope ${route.scopes.join(' or ')})`, { details: { scopes: [...route.scopes] } });
  }
  return p;
}

function match(req: Req): { route: Route; params: string[]; query: URLSearchParams } {
  const raw = req.url ?? '/';
  const q = raw.indexOf('?');
  const path = q < 0 ? raw : raw.slice(0, q);
  const query = new URLSearchParams(q < 0 ? '' : raw.slice(q + 1));
  let pathMatched = false;
  for (const route of ROUTES) {
    const m = route.pattern.exec(path);
    if (!m) continue;
    pathMatched = true;
    if (route.method === req.method) return { route, params: m.slice(1), query };
  }
  if (pathMatched) throw new ChunkvaultError('USAGE', `method ${req.method} is not allowed here`, { details: { status: 405 } });
  throw new ChunkvaultError('NOT_FOUND', 'no such resource');
}

function handler(ctx: Context, tokens: TokenStore) {
  return (req: Req, res: Res): void => {
    const started = process.hrtime.bigint();
    let routeName = 'unmatched';
    let principal: Principal | undefined;
    res.on('close', () => {
      const seconds = Number(process.hrtime.bigint() - started) / 1e9;
      ctx.metrics.observe(req.method ?? '-', routeName, res.statusCode, seconds);
      ctx.log({ level: 'info', msg: 'request', method: req.method, route: routeName, status: res.statusCode, ms: Math.round(seconds * 1000), tenant: principal?.tenant ?? null, token: principal?.tokenId ?? null, http: req.httpVersion, complete: res.writableFinished });
    });
    const run = async () => {
      const { route, params, query } = match(req);
      routeName = route.name;
      principal = await authenticate(req, tokens, route);
      await route.handle({ req, res, ctx, p: principal ?? { tokenId: '', tenant: '', scopes: new Set() }, params, query });
    };
    run().catch((err: unknown) => {
      if ((err as ChunkvaultError).details?.['status'] === 405) return sendJson(res, 405, { error: (err as ChunkvaultError).toJSON() });
      const e = sendError(res, err);
      if (e.code === 'INTERNAL' || e.exitCode >= 4) ctx.log({ level: 'error', msg: 'request failed', route: routeName, code: e.code, message: e.message });
    });
  };
}

type AnyServer = HttpServer | Http2SecureServer | Http2Server;

async function listen(server: AnyServer, host: string, port: number): Promise<number> {
  await new Promise<void>((resolvePromise, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolvePromise();
    });
  });
  return (server.address() as AddressInfo).port;
}

/** Opens the repository (taking its index) and starts serving; resolves once listening. */
export async function startServer(o: ServeOptions): Promise<RunningServer> {
  const repo = await Repository.open(o.repoDir);
  await repo.index();
  const metrics = new Metrics();
  const log = o.log ?? defaultLog;
  const sessions = new SessionManager({ timeoutMs: o.sessionTimeoutMs ?? 600_000, maxPerToken: o.maxSessionsPerToken ?? 8, metrics, log });
  await fsp.mkdir(join(repo.dir, 'agent'), { recursive: true, mode: 0o700 });
  const ctx: Context = {
    repo,
    digests: TenantDigests.open(repo.dir),
    sessions,
    metrics,
    readers: new ReaderCache(),
    limits: { jsonBytes: o.limits?.jsonBytes ?? 2 * 1024 * 1024, extentBytes: o.limits?.extentBytes ?? 16 * 1024 * 1024 },
    openapi: loadOpenApi(),
    log,
  };
  // Tenant digest sets are checked against the catalog at start and every `tenantSyncMs` (see tenancy.ts).
  const syncTenants = async () => {
    const points = await repo.catalog.list();
    await ctx.digests.sync(points, (p, onWindow) => ctx.readers.use(repo, p, async (r) => {
      for await (const { digests } of r.slotDigests()) await onWindow(digests);
    }));
  };
  const syncFailed = (err: unknown) => log({ level: 'error', msg: 'tenant digest sets not synced', err: String(err) });
  void syncTenants().catch(syncFailed);
  const syncTimer = setInterval(() => void syncTenants().catch(syncFailed), o.tenantSyncMs ?? 60_000);
  syncTimer.unref();
  const handle = handler(ctx, new TokenStore(repo.dir)) as never;
  const maxHeaderSize = o.maxHeaderBytes ?? 16 * 1024;
  let server: AnyServer;
  if (o.tlsCert || o.tlsKey) {
    if (!o.tlsCert || !o.tlsKey) throw new ChunkvaultError('USAGE', '--tls-cert and --tls-key go together');
    const [cert, key] = await Promise.all([fsp.readFile(o.tlsCert), fsp.readFile(o.tlsKey)]);
    server = createSecureServer({ cert, key, allowHTTP1: true, maxSessionMemory: 64, settings: { maxHeaderListSize: maxHeaderSize } }, handle);
  } else if (o.h2c) server = createH2cServer({ settings: { maxHeaderListSize: maxHeaderSize } }, handle);
  else server = createHttpServer({ maxHeaderSize }, handle);
  const host = o.host ?? '127.0.0.1';
  const port = await listen(server, host, o.port ?? 8420);
  const scheme = o.tlsCert ? 'https' : 'http';
  const url = `${scheme}://${host.includes(':') ? `[${host}]` : host}:${port}`;
  log({ level: 'info', msg: 'listening', url, repo: repo.dir, http2: Boolean(o.tlsCert || o.h2c) });
  return {
    url,
    port,
    metrics,
    close: async () => {
      clearInterval(syncTimer);
      const closed = new Promise<void>((r) => server.close(() => r()));
      (server as HttpServer).closeAllConnections?.();
      await sessions.close();
      await closed;
      await ctx.readers.close();
      await ctx.digests.close();
      await repo.close();
    },
  };
}
