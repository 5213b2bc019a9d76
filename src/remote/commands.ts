/**
 * The CLI commands against a remote media agent (`--repo https://host:port`).
 *
 * Backup hashes on the client: the source is read slot by slot (the agent's chunk
 * size), each chunk's SHA-256 is posted in batches, and only the chunks the agent
 * asks for (those its tenant does not hold) are uploaded, each checked by the agent
 * against the digest sent with it. Two batches are in memory at most: one uploading
 * while the next is read and hashed.
 *
 *   source --read/hash batch k+1--> | POST digests k --> PUT needed chunks k | --> commit
 */
import { createHash } from 'node:crypto';
import { alignedShared, ChunkvaultError, planSlots, validateName, type PointRecord } from '../../engine/index.js';
import { frontEndFor } from '../jobs.js';
import { openTarget, type FileTargetOptions } from '../restore-targets.js';
import type { BlockSource } from '../../engine/index.js';
import type { RemoteAgent } from './client.js';
import type { TenantPoint } from '../server/index.js';

/** What the agent shows of a point: the wire type the server defines. */
export type RemotePoint = TenantPoint;

export interface RemoteBackupOptions {
  readonly source: string;
  readonly vm: string;
  readonly disk?: string;
  readonly changedExtentsFile?: string;
  readonly bitmap?: string;
  readonly full?: boolean;
  readonly signal?: AbortSignal;
  readonly onProgress?: (p: { done: number; total: number }) => void;
  /** Bytes of source data per digest batch. Default 32 MiB. */
  readonly batchBytes?: number;
  /** Chunk uploads in flight. Default 4. */
  readonly uploads?: number;
}

export interface RemoteBackupResult {
  readonly point: RemotePoint;
  readonly bytesRead: number;
  readonly chunksRead: number;
  readonly chunksZero: number;
  readonly chunksUploaded: number;
  readonly bytesUploaded: number;
  /** Every request body byte sent (uploads + digest batches). */
  readonly bytesSent: number;
  readonly durationMs: number;
}

interface SlotData {
  readonly slot: number;
  readonly data: Uint8Array;
  readonly hex: string;
}

const ZERO_HEX = '0'.repeat(64);
const ZEROS = Buffer.alloc(4 * 1024 * 1024);

/** memcmp against zeros, a run of ZEROS at a time (a per-byte callback would cost ~1 ms per 256 KiB). */
function isZero(data: Uint8Array): boolean {
  const b = Buffer.from(data.buffer, data.byteOffset, data.length);
  for (let at = 0; at < b.length; at += ZEROS.length) {
    const n = Math.min(ZEROS.length, b.length - at);
    if (!b.subarray(at, at + n).equals(ZEROS.subarray(0, n))) return false;
  }
  return true;
}

function asParentRecord(p: RemotePoint): PointRecord {
  // Front-ends read the parent's geometry and change token only.
  return { ...p, mode: p.mode === 'incremental' ? 'incremental' : 'full', mapDigest: '', slotCount: Math.ceil(p.sizeBytes / p.chunkSize), source: 'media agent', stats: { bytesRead: 0, bytesNew: 0, rawNew: 0, chunksRead: 0, chunksZero: 0, chunksNew: 0, chunksDedup: 0, durationMs: 0 } };
}

export async function listRemotePoints(agent: RemoteAgent, filter: { vm?: string; disk?: string } = {}): Promise<RemotePoint[]> {
  const q = new URLSearchParams({ ...(filter.vm ? { vm: filter.vm } : {}), ...(filter.disk ? { disk: filter.disk } : {}) }).toString();
  return (await agent.json<{ points: RemotePoint[] }>('GET', `/v1/points${q ? `?${q}` : ''}`)).points;
}

class Uploader {
  chunksUploaded = 0;
  bytesUploaded = 0;
  constructor(
    private readonly agent: RemoteAgent,
    private readonly session: string,
    private readonly parallel: number,
  ) {}

  /** Posts a batch's digests, then uploads the chunks the agent needs. */
  async batch(items: SlotData[]): Promise<void> {
    if (items.length === 0) return;
    const { needed } = await this.agent.json<{ needed: number[] }>('POST', `/v1/sessions/${this.session}/digests`, { slots: items.map((it) => ({ slot: it.slot, digest: it.hex })) });
    const bySlot = new Map(items.map((it) => [it.slot, it]));
    const queue = [...needed];
    const worker = async () => {
      for (let slot = queue.shift(); slot !== undefined; slot = queue.shift()) {
        const it = bySlot.get(slot);
        if (!it) throw new ChunkvaultError('PROTOCOL_ERROR', `the media agent asked for slot ${slot}, which was not sent`);
        await this.agent.request('PUT', `/v1/sessions/${this.session}/chunks/${slot}`, it.data, { 'content-type': 'application/octet-stream', 'x-chunk-digest': it.hex });
        this.chunksUploaded++;
        this.bytesUploaded += it.data.length;
      }
    };
    await Promise.all(Array.from({ length: Math.min(this.parallel, queue.length) }, worker));
  }
}

/** Reads and hashes `slots` of the source (4 reads in flight). */
async function readBatch(source: BlockSource, chunkSize: number, slots: number[], counters: { bytesRead: number; chunksZero: number }): Promise<SlotData[]> {
  const out: SlotData[] = new Array(slots.length);
  let next = 0;
  const reader = async () => {
    for (let i = next++; i < slots.length; i = next++) {
      const slot = slots[i]!;
      const data = new Uint8Array(Math.min(chunkSize, source.sizeBytes - slot * chunkSize));
      await source.readInto(data, slot * chunkSize);
      counters.bytesRead += data.length;
      const zero = isZero(data);
      if (zero) counters.chunksZero++;
      out[i] = { slot, data, hex: zero ? ZERO_HEX : createHash('sha256').update(data).digest('hex') };
    }
  };
  await Promise.all(Array.from({ length: 4 }, reader));
  return out;
}

function* slotBatches(ranges: readonly { first: number; end: number }[], perBatch: number): Generator<number[]> {
  let batch: number[] = [];
  for (const r of ranges) {
    for (let s = r.first; s < r.end; s++) {
      batch.push(s);
      if (batch.length >= perBatch) {
        yield batch;
        batch = [];
      }
    }
  }
  if (batch.length > 0) yield batch;
}

/** Reads, hashes and sends every planned slot in one session, then commits it. */
async function sendSlots(agent: RemoteAgent, source: BlockSource, ranges: readonly { first: number; end: number }[], chunkSize: number, openBody: object, o: RemoteBackupOptions): Promise<Omit<RemoteBackupResult, 'durationMs' | 'bytesSent'>> {
  const counters = { bytesRead: 0, chunksZero: 0, chunksRead: 0 };
  // The session opens once the first batch is hashed: an idle session expires on the agent.
  let session: string | undefined;
  const openSession = async () => (session ??= (await agent.json<{ session: string }>('POST', '/v1/sessions', openBody)).session);
  const interrupted = () => {
    if (o.signal?.aborted) throw new ChunkvaultError('INTERRUPTED', 'backup interrupted');
  };
  let up: Uploader | undefined;
  try {
    const total = ranges.reduce((n, r) => n + (r.end - r.first), 0);
    let uploading: Promise<void> = Promise.resolve();
    for (const slots of slotBatches(ranges, Math.max(1, Math.floor((o.batchBytes ?? 32 * 1024 * 1024) / chunkSize)))) {
      interrupted();
      const items = await readBatch(source, chunkSize, slots, counters);
      counters.chunksRead += items.length;
      await uploading;
      up ??= new Uploader(agent, await openSession(), o.uploads ?? 4);
      uploading = up.batch(items);
      uploading.catch(() => undefined);
      o.onProgress?.({ done: counters.chunksRead, total });
    }
    await uploading;
    interrupted();
    const { point } = await agent.json<{ point: RemotePoint }>('POST', `/v1/sessions/${await openSession()}/commit`);
    return { point, ...counters, chunksUploaded: up?.chunksUploaded ?? 0, bytesUploaded: up?.bytesUploaded ?? 0 };
  } catch (err) {
    if (session) await agent.request('DELETE', `/v1/sessions/${session}`).catch(() => undefined);
    throw err;
  }
}

/** Backs up one source through the agent; see the module comment. */
export async function remoteBackup(agent: RemoteAgent, o: RemoteBackupOptions): Promise<RemoteBackupResult> {
  const started = Date.now();
  validateName('vm', o.vm);
  const frontEnd = await frontEndFor(o.source, { ...(o.changedExtentsFile ? { changedExtentsFile: o.changedExtentsFile } : {}), ...(o.bitmap !== undefined ? { bitmap: o.bitmap } : {}) });
  const disk = validateName('disk', o.disk ?? frontEnd.diskName);
  const { chunkSize } = await agent.json<{ chunkSize: number }>('GET', '/v1/repo');
  const parent = (await listRemotePoints(agent, { vm: o.vm, disk })).at(-1);
  const parentRecord = parent ? asParentRecord(parent) : null;
  const plan = await frontEnd.plan({ parent: parentRecord, forceFull: o.full ?? false, ...(o.signal ? { signal: o.signal } : {}) });
  let committed = false;
  try {
    const source = plan.source;
    const useParent = parentRecord !== null && plan.base === 'parent';
    const g = { chunkSize, diskSize: source.sizeBytes, slotCount: Math.ceil(source.sizeBytes / chunkSize) };
    const ranges = planSlots(g, plan.changed, useParent ? parentRecord : null);
    const openBody = { vm: o.vm, disk, sizeBytes: source.sizeBytes, parent: useParent ? parentRecord.id : null, changeToken: plan.changeToken, full: !plan.changed || !useParent };
    const r = await sendSlots(agent, source, ranges, chunkSize, openBody, o);
    committed = true;
    return { ...r, bytesSent: agent.bytesSent, durationMs: Date.now() - started };
  } finally {
    try {
      await plan.finish(committed);
    } finally {
      await plan.source.close();
    }
  }
}

/** A point of the tenant from an id, a unique prefix (4+ chars) or `latest`. */
export async function resolveRemotePoint(agent: RemoteAgent, ref: string, scope: { vm?: string; disk?: string } = {}): Promise<RemotePoint> {
  const all = await listRemotePoints(agent, scope);
  if (ref === 'latest') {
    if (new Set(all.map((p) => `${p.vm}/${p.disk}`)).size > 1) throw new ChunkvaultError('POINT_AMBIGUOUS', '"latest" matches several disks: give --vm and --disk');
    const last = all.at(-1);
    if (!last) throw new ChunkvaultError('POINT_NOT_FOUND', 'no points match "latest"');
    return last;
  }
  if (!/^[0-9a-f]{4,16}$/.test(ref)) throw new ChunkvaultError('POINT_NOT_FOUND', `"${ref}" is not a point id`, { details: { point: ref } });
  const matches = all.filter((p) => p.id.startsWith(ref));
  if (matches.length === 0) throw new ChunkvaultError('POINT_NOT_FOUND', `no point ${ref}`, { details: { point: ref } });
  if (matches.length > 1) throw new ChunkvaultError('POINT_AMBIGUOUS', `point prefix ${ref} matches ${matches.length} points`);
  return matches[0]!;
}

const WRITE_BYTES = 1024 * 1024;

/**
 * Streams a point's image from the agent into `output` (a file, device, FIFO or `-`).
 * Received pieces are gathered into one page-aligned 1 MiB stage, so a file target
 * can write them with direct I/O.
 */
export async function remoteRestore(agent: RemoteAgent, point: RemotePoint, output: string, signal?: AbortSignal, options: FileTargetOptions = {}): Promise<void> {
  const target = await openTarget(output, options);
  try {
    const res = await agent.stream(`/v1/points/${point.id}/data`);
    await target.begin(point.sizeBytes);
    const stage = alignedShared(WRITE_BYTES);
    let offset = 0;
    let fill = 0;
    const flush = async () => {
      const data = stage.subarray(0, fill);
      // Sparse targets read back holes as zeros: skip all-zero runs.
      if (!target.sparse || !isZero(data)) await target.write(offset, data);
      offset += fill;
      fill = 0;
    };
    for await (const piece of res as AsyncIterable<Buffer>) {
      if (signal?.aborted) throw new ChunkvaultError('INTERRUPTED', 'restore interrupted');
      agent.bytesReceived += piece.length;
      for (let at = 0; at < piece.length; ) {
        const n = Math.min(piece.length - at, WRITE_BYTES - fill);
        stage.set(piece.subarray(at, at + n), fill);
        fill += n;
        at += n;
        if (fill === WRITE_BYTES) await flush();
      }
    }
    if (fill > 0) await flush();
    if (offset !== point.sizeBytes) throw new ChunkvaultError('PROTOCOL_ERROR', `the media agent sent ${offset} of ${point.sizeBytes} bytes`);
    await target.commit();
  } catch (err) {
    await target.abort().catch(() => undefined);
    throw err;
  }
}
