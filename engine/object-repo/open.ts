/**
 * Repositories whose durable home is an object store: `s3://bucket/prefix`.
 *
 * `init` writes `config.json` into the bucket with a conditional create. `open` reads
 * it, prepares the local cache directory (FORMAT.md "Object storage": index, session
 * registry, GC state, staging, pulled records and maps), binds the cache to the bucket
 * (engine/object-repo/binding.ts), then brings the cache up to date: catalog records
 * and maps the bucket has and the cache lacks are pulled, records the bucket no longer
 * has are dropped, containers new in the bucket are indexed from their footers (two
 * ranged GETs each), and an index naming containers that are gone (a GC of another
 * agent) is rebuilt.
 */
import { randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { ChunkvaultError, isChunkvaultError } from '../errors.js';
import { exists, writeFileAtomic } from '../_fs.js';
import { ownedTmp } from '../_owner.js';
import { S3Store, type ObjectStore } from '../storage/index.js';
import { newConfig, readConfig, type InitOptions, type RepoConfig } from '../repo-config.js';
import { mapPath } from '../point-map.js';
import { Repository, prepareRepoDirs, type OpenOptions } from '../repository.js';
import { bind, keys, unbind, type Binding } from './binding.js';
import { syncContainers } from './sync-index.js';

/** Options for a repository on an object store; unset ones come from the environment. */
export interface ObjectRepoOptions {
  /** S3 endpoint, e.g. http://127.0.0.1:7480. Default: $CHUNKVAULT_S3_ENDPOINT, else the AWS SDK's ($AWS_ENDPOINT_URL_S3, config files). */
  readonly endpoint?: string;
  /** Local cache directory. Default: $CHUNKVAULT_CACHE, else $XDG_CACHE_HOME/chunkvault/<repo id>. */
  readonly cacheDir?: string;
  /** A store to use instead of building an S3Store (tests). */
  readonly store?: ObjectStore;
}

const URL_RE = /^s3:\/\/([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])(?:\/(.*))?$/;

export function isObjectStoreUrl(repo: string | undefined): repo is string {
  return repo !== undefined && repo.startsWith('s3://');
}

/** `s3://bucket[/prefix]` -> bucket and a prefix that is '' or ends with '/'. */
export function parseObjectStoreUrl(url: string): { bucket: string; prefix: string } {
  const m = URL_RE.exec(url);
  if (!m) throw new ChunkvaultError('USAGE', `not an object-store repository URL: ${url} (expected s3://bucket[/prefix])`);
  const rest = (m[2] ?? '').replace(/\/+$/, '');
  return { bucket: m[1] as string, prefix: rest === '' ? '' : `${rest}/` };
}

function storeFor(url: string, o: ObjectRepoOptions): ObjectStore {
  if (o.store) return o.store;
  const { bucket, prefix } = parseObjectStoreUrl(url);
  const endpoint = o.endpoint ?? process.env['CHUNKVAULT_S3_ENDPOINT'];
  // Whole-object GETs (config, records, leases) are re-hashed; ranged reads of containers
  // and maps are checked by their own hashes (records, map trailer and mapDigest).
  return new S3Store({ bucket, prefix, ...(endpoint ? { endpoint } : {}) });
}

/** Creates a repository in the bucket; REPO_EXISTS when the prefix already holds one. */
export async function initObjectRepository(url: string, options: InitOptions & ObjectRepoOptions = {}): Promise<RepoConfig> {
  const store = storeFor(url, options);
  try {
    const config = newConfig(options);
    try {
      await store.put(keys.config, new TextEncoder().encode(JSON.stringify(config, null, 2) + '\n'), { ifNoneMatch: '*' });
    } catch (err) {
      if (isChunkvaultError(err, 'OBJECT_EXISTS')) throw new ChunkvaultError('REPO_EXISTS', `a repository already exists at ${url}`, { details: { repo: url } });
      throw err;
    }
    return config;
  } finally {
    if (!options.store) await store.close();
  }
}

function defaultCacheDir(id: string): string {
  const base = process.env['XDG_CACHE_HOME'] || join(homedir(), '.cache');
  return join(base, 'chunkvault', id);
}

async function remoteConfig(store: ObjectStore, url: string): Promise<RepoConfig> {
  let text: string;
  try {
    text = new TextDecoder().decode(await store.get(keys.config));
  } catch (err) {
    if (isChunkvaultError(err, 'OBJECT_NOT_FOUND')) throw new ChunkvaultError('REPO_NOT_FOUND', `no chunkvault repository at ${url} (run "chunkvault init")`, { details: { repo: url } });
    throw err;
  }
  try {
    return JSON.parse(text) as RepoConfig;
  } catch (err) {
    throw new ChunkvaultError('REPO_CONFIG_INVALID', `config.json in ${url} is not JSON`, { cause: err, details: { repo: url } });
  }
}

/** Makes `dir` a cache of the repository `config` (same id), or checks that it is one. */
async function prepareCache(dir: string, config: RepoConfig, url: string): Promise<string> {
  if (await exists(join(dir, 'config.json'))) {
    const local = await readConfig(dir);
    if (local.id !== config.id) {
      throw new ChunkvaultError('REPO_CONFIG_INVALID', `cache ${dir} belongs to repository ${local.id}, not to ${url} (${config.id})`, { details: { cache: dir, repo: url } });
    }
  } else {
    await prepareRepoDirs(dir);
    await writeFileAtomic(ownedTmp(join(dir, 'tmp'), 'config.json.tmp'), join(dir, 'config.json'), JSON.stringify(config, null, 2) + '\n');
  }
  return agentId(dir);
}

/** This cache's agent id (random, kept in the cache): names its session markers. */
async function agentId(dir: string): Promise<string> {
  const path = join(dir, 'agent-id');
  const have = await fsp.readFile(path, 'utf8').catch(() => '');
  if (/^[0-9a-f]{16}$/.test(have.trim())) return have.trim();
  const id = randomBytes(8).toString('hex');
  await writeFileAtomic(ownedTmp(join(dir, 'tmp'), 'agent-id.tmp'), path, id + '\n');
  return (await fsp.readFile(path, 'utf8')).trim();
}

/** Opens `url`: cache prepared, bound, catalog pulled and index brought up to date. */
export async function openObjectRepository(url: string, options: OpenOptions & ObjectRepoOptions = {}): Promise<Repository> {
  const store = storeFor(url, options);
  let dir: string | undefined;
  try {
    const config = await remoteConfig(store, url);
    dir = options.cacheDir ?? process.env['CHUNKVAULT_CACHE'] ?? defaultCacheDir(config.id);
    const agent = await prepareCache(dir, config, url);
    const binding: Binding = { store, url, agent };
    bind(dir, binding);
    const repo = await Repository.open(dir, options);
    try {
      await pullCatalog(repo.dir, store);
      await syncContainers(repo, binding);
    } catch (err) {
      await repo.close();
      throw err;
    }
    return repo;
  } catch (err) {
    if (dir) unbind(dir);
    await store.close();
    throw err;
  }
}

const POINT_KEY = /^catalog\/points\/([0-9a-f]{16})\.json$/;
const VM_KEY = /^catalog\/vm-backups\/([0-9a-f]{16})\.json$/;

async function remoteIds(store: ObjectStore, prefix: string, re: RegExp): Promise<Set<string>> {
  const ids = new Set<string>();
  for await (const e of store.list(prefix, { pageSize: 1000 })) {
    const m = re.exec(e.key);
    if (m) ids.add(m[1] as string);
  }
  return ids;
}

async function localIds(dir: string): Promise<Set<string>> {
  const names = await fsp.readdir(dir).catch(() => [] as string[]);
  return new Set(names.filter((n) => /^[0-9a-f]{16}\.json$/.test(n)).map((n) => n.slice(0, 16)));
}

const MAP_WINDOW = 8 * 1024 * 1024;

/** Downloads a map object into the cache in windows (maps grow with the disk). */
async function pullMap(store: ObjectStore, repoDir: string, id: string): Promise<void> {
  const path = mapPath(repoDir, id);
  if (await exists(path)) return;
  const size = await store.head(keys.map(id));
  if (size === undefined) return; // a record without its map: verify and restore report it
  await fsp.mkdir(join(repoDir, 'maps', id.slice(0, 2)), { recursive: true });
  const tmp = ownedTmp(join(repoDir, 'tmp'), `${id}.map.pull`);
  const fh = await fsp.open(tmp, 'w');
  try {
    for (let at = 0; at < size; at += MAP_WINDOW) {
      const part = await store.getRange(keys.map(id), at, Math.min(MAP_WINDOW, size - at));
      await fh.write(part, 0, part.length, at);
    }
    await fh.datasync();
  } finally {
    await fh.close();
  }
  await fsp.rename(tmp, path);
}

/**
 * Makes the cache's catalog equal to the bucket's: records are pulled (a point's map
 * before its record, as in the commit order), and records the bucket no longer holds
 * (forgotten or removed by another agent) are dropped. The engine writes the bucket
 * before the cache, so a record only in the cache is never a commit still under way.
 */
export async function pullCatalog(repoDir: string, store: ObjectStore): Promise<void> {
  for (const [sub, prefix, re, keyOf] of [
    ['points', 'catalog/points/', POINT_KEY, keys.point],
    ['vm-backups', 'catalog/vm-backups/', VM_KEY, keys.vmBackup],
  ] as const) {
    const dir = join(repoDir, 'catalog', sub);
    // Local first: a record seen here was put in the bucket before, so the listing below has it.
    const local = await localIds(dir);
    const remote = await remoteIds(store, prefix, re);
    for (const id of remote) {
      if (local.has(id)) continue;
      if (sub === 'points') await pullMap(store, repoDir, id);
      const data = await store.get(keyOf(id)).catch((err: unknown) => {
        if (isChunkvaultError(err, 'OBJECT_NOT_FOUND')) return undefined; // deleted since the listing
        throw err;
      });
      if (data) await writeFileAtomic(ownedTmp(join(repoDir, 'tmp'), `${id}.pull.tmp`), join(dir, `${id}.json`), data);
    }
    for (const id of local) if (!remote.has(id)) await fsp.rm(join(dir, `${id}.json`), { force: true });
  }
}
