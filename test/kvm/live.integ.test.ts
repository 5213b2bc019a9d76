/**
 * The `kvm+qmp:` front-end against a live QEMU (`qemu-system-x86_64 -machine none`,
 * no KVM needed) whose disk node `disk0` is written through a writable NBD export
 * named `guest` (our stand-in for the guest), also DURING each backup.
 *
 * For each backup: the expected image is read from the guest export just before the
 * backup starts (nothing else writes); once the front-end's transaction has run (its
 * `plan` returned), the test writes more through the guest export, some before the
 * engine reads and some while it reads. The point must restore byte-identical to the
 * expected image (so fleecing kept the old data), and those concurrent writes must
 * show up in the NEXT point (so the new bitmap caught them). After each backup QEMU
 * must hold no export, job or node of ours and exactly one bitmap: the point's token.
 * The bitmap survives a VM restart; a removed bitmap forces a full read; an aborted
 * backup cleans up and merges its bitmap back.
 */
import { readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { QmpClient, type FrontEnd } from '../../adapters/index.js';
import { Repository, isChunkvaultError, type PointRecord } from '../../engine/index.js';
import { frontEndFor, runBackupJob } from '../../src/jobs.js';
import { checkRepo, cliOk, ensureBuilt, initRepo, makeTempDir, prng, removeTempDir, sha256, type PointJson } from '../helpers/cli.js';
import { describeWithPeersHint, imageBitmaps, qemuIo, run, startQemuVm, type RunningVm } from '../fixtures/peers.js';

const MiB = 1024 * 1024;
const SIZE = 64 * MiB;
const HALF = SIZE / 2;
const VM = 'vm-live';
const INSTALL = 'apt-get install -y qemu-utils libnbd-bin && apt-get install -y --no-install-recommends qemu-system-x86';

/** One write through the guest export. */
interface GuestWrite {
  readonly offset: number;
  readonly length: number;
  readonly pattern: number;
}

const cmd = (w: GuestWrite): string => `write -P 0x${w.pattern.toString(16)} ${w.offset} ${w.length}`;

interface QmpNodeInfo {
  'node-name': string;
  'dirty-bitmaps'?: { name: string; recording: boolean; persistent: boolean }[];
}

describeWithPeersHint('kvm+qmp: a running QEMU VM', ['qemu-system-x86_64', 'qemu-img', 'qemu-io', 'nbdcopy'], INSTALL, () => {
  let dir: string;
  let repo: string;
  let image: string;
  let vm: RunningVm;
  let qmp: QmpClient;
  let guestSocket: string;
  let guestUri: string;
  let source: string;
  const rnd = prng(0x11e);
  let patternSerial = 0;
  const expected = new Map<string, string>(); // point id -> SHA-256

  async function startVm(): Promise<void> {
    vm = await startQemuVm(dir, image, 'disk0');
    qmp = await QmpClient.connect(vm.controlSocket);
    guestSocket = join(dir, `guest-${vm.pid}.sock`);
    await qmp.execute('nbd-server-start', { addr: { type: 'unix', data: { path: guestSocket } } });
    await qmp.execute('block-export-add', { type: 'nbd', id: 'guest', 'node-name': 'disk0', name: 'guest', writable: true });
    guestUri = `nbd+unix:///guest?socket=${guestSocket}`;
    // QEMU runs one NBD server: the front-end adds its fleece export to the guest's.
    source = `kvm+qmp:${vm.qmpSocket}?node=disk0&nbd=${guestSocket}`;
  }

  async function stopVm(): Promise<void> {
    qmp?.close();
    await vm?.stop();
  }

  /** Writes in the low half (between backups). */
  function lowWrites(count: number): GuestWrite[] {
    return Array.from({ length: count }, () => {
      const length = 4096 * (1 + Math.floor(rnd() * 64));
      return { offset: 4096 * Math.floor(rnd() * ((HALF - length) / 4096)), length, pattern: 1 + (patternSerial++ % 120) };
    });
  }

  /** Writes in distinct 1 MiB slots of the high half, each with its own pattern (concurrent with a backup). */
  function highWrites(count: number): GuestWrite[] {
    const slots = new Set<number>();
    while (slots.size < count) slots.add(Math.floor(rnd() * (HALF / MiB)));
    return [...slots].map((slot, i) => ({ offset: HALF + slot * MiB + 4096 * Math.floor(rnd() * 64), length: 4096 * (1 + Math.floor(rnd() * 128)), pattern: 0x80 + ((patternSerial++ + i) % 127) }));
  }

  /** The guest's disk right now, read through its export. */
  async function guestImage(): Promise<Buffer> {
    const out = join(dir, 'guest-now.raw');
    await run('nbdcopy', [guestUri, out]);
    const data = await readFile(out);
    await rm(out);
    return data;
  }

  async function restore(id: string): Promise<Buffer> {
    const out = join(dir, `restore-${id}.raw`);
    await cliOk(['restore', id, '--repo', repo, '--output', out]);
    const data = await readFile(out);
    await rm(out);
    return data;
  }

  /**
   * One backup in this process. `after` runs once the front-end took its point in
   * time and before the engine reads; `during` starts then and runs beside the reads.
   */
  async function liveBackup(o: { after?: GuestWrite[]; during?: GuestWrite[]; full?: boolean; signal?: AbortSignal; onPlanned?: () => void } = {}): Promise<PointRecord> {
    const r = await Repository.open(repo);
    let during: Promise<void> = Promise.resolve();
    try {
      const inner = await frontEndFor(source);
      const frontEnd: FrontEnd = {
        diskName: inner.diskName,
        plan: async (ctx) => {
          const plan = await inner.plan(ctx);
          await qemuIo(guestUri, 'raw', (o.after ?? []).map(cmd));
          during = qemuIo(guestUri, 'raw', (o.during ?? []).map(cmd));
          during.catch(() => undefined);
          o.onPlanned?.();
          return plan;
        },
      };
      return await runBackupJob({ repo: r, frontEnd, vm: VM, full: o.full ?? false, ...(o.signal ? { signal: o.signal } : {}) });
    } finally {
      await during;
      await r.close();
    }
  }

  /** QEMU holds nothing of ours but one recording, persistent bitmap: `token`. */
  async function expectCleanVm(token: string): Promise<void> {
    const exports = await qmp.execute<{ id: string }[]>('query-block-exports');
    expect(exports.map((e) => e.id)).toEqual(['guest']);
    expect(await qmp.execute<unknown[]>('query-block-jobs')).toEqual([]);
    const nodes = await qmp.execute<QmpNodeInfo[]>('query-named-block-nodes', { flat: true });
    expect(nodes.filter((n) => n['node-name'].startsWith('cv-'))).toEqual([]);
    const disk = nodes.find((n) => n['node-name'] === 'disk0');
    expect(disk?.['dirty-bitmaps']?.map((b) => ({ name: b.name, recording: b.recording, persistent: b.persistent }))).toEqual([{ name: token, recording: true, persistent: true }]);
  }

  function region(data: Buffer, w: GuestWrite): Buffer {
    return data.subarray(w.offset, w.offset + w.length);
  }

  function isPattern(data: Buffer, w: GuestWrite): boolean {
    return region(data, w).every((b) => b === w.pattern);
  }

  beforeAll(async () => {
    ensureBuilt();
    dir = await makeTempDir('kvm-live');
    repo = join(dir, 'repo');
    image = join(dir, 'live.qcow2');
    await run('qemu-img', ['create', '-q', '-f', 'qcow2', image, String(SIZE)]);
    await qemuIo(image, 'qcow2', ['write -P 0xaa 0 6M', 'write -P 0x33 20M 2M', 'write -P 0x44 40M 5M', 'write -P 0x55 60M 1M']);
    await initRepo(repo, ['--chunk-size', '256K']);
    await startVm();
  });

  afterAll(async () => {
    await stopVm();
    await removeTempDir(dir);
  });

  it('backs up 6 points while the guest writes during each backup; each restores to its point in time', async () => {
    let previous: GuestWrite[] = [];
    for (let k = 0; k < 6; k++) {
      if (k > 0) await qemuIo(guestUri, 'raw', lowWrites(8).map(cmd));
      const before = await guestImage();
      const after = highWrites(3);
      const during = highWrites(4).filter((w) => !after.some((a) => Math.floor(a.offset / MiB) === Math.floor(w.offset / MiB)));
      const point = await liveBackup({ after, during });
      expected.set(point.id, sha256(before));
      expect(point.mode, `backup ${k}`).toBe(k === 0 ? 'full' : 'incremental');
      await expectCleanVm(point.changeToken as string);
      const restored = await restore(point.id);
      expect(sha256(restored), `point ${k} restores to the image before its backup`).toBe(sha256(before));
      for (const w of [...after, ...during]) {
        expect(isPattern(before, w), 'a concurrent write changes something').toBe(false);
        expect(isPattern(restored, w), `write at ${w.offset} after the point in time is not in point ${k}`).toBe(false);
      }
      for (const w of previous) expect(isPattern(restored, w), `concurrent write at ${w.offset} of backup ${k - 1} is in point ${k}`).toBe(true);
      previous = [...after, ...during];
    }
  });

  it('keeps the bitmap across a VM restart and continues incrementally', async () => {
    const last = (await listLatest())!;
    await stopVm();
    expect(await imageBitmaps(image)).toEqual([{ name: last.changeToken, flags: ['auto'] }]);
    await startVm();
    await qemuIo(guestUri, 'raw', lowWrites(5).map(cmd));
    const before = await guestImage();
    const point = await liveBackup();
    expect(point.mode).toBe('incremental');
    expect(point.meta?.['changesFrom']).toBe(last.changeToken);
    expected.set(point.id, sha256(before));
    expect(sha256(await restore(point.id))).toBe(sha256(before));
    await expectCleanVm(point.changeToken as string);
  });

  it('falls back to a full read when the bitmap was removed from the node', async () => {
    const last = (await listLatest())!;
    await qmp.execute('block-dirty-bitmap-remove', { node: 'disk0', name: last.changeToken });
    await qemuIo(guestUri, 'raw', lowWrites(3).map(cmd));
    const before = await guestImage();
    const point = await liveBackup({ during: highWrites(2) });
    expect(point.mode).toBe('full');
    expect(point.meta?.['fullReason']).toBe(`bitmap ${last.changeToken} of the parent point is not in the image`);
    expected.set(point.id, sha256(before));
    expect(sha256(await restore(point.id))).toBe(sha256(before));
    await expectCleanVm(point.changeToken as string);
  });

  it('cleans up an aborted backup and merges its bitmap back: the next point has every write', async () => {
    const last = (await listLatest())!;
    const pointsBefore = (await listPoints()).length;
    const lost = highWrites(3);
    await qemuIo(guestUri, 'raw', lowWrites(4).map(cmd));
    const abort = new AbortController();
    const failed = await liveBackup({ after: lost, signal: abort.signal, onPlanned: () => abort.abort() }).then(
      () => null,
      (err: unknown) => err,
    );
    expect(isChunkvaultError(failed, 'INTERRUPTED'), String(failed)).toBe(true);
    expect((await listPoints()).length).toBe(pointsBefore);
    await expectCleanVm(last.changeToken as string); // B_new merged into B_old and removed
    const before = await guestImage();
    const point = await liveBackup();
    expect(point.mode).toBe('incremental');
    expected.set(point.id, sha256(before));
    const restored = await restore(point.id);
    expect(sha256(restored)).toBe(sha256(before));
    for (const w of lost) expect(isPattern(restored, w)).toBe(true);
  });

  it('leaves a repository that verifies, every point restoring exactly', async () => {
    await checkRepo(repo);
    for (const [id, sha] of expected) expect(sha256(await restore(id)), `restore of ${id}`).toBe(sha);
  });

  async function listPoints(): Promise<PointJson[]> {
    const r = await cliOk(['points', '--repo', repo, '--vm', VM, '--json']);
    return r.json as PointJson[];
  }

  async function listLatest(): Promise<PointJson | undefined> {
    const all = await listPoints();
    return all.at(-1);
  }
});
