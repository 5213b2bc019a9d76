/**
 * Repository check. Structure (always): every point map matches its checksum and
 * geometry, every referenced chunk is in the index, every container the index points
 * at opens with a valid footer that lists the indexed record. Data (`readData`):
 * every record of every container is read and SHA-256-checked against its digest.
 * Each problem names the chunk and every point that references it.
 */
import type { Repository } from './repository.js';
import type { PointRecord } from './catalog.js';
import { ContainerReader } from './container.js';
import { ChunkReader } from './chunk-reader.js';
import { locationOf } from './chunk-index.js';
import { MapReader, isZeroDigest, mapPath } from './point-map.js';
import { ChunkvaultError, isChunkvaultError, toChunkvaultError, type ErrorCode } from './errors.js';
import { DIGEST_BYTES } from './constants.js';
import { toHex } from './_bytes.js';
import type { ChunkLocation } from './chunk-index.js';
import type { FooterEntry } from './container-format.js';

export interface VerifyProblem {
  readonly code: ErrorCode;
  readonly message: string;
  readonly chunk?: string;
  readonly container?: string;
  /** Point ids affected. */
  readonly points: string[];
}

export interface VerifyReport {
  readonly ok: boolean;
  readonly pointsChecked: number;
  readonly chunksReferenced: number;
  readonly containersChecked: number;
  readonly chunksRead: number;
  readonly problems: VerifyProblem[];
}

export interface VerifyOptions {
  readonly points?: readonly PointRecord[];
  readonly readData?: boolean;
  readonly onProgress?: (p: { done: number; total: number }) => void;
}

interface State {
  problems: VerifyProblem[];
  /** digest hex -> problem, for chunks found bad (points filled in at the end). */
  badChunks: Map<string, { code: ErrorCode; message: string; container?: string }>;
  /** Referenced chunks by container: record offset -> digest hex. */
  containers: Map<string, Map<number, string>>;
  referenced: Set<string>;
  chunksRead: number;
}

function markBad(st: State, hex: string, code: ErrorCode, message: string, container?: string): void {
  if (!st.badChunks.has(hex)) st.badChunks.set(hex, { code, message, ...(container ? { container } : {}) });
}

/** Marks every referenced chunk of `id` whose offset is not in `found` as bad. */
function markUnlisted(st: State, id: string, found: Set<number>, code: ErrorCode, why: string): void {
  for (const [offset, hex] of st.containers.get(id) ?? []) {
    if (!found.has(offset)) markBad(st, hex, code, `chunk ${hex} (container ${id} at ${offset}): ${why}`, id);
  }
}

export async function verify(repo: Repository, options: VerifyOptions = {}): Promise<VerifyReport> {
  const session = await repo.beginSession('read');
  try {
    return await verifyIn(repo, options);
  } finally {
    await session.end();
  }
}

async function verifyIn(repo: Repository, options: VerifyOptions): Promise<VerifyReport> {
  const points = options.points ?? (await repo.catalog.list());
  const st: State = { problems: [], badChunks: new Map(), containers: new Map(), referenced: new Set(), chunksRead: 0 };
  for (const p of points) await checkPoint(repo, p, st);
  // A full --read-data run reads every container (unreferenced data included: a later
  // dedup hit could reference it) plus referenced ones that are gone; a single point's
  // run reads only what it references.
  const referencedIds = [...st.containers.keys()];
  const ids = options.readData && !options.points ? [...new Set([...(await repo.containerIds()), ...referencedIds])].sort() : referencedIds;
  const chunks = options.readData ? new ChunkReader(repo.dir, await repo.index(), repo.pool()) : undefined;
  let done = 0;
  try {
    for (const id of ids) {
      await (chunks ? readContainer(repo, id, st, chunks) : checkContainer(repo, id, st));
      options.onProgress?.({ done: ++done, total: ids.length });
    }
  } finally {
    await chunks?.close();
  }
  await attributeBadChunks(repo, points, st);
  return {
    ok: st.problems.length === 0,
    pointsChecked: points.length,
    chunksReferenced: st.referenced.size,
    containersChecked: ids.length,
    chunksRead: st.chunksRead,
    problems: st.problems,
  };
}

async function checkPoint(repo: Repository, p: PointRecord, st: State): Promise<void> {
  let map: MapReader | undefined;
  try {
    map = await MapReader.open(mapPath(repo.dir, p.id));
    await map.verifyDigest(p.mapDigest);
    if (map.geometry.diskSize !== p.sizeBytes) throw new ChunkvaultError('MAP_CORRUPT', `point ${p.id}: map size differs from the record`);
    const index = await repo.index();
    for await (const { digests } of map.windows()) {
      const list: Uint8Array[] = [];
      for (let at = 0; at < digests.length; at += DIGEST_BYTES) {
        const d = digests.subarray(at, at + DIGEST_BYTES);
        if (!isZeroDigest(d)) list.push(d);
      }
      const locs = await index.findMany(list);
      locs.forEach((loc, i) => noteReference(st, list[i] as Uint8Array, loc));
    }
  } catch (err) {
    const e = toChunkvaultError(err, `point ${p.id}`);
    st.problems.push({ code: e.code, message: e.message, points: [p.id] });
  } finally {
    await map?.close();
  }
}

function noteReference(st: State, digest: Uint8Array, loc: ChunkLocation | undefined): void {
  const hex = toHex(digest);
  st.referenced.add(hex);
  if (!loc) {
    st.badChunks.set(hex, { code: 'CHUNK_MISSING', message: `chunk ${hex} is referenced but not in the index` });
    return;
  }
  let offsets = st.containers.get(loc.containerId);
  if (offsets === undefined) st.containers.set(loc.containerId, (offsets = new Map()));
  offsets.set(loc.offset, hex);
}

/** Opens a container; when that fails, its referenced chunks are marked and undefined returned. */
async function openContainer(repo: Repository, id: string, st: State): Promise<ContainerReader | undefined> {
  try {
    return await ContainerReader.open(repo.dir, id);
  } catch (err) {
    const e = toChunkvaultError(err, `container ${id}`);
    // An unreferenced container listed at the start may be removed by a GC meanwhile.
    if (e.code === 'CHUNK_MISSING' && !st.containers.has(id)) return undefined;
    st.problems.push({ code: e.code, message: e.message, container: id, points: [] });
    markUnlisted(st, id, new Set(), e.code === 'CHUNK_MISSING' ? 'CHUNK_MISSING' : 'CONTAINER_CORRUPT', e.message);
    return undefined;
  }
}

async function checkContainer(repo: Repository, id: string, st: State): Promise<void> {
  const reader = await openContainer(repo, id, st);
  if (!reader) return;
  try {
    const entries = await reader.readFooter();
    markUnlisted(st, id, new Set(entries.map((e) => e.offset)), 'INDEX_CORRUPT', 'the index points at a record the footer does not list');
  } catch (err) {
    const e = toChunkvaultError(err, `container ${id}`);
    st.problems.push({ code: e.code, message: e.message, container: id, points: [] });
    markUnlisted(st, id, new Set(), 'CONTAINER_CORRUPT', e.message);
  } finally {
    await reader.close();
  }
}

async function readContainer(repo: Repository, id: string, st: State, chunks: ChunkReader): Promise<void> {
  const reader = await openContainer(repo, id, st);
  if (!reader) return;
  try {
    let entries: FooterEntry[];
    let footerOk = true;
    try {
      entries = await reader.readFooter();
    } catch (err) {
      footerOk = false;
      st.problems.push({ code: 'CONTAINER_CORRUPT', message: (err as Error).message, container: id, points: [] });
      entries = [];
      for await (const e of reader.scanRecords()) entries.push(e);
    }
    const found = new Set(entries.map((e) => e.offset));
    const why = footerOk ? 'the index points at a record the footer does not list' : 'not recoverable from the damaged container';
    markUnlisted(st, id, found, footerOk ? 'INDEX_CORRUPT' : 'CHUNK_CORRUPT', why);
    await Promise.all(entries.map((e) => readRecord(chunks, id, e, st)));
  } finally {
    await reader.close();
  }
}

/** Reads one record the way a restore does, plus the SHA-256 check; damage marks the chunk bad. */
async function readRecord(chunks: ChunkReader, containerId: string, e: FooterEntry, st: State): Promise<void> {
  st.chunksRead++;
  try {
    await chunks.read(e.digest, locationOf(containerId, e), true);
  } catch (err) {
    const code = isChunkvaultError(err, 'CHUNK_MISSING') ? 'CHUNK_MISSING' : 'CHUNK_CORRUPT';
    markBad(st, toHex(e.digest), code, (err as Error).message, containerId);
  }
}

/** Turns bad chunks into problems, each naming every point that references the chunk. */
async function attributeBadChunks(repo: Repository, points: readonly PointRecord[], st: State): Promise<void> {
  if (st.badChunks.size === 0) return;
  const users = new Map<string, string[]>([...st.badChunks.keys()].map((k) => [k, []]));
  for (const p of points) {
    const map = await MapReader.open(mapPath(repo.dir, p.id)).catch(() => undefined);
    if (!map) continue;
    try {
      for await (const { digests } of map.windows()) {
        for (let at = 0; at < digests.length; at += DIGEST_BYTES) {
          const list = users.get(toHex(digests.subarray(at, at + DIGEST_BYTES)));
          if (list && list.at(-1) !== p.id) list.push(p.id);
        }
      }
    } finally {
      await map.close();
    }
  }
  for (const [chunk, bad] of st.badChunks) {
    st.problems.push({ code: bad.code, message: bad.message, chunk, ...(bad.container ? { container: bad.container } : {}), points: users.get(chunk) ?? [] });
  }
}
