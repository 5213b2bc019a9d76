/**
 * Little-endian integer helpers for the on-disk structures (FORMAT.md "Integers").
 * u64 fields pass through JavaScript numbers, so values above 2^53-1 are rejected.
 */
import { ChunkvaultError, type ErrorCode } from './errors.js';

export function view(buf: Uint8Array): DataView {
  return new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
}

export function writeU64(dv: DataView, offset: number, value: number): void {
  dv.setBigUint64(offset, BigInt(value), true);
}

/** Reads a u64; a value beyond 2^53-1 is corrupt data, reported with `code`. */
export function readU64(dv: DataView, offset: number, code: ErrorCode, what: string): number {
  const big = dv.getBigUint64(offset, true);
  if (big > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw new ChunkvaultError(code, `${what} is out of range (${big})`);
  }
  return Number(big);
}

export function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && Buffer.compare(a, b) === 0;
}

export function toHex(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('hex');
}

export function fromHex(hex: string): Uint8Array {
  return new Uint8Array(Buffer.from(hex, 'hex'));
}

/** XXH64 values travel as 16-hex-char strings in JSON and as 8 LE bytes on disk. */
export function writeHash64(dv: DataView, offset: number, value: bigint): void {
  dv.setBigUint64(offset, value, true);
}

export function readHash64(dv: DataView, offset: number): bigint {
  return dv.getBigUint64(offset, true);
}

/** Shared read-only zeros, as long as the largest chunk. Never write into it. */
export const ZERO_CHUNK = new Uint8Array(4 * 1024 * 1024);

/** True when every byte of `buf` is zero (memcmp against a shared zero page). */
export function isAllZero(buf: Uint8Array): boolean {
  let offset = 0;
  while (offset < buf.length) {
    const n = Math.min(ZERO_CHUNK.length, buf.length - offset);
    if (Buffer.compare(buf.subarray(offset, offset + n), ZERO_CHUNK.subarray(0, n)) !== 0) return false;
    offset += n;
  }
  return true;
}
