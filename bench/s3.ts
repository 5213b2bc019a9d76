/**
 * Object-store throughput: PUT and GET of 32 MiB objects with 1, 4 and 8 in flight.
 *
 *   node dist/bench/s3.js [--quick] [--json FILE]
 *
 * Back ends:
 * - s3 store: S3Store against a real single-node Ceph RGW (tools/ceph-rgw.sh; set
 *   CHUNKVAULT_CEPH_DIR to reuse a running cluster, else one is built in a temp dir and
 *   stopped at the end): 16 MiB parts, Content-MD5 on every part, ETag read back, every
 *   GET re-hashed (the integrity the store promises);
 * - s3 store, verifyReads off: the same without re-hashing GETs;
 * - s3 bare SDK: one PutObject / GetObject per object with no checksum of ours, i.e.
 *   what the cluster gives a plain client;
 * - local dir: LocalDirStore on the local disk (tmp + fdatasync + rename + dir fsync).
 *   Its GETs come from the page cache (the objects were just written).
 *
 * Each object holds random bytes (nothing compresses or dedups). A row is the best of
 * two runs of N objects (16, or 8 with --quick); the objects are deleted after each
 * row. Rates are decimal MB/s of object bytes over wall time.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DeleteObjectCommand, GetObjectCommand, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { LocalDirStore, S3Store, createBucket, type ObjectStore } from '../engine/storage/index.js';
import { machineInfo, parseArgs, printMachine, printTable, watchOtherLoad, writeJson } from './_report.js';

const MIB = 1024 * 1024;
const OBJECT_BYTES = 32 * MIB;
const IN_FLIGHT = [1, 4, 8] as const;
const SCRIPT = fileURLToPath(new URL('../../tools/ceph-rgw.sh', import.meta.url));

interface Row {
  backend: string;
  inFlight: number;
  putMBps: number;
  getMBps: number;
}

/** The minimal surface a row needs: put, get and delete one object. */
interface Target {
  put(key: string, data: Uint8Array): Promise<void>;
  get(key: string): Promise<number>;
  delete(key: string): Promise<void>;
}

function storeTarget(store: ObjectStore): Target {
  return {
    put: (key, data) => store.put(key, data),
    get: async (key) => (await store.get(key)).byteLength,
    delete: (key) => store.delete(key),
  };
}

function bareTarget(client: S3Client, bucket: string): Target {
  return {
    put: async (key, data) => {
      await client.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: data, ContentLength: data.byteLength }));
    },
    get: async (key) => {
      const out = await client.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
      return (await out.Body?.transformToByteArray())?.byteLength ?? 0;
    },
    delete: async (key) => {
      await client.send(new DeleteObjectCommand({ Bucket: bucket, Key: key }));
    },
  };
}

/** Runs `op(i)` for i in [0, count) with `inFlight` at a time; returns wall seconds. */
async function pool(count: number, inFlight: number, op: (i: number) => Promise<unknown>): Promise<number> {
  let next = 0;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: inFlight }, async () => {
      while (next < count) await op(next++);
    }),
  );
  return (performance.now() - t0) / 1000;
}

async function measure(target: Target, data: Uint8Array, count: number, inFlight: number): Promise<{ put: number; get: number }> {
  let best = { put: 0, get: 0 };
  for (let run = 0; run < 2; run++) {
    const keys = Array.from({ length: count }, (_, i) => `bench/${run}-${inFlight}-${i}`);
    const putS = await pool(count, inFlight, (i) => target.put(keys[i] as string, data));
    const getS = await pool(count, inFlight, async (i) => {
      if ((await target.get(keys[i] as string)) !== data.byteLength) throw new Error('short GET');
    });
    await pool(count, 8, (i) => target.delete(keys[i] as string));
    const mb = (count * data.byteLength) / 1e6;
    best = { put: Math.max(best.put, mb / putS), get: Math.max(best.get, mb / getS) };
  }
  return best;
}

function startCluster(): { dir: string; env: Map<string, string>; stop: () => void } {
  const reused = process.env['CHUNKVAULT_CEPH_DIR'];
  const dir = reused ?? mkdtempSync(join(tmpdir(), 'cv-ceph-bench-'));
  const t0 = Date.now();
  execFileSync(SCRIPT, ['start', dir], { stdio: ['ignore', 'ignore', 'inherit'], env: { ...process.env, CEPH_RGW_QUIET: '1' } });
  console.log(`ceph-rgw ${reused ? 'reused' : 'built'} in ${Date.now() - t0} ms (${dir})`);
  const env = new Map<string, string>();
  for (const line of readFileSync(join(dir, 'env'), 'utf8').split('\n')) {
    const at = line.indexOf('=');
    if (at > 0) env.set(line.slice(0, at), line.slice(at + 1));
  }
  return {
    dir,
    env,
    stop: () => {
      if (reused) return;
      execFileSync(SCRIPT, ['stop', dir], { stdio: 'ignore' });
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  const machine = machineInfo();
  printMachine(machine);
  const count = args.quick ? 8 : 16;
  const data = randomBytes(OBJECT_BYTES);
  const cluster = startCluster();
  const localDir = mkdtempSync(join(tmpdir(), 'cv-local-bench-'));
  const otherLoad = watchOtherLoad();
  const rows: Row[] = [];
  try {
    const s3 = {
      bucket: `bench-${randomBytes(4).toString('hex')}`,
      endpoint: cluster.env.get('AWS_ENDPOINT_URL') as string,
      region: 'us-east-1',
      credentials: {
        accessKeyId: cluster.env.get('AWS_ACCESS_KEY_ID') as string,
        secretAccessKey: cluster.env.get('AWS_SECRET_ACCESS_KEY') as string,
      },
    };
    await createBucket(s3);
    const store = new S3Store(s3);
    const unverified = new S3Store({ ...s3, verifyReads: false });
    const bare = new S3Client({
      ...s3,
      forcePathStyle: true,
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
    });
    const local = new LocalDirStore(localDir);
    const targets: Array<[string, Target]> = [
      ['s3 store (RGW)', storeTarget(store)],
      ['s3 store, verifyReads off', storeTarget(unverified)],
      ['s3 bare SDK (RGW)', bareTarget(bare, s3.bucket)],
      ['local dir', storeTarget(local)],
    ];
    for (const [backend, target] of targets) {
      for (const inFlight of IN_FLIGHT) {
        const r = await measure(target, data, count, inFlight);
        rows.push({ backend, inFlight, putMBps: r.put, getMBps: r.get });
        console.log(`${backend} x${inFlight}: PUT ${r.put.toFixed(0)} MB/s, GET ${r.get.toFixed(0)} MB/s`);
      }
    }
    await Promise.all([store.close(), unverified.close()]);
    bare.destroy();
  } finally {
    rmSync(localDir, { recursive: true, force: true });
    cluster.stop();
  }
  const load = otherLoad();
  console.log();
  printTable(
    ['back end', 'in flight', 'PUT MB/s', 'GET MB/s'],
    rows.map((r) => [r.backend, String(r.inFlight), r.putMBps.toFixed(0), r.getMBps.toFixed(0)]),
  );
  console.log(`\n${count} objects of 32 MiB per run, best of 2; other processes kept ${load.toFixed(2)} cores busy on average`);
  if (args.json) writeJson(args.json, { machine, objectBytes: OBJECT_BYTES, count, otherLoad: load, rows });
}

main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
