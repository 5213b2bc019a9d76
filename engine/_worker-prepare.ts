/**
 * Worker side of the backup hot path: zero check, SHA-256 + XXH64, and compression of
 * the chunks of one window slab, in place. A slab (engine/_window-slab.ts) is shared
 * memory: the main thread reads the disk into its raw area, workers write payloads and
 * per-slot results into its other areas, and nothing is copied, allocated or
 * transferred per chunk. A task returns only a count, or an error as data.
 */
import { compressInto, type CompressionSetting } from './codecs.js';
import { sha256Into, xxh64 } from './hashing.js';
import { isAllZero } from './_bytes.js';
import { isChunkvaultError } from './errors.js';
import type { SlabViews } from './_window-slab.js';

export interface PrepareTask {
  readonly slab: SlabViews;
  /** Slot indexes within the window. */
  readonly slots: readonly number[];
  /** Zero check, then SHA-256 + XXH64 of every non-zero slot. */
  readonly hash: boolean;
  /** Compress every non-zero slot into the slab's payload area. */
  readonly compress?: CompressionSetting;
}

export type PrepareResult = { readonly ok: number } | { readonly error: { readonly code: string; readonly message: string } };

function prepareSlot(t: PrepareTask, i: number): void {
  const s = t.slab;
  const raw = s.raw.subarray(i * s.chunkSize, i * s.chunkSize + s.length[i]!);
  if (t.hash) {
    if (isAllZero(raw)) {
      s.zero[i] = 1;
      return;
    }
    s.zero[i] = 0;
    sha256Into(raw, s.digest.subarray(i * 32, i * 32 + 32));
    s.check[i] = xxh64(raw);
  }
  if (t.compress && s.zero[i] === 0) {
    const out = s.out.subarray(i * s.outStride, (i + 1) * s.outStride);
    const { codec, length } = compressInto(raw, t.compress, out);
    s.codec[i] = codec;
    s.payloadLength[i] = length;
    s.payloadHash[i] = xxh64(out.subarray(0, length));
  }
}

/** Prepares the listed slots of a slab (see PrepareTask); the results are in the slab. */
export function prepare(task: PrepareTask): PrepareResult {
  try {
    for (const i of task.slots) prepareSlot(task, i);
    return { ok: task.slots.length };
  } catch (err) {
    if (isChunkvaultError(err)) return { error: { code: err.code, message: err.message } };
    return { error: { code: 'INTERNAL', message: (err as Error)?.message ?? String(err) } };
  }
}
