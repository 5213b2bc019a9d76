/**
 * The two chunk hashes (FORMAT.md "Terminology"): SHA-256 is the identity (native
 * crypto, SHA-NI); XXH64 (seed 0) is the independent check hash compared on every
 * dedup hit and every read. XXH64 is never an identity: it is not collision-resistant,
 * and a guest could craft collisions.
 *
 * XXH64 comes from xxhash-addon (the reference C xxHash; a prebuilt binary inside the
 * npm package, compiled from its bundled source where that does not load): 9 GB/s here
 * against 4.9 GB/s for xxhash-wasm, which copies its input into wasm memory first
 * (bench/RESULTS.md "Hashing"). Both give the same values.
 */
import { createHash } from 'node:crypto';
import { createRequire } from 'node:module';

interface XXHashAddon {
  XXHash64: { hash(data: Uint8Array): Uint8Array };
}

let xx: XXHashAddon['XXHash64'] | undefined;

/** Loads the native module once per thread (synchronously, on first use). */
function xxhash64(): XXHashAddon['XXHash64'] {
  xx ??= (createRequire(import.meta.url)('xxhash-addon') as XXHashAddon).XXHash64;
  return xx;
}

/**
 * Loads the native module now rather than on the first hash. Optional: `xxh64` loads it
 * itself. Kept async for callers written against the earlier wasm module.
 */
export async function initHashing(): Promise<void> {
  xxhash64();
}

/** XXH64 (seed 0) of `data`. */
export function xxh64(data: Uint8Array): bigint {
  const h = xxhash64().hash(data);
  // The canonical (big-endian) digest.
  return new DataView(h.buffer, h.byteOffset, 8).getBigUint64(0, false);
}

/** SHA-256 of `data` as 32 bytes. */
export function sha256(data: Uint8Array): Uint8Array {
  const digest = createHash('sha256').update(data).digest();
  return new Uint8Array(digest.buffer, digest.byteOffset, digest.byteLength);
}

/** SHA-256 of `data` written into `target` (32 bytes; may be shared memory). */
export function sha256Into(data: Uint8Array, target: Uint8Array): void {
  target.set(createHash('sha256').update(data).digest());
}

/** Incremental SHA-256 for streamed files (point maps). */
export function sha256Stream(): { update(data: Uint8Array): void; digest(): Uint8Array } {
  const h = createHash('sha256');
  return {
    update: (data) => void h.update(data),
    digest: () => new Uint8Array(h.digest()),
  };
}
