/**
 * Media-agent load test: ingest over the HTTP API against the local CLI on the same
 * data, and request latency percentiles.
 *
 *   node dist/bench/server.js [--quick] [--json FILE]
 *
 * A synthetic VM image (512 MiB, 128 MiB with --quick: text, executable-like, random
 * and zero pages) in the page cache. Rows, each a full backup into a fresh repository
 * (then the same data again: everything deduplicated):
 *
 * - local CLI: `chunkvault backup IMG --repo DIR` (the engine's own pipeline);
 * - CLI client: `chunkvault backup IMG --repo http://127.0.0.1:PORT` against a
 *   `chunkvault serve` child (client-side SHA-256, digest batches, needed chunks);
 * - bounded client, chunks: this process, the same protocol with 4 requests in flight,
 *   timing every request;
 * - bounded client, extents: raw 4 MiB extent PUTs, 4 in flight (the simple-client
 *   path: the agent hashes);
 * then random 64 KiB Range reads of the committed point, 4 in flight.
 *
 * Rates are image bytes over wall time (decimal MB/s). Client and agent share the two
 * cores; the report prints how busy other processes kept the machine.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { request, Agent as HttpAgent } from 'node:http';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { MIB, syntheticVmData } from './_data.js';
import { machineInfo, parseArgs, printMachine, printTable, watchOtherLoad, writeJson } from './_report.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const CLI = join(ROOT, 'dist', 'src', 'cli', 'main.js');
const IN_FLIGHT = 4;

function run(args: string[], env: Record<string, string> = {}): Promise<string> {
  return new Promise((res, rej) => {
    const child = spawn(process.execPath, [CLI, ...args], { env: { ...process.env, CHUNKVAULT_NO_PROGRESS: '1', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (b: Buffer) => (out += b.toString()));
    child.stderr.on('data', (b: Buffer) => (err += b.toString()));
    child.on('close', (code) => (code === 0 ? res(out) : rej(new Error(`chunkvault ${args.join(' ')}: ${code}\n${err}`))));
  });
}

async function serve(repo: string): Promise<{ url: string; child: ChildProcess }> {
  const child = spawn(process.execPath, [CLI, 'serve', '--repo', repo, '--listen', '127.0.0.1:0', '--quiet'], { stdio: ['ignore', 'pipe', 'ignore'] });
  const url = await new Promise<string>((res) => {
    let out = '';
    child.stdout!.on('data', (b: Buffer) => {
      out += b.toString();
      if (out.includes('\n')) res((JSON.parse(out.split('\n')[0]!) as { listening: string }).listening);
    });
  });
  return { url, child };
}

async function freshRepo(dir: string, name: string): Promise<{ repo: string; token: string }> {
  const repo = join(dir, name);
  await run(['init', repo]);
  const token = (JSON.parse(await run(['token', 'create', '--repo', repo, '--tenant', 'bench', '--scopes', 'backup,restore', '--json'])) as { token: string }).token;
  return { repo, token };
}

class Client {
  readonly latencies = new Map<string, number[]>();
  private readonly agent = new HttpAgent({ keepAlive: true, maxSockets: IN_FLIGHT });
  constructor(
    private readonly url: string,
    readonly token: string,
  ) {}

  call(kind: string, method: string, path: string, body?: Buffer | object, headers: Record<string, string> = {}): Promise<{ status: number; body: Buffer }> {
    const data = body === undefined ? undefined : Buffer.isBuffer(body) ? body : Buffer.from(JSON.stringify(body));
    const started = process.hrtime.bigint();
    return new Promise((res, rej) => {
      const req = request(new URL(path, this.url), { method, agent: this.agent, headers: { authorization: `Bearer ${this.token}`, 'content-length': String(data?.length ?? 0), ...headers } }, (r) => {
        const parts: Buffer[] = [];
        r.on('data', (b: Buffer) => parts.push(b));
        r.on('end', () => {
          const ms = Number(process.hrtime.bigint() - started) / 1e6;
          const list = this.latencies.get(kind) ?? [];
          list.push(ms);
          this.latencies.set(kind, list);
          if ((r.statusCode ?? 0) >= 300) rej(new Error(`${method} ${path}: ${r.statusCode} ${Buffer.concat(parts).toString()}`));
          else res({ status: r.statusCode ?? 0, body: Buffer.concat(parts) });
        });
      });
      req.on('error', rej);
      req.end(data);
    });
  }

  close(): void {
    this.agent.destroy();
  }
}

/** Runs `fn` over `items` with at most IN_FLIGHT at once. */
async function bounded<T>(items: readonly T[], fn: (x: T) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(Array.from({ length: IN_FLIGHT }, async () => {
    for (let i = next++; i < items.length; i = next++) await fn(items[i]!);
  }));
}

/** The digest protocol from this process: batches of 128 slots, needed chunks uploaded 4 at a time. */
async function clientChunks(c: Client, image: Buffer, vm: string): Promise<string> {
  const chunk = 256 * 1024;
  const open = JSON.parse((await c.call('open', 'POST', '/v1/sessions', { vm, disk: 'sda', sizeBytes: image.length, parent: null, full: true })).body.toString()) as { session: string };
  const slots = Math.ceil(image.length / chunk);
  for (let first = 0; first < slots; first += 128) {
    const batch = Array.from({ length: Math.min(128, slots - first) }, (_, i) => first + i);
    const bodies = new Map(batch.map((s) => [s, image.subarray(s * chunk, Math.min(image.length, (s + 1) * chunk))]));
    const entries = batch.map((slot) => ({ slot, digest: bodies.get(slot)!.equals(Buffer.alloc(bodies.get(slot)!.length)) ? '0'.repeat(64) : createHash('sha256').update(bodies.get(slot)!).digest('hex') }));
    const { needed } = JSON.parse((await c.call('digests', 'POST', `/v1/sessions/${open.session}/digests`, { slots: entries })).body.toString()) as { needed: number[] };
    await bounded(needed, async (slot) => void (await c.call('chunk PUT', 'PUT', `/v1/sessions/${open.session}/chunks/${slot}`, bodies.get(slot)!)));
  }
  return (JSON.parse((await c.call('commit', 'POST', `/v1/sessions/${open.session}/commit`)).body.toString()) as { point: { id: string } }).point.id;
}

async function clientExtents(c: Client, image: Buffer, vm: string): Promise<string> {
  const open = JSON.parse((await c.call('open', 'POST', '/v1/sessions', { vm, disk: 'sda', sizeBytes: image.length, parent: null })).body.toString()) as { session: string };
  const offsets = Array.from({ length: Math.ceil(image.length / (4 * MIB)) }, (_, i) => i * 4 * MIB);
  await bounded(offsets, async (o) => void (await c.call('extent PUT 4 MiB', 'PUT', `/v1/sessions/${open.session}/extents/${o}`, image.subarray(o, o + 4 * MIB))));
  return (JSON.parse((await c.call('commit', 'POST', `/v1/sessions/${open.session}/commit`)).body.toString()) as { point: { id: string } }).point.id;
}

function pct(values: number[], p: number): number {
  const s = [...values].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] ?? 0;
}

async function timed<T>(fn: () => Promise<T>): Promise<{ seconds: number; value: T }> {
  const t = process.hrtime.bigint();
  const value = await fn();
  return { seconds: Number(process.hrtime.bigint() - t) / 1e9, value };
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  const size = (args.quick ? 128 : 512) * MIB;
  const m = machineInfo();
  printMachine(m);
  const other = watchOtherLoad();
  const dir = mkdtempSync(join(tmpdir(), 'cv-bench-server-'));
  const rows: { name: string; pass: string; seconds: number; mbps: number }[] = [];
  const add = (name: string, pass: string, seconds: number) => rows.push({ name, pass, seconds, mbps: size / seconds / 1e6 });
  let latency: Record<string, { n: number; p50: number; p90: number; p99: number; max: number }> = {};
  const latencies = new Map<string, number[]>();
  try {
    const img = join(dir, 'disk.img');
    const image = syntheticVmData(size, 0x5e77e);
    writeFileSync(img, image);
    const local = await freshRepo(dir, 'local');
    for (const pass of ['new', 'dedup']) add('local CLI (engine pipeline)', pass, (await timed(() => run(['backup', img, '--repo', local.repo, '--vm', 'v', '--full']))).seconds);
    // Each API row gets a fresh repository and agent, so "new" means new to the store.
    const withAgent = async (name: string, fn: (url: string, c: Client) => Promise<void>) => {
      const api = await freshRepo(dir, name);
      const server = await serve(api.repo);
      const c = new Client(server.url, api.token);
      try {
        await fn(server.url, c);
      } finally {
        for (const [k, v] of c.latencies) latencies.set(k, [...(latencies.get(k) ?? []), ...v]);
        c.close();
        server.child.kill('SIGTERM');
      }
    };
    await withAgent('cli', async (url, c) => {
      for (const pass of ['new', 'dedup']) add('CLI client over HTTP (client hashing)', pass, (await timed(() => run(['backup', img, '--repo', url, '--vm', 'cli', '--full'], { CHUNKVAULT_TOKEN: c.token }))).seconds);
    });
    await withAgent('chunks', async (_url, c) => {
      for (const pass of ['new', 'dedup']) add('bounded client, chunks (4 in flight)', pass, (await timed(() => clientChunks(c, image, 'chunks'))).seconds);
    });
    await withAgent('extents', async (_url, c) => {
      let point = '';
      for (const pass of ['new', 'dedup']) {
        const r = await timed(() => clientExtents(c, image, 'extents'));
        point = r.value;
        add('bounded client, raw 4 MiB extents (4 in flight)', pass, r.seconds);
      }
      const ranges = Array.from({ length: 2000 }, (_, i) => ((i * 2654435761) % (size / 65536)) * 65536);
      const reads = await timed(() => bounded(ranges, async (o) => void (await c.call('range GET 64 KiB', 'GET', `/v1/points/${point}/data`, undefined, { range: `bytes=${o}-${o + 65535}` }))));
      console.log(`range reads: ${ranges.length} x 64 KiB in ${reads.seconds.toFixed(2)} s (${(ranges.length / reads.seconds).toFixed(0)} req/s)`);
      const whole = await timed(() => c.call('image GET', 'GET', `/v1/points/${point}/data`));
      add('stream the point back (GET /data)', 'read', whole.seconds);
    });
    latency = Object.fromEntries([...latencies].map(([k, v]) => [k, { n: v.length, p50: pct(v, 50), p90: pct(v, 90), p99: pct(v, 99), max: Math.max(...v) }]));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  console.log(`image ${size / MIB} MiB; other processes kept ${other().toFixed(2)} of ${m.cpus} cores busy`);
  printTable(['ingest', 'pass', 'seconds', 'MB/s'], rows.map((r) => [r.name, r.pass, r.seconds.toFixed(2), r.mbps.toFixed(0)]));
  printTable(['request', 'n', 'p50 ms', 'p90 ms', 'p99 ms', 'max ms'], Object.entries(latency).map(([k, l]) => [k, String(l.n), l.p50.toFixed(1), l.p90.toFixed(1), l.p99.toFixed(1), l.max.toFixed(1)]));
  if (args.json) writeJson(args.json, { machine: m, size, rows, latency });
}

await main();
