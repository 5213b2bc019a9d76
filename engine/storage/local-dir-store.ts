/**
 * `ObjectStore` on a local directory: the key `a/b/c` is the file `<root>/a/b/c`.
 *
 * Publication is crash-safe as in _fs.ts: the body goes to `<root>/.tmp/<random>`, is
 * fdatasynced, then renamed into place (or hard-linked, for a conditional create: `link`
 * fails with EEXIST atomically, which `rename` would not), and the directory is fsynced.
 * A crash leaves at most a stray file under `.tmp/`, which keys can never name (a key
 * segment never starts with `.`) and which `sweepTemporary` removes.
 */
import { randomBytes } from 'node:crypto';
import { type Dir, promises as fsp } from 'node:fs';
import { dirname, join, sep } from 'node:path';
import { fsyncDir, readFull, writeFull } from '../_fs.js';
import { ChunkvaultError, toChunkvaultError } from '../errors.js';
import {
  type ListOptions,
  type ObjectEntry,
  type ObjectStore,
  type PutBody,
  type PutOptions,
  type StoreSupports,
  alreadyExists,
  bodyLength,
  checkKey,
  checkRange,
  fixedPieces,
  isStreamBody,
  notFound,
  rangeBeyondEnd,
} from './object-store.js';

const TMP_DIR = '.tmp';
const STREAM_PIECE_BYTES = 4 * 1024 * 1024;

function errno(err: unknown): string | undefined {
  return (err as NodeJS.ErrnoException | null)?.code;
}

/** Maps a file-system error: ENOSPC/EDQUOT become STORE_FULL, the rest IO_ERROR. */
function fsError(err: unknown, context: string, key: string): ChunkvaultError {
  const code = errno(err);
  if (code === 'ENOSPC' || code === 'EDQUOT') {
    return new ChunkvaultError('STORE_FULL', `${context} ${key}: the file system is full`, { cause: err, details: { key, errno: code } });
  }
  return toChunkvaultError(err, `${context} ${key}`);
}

export interface LocalDirStoreOptions {
  /** fsync data and directories (default true; tests of throughput may turn it off). */
  readonly durable?: boolean;
}

export class LocalDirStore implements ObjectStore {
  readonly supports: StoreSupports = {
    conditionalCreate: true,
    maxAtomicCreateBytes: Number.POSITIVE_INFINITY,
    verifiedReads: false,
    orderedList: false,
  };
  private readonly durable: boolean;

  /** `root` must exist; it is the bucket of this store. */
  constructor(
    readonly root: string,
    options: LocalDirStoreOptions = {},
  ) {
    this.durable = options.durable ?? true;
  }

  private path(key: string): string {
    checkKey(key);
    return join(this.root, ...key.split('/'));
  }

  async put(key: string, body: PutBody, options: PutOptions = {}): Promise<void> {
    const final = this.path(key);
    const length = bodyLength(body);
    const tmpDir = join(this.root, TMP_DIR);
    const tmp = join(tmpDir, `${randomBytes(12).toString('hex')}.tmp`);
    try {
      await fsp.mkdir(tmpDir, { recursive: true });
      await this.writeTmp(tmp, key, body, length);
      await fsp.mkdir(dirname(final), { recursive: true });
      if (options.ifNoneMatch === '*') {
        await this.linkExclusive(tmp, final, key);
      } else {
        await fsp.rename(tmp, final);
      }
      if (this.durable) await fsyncDir(dirname(final));
    } catch (err) {
      await fsp.rm(tmp, { force: true });
      if (err instanceof ChunkvaultError) throw err;
      throw fsError(err, 'unable to store', key);
    }
  }

  private async writeTmp(tmp: string, key: string, body: PutBody, length: number): Promise<void> {
    const fh = await fsp.open(tmp, 'wx', 0o644);
    try {
      if (isStreamBody(body)) {
        let at = 0;
        for await (const piece of fixedPieces(body, STREAM_PIECE_BYTES, key)) {
          await writeFull(fh, piece, at);
          at += piece.byteLength;
        }
      } else {
        await writeFull(fh, body, 0);
      }
      if (this.durable) await fh.datasync();
      const { size } = await fh.stat();
      if (size !== length) {
        throw new ChunkvaultError('IO_ERROR', `wrote ${size} of ${length} bytes of ${key}`, { details: { key, size, length } });
      }
    } finally {
      await fh.close();
    }
  }

  private async linkExclusive(tmp: string, final: string, key: string): Promise<void> {
    try {
      await fsp.link(tmp, final);
    } catch (err) {
      if (errno(err) === 'EEXIST') throw alreadyExists(key, err);
      throw err;
    } finally {
      await fsp.rm(tmp, { force: true });
    }
  }

  async get(key: string): Promise<Uint8Array> {
    const path = this.path(key);
    try {
      return await fsp.readFile(path);
    } catch (err) {
      if (errno(err) === 'ENOENT' || errno(err) === 'EISDIR') throw notFound(key, err);
      throw fsError(err, 'unable to read', key);
    }
  }

  async getRange(key: string, offset: number, length: number): Promise<Uint8Array> {
    checkRange(key, offset, length);
    const path = this.path(key);
    if (length === 0) return new Uint8Array(0);
    let fh: fsp.FileHandle;
    try {
      fh = await fsp.open(path, 'r');
    } catch (err) {
      if (errno(err) === 'ENOENT') throw notFound(key, err);
      throw fsError(err, 'unable to open', key);
    }
    try {
      const { size } = await fh.stat();
      if (offset + length > size) throw rangeBeyondEnd(key, offset, length, size);
      const out = new Uint8Array(length);
      const got = await readFull(fh, out, offset);
      if (got !== length) throw rangeBeyondEnd(key, offset, length, offset + got);
      return out;
    } catch (err) {
      if (err instanceof ChunkvaultError) throw err;
      throw fsError(err, 'unable to read', key);
    } finally {
      await fh.close();
    }
  }

  async head(key: string): Promise<number | undefined> {
    const path = this.path(key);
    try {
      const stat = await fsp.stat(path);
      return stat.isFile() ? stat.size : undefined;
    } catch (err) {
      if (errno(err) === 'ENOENT' || errno(err) === 'ENOTDIR') return undefined;
      throw fsError(err, 'unable to stat', key);
    }
  }

  async delete(key: string): Promise<void> {
    const path = this.path(key);
    try {
      await fsp.unlink(path);
      if (this.durable) await fsyncDir(dirname(path));
    } catch (err) {
      if (errno(err) === 'ENOENT' || errno(err) === 'ENOTDIR') return;
      throw fsError(err, 'unable to delete', key);
    }
  }

  /**
   * Walks only the directory that `prefix` names up to its last `/`, and yields the
   * files below it whose key starts with `prefix`. Order is unspecified.
   */
  async *list(prefix: string, _options: ListOptions = {}): AsyncGenerator<ObjectEntry, void, undefined> {
    const cut = prefix.lastIndexOf('/');
    const base = cut < 0 ? '' : prefix.slice(0, cut);
    if (base !== '') checkKey(base);
    yield* this.walk(base, prefix);
  }

  private async *walk(dirKey: string, prefix: string): AsyncGenerator<ObjectEntry, void, undefined> {
    const dirPath = dirKey === '' ? this.root : join(this.root, ...dirKey.split('/'));
    let dir: Dir;
    try {
      dir = await fsp.opendir(dirPath);
    } catch (err) {
      if (errno(err) === 'ENOENT' || errno(err) === 'ENOTDIR') return;
      throw fsError(err, 'unable to list', dirKey);
    }
    for await (const entry of dir) {
      if (entry.name.startsWith('.')) continue;
      const key = dirKey === '' ? entry.name : `${dirKey}/${entry.name}`;
      if (entry.isDirectory()) {
        // Descend only where keys below can still match the prefix.
        if (prefix.startsWith(`${key}/`) || `${key}/`.startsWith(prefix)) yield* this.walk(key, prefix);
      } else if (entry.isFile() && key.startsWith(prefix)) {
        const size = await this.head(key);
        if (size !== undefined) yield { key, size };
      }
    }
  }

  /** Removes temporary files older than `olderThanMs` left by crashed writers. */
  async sweepTemporary(olderThanMs = 3_600_000): Promise<number> {
    const tmpDir = join(this.root, TMP_DIR);
    let removed = 0;
    let names: string[];
    try {
      names = await fsp.readdir(tmpDir);
    } catch {
      return 0;
    }
    for (const name of names) {
      const path = `${tmpDir}${sep}${name}`;
      const stat = await fsp.stat(path).catch(() => null);
      if (stat && Date.now() - stat.mtimeMs > olderThanMs) {
        await fsp.rm(path, { force: true });
        removed++;
      }
    }
    return removed;
  }

  async close(): Promise<void> {
    // Nothing held open between calls.
  }
}
