import { randomBytes } from 'node:crypto';
import { createRequire } from 'node:module';
import { describe, expect, it } from 'vitest';
import lz4napi from 'lz4-napi';
import { compress as lz4wasm } from 'lz4-wasm-nodejs';
import {
  compressChunk, compressInto, compressionText, decompressChunk, decompressInto, parseCompression, payloadBound, zstdCompressBound, type CompressionSetting,
} from './codecs.js';
import { CODEC_IDS, DEFAULT_LZ4_ACCELERATION } from './constants.js';
import { isChunkvaultError } from './errors.js';

const CHUNK = 256 * 1024;

/** Half text-like, half random: compressible, but not trivially. */
function sample(len = CHUNK): Uint8Array {
  const out = new Uint8Array(len);
  const words = Buffer.from('chunkvault block dedup container index restore point ');
  for (let i = 0; i < len / 2; i++) out[i] = words[(i * 7) % words.length]!;
  out.set(randomBytes(len - len / 2), len / 2);
  return out;
}

function corruptCode(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (err) {
    return isChunkvaultError(err) ? err.code : `not typed: ${(err as Error).message}`;
  }
  return undefined;
}

const SETTINGS: CompressionSetting[] = [
  { codec: 'zstd', level: 1 },
  { codec: 'zstd', level: 3 },
  { codec: 'lz4', level: 0 },
  { codec: 'lz4', level: 4 },
  { codec: 'lz4', level: 64 },
];

describe('codecs', () => {
  for (const s of SETTINGS) {
    it(`round-trips ${s.codec}:${s.level} into caller memory, at any offset of a shared buffer`, () => {
      const raw = sample();
      const sab = new SharedArrayBuffer(payloadBound(CHUNK) + 4096);
      const out = new Uint8Array(sab, 4096 - 13, payloadBound(CHUNK));
      const { codec, length } = compressInto(raw, s, out);
      expect(codec).toBe(CODEC_IDS[s.codec]);
      expect(length).toBeLessThan(CHUNK * 0.75);
      const back = new Uint8Array(new SharedArrayBuffer(CHUNK + 8), 8, CHUNK);
      decompressInto(codec, out.subarray(0, length), back);
      expect(Buffer.compare(back, raw)).toBe(0);
      const c = compressChunk(raw, s);
      expect(Buffer.compare(decompressChunk(c.codec, c.payload, CHUNK), raw)).toBe(0);
    });
  }

  it('stores incompressible data raw (codec none) and copies it into the output', () => {
    const raw = new Uint8Array(randomBytes(CHUNK));
    for (const s of SETTINGS) {
      const out = new Uint8Array(payloadBound(CHUNK));
      const { codec, length } = compressInto(raw, s, out);
      expect(codec).toBe(CODEC_IDS.none);
      expect(Buffer.compare(out.subarray(0, length), raw)).toBe(0);
      expect(compressChunk(raw, s).payload).toBe(raw);
    }
  });

  it('reads LZ4 payloads written by the lz4_flex codecs of earlier versions', () => {
    const raw = sample();
    for (const payload of [new Uint8Array(lz4napi.compressSync(Buffer.from(raw))), new Uint8Array(lz4wasm(Buffer.from(raw)))]) {
      const back = new Uint8Array(CHUNK);
      decompressInto(CODEC_IDS.lz4, payload, back);
      expect(Buffer.compare(back, raw)).toBe(0);
    }
    // ... and they read ours at any acceleration (a repository stays readable by the previous release).
    for (const level of [0, 4, 1000]) {
      const ours = compressChunk(raw, { codec: 'lz4', level }).payload;
      expect(Buffer.compare(lz4napi.uncompressSync(Buffer.from(ours)), raw)).toBe(0);
    }
  });

  it('reports every malformed payload as CHUNK_CORRUPT', () => {
    const raw = sample();
    const z = compressChunk(raw, { codec: 'zstd', level: 1 }).payload;
    const l = compressChunk(raw, { codec: 'lz4', level: 0 }).payload;
    const out = new Uint8Array(CHUNK);
    const flipped = (p: Uint8Array, at: number) => {
      const c = p.slice();
      c[at] = c[at]! ^ 0xff;
      return c;
    };
    expect(corruptCode(() => decompressInto(CODEC_IDS.zstd, z.subarray(0, z.length - 10), out))).toBe('CHUNK_CORRUPT');
    expect(corruptCode(() => decompressInto(CODEC_IDS.zstd, flipped(z, 0), out))).toBe('CHUNK_CORRUPT');
    expect(corruptCode(() => decompressInto(CODEC_IDS.zstd, z, new Uint8Array(CHUNK - 1)))).toBe('CHUNK_CORRUPT');
    expect(corruptCode(() => decompressInto(CODEC_IDS.zstd, z, new Uint8Array(CHUNK + 1)))).toBe('CHUNK_CORRUPT');
    expect(corruptCode(() => decompressInto(CODEC_IDS.lz4, l.subarray(0, l.length - 10), out))).toBe('CHUNK_CORRUPT');
    expect(corruptCode(() => decompressInto(CODEC_IDS.lz4, l.subarray(0, 3), out))).toBe('CHUNK_CORRUPT');
    expect(corruptCode(() => decompressInto(CODEC_IDS.lz4, flipped(l, 0), out))).toBe('CHUNK_CORRUPT');
    expect(corruptCode(() => decompressInto(CODEC_IDS.lz4, l, new Uint8Array(CHUNK - 1)))).toBe('CHUNK_CORRUPT');
    expect(corruptCode(() => decompressInto(CODEC_IDS.none, raw.subarray(1), out))).toBe('CHUNK_CORRUPT');
    expect(corruptCode(() => decompressInto(7 as never, raw, out))).toBe('CHUNK_CORRUPT');
    expect(corruptCode(() => decompressChunk(CODEC_IDS.none, raw, CHUNK + 1))).toBe('CHUNK_CORRUPT');
  });

  it('parses and prints settings, LZ4 acceleration included', () => {
    expect(parseCompression('lz4', 3)).toEqual({ codec: 'lz4', level: DEFAULT_LZ4_ACCELERATION });
    expect(parseCompression('lz4:1', 3)).toEqual({ codec: 'lz4', level: 1 });
    expect(parseCompression(' zstd ', 3)).toEqual({ codec: 'zstd', level: 3 });
    expect(parseCompression('zstd:19', 3)).toEqual({ codec: 'zstd', level: 19 });
    expect(parseCompression('none', 3)).toEqual({ codec: 'none', level: 0 });
    for (const bad of ['lz4:0', 'lz4:65538', 'zstd:0', 'zstd:20', 'none:1', 'gzip', 'lz4:x']) {
      expect(corruptCode(() => parseCompression(bad, 3)), bad).toBe('INVALID_ARGUMENT');
    }
    for (const text of ['lz4:1', 'lz4:4', 'zstd:3', 'none']) expect(compressionText(parseCompression(text, 3))).toBe(text);
    // Level 0 is what earlier versions stored for LZ4's default acceleration.
    expect(compressionText({ codec: 'lz4', level: 0 })).toBe('lz4:1');
  });

  it('survives random garbage as an LZ4 block (never a crash, never a wrong length)', () => {
    const out = new Uint8Array(CHUNK);
    for (let i = 0; i < 200; i++) {
      const junk = new Uint8Array(randomBytes(4 + (i * 37) % 5000));
      new DataView(junk.buffer).setUint32(0, CHUNK, true);
      expect(corruptCode(() => decompressInto(CODEC_IDS.lz4, junk, out))).toBe('CHUNK_CORRUPT');
    }
  });
});

describe('zstdCompressBound', () => {
  it("equals zstd's own ZSTD_compressBound for every chunk size and the sizes around its 128 KiB bend", () => {
    const binding = createRequire(import.meta.url)('zstd-napi/binding') as { compressBound(n: number): number };
    for (const n of [0, 1, 255, 256, 4096, 131071, 131072, 131073, 65536, 262144, 1 << 20, 4 << 20, (4 << 20) - 1, 1234567]) {
      expect(zstdCompressBound(n)).toBe(binding.compressBound(n));
    }
  });
});
