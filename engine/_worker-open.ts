/**
 * Worker-thread side of the batch read path (restore): checks and decompresses many
 * records per task, in place in shared memory. Terms:
 *
 * - input slab: SharedArrayBuffer holding whole records (header + payload) as read
 *   from containers; the task names each payload by offset and length.
 * - output slab: SharedArrayBuffer receiving raw chunk bytes at the caller's offsets.
 *
 * Nothing is allocated or transferred per chunk: the task carries small typed arrays
 * describing the records, and the reply is `null` (all good) or a short list of
 * failures as data (typed errors do not survive structured cloning). Every record is
 * processed even after a failure, so the caller can report the first one in its own
 * order.
 *
 * Per record: XXH64 of the stored payload == payload hash (before a decompressor sees
 * it), decompression straight into the output, XXH64 of the raw bytes == check hash,
 * optionally SHA-256 == digest; then the raw bytes are copied to any further offsets
 * (the same chunk in several slots is decompressed once).
 */
import { decompressInto } from './codecs.js';
import { sha256, xxh64 } from './hashing.js';
import { bytesEqual } from './_bytes.js';
import { ChunkvaultError, isChunkvaultError } from './errors.js';
import type { CodecId } from './constants.js';

// Hashing is initialised by engine/_worker.ts, which re-exports this module: its
// top-level await completes before piscina runs any task.

/** Numbers per record in `OpenBatchTask.records`. */
export const OPEN_BATCH_FIELDS = 5;

export interface OpenBatchTask {
  /** Input slab (SharedArrayBuffer-backed). */
  readonly input: Uint8Array;
  /** Output slab (SharedArrayBuffer-backed). */
  readonly output: Uint8Array;
  /** Per record: payload offset in `input`, stored length, codec, raw length, offset in `output`. */
  readonly records: Float64Array;
  /** Per record: payload hash, check hash. */
  readonly hashes: BigUint64Array;
  /** 32 bytes per record: SHA-256 to check (verify), or null to skip that check. */
  readonly digests: Uint8Array | null;
  /** Pairs (record index, output offset): further copies of a record's raw bytes. */
  readonly copies: Float64Array;
}

export interface OpenBatchFailure {
  /** Record index within the task. */
  readonly index: number;
  readonly code: string;
  readonly message: string;
}

/**
 * The checks of one stored record, decompressing into `raw` (exactly its raw length):
 * payload hash (when the record has one) before any decompressor sees the bytes, check
 * hash after, SHA-256 when `digest` is given. Damage is CHUNK_CORRUPT.
 */
export function openInto(payload: Uint8Array, codec: CodecId, payloadHash: bigint | null, checkHash: bigint, digest: Uint8Array | null, raw: Uint8Array): void {
  if (payloadHash !== null && xxh64(payload) !== payloadHash) throw corrupt('payload hash mismatch (stored bytes damaged)');
  decompressInto(codec, payload, raw);
  if (xxh64(raw) !== checkHash) throw corrupt('check hash mismatch after decompression');
  if (digest && !bytesEqual(sha256(raw), digest)) throw corrupt('SHA-256 mismatch: chunk content differs from its identity');
}

function corrupt(message: string): ChunkvaultError {
  return new ChunkvaultError('CHUNK_CORRUPT', message);
}

function openOne(task: OpenBatchTask, i: number): void {
  const f = i * OPEN_BATCH_FIELDS;
  const r = task.records;
  const payload = task.input.subarray(r[f]!, r[f]! + r[f + 1]!);
  const raw = task.output.subarray(r[f + 4]!, r[f + 4]! + r[f + 3]!);
  const digest = task.digests ? task.digests.subarray(32 * i, 32 * i + 32) : null;
  openInto(payload, r[f + 2]! as CodecId, task.hashes[2 * i]!, task.hashes[2 * i + 1]!, digest, raw);
}

function failure(index: number, err: unknown): OpenBatchFailure {
  if (isChunkvaultError(err)) return { index, code: err.code, message: err.message };
  return { index, code: 'INTERNAL', message: (err as Error)?.message ?? String(err) };
}

/** Checks and decompresses every record of the task; null when all are good. */
export function openBatch(task: OpenBatchTask): OpenBatchFailure[] | null {
  const n = task.records.length / OPEN_BATCH_FIELDS;
  const failed: OpenBatchFailure[] = [];
  const good = new Uint8Array(n);
  for (let i = 0; i < n; i++) {
    try {
      openOne(task, i);
      good[i] = 1;
    } catch (err) {
      failed.push(failure(i, err));
    }
  }
  const r = task.records;
  for (let k = 0; k < task.copies.length; k += 2) {
    const i = task.copies[k]!;
    if (!good[i]) continue;
    const from = r[i * OPEN_BATCH_FIELDS + 4]!;
    task.output.copyWithin(task.copies[k + 1]!, from, from + r[i * OPEN_BATCH_FIELDS + 3]!);
  }
  return failed.length > 0 ? failed : null;
}
