/**
 * `estimate` throughput against the hashing limit, measured in the same run.
 *
 *   node dist/bench/estimate.js [--quick] [--json FILE]
 *
 * Image: 1 GiB (--quick: 256 MiB) of synthetic VM-like data (bench/_data.ts mix: text,
 * executable-like, random and zero pages), a quarter of it a copy of the first quarter
 * so dedup is exercised. The limit: single-core SHA-256 (node:crypto) of 256 KiB chunks
 * over an in-memory buffer, times the worker threads. Each estimate configuration runs
 * in process (the CLI's code path minus argument parsing) on the file in page cache.
 */
import { createHash } from 'node:crypto';
import { closeSync, openSync, readSync, rmSync, writeSync, mkdtempSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { FileSource } from '../adapters/index.js';
import type { CompressionSetting } from '../engine/index.js';
import { estimate, type EstimateReport } from '../src/estimate/index.js';
import { GIB, MIB, syntheticVmData } from './_data.js';
import { gbps, machineInfo, parseArgs, printMachine, printTable, watchOtherLoad, writeJson } from './_report.js';

const KIB = 1024;

function writeImage(path: string, size: number): void {
  const quarter = size / 4;
  const fd = openSync(path, 'w');
  try {
    let first: Buffer | undefined;
    for (let q = 0; q < 4; q++) {
      const data = q === 2 && first ? first : syntheticVmData(quarter, 100 + q);
      if (q === 0) first = data;
      writeSync(fd, data, 0, data.length, q * quarter);
    }
  } finally {
    closeSync(fd);
  }
}

/** Single-core SHA-256 of `chunk`-sized pieces of `data`, bytes per second (best of 3). */
function sha256Rate(data: Buffer, chunk: number): number {
  let best = 0;
  for (let round = 0; round < 3; round++) {
    const t0 = process.hrtime.bigint();
    for (let at = 0; at < data.length; at += chunk) createHash('sha256').update(data.subarray(at, at + chunk)).digest();
    const s = Number(process.hrtime.bigint() - t0) / 1e9;
    best = Math.max(best, data.length / s);
  }
  return best;
}

interface Config {
  readonly name: string;
  readonly chunkSizes: number[];
  readonly codecs: CompressionSetting[];
  readonly cdc: boolean;
  /** SHA-256 passes over the data this configuration needs (for the limit column). */
  readonly hashPasses: number;
}

const CONFIGS: Config[] = [
  { name: '256K, hash only', chunkSizes: [256 * KIB], codecs: [], cdc: false, hashPasses: 1 },
  { name: '64K..4M (4 sizes), hash only', chunkSizes: [64 * KIB, 256 * KIB, MIB, 4 * MIB], codecs: [], cdc: false, hashPasses: 4 },
  { name: '256K + zstd:1', chunkSizes: [256 * KIB], codecs: [{ codec: 'zstd', level: 1 }], cdc: false, hashPasses: 1 },
  { name: '256K fixed + CDC, hash only', chunkSizes: [256 * KIB], codecs: [], cdc: true, hashPasses: 2 },
  {
    name: 'defaults: 4 sizes x lz4,zstd:1,zstd:3',
    chunkSizes: [64 * KIB, 256 * KIB, MIB, 4 * MIB],
    codecs: [{ codec: 'lz4', level: 0 }, { codec: 'zstd', level: 1 }, { codec: 'zstd', level: 3 }],
    cdc: false,
    hashPasses: 4,
  },
];

async function runConfig(path: string, c: Config): Promise<EstimateReport> {
  return estimate({
    sources: [path],
    open: async (p) => {
      const source = await FileSource.open(p);
      return [{ source, name: 'bench.img', release: () => source.close() }];
    },
    chunkSizes: c.chunkSizes,
    codecs: c.codecs,
    cdc: c.cdc,
  });
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  const machine = machineInfo();
  printMachine(machine);
  const size = args.quick ? 256 * MIB : GIB;
  const dir = mkdtempSync(join(tmpdir(), 'chunkvault-bench-estimate-'));
  const image = join(dir, 'bench.img');
  try {
    writeImage(image, size);
    const sample = Buffer.alloc(256 * MIB);
    const fd = openSync(image, 'r');
    readSync(fd, sample, 0, sample.length, 0);
    closeSync(fd);
    const threads = availableParallelism();
    const sha1 = sha256Rate(sample, 256 * KIB);
    const limit = sha1 * threads;
    console.log(`image ${size / MIB} MiB; SHA-256 single core ${gbps(sha1)}; hashing limit (${threads} threads) ${gbps(limit)}`);
    const rows: string[][] = [];
    const results: unknown[] = [];
    for (const c of CONFIGS) {
      await runConfig(image, c); // warm-up: page cache, worker start
      const otherLoad = watchOtherLoad();
      const t0 = Date.now();
      const report = await runConfig(image, c);
      const s = (Date.now() - t0) / 1000;
      const rate = size / s;
      const perPass = limit / c.hashPasses;
      const load = otherLoad();
      rows.push([c.name, gbps(rate), gbps(perPass), `${((rate / perPass) * 100).toFixed(0)} %`, load.toFixed(2)]);
      results.push({ config: c.name, seconds: s, bytesPerSecond: rate, limitForConfig: perPass, otherLoad: load, schemes: report.schemes.map((x) => ({ kind: x.kind, chunkSize: x.chunkSize, dedupRatio: x.dedupRatio, codecs: x.codecs })) });
    }
    printTable(['configuration', 'estimate', 'limit (SHA-256 x threads / passes)', 'of limit', 'other load'], rows);
    if (args.json) writeJson(args.json, { machine, sizeBytes: size, sha256SingleCore: sha1, threads, limit, results });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
