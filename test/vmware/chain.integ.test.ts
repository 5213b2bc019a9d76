/**
 * A chain of backups of a two-disk VMware VM through the CLI (`backup vmware://...`),
 * against the real vSphere simulator (govmomi, built from Debian's package by
 * tools/vcsim) behind the CBT front (test/vmware/cbt-front.ts). Disk data is the raw
 * flat files in the simulator's datastore, read through its /folder endpoint.
 *
 * 1. first backup: CBT enabled (ReconfigVM_Task + snapshot round), both disks read
 *    from the "*" allocated areas, reason recorded;
 * 2-4. incrementals with guest writes between them: only the changed areas are read;
 * 5. an incremental read over NBD (qemu-nbd serving each flat file);
 * 6. an incremental read over SAN (the datastores as local paths).
 * After each: no snapshot is left in the simulator, the point's change token is the
 * snapshot's changeId, and every point restores byte-identical.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, readFile, symlink } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { checkRepo, cliOk, ensureBuilt, initRepo, listPoints, makeTempDir, prng, removeTempDir, restoreSha } from '../helpers/cli.js';
import { PASSWORD, startLab, type Lab } from './harness.js';
import { startQemuNbd, type RunningServer } from '../fixtures/peers.js';
import { describeWithVcsim } from './vcsim.js';

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

describeWithVcsim('vmware: a chain of VM backups through the CLI (vSphere simulator + CBT front)', () => {
  let dir: string;
  let repo: string;
  let lab: Lab;
  const expected = new Map<string, string>();
  const rand = prng(11);

  beforeAll(async () => {
    ensureBuilt();
    dir = await makeTempDir('vmware-chain');
    repo = `${dir}/repo`;
    await initRepo(repo);
    lab = await startLab();
    for (const d of lab.disks) await lab.front.write(lab.vm.value, d.key, 0, randomBytes(Math.min(d.sizeBytes, 300_000)));
    const big = largest();
    await lab.front.write(lab.vm.value, big.key, 6 * 1024 * 1024, randomBytes(1024 * 1024));
  });

  const largest = (): Lab['disks'][number] => [...lab.disks].sort((a, b) => b.sizeBytes - a.sizeBytes)[0]!;

  afterAll(async () => {
    await lab?.stop();
    await removeTempDir(dir);
  });

  async function guestWrites(count: number): Promise<void> {
    for (let i = 0; i < count; i++) {
      const d = lab.disks[i % lab.disks.length]!;
      const len = 1 + Math.floor(rand() * 100_000);
      const at = Math.floor(rand() * (d.sizeBytes - len));
      await lab.front.write(lab.vm.value, d.key, at, randomBytes(len));
    }
    const last = largest();
    await lab.front.write(lab.vm.value, last.key, last.sizeBytes - 100, randomBytes(100));
  }

  async function backup(options = ''): Promise<{ disk: string; point: string; mode: string; bytesRead: number }[]> {
    const shas = new Map<string, string>();
    for (const d of lab.disks) shas.set(d.name, sha(await readFile(d.flatFile)));
    const r = await cliOk(['backup', lab.uri(options), '--repo', repo, '--json'], { env: { CHUNKVAULT_VMWARE_PASSWORD: PASSWORD } });
    const points = r.json.points as { disk: string; point: string; mode: string; bytesRead: number }[];
    expect(points.map((p) => p.disk).sort()).toEqual(lab.disks.map((d) => d.name).sort());
    for (const p of points) expected.set(`${p.disk}@${p.point}`, shas.get(p.disk)!);
    expect(await lab.snapshots()).toEqual([]);
    const listed = await listPoints(repo);
    for (const p of points) expect(listed.find((l) => l.id === p.point)?.['changeToken']).toMatch(/^[0-9a-f ]+\/\d+$/);
    return points;
  }

  it('first backup: CBT enabled, full reads of the "*" areas, reason recorded', async () => {
    const points = await backup();
    expect(lab.front.calls).toContain('ReconfigVM_Task');
    const listed = await listPoints(repo);
    for (const p of points) {
      expect(p.mode).toBe('full');
      expect(listed.find((l) => l.id === p.point)?.['meta']).toMatchObject({ fullReason: 'CBT was not enabled on the VM (enabled now)', transport: 'http' });
    }
    expect(points.find((p) => p.disk === largest().name)!.bytesRead).toBeLessThan(3 * 1024 * 1024);
  });

  for (const round of [2, 3, 4]) {
    it(`incremental ${round}: only the changed areas are read`, async () => {
      lab.front.calls.length = 0;
      await guestWrites(6);
      const points = await backup();
      for (const p of points) {
        expect(p.mode).toBe('incremental');
        expect(p.bytesRead).toBeLessThanOrEqual(Math.min(2 * 1024 * 1024, lab.disks.find((d) => d.name === p.disk)!.sizeBytes));
      }
      expect(lab.front.calls).toContain('QueryChangedDiskAreas');
      expect(lab.front.calls).not.toContain('ReconfigVM_Task');
    });
  }

  it('incremental 5 over NBD (qemu-nbd in front of each flat file)', async () => {
    await guestWrites(4);
    const servers: RunningServer[] = [];
    try {
      for (const d of lab.disks) {
        const name = basename(d.flatFile, '-flat.vmdk');
        const server = await startQemuNbd({ dir }, { image: d.flatFile, format: 'raw', exportName: name });
        servers.push(server);
        // One server per disk: the URI template picks the socket by the disk's file name.
        await symlink(server.socketPath!, join(dir, `${name}.sock`));
      }
      const points = await backup(`&transport=nbd&nbd=${encodeURIComponent(`nbd+unix:///{disk}?socket=${dir}/{disk}.sock`)}`);
      expect(points.every((p) => p.mode === 'incremental')).toBe(true);
      const listed = await listPoints(repo);
      expect(listed.find((l) => l.id === points[0]!.point)?.['meta']).toMatchObject({ transport: 'nbd' });
    } finally {
      for (const s of servers) await s.stop();
    }
  });

  it('incremental 6 over SAN (the datastores as local paths; http listed as the fallback)', async () => {
    await guestWrites(4);
    await mkdir(join(dir, 'san'), { recursive: true });
    for (const [name, path] of Object.entries(lab.sim.datastores)) await symlink(path, join(dir, 'san', name)).catch(() => undefined);
    const points = await backup(`&transport=san,http&san=${encodeURIComponent(join(dir, 'san'))}`);
    expect(points.every((p) => p.mode === 'incremental')).toBe(true);
    const listed = await listPoints(repo);
    expect(listed.find((l) => l.id === points[0]!.point)?.['meta']).toMatchObject({ transport: 'san' });
  });

  it('every point restores byte-identical', async () => {
    expect(expected.size).toBe(12);
    const got = new Map<string, string>();
    for (const [key] of expected) got.set(key, await restoreSha(repo, key.split('@')[1]!, dir));
    expect(got).toEqual(expected);
    await checkRepo(repo);
  });
}, ['qemu-nbd']);
