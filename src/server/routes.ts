/**
 * The media agent's API routes (docs/openapi.json is the contract). Every handler
 * gets the authenticated principal and acts only inside its tenant: another tenant's
 * point or session answers exactly as one that does not exist.
 */
import { ChunkvaultError, PointIngest, validateName, type PointRecord, type Repository } from '../../engine/index.js';
import { intArg, readBody, readJson, sendJson, writeOut, type Req, type Res } from './http.js';
import { engineVm, tenantPoint, tenantVm, type TenantDigests, type TenantPoint } from './tenancy.js';
import type { Metrics } from './metrics.js';
import type { Session, SessionManager } from './sessions.js';
import type { Principal, Scope } from './tokens.js';
import type { ReaderCache } from './readers.js';

export interface Limits {
  /** Largest JSON body. */
  readonly jsonBytes: number;
  /** Largest raw extent body. */
  readonly extentBytes: number;
}

export interface Context {
  readonly repo: Repository;
  readonly digests: TenantDigests;
  readonly sessions: SessionManager;
  readonly metrics: Metrics;
  readonly readers: ReaderCache;
  readonly limits: Limits;
  readonly openapi: string;
  readonly log: (entry: Record<string, unknown>) => void;
}

export interface Call {
  readonly req: Req;
  readonly res: Res;
  readonly ctx: Context;
  readonly p: Principal;
  readonly params: readonly string[];
  readonly query: URLSearchParams;
}

export interface Route {
  readonly method: string;
  /** Template for logs and metrics. */
  readonly name: string;
  readonly pattern: RegExp;
  /** Null: no authentication. Otherwise any one of these scopes (admin always passes). */
  readonly scopes: readonly Scope[] | null;
  readonly handle: (c: Call) => Promise<void>;
}

const ID = '([0-9a-f]{16})';
const SID = '([0-9a-f]{24})';
const NUM = '(\\d{1,16})';

/** A committed point of the caller's tenant; POINT_NOT_FOUND for anything else. */
async function tenantRecord(c: Call, id: string): Promise<PointRecord> {
  const record = await c.ctx.repo.catalog.get(id).catch(() => undefined);
  if (!record || tenantVm(c.p.tenant, record.vm) === undefined) throw new ChunkvaultError('POINT_NOT_FOUND', `no point ${id}`, { details: { point: id } });
  return record;
}

function viewOf(c: Call, r: PointRecord): TenantPoint {
  return tenantPoint(c.p.tenant, r)!;
}

async function listPoints(c: Call): Promise<void> {
  const vm = c.query.get('vm');
  const disk = c.query.get('disk');
  if (disk !== null) validateName('disk', disk);
  const all = await c.ctx.repo.catalog.list({ ...(vm !== null ? { vm: engineVm(c.p.tenant, vm) } : {}), ...(disk !== null ? { disk } : {}) });
  sendJson(c.res, 200, { points: all.flatMap((r) => tenantPoint(c.p.tenant, r) ?? []) });
}

/** Parses a single `bytes=` range against `size`; null when absent (or several ranges: the whole image). */
export function parseRange(header: string | undefined, size: number): { start: number; end: number } | null {
  if (!header) return null;
  const m = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (!m) {
    if (/^bytes=.*,/.test(header)) return null;
    throw new ChunkvaultError('INVALID_ARGUMENT', 'unsupported Range header');
  }
  const [a, b] = [m[1]!, m[2]!];
  let start: number;
  let end: number;
  if (a === '') {
    if (b === '') throw new ChunkvaultError('INVALID_ARGUMENT', 'unsupported Range header');
    start = Math.max(0, size - Number(b));
    end = size - 1;
  } else {
    start = Number(a);
    end = b === '' ? size - 1 : Math.min(Number(b), size - 1);
  }
  if (start >= size || end < start) throw new ChunkvaultError('INVALID_ARGUMENT', 'range not satisfiable', { details: { size, range: 'unsatisfiable' } });
  return { start, end };
}

async function readData(c: Call): Promise<void> {
  const record = await tenantRecord(c, c.params[0]!);
  const size = record.sizeBytes;
  let range: { start: number; end: number } | null;
  try {
    range = parseRange(c.req.headers.range, size);
  } catch (err) {
    if ((err as ChunkvaultError).details?.['range'] !== 'unsatisfiable') throw err;
    sendJson(c.res, 416, { error: (err as ChunkvaultError).toJSON() }, { 'content-range': `bytes */${size}` });
    return;
  }
  const start = range?.start ?? 0;
  const length = range ? range.end - range.start + 1 : size;
  const headers: Record<string, string> = { 'content-type': 'application/octet-stream', 'accept-ranges': 'bytes', 'content-length': String(length), 'cache-control': 'no-store' };
  if (range) headers['content-range'] = `bytes ${range.start}-${range.end}/${size}`;
  if (c.req.method === 'HEAD') {
    c.res.writeHead(range ? 206 : 200, headers);
    c.res.end();
    return;
  }
  await c.ctx.readers.use(c.ctx.repo, record, async (reader) => {
    const pieces = reader.range(start, length);
    const first = await pieces.next();
    c.res.writeHead(range ? 206 : 200, headers);
    for (let it = first; !it.done; it = await pieces.next()) {
      await writeOut(c.res, it.value);
      c.ctx.metrics.bytesServed += it.value.length;
    }
    c.res.end();
  });
}

async function stats(c: Call): Promise<void> {
  const points = (await c.ctx.repo.catalog.list()).filter((r) => tenantVm(c.p.tenant, r.vm) !== undefined);
  const seen = new Set<string>();
  let logical = 0;
  let zero = 0;
  let unique = 0;
  for (const r of points) {
    logical += r.sizeBytes;
    await c.ctx.readers.use(c.ctx.repo, r, async (reader) => {
      for await (const { first, digests } of reader.slotDigests()) {
        for (let i = 0; i < digests.length / 32; i++) {
          const len = Math.min(r.chunkSize, r.sizeBytes - (first + i) * r.chunkSize);
          const hex = Buffer.from(digests.subarray(i * 32, i * 32 + 32)).toString('hex');
          if (/^0+$/.test(hex)) zero += len;
          else if (!seen.has(hex)) {
            seen.add(hex);
            unique += len;
          }
        }
      }
    });
  }
  const vms = new Set(points.map((r) => r.vm)).size;
  sendJson(c.res, 200, { tenant: c.p.tenant, points: points.length, vms, logicalBytes: logical, zeroBytes: zero, uniqueChunks: seen.size, uniqueBytes: unique, dedupRatio: unique === 0 ? 0 : (logical - zero) / unique });
}

async function openSession(c: Call): Promise<void> {
  const body = await readJson(c.req, c.ctx.limits.jsonBytes);
  c.ctx.sessions.checkCapacity(c.p);
  const vm = engineVm(c.p.tenant, body['vm'] as string);
  const disk = validateName('disk', typeof body['disk'] === 'string' ? body['disk'] : '');
  const sizeBytes = intArg(body['sizeBytes'], 'sizeBytes');
  const changeToken = body['changeToken'] ?? null;
  if (changeToken !== null && (typeof changeToken !== 'string' || changeToken.length > 1024)) throw new ChunkvaultError('INVALID_ARGUMENT', 'changeToken must be a string of at most 1024 chars, or null');
  let parent: PointRecord | null = null;
  const ref = body['parent'] ?? null;
  if (ref === 'latest') parent = (await c.ctx.repo.catalog.latest(vm, disk)) ?? null;
  else if (typeof ref === 'string' && /^[0-9a-f]{16}$/.test(ref)) parent = await tenantRecord(c, ref);
  else if (ref !== null) throw new ChunkvaultError('INVALID_ARGUMENT', 'parent must be a point id, "latest" or null');
  const holder: { session?: Session } = {};
  const ingest = await PointIngest.open(c.ctx.repo, {
    vm,
    disk,
    sizeBytes,
    parent,
    changeToken: changeToken as string | null,
    full: body['full'] === true,
    source: `media agent (tenant ${c.p.tenant}, token ${c.p.tokenId})`,
    onChunk: (d) => holder.session && c.ctx.sessions.remember(holder.session, Buffer.from(d).toString('hex')),
  });
  const session = (holder.session = c.ctx.sessions.add(c.p, ingest));
  c.ctx.log({ level: 'info', msg: 'session opened', session: session.id, tenant: c.p.tenant, token: c.p.tokenId, vm: body['vm'], disk, sizeBytes, parent: parent?.id ?? null });
  const g = ingest.geometry;
  sendJson(c.res, 201, { session: session.id, chunkSize: g.chunkSize, slotCount: g.slotCount, sizeBytes, parent: parent ? viewOf(c, parent) : null });
}

const HEX64 = /^[0-9a-f]{64}$/;
const ZERO64 = '0'.repeat(64);

/** Source-side dedup: the slots whose digest the tenant does not hold (their bodies must be uploaded). */
async function postDigests(c: Call): Promise<void> {
  const s = c.ctx.sessions.get(c.p, c.params[0]!);
  await c.ctx.sessions.use(s, async () => {
    const body = await readJson(c.req, c.ctx.limits.jsonBytes);
    const entries = body['slots'];
    if (!Array.isArray(entries)) throw new ChunkvaultError('INVALID_ARGUMENT', 'slots must be an array of {slot, digest}');
    const items = entries.map((e: { slot?: unknown; digest?: unknown }) => {
      const slot = intArg(e?.slot, 'slot');
      if (slot >= s.ingest.geometry.slotCount) throw new ChunkvaultError('EXTENTS_INVALID', `slot ${slot} is outside the disk`, { details: { slot } });
      if (typeof e.digest !== 'string' || !HEX64.test(e.digest)) throw new ChunkvaultError('INVALID_ARGUMENT', 'a digest is 64 lower-case hex chars');
      return { slot, hex: e.digest };
    });
    const data = items.filter((it) => it.hex !== ZERO64);
    // Both lookups run for every digest whatever the answer, so the time taken does not depend on other tenants.
    const tenantHas = c.ctx.digests.has(s.tenant, data.map((it) => it.hex));
    const stored = await s.ingest.has(data.map((it) => Buffer.from(it.hex, 'hex')));
    const needed: number[] = [];
    for (const it of items) if (it.hex === ZERO64) await s.ingest.setDigest(it.slot, Buffer.from(ZERO64, 'hex'));
    for (let i = 0; i < data.length; i++) {
      const it = data[i]!;
      if ((tenantHas[i] || s.uploaded.has(it.hex)) && stored[i]) await s.ingest.setDigest(it.slot, Buffer.from(it.hex, 'hex'));
      else needed.push(it.slot);
    }
    sendJson(c.res, 200, { needed });
  });
}

async function putChunk(c: Call): Promise<void> {
  const s = c.ctx.sessions.get(c.p, c.params[0]!);
  const slot = intArg(c.params[1], 'slot');
  if (slot >= s.ingest.geometry.slotCount) throw new ChunkvaultError('EXTENTS_INVALID', `slot ${slot} is outside the disk`, { details: { slot } });
  await c.ctx.sessions.use(s, async () => {
    const g = s.ingest.geometry;
    const body = await readBody(c.req, Math.min(g.chunkSize, g.diskSize - slot * g.chunkSize), () => (s.lastActive = Date.now()));
    const expected = c.req.headers['x-chunk-digest'];
    if (expected !== undefined && (typeof expected !== 'string' || !HEX64.test(expected))) throw new ChunkvaultError('INVALID_ARGUMENT', 'x-chunk-digest is 64 lower-case hex chars');
    // The check rides on the agent's own hash of the chunk (worker pool): no second SHA-256.
    await s.ingest.putChunk(slot, body, expected === undefined ? undefined : Buffer.from(expected, 'hex'));
    c.ctx.metrics.bytesIngested += body.length;
    sendJson(c.res, 200, { slot, length: body.length });
  });
}

async function putExtent(c: Call): Promise<void> {
  const s = c.ctx.sessions.get(c.p, c.params[0]!);
  const offset = intArg(c.params[1], 'offset');
  await c.ctx.sessions.use(s, async () => {
    const body = await readBody(c.req, c.ctx.limits.extentBytes, () => (s.lastActive = Date.now()));
    await s.ingest.writeAt(offset, body);
    c.ctx.metrics.bytesIngested += body.length;
    sendJson(c.res, 200, { offset, length: body.length });
  });
}

async function commit(c: Call): Promise<void> {
  const done = c.ctx.sessions.committed(c.p, c.params[0]!);
  if (done) return sendJson(c.res, 200, { point: viewOf(c, done) });
  const s = c.ctx.sessions.get(c.p, c.params[0]!);
  const point = await c.ctx.sessions.use(s, () => s.ingest.commit()).catch(async (err: unknown) => {
    await c.ctx.sessions.abort(s, 'aborted');
    throw err;
  });
  c.ctx.sessions.finish(s, point);
  // After the commit: a digest enters the tenant's set only once a point of the tenant references it.
  await c.ctx.digests.add(s.tenant, point.id, s.uploaded).catch((err: unknown) => c.ctx.log({ level: 'warn', msg: 'tenant digest set not updated', err: String(err) }));
  c.ctx.log({ level: 'info', msg: 'session committed', session: s.id, tenant: s.tenant, point: point.id, bytesReceived: point.stats.bytesRead });
  sendJson(c.res, 200, { point: viewOf(c, point) });
}

async function getSession(c: Call): Promise<void> {
  const done = c.ctx.sessions.committed(c.p, c.params[0]!);
  if (done) return sendJson(c.res, 200, { session: c.params[0], state: 'committed', point: viewOf(c, done) });
  const s = c.ctx.sessions.get(c.p, c.params[0]!);
  sendJson(c.res, 200, { session: s.id, state: 'open', bytesReceived: s.ingest.bytesReceived, slotCount: s.ingest.geometry.slotCount });
}

async function abortSession(c: Call): Promise<void> {
  const s = c.ctx.sessions.get(c.p, c.params[0]!);
  await c.ctx.sessions.abort(s, 'aborted');
  c.res.writeHead(204);
  c.res.end();
}

const route = (method: string, name: string, path: string, scopes: readonly Scope[] | null, handle: (c: Call) => Promise<void>): Route => ({
  method,
  name,
  pattern: new RegExp(`^${path}$`),
  scopes,
  handle,
});

const READ: Scope[] = ['restore'];
/** Point metadata (to pick a parent): backup tokens too, never disk bytes. */
const META: Scope[] = ['backup', 'restore'];
const WRITE: Scope[] = ['backup'];

export const ROUTES: readonly Route[] = [
  route('GET', '/v1/openapi.json', '/v1/openapi\\.json', null, async (c) => {
    c.res.writeHead(200, { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(c.ctx.openapi)) });
    c.res.end(c.ctx.openapi);
  }),
  route('GET', '/metrics', '/metrics', ['admin'], async (c) => {
    const text = c.ctx.metrics.render();
    c.res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4', 'content-length': String(Buffer.byteLength(text)) });
    c.res.end(text);
  }),
  route('GET', '/v1/whoami', '/v1/whoami', [], async (c) => sendJson(c.res, 200, { tenant: c.p.tenant, token: c.p.tokenId, scopes: [...c.p.scopes] })),
  route('GET', '/v1/repo', '/v1/repo', [], async (c) => sendJson(c.res, 200, { chunkSize: c.ctx.repo.config.chunkSize, sectorSize: 512, maxJsonBytes: c.ctx.limits.jsonBytes, maxExtentBytes: c.ctx.limits.extentBytes })),
  route('GET', '/v1/points', '/v1/points', META, listPoints),
  route('GET', '/v1/points/{id}', `/v1/points/${ID}`, META, async (c) => sendJson(c.res, 200, viewOf(c, await tenantRecord(c, c.params[0]!)))),
  route('GET', '/v1/points/{id}/data', `/v1/points/${ID}/data`, READ, readData),
  route('HEAD', '/v1/points/{id}/data', `/v1/points/${ID}/data`, READ, readData),
  route('GET', '/v1/stats', '/v1/stats', READ, stats),
  route('POST', '/v1/sessions', '/v1/sessions', WRITE, openSession),
  route('GET', '/v1/sessions/{sid}', `/v1/sessions/${SID}`, WRITE, getSession),
  route('DELETE', '/v1/sessions/{sid}', `/v1/sessions/${SID}`, WRITE, abortSession),
  route('POST', '/v1/sessions/{sid}/digests', `/v1/sessions/${SID}/digests`, WRITE, postDigests),
  route('PUT', '/v1/sessions/{sid}/chunks/{slot}', `/v1/sessions/${SID}/chunks/${NUM}`, WRITE, putChunk),
  route('PUT', '/v1/sessions/{sid}/extents/{offset}', `/v1/sessions/${SID}/extents/${NUM}`, WRITE, putExtent),
  route('POST', '/v1/sessions/{sid}/commit', `/v1/sessions/${SID}/commit`, WRITE, commit),
];
