/**
 * A repository directory (FORMAT.md "Directory layout"): init, open, and the shared
 * resources of one open repository: config, catalog, chunk index and worker pool.
 *
 * Locking (which operation may run beside which, and by what mechanism):
 *
 * | operation            | needs index | beside backup | mechanism                          |
 * | -------------------- | ----------- | ------------- | ---------------------------------- |
 * | points, stats (list) | no / yes    | yes / no      | catalog files are immutable once renamed |
 * | backup               | yes         | same process  | LevelDB LOCK file: one process owns the index |
 * | restore, verify      | yes         | same process  | LevelDB LOCK file                  |
 * | index rebuild        | yes         | no            | LevelDB LOCK file + it is a CLI-only op |
 *
 * A second process that needs the index gets REPO_LOCKED (after a short retry), never
 * a corrupted index. Several jobs inside one process (the media agent) share one
 * `Repository`; each backup writes its own containers.
 */
import { promises as fsp } from 'node:fs';
import { join, resolve } from 'node:path';
import { Catalog } from './catalog.js';
import { ChunkIndex } from './chunk-index.js';
import { ChunkvaultError, isChunkvaultError } from './errors.js';
import { exists, fsyncDir, writeFileAtomic } from './_fs.js';
import { initHashing } from './hashing.js';
import { newConfig, readConfig, type InitOptions, type RepoConfig } from './repo-config.js';
import { WorkerPool, type WorkerPoolOptions } from './worker-pool.js';

const SUBDIRS = ['containers', join('containers', 'tmp'), 'maps', join('catalog', 'points'), join('catalog', 'vm-backups'), 'tmp', 'locks'];

export interface OpenOptions extends WorkerPoolOptions {
  /** How long to retry when another process holds the index (ms). Default 2000. */
  readonly lockWaitMs?: number;
}

export class Repository {
  readonly catalog: Catalog;
  private indexHandle: ChunkIndex | undefined;
  private poolHandle: WorkerPool | undefined;

  private constructor(
    readonly dir: string,
    readonly config: RepoConfig,
    private readonly options: OpenOptions,
  ) {
    this.catalog = new Catalog(dir);
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
    await writeFileAtomic(join(root, 'tmp', 'config.json.tmp'), join(root, 'config.json'), JSON.stringify(config, null, 2) + '\n');
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

  /** The chunk index; opening it takes the repository's process lock. */
  async index(): Promise<ChunkIndex> {
    if (this.indexHandle) return this.indexHandle;
    const deadline = Date.now() + (this.options.lockWaitMs ?? 2000);
    for (;;) {
      try {
        this.indexHandle = await ChunkIndex.open(join(this.dir, 'index'));
        break;
      } catch (err) {
        if (!isChunkvaultError(err, 'REPO_LOCKED') || Date.now() >= deadline) throw err;
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    await this.removeStaleTemporaries();
    return this.indexHandle;
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

  /**
   * Deletes leftovers of crashed writers: unsealed containers and temporary maps and
   * records. Safe because we hold the index lock, so no other process is writing.
   */
  private async removeStaleTemporaries(): Promise<void> {
    for (const dir of [join(this.dir, 'containers', 'tmp'), join(this.dir, 'tmp')]) {
      const names = await fsp.readdir(dir).catch(() => [] as string[]);
      await Promise.all(names.map((n) => fsp.rm(join(dir, n), { force: true })));
    }
  }
}
