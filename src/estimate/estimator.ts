/**
 * The estimator behind `chunkvault estimate`: what a repository would store for each
 * chunking scheme (fixed sizes, and FastCDC averages with --cdc) and each codec, from
 * one read of each source. Nothing is written except a temporary digest set.
 *
 *   source --read regions of R = max(4 MiB, largest chunk)--> pool.scan: SHA-256 of
 *     every fixed chunk at every size (one read, N hashes; all-zero chunks flagged, not
 *     hashed) + CDC cut candidates
 *   --> CDC cutters (stream order) --> pool.scan of the CDC chunks
 *   --> distinct sets (on disk): first seen across all sources? within this source?
 *   --> pool.packSizes: each codec's stored size, for first-seen chunks only
 *
 * Compression: each distinct chunk is compressed once per codec per scheme, exactly as
 * the engine would (same codec calls, stored raw unless that saves 1/32), so stored
 * sizes are exact, and the cost grows with schemes x codecs on fresh data.
 */
import type { BlockSource, CompressionSetting } from '../../engine/index.js';
import { ChunkvaultError } from '../../engine/index.js';
import { BufferPool, WorkerPool, type ScanGroupResult } from '../../engine/index.js';
import { CdcCutter, cdcParams, type CdcUnit } from './cdc.js';
import { DistinctSets, GLOBAL_SCOPE } from './distinct-set.js';
import { chooseRegions, seededRandom } from './sampling.js';
import { Tally, type Scheme } from './tally.js';

const MIB = 1024 * 1024;
const DIGEST = 32;

/** Opens one source for reading; `release` finishes the plan and closes the source. */
export interface OpenedSource {
  readonly source: BlockSource;
  readonly name: string;
  release(): Promise<void>;
}

export interface EstimateOptions {
  readonly sources: readonly string[];
  /** Opens one command-line source: one disk, or every disk of a VM source. */
  readonly open: (source: string) => Promise<OpenedSource[]>;
  readonly chunkSizes: readonly number[];
  readonly codecs: readonly CompressionSetting[];
  readonly cdc: boolean;
  /** Percentage of read regions to sample; undefined reads everything. */
  readonly samplePercent?: number;
  readonly seed?: number;
  readonly threads?: number;
  readonly onProgress?: (done: number, total: number) => void;
  readonly signal?: AbortSignal;
}

function fixedRanges(length: number, size: number): Uint32Array {
  const n = Math.ceil(length / size);
  const out = new Uint32Array(n * 2);
  for (let k = 0; k < n; k++) {
    out[2 * k] = k * size;
    out[2 * k + 1] = Math.min(size, length - k * size);
  }
  return out;
}

interface RegionCtx {
  readonly srcIdx: number;
  /** Index of the region among every region of every source (sampling statistics). */
  readonly regionKey: number;
}

export class Estimator {
  readonly schemes: Scheme[];
  private readonly cdcSchemes: number[];
  readonly regionBytes: number;

  constructor(
    private readonly o: EstimateOptions,
    private readonly pool: WorkerPool,
    private readonly sets: DistinctSets,
    readonly tally: Tally,
  ) {
    this.schemes = tally.schemes;
    this.cdcSchemes = this.schemes.map((s, i) => (s.kind === 'cdc' ? i : -1)).filter((i) => i >= 0);
    this.regionBytes = Math.max(4 * MIB, ...o.chunkSizes);
  }

  /** Reads and accounts every source in order. */
  async run(opened: readonly OpenedSource[], chosen: readonly boolean[][], totalRead: number): Promise<void> {
    const progress = { done: 0, total: totalRead };
    let regionKey = 0;
    for (let s = 0; s < opened.length; s++) {
      await this.runSource(opened[s]!.source, s, chosen[s]!, regionKey, progress);
      regionKey += chosen[s]!.length;
    }
  }

  private async runSource(src: BlockSource, srcIdx: number, chosen: readonly boolean[], firstKey: number, progress: { done: number; total: number }): Promise<void> {
    const cutters = this.cdcSchemes.map((i) => new CdcCutter(cdcParams(this.schemes[i]!.chunkSize)));
    const pending = new Set<Promise<void>>();
    const limit = this.pool.threads * 4;
    // Region buffers are reused (they come back from the workers by transfer); one
    // region is read ahead while the previous one is dispatched.
    const buffers = new BufferPool(this.regionBytes, limit + 2);
    const read = async (r: number): Promise<{ buf: Uint8Array; length: number }> => {
      const buf = await buffers.acquire();
      const length = Math.min(this.regionBytes, src.sizeBytes - r * this.regionBytes);
      await src.readInto(buf.subarray(0, length), r * this.regionBytes);
      return { buf, length };
    };
    const order = chosen.flatMap((yes, r) => (yes ? [r] : []));
    let ahead = order.length > 0 ? read(order[0]!) : undefined;
    let turn: Promise<unknown> = Promise.resolve();
    let before = new Uint8Array(0);
    let failure: unknown;
    for (let i = 0; i < order.length && failure === undefined; i++) {
      const r = order[i]!;
      if (this.o.signal?.aborted) throw new ChunkvaultError('INTERRUPTED', 'estimate interrupted');
      while (pending.size >= limit) await Promise.race(pending);
      const { buf, length } = await ahead!;
      ahead = i + 1 < order.length ? read(order[i + 1]!) : undefined;
      ahead?.catch(() => undefined);
      const contiguous = r > 0 && chosen[r - 1] === true;
      const seed = contiguous ? before : new Uint8Array(0);
      before = buf.slice(Math.max(0, length - DIGEST), length);
      const last = r + 1 >= chosen.length || !chosen[r + 1];
      const ctx: RegionCtx = { srcIdx, regionKey: firstKey + r };
      this.tally.regionRead(ctx.regionKey, length);
      const work = this.region(ctx, buf, length, seed, cutters, last, turn);
      turn = work.ingested;
      const done = work.done.then((back) => {
        buffers.release(back);
        progress.done += length;
        this.o.onProgress?.(progress.done, progress.total);
      });
      const tracked: Promise<void> = done.catch((err: unknown) => void (failure ??= err)).finally(() => pending.delete(tracked));
      pending.add(tracked);
    }
    await Promise.all(pending);
    if (failure !== undefined) throw failure;
  }

  /** One region: scan, CDC ingestion (in stream order, after `turn`), accounting. */
  private region(ctx: RegionCtx, buf: Uint8Array, length: number, before: Uint8Array, cutters: CdcCutter[], last: boolean, turn: Promise<unknown>): { ingested: Promise<unknown>; done: Promise<Uint8Array> } {
    const fixed = this.schemes.map((s, i) => (s.kind === 'fixed' ? i : -1)).filter((i) => i >= 0);
    const scanned = this.pool.scan({
      buf,
      length,
      groups: fixed.map((i) => fixedRanges(length, this.schemes[i]!.chunkSize)),
      cdc: cutters.map((c) => c.params),
      before,
    });
    const ingested = turn.then(async () => {
      const r = await scanned;
      const region = r.buf.subarray(0, length);
      const units = cutters.map((c, k) => {
        const pushed = c.push(region, r.cdc[k]!);
        return last ? [pushed, c.finish()] : [pushed];
      });
      return { r, units };
    });
    const done = ingested.then(async ({ r, units }) => {
      const cdcWork = units.flatMap((us, k) => us.map((u) => this.cdcUnit(ctx, this.cdcSchemes[k]!, u)));
      const groups = fixed.map((scheme, g) => ({ scheme, ranges: fixedRanges(length, this.schemes[scheme]!.chunkSize), result: r.groups[g]! }));
      const [back] = await Promise.all([this.accountAndPack(ctx, r.buf, groups), ...cdcWork]);
      return back;
    });
    ingested.catch(() => undefined);
    return { ingested, done };
  }

  private async cdcUnit(ctx: RegionCtx, scheme: number, unit: CdcUnit): Promise<void> {
    if (unit.ranges.length === 0) return;
    const r = await this.pool.scan({ buf: unit.buf, length: unit.buf.length, groups: [unit.ranges] });
    await this.accountAndPack(ctx, r.buf, [{ scheme, ranges: unit.ranges, result: r.groups[0]! }]);
  }

  /** Counts chunks of several schemes over one buffer, then compresses the first-seen ones; resolves with the buffer. */
  private async accountAndPack(ctx: RegionCtx, buf: Uint8Array, groups: { scheme: number; ranges: Uint32Array; result: ScanGroupResult }[]): Promise<Uint8Array> {
    const toPack: number[] = [];
    const owners: number[] = [];
    for (const g of groups) {
      const fresh = await this.account(ctx, g.scheme, g.ranges, g.result);
      for (const k of fresh) {
        toPack.push(g.ranges[2 * k]!, g.ranges[2 * k + 1]!);
        owners.push(g.scheme);
      }
    }
    if (toPack.length === 0 || this.o.codecs.length === 0) return buf;
    const { buf: back, sizes } = await this.pool.packSizes({ buf, ranges: Uint32Array.from(toPack), codecs: this.o.codecs });
    const nc = this.o.codecs.length;
    owners.forEach((scheme, k) => this.tally.stored(ctx.regionKey, scheme, Array.from(sizes.subarray(k * nc, (k + 1) * nc))));
    return back;
  }

  /** Zero / distinct accounting for one group; returns the indexes of globally first-seen chunks. */
  private async account(ctx: RegionCtx, scheme: number, ranges: Uint32Array, res: ScanGroupResult): Promise<number[]> {
    const idx: number[] = [];
    const digests: Uint8Array[] = [];
    for (let k = 0; k < res.zero.length; k++) {
      const len = ranges[2 * k + 1]!;
      this.tally.chunk(ctx.srcIdx, ctx.regionKey, scheme, len, res.zero[k] === 1);
      if (res.zero[k] === 1) continue;
      idx.push(k);
      digests.push(res.digests.subarray(k * DIGEST, (k + 1) * DIGEST));
    }
    const [global, local] = await Promise.all([this.sets.add(GLOBAL_SCOPE, scheme, digests), this.sets.add(ctx.srcIdx, scheme, digests)]);
    const fresh: number[] = [];
    idx.forEach((k, j) => {
      const len = ranges[2 * k + 1]!;
      if (local[j] === 1) this.tally.uniqueInSource(ctx.srcIdx, scheme, len);
      if (global[j] === 1) {
        this.tally.unique(ctx.regionKey, scheme, len);
        fresh.push(k);
      }
    });
    return fresh;
  }
}

/** Regions chosen for reading, per source (all of them without --sample). */
export function planRegions(sizes: readonly number[], regionBytes: number, samplePercent: number | undefined, seed: number): boolean[][] {
  const rnd = seededRandom(seed);
  return sizes.map((size) => {
    const count = Math.ceil(size / regionBytes);
    return samplePercent === undefined ? new Array<boolean>(count).fill(true) : chooseRegions(count, samplePercent, rnd);
  });
}

/** Runs a whole estimate; always releases the sources, the pool and the digest sets. */
export async function estimate(o: EstimateOptions): Promise<ReturnType<Tally['report']>> {
  if (o.sources.length === 0) throw new ChunkvaultError('USAGE', 'estimate needs at least one source');
  const opened: OpenedSource[] = [];
  const pool = new WorkerPool(o.threads === undefined ? {} : { threads: o.threads });
  let sets: DistinctSets | undefined;
  const started = Date.now();
  try {
    for (const s of o.sources) opened.push(...(await o.open(s)));
    sets = await DistinctSets.create();
    const sizes = opened.map((s) => s.source.sizeBytes);
    const tally = new Tally(o.chunkSizes, o.cdc, o.codecs, opened.map((s) => ({ name: s.name, sizeBytes: s.source.sizeBytes })), o.samplePercent !== undefined);
    const est = new Estimator(o, pool, sets, tally);
    const chosen = planRegions(sizes, est.regionBytes, o.samplePercent, o.seed ?? 1);
    const totalRead = chosen.reduce((acc, c, s) => acc + c.reduce((a, yes, r) => a + (yes ? Math.min(est.regionBytes, sizes[s]! - r * est.regionBytes) : 0), 0), 0);
    await est.run(opened, chosen, totalRead);
    const sample = o.samplePercent === undefined ? null : { percent: o.samplePercent, seed: o.seed ?? 1, regionBytes: est.regionBytes, regionsRead: chosen.flat().filter(Boolean).length, regionsTotal: chosen.flat().length };
    return tally.report({ durationMs: Date.now() - started, bytesRead: totalRead, sample });
  } finally {
    await Promise.allSettled([pool.close(), sets?.close(), ...opened.map((s) => s.release())]);
  }
}
