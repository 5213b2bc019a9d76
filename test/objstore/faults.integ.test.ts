/**
 * An s3:// repository on a real Ceph RGW under faults: wrong credentials, a bucket
 * that does not exist, a prefix without a repository, init twice, a container object
 * damaged in the bucket (verify --read-data and restore name it), two processes
 * (two agents, two caches) backing up different VMs into one bucket at once, radosgw
 * stopped and restarted in the middle of a backup, a backup killed mid-way (only
 * unreferenced objects, which GC removes), and the cross-agent GC lease and session
 * markers, a store that is full (user quota). Every test that leaves points behind ends
 * with a full check of the repository.
 */
import { randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import {
  backupOk,
  checkRepo,
  cli,
  cliFails,
  cliOk,
  ensureBuilt,
  initRepo,
  listPoints,
  makeImage,
  makeRandomImage,
  makeTempDir,
  MiB,
  removeTempDir,
  restoreSha,
  sha256File,
  startCli,
  waitFor,
} from '../helpers/cli.js';
import { describeWithPeersHint } from '../fixtures/peers.js';
import { CEPH_BINARIES, CEPH_INSTALL } from '../storage/_rgw.js';
import { createBucket } from '../../engine/storage/index.js';
import { rgwBackend, type RgwBackend } from './_backends.js';

let dir: string;
let rgw: RgwBackend;

/** Keys under `prefix` in the test bucket. */
async function keysUnder(prefix: string): Promise<string[]> {
  const store = rgw.store();
  try {
    const out: string[] = [];
    for await (const e of store.list(prefix)) out.push(e.key);
    return out;
  } finally {
    await store.close();
  }
}

describeWithPeersHint('s3:// repositories on Ceph RGW under faults', CEPH_BINARIES, CEPH_INSTALL, () => {
  beforeAll(async () => {
    ensureBuilt();
    dir = await makeTempDir('objstore-faults');
    rgw = await rgwBackend(dir);
  });
  afterAll(async () => {
    await rgw?.stop();
    await removeTempDir(dir);
  });

  it('reports wrong credentials, a missing bucket, a missing repository and a second init, typed', async () => {
    const repo = rgw.repo('typed');
    await initRepo(repo);
    await cliFails(['init', repo, '--json'], 'REPO_EXISTS');
    await cliFails(['points', '--repo', repo, '--json'], 'STORE_AUTH_FAILED', { env: { AWS_SECRET_ACCESS_KEY: 'wrong-secret-0123456789' } });
    await cliFails(['points', '--repo', repo, '--json'], 'STORE_AUTH_FAILED', { env: { AWS_ACCESS_KEY_ID: 'NOSUCHKEY0123456789' } });
    await cliFails(['init', 's3://no-such-bucket-cv/x', '--json'], 'BUCKET_NOT_FOUND');
    await cliFails(['points', '--repo', 's3://no-such-bucket-cv/x', '--json'], 'BUCKET_NOT_FOUND');
    await cliFails(['points', '--repo', rgw.repo('nothing-here'), '--json'], 'REPO_NOT_FOUND');
    await checkRepo(repo);
  });

  it('fails a backup into a full store typed (user quota), leaving no point', async () => {
    const uid = `small-${randomBytes(3).toString('hex')}`;
    const accessKeyId = `SMALL${randomBytes(6).toString('hex').toUpperCase()}`;
    const secretAccessKey = randomBytes(15).toString('hex');
    await rgw.cluster.tool('radosgw-admin', ['user', 'create', `--uid=${uid}`, `--display-name=${uid}`, `--access-key=${accessKeyId}`, `--secret-key=${secretAccessKey}`]);
    await rgw.cluster.tool('radosgw-admin', ['quota', 'set', '--quota-scope=user', `--uid=${uid}`, '--max-size=4194304']);
    await rgw.cluster.tool('radosgw-admin', ['quota', 'enable', '--quota-scope=user', `--uid=${uid}`]);
    const e = rgw.cluster.env;
    await createBucket({ bucket: `${uid}-b`, endpoint: e.endpoint, region: e.region, credentials: { accessKeyId, secretAccessKey } });
    const env = { AWS_ACCESS_KEY_ID: accessKeyId, AWS_SECRET_ACCESS_KEY: secretAccessKey };
    const repo = `s3://${uid}-b/full`;
    await cliOk(['init', repo, '--json'], { env });
    const image = join(dir, 'full.img');
    await makeRandomImage(image, 20 * MiB, 'full');
    await cliFails(['backup', image, '--repo', repo, '--vm', 'vm-f', '--json'], 'STORE_FULL', { env });
    const points = await cliOk(['points', '--repo', repo, '--json'], { env });
    expect(points.json).toEqual([]);
  });

  it('detects a container object damaged in the bucket (verify --read-data, restore)', async () => {
    const repo = rgw.repo('corrupt');
    await initRepo(repo);
    const image = join(dir, 'corrupt.img');
    await makeRandomImage(image, 3 * MiB, 'corrupt');
    const b = await backupOk(repo, image, 'vm-c');
    const [key] = await keysUnder('corrupt/containers/');
    expect(key).toBeDefined();
    const store = rgw.store();
    try {
      const data = await store.get(key!);
      data[200] ^= 0xff; // inside the first record's payload
      await store.put(key!, data);
    } finally {
      await store.close();
    }
    const v = await cli(['verify', '--repo', repo, '--read-data', '--json']);
    expect(v.code).not.toBe(0);
    expect(v.json.ok).toBe(false);
    expect(v.json.problems.some((p: { code: string; points: string[] }) => p.code === 'CHUNK_CORRUPT' && p.points.includes(b.point)), v.stdout).toBe(true);
    await cliFails(['restore', b.point, '--repo', repo, '--output', join(dir, 'corrupt-out.img'), '--json', ...rgw.machine('corrupt-fresh')], 'CHUNK_CORRUPT');
  });

  it('takes two backups of different VMs into one bucket at once, from two agents', async () => {
    const repo = rgw.repo('two');
    await initRepo(repo);
    const images = await Promise.all(['a', 'b'].map(async (n) => {
      const p = join(dir, `two-${n}.img`);
      await makeImage(p, 40 * MiB + 17, `two-${n}`);
      return p;
    }));
    const runs = images.map((img, i) => cliOk(['backup', img, '--repo', repo, '--vm', `vm-${i}`, '--json', ...rgw.machine(`agent-${i}`)]));
    const [a, b] = await Promise.all(runs);
    const third = rgw.machine('agent-third');
    const listed = await listPoints(repo, third);
    expect(listed.map((p) => p.id).sort()).toEqual([a!.json.point, b!.json.point].sort());
    expect(await restoreSha(repo, a!.json.point, dir, third)).toBe(await sha256File(images[0]!));
    expect(await restoreSha(repo, b!.json.point, dir, third)).toBe(await sha256File(images[1]!));
    // Each agent then backs up incrementally on top of its own point, deduplicating against both.
    const again = await cliOk(['backup', images[1]!, '--repo', repo, '--vm', 'vm-1', '--json', ...rgw.machine('agent-0')]);
    expect(again.json.chunksNew).toBe(0);
    await checkRepo(repo);
  });

  it('survives radosgw stopped and restarted in the middle of a backup; no partial point; the next backup is exact', async () => {
    const repo = rgw.repo('outage');
    await initRepo(repo);
    const image = join(dir, 'outage.img');
    await makeRandomImage(image, 96 * MiB, 'outage');
    const run = startCli(['backup', image, '--repo', repo, '--vm', 'vm-o', '--json']);
    await waitFor(async () => (await keysUnder('outage/containers/')).length >= 1, 60_000, 50);
    await rgw.cluster.stopGateway();
    await new Promise((r) => setTimeout(r, 3000));
    await rgw.cluster.start();
    const r = await run.result;
    console.info(`backup across a 3 s radosgw outage: exit ${r.code} after ${r.durationMs} ms${r.code === 0 ? '' : ` (${r.json?.error?.code})`}`);
    const points = await listPoints(repo);
    if (r.code === 0) {
      expect(points.map((p) => p.id)).toEqual([r.json.point]);
      expect(await restoreSha(repo, r.json.point, dir)).toBe(await sha256File(image));
    } else {
      expect(r.json?.error?.code, r.stderr).toMatch(/STORE_UNAVAILABLE|TIMEOUT/);
      expect(points).toEqual([]);
    }
    const next = await backupOk(repo, image, 'vm-o');
    expect(await restoreSha(repo, next.point, dir, rgw.machine('outage-fresh'))).toBe(await sha256File(image));
    await checkRepo(repo);
  });

  it('a backup killed mid-way leaves only unreferenced objects, which gc removes (and an orphan map)', async () => {
    const repo = rgw.repo('killed');
    await initRepo(repo);
    const image = join(dir, 'killed.img');
    await makeRandomImage(image, 96 * MiB, 'killed');
    const run = startCli(['backup', image, '--repo', repo, '--vm', 'vm-k', '--json']);
    await waitFor(async () => (await keysUnder('killed/containers/')).length >= 1, 60_000, 50);
    run.child.kill('SIGKILL');
    await run.result;
    expect(await listPoints(repo)).toEqual([]);
    expect(await keysUnder('killed/catalog/')).toEqual([]);
    // The killed process's session marker would hold GC off until it expires: remove it as an operator would.
    const store = rgw.store();
    try {
      for (const k of await keysUnder('killed/locks/sessions/')) await store.delete(k);
      // A map whose record PUT never happened (a connection dropped at the commit).
      await store.put('killed/maps/ab/abcdef0123456789.map', new Uint8Array(96));
    } finally {
      await store.close();
    }
    const gc = await cliOk(['gc', '--repo', repo, '--wait', '--json']);
    expect(gc.json.bytesFreed, gc.stdout).toBeGreaterThan(0);
    expect(await keysUnder('killed/containers/')).toEqual([]);
    expect(await keysUnder('killed/maps/')).toEqual([]);
    const b = await backupOk(repo, image, 'vm-k');
    expect(await restoreSha(repo, b.point, dir)).toBe(await sha256File(image));
    await checkRepo(repo);
  });

  it('GC and sessions of different agents exclude each other through the bucket', async () => {
    const repo = rgw.repo('lease');
    await initRepo(repo);
    const image = join(dir, 'lease.img');
    await makeImage(image, 2 * MiB, 'lease');
    await backupOk(repo, image, 'vm-l');
    const store = rgw.store();
    const future = new Date(Date.now() + 600_000).toISOString();
    const past = new Date(Date.now() - 1000).toISOString();
    const body = (expires: string) => new TextEncoder().encode(JSON.stringify({ owner: randomBytes(8).toString('hex'), agent: 'elsewhere', host: 'other', pid: 1, kind: 'backup', expires }));
    try {
      // A live session of another agent: GC refuses and gives the lease back.
      await store.put('lease/locks/sessions/elsewhere-1.json', body(future));
      await cliFails(['gc', '--repo', repo, '--json'], 'REPO_BUSY');
      expect(await keysUnder('lease/locks/gc.lease')).toEqual([]);
      // An expired marker (a crashed agent) does not block.
      await store.put('lease/locks/sessions/elsewhere-1.json', body(past));
      await cliOk(['gc', '--repo', repo, '--json']);
      // A live GC lease of another agent: backups and GC refuse; an expired one is taken over.
      await store.put('lease/locks/gc.lease', body(future));
      await cliFails(['backup', image, '--repo', repo, '--vm', 'vm-l', '--json'], 'GC_RUNNING');
      await cliFails(['gc', '--repo', repo, '--json'], 'GC_RUNNING');
      await store.put('lease/locks/gc.lease', body(past));
      await cliOk(['gc', '--repo', repo, '--json']);
      expect(await keysUnder('lease/locks/gc.lease')).toEqual([]);
      await backupOk(repo, image, 'vm-l');
      expect(await keysUnder('lease/locks/sessions/')).toEqual(['lease/locks/sessions/elsewhere-1.json']);
    } finally {
      await store.close();
    }
    await fsp.rm(join(dir, 'lease.img'), { force: true });
    await checkRepo(repo);
  });
});
