/**
 * Byte codecs of the container file (FORMAT.md "Container file"): container header,
 * record header, footer entries and trailer. Pure functions, no I/O.
 *
 * Terms: a record is one stored chunk (64-byte header + payload); the footer lists
 * every record of a sealed container; the trailer (last 32 bytes) locates the footer.
 */
import {
  CODEC_IDS,
  CONTAINER_HEADER_BYTES,
  CONTAINER_ID_BYTES,
  CONTAINER_MAGIC,
  DIGEST_BYTES,
  FOOTER_ENTRY_BYTES,
  MAX_CHUNK_SIZE,
  MAX_RECORDS_PER_CONTAINER,
  RECORD_HEADER_BYTES,
  RECORD_MAGIC,
  TRAILER_BYTES,
  TRAILER_MAGIC,
  type CodecId,
} from './constants.js';
import { bytesEqual, readHash64, readU64, view, writeHash64, writeU64 } from './_bytes.js';
import { ChunkvaultError } from './errors.js';

/** What the footer and the index say about one record. */
export interface RecordMeta {
  readonly codec: CodecId;
  readonly rawLength: number;
  readonly storedLength: number;
  /** SHA-256 of the raw bytes (32 bytes). */
  readonly digest: Uint8Array;
  /** XXH64 of the raw bytes. */
  readonly checkHash: bigint;
}

export interface RecordHeader extends RecordMeta {
  /** XXH64 of the stored payload bytes. */
  readonly payloadHash: bigint;
}

export interface FooterEntry extends RecordMeta {
  /** Offset of the record header in the container file. */
  readonly offset: number;
}

export interface Trailer {
  readonly footerOffset: number;
  readonly count: number;
  readonly footerHash: bigint;
}

const VALID_CODECS = new Set<number>(Object.values(CODEC_IDS));

function corrupt(message: string): ChunkvaultError {
  return new ChunkvaultError('CONTAINER_CORRUPT', message);
}

function checkLengths(codec: number, rawLength: number, storedLength: number, where: string): void {
  if (!VALID_CODECS.has(codec)) throw corrupt(`${where}: unknown codec ${codec}`);
  if (rawLength < 1 || rawLength > MAX_CHUNK_SIZE) throw corrupt(`${where}: raw length ${rawLength} out of range`);
  if (storedLength < 1 || storedLength > MAX_CHUNK_SIZE + 65536) {
    throw corrupt(`${where}: stored length ${storedLength} out of range`);
  }
  if (codec === CODEC_IDS.none && storedLength !== rawLength) {
    throw corrupt(`${where}: raw record with stored length ${storedLength} != raw length ${rawLength}`);
  }
}

export function encodeContainerHeader(containerId: Uint8Array): Uint8Array {
  if (containerId.length !== CONTAINER_ID_BYTES) throw corrupt('container id must be 16 bytes');
  const buf = new Uint8Array(CONTAINER_HEADER_BYTES);
  buf.set(CONTAINER_MAGIC, 0);
  view(buf).setUint16(8, 1, true);
  buf.set(containerId, 16);
  return buf;
}

/** Returns the container id stored in the header. */
export function decodeContainerHeader(buf: Uint8Array): Uint8Array {
  if (buf.length < CONTAINER_HEADER_BYTES || !bytesEqual(buf.subarray(0, 8), CONTAINER_MAGIC)) {
    throw corrupt('bad container header magic');
  }
  const version = view(buf).getUint16(8, true);
  if (version !== 1) throw corrupt(`unsupported container version ${version}`);
  return buf.slice(16, 32);
}

export function encodeRecordHeader(h: RecordHeader, target: Uint8Array = new Uint8Array(RECORD_HEADER_BYTES)): Uint8Array {
  const dv = view(target);
  target.set(RECORD_MAGIC, 0);
  dv.setUint8(4, h.codec);
  dv.setUint8(5, 0);
  dv.setUint16(6, 0, true);
  dv.setUint32(8, h.rawLength, true);
  dv.setUint32(12, h.storedLength, true);
  target.set(h.digest, 16);
  writeHash64(dv, 48, h.checkHash);
  writeHash64(dv, 56, h.payloadHash);
  return target;
}

export function decodeRecordHeader(buf: Uint8Array, where = 'record'): RecordHeader {
  if (buf.length < RECORD_HEADER_BYTES || !bytesEqual(buf.subarray(0, 4), RECORD_MAGIC)) {
    throw corrupt(`${where}: bad record magic`);
  }
  const dv = view(buf);
  const codec = dv.getUint8(4) as CodecId;
  const rawLength = dv.getUint32(8, true);
  const storedLength = dv.getUint32(12, true);
  checkLengths(codec, rawLength, storedLength, where);
  return {
    codec,
    rawLength,
    storedLength,
    digest: buf.slice(16, 16 + DIGEST_BYTES),
    checkHash: readHash64(dv, 48),
    payloadHash: readHash64(dv, 56),
  };
}

export function encodeFooter(entries: readonly FooterEntry[]): Uint8Array {
  const buf = new Uint8Array(entries.length * FOOTER_ENTRY_BYTES);
  const dv = view(buf);
  entries.forEach((e, i) => {
    const at = i * FOOTER_ENTRY_BYTES;
    buf.set(e.digest, at);
    writeU64(dv, at + 32, e.offset);
    dv.setUint32(at + 40, e.rawLength, true);
    dv.setUint32(at + 44, e.storedLength, true);
    writeHash64(dv, at + 48, e.checkHash);
    dv.setUint8(at + 56, e.codec);
  });
  return buf;
}

export function decodeFooter(buf: Uint8Array, count: number): FooterEntry[] {
  if (buf.length !== count * FOOTER_ENTRY_BYTES) throw corrupt('footer length does not match record count');
  const dv = view(buf);
  const out: FooterEntry[] = [];
  for (let i = 0; i < count; i++) {
    const at = i * FOOTER_ENTRY_BYTES;
    const codec = dv.getUint8(at + 56) as CodecId;
    const rawLength = dv.getUint32(at + 40, true);
    const storedLength = dv.getUint32(at + 44, true);
    checkLengths(codec, rawLength, storedLength, `footer entry ${i}`);
    out.push({
      digest: buf.slice(at, at + 32),
      offset: readU64(dv, at + 32, 'CONTAINER_CORRUPT', `footer entry ${i} offset`),
      rawLength,
      storedLength,
      checkHash: readHash64(dv, at + 48),
      codec,
    });
  }
  return out;
}

export function encodeTrailer(t: Trailer): Uint8Array {
  const buf = new Uint8Array(TRAILER_BYTES);
  const dv = view(buf);
  buf.set(TRAILER_MAGIC, 0);
  writeU64(dv, 8, t.footerOffset);
  dv.setUint32(16, t.count, true);
  writeHash64(dv, 24, t.footerHash);
  return buf;
}

/** Decodes and checks a trailer against the container's file size. */
export function decodeTrailer(buf: Uint8Array, fileSize: number): Trailer {
  if (buf.length !== TRAILER_BYTES || !bytesEqual(buf.subarray(0, 8), TRAILER_MAGIC)) {
    throw corrupt('bad trailer magic (container not sealed or truncated)');
  }
  const dv = view(buf);
  const footerOffset = readU64(dv, 8, 'CONTAINER_CORRUPT', 'footer offset');
  const count = dv.getUint32(16, true);
  if (count > MAX_RECORDS_PER_CONTAINER) throw corrupt(`record count ${count} exceeds ${MAX_RECORDS_PER_CONTAINER}`);
  if (footerOffset < CONTAINER_HEADER_BYTES || footerOffset + count * FOOTER_ENTRY_BYTES + TRAILER_BYTES !== fileSize) {
    throw corrupt('trailer does not match the file size');
  }
  return { footerOffset, count, footerHash: readHash64(dv, 24) };
}
