import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ChunkvaultError, isChunkvaultError, Repository, restore, type BlockSource, type RestoreTarget } from '../engine/index.js';
import type { BackupPlan, VmFrontEnd } from '../adapters/index.js';
import { runVmBackupJob } from './vm-jobs.js';

class MemorySource implements BlockSource {
  constructor(readonly data: Buffer, private readonly fail = false) {}
  get sizeBytes(): number {
    return this.data.length;
  }
  async readInto(target: Uint8Array, offset: number): Promise<void> {
    if (this.fail) throw new ChunkvaultError('SOURCE_READ_FAILED', 'injected');
    target.set(this.data.subarray(offset, offset + target.length));
  }
  describe(): string {
    return 'memory';
  }
  async close(): Promise<void> {}
}

/** A two-disk VM whose second disk can be made to fail; records every finish call. */
class TestVm implements VmFrontEnd {
  readonly vmName = 'vm-multi';
  readonly finished: string[] = [];
  constructor(private readonly disks: Record<string, MemorySource>) {}
  async plan() {
    const disks = Object.entries(this.disks).map(([disk, source]) => {
      const plan: BackupPlan = { source, base: 'parent', changeToken: `token-${disk}`, finish: async (ok) => void this.finished.push(`${disk}:${ok}`) };
      return { disk, plan };
    });
    return { disks, config: { cpus: 2 }, finish: async (ok: boolean) => void this.finished.push(`vm:${ok}`) };
  }
}

class MemoryTarget implements RestoreTarget {
  readonly sparse = false;
  buf = Buffer.alloc(0);
  async begin(size: number): Promise<void> {
    this.buf = Buffer.alloc(size);
  }
  async write(offset: number, data: Uint8Array): Promise<void> {
    this.buf.set(data, offset);
  }
  async commit(): Promise<void> {}
  async abort(): Promise<void> {}
}

let dir: string;
let repo: Repository;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'cv-vmjob-'));
  await Repository.init(dir, { chunkSize: 65536 });
  repo = await Repository.open(dir, { threads: 1 });
});
afterAll(async () => {
  await repo.close();
  await rm(dir, { recursive: true, force: true });
});

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

describe('whole-VM backup jobs', () => {
  it('commits one point per disk and a VM record, finishing every plan with success', async () => {
    const disks = { d0: new MemorySource(randomBytes(300_000)), d1: new MemorySource(randomBytes(70_000)) };
    const vm = new TestVm(disks);
    const { record, points } = await runVmBackupJob({ repo, frontEnd: vm });
    expect(record.disks.map((d) => d.disk)).toEqual(['d0', 'd1']);
    expect(record.config).toEqual({ cpus: 2 });
    expect(vm.finished).toEqual(['d0:true', 'd1:true', 'vm:true']);
    expect((await repo.catalog.list({ vm: 'vm-multi' })).map((p) => p.id).sort()).toEqual(points.map((p) => p.id).sort());
    for (const p of points) {
      const t = new MemoryTarget();
      await restore(repo, p, t);
      expect(sha(t.buf)).toBe(sha(disks[p.disk as 'd0' | 'd1'].data));
      expect(p.changeToken).toBe(`token-${p.disk}`);
    }
  });

  it('shows no point of a job whose later disk failed, and finishes every plan as failed', async () => {
    const before = await repo.catalog.list();
    const vm = new TestVm({ d0: new MemorySource(randomBytes(200_000)), d1: new MemorySource(randomBytes(100_000), true) });
    await expect(runVmBackupJob({ repo, frontEnd: vm })).rejects.toSatisfy((e) => isChunkvaultError(e, 'SOURCE_READ_FAILED'));
    expect(vm.finished).toEqual(['d0:false', 'd1:false', 'vm:false']);
    expect(await repo.catalog.list()).toEqual(before);
    expect(await repo.catalog.uncommittedJobPoints()).toEqual([]);
    expect((await readdir(join(dir, 'catalog', 'points'))).length).toBe(before.length);
  });
});
