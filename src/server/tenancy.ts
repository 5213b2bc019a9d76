/**
 * Tenancy: each tenant sees only its own VMs and points, and only its own chunks.
 *
 * Names: tenant T's VM V is the engine VM `T:V`. A tenant name never holds `:`, so
 * the tenant is everything before the first `:` and no VM name a tenant can send maps
 * into another tenant's namespace.
 *
 * Digests: the "which chunks do you need" answer must depend only on the tenant's own
 * data, so each tenant has its own digest set (LMDB, `<repo>/agent/tenants.lmdb`,
 * key `T:<hex digest>`): the chunks of its committed points. A digest counts as held
 * only when it is in the tenant's set AND in the chunk index (the set may outlive a
 * pruned chunk). A digest another tenant holds is requested all the same; its upload
 * is then deduplicated in storage, with the same response.
 */
import { join } from 'node:path';
import { open, type RootDatabase } from 'lmdb';
import { ChunkvaultError, validateName, type PointRecord } from '../../engine/index.js';
import { agentDir } from './tokens.js';

/** The engine VM name of tenant `tenant`'s VM `vm` (INVALID_ARGUMENT when `vm` is not a valid name). */
export function engineVm(tenant: string, vm: string): string {
  if (typeof vm !== 'string' || vm.length > 127 - tenant.length) throw new ChunkvaultError('INVALID_ARGUMENT', 'invalid vm name');
  validateName('vm', vm);
  return `${tenant}:${vm}`;
}

/** The tenant-side VM name of an engine VM, or undefined when it belongs to another tenant. */
export function tenantVm(tenant: string, engineName: string): string | undefined {
  const prefix = `${tenant}:`;
  return engineName.startsWith(prefix) ? engineName.slice(prefix.length) : undefined;
}

/** What a tenant sees of a point: no storage-wide figures (they would reveal other tenants' data). */
export interface TenantPoint {
  readonly id: string;
  readonly vm: string;
  readonly disk: string;
  readonly time: string;
  readonly parent: string | null;
  readonly mode: string;
  readonly sizeBytes: number;
  readonly chunkSize: number;
  readonly changeToken: string | null;
  readonly stats: { readonly bytesReceived: number; readonly chunksReceived: number; readonly chunksZero: number };
}

export function tenantPoint(tenant: string, p: PointRecord): TenantPoint | undefined {
  const vm = tenantVm(tenant, p.vm);
  if (vm === undefined) return undefined;
  return {
    id: p.id,
    vm,
    disk: p.disk,
    time: p.time,
    parent: p.parent,
    mode: p.mode,
    sizeBytes: p.sizeBytes,
    chunkSize: p.chunkSize,
    changeToken: p.changeToken,
    stats: { bytesReceived: p.stats.bytesRead, chunksReceived: p.stats.chunksRead, chunksZero: p.stats.chunksZero },
  };
}

/** Calls `onWindow` with the slot digests of a committed point (32 bytes per slot), window by window. */
export type MapDigests = (p: PointRecord, onWindow: (digests: Uint8Array) => Promise<void>) => Promise<void>;

/**
 * The per-tenant digest sets, and the point ids each set was built from (`#points:T`).
 * When a tenant's point disappears (`forget` outside the agent), its set may vouch for
 * chunks the tenant no longer references: `sync` notices and rebuilds that tenant's set
 * from its live points' maps; until then the tenant is stale and every digest is
 * answered "needed" (safe: only more uploads).
 */
export class TenantDigests {
  private readonly stale = new Set<string>();
  private everyone = true;
  private syncing: Promise<void> | undefined;

  private constructor(private readonly db: RootDatabase<unknown, string>) {}

  static open(repoDir: string): TenantDigests {
    const db = open<unknown, string>({ path: join(agentDir(repoDir), 'tenants.lmdb'), compression: false });
    return new TenantDigests(db);
  }

  /** Whether the tenant holds each digest (hex). Always looks every digest up. */
  has(tenant: string, hexDigests: readonly string[]): boolean[] {
    const usable = !this.everyone && !this.stale.has(tenant);
    return hexDigests.map((h) => this.db.doesExist(`${tenant}:${h}`) && usable);
  }

  /** Records digests (hex) as held by the tenant, through its committed point `pointId`. */
  async add(tenant: string, pointId: string, hexDigests: Iterable<string>): Promise<void> {
    await this.db.transaction(() => {
      for (const h of hexDigests) this.db.put(`${tenant}:${h}`, 1);
      const known = (this.db.get(`#points:${tenant}`) as string[] | undefined) ?? [];
      this.db.put(`#points:${tenant}`, [...known, pointId]);
    });
  }

  /** Compares the catalog with the point lists; rebuilds the sets of tenants that lost a point. One at a time. */
  sync(points: readonly PointRecord[], mapDigests: MapDigests): Promise<void> {
    this.syncing ??= this.runSync(points, mapDigests).finally(() => (this.syncing = undefined));
    return this.syncing;
  }

  private async runSync(points: readonly PointRecord[], mapDigests: MapDigests): Promise<void> {
    const live = new Map<string, PointRecord[]>();
    for (const p of points) {
      const i = p.vm.indexOf(':');
      if (i > 0) live.set(p.vm.slice(0, i), [...(live.get(p.vm.slice(0, i)) ?? []), p]);
    }
    const known = new Map<string, string[]>();
    for (const { key, value } of this.db.getRange({ start: '#points:', end: '#points;' })) known.set(key.slice('#points:'.length), value as string[]);
    for (const [tenant, ids] of known) {
      const alive = new Set((live.get(tenant) ?? []).map((p) => p.id));
      if (ids.every((id) => alive.has(id))) continue;
      this.stale.add(tenant);
      await this.rebuild(tenant, live.get(tenant) ?? [], mapDigests);
      this.stale.delete(tenant);
    }
    this.everyone = false;
  }

  private async rebuild(tenant: string, points: readonly PointRecord[], mapDigests: MapDigests): Promise<void> {
    await this.db.transaction(() => {
      for (const key of this.db.getKeys({ start: `${tenant}:`, end: `${tenant};` })) this.db.remove(key);
    });
    for (const p of points) {
      await mapDigests(p, async (digests) => {
        await this.db.transaction(() => {
          for (let i = 0; i < digests.length; i += 32) {
            const d = Buffer.from(digests.subarray(i, i + 32)).toString('hex');
            if (!/^0+$/.test(d)) this.db.put(`${tenant}:${d}`, 1);
          }
        });
      });
    }
    await this.db.put(`#points:${tenant}`, points.map((p) => p.id));
  }

  async close(): Promise<void> {
    await this.syncing?.catch(() => undefined);
    await this.db.close();
  }
}
