/**
 * The worker's per-task work on one window slab, the way the engine does it now (one
 * native call: zero check, SHA-256, XXH64, LZ4 at an acceleration, payload XXH64) and
 * the way it did before (the same steps slot by slot from JavaScript: node:crypto
 * SHA-256, xxhash-addon XXH64, the `lz4` package's LZ4_compress_default). Both fill
 * the same slab, so the rows compare like with like; the results must agree byte for
 * byte where the settings are the same (the micro table marks a mismatch FAILED).
 */
import { isAllZero } from '../engine/_bytes.js';
import { CODEC_IDS } from '../engine/constants.js';
import { initHashing, sha256Into, xxh64 } from '../engine/hashing.js';
import { PREPARE_HASH, PREPARE_LZ4, prepareSlots } from '../engine/native.js';
import { SlabPool, type SlabViews } from '../engine/_window-slab.js';
import { liblz4, storedSize } from './_codecs.js';

export interface PrepareVariant {
  readonly name: string;
  readonly run: (slab: SlabViews, slots: Uint32Array) => void;
}

/** The engine's JavaScript path before the addon: slot by slot, LZ4 at acceleration 1. */
function jsPrepare(s: SlabViews, slots: Uint32Array): void {
  for (const i of slots) {
    const raw = s.raw.subarray(i * s.chunkSize, i * s.chunkSize + s.length[i]!);
    if (isAllZero(raw)) {
      s.zero[i] = 1;
      continue;
    }
    s.zero[i] = 0;
    sha256Into(raw, s.digest.subarray(i * 32, i * 32 + 32));
    s.check[i] = xxh64(raw);
    const out = s.out.subarray(i * s.outStride, (i + 1) * s.outStride);
    const block = liblz4.compress(raw, out.subarray(4));
    if (block > 0 && storedSize(raw.length, 4 + block) < raw.length) {
      new DataView(out.buffer, out.byteOffset, 4).setUint32(0, raw.length, true);
      s.codec[i] = CODEC_IDS.lz4;
      s.payloadLength[i] = 4 + block;
    } else {
      out.set(raw);
      s.codec[i] = CODEC_IDS.none;
      s.payloadLength[i] = raw.length;
    }
    s.payloadHash[i] = xxh64(out.subarray(0, s.payloadLength[i]));
  }
}

export const PREPARE_VARIANTS: readonly PrepareVariant[] = [
  { name: 'JS slot by slot, lz4 package (before)', run: jsPrepare },
  { name: 'native prepareSlots, lz4 accel 1', run: (s, slots) => prepareSlots(s, slots, PREPARE_HASH | PREPARE_LZ4, 1) },
  { name: 'native prepareSlots, lz4 accel 4', run: (s, slots) => prepareSlots(s, slots, PREPARE_HASH | PREPARE_LZ4, 4) },
  { name: 'native prepareSlots, hash only', run: (s, slots) => prepareSlots(s, slots, PREPARE_HASH, 1) },
];

export interface PrepareBench {
  readonly slab: SlabViews;
  readonly slots: Uint32Array;
  /** Raw bytes of the slab's slots. */
  readonly bytes: number;
  /** Stored payload bytes after `variant` ran (0 for hash only). */
  stored(): number;
  dispose(): void;
}

/** One slab holding `data` in `chunkSize` slots (the last one may be short). */
export async function prepareBench(data: Uint8Array, chunkSize: number): Promise<PrepareBench> {
  await initHashing();
  const count = Math.ceil(data.length / chunkSize);
  const pool = new SlabPool(1, count, chunkSize);
  const slab = await pool.acquire();
  slab.raw.set(data);
  for (let i = 0; i < count; i++) slab.length[i] = Math.min(chunkSize, data.length - i * chunkSize);
  const slots = Uint32Array.from({ length: count }, (_, i) => i);
  return {
    slab,
    slots,
    bytes: data.length,
    stored: () => slots.reduce((n, i) => n + (slab.zero[i] ? 0 : slab.payloadLength[i]!), 0),
    dispose: () => pool.dispose(),
  };
}

/** Runs `variant` on cleared result areas; a snapshot of the per-slot results, to check that two variants agree. */
export function slabResults(b: PrepareBench, variant: PrepareVariant, withPayload: boolean): Buffer {
  const s = b.slab;
  for (const a of [s.zero, s.digest, s.payloadLength, s.codec]) a.fill(0);
  s.check.fill(0n);
  s.payloadHash.fill(0n);
  variant.run(s, b.slots);
  const parts: Uint8Array[] = [s.zero.slice(0, b.slots.length), s.digest.slice(0, b.slots.length * 32)];
  parts.push(new Uint8Array(s.check.slice(0, b.slots.length).buffer));
  if (withPayload) {
    parts.push(new Uint8Array(s.payloadHash.slice(0, b.slots.length).buffer));
    parts.push(new Uint8Array(s.payloadLength.slice(0, b.slots.length).buffer), s.codec.slice(0, b.slots.length));
  }
  return Buffer.concat(parts);
}
