/**
 * Chunk compression codecs. Library choice by measurement (bench/RESULTS.md): native
 * zstd (zstd-napi, built from its bundled source at install) and native LZ4 (liblz4
 * 1.9 from the `lz4` package's bundled source, compiled into our own addon,
 * engine/native.ts, which adds LZ4_compress_fast's acceleration; the lz4_flex packages
 * it replaced ran at 0.5 / 1.2 GB/s). LZ4 payloads are a size-prefixed block (u32 LE
 * raw length + one LZ4 block), as FORMAT.md says, whatever the acceleration.
 *
 * A setting's `level` is the zstd level, or for LZ4 the acceleration (1 is LZ4's
 * default; 0, written by earlier versions, means 1).
 *
 * The hot path compresses into and decompresses into memory the caller owns
 * (`compressInto`, `decompressInto`): one compression and one decompression context
 * per thread, no allocation per chunk. `compressChunk` / `decompressChunk` allocate and
 * suit everything else.
 */
import { createRequire } from 'node:module';
import {
  CODEC_IDS, DEFAULT_LZ4_ACCELERATION, MAX_LZ4_ACCELERATION, MIN_COMPRESSION_SAVING_SHIFT, type CodecId, type CodecName,
} from './constants.js';
import { ChunkvaultError } from './errors.js';
import { lz4CompressPayload, lz4DecompressBlock, lz4PayloadBound } from './native.js';

export interface CompressionSetting {
  readonly codec: CodecName;
  /** zstd level (1-19); LZ4 acceleration (1-65537; 0 means 1); ignored by none. */
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

let zstdBinding: ZstdBinding | undefined;

/** zstd-napi, loaded on first use: a process that meets no zstd payload never loads it (about 20 ms of start-up per thread). */
function zstd(): ZstdBinding {
  zstdBinding ??= createRequire(import.meta.url)('zstd-napi/binding') as ZstdBinding;
  return zstdBinding;
}

/** ZSTD_COMPRESSBOUND from zstd.h (stable since v1.4): the most a one-shot compression of `n` bytes writes. */
export function zstdCompressBound(n: number): number {
  return n + Math.floor(n / 256) + (n < 128 * 1024 ? Math.floor((128 * 1024 - n) / 2048) : 0);
}

let cctx: InstanceType<ZstdBinding['CCtx']> | undefined;
let dctx: InstanceType<ZstdBinding['DCtx']> | undefined;

const LZ4_PREFIX = 4;

/** Bytes `compressInto` may write for a chunk of `rawLength` bytes (any codec). */
export function payloadBound(rawLength: number): number {
  return Math.max(zstdCompressBound(rawLength), lz4PayloadBound(rawLength), rawLength);
}

/** The LZ4 acceleration of a setting (level 0, from earlier versions, is 1). */
export function lz4Acceleration(setting: CompressionSetting): number {
  return Math.max(1, setting.level);
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
    cctx ??= new (zstd().CCtx)();
    n = cctx.compress(out, raw, setting.level);
  } else if (setting.codec === 'lz4') {
    n = lz4CompressPayload(raw, out, lz4Acceleration(setting));
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
      dctx ??= new (zstd().DCtx)();
      n = dctx.decompress(out, payload);
    } else if (codec === CODEC_IDS.lz4) {
      if (payload.length < LZ4_PREFIX) throw corrupt('LZ4 payload shorter than its length prefix');
      const declared = new DataView(payload.buffer, payload.byteOffset, LZ4_PREFIX).getUint32(0, true);
      if (declared !== out.length) throw corrupt(`LZ4 payload declares ${declared} bytes, expected ${out.length}`);
      n = lz4DecompressBlock(payload.subarray(LZ4_PREFIX), out);
      if (n < 0) throw corrupt('malformed LZ4 block');
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

/**
 * Parses `zstd`, `zstd:LEVEL`, `lz4`, `lz4:ACCELERATION`, `none`. Bare `lz4` is the
 * default acceleration (DEFAULT_LZ4_ACCELERATION).
 */
export function parseCompression(text: string, defaultZstdLevel: number): CompressionSetting {
  const m = /^(zstd|lz4|none)(?::(\d+))?$/.exec(text.trim());
  if (!m) {
    throw new ChunkvaultError('INVALID_ARGUMENT', `invalid compression "${text}": use zstd[:LEVEL], lz4[:ACCELERATION] or none`);
  }
  const codec = m[1] as CodecName;
  if (m[2] !== undefined && codec === 'none') throw new ChunkvaultError('INVALID_ARGUMENT', 'compression "none" takes no level');
  const given = m[2] === undefined ? undefined : Number(m[2]);
  if (codec === 'none') return { codec, level: 0 };
  if (codec === 'lz4') {
    const level = given ?? DEFAULT_LZ4_ACCELERATION;
    if (level < 1 || level > MAX_LZ4_ACCELERATION) {
      throw new ChunkvaultError('INVALID_ARGUMENT', `lz4 acceleration ${level} out of range 1-${MAX_LZ4_ACCELERATION}`);
    }
    return { codec, level };
  }
  const level = given ?? defaultZstdLevel;
  if (level < 1 || level > 19) throw new ChunkvaultError('INVALID_ARGUMENT', `zstd level ${level} out of range 1-19`);
  return { codec, level };
}

/** The text `parseCompression` reads back: `zstd:3`, `lz4:4`, `none`. */
export function compressionText(setting: CompressionSetting): string {
  if (setting.codec === 'none') return 'none';
  return `${setting.codec}:${setting.codec === 'lz4' ? lz4Acceleration(setting) : setting.level}`;
}
