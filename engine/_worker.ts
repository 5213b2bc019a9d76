/**
 * Worker-thread side of the chunk pipeline (runs inside piscina). Tasks hash,
 * compress and open (check + decompress) chunks. Buffers arrive by transfer and go
 * back by transfer; a codec's output is transferred as is when it owns its whole
 * ArrayBuffer, and copied into a fresh one otherwise (never aliasing a chunk buffer).
 * Failures are returned as `{ error: { code, message } }` because typed errors do not
 * survive structured cloning.
 */
import { move, transferableSymbol, valueSymbol } from 'piscina';
import { compressChunk } from './codecs.js';
import { openInto } from './_worker-open.js';
import { initHashing, sha256, xxh64 } from './hashing.js';
import { isChunkvaultError } from './errors.js';
import type { CodecId, CodecName } from './constants.js';

// Not awaited, and no other top-level await in the worker's modules: Node 20 aborts the
// whole process (V8 "Check failed: (location_) != nullptr" in ExecuteAsyncModule) when a
// worker is terminated while an async module is still evaluating, which a pool closed
// right after start-up does. initHashing's work is synchronous anyway.
void initHashing();

export * from './_worker-prepare.js';
export * from './_worker-open.js';

export interface WorkerError {
  readonly error: { readonly code: string; readonly message: string };
}

function transfer<T extends object>(value: T, buffers: ArrayBufferLike[]): T {
  const unique = [...new Set(buffers)];
  return move({
    get [transferableSymbol]() {
      return unique;
    },
    get [valueSymbol]() {
      return value;
    },
  } as never) as unknown as T;
}

function fail(err: unknown): WorkerError {
  if (isChunkvaultError(err)) return { error: { code: err.code, message: err.message } };
  return { error: { code: 'INTERNAL', message: (err as Error)?.message ?? String(err) } };
}

/** `data` itself when it owns its whole ArrayBuffer (transferable as is), else a copy. */
function owned(data: Uint8Array, aliases?: Uint8Array): Uint8Array {
  const whole = data.byteOffset === 0 && data.buffer.byteLength === data.length;
  if (whole && data.buffer !== aliases?.buffer) return data;
  const out = new Uint8Array(new ArrayBuffer(data.length));
  out.set(data);
  return out;
}

export interface HashTask {
  readonly buf: Uint8Array;
  readonly length: number;
  /** Compress too (saves a round trip when most chunks are expected to be new). */
  readonly compress?: { readonly codec: CodecName; readonly level: number };
}

export interface HashResult {
  readonly buf: Uint8Array;
  readonly digest: Uint8Array;
  readonly checkHash: bigint;
  readonly compressed?: PackResult;
}

export interface PackTask {
  readonly buf: Uint8Array;
  readonly length: number;
  readonly codec: CodecName;
  readonly level: number;
}

export interface PackResult {
  readonly codec: CodecId;
  /** Fresh memory; for codec none, a copy of the raw bytes. */
  readonly payload: Uint8Array;
  readonly payloadHash: bigint;
}

function pack(data: Uint8Array, codec: CodecName, level: number): PackResult {
  const c = compressChunk(data, { codec, level });
  // A raw payload aliases the chunk buffer, which goes back to the caller: copy it.
  const payload = owned(c.payload, data);
  return { codec: c.codec, payload, payloadHash: xxh64(payload) };
}

function hashOne(task: HashTask, buffers: ArrayBufferLike[]): HashResult {
  const data = task.buf.subarray(0, task.length);
  const digest = sha256(data);
  const checkHash = xxh64(data);
  const compressed = task.compress ? pack(data, task.compress.codec, task.compress.level) : undefined;
  buffers.push(task.buf.buffer, digest.buffer);
  if (compressed) buffers.push(compressed.payload.buffer);
  return { buf: task.buf, digest, checkHash, ...(compressed ? { compressed } : {}) };
}

/**
 * SHA-256 + XXH64 of each `buf[0..length)`, and optionally its compressed form.
 * Several chunks per task: one round trip to the worker per batch, not per chunk.
 */
export function hash(tasks: readonly HashTask[]): HashResult[] {
  const buffers: ArrayBufferLike[] = [];
  const results = tasks.map((t) => hashOne(t, buffers));
  return transfer(results, buffers);
}

/** Compresses each `buf[0..length)`. */
export function compress(tasks: readonly PackTask[]): { buf: Uint8Array; packed: PackResult }[] {
  const buffers: ArrayBufferLike[] = [];
  const results = tasks.map((t) => {
    const packed = pack(t.buf.subarray(0, t.length), t.codec, t.level);
    buffers.push(t.buf.buffer, packed.payload.buffer);
    return { buf: t.buf, packed };
  });
  return transfer(results, buffers);
}

export interface OpenTask {
  readonly payload: Uint8Array;
  readonly codec: CodecId;
  readonly rawLength: number;
  readonly payloadHash: bigint | null;
  readonly checkHash: bigint;
  /** When set, SHA-256 of the raw bytes must equal it (verify --read-data). */
  readonly digest: Uint8Array | null;
}

/** Checks and decompresses a stored record; returns the raw bytes in fresh memory. */
export function open(task: OpenTask): { raw: Uint8Array } | WorkerError {
  try {
    const raw = new Uint8Array(task.rawLength);
    openInto(task.payload, task.codec, task.payloadHash, task.checkHash, task.digest, raw);
    return transfer({ raw }, [raw.buffer]);
  } catch (err) {
    return fail(err);
  }
}

// ---- Estimation tasks (`chunkvault estimate`): digests and compressed sizes only, no payloads kept.

export interface CdcMaskBits {
  /** Mask bits used before the average size (harder to match). */
  readonly strictBits: number;
  /** Mask bits used after it (easier to match). */
  readonly looseBits: number;
}

export interface ScanTask {
  readonly buf: Uint8Array;
  readonly length: number;
  /** Per group, `[offset, length, offset, length, ...]` ranges of `buf` to digest. */
  readonly groups: readonly Uint32Array[];
  /** Content-defined chunking: report cut candidates of `buf[0..length)` for each config. */
  readonly cdc?: readonly CdcMaskBits[];
  /** Up to 32 bytes that precede `buf` in the stream (seed the rolling hash), or empty. */
  readonly before?: Uint8Array;
}

export interface ScanGroupResult {
  /** 32 bytes per range; all zero where the range is all zero (not hashed). */
  readonly digests: Uint8Array;
  /** 1 where the range is all zero. */
  readonly zero: Uint8Array;
}

export interface CdcCandidates {
  /** Cut positions (a chunk may end just before `buf[pos]`), ascending, loose matches. */
  readonly positions: Uint32Array;
  /** 1 where the position also matches the strict mask. */
  readonly strict: Uint8Array;
}

export interface ScanResult {
  readonly buf: Uint8Array;
  readonly groups: ScanGroupResult[];
  readonly cdc: CdcCandidates[];
}

const ZERO_BLOCK = new Uint8Array(1 << 20);
const DIGEST_LEN = 32;

function rangeIsZero(data: Uint8Array): boolean {
  for (let at = 0; at < data.length; at += ZERO_BLOCK.length) {
    const part = data.subarray(at, Math.min(data.length, at + ZERO_BLOCK.length));
    if (Buffer.compare(part, ZERO_BLOCK.subarray(0, part.length)) !== 0) return false;
  }
  return true;
}

/**
 * The gear table: 256 pseudo-random 32-bit words from a fixed-seed xorshift32 (never
 * change the seed: cut points, and so estimates, would move). A word whose constant-run
 * fixed point (-g mod 2^32) has its top 12 bits zero is redrawn, so runs of one byte
 * value (zero fill) never match a mask of 12 bits or more.
 */
const GEAR: Uint32Array = (() => {
  const table = new Uint32Array(256);
  let s = 0x9e3779b9;
  const next = () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    return (s >>>= 0);
  };
  for (let i = 0; i < 256; i++) {
    let g = next();
    while (((-g >>> 0) >>> 20) === 0) g = next();
    table[i] = g;
  }
  return table;
})();

/**
 * Gear rolling hash `h = (h << 1) + GEAR[byte]` (32 bits, so it depends on the last 32
 * bytes only); a position matches a mask of `b` bits when the top `b` bits of h are zero.
 */
function cdcCandidates(data: Uint8Array, before: Uint8Array, configs: readonly CdcMaskBits[]): CdcCandidates[] {
  let h = 0;
  for (const b of before) h = ((h << 1) + GEAR[b]!) | 0;
  const minLoose = Math.min(...configs.map((c) => c.looseBits));
  const gate = 32 - minLoose;
  const found: number[][] = configs.map(() => []);
  const strict: number[][] = configs.map(() => []);
  for (let i = 0; i < data.length; i++) {
    h = ((h << 1) + GEAR[data[i]!]!) | 0;
    if (h >>> gate !== 0) continue;
    const u = h >>> 0;
    for (let c = 0; c < configs.length; c++) {
      const cfg = configs[c]!;
      if (u >>> (32 - cfg.looseBits) !== 0) continue;
      found[c]!.push(i + 1);
      strict[c]!.push(u >>> (32 - cfg.strictBits) === 0 ? 1 : 0);
    }
  }
  return configs.map((_, c) => ({ positions: Uint32Array.from(found[c]!), strict: Uint8Array.from(strict[c]!) }));
}

function scanGroup(data: Uint8Array, ranges: Uint32Array): ScanGroupResult {
  const n = ranges.length >> 1;
  const digests = new Uint8Array(n * DIGEST_LEN);
  const zero = new Uint8Array(n);
  for (let k = 0; k < n; k++) {
    const part = data.subarray(ranges[2 * k]!, ranges[2 * k]! + ranges[2 * k + 1]!);
    if (rangeIsZero(part)) zero[k] = 1;
    else digests.set(sha256(part), k * DIGEST_LEN);
  }
  return { digests, zero };
}


/** SHA-256 (or the zero flag) of every range of every group, plus CDC cut candidates. */
export function scan(task: ScanTask): ScanResult {
  const data = task.buf.subarray(0, task.length);
  const groups = task.groups.map((g) => scanGroup(data, g));
  const cdc = task.cdc && task.cdc.length > 0 ? cdcCandidates(data, task.before ?? new Uint8Array(0), task.cdc) : [];
  const buffers: ArrayBufferLike[] = [task.buf.buffer];
  for (const g of groups) buffers.push(g.digests.buffer, g.zero.buffer);
  for (const c of cdc) buffers.push(c.positions.buffer, c.strict.buffer);
  return transfer({ buf: task.buf, groups, cdc }, buffers);
}

export interface PackSizesTask {
  readonly buf: Uint8Array;
  /** `[offset, length, ...]` ranges of `buf`. */
  readonly ranges: Uint32Array;
  readonly codecs: readonly { readonly codec: CodecName; readonly level: number }[];
}

/** Stored payload size of each range under each codec (range-major), as the engine stores it. */
export function packSizes(task: PackSizesTask): { buf: Uint8Array; sizes: Uint32Array } {
  const n = task.ranges.length >> 1;
  const sizes = new Uint32Array(n * task.codecs.length);
  for (let k = 0; k < n; k++) {
    const part = task.buf.subarray(task.ranges[2 * k]!, task.ranges[2 * k]! + task.ranges[2 * k + 1]!);
    task.codecs.forEach((c, j) => (sizes[k * task.codecs.length + j] = compressChunk(part, c).payload.length));
  }
  return transfer({ buf: task.buf, sizes }, [task.buf.buffer, sizes.buffer]);
}
