/**
 * Chunk compression codecs. Library choice by measurement (bench/RESULTS.md): native
 * zstd (zstd-napi, built from its bundled source at install); LZ4 compressed by
 * lz4-wasm-nodejs (1.4x faster, and its output lives in bounded wasm memory instead of
 * native buffers V8 does not account for, which grew RSS past 1 GiB) and decompressed by
 * lz4-napi (1.6x faster); both are lz4_flex and read each other's output. LZ4 payloads are lz4-napi's
 * size-prefixed block (u32 LE raw length + one LZ4 block), as FORMAT.md says.
 */
import { compress as zstdCompress, decompress as zstdDecompress } from 'zstd-napi';
import lz4 from 'lz4-napi';
import { compress as lz4WasmCompress } from 'lz4-wasm-nodejs';
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

function asBuffer(data: Uint8Array): Buffer {
  return Buffer.from(data.buffer, data.byteOffset, data.byteLength);
}

/**
 * Compresses `raw` with `setting`; returns the raw bytes (codec none, same memory)
 * when compression does not save at least 1/32 of the size.
 */
export function compressChunk(raw: Uint8Array, setting: CompressionSetting): Compressed {
  if (setting.codec === 'none') return { codec: CODEC_IDS.none, payload: raw };
  const input = asBuffer(raw);
  const out =
    setting.codec === 'zstd'
      ? zstdCompress(input, { compressionLevel: setting.level })
      : lz4WasmCompress(input);
  const limit = raw.length - (raw.length >> MIN_COMPRESSION_SAVING_SHIFT);
  if (out.length >= limit) return { codec: CODEC_IDS.none, payload: raw };
  return { codec: CODEC_IDS[setting.codec], payload: new Uint8Array(out.buffer, out.byteOffset, out.byteLength) };
}

/** Decompresses a payload; the result must be exactly `rawLength` bytes. */
export function decompressChunk(codec: CodecId, payload: Uint8Array, rawLength: number): Uint8Array {
  let out: Uint8Array;
  try {
    if (codec === CODEC_IDS.none) out = payload;
    else if (codec === CODEC_IDS.zstd) out = zstdDecompress(asBuffer(payload));
    else if (codec === CODEC_IDS.lz4) out = lz4.uncompressSync(asBuffer(payload));
    else throw new ChunkvaultError('CHUNK_CORRUPT', `unknown codec ${codec}`);
  } catch (err) {
    if (err instanceof ChunkvaultError) throw err;
    throw new ChunkvaultError('CHUNK_CORRUPT', `decompression failed: ${(err as Error).message}`, { cause: err });
  }
  if (out.length !== rawLength) {
    throw new ChunkvaultError('CHUNK_CORRUPT', `decompressed ${out.length} bytes, expected ${rawLength}`);
  }
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
