/**
 * The link between a repository's local directory and the object store that is its
 * durable home (docs/object-storage.md, FORMAT.md "Object storage").
 *
 * Terms: the **cache** is the local directory the engine works in (index, sessions,
 * GC state, staging, pulled catalog records and maps); the **bucket** (an
 * `ObjectStore` under a prefix) holds everything durable, under the same relative
 * names as a local repository. A binding is registered per cache directory for the
 * life of one open repository; the engine's few durable steps (container seal,
 * point and VM record commit, deletions) ask `bindingOf(dir)` and, when bound, write
 * the bucket first: the local copy is only ever a cache of what the bucket holds.
 */
import { createReadStream, promises as fsp } from 'node:fs';
import { resolve } from 'node:path';
import type { ObjectStore } from '../storage/index.js';
import type { ChunkIndex } from '../chunk-index.js';
import { fromHex } from '../_bytes.js';

export interface Binding {
  readonly store: ObjectStore;
  /** `s3://bucket/prefix` as the user named it. */
  readonly url: string;
  /** This cache's agent id (names its session markers). */
  readonly agent: string;
  /** Called after a sealed container is durable in the bucket (before its index entries). */
  onUploaded?: (containerId: string) => Promise<void>;
  /** Called after a container object was deleted (GC). */
  onDeleted?: (containerId: string) => Promise<void>;
}

const bindings = new Map<string, Binding>();

export function bind(dir: string, binding: Binding): void {
  bindings.set(resolve(dir), binding);
}

export function unbind(dir: string): Binding | undefined {
  const key = resolve(dir);
  const b = bindings.get(key);
  bindings.delete(key);
  return b;
}

/** The binding of a cache directory, or undefined for a plain local repository. */
export function bindingOf(dir: string): Binding | undefined {
  return bindings.size === 0 ? undefined : bindings.get(resolve(dir));
}

/** Object keys: the relative paths of a local repository (FORMAT.md "Directory layout"). */
export const keys = {
  config: 'config.json',
  container: (id: string): string => `containers/${id.slice(0, 2)}/${id}.ctr`,
  map: (pointId: string): string => `maps/${pointId.slice(0, 2)}/${pointId}.map`,
  point: (id: string): string => `catalog/points/${id}.json`,
  vmBackup: (id: string): string => `catalog/vm-backups/${id}.json`,
  gcLease: 'locks/gc.lease',
  sessionPrefix: 'locks/sessions/',
  gcEpoch: 'gc/epoch.json',
};

/** Uploads a local file as one object (multipart above the store's part size), streamed. */
export async function uploadFile(store: ObjectStore, key: string, path: string): Promise<void> {
  const { size } = await fsp.stat(path);
  await store.put(key, { stream: createReadStream(path, { highWaterMark: 1024 * 1024 }), length: size });
}

/** Uploads a sealed container, then drops the staged copy (the bucket is its home from now on). */
export async function uploadContainer(b: Binding, id: string, path: string): Promise<void> {
  try {
    await uploadFile(b.store, keys.container(id), path);
  } catch (err) {
    // Never indexed, so unreferenced: the staged copy would only hold local disk.
    await fsp.rm(path, { force: true });
    throw err;
  }
  await b.onUploaded?.(id);
  await fsp.rm(path, { force: true });
}

const CONTAINER_KEY = /^containers\/[0-9a-f]{2}\/([0-9a-f]{32})\.ctr$/;

/** Every container object in the bucket: id -> size. */
export async function listContainers(store: ObjectStore): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  for await (const e of store.list('containers/', { pageSize: 1000 })) {
    const m = CONTAINER_KEY.exec(e.key);
    if (m) out.set(m[1] as string, e.size);
  }
  return out;
}

/** Index table of the containers whose footers the index holds (object stores only). */
export const KNOWN_TABLE = 'remote-containers';

/** Records that the index holds the footer entries of container `id`. */
export async function markKnown(index: ChunkIndex, id: string): Promise<void> {
  await index.transact(() => void index.aux(KNOWN_TABLE).put(fromHex(id), new Uint8Array([1])));
}
