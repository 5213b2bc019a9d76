/**
 * The compression libraries under test behind one shape, so every library sees the
 * same chunks and the same "store raw unless it saves 1/32" rule as the engine.
 * `zstd-napi` is its shared `compress` (which resets the parameters on every call);
 * `zstd-napi reused` keeps one Compressor per level. The engine itself calls one
 * compression context per thread into caller memory (engine/codecs.ts), and LZ4 from
 * its own addon (engine/native.ts) at an acceleration the `lz4` package cannot set.
 */
import { createRequire } from 'node:module';
import lz4 from 'lz4-napi';
import { decompressChunk } from '../engine/codecs.js';
import { CODEC_IDS } from '../engine/constants.js';
import lz4wasm from 'lz4-wasm-nodejs';
import { lz4CompressPayload, lz4PayloadBound } from '../engine/native.js';
import { Compressor, compress as zstdCompress, decompress as zstdDecompress } from 'zstd-napi';

/** zstd-codec ships no types; this is the part of its API we call. */
interface ZstdCodecSimple {
  compress(data: Uint8Array, level: number): Uint8Array | null;
  decompress(data: Uint8Array): Uint8Array | null;
}
interface ZstdCodecModule {
  ZstdCodec: { run(cb: (zstd: { Simple: new () => ZstdCodecSimple }) => void): void };
}

export interface Codec {
  readonly name: string;
  /** 'native' (N-API addon) or 'wasm'. */
  readonly kind: 'native' | 'wasm';
  /** The other implementation of the same format and level, for the "vs peer" column. */
  readonly peer?: string;
  compress(raw: Buffer): Uint8Array;
  decompress(packed: Uint8Array): Uint8Array;
}

/** Same rule as engine/constants.ts MIN_COMPRESSION_SAVING_SHIFT: must save >= 1/32. */
export function storedSize(rawLength: number, packedLength: number): number {
  return packedLength < rawLength - (rawLength >> 5) ? packedLength : rawLength;
}

function asBuffer(data: Uint8Array): Buffer {
  return Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, data.byteLength);
}

async function loadZstdCodec(): Promise<ZstdCodecSimple> {
  const require = createRequire(import.meta.url);
  const mod = require('zstd-codec') as ZstdCodecModule;
  return new Promise((resolve) => mod.ZstdCodec.run((zstd) => resolve(new zstd.Simple())));
}

function zstdNapi(level: number): Codec {
  const params = { compressionLevel: level };
  return {
    name: `zstd-napi -${level}`,
    kind: 'native',
    peer: level <= 3 ? `zstd-codec -${level}` : undefined,
    compress: (raw) => zstdCompress(raw, params),
    decompress: (packed) => zstdDecompress(asBuffer(packed)),
  };
}

function zstdNapiReused(level: number): Codec {
  const c = new Compressor();
  c.setParameters({ compressionLevel: level });
  return {
    name: `zstd-napi -${level} reused`,
    kind: 'native',
    peer: `zstd-napi -${level}`,
    compress: (raw) => c.compress(raw),
    decompress: (packed) => zstdDecompress(asBuffer(packed)),
  };
}

function zstdWasm(simple: ZstdCodecSimple, level: number): Codec {
  const fail = (what: string): never => {
    throw new Error(`zstd-codec ${what} failed`);
  };
  return {
    name: `zstd-codec -${level}`,
    kind: 'wasm',
    compress: (raw) => simple.compress(raw, level) ?? fail('compress'),
    decompress: (packed) => simple.decompress(packed) ?? fail('decompress'),
  };
}

/** Both LZ4 libraries wrap lz4_flex's block format with a 4-byte size prefix. */
const lz4Native: Codec = {
  name: 'lz4-napi',
  kind: 'native',
  peer: 'lz4-wasm',
  compress: (raw) => lz4.compressSync(raw),
  decompress: (packed) => lz4.uncompressSync(packed),
};

const lz4Wasm: Codec = {
  name: 'lz4-wasm',
  kind: 'wasm',
  compress: (raw) => lz4wasm.compress(raw),
  decompress: (packed) => lz4wasm.decompress(packed),
};

interface Liblz4 {
  compressBound(n: number): number;
  /** LZ4_compress_default into `dst`; 0 when it does not fit. */
  compress(src: Uint8Array, dst: Uint8Array): number;
}
/** The `lz4` package's own binding (also bench/_prepare.ts's "before" path). */
export const liblz4 = createRequire(import.meta.url)('lz4/build/Release/lz4.node') as Liblz4;

/** A size-prefixed LZ4 payload, decompressed by the engine's path. */
function decompressLz4Payload(packed: Uint8Array): Uint8Array {
  return decompressChunk(CODEC_IDS.lz4, packed, new DataView(packed.buffer, packed.byteOffset, 4).getUint32(0, true));
}

/**
 * liblz4 through the `lz4` package's binding (LZ4_compress_default), the card's LZ4 and
 * the engine's until its own addon replaced it: the same size-prefixed block,
 * decompressed by the engine's path.
 */
const lz4Package: Codec = {
  name: 'liblz4 (lz4 package)',
  kind: 'native',
  peer: 'lz4-wasm',
  compress: (raw) => {
    const out = new Uint8Array(4 + liblz4.compressBound(raw.length));
    const n = liblz4.compress(raw, out.subarray(4));
    new DataView(out.buffer).setUint32(0, raw.length, true);
    return out.subarray(0, 4 + n);
  },
  decompress: decompressLz4Payload,
};

/** The engine's LZ4 (engine/native.ts: the same liblz4 source, LZ4_compress_fast at `acceleration`). */
function lz4Engine(acceleration: number): Codec {
  return {
    name: `liblz4 engine addon, accel ${acceleration}`,
    kind: 'native',
    peer: 'liblz4 (lz4 package)',
    compress: (raw) => {
      const out = new Uint8Array(lz4PayloadBound(raw.length));
      return out.subarray(0, lz4CompressPayload(raw, out, acceleration));
    },
    decompress: decompressLz4Payload,
  };
}

/** Every codec of the micro benchmark, in table order. */
export async function loadCodecs(): Promise<Codec[]> {
  const wasmZstd = await loadZstdCodec();
  return [
    zstdNapi(1),
    zstdNapiReused(1),
    zstdNapi(3),
    zstdNapi(6),
    zstdWasm(wasmZstd, 1),
    zstdWasm(wasmZstd, 3),
    lz4Engine(1),
    lz4Engine(4),
    lz4Package,
    lz4Native,
    lz4Wasm,
  ];
}

export { lz4, zstdCompress };
