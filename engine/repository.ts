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
import { bindingOf, listContainers, unbind } from './object-repo/binding.js';
import { enterSession } from './object-repo/leases.js';
import type { ObjectRepoOptions } from './object-repo/open.js';

const SUBDIRS = ['containers', join('containers', 'tmp'), 'maps', join('catalog', 'points'), join('catalog', 'vm-backups'), 'tmp', 'locks', join('locks', 'sessions'), 'gc'];

const POPULATED = new TextEncoder().encode('populated');

/** Creates the local repository directories under `root` (a repository or an object-store cache). */
export async function prepareRepoDirs(root: string): Promise<void> {
  for (const sub of SUBDIRS) await fsp.mkdir(join(root, sub), { recursive: true });
}

const isObjectStoreUrl = (repo: string): boolean => repo.startsWith('s3://');

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
  static async init(dir: string, options: InitOptions & ObjectRepoOptions = {}): Promise<RepoConfig> {
    if (isObjectStoreUrl(dir)) return (await import('./object-repo/open.js')).initObjectRepository(dir, options);
    const root = resolve(dir);
    if (await exists(join(root, 'config.json'))) {
      throw new ChunkvaultError('REPO_EXISTS', `a repository already exists at ${root}`, { details: { repo: root } });
    }
    const config = newConfig(options);
    await fsp.mkdir(root, { recursive: true });
    await prepareRepoDirs(root);
    await writeFileAtomic(ownedTmp(join(root, 'tmp'), 'config.json.tmp'), join(root, 'config.json'), JSON.stringify(config, null, 2) + '\n');
    await fsyncDir(root);
    return config;
  }

  /** Opens an existing repository (config checked; the index opens on first use). */
  static async open(dir: string, options: OpenOptions & ObjectRepoOptions = {}): Promise<Repository> {
    if (isObjectStoreUrl(dir)) return (await import('./object-repo/open.js')).openObjectRepository(dir, options);
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
    // On an object store the session is announced to every agent first (object-repo/leases.ts).
    const binding = bindingOf(this.dir);
    const marker = binding ? await enterSession(binding.store, binding.agent, kind) : undefined;
    let session: Session;
    try {
      session = await this.sessions.begin(kind, job);
    } catch (err) {
      await marker?.release().catch(() => undefined);
      throw err;
    }
    // Reads from here on must see every commit made before the registration (GC relies on it).
    index.refresh();
    if (!marker) return session;
    return {
      record: session.record,
      end: async () => {
        await session.end();
        await marker.release();
      },
    };
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

  /** Ids of every sealed container (on an object store: every container object). */
  async containerIds(): Promise<string[]> {
    const binding = bindingOf(this.dir);
    if (binding) return [...(await listContainers(binding.store)).keys()].sort();
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

  /** Sizes in bytes of every sealed container, by id. */
  async containerSizes(): Promise<Map<string, number>> {
    const binding = bindingOf(this.dir);
    if (binding) return listContainers(binding.store);
    const ids = await this.containerIds();
    const sizes = await Promise.all(ids.map((id) => fsp.stat(join(this.dir, 'containers', id.slice(0, 2), `${id}.ctr`)).then((s) => s.size)));
    return new Map(ids.map((id, i) => [id, sizes[i] as number]));
  }

  async close(): Promise<void> {
    const pool = this.poolHandle;
    const index = this.indexHandle;
    this.poolHandle = undefined;
    this.indexHandle = undefined;
    const binding = unbind(this.dir);
    await Promise.all([pool?.close(), index?.close(), binding?.store.close()]);
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
