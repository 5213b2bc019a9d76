/**
 * The storage back-end seam: a flat name space of immutable objects addressed by key.
 *
 * Terms:
 * - key: a relative, `/`-separated name (`containers/ab/ab12....ctr`). Keys are the same
 *   on every back end: a LocalDirStore maps them to paths under its root, an S3Store
 *   to object names under its bucket and prefix.
 * - object: bytes written once by `put` and never modified (the engine's containers,
 *   maps and catalog records are all write-once); `delete` removes it.
 * - conditional create: `put` with `ifNoneMatch: '*'` succeeds only when no object has
 *   the key, atomically; the building block of lease and lock objects.
 *
 * Readers and writers are separate roles (`ObjectReader`, `ObjectWriter`), so code that
 * only restores or verifies can be handed a reader.
 */
import { ChunkvaultError } from '../errors.js';

/** A body whose bytes arrive as a stream: `length` must be exact (checked). */
export interface StreamBody {
  readonly stream: AsyncIterable<Uint8Array>;
  readonly length: number;
}

export type PutBody = Uint8Array | StreamBody;

export interface PutOptions {
  /**
   * `'*'`: create only if no object has this key, else fail with OBJECT_EXISTS. Atomic
   * for bodies up to the store's `maxAtomicCreateBytes`; above it the check is made
   * before the upload and is not atomic (see `StoreSupports`).
   */
  readonly ifNoneMatch?: '*';
}

/** One entry of `list`. */
export interface ObjectEntry {
  readonly key: string;
  readonly size: number;
}

export interface ListOptions {
  /** Keys fetched per request where the back end pages (S3: at most 1000). */
  readonly pageSize?: number;
}

/** What a back end guarantees, declared up front (like abstract-level's `supports`). */
export interface StoreSupports {
  /** `put` with `ifNoneMatch` is atomic for bodies up to `maxAtomicCreateBytes`. */
  readonly conditionalCreate: boolean;
  /** Largest body for which conditional create is atomic (Infinity: all). */
  readonly maxAtomicCreateBytes: number;
  /** Bodies are checksummed on the way in and verified on every full `get`. */
  readonly verifiedReads: boolean;
  /** `list` yields keys in ascending UTF-8 byte order (else: any order, each once). */
  readonly orderedList: boolean;
}

/** Read side. Every method throws ChunkvaultError; none returns partial data. */
export interface ObjectReader {
  readonly supports: StoreSupports;
  /** The whole object. OBJECT_NOT_FOUND when absent, OBJECT_CORRUPT when it fails its checksum. */
  get(key: string): Promise<Uint8Array>;
  /**
   * Bytes `[offset, offset + length)`; the range must lie inside the object
   * (INVALID_ARGUMENT otherwise). `length` 0 returns an empty array without I/O (and
   * without checking that the object exists).
   */
  getRange(key: string, offset: number, length: number): Promise<Uint8Array>;
  /** The object's size in bytes, or undefined when there is no such object. */
  head(key: string): Promise<number | undefined>;
  /**
   * Every object whose key starts with `prefix` (a plain string prefix, not a directory),
   * pulled page by page: memory stays bounded whatever the count.
   */
  list(prefix: string, options?: ListOptions): AsyncGenerator<ObjectEntry, void, undefined>;
}

/** Write side. A failed `put` leaves no object visible under the key (nor a partial one). */
export interface ObjectWriter {
  put(key: string, body: PutBody, options?: PutOptions): Promise<void>;
  /** Removes the object; absent is not an error (idempotent, as in S3). */
  delete(key: string): Promise<void>;
}

export interface ObjectStore extends ObjectReader, ObjectWriter {
  /** Releases sockets and handles; the store must not be used afterwards. */
  close(): Promise<void>;
}

const MAX_KEY_BYTES = 900;
// Printable ASCII without the characters S3 tools and file systems treat specially.
const SEGMENT = /^[A-Za-z0-9_][A-Za-z0-9._:@+=,-]*$/;

/**
 * Throws INVALID_ARGUMENT unless `key` is portable: 1-900 bytes, `/`-separated
 * non-empty segments that start with a letter, digit or `_` (so no `.`, `..`, hidden
 * or temporary names) and use only `A-Za-z0-9._:@+=,-`.
 */
export function checkKey(key: string): void {
  const ok = key.length > 0 && key.length <= MAX_KEY_BYTES && key.split('/').every((s) => SEGMENT.test(s));
  if (!ok) throw new ChunkvaultError('INVALID_ARGUMENT', `invalid object key ${JSON.stringify(key)}`, { details: { key } });
}

/** Throws INVALID_ARGUMENT unless `[offset, offset + length)` is a sane range. */
export function checkRange(key: string, offset: number, length: number): void {
  if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0) {
    throw new ChunkvaultError('INVALID_ARGUMENT', `invalid range ${offset}+${length} of ${key}`, { details: { key, offset, length } });
  }
}

export function rangeBeyondEnd(key: string, offset: number, length: number, size: number): ChunkvaultError {
  return new ChunkvaultError('INVALID_ARGUMENT', `range ${offset}+${length} lies beyond the end of ${key} (${size} bytes)`, {
    details: { key, offset, length, size },
  });
}

export function notFound(key: string, cause?: unknown): ChunkvaultError {
  return new ChunkvaultError('OBJECT_NOT_FOUND', `no object ${key}`, { details: { key }, cause });
}

export function alreadyExists(key: string, cause?: unknown): ChunkvaultError {
  return new ChunkvaultError('OBJECT_EXISTS', `object ${key} already exists`, { details: { key }, cause });
}

export function isStreamBody(body: PutBody): body is StreamBody {
  return !(body instanceof Uint8Array);
}

export function bodyLength(body: PutBody): number {
  const length = isStreamBody(body) ? body.length : body.byteLength;
  if (!Number.isSafeInteger(length) || length < 0) {
    throw new ChunkvaultError('INVALID_ARGUMENT', `invalid body length ${length}`, { details: { length } });
  }
  return length;
}

/**
 * Re-chunks a stream body into pieces of exactly `size` bytes (the last may be shorter),
 * each a fresh buffer the caller may keep. Throws INVALID_ARGUMENT when the stream
 * yields more or fewer bytes than it declared.
 */
export async function* fixedPieces(body: StreamBody, size: number, key: string): AsyncGenerator<Uint8Array, void, undefined> {
  let piece = new Uint8Array(Math.min(size, body.length));
  let filled = 0;
  let total = 0;
  for await (const data of body.stream) {
    let at = 0;
    while (at < data.byteLength) {
      if (total + (data.byteLength - at) > body.length) throw lengthMismatch(key, body.length, 'more');
      const n = Math.min(piece.byteLength - filled, data.byteLength - at);
      piece.set(data.subarray(at, at + n), filled);
      filled += n;
      at += n;
      total += n;
      if (filled === piece.byteLength && piece.byteLength > 0) {
        yield piece;
        piece = new Uint8Array(Math.min(size, body.length - total));
        filled = 0;
      }
    }
  }
  if (total !== body.length) throw lengthMismatch(key, body.length, 'fewer');
  if (body.length === 0) yield piece;
}

function lengthMismatch(key: string, declared: number, how: string): ChunkvaultError {
  return new ChunkvaultError('INVALID_ARGUMENT', `stream for ${key} yielded ${how} bytes than its declared ${declared}`, {
    details: { key, declared },
  });
}
