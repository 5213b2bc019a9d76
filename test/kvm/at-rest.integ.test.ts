/**
 * The `kvm:` front-end against real qemu-img, qemu-io and qemu-nbd: a chain of
 * incremental backups of a qcow2 image written with qemu-io between backups; each
 * point restores byte-identical to `qemu-img convert -O raw` of a copy of the image
 * taken right before its backup, and after each backup the image holds exactly one
 * bitmap of ours, enabled, named by the point's changeToken. Then the fall-backs: a
 * deleted bitmap and an in-use (inconsistent) one force a full read recorded in the
 * point, and so does a disabled one with nothing else recording; a leftover bitmap
 * from a run killed mid-rotation is absorbed; a locked image
 * (a writer holds it) is refused without touching its bitmaps.
 */
import { spawn } from 'node:child_process';
import { copyFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import {
  backupOk,
  checkRepo,
  cli,
  cliOk,
  ensureBuilt,
  expectCliError,
  initRepo,
  listPoints,
  makeTempDir,
  prng,
  removeTempDir,
  restoreSha,
  sha256File,
  waitFor,
  type PointJson,
} from '../helpers/cli.js';
import { convertToRaw, describeWithPeersHint, imageBitmaps, qemuIo, run } from '../fixtures/peers.js';

const MiB = 1024 * 1024;
const SIZE = 96 * MiB;
const VM = 'vm-rest';
const INSTALL = 'apt-get install -y qemu-utils';

describeWithPeersHint('kvm: qcow2 images at rest', ['qemu-img', 'qemu-io', 'qemu-nbd'], INSTALL, () => {
  let dir: string;
  let repo: string;
  let image: string;
  let source: string;
  const expected = new Map<string, string>(); // point id -> SHA-256 of its raw image
  const rnd = prng(0x6b766d31);
  let copies = 0;

  /** Seeded writes at random offsets: data patterns, zeroes and discards, 512-aligned. */
  function randomWrites(count: number): string[] {
    const cmds: string[] = [];
    for (let i = 0; i < count; i++) {
      const len = 512 * (1 + Math.floor(rnd() * 512));
      const off = 512 * Math.floor(rnd() * ((SIZE - len) / 512));
      const kind = rnd();
      if (kind < 0.8) cmds.push(`write -P 0x${(1 + Math.floor(rnd() * 254)).toString(16)} ${off} ${len}`);
      else if (kind < 0.9) cmds.push(`write -z ${off} ${len}`);
      else cmds.push(`discard ${off} ${len}`);
    }
    return cmds;
  }

  /** SHA-256 of `qemu-img convert -O raw` of a copy of the image taken now. */
  async function snapshotSha(): Promise<string> {
    const copy = join(dir, `copy-${++copies}.qcow2`);
    const raw = join(dir, `copy-${copies}.raw`);
    await copyFile(image, copy);
    await convertToRaw(copy, raw);
    const sha = await sha256File(raw);
    await Promise.all([rm(copy), rm(raw)]);
    return sha;
  }

  async function pointOf(id: string): Promise<PointJson> {
    const point = (await listPoints(repo)).find((p) => p.id === id);
    expect(point, `point ${id} listed`).toBeDefined();
    return point as PointJson;
  }

  /** Exactly one bitmap, ours, enabled, and it is the point's change token. */
  async function expectOneBitmapFor(point: PointJson): Promise<void> {
    const bitmaps = await imageBitmaps(image);
    expect(bitmaps).toEqual([{ name: point['changeToken'], flags: ['auto'] }]);
    expect(point['changeToken']).toMatch(/^cv-/);
  }

  /** Backs up now; records the expected image; checks bitmaps; returns the point. */
  async function backupAndCheck(flags: readonly string[] = []): Promise<PointJson> {
    const sha = await snapshotSha();
    const r = await backupOk(repo, source, VM, flags);
    expected.set(r.point, sha);
    const point = await pointOf(r.point);
    await expectOneBitmapFor(point);
    return point;
  }

  beforeAll(async () => {
    ensureBuilt();
    dir = await makeTempDir('kvm-rest');
    repo = join(dir, 'repo');
    image = join(dir, 'vm disk.qcow2'); // a space in the path on purpose
    source = `kvm:${image}`;
    await run('qemu-img', ['create', '-q', '-f', 'qcow2', image, String(SIZE)]);
    await qemuIo(image, 'qcow2', ['write -P 0xaa 0 8M', 'write -P 0x11 40M 3M', ...randomWrites(40)]);
    await initRepo(repo, ['--chunk-size', '256K']);
  });

  afterAll(async () => {
    await removeTempDir(dir);
  });

  it('backs up a chain of 6 points (1 full + 5 incremental), each restoring byte-identical', async () => {
    const first = await backupAndCheck();
    expect(first.mode).toBe('full');
    expect((first['meta'] as Record<string, unknown>)['fullReason']).toBe('first backup of this disk');
    expect(first.disk).toBe('vm_disk');
    let parent = first;
    for (let i = 1; i <= 5; i++) {
      await qemuIo(image, 'qcow2', randomWrites(5 + Math.floor(rnd() * 20)));
      const point = await backupAndCheck();
      expect(point.mode, `backup ${i}`).toBe('incremental');
      expect(point.parent).toBe(parent.id);
      const meta = point['meta'] as Record<string, unknown>;
      expect(meta['changesFrom']).toBe(parent['changeToken']);
      expect(meta['fullReason']).toBeUndefined();
      // Only the dirty clusters (aligned to chunks) were read, far less than the disk.
      expect((point['stats'] as { bytesRead: number }).bytesRead).toBeLessThan(SIZE / 3);
      parent = point;
    }
    // An unchanged image: nothing dirty, nothing read, same content.
    const idle = await backupAndCheck();
    expect(idle.mode).toBe('incremental');
    expect((idle['stats'] as { bytesRead: number }).bytesRead).toBe(0);
    for (const [id, sha] of expected) expect(await restoreSha(repo, id, dir), `restore of ${id}`).toBe(sha);
  });

  it('falls back to a full read when the parent bitmap was deleted, and says so in points', async () => {
    const [bitmap] = await imageBitmaps(image);
    await run('qemu-img', ['bitmap', '--remove', '-f', 'qcow2', image, bitmap!.name]);
    await qemuIo(image, 'qcow2', randomWrites(10));
    const point = await backupAndCheck();
    expect(point.mode).toBe('full');
    expect((point['meta'] as Record<string, unknown>)['fullReason']).toBe(`bitmap ${bitmap!.name} of the parent point is not in the image`);
    const table = await cliOk(['points', '--repo', repo]);
    expect(table.stdout).toContain(`${point.id}: full read: bitmap ${bitmap!.name} of the parent point is not in the image`);
    // And the chain continues incrementally from the new bitmap.
    await qemuIo(image, 'qcow2', randomWrites(5));
    expect((await backupAndCheck()).mode).toBe('incremental');
    expect(await restoreSha(repo, point.id, dir)).toBe(expected.get(point.id));
  });

  it('falls back to a full read when the parent bitmap is in-use (the image was not closed cleanly)', async () => {
    await qemuIo(image, 'qcow2', randomWrites(10));
    // A writer that dies without closing the image leaves its bitmaps flagged in-use.
    const writer = spawn('qemu-io', ['-f', 'qcow2', image], { stdio: ['pipe', 'ignore', 'ignore'] });
    await waitFor(async () => (await imageBitmaps(image)).some((b) => b.flags.includes('in-use')), 10_000, 20);
    const gone = new Promise((resolve) => writer.once('exit', resolve));
    writer.kill('SIGKILL');
    await gone;
    const [bitmap] = await imageBitmaps(image);
    expect(bitmap!.flags).toContain('in-use');
    const point = await backupAndCheck();
    expect(point.mode).toBe('full');
    expect((point['meta'] as Record<string, unknown>)['fullReason']).toMatch(/inconsistent/);
    expect(await restoreSha(repo, point.id, dir)).toBe(expected.get(point.id));
  });

  it('absorbs a bitmap left by a run killed between rotation and finish, losing no write', async () => {
    const [old] = await imageBitmaps(image);
    // What a killed run leaves: its new bitmap recording, the parent's disabled.
    await run('qemu-img', ['bitmap', '--add', '-f', 'qcow2', image, 'cv-leftover']);
    await run('qemu-img', ['bitmap', '--disable', '-f', 'qcow2', image, old!.name]);
    await qemuIo(image, 'qcow2', ['write -P 0x5a 77M 64k', ...randomWrites(5)]); // only cv-leftover sees these
    const point = await backupAndCheck();
    expect(point.mode).toBe('incremental');
    expect((point['meta'] as Record<string, unknown>)['absorbedBitmaps']).toEqual(['cv-leftover']);
    expect(await restoreSha(repo, point.id, dir)).toBe(expected.get(point.id));
  });

  it('falls back to a full read when the parent bitmap was disabled and nothing else recorded writes', async () => {
    const [old] = await imageBitmaps(image);
    await run('qemu-img', ['bitmap', '--disable', '-f', 'qcow2', image, old!.name]);
    await qemuIo(image, 'qcow2', randomWrites(5)); // recorded by no bitmap
    const point = await backupAndCheck();
    expect(point.mode).toBe('full');
    expect((point['meta'] as Record<string, unknown>)['fullReason']).toMatch(/was disabled/);
    expect(await restoreSha(repo, point.id, dir)).toBe(expected.get(point.id));
  });

  it('refuses an image a writer holds open, leaving its bitmaps and the repository as they were', async () => {
    const before = await imageBitmaps(image);
    const pointsBefore = (await listPoints(repo)).length;
    const writer = spawn('qemu-io', ['-f', 'qcow2', image], { stdio: ['pipe', 'ignore', 'ignore'] });
    try {
      await waitFor(async () => (await imageBitmaps(image)).some((b) => b.flags.includes('in-use')), 10_000, 20);
      const args = ['backup', source, '--repo', repo, '--vm', VM, '--json'];
      const r = await cli(args);
      expectCliError(r, 'SOURCE_READ_FAILED', args);
      expect(r.stderr).toMatch(/lock/);
    } finally {
      const gone = new Promise((resolve) => writer.once('exit', resolve));
      writer.stdin?.end('quit\n');
      await gone;
    }
    expect(await imageBitmaps(image)).toEqual(before);
    expect((await listPoints(repo)).length).toBe(pointsBefore);
  });

  it('rejects bad kvm: sources with clear errors', async () => {
    const cases: [string[], 'INVALID_ARGUMENT' | 'SOURCE_NOT_FOUND'][] = [
      [['backup', `kvm:${join(dir, 'missing.qcow2')}`], 'SOURCE_NOT_FOUND'],
      [['backup', `kvm:${image}?bogus=1`], 'INVALID_ARGUMENT'],
      [['backup', source, '--bitmap', 'x'], 'INVALID_ARGUMENT'],
      [['backup', 'kvm+qmp:/nowhere/qmp.sock'], 'INVALID_ARGUMENT'],
    ];
    const raw = join(dir, 'plain.raw');
    await run('qemu-img', ['create', '-q', '-f', 'raw', raw, '1M']);
    cases.push([['backup', `kvm:${raw}`], 'INVALID_ARGUMENT']);
    for (const [args, code] of cases) {
      const full = [...args, '--repo', repo, '--vm', VM, '--json'];
      expectCliError(await cli(full), code, full);
    }
  });

  it('leaves a repository that verifies, and every point still restores', async () => {
    await checkRepo(repo);
    for (const [id, sha] of expected) expect(await restoreSha(repo, id, dir), `restore of ${id}`).toBe(sha);
  });
});
