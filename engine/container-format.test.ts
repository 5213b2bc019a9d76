import fc from 'fast-check';
import { beforeAll, describe, expect, it } from 'vitest';
import {
  decodeContainerHeader,
  decodeFooter,
  decodeRecordHeader,
  decodeTrailer,
  encodeContainerHeader,
  encodeFooter,
  encodeRecordHeader,
  encodeTrailer,
  type FooterEntry,
  type RecordHeader,
} from './container-format.js';
import { decodeLocation, encodeLocation } from './chunk-index.js';
import { initHashing } from './hashing.js';
import { isChunkvaultError } from './errors.js';
import type { CodecId } from './constants.js';

beforeAll(initHashing);

const u64 = fc.bigInt({ min: 0n, max: (1n << 64n) - 1n });
const digest = fc.uint8Array({ minLength: 32, maxLength: 32 });
const lengths = fc
  .tuple(fc.constantFrom<CodecId>(0, 1, 2), fc.integer({ min: 1, max: 4 * 1024 * 1024 }), fc.integer({ min: 1, max: 4 * 1024 * 1024 }))
  .map(([codec, raw, stored]) => ({ codec, rawLength: raw, storedLength: codec === 0 ? raw : stored }));
const recordHeader: fc.Arbitrary<RecordHeader> = fc
  .tuple(lengths, digest, u64, u64)
  .map(([l, d, c, p]) => ({ ...l, digest: d, checkHash: c, payloadHash: p }));
const footerEntry: fc.Arbitrary<FooterEntry> = fc
  .tuple(lengths, digest, u64, fc.integer({ min: 32, max: Number.MAX_SAFE_INTEGER }))
  .map(([l, d, c, offset]) => ({ ...l, digest: d, checkHash: c, offset }));

function expectCode(fn: () => unknown, code: string): void {
  try {
    fn();
  } catch (err) {
    expect(isChunkvaultError(err) && err.code).toBe(code);
    return;
  }
  throw new Error('expected an error');
}

describe('container codecs', () => {
  it('round-trips record headers', () => {
    fc.assert(fc.property(recordHeader, (h) => {
        expect(decodeRecordHeader(encodeRecordHeader(h))).toEqual(h);
      }));
  });

  it('round-trips footers', () => {
    fc.assert(
      fc.property(fc.array(footerEntry, { maxLength: 50 }), (entries) => {
        expect(decodeFooter(encodeFooter(entries), entries.length)).toEqual(entries);
      }),
    );
  });

  it('round-trips trailers and checks the file size', () => {
    fc.assert(
      fc.property(fc.integer({ min: 32, max: 1e12 }), fc.integer({ min: 0, max: 65536 }), u64, (footerOffset, count, footerHash) => {
        const size = footerOffset + count * 64 + 32;
        expect(decodeTrailer(encodeTrailer({ footerOffset, count, footerHash }), size)).toEqual({ footerOffset, count, footerHash });
        expectCode(() => decodeTrailer(encodeTrailer({ footerOffset, count, footerHash }), size + 1), 'CONTAINER_CORRUPT');
      }),
    );
  });

  it('round-trips container headers', () => {
    fc.assert(fc.property(fc.uint8Array({ minLength: 16, maxLength: 16 }), (id) => {
        expect(decodeContainerHeader(encodeContainerHeader(id))).toEqual(id);
      }));
  });

  it('round-trips index locations', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 16, maxLength: 16 }), footerEntry, (id, e) => {
        const loc = { containerId: Buffer.from(id).toString('hex'), offset: e.offset, rawLength: e.rawLength, storedLength: e.storedLength, checkHash: e.checkHash, codec: e.codec };
        expect(decodeLocation(encodeLocation(loc))).toEqual(loc);
      }),
    );
  });

  it('rejects damaged headers with CONTAINER_CORRUPT, never a crash', () => {
    fc.assert(
      fc.property(recordHeader, fc.integer({ min: 0, max: 15 }), fc.integer({ min: 1, max: 255 }), (h, at, xor) => {
        const buf = encodeRecordHeader(h);
        buf[at]! ^= xor;
        try {
          decodeRecordHeader(buf);
        } catch (err) {
          expect(isChunkvaultError(err, 'CONTAINER_CORRUPT')).toBe(true);
        }
      }),
    );
    expectCode(() => decodeRecordHeader(new Uint8Array(10)), 'CONTAINER_CORRUPT');
    expectCode(() => decodeContainerHeader(new Uint8Array(32)), 'CONTAINER_CORRUPT');
    expectCode(() => decodeTrailer(new Uint8Array(32), 64), 'CONTAINER_CORRUPT');
    expectCode(() => decodeFooter(new Uint8Array(63), 1), 'CONTAINER_CORRUPT');
  });
});
