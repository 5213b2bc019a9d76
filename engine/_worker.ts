/**
 * Worker-thread side of the chunk pipeline (runs inside piscina). Tasks hash,
 * compress and open (check + decompress) chunks. Buffers arrive by transfer and go
 * back by transfer; a codec's output is transferred as is when it owns its whole
 * ArrayBuffer, and copied into a fresh one otherwise (never aliasing a chunk buffer).
 * Failures are returned as `{ error: { code, message } }` because typed errors do not
 * survive structured cloning.
 */
import { move, transferableSymbol, valueSymbol } from 'piscina';
import { compressChunk, decompressChunk } from './codecs.js';
import { initHashing, sha256, xxh64 } from './hashing.js';
import { bytesEqual } from './_bytes.js';
import { isChunkvaultError } from './errors.js';
import type { CodecId, CodecName } from './constants.js';

await initHashing();

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
    if (task.payloadHash !== null && xxh64(task.payload) !== task.payloadHash) {
      return { error: { code: 'CHUNK_CORRUPT', message: 'payload hash mismatch (stored bytes damaged)' } };
    }
    const decoded = decompressChunk(task.codec, task.payload, task.rawLength);
    const raw = decoded === task.payload ? decoded : owned(decoded);
    if (xxh64(raw) !== task.checkHash) {
      return { error: { code: 'CHUNK_CORRUPT', message: 'check hash mismatch after decompression' } };
    }
    if (task.digest && !bytesEqual(sha256(raw), task.digest)) {
      return { error: { code: 'CHUNK_CORRUPT', message: 'SHA-256 mismatch: chunk content differs from its identity' } };
    }
    return transfer({ raw }, [raw.buffer]);
  } catch (err) {
    return fail(err);
  }
}
