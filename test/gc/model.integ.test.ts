/**
 * Model-based stress test of retention and GC (kopia's repomodel idea): a seeded
 * random sequence of backups (with random writes, zero runs and data copied between
 * VMs), forgets and GCs, checked after every step against a simple model (the
 * SHA-256 of every point's image): every remaining point restores exactly, verify
 * --read-data passes, and after a finished GC the index holds exactly the chunks
 * the remaining points reference.
 */
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { forget, gc, Repository, verify, type PointRecord } from '../../engine/index.js';
import { MapReader, isZeroDigest, mapPath } from '../../engine/point-map.js';
import { toHex } from '../../engine/_bytes.js';
import { makeTempDir, prng, removeTempDir } from '../helpers/cli.js';
import { backupMemory, restoredSha, shaOf, smallRepo } from './_engine.js';

const CHUNK = 64 * 1024;
const DISK = 48 * CHUNK + 1000;
const VMS = ['alpha', 'beta', 'gamma'];
const STEPS = Number(process.env.GC_MODEL_STEPS ?? 45);

let dir: string;

beforeAll(async () => {
  dir = await makeTempDir('gc-model');
});

afterAll(async () => {
  await removeTempDir(dir);
});

interface World {
  repo: Repository;
  rand: () => number;
  images: Map<string, Uint8Array>;
  /** The model: point id -> SHA-256 of its image. */
  points: Map<string, string>;
  latest: Map<string, PointRecord>;
  /** The last point made per VM: an incremental is only valid against it (changed extents are since then). */
  lastMade: Map<string, string>;
}

function mutate(w: World, vm: string): { offset: number; length: number }[] {
  const img = w.images.get(vm)!;
  const changed: { offset: number; length: number }[] = [];
  const writes = 1 + Math.floor(w.rand() * 4);
  for (let i = 0; i < writes; i++) {
    const offset = Math.floor(w.rand() * (img.length - 1));
    const length = Math.min(img.length - offset, 1 + Math.floor(w.rand() * 3 * CHUNK));
    const kind = w.rand();
    const region = img.subarray(offset, offset + length);
    if (kind < 0.2) region.fill(0);
    else if (kind < 0.4) {
      // Copy from another VM: cross-VM dedup and shared chunks.
      const other = w.images.get(VMS[Math.floor(w.rand() * VMS.length)]!)!;
      region.set(other.subarray(offset, offset + length));
    } else for (let j = 0; j < length; j++) region[j] = Math.floor(w.rand() * 256);
    changed.push({ offset, length });
  }
  return changed;
}

async function stepBackup(w: World): Promise<string> {
  const vm = VMS[Math.floor(w.rand() * VMS.length)]!;
  const parent = w.latest.get(vm) ?? null;
  const changed = mutate(w, vm);
  const img = w.images.get(vm)!;
  const incremental = parent !== null && parent.id === w.lastMade.get(vm) && w.rand() < 0.7;
  const p = await backupMemory(w.repo, vm, img, parent, incremental ? changed : undefined);
  w.points.set(p.id, shaOf(img));
  w.latest.set(vm, p);
  w.lastMade.set(vm, p.id);
  return `backup ${vm} ${incremental ? 'incremental' : 'full'} -> ${p.id}`;
}

async function stepForget(w: World): Promise<string> {
  const all = await w.repo.catalog.list();
  if (all.length < 2) return 'forget: nothing';
  const victims = all.filter(() => w.rand() < 0.4);
  if (victims.length === 0) return 'forget: none chosen';
  await forget(w.repo, { points: victims.map((p) => p.id) });
  for (const v of victims) w.points.delete(v.id);
  const remaining = await w.repo.catalog.list();
  for (const vm of VMS) {
    const last = remaining.filter((p) => p.vm === vm).at(-1);
    if (last) w.latest.set(vm, last);
    else w.latest.delete(vm);
  }
  return `forget ${victims.map((v) => v.id).join(' ')}`;
}

async function stepGc(w: World): Promise<string> {
  const threshold = [0.05, 0.2, 0.5, 1][Math.floor(w.rand() * 4)]!;
  const r = await gc(w.repo, { compactThreshold: threshold });
  expect(r.status).toBe('done');
  await expectIndexExact(w);
  return `gc threshold ${threshold}: condemned ${r.chunksCondemned}, removed ${r.containersRemoved}, compacted ${r.containersCompacted}`;
}

/** After a finished GC the index holds exactly the referenced chunks. */
async function expectIndexExact(w: World): Promise<void> {
  const referenced = new Set<string>();
  for (const p of await w.repo.catalog.list()) {
    const map = await MapReader.open(mapPath(w.repo.dir, p.id));
    for await (const { digests } of map.windows()) {
      for (let at = 0; at < digests.length; at += 32) {
        const d = digests.subarray(at, at + 32);
        if (!isZeroDigest(d)) referenced.add(toHex(d));
      }
    }
    await map.close();
  }
  const index = await w.repo.index();
  expect(index.count()).toBe(referenced.size);
}

async function checkWorld(w: World, what: string): Promise<void> {
  const listed = await w.repo.catalog.list();
  expect(new Set(listed.map((p) => p.id)), what).toEqual(new Set(w.points.keys()));
  for (const p of listed) expect(await restoredSha(w.repo, p), `${what}: point ${p.id}`).toBe(w.points.get(p.id));
  const report = await verify(w.repo, { readData: true });
  expect(report.problems, what).toEqual([]);
}

describe('retention and GC against a model', () => {
  it(`keeps every remaining point exact over ${STEPS} random steps`, async () => {
    const root = join(dir, 'repo');
    await smallRepo(root, CHUNK);
    const rand = prng(Number(process.env.GC_MODEL_SEED ?? 20261124));
    const images = new Map(VMS.map((vm) => [vm, new Uint8Array(DISK)]));
    const w: World = { repo: await Repository.open(root), rand, images, points: new Map(), latest: new Map(), lastMade: new Map() };
    for (const vm of VMS) mutate(w, vm);
    const log: string[] = [];
    try {
      for (let i = 0; i < STEPS; i++) {
        const r = rand();
        const what = r < 0.5 ? await stepBackup(w) : r < 0.75 ? await stepForget(w) : await stepGc(w);
        log.push(`${i}: ${what}`);
        await checkWorld(w, log.join('\n'));
        if (process.env.GC_MODEL_LOG) console.log(log.at(-1));
      }
      // Forget everything but the newest per VM, collect, and the repository shrinks to that.
      await forget(w.repo, { policy: { keepLast: 1 } });
      for (const id of [...w.points.keys()]) if (![...w.latest.values()].some((p) => p.id === id)) w.points.delete(id);
      await stepGc(w);
      await checkWorld(w, 'final');
      const containers = await w.repo.containerIds();
      expect(containers.length).toBeGreaterThan(0);
      const leftovers = await fsp.readdir(join(root, 'tmp'));
      expect(leftovers).toEqual([]);
    } finally {
      await w.repo.close();
    }
  }, 600_000);
});
