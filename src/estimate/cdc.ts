/**
 * Content-defined chunking for estimates, FastCDC-style (Xia et al., "FastCDC", USENIX
 * ATC 2016), implemented from the published description:
 *
 * - a gear rolling hash `h = (h << 1) + GEAR[byte]` (32 bits; the table comes from a
 *   fixed-seed PRNG in engine/_worker.ts), so h depends on the last 32 bytes only;
 * - normalized chunking (level 2): between `min` and `avg` a position is a cut when the
 *   top `log2(avg) + 2` bits of h are zero (strict mask), between `avg` and `max` when
 *   the top `log2(avg) - 2` bits are (loose mask); at `max` the chunk is cut anyway;
 * - min = avg / 4, max = avg * 4.
 *
 * The hash rolls over the whole stream (it is not reset at chunk starts), so whether a
 * position matches a mask depends on content only. Workers find the candidate positions
 * of each read region in parallel; `CdcCutter` then picks the cuts in stream order on
 * the main thread (cheap: about four candidates per average chunk).
 */
import { ChunkvaultError } from '../../engine/index.js';
import type { CdcCandidates, CdcMaskBits } from '../../engine/index.js';

export interface CdcParams extends CdcMaskBits {
  readonly avg: number;
  readonly min: number;
  readonly max: number;
}

/** Parameters for an average chunk size (a power of two from 4 KiB to 16 MiB). */
export function cdcParams(avg: number): CdcParams {
  const bits = Math.log2(avg);
  if (!Number.isInteger(bits) || bits < 12 || bits > 24) {
    throw new ChunkvaultError('INVALID_ARGUMENT', `CDC average size ${avg} must be a power of two from 4K to 16M`);
  }
  return { avg, min: avg / 4, max: avg * 4, strictBits: bits + 2, looseBits: bits - 2 };
}

/** Chunks decided by a `push`: ranges of `buf` (which the caller may transfer). */
export interface CdcUnit {
  readonly buf: Uint8Array;
  /** `[offset, length, ...]` of each chunk in `buf`. */
  readonly ranges: Uint32Array;
}

/**
 * Picks cut points in stream order. It keeps the undecided tail (at most `max` bytes)
 * and its candidates; each `push` appends one region and returns every chunk that is
 * now decided, copied into one fresh buffer together with the tail.
 */
export class CdcCutter {
  private tail: Uint8Array = new Uint8Array(0);
  /** Candidate positions relative to the tail start, with strict flags. */
  private cands: number[] = [];
  private strict: number[] = [];

  constructor(readonly params: CdcParams) {}

  /** Appends `region` (the next bytes of the stream) with its candidates. */
  push(region: Uint8Array, c: CdcCandidates): CdcUnit {
    const buf = new Uint8Array(new ArrayBuffer(this.tail.length + region.length));
    buf.set(this.tail, 0);
    buf.set(region, this.tail.length);
    const shift = this.tail.length;
    for (let i = 0; i < c.positions.length; i++) {
      this.cands.push(c.positions[i]! + shift);
      this.strict.push(c.strict[i]!);
    }
    return this.cut(buf, false);
  }

  /** Ends the stream (or a sampled run of regions): the tail becomes the last chunk. */
  finish(): CdcUnit {
    const unit = this.cut(this.tail, true);
    this.tail = new Uint8Array(0);
    this.cands = [];
    this.strict = [];
    return unit;
  }

  private cut(buf: Uint8Array, final: boolean): CdcUnit {
    const { min, avg, max } = this.params;
    const ranges: number[] = [];
    let start = 0;
    let k = 0;
    for (;;) {
      while (k < this.cands.length && this.cands[k]! < start + min) k++;
      let end = -1;
      let j = k;
      for (; j < this.cands.length && this.cands[j]! <= start + max; j++) {
        const p = this.cands[j]!;
        if (p < start + avg ? this.strict[j] === 1 : true) {
          end = p;
          break;
        }
      }
      if (end < 0 && start + max <= buf.length) end = start + max;
      if (end < 0 || end > buf.length) break;
      ranges.push(start, end - start);
      start = end;
      k = j;
    }
    if (final && start < buf.length) {
      ranges.push(start, buf.length - start);
      start = buf.length;
    }
    this.tail = buf.slice(start);
    const rest = this.cands.findIndex((p) => p > start);
    const from = rest < 0 ? this.cands.length : rest;
    this.cands = this.cands.slice(from).map((p) => p - start);
    this.strict = this.strict.slice(from);
    return { buf, ranges: Uint32Array.from(ranges) };
  }
}
