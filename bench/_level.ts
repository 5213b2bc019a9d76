/**
 * Index access patterns on classic-level (LevelDB), shaped like the chunk index:
 * 32-byte random keys (SHA-256 digests) -> 45-byte values. These are async and
 * stateful (a key set, a reopened database), so they are timed directly over whole
 * passes with performance.now() rather than as benchmark.js cycles.
 *
 * Sequence: batch-write every key (batches of 1024, plus a separate set in batches
 * of 64), close and reopen (reads then come from sorted tables, not the memtable),
 * one unmeasured warm-up pass, then each read pattern over its own random order.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { ClassicLevel } from 'classic-level';
import { Rng } from './_data.js';

const KEY = 32;
const VALUE = 45;

export interface LevelResult {
  readonly name: string;
  readonly ops: number;
  readonly opsPerSec: number;
}

type Db = ClassicLevel<Buffer, Buffer>;

function randomKeys(rng: Rng, n: number, size: number): Buffer[] {
  const all = Buffer.alloc(n * size);
  rng.fill(all);
  return Array.from({ length: n }, (_, i) => all.subarray(i * size, (i + 1) * size));
}

async function timed(name: string, ops: number, body: () => Promise<void>): Promise<LevelResult> {
  const t0 = performance.now();
  await body();
  const s = (performance.now() - t0) / 1000;
  return { name, ops, opsPerSec: ops / s };
}

async function writeBatches(db: Db, keys: Buffer[], values: Buffer[], batch: number): Promise<void> {
  for (let i = 0; i < keys.length; i += batch) {
    const ops = [];
    for (let j = i; j < Math.min(i + batch, keys.length); j++) {
      ops.push({ type: 'put' as const, key: keys[j] as Buffer, value: values[j] as Buffer });
    }
    await db.batch(ops);
  }
}

async function getMany(db: Db, keys: Buffer[], batch: number, expectFound: boolean): Promise<void> {
  for (let i = 0; i < keys.length; i += batch) {
    const got = await db.getMany(keys.slice(i, i + batch));
    if ((got[0] !== undefined) !== expectFound) throw new Error('getMany returned an unexpected result');
  }
}

async function readPatterns(db: Db, rng: Rng, keys: Buffer[], lookups: number): Promise<LevelResult[]> {
  const order = (): Buffer[] => rng.shuffle(keys.slice()).slice(0, lookups);
  const misses = randomKeys(rng, lookups, KEY);
  const out: LevelResult[] = [];
  await getMany(db, order(), 1024, true); // warm-up: block cache and page cache
  out.push(
    await timed('get, awaited one by one', lookups, async () => {
      for (const k of order()) if ((await db.get(k)) === undefined) throw new Error('missing key');
    }),
  );
  out.push(
    await timed('getSync, one by one', lookups, async () => {
      for (const k of order()) if (db.getSync(k) === undefined) throw new Error('missing key');
    }),
  );
  out.push(
    await timed('get x64 in flight (Promise.all)', lookups, async () => {
      const ks = order();
      for (let i = 0; i < ks.length; i += 64) await Promise.all(ks.slice(i, i + 64).map((k) => db.get(k)));
    }),
  );
  for (const batch of [64, 256, 1024]) {
    out.push(await timed(`getMany batch ${batch}`, lookups, () => getMany(db, order(), batch, true)));
  }
  out.push(await timed('get misses, awaited one by one', lookups, async () => {
    for (const k of misses) if ((await db.get(k)) !== undefined) throw new Error('unexpected hit');
  }));
  out.push(await timed('getMany misses batch 256', lookups, () => getMany(db, misses, 256, false)));
  return out;
}

/**
 * Runs every index pattern on a fresh database of `keyCount` entries under the
 * system temp directory, with `lookups` reads per read pattern; always removes it.
 */
export async function benchLevel(keyCount: number, lookups: number, seed: number): Promise<LevelResult[]> {
  const dir = mkdtempSync(join(tmpdir(), 'chunkvault-bench-level-'));
  const rng = new Rng(seed);
  const opts = { keyEncoding: 'buffer', valueEncoding: 'buffer' } as const;
  try {
    const keys = randomKeys(rng, keyCount, KEY);
    const values = randomKeys(rng, keyCount, VALUE);
    const extra = Math.floor(keyCount / 4);
    const keys64 = randomKeys(rng, extra, KEY);
    let db: Db = new ClassicLevel<Buffer, Buffer>(dir, opts);
    await db.open();
    const out: LevelResult[] = [];
    out.push(await timed('batch put, 1024 per batch', keyCount, () => writeBatches(db, keys, values, 1024)));
    out.push(await timed('batch put, 64 per batch', extra, () => writeBatches(db, keys64, values.slice(0, extra), 64)));
    await db.close();
    db = new ClassicLevel<Buffer, Buffer>(dir, opts);
    await db.open();
    try {
      out.push(...(await readPatterns(db, rng, keys, Math.min(lookups, keyCount))));
    } finally {
      await db.close();
    }
    return out;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
