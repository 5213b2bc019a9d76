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
import { MapReader, isZeroDigest, mapPath } from './point-map.js';
import { ChunkvaultError, toChunkvaultError, type ErrorCode } from './errors.js';
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
  containers: Map<string, Set<number> | null>;
  referenced: Set<string>;
  chunksRead: number;
}

export async function verify(repo: Repository, options: VerifyOptions = {}): Promise<VerifyReport> {
  const points = options.points ?? (await repo.catalog.list());
  const st: State = { problems: [], badChunks: new Map(), containers: new Map(), referenced: new Set(), chunksRead: 0 };
  for (const p of points) await checkPoint(repo, p, st);
  // A full --read-data run reads every container (unreferenced data included: a later
  // dedup hit could reference it); a single point's run reads only what it references.
  const ids = options.readData && !options.points ? await repo.containerIds() : [...st.containers.keys()];
  let done = 0;
  for (const id of ids) {
    await (options.readData ? readContainer(repo, id, st) : checkContainer(repo, id, st));
    options.onProgress?.({ done: ++done, total: ids.length });
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
      const locs = await index.getMany(list);
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
  if (offsets === undefined) st.containers.set(loc.containerId, (offsets = new Set()));
  offsets?.add(loc.offset);
}

async function checkContainer(repo: Repository, id: string, st: State): Promise<void> {
  const reader = await ContainerReader.open(repo.dir, id).catch((err: unknown) => err as Error);
  try {
    if (reader instanceof Error) throw reader;
    const entries = await reader.readFooter();
    const listed = new Set(entries.map((e) => e.offset));
    const wanted = st.containers.get(id);
    for (const off of wanted ?? []) {
      if (!listed.has(off)) st.problems.push({ code: 'INDEX_CORRUPT', message: `index points at container ${id} offset ${off}, which its footer does not list`, container: id, points: [] });
    }
  } catch (err) {
    const e = toChunkvaultError(err, `container ${id}`);
    st.problems.push({ code: e.code, message: e.message, container: id, points: [] });
    st.containers.set(id, null);
  } finally {
    if (!(reader instanceof Error)) await reader.close();
  }
}

async function readContainer(repo: Repository, id: string, st: State): Promise<void> {
  const reader = await ContainerReader.open(repo.dir, id);
  const pool = repo.pool();
  try {
    let entries: FooterEntry[];
    try {
      entries = await reader.readFooter();
    } catch (err) {
      st.problems.push({ code: 'CONTAINER_CORRUPT', message: (err as Error).message, container: id, points: [] });
      entries = [];
      for await (const e of reader.scanRecords()) entries.push(e);
    }
    await Promise.all(entries.map((e) => readRecord(reader, pool, e, st)));
  } finally {
    await reader.close();
  }
}

async function readRecord(reader: ContainerReader, pool: ReturnType<Repository['pool']>, e: FooterEntry, st: State): Promise<void> {
  st.chunksRead++;
  try {
    const rec = await reader.readRecord(e.offset, e.storedLength, e.digest);
    if (rec.header.checkHash !== e.checkHash) throw new ChunkvaultError('CHUNK_CORRUPT', 'record header disagrees with the footer');
    await pool.open({ payload: rec.payload, codec: e.codec, rawLength: e.rawLength, payloadHash: rec.header.payloadHash, checkHash: e.checkHash, digest: e.digest });
  } catch (err) {
    const hex = toHex(e.digest);
    const msg = `chunk ${hex} in container ${reader.id} at ${e.offset}: ${(err as Error).message}`;
    st.badChunks.set(hex, { code: 'CHUNK_CORRUPT', message: msg, container: reader.id });
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
