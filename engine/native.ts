/**
 * The native hot path (engine/native/chunkvault_native.c, built by `npm ci`): one call
 * per worker task does the zero check, SHA-256, XXH64 and LZ4 of a slab's slots, and
 * LZ4 takes an acceleration setting (LZ4_compress_fast), which the `lz4` package's
 * binding does not offer. bench/RESULTS.md "Native prepare and LZ4 acceleration" has
 * the measurements that justify it.
 *
 * The addon is loaded from the package's engine/native/build folder, found relative to
 * this module both in the sources (engine/) and in the build (dist/engine/).
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { CODEC_IDS, MIN_COMPRESSION_SAVING_SHIFT } from './constants.js';
import { ChunkvaultError } from './errors.js';
import type { SlabViews } from './_window-slab.js';

interface NativeBinding {
  prepareSlots(
    raw: Uint8Array, out: Uint8Array, digest: Uint8Array, check: BigUint64Array, payloadHash: BigUint64Array,
    length: Uint32Array, payloadLength: Uint32Array, zero: Uint8Array, codec: Uint8Array, slots: Uint32Array,
    chunkSize: number, outStride: number, flags: number, acceleration: number, minSavingShift: number,
    lz4Codec: number, noneCodec: number,
  ): number;
  lz4Compress(src: Uint8Array, dst: Uint8Array, acceleration: number): number;
  lz4Decompress(block: Uint8Array, dst: Uint8Array): number;
  lz4Bound(n: number): number;
  adviseHugePages(view: Uint8Array): number;
  readSlots(fd: number, raw: Uint8Array, chunkSize: number, slots: Uint32Array, offsets: Float64Array, length: Uint32Array, status: Float64Array): number;
  adviseWillNeed(fd: number, offset: number, length: number): void;
}

const ADDON = 'native/build/Release/chunkvault_native.node';

function load(): NativeBinding {
  const candidates = [new URL(`./${ADDON}`, import.meta.url), new URL(`../../engine/${ADDON}`, import.meta.url)];
  const found = candidates.find((u) => existsSync(u));
  if (!found) {
    throw new ChunkvaultError('INTERNAL', `the native addon is not built (${ADDON}): run npm ci, or npm run build:native`);
  }
  return createRequire(import.meta.url)(fileURLToPath(found)) as NativeBinding;
}

const native = load();

/** Flags of `prepareSlots`. */
export const PREPARE_HASH = 1;
export const PREPARE_LZ4 = 2;

/**
 * For every listed slot of `slab`: with PREPARE_HASH, the zero flag and, for non-zero
 * slots, SHA-256 and XXH64; with PREPARE_LZ4, the payload of every non-zero slot (LZ4
 * at `acceleration`, or the raw bytes when that saves less than 1/32), its codec, length
 * and XXH64. The results land in the slab; nothing is allocated per chunk.
 */
export function prepareSlots(slab: SlabViews, slots: Uint32Array, flags: number, acceleration: number): void {
  native.prepareSlots(
    slab.raw, slab.out, slab.digest, slab.check, slab.payloadHash, slab.length, slab.payloadLength, slab.zero,
    slab.codec, slots, slab.chunkSize, slab.outStride, flags, acceleration, MIN_COMPRESSION_SAVING_SHIFT,
    CODEC_IDS.lz4, CODEC_IDS.none,
  );
}

/** A failed `readSlotsInto`: the errno (0 when the file ended early) and the disk offset of the read. */
export interface ReadFailure {
  readonly errno: number;
  readonly offset: number;
}

/**
 * Reads the listed slots of `slab` from descriptor `fd` (pread; slot `slots[k]`, of
 * `slab.length[slot]` bytes, from disk offset `offsets[k]`), adjacent slots as one
 * read. Returns the failure, or undefined when every byte arrived.
 */
export function readSlotsInto(fd: number, slab: SlabViews, slots: Uint32Array, offsets: Float64Array): ReadFailure | undefined {
  const status = new Float64Array(2);
  if (native.readSlots(fd, slab.raw, slab.chunkSize, slots, offsets, slab.length, status) >= 0) return undefined;
  return { errno: status[0]!, offset: status[1]! };
}

/** Starts the kernel's read-ahead of `[offset, offset + length)` of `fd` (advisory). */
export function adviseWillNeed(fd: number, offset: number, length: number): void {
  native.adviseWillNeed(fd, offset, length);
}

/** Bytes an LZ4 payload (length prefix + block) of `n` raw bytes may take. */
export function lz4PayloadBound(n: number): number {
  return native.lz4Bound(n);
}

/** LZ4 payload of `src` into `dst`; its length, or 0 when it does not fit. */
export function lz4CompressPayload(src: Uint8Array, dst: Uint8Array, acceleration: number): number {
  return native.lz4Compress(src, dst, acceleration);
}

/** Decompresses one LZ4 block into `dst`; the bytes written, or -1 for a malformed block. */
export function lz4DecompressBlock(block: Uint8Array, dst: Uint8Array): number {
  return native.lz4Decompress(block, dst);
}

/**
 * Asks for transparent huge pages behind the whole 2 MiB pages of `view` (Linux
 * madvise MADV_HUGEPAGE; the bytes advised, 0 where unavailable). For large long-lived
 * buffers: their first touch then faults once per 2 MiB instead of once per 4 KiB.
 */
export function adviseHugePages(view: Uint8Array): number {
  return native.adviseHugePages(view);
}
