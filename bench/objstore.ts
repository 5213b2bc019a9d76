/**
 * Backup and restore throughput of the whole program (the built CLI, one process per
 * command, as a user runs it) on a local-directory repository and on an s3://
 * repository on a real single-node Ceph RGW, beside raw S3 PUT/GET of the same bytes
 * through S3Store (bench/s3.ts has the full raw table).
 *
 *   node dist/bench/objstore.js [--quick] [--json FILE]
 *
 * RGW comes from tools/ceph-rgw.sh (CHUNKVAULT_CEPH_DIR reuses a running cluster,
 * else one is built in a temp dir and stopped at the end). The image holds random
 * bytes (nothing compresses; the first backup stores everything, the second finds
 * every chunk in the index). Rows:
 * - backup (new): a full backup of the image into an empty repository;
 * - backup (dedup): the same image again (reads and hashes, stores nothing);
 * - restore: the first point to a file, with the cache that wrote it;
 * - restore, empty cache (s3 only): as on a new machine: catalog and maps pulled,
 *   index filled from the container footers, then the restore;
 * - raw PUT / GET: S3Store, 32 MiB objects, 4 in flight, verifyReads off (the
 *   engine's setting: records carry their own hashes).
 * Rates are decimal MB/s of image bytes over wall time, best of two runs.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { S3Store, createBucket } from '../engine/storage/index.js';
import { machineInfo, parseArgs, printMachine, printTable, watchOtherLoad, writeJson } from './_report.js';

const MIB = 1024 * 1024;
const SCRIPT = fileURLToPath(new URL('../../tools/ceph-rgw.sh', import.meta.url));
const CLI = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));

interface Rgw {
  readonly env: Record<string, string>;
  stop(): void;
}

function startRgw(): Rgw {
  const reused = process.env['CHUNKVAULT_CEPH_DIR'];
  const dir = reused ?? mkdtempSync(join(tmpdir(), 'cv-ceph-bench-'));
  execFileSync(SCRIPT, ['start', dir], { env: { ...process.env, CEPH_RGW_QUIET: '1' }, stdio: 'inherit', timeout: 180_000 });
  const env: Record<string, string> = {};
  for (const line of readFileSync(join(dir, 'env'), 'utf8').split('\n')) {
    const at = line.indexOf('=');
    if (at > 0) env[line.slice(0, at)] = line.slice(at + 1);
  }
  return {
    env,
    stop: () => {
      if (reused) return;
      execFileSync(SCRIPT, ['stop', dir], { stdio: 'inherit' });
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Runs the CLI; returns its wall time in seconds. */
function run(args: readonly string[], env: NodeJS.ProcessEnv): number {
  const t0 = process.hrtime.bigint();
  execFileSync(process.execPath, [CLI, ...args], { env: { ...env, CHUNKVAULT_NO_PROGRESS: '1', NODE_NO_WARNINGS: '1' }, stdio: ['ignore', 'ignore', 'inherit'] });
  return Number(process.hrtime.bigint() - t0) / 1e9;
}

interface Row {
  backend: string;
  step: string;
  mbps: number;
}

/** Backup, backup again, restore (and restore from an empty cache) on one repository location. */
function measureRepo(backend: string, repo: string, image: string, size: number, work: string, env: NodeJS.ProcessEnv, s3: boolean): Row[] {
  const best: Record<string, number> = {};
  const note = (step: string, seconds: number) => (best[step] = Math.max(best[step] ?? 0, size / seconds / 1e6));
  for (let round = 0; round < 2; round++) {
    const r = `${repo}-${round}`;
    const cache = (name: string) => (s3 ? ['--cache', join(work, `cache-${round}-${name}`)] : []);
    run(['init', r], env);
    note('backup (new)', run(['backup', image, '--repo', r, '--vm', 'bench', ...cache('a')], env));
    note('backup (dedup)', run(['backup', image, '--repo', r, '--vm', 'bench', ...cache('a')], env));
    const out = join(work, 'restored.img');
    note('restore', run(['restore', 'latest', '--repo', r, '--output', out, ...cache('a')], env));
    rmSync(out, { force: true });
    if (s3) {
      note('restore, empty cache', run(['restore', 'latest', '--repo', r, '--output', out, ...cache('b')], env));
      rmSync(out, { force: true });
    } else rmSync(r, { recursive: true, force: true });
  }
  return Object.entries(best).map(([step, mbps]) => ({ backend, step, mbps }));
}

async function rawRows(store: S3Store, data: Uint8Array, total: number): Promise<Row[]> {
  const count = Math.ceil(total / data.length);
  const timed = async (fn: (i: number) => Promise<unknown>): Promise<number> => {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < count; i += 4) await Promise.all([0, 1, 2, 3].filter((j) => i + j < count).map((j) => fn(i + j)));
    return (count * data.length) / (Number(process.hrtime.bigint() - t0) / 1e9) / 1e6;
  };
  let put = 0;
  let get = 0;
  for (let round = 0; round < 2; round++) {
    put = Math.max(put, await timed((i) => store.put(`raw/${i}`, data)));
    get = Math.max(get, await timed((i) => store.get(`raw/${i}`)));
    for (let i = 0; i < count; i++) await store.delete(`raw/${i}`);
  }
  return [
    { backend: 'raw S3Store (RGW)', step: 'PUT, 4 in flight', mbps: put },
    { backend: 'raw S3Store (RGW)', step: 'GET, 4 in flight', mbps: get },
  ];
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  const machine = machineInfo();
  printMachine(machine);
  const size = (args.quick ? 128 : 512) * MIB;
  const work = mkdtempSync(join(tmpdir(), 'cv-objstore-bench-'));
  const image = join(work, 'image.raw');
  writeFileSync(image, randomBytes(size));
  const rgw = startRgw();
  const otherLoad = watchOtherLoad();
  const rows: Row[] = [];
  try {
    const bucket = `bench-${randomBytes(4).toString('hex')}`;
    const s3 = {
      bucket,
      endpoint: rgw.env['AWS_ENDPOINT_URL'] as string,
      region: 'us-east-1',
      credentials: { accessKeyId: rgw.env['AWS_ACCESS_KEY_ID'] as string, secretAccessKey: rgw.env['AWS_SECRET_ACCESS_KEY'] as string },
    };
    await createBucket(s3);
    const env = { ...process.env, ...rgw.env, CHUNKVAULT_S3_ENDPOINT: s3.endpoint };
    rows.push(...measureRepo('local dir', join(work, 'repo'), image, size, work, env, false));
    rows.push(...measureRepo('s3:// on RGW', `s3://${bucket}/repo`, image, size, work, env, true));
    const store = new S3Store({ ...s3, verifyReads: false });
    rows.push(...(await rawRows(store, new Uint8Array(randomBytes(32 * MIB)), size)));
    await store.close();
  } finally {
    rmSync(work, { recursive: true, force: true });
    rgw.stop();
  }
  const load = otherLoad();
  console.log();
  printTable(['back end', 'step', 'MB/s'], rows.map((r) => [r.backend, r.step, r.mbps.toFixed(0)]));
  console.log(`\nimage ${size / MIB} MiB of random bytes, best of 2; other processes kept ${load.toFixed(2)} cores busy on average`);
  if (args.json) writeJson(args.json, { machine, imageBytes: size, otherLoad: load, rows });
}

main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
