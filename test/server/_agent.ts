/**
 * Helpers for the media-agent tests: a `chunkvault serve` child process on a free
 * loopback port, tokens made with the CLI, a raw HTTP(S) caller that returns status
 * and body whatever they are, and a TCP proxy that counts the bytes on the wire.
 */
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { connect as http2Connect } from 'node:http2';
import { createServer, connect, type Server, type Socket } from 'node:net';
import { expect } from 'vitest';
import { cliOk, repoSnapshot, startCli, type RunningCli } from '../helpers/cli.js';

export interface Agent {
  readonly url: string;
  readonly port: number;
  readonly run: RunningCli;
  readonly stderr: () => string;
  stop(): Promise<void>;
}

/** Starts `chunkvault serve --repo repo --listen 127.0.0.1:0 ...flags` and waits for its address. */
export async function startAgent(repo: string, flags: readonly string[] = [], env: Record<string, string | undefined> = {}): Promise<Agent> {
  const run = startCli(['serve', '--repo', repo, '--listen', '127.0.0.1:0', '--quiet', ...flags], { env, timeoutMs: 600_000 });
  let out = '';
  let err = '';
  run.child.stderr!.on('data', (b: Buffer) => (err += b.toString()));
  const first = await new Promise<{ listening: string; port: number }>((resolve, reject) => {
    run.child.stdout!.on('data', (b: Buffer) => {
      out += b.toString();
      const nl = out.indexOf('\n');
      if (nl >= 0) resolve(JSON.parse(out.slice(0, nl)) as { listening: string; port: number });
    });
    run.child.once('exit', (code) => reject(new Error(`serve exited with ${code}: ${err}`)));
  });
  return {
    url: first.listening,
    port: first.port,
    run,
    stderr: () => err,
    stop: async () => {
      if (run.child.exitCode === null) run.child.kill('SIGTERM');
      const r = await run.result;
      expect(r.code, err).toBe(0);
    },
  };
}

/** A token made with `chunkvault token create`. */
export async function makeToken(repo: string, tenant: string, scopes: string): Promise<{ id: string; token: string }> {
  const r = await cliOk(['token', 'create', '--repo', repo, '--tenant', tenant, '--scopes', scopes, '--json']);
  return { id: r.json.id as string, token: r.json.token as string };
}

export interface Reply {
  readonly status: number;
  readonly headers: Record<string, string | string[] | undefined>;
  readonly body: Buffer;
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  readonly json: any;
}

export interface CallOptions {
  readonly token?: string;
  readonly body?: Buffer | string | object;
  readonly headers?: Record<string, string>;
  readonly ca?: Buffer;
  /** Send the body chunked (no Content-Length), in 64 KiB pieces. */
  readonly chunked?: boolean;
}

/** One HTTP(S)/1.1 request; never throws for an error status. */
export function call(base: string, method: string, path: string, o: CallOptions = {}): Promise<Reply> {
  const url = new URL(path, base);
  const body = o.body === undefined ? undefined : Buffer.isBuffer(o.body) ? o.body : Buffer.from(typeof o.body === 'string' ? o.body : JSON.stringify(o.body));
  const length: Record<string, string> = body && !o.chunked ? { 'content-length': String(body.length) } : {};
  const headers: Record<string, string> = { ...(o.token ? { authorization: `Bearer ${o.token}` } : {}), ...length, ...o.headers };
  const request = url.protocol === 'https:' ? httpsRequest : httpRequest;
  return new Promise((resolve, reject) => {
    // The path goes out as given (a URL object would resolve `..`): path-traversal tests need it raw.
    const req = request({ protocol: url.protocol, hostname: url.hostname, port: url.port, path, method, headers, ...(o.ca ? { ca: o.ca } : {}) }, (res) => {
      const parts: Buffer[] = [];
      res.on('data', (b: Buffer) => parts.push(b));
      res.on('end', () => {
        const data = Buffer.concat(parts);
        let json: unknown;
        try {
          json = JSON.parse(data.toString('utf8'));
        } catch {
          json = undefined;
        }
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body: data, json });
      });
      res.on('error', reject);
    });
    // A server that refuses a large body may close before reading it: the reply still counts.
    req.on('error', reject);
    if (o.chunked && body) {
      for (let at = 0; at < body.length; at += 64 * 1024) req.write(body.subarray(at, at + 64 * 1024));
      req.end();
    } else req.end(body);
  });
}

/**
 * A raw HTTP/1.1 request that declares `declared` body bytes and keeps sending 64 KiB
 * pieces until the server closes the connection; everything the server sent back.
 */
export function sendUntilClosed(base: string, path: string, token: string, declared: number): Promise<string> {
  const url = new URL(base);
  return new Promise((resolve, reject) => {
    const received: Buffer[] = [];
    const piece = Buffer.alloc(64 * 1024, 7);
    const socket = connect(Number(url.port), url.hostname, () => {
      socket.write(`PUT ${path} HTTP/1.1\r\nhost: ${url.host}\r\nauthorization: Bearer ${token}\r\ncontent-length: ${declared}\r\n\r\n`);
      const timer = setInterval(() => socket.writable && socket.write(piece), 20);
      socket.on('close', () => {
        clearInterval(timer);
        resolve(Buffer.concat(received).toString('utf8'));
      });
    });
    socket.on('data', (b: Buffer) => received.push(b));
    socket.on('error', (err: NodeJS.ErrnoException) => (err.code === 'EPIPE' || err.code === 'ECONNRESET' ? undefined : reject(err)));
  });
}

/** One HTTP/2 GET over TLS; returns status, ALPN protocol and body. */
export function callH2(base: string, path: string, token: string, ca: Buffer, headers: Record<string, string> = {}): Promise<{ status: number; body: Buffer; protocol: string }> {
  return new Promise((resolve, reject) => {
    const session = http2Connect(base, { ca });
    session.on('error', reject);
    const req = session.request({ ':path': path, ':method': 'GET', authorization: `Bearer ${token}`, ...headers });
    let status = 0;
    const parts: Buffer[] = [];
    req.on('response', (h) => (status = Number(h[':status'])));
    req.on('data', (b: Buffer) => parts.push(b));
    req.on('end', () => {
      const protocol = session.alpnProtocol ?? '';
      session.close();
      resolve({ status, body: Buffer.concat(parts), protocol });
    });
    req.on('error', reject);
    req.end();
  });
}

/** A TCP proxy in front of `port` counting the bytes clients send (upstream) and receive. */
export class CountingProxy {
  up = 0;
  down = 0;
  private readonly server: Server;
  private readonly sockets = new Set<Socket>();
  port = 0;

  constructor(private readonly target: number) {
    this.server = createServer((client) => {
      const upstream = connect(this.target, '127.0.0.1');
      this.sockets.add(client).add(upstream);
      client.on('data', (b: Buffer) => (this.up += b.length));
      upstream.on('data', (b: Buffer) => (this.down += b.length));
      client.pipe(upstream).pipe(client);
      const end = () => {
        client.destroy();
        upstream.destroy();
      };
      client.on('error', end).on('close', end);
      upstream.on('error', end).on('close', end);
    });
  }

  async start(): Promise<string> {
    await new Promise<void>((r) => this.server.listen(0, '127.0.0.1', () => r()));
    this.port = (this.server.address() as { port: number }).port;
    return `http://127.0.0.1:${this.port}`;
  }

  reset(): void {
    this.up = 0;
    this.down = 0;
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((r) => this.server.close(() => r()));
  }
}

/** The repository files a refused request must not change (the agent's own databases aside). */
export async function dataSnapshot(repo: string): Promise<Record<string, number>> {
  const all = await repoSnapshot(repo);
  return Object.fromEntries(Object.entries(all).filter(([p]) => !p.startsWith('agent/') && !p.startsWith('gc/')));
}
