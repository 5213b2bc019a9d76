/**
 * Chunk compression codecs. Library choice by measurement (bench/RESULTS.md): native
 * zstd (zstd-napi, built from its bundled source at install) and native LZ4 (the `lz4`
 * package: liblz4 1.9 built from its bundled source at install; 755 MB/s compression
 * and 4 GB/s decompression here, against 0.5 / 1.2 GB/s for the lz4_flex packages it
 * replaced). LZ4 payloads are a size-prefixed block (u32 LE raw length + one LZ4
 * block), as FORMAT.md says; payloads written by the earlier lz4_flex codecs are the
 * same format.
 *
 * The hot path compresses into and decompresses into memory the caller owns
 * (`compressInto`, `decompressInto`): one compression and one decompression context
 * per thread, no allocation per chunk. `compressChunk` / `decompressChunk` allocate and
 * suit everything else.
 */
import { createRequire } from 'node:module';
import { CODEC_IDS, MIN_COMPRESSION_SAVING_SHIFT, type CodecId, type CodecName } from './constants.js';
import { ChunkvaultError } from './errors.js';

export interface CompressionSetting {
  readonly codec: CodecName;
  /** zstd level (1-19); ignored by the others. */
  readonly level: number;
}

export interface Compressed {
  readonly codec: CodecId;
  readonly payload: Uint8Array;
}

interface ZstdBinding {
  compressBound(size: number): number;
  CCtx: new () => { compress(dst: Uint8Array, src: Uint8Array, level: number): number };
  DCtx: new () => { decompress(dst: Uint8Array, src: Uint8Array): number };
}

interface Lz4Binding {
  compressBound(size: number): number;
  /** LZ4_compress_default into `dst`; 0 when it does not fit. */
  compress(src: Uint8Array, dst: Uint8Array): number;
  /** LZ4_decompress_safe into `dst`; negative on malformed input. */
  uncompress(src: Uint8Array, dst: Uint8Array): number;
}

const require = createRequire(import.meta.url);
const zstd = require('zstd-napi/binding') as ZstdBinding;
const lz4 = require('lz4/build/Release/lz4.node') as Lz4Binding;

let cctx: InstanceType<ZstdBinding['CCtx']> | undefined;
let dctx: InstanceType<ZstdBinding['DCtx']> | undefined;

const LZ4_PREFIX = 4;

/** Bytes `compressInto` may write for a chunk of `rawLength` bytes (any codec). */
export function payloadBound(rawLength: number): number {
  return Math.max(zstd.compressBound(rawLength), LZ4_PREFIX + lz4.compressBound(rawLength), rawLength);
}

/**
 * Compresses `raw` into `out` (at least `payloadBound(raw.length)` bytes) and returns
 * the codec and the payload length. When compression does not save at least 1/32 of
 * the size, the raw bytes are copied into `out` and the codec is none.
 */
export function compressInto(raw: Uint8Array, setting: CompressionSetting, out: Uint8Array): { codec: CodecId; length: number } {
  const limit = raw.length - (raw.length >> MIN_COMPRESSION_SAVING_SHIFT);
  let n = 0;
  if (setting.codec === 'zstd') {
    cctx ??= new zstd.CCtx();
    n = cctx.compress(out, raw, setting.level);
  } else if (setting.codec === 'lz4') {
    const block = lz4.compress(raw, out.subarray(LZ4_PREFIX));
    if (block > 0) {
      new DataView(out.buffer, out.byteOffset, LZ4_PREFIX).setUint32(0, raw.length, true);
      n = LZ4_PREFIX + block;
    }
  }
  if (n > 0 && n < limit) return { codec: CODEC_IDS[setting.codec], length: n };
  out.set(raw);
  return { codec: CODEC_IDS.none, length: raw.length };
}

function corrupt(message: string): ChunkvaultError {
  return new ChunkvaultError('CHUNK_CORRUPT', `decompression failed: ${message}`);
}

/**
 * Decompresses `payload` into `out`, which must be exactly the chunk's raw length;
 * anything else, or a malformed payload, is CHUNK_CORRUPT.
 */
export function decompressInto(codec: CodecId, payload: Uint8Array, out: Uint8Array): void {
  let n: number;
  try {
    if (codec === CODEC_IDS.none) {
      n = payload.length;
      if (n === out.length) out.set(payload);
    } else if (codec === CODEC_IDS.zstd) {
      dctx ??= new zstd.DCtx();
      n = dctx.decompress(out, payload);
    } else if (codec === CODEC_IDS.lz4) {
      if (payload.length < LZ4_PREFIX) throw corrupt('LZ4 payload shorter than its length prefix');
      const declared = new DataView(payload.buffer, payload.byteOffset, LZ4_PREFIX).getUint32(0, true);
      if (declared !== out.length) throw corrupt(`LZ4 payload declares ${declared} bytes, expected ${out.length}`);
      n = lz4.uncompress(payload.subarray(LZ4_PREFIX), out);
      if (n < 0) throw corrupt(`malformed LZ4 block (at byte ${-n})`);
    } else throw new ChunkvaultError('CHUNK_CORRUPT', `unknown codec ${codec}`);
  } catch (err) {
    if (err instanceof ChunkvaultError) throw err;
    throw new ChunkvaultError('CHUNK_CORRUPT', `decompression failed: ${(err as Error).message}`, { cause: err });
  }
  if (n !== out.length) throw new ChunkvaultError('CHUNK_CORRUPT', `decompressed ${n} bytes, expected ${out.length}`);
}

/**
 * Compresses `raw` with `setting`; returns the raw bytes (codec none, same memory)
 * when compression does not save at least 1/32 of the size.
 */
export function compressChunk(raw: Uint8Array, setting: CompressionSetting): Compressed {
  if (setting.codec === 'none') return { codec: CODEC_IDS.none, payload: raw };
  const out = new Uint8Array(payloadBound(raw.length));
  const { codec, length } = compressInto(raw, setting, out);
  if (codec === CODEC_IDS.none) return { codec, payload: raw };
  return { codec, payload: out.slice(0, length) };
}

/** Decompresses a payload; the result must be exactly `rawLength` bytes. */
export function decompressChunk(codec: CodecId, payload: Uint8Array, rawLength: number): Uint8Array {
  if (codec === CODEC_IDS.none) {
    if (payload.length !== rawLength) throw new ChunkvaultError('CHUNK_CORRUPT', `decompressed ${payload.length} bytes, expected ${rawLength}`);
    return payload;
  }
  const out = new Uint8Array(rawLength);
  decompressInto(codec, payload, out);
  return out;
}

/** Parses `zstd`, `zstd:LEVEL`, `lz4`, `none`. */
export function parseCompression(text: string, defaultZstdLevel: number): CompressionSetting {
  const m = /^(zstd|lz4|none)(?::(\d+))?$/.exec(text.trim());
  if (!m) throw new ChunkvaultError('INVALID_ARGUMENT', `invalid compression "${text}": use zstd[:LEVEL], lz4 or none`);
  const codec = m[1] as CodecName;
  if (m[2] !== undefined && codec !== 'zstd') {
    throw new ChunkvaultError('INVALID_ARGUMENT', `compression "${codec}" takes no level`);
  }
  const level = m[2] === undefined ? (codec === 'zstd' ? defaultZstdLevel : 0) : Number(m[2]);
  if (codec === 'zstd' && (level < 1 || level > 19)) {
    throw new ChunkvaultError('INVALID_ARGUMENT', `zstd level ${level} out of range 1-19`);
  }
  return { codec, level };
}
