import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { crc32c, crc32cWithZeroField } from './_crc32c.js';

describe('crc32c', () => {
  it('matches the published check values (RFC 3720 B.4, iSCSI)', () => {
    expect(crc32c(Buffer.from('123456789', 'latin1'))).toBe(0xe3069283);
    expect(crc32c(new Uint8Array(32))).toBe(0x8a9136aa);
    expect(crc32c(new Uint8Array(32).fill(0xff))).toBe(0x62a8ab43);
    expect(crc32c(Uint8Array.from({ length: 32 }, (_, i) => i))).toBe(0x46dd794e);
    expect(crc32c(Uint8Array.from({ length: 32 }, (_, i) => 31 - i))).toBe(0x113fdb5c);
    expect(crc32c(new Uint8Array(0))).toBe(0);
  });

  it('continues across pieces', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 300 }), fc.nat(), (data, cut) => {
        const at = data.length === 0 ? 0 : cut % data.length;
        expect(crc32c(data.subarray(at), crc32c(data.subarray(0, at)))).toBe(crc32c(data));
      }),
    );
  });

  it('treats the checksum field as zero', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 8, maxLength: 200 }), (data) => {
        const zeroed = Uint8Array.from(data);
        zeroed.fill(0, 4, 8);
        expect(crc32cWithZeroField(data, 4)).toBe(crc32c(zeroed));
      }),
    );
  });
});
