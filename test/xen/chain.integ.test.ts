/**
 * A chain of backups of a two-disk XenServer VM through the CLI (`backup xen://...`),
 * against the XenAPI simulator with real nbdkit + TLS data paths. Between backups the
 * guest writes (through the simulator, so CBT sees them) at random places, including
 * the partial last 64 KiB block of a disk whose size is not a multiple of it.
 *
 * 1. first backup: both disks full (allocated data), reason recorded;
 * 2. incremental over JSON-RPC + NBD: only the changed blocks are read;
 * 3. incremental over XML-RPC (the simulator has no /jsonrpc);
 * 4. incremental over export_raw_vdi (get_nbd_info returns []);
 * 5. incremental again over JSON-RPC + NBD.
 * After each: per disk, exactly the latest snapshot keeps its data (older ones are
 * cbt_metadata), it is the point's change token, the session is logged out, and every
 * point restores byte-identical. The repository checks clean at the end.
 */
import { createHash, randomBytes } from 'node:crypto';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { checkRepo, cliOk, ensureBuilt, initRepo, listPoints, makeTempDir, prng, removeTempDir, restoreSha } from '../helpers/cli.js';
import { describeWithPeersHint } from '../fixtures/peers.js';
import { XapiSimulator } from './xapi-simulator.js';

const MiB = 1024 * 1024;
const VM = 'vm-two';
const PASSWORD = 'xen-test-password';
const DISKS = [
  { device: 'xvda', userdevice: '0', label: 'system', sizeBytes: 24 * MiB + 5 * 4096 + 512 },
  { device: 'xvdb', userdevice: '1', label: 'data', sizeBytes: 16 * MiB },
] as const;

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

describeWithPeersHint('xen: a chain of VM backups through the CLI (XenAPI simulator, nbdkit TLS)', ['nbdkit', 'openssl'], 'apt-get install -y nbdkit openssl', () => {
  let dir: string;
  let repo: string;
  let sim: XapiSimulator;
  /** point id -> expected sha256 */
  const expected = new Map<string, string>();
  const rand = prng(6);

  beforeAll(async () => {
    ensureBuilt();
    dir = await makeTempDir('xen-chain');
    repo = `${dir}/repo`;
    await initRepo(repo);
    sim = await XapiSimulator.start({
      dir: `${dir}/sim`,
      user: 'root',
      password: PASSWORD,
      vms: [
        { name: VM, disks: DISKS, cdrom: true },
        { name: 'vm-http', disks: [{ device: 'xvda', userdevice: '0', label: 'only-disk', sizeBytes: 3 * MiB + 777 }] },
      ],
    });
    // Guest data before CBT exists: a few MiB per disk, the rest holes.
    for (const d of DISKS) for (let at = 0; at < d.sizeBytes - MiB; at += 5 * MiB) await sim.write(VM, d.device, at, randomBytes(MiB));
  });

  afterAll(async () => {
    await sim?.stop();
    await removeTempDir(dir);
  });

  /** Random writes, one always in the last (partial) block of xvda. */
  async function guestWrites(count: number): Promise<void> {
    for (let i = 0; i < count; i++) {
      const d = DISKS[i % 2]!;
      const len = 1 + Math.floor(rand() * 200_000);
      const at = Math.floor(rand() * (d.sizeBytes - len));
      await sim.write(VM, d.device, at, randomBytes(len));
    }
    await sim.write(VM, 'xvda', DISKS[0].sizeBytes - 100, randomBytes(100));
  }

  async function backup(): Promise<{ disk: string; point: string; mode: string; bytesRead: number }[]> {
    const shas = new Map<string, string>();
    for (const d of DISKS) shas.set(d.device, sha(await sim.contents(VM, d.device)));
    const r = await cliOk(['backup', `xen://root@127.0.0.1:${sim.port}/${VM}`, '--repo', repo, '--json'], { env: { CHUNKVAULT_XEN_PASSWORD: PASSWORD } });
    const points = r.json.points as { disk: string; point: string; mode: string; bytesRead: number }[];
    expect(points.map((p) => p.disk).sort()).toEqual(['xvda', 'xvdb']);
    for (const p of points) expected.set(p.point, shas.get(p.disk)!);
    await expectSnapshotsClean(points);
    expect(sim.sessions.size).toBe(0);
    return points;
  }

  /** The latest snapshot of each disk has data and is the point's token; older ones are metadata only. */
  async function expectSnapshotsClean(points: { disk: string; point: string }[]): Promise<void> {
    const listed = await listPoints(repo, ['--vm', VM]);
    for (const p of points) {
      const snaps = sim.snapshotsOf(VM, p.disk);
      const token = listed.find((l) => l.id === p.point)?.['changeToken'];
      expect(snaps.at(-1)?.uuid).toBe(token);
      expect(snaps.filter((s) => s.hasData).map((s) => s.uuid)).toEqual([token]);
      expect(snaps.slice(0, -1).every((s) => s.type === 'cbt_metadata')).toBe(true);
    }
  }

  it('first backup: full reads of allocated data, reason recorded', async () => {
    const points = await backup();
    const listed = await listPoints(repo, ['--vm', VM]);
    for (const p of points) {
      expect(p.mode).toBe('full');
      expect(p.bytesRead).toBeLessThan(8 * MiB); // holes are not read
      expect(listed.find((l) => l.id === p.point)?.['meta']).toMatchObject({ fullReason: 'first backup of this disk', transport: 'nbd' });
    }
  });

  it('incremental over JSON-RPC and NBD reads only the changed blocks', async () => {
    await guestWrites(6);
    const points = await backup();
    for (const p of points) {
      expect(p.mode).toBe('incremental');
      expect(p.bytesRead).toBeLessThan(3 * MiB);
    }
    expect(sim.calls).toContain('VDI.list_changed_blocks');
  });

  it('incremental over XML-RPC when the pool has no /jsonrpc', async () => {
    sim.jsonRpc = false;
    sim.calls.length = 0;
    await guestWrites(6);
    const points = await backup();
    sim.jsonRpc = true;
    expect(points.every((p) => p.mode === 'incremental')).toBe(true);
    expect(sim.calls).toContain('xml:VDI.list_changed_blocks');
    expect(sim.calls).toContain('xml:VDI.data_destroy');
  });

  it('incremental over export_raw_vdi when NBD is not enabled', async () => {
    sim.nbd = false;
    sim.calls.length = 0;
    await guestWrites(6);
    const points = await backup();
    sim.nbd = true;
    expect(points.every((p) => p.mode === 'incremental')).toBe(true);
    expect(sim.calls).toContain('GET /export_raw_vdi');
    const listed = await listPoints(repo, ['--vm', VM]);
    expect(listed.find((l) => l.id === points[0]!.point)?.['meta']).toMatchObject({ transport: 'http' });
  });

  it('incremental again over NBD; every point restores byte-identical', async () => {
    await guestWrites(8);
    const points = await backup();
    expect(points.every((p) => p.mode === 'incremental')).toBe(true);
    expect(expected.size).toBe(10);
    for (const [point, want] of expected) expect(await restoreSha(repo, point, dir), point).toBe(want);
    await checkRepo(repo);
  });

  it('a VM named by uuid, read over export_raw_vdi only (transport=http), disks named by VDI label', async () => {
    await sim.write('vm-http', 'xvda', 1000, randomBytes(2 * MiB));
    const uuid = [...sim.vms.values()].find((v) => v.name === 'vm-http')!.uuid;
    const source = `xen://root@127.0.0.1:${sim.port}/${uuid}?transport=http&names=vdi`;
    const env = { env: { CHUNKVAULT_XEN_PASSWORD: PASSWORD } };
    const shas: string[] = [];
    for (let i = 0; i < 2; i++) {
      shas.push(sha(await sim.contents('vm-http', 'xvda')));
      const r = await cliOk(['backup', source, '--repo', repo, '--vm', 'vm-http', '--json'], env);
      expect(r.json.points.map((p: { disk: string; mode: string }) => [p.disk, p.mode])).toEqual([['only-disk', i === 0 ? 'full' : 'incremental']]);
      await sim.write('vm-http', 'xvda', 3 * MiB, randomBytes(777));
    }
    const points = await listPoints(repo, ['--vm', 'vm-http']);
    expect(points.map((p) => p['meta'])).toEqual([expect.objectContaining({ transport: 'http' }), expect.objectContaining({ transport: 'http' })]);
    for (const [i, p] of points.entries()) expect(await restoreSha(repo, p.id, dir)).toBe(shas[i]);
    expect(sim.snapshotsOf('vm-http', 'xvda').filter((s) => s.hasData).length).toBe(1);
    await checkRepo(repo);
  });
});
