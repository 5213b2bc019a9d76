/**
 * The chunk index on LMDB (the engine's ChunkIndex, as backups use it) against
 * classic-level (LevelDB, the design card's `level` and the version 1 index) on the
 * same keys in the same run: 32-byte random digests -> 45-byte locations; durable
 * batched writes (one transaction / synced batch per 1024 entries, as one sealed
 * container's entries), then lookups in batches of 256 (one backup window), hits and
 * misses, after a reopen so reads come from the files.
 *
 *   npm run build && node dist/bench/index.js [--quick] [--json FILE]
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { ClassicLevel } from 'classic-level';
import { ChunkIndex, type ChunkLocation } from '../engine/chunk-index.js';
import { Rng } from './_data.js';
import { machineInfo, parseArgs, printMachine, printTable, watchOtherLoad, writeJson } from './_report.js';

const BATCH_PUT = 1024;
const BATCH_GET = 256;

interface Row {
  store: string;
  op: string;
  ops: number;
  opsPerSec: number;
}

function keys(rng: Rng, n: number): Buffer[] {
  const all = Buffer.alloc(n * 32);
  rng.fill(all);
  return Array.from({ length: n }, (_, i) => all.subarray(i * 32, (i + 1) * 32));
}

function loc(i: number): ChunkLocation {
  return { containerId: (i % 65536).toString(16).padStart(32, '0'), offset: i * 64, rawLength: 262144, storedLength: 100000 + (i % 1000), checkHash: BigInt(i), codec: 2 };
}

async function timed(store: string, op: string, ops: number, body: () => Promise<void>): Promise<Row> {
  const t0 = performance.now();
  await body();
  return { store, op, ops, opsPerSec: ops / ((performance.now() - t0) / 1000) };
}

async function benchLmdb(dir: string, ks: Buffer[], probes: Buffer[], misses: Buffer[]): Promise<Row[]> {
  const path = join(dir, 'index.mdb');
  let index = ChunkIndex.open(path);
  const rows: Row[] = [];
  rows.push(
    await timed('lmdb', `durable put, ${BATCH_PUT} per transaction`, ks.length, async () => {
      for (let i = 0; i < ks.length; i += BATCH_PUT) await index.putMany(ks.slice(i, i + BATCH_PUT).map((k, j) => [k, loc(i + j)]));
    }),
  );
  await index.close();
  index = ChunkIndex.open(path);
  const lookup = async (list: Buffer[], expect: boolean) => {
    for (let i = 0; i < list.length; i += BATCH_GET) {
      const got = await index.getMany(list.slice(i, i + BATCH_GET));
      if ((got[0] !== undefined) !== expect) throw new Error('unexpected lookup result');
    }
  };
  await lookup(probes, true); // warm-up
  rows.push(await timed('lmdb', `lookup hits, ${BATCH_GET} per call`, probes.length, () => lookup(probes, true)));
  rows.push(await timed('lmdb', `lookup misses, ${BATCH_GET} per call`, misses.length, () => lookup(misses, false)));
  await index.close();
  return rows;
}

async function benchLevel(dir: string, ks: Buffer[], probes: Buffer[], misses: Buffer[]): Promise<Row[]> {
  const opts = { keyEncoding: 'buffer', valueEncoding: 'buffer' } as const;
  let db = new ClassicLevel<Buffer, Buffer>(join(dir, 'level'), opts);
  await db.open();
  const rows: Row[] = [];
  rows.push(
    await timed('classic-level', `durable put, ${BATCH_PUT} per synced batch`, ks.length, async () => {
      for (let i = 0; i < ks.length; i += BATCH_PUT) {
        const ops = ks.slice(i, i + BATCH_PUT).map((k, j) => ({ type: 'put' as const, key: k, value: Buffer.alloc(45, j) }));
        await db.batch(ops, { sync: true } as never);
      }
    }),
  );
  await db.close();
  db = new ClassicLevel<Buffer, Buffer>(join(dir, 'level'), opts);
  await db.open();
  const lookup = async (list: Buffer[], expect: boolean) => {
    for (let i = 0; i < list.length; i += BATCH_GET) {
      const got = await db.getMany(list.slice(i, i + BATCH_GET));
      if ((got[0] !== undefined) !== expect) throw new Error('unexpected lookup result');
    }
  };
  await lookup(probes, true);
  rows.push(await timed('classic-level', `lookup hits, ${BATCH_GET} per call`, probes.length, () => lookup(probes, true)));
  rows.push(await timed('classic-level', `lookup misses, ${BATCH_GET} per call`, misses.length, () => lookup(misses, false)));
  await db.close();
  return rows;
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  const machine = machineInfo();
  printMachine(machine);
  const otherLoad = watchOtherLoad();
  const n = args.quick ? 100_000 : 1_000_000;
  const rng = new Rng(7);
  const ks = keys(rng, n);
  const probes = rng.shuffle(ks.slice()).slice(0, Math.min(n, 200_000));
  const misses = keys(rng, probes.length);
  const dir = mkdtempSync(join(tmpdir(), 'chunkvault-bench-index-'));
  try {
    const rows = [...(await benchLmdb(dir, ks, probes, misses)), ...(await benchLevel(dir, ks, probes, misses))];
    const ratio = (op: string) => {
      const a = rows.find((r) => r.store === 'lmdb' && r.op.startsWith(op))!;
      const b = rows.find((r) => r.store === 'classic-level' && r.op.startsWith(op))!;
      return (a.opsPerSec / b.opsPerSec).toFixed(2);
    };
    printTable(
      ['store', 'operation', 'ops', 'ops/s'],
      rows.map((r) => [r.store, r.op, String(r.ops), Math.round(r.opsPerSec).toLocaleString('en-US')]),
    );
    const ratios = { put: ratio('durable put'), hits: ratio('lookup hits'), misses: ratio('lookup misses') };
    console.log(`lmdb / classic-level: durable put ${ratios.put}x, lookup hits ${ratios.hits}x, lookup misses ${ratios.misses}x (${n} keys; other load ${(otherLoad() * 100).toFixed(0)}% of the machine)`);
    if (args.json) writeJson(args.json, { machine, keys: n, rows, ratios });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
