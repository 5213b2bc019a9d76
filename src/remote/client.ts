/**
 * The HTTP client of the media agent (docs/media-agent.md), used by the CLI when
 * `--repo` is an `http://` or `https://` URL. HTTP/1.1 with keep-alive; errors from
 * the agent keep their stable codes; every body byte sent is counted.
 *
 * Credentials: the token comes from `CHUNKVAULT_TOKEN`, else from the config file
 * (`CHUNKVAULT_CONFIG`, default `~/.config/chunkvault/remotes.json`):
 * `{ "https://host:port": { "token": "cvt_...", "ca": "/path/ca.pem" } }`. A CA file may
 * also come from `CHUNKVAULT_CA`.
 */
import { readFileSync } from 'node:fs';
import { Agent as HttpAgent, request as httpRequest, type IncomingMessage } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { ChunkvaultError, ERROR_CODES, type ErrorCode } from '../../engine/index.js';


export interface RemoteOptions {
  readonly token?: string;
  /** PEM CA certificate(s) to trust (besides the system's). */
  readonly ca?: string | Buffer;
  /** Parallel connections. Default 8. */
  readonly maxSockets?: number;
}

interface RemoteConfigEntry {
  readonly token?: string;
  readonly ca?: string;
}

/** Token and CA for `url` from the environment or the config file. */
export function remoteCredentials(url: string, env: NodeJS.ProcessEnv = process.env): RemoteOptions {
  const file = env['CHUNKVAULT_CONFIG'] ?? join(homedir(), '.config', 'chunkvault', 'remotes.json');
  let entry: RemoteConfigEntry = {};
  try {
    const all = JSON.parse(readFileSync(file, 'utf8')) as Record<string, RemoteConfigEntry>;
    entry = all[new URL(url).origin] ?? all[url] ?? {};
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT' || env['CHUNKVAULT_CONFIG']) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw new ChunkvaultError('INVALID_ARGUMENT', `cannot read ${file}: ${(err as Error).message}`);
    }
  }
  const token = env['CHUNKVAULT_TOKEN'] ?? entry.token;
  const caFile = env['CHUNKVAULT_CA'] ?? entry.ca;
  return { ...(token ? { token } : {}), ...(caFile ? { ca: readFileSync(caFile) } : {}) };
}

export interface Reply {
  readonly status: number;
  readonly headers: IncomingMessage['headers'];
  readonly body: Buffer;
}

/** A client of one media agent. */
export class RemoteAgent {
  /** Request body bytes sent (uploads, JSON). */
  bytesSent = 0;
  /** Response body bytes received. */
  bytesReceived = 0;
  readonly base: URL;
  private readonly agent: HttpAgent;

  constructor(
    url: string,
    private readonly o: RemoteOptions = {},
  ) {
    this.base = new URL(url);
    if (this.base.protocol !== 'http:' && this.base.protocol !== 'https:') throw new ChunkvaultError('USAGE', `${url} is not an http(s) URL`);
    const common = { keepAlive: true, maxSockets: o.maxSockets ?? 8 };
    this.agent = this.base.protocol === 'https:' ? new HttpsAgent({ ...common, ...(o.ca ? { ca: o.ca } : {}) }) : new HttpAgent(common);
  }

  close(): void {
    this.agent.destroy();
  }

  async json<T>(method: string, path: string, body?: unknown): Promise<T> {
    const data = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    const r = await this.request(method, path, data, data ? { 'content-type': 'application/json' } : {});
    return (r.body.length ? JSON.parse(r.body.toString('utf8')) : {}) as T;
  }

  /** One request; a non-2xx reply becomes a ChunkvaultError with the agent's code. */
  async request(method: string, path: string, body?: Uint8Array, headers: Record<string, string> = {}): Promise<Reply> {
    const res = await this.send(method, path, body, headers);
    const parts: Buffer[] = [];
    for await (const piece of res as AsyncIterable<Buffer>) parts.push(piece);
    const data = Buffer.concat(parts);
    this.bytesReceived += data.length;
    if ((res.statusCode ?? 0) >= 300) throw errorOf(res.statusCode ?? 0, data);
    return { status: res.statusCode ?? 0, headers: res.headers, body: data };
  }

  /** A streamed GET: resolves with the response once its status is 2xx (else throws); the caller counts what it reads. */
  async stream(path: string, headers: Record<string, string> = {}): Promise<IncomingMessage> {
    const res = await this.send('GET', path, undefined, headers);
    if ((res.statusCode ?? 0) >= 300) {
      const parts: Buffer[] = [];
      for await (const piece of res as AsyncIterable<Buffer>) parts.push(piece);
      throw errorOf(res.statusCode ?? 0, Buffer.concat(parts));
    }
    return res;
  }

  private send(method: string, path: string, body: Uint8Array | undefined, headers: Record<string, string>): Promise<IncomingMessage> {
    const url = new URL(path, this.base);
    const request = url.protocol === 'https:' ? httpsRequest : httpRequest;
    const all: Record<string, string> = { ...headers, ...(this.o.token ? { authorization: `Bearer ${this.o.token}` } : {}), 'content-length': String(body?.length ?? 0) };
    return new Promise((resolve, reject) => {
      const req = request(url, { method, headers: all, agent: this.agent }, resolve);
      req.on('error', (err: NodeJS.ErrnoException) => reject(connectError(err, this.base.origin)));
      if (body) this.bytesSent += body.length;
      req.end(body);
    });
  }
}

function connectError(err: NodeJS.ErrnoException, origin: string): ChunkvaultError {
  const tls = /CERT|SSL|TLS|self.signed/i.test(`${err.code ?? ''} ${err.message}`);
  return new ChunkvaultError(tls ? 'TLS_FAILED' : 'CONNECT_FAILED', `media agent ${origin}: ${err.message}`, { cause: err, details: { errno: err.code ?? null } });
}

function errorOf(status: number, body: Buffer): ChunkvaultError {
  let e: { code?: string; message?: string; details?: Record<string, string | number | boolean | null | string[]> } = {};
  try {
    e = (JSON.parse(body.toString('utf8')) as { error?: typeof e }).error ?? {};
  } catch {
    // not a JSON error body
  }
  const code = e.code && e.code in ERROR_CODES && e.code !== 'INTERNAL' ? (e.code as ErrorCode) : 'REMOTE_ERROR';
  return new ChunkvaultError(code, `media agent: ${e.message ?? `HTTP ${status}`}`, { details: { ...(e.details ?? {}), status } });
}
