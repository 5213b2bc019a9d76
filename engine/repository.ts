/**
 * A repository directory (FORMAT.md "Directory layout"): init, open, and the shared
 * resources of one open repository: config, catalog, chunk index, session registry
 * and worker pool.
 *
 * Concurrency (FORMAT.md "Which operations may run together" has the full table):
 * the LMDB index is shared by every process; each backup, restore and verify
 * registers a session for its duration; GC and `index rebuild` take the GC lock, a
 * compare-and-set cell in the index, and never remove what a live session may use.
 */
import { promises as fsp } from 'node:fs';
import { join, resolve } from 'node:path';
import { Catalog } from './catalog.js';
import { ChunkIndex } from './chunk-index.js';
import { ChunkvaultError, isChunkvaultError } from './errors.js';
import { exists, fsyncDir, writeFileAtomic } from './_fs.js';
import { initHashing } from './hashing.js';
import { newConfig, readConfig, writeConfig, type InitOptions, type RepoConfig } from './repo-config.js';
import { WorkerPool, type WorkerPoolOptions } from './worker-pool.js';
import { acquireGcLock, SessionRegistry, type LockCell, type Session, type SessionKind } from './sessions.js';
import { populateIndex } from './rebuild-index.js';
import { FORMAT_VERSION } from './constants.js';
import { ownerAlive, ownedTmp } from './_owner.js';

const SUBDIRS = ['containers', join('containers', 'tmp'), 'maps', join('catalog', 'points'), join('catalog', 'vm-backups'), 'tmp', 'locks', join('locks', 'sessions'), 'gc'];

const POPULATED = new TextEncoder().encode('populated');

export interface OpenOptions extends WorkerPoolOptions {
  /** How long to wait for a running gc or index rebuild when the lock is needed (ms). Default 2000. */
  readonly lockWaitMs?: number;
}

export class Repository {
  readonly catalog: Catalog;
  readonly sessions: SessionRegistry;
  private indexHandle: ChunkIndex | undefined;
  private poolHandle: WorkerPool | undefined;

  private constructor(
    readonly dir: string,
    readonly config: RepoConfig,
    private readonly options: OpenOptions,
  ) {
    this.catalog = new Catalog(dir);
    this.sessions = new SessionRegistry(dir);
  }

  /** Creates a new repository; fails with REPO_EXISTS when `dir` already holds one. */
  static async init(dir: string, options: InitOptions = {}): Promise<RepoConfig> {
    const root = resolve(dir);
    if (await exists(join(root, 'config.json'))) {
      throw new ChunkvaultError('REPO_EXISTS', `a repository already exists at ${root}`, { details: { repo: root } });
    }
    const config = newConfig(options);
    await fsp.mkdir(root, { recursive: true });
    for (const sub of SUBDIRS) await fsp.mkdir(join(root, sub), { recursive: true });
    await writeFileAtomic(ownedTmp(join(root, 'tmp'), 'config.json.tmp'), join(root, 'config.json'), JSON.stringify(config, null, 2) + '\n');
    await fsyncDir(root);
    return config;
  }

  /** Opens an existing repository (config checked; the index opens on first use). */
  static async open(dir: string, options: OpenOptions = {}): Promise<Repository> {
    const root = resolve(dir);
    const config = await readConfig(root);
    await initHashing();
    return new Repository(root, config, options);
  }

  /**
   * The chunk index, opened on first use. A repository without one (a legacy v1
   * v1 LevelDB index, a lost cache, a fresh copy) gets it built from the container
   * footers first, under the GC lock so no GC runs against a half-built index.
   */
  async index(): Promise<ChunkIndex> {
    if (this.indexHandle) return this.indexHandle;
    const index = ChunkIndex.open(join(this.dir, 'index.mdb'));
    this.indexHandle = index;
    if (!this.isPopulated(index)) await this.populate(index);
    await this.removeStaleTemporaries();
    return index;
  }

  /** Registers an operation for its duration (see engine/sessions.ts); end it in `finally`. */
  async beginSession(kind: SessionKind, job?: string): Promise<Session> {
    const index = await this.index();
    const session = await this.sessions.begin(kind, job);
    // Reads from here on must see every commit made before the registration (GC relies on it).
    index.refresh();
    return session;
  }

  /** Takes the GC lock (one gc or index rebuild at a time), waiting up to `lockWaitMs`. */
  async gcLock(): Promise<Session> {
    const index = await this.index();
    const meta = index.aux('gc-meta');
    const key = new TextEncoder().encode('gc-lock');
    const cell: LockCell = {
      read: () => meta.getBinary(key),
      swap: (expected, next) => {
        let swapped = false;
        index.main().transactionSync(() => {
          const cur = meta.getBinary(key);
          const same = cur === undefined || expected === undefined ? cur === expected : Buffer.compare(cur, expected) === 0;
          if (!same) return;
          if (next) void meta.put(key, next);
          else void meta.remove(key);
          swapped = true;
        });
        return swapped;
      },
    };
    const deadline = Date.now() + (this.options.lockWaitMs ?? 2000);
    for (;;) {
      try {
        return await acquireGcLock(cell);
      } catch (err) {
        if (!isChunkvaultError(err, 'GC_RUNNING') || Date.now() >= deadline) throw err;
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  }

  /** The worker pool, started on first use. */
  pool(): WorkerPool {
    this.poolHandle ??= new WorkerPool(this.options);
    return this.poolHandle;
  }

  /** Absolute paths of every sealed container file. */
  async containerIds(): Promise<string[]> {
    const root = join(this.dir, 'containers');
    const ids: string[] = [];
    for (const shard of await fsp.readdir(root)) {
      if (!/^[0-9a-f]{2}$/.test(shard)) continue;
      for (const name of await fsp.readdir(join(root, shard))) {
        if (/^[0-9a-f]{32}\.ctr$/.test(name)) ids.push(name.slice(0, 32));
      }
    }
    return ids.sort();
  }

  async close(): Promise<void> {
    const pool = this.poolHandle;
    const index = this.indexHandle;
    this.poolHandle = undefined;
    this.indexHandle = undefined;
    await Promise.all([pool?.close(), index?.close()]);
  }

  private isPopulated(index: ChunkIndex): boolean {
    return index.aux('gc-meta').getBinary(POPULATED) !== undefined;
  }

  private async populate(index: ChunkIndex): Promise<void> {
    const lock = await this.gcLock();
    try {
      index.refresh();
      if (this.isPopulated(index)) return;
      await populateIndex(this, index);
      await index.transact(() => void index.aux('gc-meta').put(POPULATED, new Uint8Array([1])));
      await fsp.rm(join(this.dir, 'index'), { recursive: true, force: true });
      if (this.config.format < FORMAT_VERSION) {
        const upgraded = { ...this.config, format: FORMAT_VERSION };
        await writeConfig(this.dir, upgraded);
        (this as { config: RepoConfig }).config = upgraded;
      }
    } finally {
      await lock.end();
    }
  }

  /**
   * Deletes leftovers of crashed writers: unsealed containers and temporary maps and
   * records whose owner process is gone (engine/_owner.ts). Untagged files (older
   * program versions) only while no session is live.
   */
  private async removeStaleTemporaries(): Promise<void> {
    const quiet = (await this.sessions.live(true)).length === 0;
    for (const dir of [join(this.dir, 'containers', 'tmp'), join(this.dir, 'tmp')]) {
      const names = await fsp.readdir(dir).catch(() => [] as string[]);
      for (const n of names) {
        const alive = await ownerAlive(n);
        if (alive === false || (alive === undefined && quiet)) await fsp.rm(join(dir, n), { force: true });
      }
    }
  }
}
