/**
 * The changed-block bitmap of `VDI.list_changed_blocks`: base64 of a bit string with
 * one bit per 64 KiB block of the VDI, most significant bit first, so block i is
 * `byte[i >> 3] & (0x80 >> (i & 7))`.
 *
 * Decoding merges runs of set bits into extents and clips the last block to the
 * disk's end (a disk whose size is not a multiple of 64 KiB ends in a partial block).
 * Bits past the last block (padding of the last byte, or a bitmap computed for a
 * larger size) are ignored; a bitmap with fewer bits than the disk has blocks could
 * hide changes, so it is PROTOCOL_ERROR.
 */
import { ChunkvaultError } from '../../engine/errors.js';
import type { Extent } from '../../engine/source.js';

/** Bytes covered by one bit. */
export const CBT_BLOCK_SIZE = 64 * 1024;

/** Blocks of a disk of `sizeBytes` (the last one may be partial). */
export function cbtBlockCount(sizeBytes: number): number {
  return Math.ceil(sizeBytes / CBT_BLOCK_SIZE);
}

/** Decodes raw bitmap bytes into sorted, merged extents within `[0, sizeBytes)`. */
export function bitmapToExtents(bitmap: Uint8Array, sizeBytes: number): Extent[] {
  const blocks = cbtBlockCount(sizeBytes);
  if (bitmap.byteLength * 8 < blocks) {
    throw new ChunkvaultError('PROTOCOL_ERROR', `changed-block bitmap too short: ${bitmap.byteLength} bytes for ${blocks} blocks of 64 KiB`, {
      details: { bitmapBytes: bitmap.byteLength, blocks, sizeBytes },
    });
  }
  const out: Extent[] = [];
  let runStart = -1;
  for (let i = 0; i <= blocks; i++) {
    // Whole zero bytes are skipped eight blocks at a time: most of a bitmap is clean.
    if (runStart < 0 && (i & 7) === 0 && i + 8 <= blocks && bitmap[i >> 3] === 0) {
      i += 7;
      continue;
    }
    const set = i < blocks && ((bitmap[i >> 3] as number) & (0x80 >> (i & 7))) !== 0;
    if (set && runStart < 0) runStart = i;
    else if (!set && runStart >= 0) {
      const offset = runStart * CBT_BLOCK_SIZE;
      out.push({ offset, length: Math.min(i * CBT_BLOCK_SIZE, sizeBytes) - offset });
      runStart = -1;
    }
  }
  return out;
}

/** Decodes the base64 text XenAPI returns. */
export function decodeChangedBlocks(base64: string, sizeBytes: number): Extent[] {
  if (!/^[A-Za-z0-9+/\s]*={0,2}\s*$/.test(base64)) {
    throw new ChunkvaultError('PROTOCOL_ERROR', 'changed-block bitmap is not base64', { details: { length: base64.length } });
  }
  return bitmapToExtents(Buffer.from(base64, 'base64'), sizeBytes);
}

/** The inverse, for simulators and tests: a bitmap with the blocks of `changed` set. */
export function blocksToBitmap(blocks: Iterable<number>, sizeBytes: number): Buffer {
  const out = Buffer.alloc(Math.ceil(cbtBlockCount(sizeBytes) / 8));
  for (const i of blocks) out[i >> 3] = (out[i >> 3] as number) | (0x80 >> (i & 7));
  return out;
}
