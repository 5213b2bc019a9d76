/**
 * Garbage collection beside running backups (FORMAT.md "Garbage collection").
 *
 *   mark      every point record's map -> on-disk live set (changed slots only)
 *   condemn   index entries not in the live set move to the gc tables (no new dedup hit)
 *   barrier   backup sessions live now; wait (or return) until all have ended
 *   finish    resurrect what points committed since the mark reference; drop orphans;
 *             retire dead containers, compact mostly-dead ones
 *   unlink    retired containers, once every session live at retirement has ended
 *
 * Every step is recorded in gc/state.json before the next starts, so a GC killed at
 * any moment leaves committed points intact, and the next run finishes the job.
 */
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import type { Repository } from '../repository.js';
import type { ChunkIndex } from '../chunk-index.js';
import type { PointRecord } from '../catalog.js';
import { mapPath } from '../point-map.js';
import { gcDir, readState, writeState, type GcState } from './state.js';
import { DigestSet } from './digest-set.js';
import { allDigests, byDisk, changedDigests } from './maps.js';
import { condemnUnmarked, resurrect } from './condemn.js';
import { reclaim, unlinkContainers } from './reclaim.js';
import { ChunkvaultError } from '../errors.js';
import { toHex } from '../_bytes.js';
import { bindingOf, keys } from '../object-repo/binding.js';
import { takeGcLease } from '../object-repo/leases.js';

export interface GcOptions {
  /** Report what would be removed; change nothing. */
  readonly dryRun?: boolean;
  /** Dead share (0-1) from which a container is compacted. Default 0.2. */
  readonly compactThreshold?: number;
  /** Wait for running backups instead of leaving reclamation to the next run. */
  readonly wait?: boolean;
  /** Check every container for unindexed leftovers, not only those new since the last GC. */
  readonly audit?: boolean;
  readonly onProgress?: (p: GcProgress) => void;
  readonly signal?: AbortSignal;
}

export interface GcProgress {
  readonly phase: 'mark' | 'condemn' | 'wait' | 'finish' | 'unlink';
  readonly done: number;
  readonly total: number;
}

export interface GcReport {
  readonly dryRun: boolean;
  /** `done`: reclaimed; `pending`: chunks condemned, waiting for running backups (run gc again). */
  readonly status: 'done' | 'pending';
  readonly epoch: number;
  readonly points: number;
  readonly slotsRead: number;
  readonly markInsertions: number;
  readonly indexEntries: number;
  readonly chunksCondemned: number;
  readonly bytesCondemned: number;
  readonly chunksResurrected: number;
  readonly containersRemoved: number;
  readonly containersCompacted: number;
  readonly recordsDropped: number;
  /** Container bytes unlinked minus bytes written by compaction. */
  readonly bytesFreed: number;
  readonly bytesWritten: number;
  readonly orphanMapsRemoved: number;
  readonly orphanPointsRemoved: number;
  readonly waitingFor: { pid: number; kind: string; started: string }[];
  readonly durationMs: number;
}

type Counters = { -readonly [K in keyof GcReport]: GcReport[K] };

function emptyReport(dryRun: boolean): Counters {
  return {
    dryRun, status: 'done', epoch: 0, points: 0, slotsRead: 0, markInsertions: 0, indexEntries: 0, chunksCondemned: 0, bytesCondemned: 0,
    chunksResurrected: 0, containersRemoved: 0, containersCompacted: 0, recordsDropped: 0, bytesFreed: 0, bytesWritten: 0,
    orphanMapsRemoved: 0, orphanPointsRemoved: 0, waitingFor: [], durationMs: 0,
  };
}

/** Every point record on disk: committed ones and those of jobs still being written. */
async function allPointRecords(repo: Repository): Promise<PointRecord[]> {
  return [...(await repo.catalog.list()), ...(await repo.catalog.uncommittedJobPoints())];
}

/** Runs one GC. Holds the GC lock throughout; backups, restores and verifies may run beside it. */
export async function gc(repo: Repository, options: GcOptions = {}): Promise<GcReport> {
  const started = Date.now();
  const r = emptyReport(options.dryRun ?? false);
  const index = await repo.index();
  const lock = await repo.gcLock();
  // On an object store GC needs the bucket to itself: the GC lease, no session of any agent.
  const binding = bindingOf(repo.dir);
  let lease: Awaited<ReturnType<typeof takeGcLease>> | undefined;
  try {
    lease = binding && !r.dryRun ? await takeGcLease(binding.store, binding.agent) : undefined;
    const state = await readState(repo.dir);
    r.epoch = state.epoch;
    if (!r.dryRun) {
      await unlinkRetired(repo, state, r, options);
      if (state.phase !== 'idle' && !(await finishPending(repo, index, state, r, options))) return done(r, started);
    }
    await markAndCondemn(repo, index, state, r, options);
    await lease?.check();
    if (!r.dryRun && !(await finishPending(repo, index, state, r, options))) return done(r, started);
    await lease?.check();
    if (!r.dryRun) await unlinkRetired(repo, state, r, options);
    return done(r, started);
  } finally {
    await lease?.release();
    await lock.end();
  }
}

function done(r: Counters, started: number): GcReport {
  r.durationMs = Date.now() - started;
  return r;
}

async function markAndCondemn(repo: Repository, index: ChunkIndex, state: GcState, r: Counters, options: GcOptions): Promise<void> {
  const markPath = join(gcDir(repo.dir), 'mark.mdb');
  const points = await allPointRecords(repo);
  const maps = await listMapIds(repo.dir);
  const containersNow = await repo.containerIds();
  const live = await DigestSet.create(markPath);
  try {
    r.points = points.length;
    let done = 0;
    for (const group of byDisk(points)) {
      let prev: PointRecord | undefined;
      for (const p of group) {
        checkAbort(options);
        r.slotsRead += await changedDigests(repo.dir, p, prev, (ds) => markBatch(index, live, ds));
        prev = p;
        options.onProgress?.({ phase: 'mark', done: ++done, total: points.length });
      }
    }
    r.markInsertions = live.insertions;
    const total = index.count();
    if (r.dryRun) {
      await countUnmarked(index, live, r);
      return;
    }
    const known = await readKnown(repo.dir, state);
    state.epoch++;
    r.epoch = state.epoch;
    state.phase = 'condemning';
    state.markedAt = new Date().toISOString();
    state.markedPoints = points.map((p) => p.id);
    const withRecord = new Set(points.map((p) => p.id));
    state.orphanMaps = maps.filter((id) => !withRecord.has(id));
    state.newContainers = options.audit || !known ? containersNow : containersNow.filter((id) => !known.has(id));
    await writeKnown(repo.dir, state, containersNow);
    await writeState(repo.dir, state);
    const res = await condemnUnmarked(index, live, (scanned) => options.onProgress?.({ phase: 'condemn', done: scanned, total }));
    r.indexEntries = res.scanned;
    r.chunksCondemned = res.condemned;
    r.bytesCondemned = res.condemnedBytes;
    state.phase = 'condemned';
    state.barrier = (await repo.sessions.live(true)).filter((s) => s.kind === 'backup').map((s) => s.id);
    await writeState(repo.dir, state);
  } finally {
    await live.destroy();
  }
}

async function countUnmarked(index: ChunkIndex, live: DigestSet, r: Counters): Promise<void> {
  for await (const [digest, loc] of index.entries()) {
    r.indexEntries++;
    if (live.has(digest)) continue;
    r.chunksCondemned++;
    r.bytesCondemned += loc.storedLength;
  }
}

function checkAbort(options: GcOptions): void {
  if (options.signal?.aborted) throw new ChunkvaultError('INTERRUPTED', 'gc interrupted');
}

/** Marks a batch of referenced digests; every one must be in the index, or GC would take it for garbage. */
async function markBatch(index: ChunkIndex, live: DigestSet, digests: Uint8Array[]): Promise<void> {
  const main = index.main();
  const missing = digests.filter((d) => main.getBinary(d) === undefined);
  if (missing.length > 0) {
    throw new ChunkvaultError('INDEX_CORRUPT', `gc refused: ${missing.length} chunk(s) referenced by points are not in the index (first ${toHex(missing[0]!)}); run "chunkvault verify" and "chunkvault index rebuild"`, {
      details: { chunk: toHex(missing[0]!) },
    });
  }
  await live.add(digests);
}

/**
 * Finishes the pending condemned set if its barrier has cleared (waiting for it when
 * asked to). Returns false when it is still pending.
 */
async function finishPending(repo: Repository, index: ChunkIndex, state: GcState, r: Counters, options: GcOptions): Promise<boolean> {
  if (state.phase === 'idle') return true;
  if (state.phase === 'condemning') {
    // Killed mid-sweep: what moved stays condemned; wait for the backups live now.
    state.phase = 'condemned';
    state.barrier = (await repo.sessions.live(true)).filter((s) => s.kind === 'backup').map((s) => s.id);
    await writeState(repo.dir, state);
  }
  for (;;) {
    const waiting = await repo.sessions.stillLive(state.barrier);
    if (waiting.length === 0) break;
    if (!options.wait) {
      const all = await repo.sessions.live();
      r.status = 'pending';
      r.waitingFor = all.filter((s) => waiting.includes(s.id)).map((s) => ({ pid: s.pid, kind: s.kind, started: s.started }));
      return false;
    }
    checkAbort(options);
    options.onProgress?.({ phase: 'wait', done: state.barrier.length - waiting.length, total: state.barrier.length });
    await new Promise((res) => setTimeout(res, 200));
  }
  await finish(repo, index, state, r, options);
  return true;
}

async function finish(repo: Repository, index: ChunkIndex, state: GcState, r: Counters, options: GcOptions): Promise<void> {
  // 1. Every map written since the mark may reference condemned chunks: put those back.
  // Maps, not point records: a point committed since the mark and already forgotten
  // may be the parent a running backup copies its unchanged slots from.
  // A map without a record at the mark may have been in flight (renamed, its record
  // about to be): it is an orphan only if it still has no record now that the
  // backups of the barrier have ended.
  const records = new Set(await listRecordIds(repo.dir));
  const skip = new Set([...state.markedPoints, ...state.orphanMaps.filter((id) => !records.has(id))]);
  const fresh = (await listMapIds(repo.dir)).filter((id) => !skip.has(id));
  let done = 0;
  for (const id of fresh) {
    await allDigests(repo.dir, id, async (ds) => {
      r.chunksResurrected += await resurrect(index, ds);
    });
    options.onProgress?.({ phase: 'finish', done: ++done, total: fresh.length });
  }
  // 2. Orphans: maps without records since the mark; points of jobs that died uncommitted.
  await removeOrphans(repo, state, r);
  // 3. Space.
  const pendingBatch = state.retired.length;
  const retire = async (ids: string[]) => {
    const last = state.retired.length > pendingBatch ? state.retired.at(-1) : undefined;
    if (last) last.containers.push(...ids);
    else state.retired.push({ containers: [...ids], barrier: [] });
    await writeState(repo.dir, state);
  };
  const totals = await reclaim(repo.dir, index, options.compactThreshold ?? 0.2, state.newContainers, retire);
  r.containersRemoved += totals.containersRetired;
  r.containersCompacted += totals.containersCompacted;
  r.recordsDropped += totals.recordsDropped;
  r.bytesWritten += totals.bytesWritten;
  r.bytesFreed -= totals.bytesWritten;
  // Containers retired by this run wait for every session live now (restores included).
  const barrier = (await repo.sessions.live(true)).map((s) => s.id);
  for (const b of state.retired.slice(pendingBatch)) b.barrier.push(...barrier);
  state.phase = 'idle';
  state.barrier = [];
  state.markedPoints = [];
  state.orphanMaps = [];
  state.newContainers = [];
  await writeState(repo.dir, state);
}

async function removeOrphans(repo: Repository, state: GcState, r: Counters): Promise<void> {
  const live = await repo.sessions.live(true);
  const liveJobs = new Set(live.map((s) => s.job).filter((j): j is string => Boolean(j)));
  for (const p of await repo.catalog.uncommittedJobPoints()) {
    if (p.job && liveJobs.has(p.job)) continue;
    await deleteObjects(repo, [keys.point(p.id), keys.map(p.id)]);
    await fsp.rm(join(repo.dir, 'catalog', 'points', `${p.id}.json`), { force: true });
    await fsp.rm(mapPath(repo.dir, p.id), { force: true });
    r.orphanPointsRemoved++;
  }
  const records = new Set(await listRecordIds(repo.dir));
  for (const id of state.orphanMaps) {
    if (records.has(id)) continue;
    await deleteObjects(repo, [keys.map(id)]);
    await fsp.rm(mapPath(repo.dir, id), { force: true });
    r.orphanMapsRemoved++;
  }
}

/** On an object store, deletes objects from the bucket (before their cached copies). */
async function deleteObjects(repo: Repository, objectKeys: readonly string[]): Promise<void> {
  const binding = bindingOf(repo.dir);
  if (binding) for (const key of objectKeys) await binding.store.delete(key);
}

async function unlinkRetired(repo: Repository, state: GcState, r: Counters, options: GcOptions): Promise<void> {
  const keep = [];
  for (const batch of state.retired) {
    if ((await repo.sessions.stillLive(batch.barrier)).length > 0) {
      keep.push(batch);
      continue;
    }
    options.onProgress?.({ phase: 'unlink', done: 0, total: batch.containers.length });
    r.bytesFreed += await unlinkContainers(repo.dir, batch.containers);
  }
  if (keep.length !== state.retired.length) {
    state.retired = keep;
    await writeState(repo.dir, state);
  }
}

async function listMapIds(repoDir: string): Promise<string[]> {
  const root = join(repoDir, 'maps');
  const out: string[] = [];
  for (const shard of await fsp.readdir(root).catch(() => [] as string[])) {
    for (const n of await fsp.readdir(join(root, shard)).catch(() => [] as string[])) {
      if (/^[0-9a-f]{16}\.map$/.test(n)) out.push(n.slice(0, 16));
    }
  }
  // On an object store, maps only the bucket has are orphans of failed commits (GC runs
  // beside no session there, and every committed point's map was pulled on open).
  const binding = bindingOf(repoDir);
  if (binding) {
    for await (const e of binding.store.list('maps/')) {
      const m = /^maps\/[0-9a-f]{2}\/([0-9a-f]{16})\.map$/.exec(e.key);
      if (m) out.push(m[1] as string);
    }
  }
  return [...new Set(out)];
}

async function listRecordIds(repoDir: string): Promise<string[]> {
  const names = await fsp.readdir(join(repoDir, 'catalog', 'points')).catch(() => [] as string[]);
  return names.filter((n) => /^[0-9a-f]{16}\.json$/.test(n)).map((n) => n.slice(0, 16));
}

async function readKnown(repoDir: string, state: GcState): Promise<Set<string> | undefined> {
  if (!state.knownContainersFile) return undefined;
  try {
    const text = await fsp.readFile(join(gcDir(repoDir), state.knownContainersFile), 'utf8');
    return new Set(text.split('\n').filter(Boolean));
  } catch {
    return undefined;
  }
}

async function writeKnown(repoDir: string, state: GcState, ids: readonly string[]): Promise<void> {
  const name = `containers-${state.epoch}.txt`;
  await fsp.writeFile(join(gcDir(repoDir), name), ids.join('\n') + '\n');
  const old = state.knownContainersFile;
  state.knownContainersFile = name;
  if (old && old !== name) await fsp.rm(join(gcDir(repoDir), old), { force: true });
}
