/**
 * Faults of the Xen front-end against the XenAPI simulator (real nbdkit + TLS):
 *
 * - CBT reset on one disk: that disk is read in full (reason recorded), the other
 *   stays incremental; both restore exact.
 * - list_changed_blocks fails with a XenAPI error, or the previous snapshot was deleted:
 *   a full read of that disk, recorded.
 * - VDI.snapshot fails on the second disk: REMOTE_ERROR with the XenAPI code, the
 *   first disk's new snapshot is destroyed, no point.
 * - TLS failure (get_nbd_info returns another server's certificate): TLS_FAILED from
 *   the CLI, new snapshots destroyed, no point.
 * - nbdkit killed (SIGKILL) mid-read: the client retries on fresh connections, then
 *   fails with CONNECT_FAILED; new snapshots destroyed, no point; the next backup is
 *   incremental from the last committed point and exact.
 * - wrong password and unknown VM: typed errors before any snapshot.
 * After every run the session is logged out and each disk has exactly one snapshot
 * with data, the latest point's change token. The repository checks clean at the end.
 */
import { createHash, randomBytes } from 'node:crypto';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { NbdClient, XenVmFrontEnd, type VmFrontEnd } from '../../adapters/index.js';
import type { BlockSource } from '../../engine/index.js';
import { isChunkvaultError, Repository, type PointRecord } from '../../engine/index.js';
import { runVmBackupJob } from '../../src/vm-jobs.js';
import { checkRepo, cliFails, ensureBuilt, initRepo, makeTempDir, removeTempDir, restoreSha } from '../helpers/cli.js';
import { describeWithPeersHint, isRunning } from '../fixtures/peers.js';
import { XapiSimulator } from './xapi-simulator.js';

const MiB = 1024 * 1024;
const VM = 'vm-faulty';
const PASSWORD = 'pw';
const DISKS = [
  { device: 'xvda', userdevice: '0', label: 'system', sizeBytes: 20 * MiB + 3000 },
  { device: 'xvdb', userdevice: '1', label: 'data', sizeBytes: 12 * MiB },
] as const;

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

describeWithPeersHint('xen: faults (CBT reset, XenAPI errors, TLS, nbdkit killed mid-read)', ['nbdkit', 'openssl'], 'apt-get install -y nbdkit openssl', () => {
  let dir: string;
  let repoDir: string;
  let sim: XapiSimulator;
  const expected = new Map<string, string>();
  const warnings: string[] = [];
  const sources: BlockSource[] = [];
  const uri = (): string => `xen://root@127.0.0.1:${sim.port}/${VM}`;

  beforeAll(async () => {
    ensureBuilt();
    dir = await makeTempDir('xen-faults');
    repoDir = `${dir}/repo`;
    await initRepo(repoDir);
    sim = await XapiSimulator.start({ dir: `${dir}/sim`, user: 'root', password: PASSWORD, vms: [{ name: VM, disks: DISKS }] });
    for (const d of DISKS) await sim.write(VM, d.device, 0, randomBytes(d.sizeBytes));
  });

  afterAll(async () => {
    await sim?.stop();
    await removeTempDir(dir);
  });

  async function scribble(): Promise<void> {
    for (const d of DISKS) for (let i = 0; i < 4; i++) await sim.write(VM, d.device, Math.floor(Math.random() * (d.sizeBytes - 70_000)), randomBytes(70_000));
  }

  async function run(o: { password?: string; full?: boolean; retryDelayMs?: number; onFirstProgress?: () => void } = {}): Promise<PointRecord[]> {
    const shas = new Map<string, string>();
    for (const d of DISKS) shas.set(d.device, sha(await sim.contents(VM, d.device)));
    const repo = await Repository.open(repoDir);
    let fired = false;
    try {
      const xen = new XenVmFrontEnd(uri(), { password: o.password ?? PASSWORD, onWarning: (m) => warnings.push(m), nbdClient: { retryDelayMs: o.retryDelayMs ?? 20 } });
      // Keep the sources to read their NBD counters after the job.
      const frontEnd: VmFrontEnd = {
        vmName: xen.vmName,
        plan: async (ctx) => {
          const plan = await xen.plan(ctx);
          sources.splice(0, sources.length, ...plan.disks.map((d) => d.plan.source));
          return plan;
        },
      };
      const { points } = await runVmBackupJob({
        repo,
        frontEnd,
        full: o.full ?? false,
        onProgress: () => {
          if (!fired && o.onFirstProgress) o.onFirstProgress();
          fired = true;
        },
      });
      for (const p of points) expected.set(p.id, shas.get(p.disk)!);
      return points;
    } finally {
      await repo.close();
      expect(sim.sessions.size).toBe(0);
    }
  }

  async function pointCount(): Promise<number> {
    const repo = await Repository.open(repoDir);
    try {
      return (await repo.catalog.list({ vm: VM })).length;
    } finally {
      await repo.close();
    }
  }

  /** One snapshot with data per disk, and it is the latest point's token. */
  async function expectSnapshotsAsAfter(points: readonly PointRecord[]): Promise<void> {
    for (const p of points) {
      const withData = sim.snapshotsOf(VM, p.disk).filter((s) => s.hasData);
      expect(withData.map((s) => s.uuid)).toEqual([p.changeToken]);
    }
  }

  async function expectFails(code: string, xen: string | null, o: Parameters<typeof run>[0] = {}): Promise<unknown> {
    const err = await run(o).then(
      () => null,
      (e: unknown) => e,
    );
    expect(isChunkvaultError(err), String(err)).toBe(true);
    expect((err as { code: string }).code, String(err)).toBe(code);
    if (xen !== null) expect((err as { details: Record<string, unknown> }).details['xenCode']).toBe(xen);
    return err;
  }

  let last: PointRecord[] = [];

  it('baseline: a full then an incremental backup', async () => {
    last = await run();
    await scribble();
    last = await run();
    expect(last.map((p) => p.mode)).toEqual(['incremental', 'incremental']);
    await expectSnapshotsAsAfter(last);
  });

  it('CBT reset on one disk: that disk is read in full, the other stays incremental', async () => {
    await scribble();
    sim.resetCbt(VM, 'xvdb');
    await scribble(); // writes while CBT is off are seen by no bitmap
    last = await run();
    const [a, b] = last;
    expect(a!.mode).toBe('incremental');
    expect(b!.meta).toMatchObject({ fullReason: 'CBT was not enabled on the VDI (enabled now)' });
    expect(b!.stats.bytesRead).toBeGreaterThanOrEqual(DISKS[1].sizeBytes - MiB);
    await expectSnapshotsAsAfter(last);
  });

  it('list_changed_blocks fails: a full read of that disk, recorded in the point', async () => {
    await scribble();
    sim.failOnce('VDI.list_changed_blocks', ['VDI_NO_CBT_METADATA', 'OpaqueRef:x']);
    last = await run();
    expect(last[0]!.meta).toMatchObject({ fullReason: 'VDI.list_changed_blocks failed: VDI_NO_CBT_METADATA' });
    expect(last[1]!.mode).toBe('incremental');
    await expectSnapshotsAsAfter(last);
  });

  it('the previous snapshot deleted: a full read of that disk, recorded in the point', async () => {
    await scribble();
    const gone = last[0]!.changeToken!;
    await sim.deleteSnapshot(gone);
    last = await run();
    expect(last[0]!.meta).toMatchObject({ fullReason: `the previous snapshot ${gone} is gone` });
    expect(last[1]!.mode).toBe('incremental');
    await expectSnapshotsAsAfter(last);
  });

  it('VDI.snapshot fails on the second disk: REMOTE_ERROR, the first new snapshot destroyed, no point', async () => {
    const before = await pointCount();
    await scribble();
    sim.failOnce('VDI.snapshot', ['SR_BACKEND_FAILURE_44', '', 'There is insufficient space', ''], 1);
    await expectFails('REMOTE_ERROR', 'SR_BACKEND_FAILURE_44');
    expect(await pointCount()).toBe(before);
    await expectSnapshotsAsAfter(last);
  });

  it('TLS failure (a wrong certificate from get_nbd_info): TLS_FAILED, snapshots destroyed, no point', async () => {
    const before = await pointCount();
    sim.wrongCert = true;
    try {
      await cliFails(['backup', uri(), '--repo', repoDir, '--json'], 'TLS_FAILED', { env: { CHUNKVAULT_XEN_PASSWORD: PASSWORD } });
    } finally {
      sim.wrongCert = false;
    }
    expect(await pointCount()).toBe(before);
    expect(sim.sessions.size).toBe(0);
    await expectSnapshotsAsAfter(last);
  });

  it('nbdkit killed mid-read: CONNECT_FAILED after retries, no point; the next backup is exact', async () => {
    const before = await pointCount();
    await scribble();
    sim.nbdkitFilters = ['--filter=delay'];
    sim.nbdkitParams = ['rdelay=30ms'];
    await sim.killNbdkit('SIGTERM'); // the next get_nbd_info starts one with the delay filter
    let killed: number | null = null;
    await expectFails('CONNECT_FAILED', null, {
      full: true,
      onFirstProgress: () => {
        killed = sim.nbdkitPid;
        void sim.killNbdkit('SIGKILL');
      },
    });
    expect(killed).not.toBeNull();
    expect(isRunning(killed!)).toBe(false);
    expect(await pointCount()).toBe(before);
    await expectSnapshotsAsAfter(last);
    sim.nbdkitFilters = [];
    sim.nbdkitParams = [];
    last = await run();
    expect(last.map((p) => p.mode)).toEqual(['incremental', 'incremental']);
    await expectSnapshotsAsAfter(last);
  });

  it('nbdkit restarted mid-read: the client reconnects and retries, the backup commits exact', async () => {
    await scribble();
    sim.nbdkitFilters = ['--filter=delay'];
    sim.nbdkitParams = ['rdelay=20ms'];
    await sim.killNbdkit('SIGTERM');
    let first: number | null = null;
    let restart: Promise<void> | null = null;
    last = await run({
      full: true,
      retryDelayMs: 300,
      onFirstProgress: () => {
        first = sim.nbdkitPid;
        restart = sim.restartNbdkit();
      },
    });
    await restart;
    sim.nbdkitFilters = [];
    sim.nbdkitParams = [];
    await sim.killNbdkit('SIGTERM');
    expect(first).not.toBeNull();
    expect(sim.nbdkitPid).toBeNull();
    const reconnects = sources.map((s) => (s instanceof NbdClient ? s.stats.reconnects + s.stats.retries : 0));
    expect(reconnects.reduce((a, b) => a + b, 0)).toBeGreaterThan(0);
    expect(last.map((p) => p.meta?.['fullReason'])).toEqual(['full backup requested', 'full backup requested']);
    await expectSnapshotsAsAfter(last);
  });

  it('wrong password and unknown VM: typed errors, no snapshot taken', async () => {
    const snapshots = sim.snapshotsOf(VM, 'xvda').length;
    await expectFails('CONNECT_FAILED', 'SESSION_AUTHENTICATION_FAILED', { password: 'nope' });
    await cliFails(['backup', `xen://root@127.0.0.1:${sim.port}/no-such-vm`, '--repo', repoDir], 'SOURCE_NOT_FOUND', { env: { CHUNKVAULT_XEN_PASSWORD: PASSWORD } });
    await cliFails(['backup', uri(), '--repo', repoDir], 'INVALID_ARGUMENT', { env: { CHUNKVAULT_XEN_PASSWORD: undefined } });
    expect(sim.snapshotsOf(VM, 'xvda').length).toBe(snapshots);
  });

  it('every committed point restores byte-identical; the repository checks clean', async () => {
    expect(warnings).toEqual([]);
    for (const [point, want] of expected) expect(await restoreSha(repoDir, point, dir), point).toBe(want);
    await checkRepo(repoDir);
  });
});
