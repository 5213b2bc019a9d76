/**
 * Faults of the Hyper-V front-end through the CLI, against the WS-Management simulator:
 *
 * - a checkpoint job that ends in error (JobState 10), for the reference checkpoint and
 *   for the checkpoint that is read: REMOTE_ERROR with the job state;
 * - a conversion to a reference point whose job fails;
 * - a connection dropped in the middle of GetVirtualDiskChanges: CONNECT_FAILED;
 * - an RCT id the host no longer knows: that disk is read in full, the reason recorded;
 * - NTLMv2 authentication, good and bad;
 * - bad credentials, an unknown VM, a path no map= covers.
 * After every failure: no checkpoint is left, the reference points are those of the last
 * committed backup (so the next incremental still has its base), no partial point is
 * listed; and the next backup restores byte-identical.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { checkRepo, cliFails, cliOk, ensureBuilt, initRepo, listPoints, makeTempDir, removeTempDir, restoreSha } from '../helpers/cli.js';
import { describeWithPeersHint } from '../fixtures/peers.js';
import { HOST_ROOT, WsmanSimulator } from './wsman-simulator.js';

const MiB = 1024 * 1024;
const VM = 'web-02';
const PASSWORD = 'winrm-faults-password';
const DISKS = [
  { name: 'boot', sizeBytes: 6 * MiB },
  { name: 'logs', sizeBytes: 4 * MiB + 512 },
] as const;
const ENV = { env: { CHUNKVAULT_HYPERV_PASSWORD: PASSWORD } };

interface PointOut {
  disk: string;
  point: string;
  mode: string;
}

describeWithPeersHint('hyperv: faults through the CLI (WS-Management simulator, VHDX disks)', ['qemu-img', 'qemu-io'], 'apt-get install -y qemu-utils', () => {
  let dir: string;
  let repo: string;
  let sim: WsmanSimulator;
  let pattern = 1;

  beforeAll(async () => {
    ensureBuilt();
    dir = await makeTempDir('hyperv-faults');
    repo = `${dir}/repo`;
    await initRepo(repo);
    sim = await WsmanSimulator.start({ dir: `${dir}/host`, user: 'administrator', password: PASSWORD, vms: [{ name: VM, disks: DISKS }] });
    await sim.write(VM, 'boot', 0, MiB, 0x42);
    await sim.write(VM, 'logs', 2 * MiB, MiB, 0x43);
  });

  afterAll(async () => {
    await sim?.stop();
    await removeTempDir(dir);
  });

  const source = (vm = VM): string => `hyperv://administrator@127.0.0.1:${sim.port}/${vm}?map=${HOST_ROOT}=${sim.localRoot}`;

  async function writes(): Promise<void> {
    pattern++;
    await sim.write(VM, 'boot', (pattern % 5) * MiB + 4096, 8192, pattern);
    await sim.write(VM, 'logs', 4 * MiB, 512, pattern);
  }

  /** A good backup; checks restores against the checkpoint's raw image. */
  async function backupOk(): Promise<PointOut[]> {
    const r = await cliOk(['backup', source(), '--repo', repo, '--json'], ENV);
    const points = r.json.points as PointOut[];
    const listed = await listPoints(repo, ['--vm', VM]);
    for (const p of points) {
      const meta = listed.find((l) => l.id === p.point)!['meta'] as Record<string, string>;
      expect(await restoreSha(repo, p.point, dir)).toBe(sim.checkpointSha.get(meta['checkpoint']!)!.get(p.disk));
    }
    expectClean();
    return points;
  }

  function expectClean(): void {
    expect(sim.checkpoints.size).toBe(0);
    expect(sim.referencePoints.size).toBe(1);
  }

  /** A failed backup left no checkpoint, kept the reference point and added no point. */
  async function expectFails(code: Parameters<typeof cliFails>[1], details: Record<string, unknown>): Promise<void> {
    const before = (await listPoints(repo, ['--vm', VM])).length;
    const rp = [...sim.referencePoints.keys()];
    const r = await cliFails(['backup', source(), '--repo', repo, '--json'], code, ENV);
    expect(r.json.error.details).toMatchObject(details);
    expect(r.stderr).not.toContain('warning');
    expect(sim.checkpoints.size).toBe(0);
    expect([...sim.referencePoints.keys()]).toEqual(rp);
    expect((await listPoints(repo, ['--vm', VM])).length).toBe(before);
  }

  it('a first backup, then a checkpoint job that fails (either checkpoint): REMOTE_ERROR, nothing left', async () => {
    await backupOk();
    await writes();
    sim.failJob = { method: 'CreateSnapshot', after: 1 };
    await expectFails('REMOTE_ERROR', { jobState: 10 });
    sim.failJob = { method: 'CreateSnapshot', after: 0 };
    await expectFails('REMOTE_ERROR', { jobState: 10 });
    sim.failJob = { method: 'ConvertToReferencePoint', after: 0 };
    await expectFails('REMOTE_ERROR', { jobState: 10 });
    const points = await backupOk();
    expect(points.every((p) => p.mode === 'incremental')).toBe(true);
  });

  it('a connection dropped during GetVirtualDiskChanges: CONNECT_FAILED, the next run is incremental', async () => {
    await writes();
    sim.dropOn = 'GetVirtualDiskChanges';
    await expectFails('CONNECT_FAILED', {});
    // Before anything is made (enumerating), and while the read checkpoint's job is polled.
    sim.dropOn = 'Pull';
    await expectFails('CONNECT_FAILED', {});
    // Every Get of a run: polls of A's, the conversion's and B's jobs, the reference point.
    for (let after = 0; after < 4; after++) {
      sim.dropOn = 'Get';
      sim.dropAfter = after;
      await expectFails('CONNECT_FAILED', {});
    }
    const points = await backupOk();
    expect(points.every((p) => p.mode === 'incremental')).toBe(true);
  });

  it('an expired RCT id: that disk is read in full, the reason recorded', async () => {
    await writes();
    const listed = await listPoints(repo, ['--vm', VM]);
    const lastBoot = listed.filter((p) => p['disk'] === 'boot').at(-1)!;
    sim.expire(String(lastBoot['changeToken']));
    const points = await backupOk();
    expect(Object.fromEntries(points.map((p) => [p.disk, p.mode]))).toEqual({ boot: 'full', logs: 'incremental' });
    const boot = (await listPoints(repo, ['--vm', VM])).find((p) => p.id === points.find((q) => q.disk === 'boot')!.point)!;
    expect((boot['meta'] as Record<string, string>)['fullReason']).toMatch(/^GetVirtualDiskChanges refused RCT id rct:.*return value 32775$/);
    await checkRepo(repo);
  });

  it('NTLMv2 authentication (auth=ntlm): a good password backs up, a wrong one is CONNECT_FAILED', async () => {
    await writes();
    const ntlm = `${source()}&auth=ntlm`;
    const r = await cliOk(['backup', ntlm, '--repo', repo, '--json'], ENV);
    expect((r.json.points as PointOut[]).every((p) => p.mode === 'incremental')).toBe(true);
    expect(sim.ntlmLogins).toBeGreaterThan(0);
    expectClean();
    await cliFails(['backup', ntlm, '--repo', repo], 'CONNECT_FAILED', { env: { CHUNKVAULT_HYPERV_PASSWORD: 'wrong' } });
    expectClean();
  });

  it('bad credentials, an unknown VM, an unmapped path, a password in the URI', async () => {
    await cliFails(['backup', source(), '--repo', repo], 'CONNECT_FAILED', { env: { CHUNKVAULT_HYPERV_PASSWORD: 'wrong' } });
    await cliFails(['backup', source('no-such-vm'), '--repo', repo], 'SOURCE_NOT_FOUND', ENV);
    await cliFails(['backup', `hyperv://administrator@127.0.0.1:${sim.port}/${VM}`, '--repo', repo], 'INVALID_ARGUMENT', ENV);
    await cliFails(['backup', `hyperv://administrator:pw@127.0.0.1:${sim.port}/${VM}`, '--repo', repo], 'INVALID_ARGUMENT', ENV);
    expectClean();
  });
});
