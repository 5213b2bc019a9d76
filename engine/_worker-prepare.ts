/**
 * Worker side of the backup hot path: for sources the workers may read themselves
 * (BlockSource.pread), the read of the task's slots; then zero check, SHA-256 + XXH64,
 * and compression of the chunks of one window slab, in place. Hashing and LZ4 run in one native call per
 * task (native.ts); zstd and none compress slot by slot here. A slab (engine/_window-slab.ts) is shared
 * memory: the main thread reads the disk into its raw area, workers write payloads and
 * per-slot results into its other areas, and nothing is copied, allocated or
 * transferred per chunk. A task returns only a count, or an error as data.
 */
import { compressInto, lz4Acceleration, type CompressionSetting } from './codecs.js';
import { xxh64 } from './hashing.js';
import { isChunkvaultError } from './errors.js';
import { PREPARE_HASH, PREPARE_LZ4, prepareSlots, readSlotsInto, type ReadFailure } from './native.js';
import type { SlabViews } from './_window-slab.js';

export interface PrepareTask {
  readonly slab: SlabViews;
  /** Slot indexes within the window. */
  readonly slots: readonly number[];
  /** Zero check, then SHA-256 + XXH64 of every non-zero slot. */
  readonly hash: boolean;
  /** Compress every non-zero slot into the slab's payload area. */
  readonly compress?: CompressionSetting;
  /** Read the slots first: from `fd`, slot `slots[k]` from disk offset `offsets[k]` (its length is in the slab). */
  readonly read?: { readonly fd: number; readonly offsets: Float64Array };
}

export type PrepareResult =
  | { readonly ok: number }
  | { readonly readFailure: ReadFailure }
  | { readonly error: { readonly code: string; readonly message: string } };

/** zstd or none: compresses one non-zero slot into its payload area. */
function compressSlot(s: SlabViews, i: number, setting: CompressionSetting): void {
  if (s.zero[i] !== 0) return;
  const raw = s.raw.subarray(i * s.chunkSize, i * s.chunkSize + s.length[i]!);
  const out = s.out.subarray(i * s.outStride, (i + 1) * s.outStride);
  const { codec, length } = compressInto(raw, setting, out);
  s.codec[i] = codec;
  s.payloadLength[i] = length;
  s.payloadHash[i] = xxh64(out.subarray(0, length));
}

function run(t: PrepareTask): ReadFailure | undefined {
  const slots = Uint32Array.from(t.slots);
  if (t.read) {
    const failure = readSlotsInto(t.read.fd, t.slab, slots, t.read.offsets);
    if (failure) return failure;
  }
  const lz4 = t.compress?.codec === 'lz4';
  const flags = (t.hash ? PREPARE_HASH : 0) | (lz4 ? PREPARE_LZ4 : 0);
  if (flags !== 0) prepareSlots(t.slab, slots, flags, lz4 ? lz4Acceleration(t.compress!) : 1);
  if (t.compress && !lz4) for (const i of t.slots) compressSlot(t.slab, i, t.compress);
  return undefined;
}

/** Prepares the listed slots of a slab (see PrepareTask); the results are in the slab. */
export function prepare(task: PrepareTask): PrepareResult {
  try {
    const readFailure = run(task);
    if (readFailure) return { readFailure };
    return { ok: task.slots.length };
  } catch (err) {
    if (isChunkvaultError(err)) return { error: { code: err.code, message: err.message } };
    return { error: { code: 'INTERNAL', message: (err as Error)?.message ?? String(err) } };
  }
}
