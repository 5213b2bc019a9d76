/**
 * Counters of an estimate and the report built from them.
 *
 * Terms (as in `stats`): logical bytes are the source sizes; zero bytes are all-zero
 * chunks (never stored); unique bytes are the raw bytes of distinct non-zero chunks;
 * stored bytes are their payloads under a codec.
 *
 *   dedup ratio       = (logical - zero) / unique
 *   compression ratio = unique / stored
 *   total ratio       = logical / stored
 *
 * Repository overhead: the index holds 32 B of key + 45 B of value per unique chunk
 * (FORMAT.md "Index"); LevelDB adds block, restart-point and filter overhead, taken
 * here as 10 % (digests do not compress). A point map is 64 B of header + 32 B per slot
 * + 32 B of trailer per source (one point each). chunkvault's maps have fixed slots, so
 * for CDC schemes the map figure is hypothetical: 32 B digest + 8 B offset per chunk.
 */
import { INDEX_VALUE_BYTES, MAP_HEADER_BYTES, MAP_TRAILER_BYTES, DIGEST_BYTES } from '../../engine/index.js';
import { compressionText, type CompressionSetting } from '../../engine/index.js';
import { cdcParams } from './cdc.js';
import { estimateTotal, type Interval } from './sampling.js';

const LEVELDB_OVERHEAD = 1.1;
const CDC_OFFSET_BYTES = 8;

export interface Scheme {
  readonly kind: 'fixed' | 'cdc';
  /** The fixed size, or the CDC average size. */
  readonly chunkSize: number;
}

interface Counts {
  logical: number;
  zero: number;
  chunks: number;
  zeroChunks: number;
  unique: number;
  uniqueChunks: number;
  stored: number[];
}

interface RegionCounts {
  length: number;
  zero: number[];
  unique: number[];
  stored: number[][];
}

export interface SourceInfo {
  readonly name: string;
  readonly sizeBytes: number;
}

function ratio(a: number, b: number): number {
  return b === 0 ? 0 : a / b;
}

/** Dedup ratio bounds from the zero and unique intervals (a ratio is never below 1). */
function dedupInterval(logical: number, zero: Interval, unique: Interval): Interval {
  const at = (z: number, u: number) => (u === 0 ? 0 : Math.max(1, (logical - z) / u));
  return { estimate: at(zero.estimate, unique.estimate), low: at(zero.high, unique.high), high: at(zero.low, unique.low) };
}

const newCounts = (codecs: number): Counts => ({ logical: 0, zero: 0, chunks: 0, zeroChunks: 0, unique: 0, uniqueChunks: 0, stored: new Array<number>(codecs).fill(0) });

export interface CodecEstimate {
  readonly codec: string;
  readonly storedBytes: number;
  readonly compressionRatio: number;
  readonly totalRatio: number;
  /** 95 % interval of storedBytes (with --sample). */
  readonly interval?: Interval;
}

export interface SourceEstimate {
  readonly source: string;
  readonly logicalBytes: number;
  readonly zeroBytes: number;
  /** Distinct non-zero bytes within this source alone. */
  readonly uniqueBytes: number;
  readonly dedupRatio: number;
}

export interface SchemeEstimate {
  readonly kind: 'fixed' | 'cdc';
  readonly chunkSize: number;
  readonly minSize: number;
  readonly maxSize: number;
  readonly logicalBytes: number;
  readonly zeroBytes: number;
  readonly zeroShare: number;
  readonly chunks: number;
  readonly zeroChunks: number;
  readonly uniqueChunks: number;
  readonly uniqueBytes: number;
  readonly dedupRatio: number;
  readonly perSource: SourceEstimate[];
  readonly codecs: CodecEstimate[];
  readonly indexBytes: number;
  readonly pointMapBytes: number;
  /** 95 % intervals (with --sample). */
  readonly intervals?: { zeroBytes: Interval; uniqueBytes: Interval; dedupRatio: Interval };
}

export interface EstimateReport {
  readonly sources: SourceInfo[];
  readonly codecs: string[];
  readonly sample: { percent: number; seed: number; regionBytes: number; regionsRead: number; regionsTotal: number } | null;
  readonly bytesRead: number;
  readonly durationMs: number;
  readonly schemes: SchemeEstimate[];
}

export class Tally {
  readonly schemes: Scheme[];
  private readonly total: Counts[];
  private readonly perSource: Counts[][];
  private readonly regions = new Map<number, RegionCounts>();

  constructor(
    chunkSizes: readonly number[],
    cdc: boolean,
    private readonly codecs: readonly CompressionSetting[],
    private readonly sources: readonly SourceInfo[],
    private readonly sampling: boolean,
  ) {
    this.schemes = [...chunkSizes.map((chunkSize) => ({ kind: 'fixed' as const, chunkSize })), ...(cdc ? chunkSizes.map((chunkSize) => ({ kind: 'cdc' as const, chunkSize })) : [])];
    this.total = this.schemes.map(() => newCounts(codecs.length));
    this.perSource = sources.map(() => this.schemes.map(() => newCounts(codecs.length)));
  }

  regionRead(key: number, length: number): void {
    if (!this.sampling) return;
    const n = this.schemes.length;
    this.regions.set(key, { length, zero: new Array<number>(n).fill(0), unique: new Array<number>(n).fill(0), stored: this.schemes.map(() => new Array<number>(this.codecs.length).fill(0)) });
  }

  chunk(src: number, region: number, scheme: number, len: number, zero: boolean): void {
    for (const c of [this.total[scheme]!, this.perSource[src]![scheme]!]) {
      c.logical += len;
      c.chunks++;
      if (zero) {
        c.zero += len;
        c.zeroChunks++;
      }
    }
    const r = this.regions.get(region);
    if (r && zero) r.zero[scheme]! += len;
  }

  uniqueInSource(src: number, scheme: number, len: number): void {
    const c = this.perSource[src]![scheme]!;
    c.unique += len;
    c.uniqueChunks++;
  }

  unique(region: number, scheme: number, len: number): void {
    const c = this.total[scheme]!;
    c.unique += len;
    c.uniqueChunks++;
    const r = this.regions.get(region);
    if (r) r.unique[scheme]! += len;
  }

  stored(region: number, scheme: number, sizes: readonly number[]): void {
    const c = this.total[scheme]!;
    sizes.forEach((s, j) => (c.stored[j]! += s));
    const r = this.regions.get(region);
    if (r) sizes.forEach((s, j) => (r.stored[scheme]![j]! += s));
  }

  report(extra: Pick<EstimateReport, 'bytesRead' | 'durationMs' | 'sample'>): EstimateReport {
    return {
      sources: [...this.sources],
      codecs: this.codecs.map(compressionText),
      ...extra,
      schemes: this.schemes.map((s, i) => this.schemeReport(s, i, extra.sample?.regionsTotal ?? 0)),
    };
  }

  private schemeReport(s: Scheme, i: number, regionsTotal: number): SchemeEstimate {
    const logical = this.sources.reduce((a, src) => a + src.sizeBytes, 0);
    const t = this.total[i]!;
    // Without sampling the scale is 1; with it, measured counts scale to the whole input.
    const scale = ratio(logical, t.logical) || 1;
    const sampled = this.sampling ? [...this.regions.values()] : [];
    const lengths = sampled.map((r) => r.length);
    const iv = (values: number[]) => estimateTotal(values, lengths, logical, regionsTotal);
    const zeroI = this.sampling ? iv(sampled.map((r) => r.zero[i]!)) : undefined;
    const uniqueI = this.sampling ? iv(sampled.map((r) => r.unique[i]!)) : undefined;
    const zero = zeroI?.estimate ?? t.zero;
    const unique = uniqueI?.estimate ?? t.unique;
    const uniqueChunks = Math.round(t.uniqueChunks * scale);
    const chunks = Math.round(t.chunks * scale);
    const cdc = s.kind === 'cdc' ? cdcParams(s.chunkSize) : undefined;
    const codecs = this.codecs.map((c, j): CodecEstimate => {
      const storedI = this.sampling ? iv(sampled.map((r) => r.stored[i]![j]!)) : undefined;
      const stored = storedI?.estimate ?? t.stored[j]!;
      return { codec: compressionText(c), storedBytes: Math.round(stored), compressionRatio: ratio(unique, stored), totalRatio: ratio(logical, stored), ...(storedI ? { interval: storedI } : {}) };
    });
    const maps = cdc
      ? chunks * (DIGEST_BYTES + CDC_OFFSET_BYTES) + this.sources.length * (MAP_HEADER_BYTES + MAP_TRAILER_BYTES)
      : this.sources.reduce((a, src) => a + MAP_HEADER_BYTES + MAP_TRAILER_BYTES + Math.ceil(src.sizeBytes / s.chunkSize) * DIGEST_BYTES, 0);
    return {
      kind: s.kind,
      chunkSize: s.chunkSize,
      minSize: cdc?.min ?? s.chunkSize,
      maxSize: cdc?.max ?? s.chunkSize,
      logicalBytes: logical,
      zeroBytes: Math.round(zero),
      zeroShare: ratio(zero, logical),
      chunks,
      zeroChunks: Math.round(t.zeroChunks * scale),
      uniqueChunks,
      uniqueBytes: Math.round(unique),
      dedupRatio: ratio(logical - zero, unique),
      perSource: this.sources.map((src, k) => this.sourceReport(src, this.perSource[k]![i]!)),
      codecs,
      indexBytes: Math.round(uniqueChunks * (DIGEST_BYTES + INDEX_VALUE_BYTES) * LEVELDB_OVERHEAD),
      pointMapBytes: maps,
      ...(zeroI && uniqueI
        ? { intervals: { zeroBytes: zeroI, uniqueBytes: uniqueI, dedupRatio: dedupInterval(logical, zeroI, uniqueI) } }
        : {}),
    };
  }

  private sourceReport(src: SourceInfo, c: Counts): SourceEstimate {
    const scale = ratio(src.sizeBytes, c.logical) || 1;
    const zero = c.zero * scale;
    const unique = c.unique * scale;
    return { source: src.name, logicalBytes: src.sizeBytes, zeroBytes: Math.round(zero), uniqueBytes: Math.round(unique), dedupRatio: ratio(src.sizeBytes - zero, unique) };
  }
}
