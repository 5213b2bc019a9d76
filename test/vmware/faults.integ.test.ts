/**
 * Faults of the VMware front-end against the real vSphere simulator behind the CBT
 * front (which injects them):
 *
 * - CreateSnapshot_Task answers a SOAP fault: REMOTE_ERROR with its faultType;
 * - reading the new snapshot's configuration faults: the snapshot is removed anyway;
 * - the snapshot task ends in error: REMOTE_ERROR with the task's fault type;
 * - the session expires mid-backup (before QueryChangedDiskAreas, and before
 *   RemoveSnapshot_Task): the client logs in again and the backup completes;
 * - the /folder data connection drops mid-body once (retried, exact) and on every read
 *   (CONNECT_FAILED); /folder answers 503 a few times (backoff, exact);
 * - SIGTERM to the CLI while a /folder read is in flight: INTERRUPTED (exit 130);
 * - a CBT reset on one disk: QueryChangedDiskAreas faults, that disk is read in full
 *   with the reason recorded, the other stays incremental.
 * - RemoveSnapshot_Task faults after a committed backup: a warning names the snapshot
 *   and the inventory shows it (so the other assertions are not vacuous).
 * After every run the simulator's inventory holds no snapshot of the VM, a failed run
 * leaves no point, and every committed point restores byte-identical.
 */
import { createHash, randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { VmwareVmFrontEnd } from '../../adapters/vmware/index.js';
import { isChunkvaultError, Repository, type PointRecord } from '../../engine/index.js';
import { runVmBackupJob } from '../../src/vm-jobs.js';
import { checkRepo, cliFails, ensureBuilt, initRepo, makeTempDir, removeTempDir, restoreSha, startCli, waitFor } from '../helpers/cli.js';
import { PASSWORD, startLab, type Lab } from './harness.js';
import { describeWithVcsim } from './vcsim.js';

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');
const VM = 'DC0_C0_RP0_VM0';

describeWithVcsim('vmware: faults (SOAP faults, failed tasks, expired sessions, dropped reads, CBT reset)', () => {
  let dir: string;
  let repoDir: string;
  let lab: Lab;
  const expected = new Map<string, string>();
  const warnings: string[] = [];

  beforeAll(async () => {
    ensureBuilt();
    dir = await makeTempDir('vmware-faults');
    repoDir = `${dir}/repo`;
    await initRepo(repoDir);
    lab = await startLab();
    for (const d of lab.disks) await lab.front.write(lab.vm.value, d.key, 0, randomBytes(d.sizeBytes));
  });

  afterAll(async () => {
    await lab?.stop();
    await removeTempDir(dir);
  });

  async function scribble(): Promise<void> {
    for (const d of lab.disks) for (let i = 0; i < 3; i++) await lab.front.write(lab.vm.value, d.key, Math.floor(Math.random() * (d.sizeBytes - 70_000)), randomBytes(70_000));
  }

  async function run(): Promise<{ points: PointRecord[]; meta: Record<string, unknown> }> {
    const shas = new Map<string, string>();
    for (const d of lab.disks) shas.set(d.name, sha(await readFile(d.flatFile)));
    const repo = await Repository.open(repoDir);
    try {
      const frontEnd = new VmwareVmFrontEnd(lab.uri(), { password: PASSWORD, onWarning: (m) => warnings.push(m) });
      const { points, record } = await runVmBackupJob({ repo, frontEnd });
      for (const p of points) expected.set(p.id, shas.get(p.disk)!);
      return { points, meta: record.meta ?? {} };
    } finally {
      await repo.close();
      expect(await lab.snapshots()).toEqual([]);
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

  async function expectFails(code: string, faultType: string | null): Promise<void> {
    const before = await pointCount();
    const err = await run().then(
      () => null,
      (e: unknown) => e,
    );
    expect(isChunkvaultError(err) ? err.code : err).toBe(code);
    if (faultType !== null) expect(isChunkvaultError(err) ? err.details['faultType'] : null).toBe(faultType);
    expect(await pointCount()).toBe(before);
  }

  it('a first backup commits (baseline)', async () => {
    const { points } = await run();
    expect(points).toHaveLength(2);
  });

  it('CreateSnapshot_Task answers a fault: REMOTE_ERROR, no snapshot, no point', async () => {
    lab.front.faults.set('CreateSnapshot_Task', 'InvalidState');
    await expectFails('REMOTE_ERROR', 'InvalidState');
  });

  it('the snapshot task ends in error: REMOTE_ERROR with the task fault, no point', async () => {
    lab.front.failTasks.add('CreateSnapshot_Task');
    await expectFails('REMOTE_ERROR', 'FileFault');
  });

  it('reading the snapshot configuration faults: REMOTE_ERROR, the snapshot is still removed, no point', async () => {
    await scribble();
    const removals = lab.front.calls.filter((c) => c === 'RemoveSnapshot_Task').length;
    lab.front.snapshotReadFault = 'SystemError';
    await expectFails('REMOTE_ERROR', 'SystemError');
    expect(lab.front.calls.filter((c) => c === 'RemoveSnapshot_Task').length).toBe(removals + 1);
  });

  it('the session expires mid-backup and before RemoveSnapshot_Task: logs in again, completes', async () => {
    await scribble();
    lab.front.expireBefore = 'QueryChangedDiskAreas';
    const first = await run();
    expect(first.points.every((p) => p.mode === 'incremental')).toBe(true);
    expect(first.meta['logins']).toBe(2);
    lab.front.expireBefore = 'RemoveSnapshot_Task';
    await scribble();
    const second = await run();
    expect(second.points).toHaveLength(2);
    expect(lab.front.expireBefore).toBeNull();
  });

  it('a /folder read drops mid-body once (retried) and answers 503 (backoff): exact', async () => {
    await scribble();
    lab.front.dropReads = 1;
    lab.front.busyReads = 3;
    const { points } = await run();
    expect(points.every((p) => p.mode === 'incremental')).toBe(true);
    expect(lab.front.dropReads).toBe(0);
    expect(lab.front.busyReads).toBe(0);
  });

  it('every /folder read drops: CONNECT_FAILED, snapshot removed, no point', async () => {
    await scribble();
    lab.front.dropReads = -1;
    try {
      await expectFails('CONNECT_FAILED', null);
    } finally {
      lab.front.dropReads = 0;
    }
  });

  it('CBT reset on one disk: that disk is read in full (reason recorded), the other incremental', async () => {
    await scribble();
    const reset = lab.disks[0]!;
    lab.front.resetCbt(lab.vm.value, reset.key);
    const { points } = await run();
    const byDisk = new Map(points.map((p) => [p.disk, p]));
    expect(byDisk.get(reset.name)!.mode).toBe('full');
    expect(byDisk.get(reset.name)!.meta).toMatchObject({ fullReason: expect.stringContaining('FileFault') });
    expect(byDisk.get(lab.disks[1]!.name)!.mode).toBe('incremental');
  });

  it('SIGTERM to the CLI mid-read: INTERRUPTED, the snapshot is removed, no point', async () => {
    await scribble();
    const before = await pointCount();
    let release!: () => void;
    lab.front.holdReads = new Promise((r) => (release = r));
    const reads = lab.front.folderReads;
    const running = startCli(['backup', lab.uri(), '--repo', repoDir], { env: { CHUNKVAULT_VMWARE_PASSWORD: PASSWORD } });
    try {
      await waitFor(() => lab.front.folderReads > reads, 60_000, 5);
      running.child.kill('SIGTERM');
    } finally {
      lab.front.holdReads = null;
      release();
    }
    const r = await running.result;
    expect(r.code, r.stderr).toBe(130);
    expect(await lab.snapshots()).toEqual([]);
    expect(await pointCount()).toBe(before);
  });

  it('RemoveSnapshot_Task faults: the point stands, a warning names the snapshot, the inventory shows it', async () => {
    await scribble();
    lab.front.faults.set('RemoveSnapshot_Task', 'TaskInProgress');
    warnings.length = 0;
    const shas = new Map<string, string>();
    for (const d of lab.disks) shas.set(d.name, sha(await readFile(d.flatFile)));
    const repo = await Repository.open(repoDir);
    try {
      const frontEnd = new VmwareVmFrontEnd(lab.uri(), { password: PASSWORD, onWarning: (m) => warnings.push(m) });
      const { points } = await runVmBackupJob({ repo, frontEnd });
      expect(points).toHaveLength(2);
      for (const p of points) expected.set(p.id, shas.get(p.disk)!);
    } finally {
      await repo.close();
    }
    const left = await lab.snapshots();
    expect(left).toHaveLength(1);
    expect(warnings.join('\n')).toContain(left[0]);
    await lab.admin.task('RemoveSnapshot_Task', { type: 'VirtualMachineSnapshot', value: left[0]! }, '<removeChildren>false</removeChildren>', 30_000);
    expect(await lab.snapshots()).toEqual([]);
  });

  it('a wrong password through the CLI: CONNECT_FAILED before any snapshot', async () => {
    const calls = lab.front.calls.length;
    await cliFails(['backup', lab.uri(), '--repo', repoDir], 'CONNECT_FAILED', { env: { CHUNKVAULT_VMWARE_PASSWORD: 'wrong' } });
    expect(lab.front.calls.slice(calls)).not.toContain('CreateSnapshot_Task');
    expect(await lab.snapshots()).toEqual([]);
  });

  it('every committed point restores byte-identical; the repository checks clean', async () => {
    const got = new Map<string, string>();
    for (const [point] of expected) got.set(point, await restoreSha(repoDir, point, dir));
    expect(got).toEqual(expected);
    await checkRepo(repoDir);
  });
});
