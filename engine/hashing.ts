/**
 * The two chunk hashes (FORMAT.md "Terminology"): SHA-256 is the identity (native
 * crypto, SHA-NI); XXH64 (xxhash-wasm, seed 0) is the independent check hash compared
 * on every dedup hit and every read. XXH64 is never an identity: it is not
 * collision-resistant, and a guest could craft collisions.
 */
import { createHash } from 'node:crypto';
import xxhashInit from 'xxhash-wasm';

type XXHashApi = Awaited<ReturnType<typeof xxhashInit>>;

let api: XXHashApi | undefined;
let loading: Promise<XXHashApi> | undefined;

/** Loads the wasm module once per thread; every other function here needs it. */
export async function initHashing(): Promise<void> {
  loading ??= xxhashInit();
  api = await loading;
}

function xx(): XXHashApi {
  if (!api) throw new TypeError('initHashing() must complete before hashing');
  return api;
}

/** XXH64 (seed 0) of `data`. */
export function xxh64(data: Uint8Array): bigint {
  return xx().h64Raw(data, 0n);
}

/** SHA-256 of `data` as 32 bytes. */
export function sha256(data: Uint8Array): Uint8Array {
  const digest = createHash('sha256').update(data).digest();
  return new Uint8Array(digest.buffer, digest.byteOffset, digest.byteLength);
}

/** Incremental SHA-256 for streamed files (point maps). */
export function sha256Stream(): { update(data: Uint8Array): void; digest(): Uint8Array } {
  const h = createHash('sha256');
  return {
    update: (data) => void h.update(data),
    digest: () => new Uint8Array(h.digest()),
  };
}
