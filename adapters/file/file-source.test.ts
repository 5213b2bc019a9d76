import { randomBytes } from 'node:crypto';
import { mkdtemp, readdir, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { backup, Repository } from '../../engine/index.js';
import { FileSource } from './file-source.js';

const CHUNK = 64 * 1024;
let dir: string;
let repo: Repository;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'cv-file-source-'));
  await Repository.init(join(dir, 'repo'), { chunkSize: CHUNK, compression: { codec: 'lz4', level: 4 } });
  repo = await Repository.open(join(dir, 'repo'), { threads: 2 });
});
afterAll(async () => {
  await repo.close();
  await rm(dir, { recursive: true, force: true });
});

describe('FileSource read by the engine workers (pread)', () => {
  it('backs up the file through its descriptor, with the same counts as its size', async () => {
    const path = join(dir, 'disk.img');
    await writeFile(path, randomBytes(20 * CHUNK + 99));
    const src = await FileSource.open(path);
    try {
      expect(src.pread.fd).toBeGreaterThan(2);
      const p = await backup(repo, { source: src, vm: 'vm', disk: 'd' });
      expect(p.stats).toMatchObject({ bytesRead: 20 * CHUNK + 99, chunksRead: 21 });
    } finally {
      await src.close();
    }
  });

  it('a file that shrinks under the backup fails with SOURCE_TRUNCATED naming the file and the offset, and commits nothing', async () => {
    const path = join(dir, 'shrinks.img');
    await writeFile(path, randomBytes(30 * CHUNK));
    const src = await FileSource.open(path);
    try {
      await truncate(path, 17 * CHUNK + 3);
      const err = await backup(repo, { source: src, vm: 'vm-short', disk: 'd' }).catch((e: unknown) => e);
      expect(err).toMatchObject({ code: 'SOURCE_TRUNCATED', details: { offset: 17 * CHUNK + 3 } });
      expect((err as Error).message).toContain(path);
      expect(await repo.catalog.list({ vm: 'vm-short' })).toEqual([]);
      expect(await readdir(join(dir, 'repo', 'tmp'))).toEqual([]);
    } finally {
      await src.close();
    }
  });

  it('words a failed worker read as SOURCE_READ_FAILED with the system error name', async () => {
    const path = join(dir, 'any.img');
    await writeFile(path, Buffer.alloc(CHUNK));
    const src = await FileSource.open(path);
    try {
      const err = src.pread.failure(5, 4096);
      expect(err).toMatchObject({ code: 'SOURCE_READ_FAILED', details: { offset: 4096, errno: 'EIO' } });
      expect(err.message).toBe(`reading ${path} at 4096 failed: EIO`);
      expect(src.pread.failure(0, 10)).toMatchObject({ code: 'SOURCE_TRUNCATED', details: { offset: 10 } });
    } finally {
      await src.close();
    }
  });
});
