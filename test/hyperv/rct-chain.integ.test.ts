/**
 * A chain of backups of a two-disk Hyper-V VM through the CLI (`backup hyperv://...`),
 * against the WS-Management simulator (no Windows host runs here) with disks that are
 * real VHDX files written by qemu-img / qemu-io:
 *
 * 1. first backup: both disks read in full, the reason recorded;
 * 2. incremental: GetVirtualDiskChanges (paged) from the previous RCT ids;
 * 3. incremental with consistency=crash, disk paths mapped through two map= entries,
 *    and a guest write between the reference point and the checkpoint that is read;
 * 4. incremental with a write in the last sector of the odd-sized disk.
 * After each: no checkpoint is left on the host, exactly one reference point remains
 * and its RCT ids are the points' change tokens; every point restores byte-identical
 * to `qemu-img convert -O raw` of the checkpoint it was read from. The repository checks
 * clean at the end. Missing qemu-img/qemu-io: fails under CI=true, skipped elsewhere.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { checkRepo, cliOk, ensureBuilt, initRepo, listPoints, makeTempDir, prng, removeTempDir, restoreSha } from '../helpers/cli.js';
import { describeWithPeersHint } from '../fixtures/peers.js';
import { HOST_ROOT, WsmanSimulator } from './wsman-simulator.js';

const MiB = 1024 * 1024;
const VM = 'sql-01';
const PASSWORD = 'winrm-test-password';
const DISKS = [
  { name: 'system', sizeBytes: 12 * MiB + 3 * 512 },
  { name: 'data', sizeBytes: 8 * MiB },
] as const;

interface PointOut {
  disk: string;
  point: string;
  mode: string;
  bytesRead: number;
}

describeWithPeersHint('hyperv: a chain of VM backups through the CLI (WS-Management simulator, VHDX disks)', ['qemu-img', 'qemu-io'], 'apt-get install -y qemu-utils', () => {
  let dir: string;
  let repo: string;
  let sim: WsmanSimulator;
  /** point id -> expected sha256 */
  const expected = new Map<string, string>();
  const rand = prng(17);

  beforeAll(async () => {
    ensureBuilt();
    dir = await makeTempDir('hyperv-chain');
    repo = `${dir}/repo`;
    await initRepo(repo);
    sim = await WsmanSimulator.start({ dir: `${dir}/host`, user: 'administrator', password: PASSWORD, vms: [{ name: VM, disks: DISKS }] });
    for (const d of DISKS) for (let at = 0; at + MiB <= d.sizeBytes; at += 3 * MiB) await sim.write(VM, d.name, at, MiB, 0x11 + at / MiB);
  });

  afterAll(async () => {
    await sim?.stop();
    await removeTempDir(dir);
  });

  async function guestWrites(count: number): Promise<void> {
    for (let i = 0; i < count; i++) {
      const d = DISKS[i % 2]!;
      const len = 512 * (1 + Math.floor(rand() * 300));
      const at = 512 * Math.floor(rand() * ((d.sizeBytes - len) / 512));
      await sim.write(VM, d.name, at, len, Math.floor(rand() * 255) + 1);
    }
  }

  function source(query = ''): string {
    return `hyperv://administrator@127.0.0.1:${sim.port}/${VM}?map=${HOST_ROOT}=${sim.localRoot}${query}`;
  }

  async function backup(query = ''): Promise<PointOut[]> {
    const r = await cliOk(['backup', source(query), '--repo', repo, '--json'], { env: { CHUNKVAULT_HYPERV_PASSWORD: PASSWORD } });
    const points = r.json.points as PointOut[];
    expect(points.map((p) => p.disk).sort()).toEqual(['data', 'system']);
    const listed = await listPoints(repo, ['--vm', VM]);
    expect(sim.checkpoints.size).toBe(0);
    expect(sim.referencePoints.size).toBe(1);
    const rp = [...sim.referencePoints.values()][0]!;
    for (const p of points) {
      const rec = listed.find((l) => l.id === p.point)!;
      expect(rp.rctIds).toContain(rec['changeToken']);
      const checkpoint = (rec['meta'] as Record<string, string>)['checkpoint']!;
      expected.set(p.point, sim.checkpointSha.get(checkpoint)!.get(p.disk)!);
    }
    return points;
  }

  it('first backup: both disks in full, reason recorded', async () => {
    const points = await backup();
    const listed = await listPoints(repo, ['--vm', VM]);
    for (const p of points) {
      expect(p.mode).toBe('full');
      expect(listed.find((l) => l.id === p.point)?.['meta']).toMatchObject({ fullReason: 'first backup of this disk' });
    }
    // The reference checkpoint is crash-consistent, the one read application-consistent.
    expect(sim.history.map((h) => h.consistency)).toEqual([2, 1]);
  });

  it('incremental: only the changed ranges, asked page by page', async () => {
    await guestWrites(8);
    sim.calls.length = 0;
    const points = await backup();
    for (const p of points) {
      expect(p.mode).toBe('incremental');
      expect(p.bytesRead).toBeLessThan(4 * MiB);
    }
    // 12 MiB in 4 MiB pages + 8 MiB in 4 MiB pages.
    expect(sim.calls.filter((c) => c === 'GetVirtualDiskChanges').length).toBe(4 + 2);
    expect(sim.calls).toContain('DestroyReferencePoint');
  });

  it('incremental, crash-consistent, with two map= entries (the longest prefix wins)', async () => {
    await guestWrites(6);
    sim.history.length = 0;
    const query = `&consistency=crash&map=${HOST_ROOT.slice(0, 2)}=/nonexistent`;
    // A write between the reference point and the checkpoint read: in this backup, and
    // again in the next incremental's changes (it is after the reference point).
    sim.afterConvert = () => sim.write(VM, 'data', 5 * MiB, 64 * 1024, 0x5a);
    const points = await backup(query);
    expect(points.every((p) => p.mode === 'incremental')).toBe(true);
    expect(sim.history.map((h) => h.consistency)).toEqual([2, 2]);
  });

  it('incremental with a write in the last sector; every point restores byte-identical', async () => {
    await guestWrites(6);
    await sim.write(VM, 'system', DISKS[0].sizeBytes - 512, 512, 0xee);
    const points = await backup();
    expect(points.every((p) => p.mode === 'incremental')).toBe(true);
    expect(expected.size).toBe(8);
    for (const [point, want] of expected) expect(await restoreSha(repo, point, dir), point).toBe(want);
    await checkRepo(repo);
  });
});
