import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { objectStoreConformance, pattern } from '../../test/storage/conformance.js';
import { LocalDirStore } from './index.js';

objectStoreConformance('LocalDirStore', async () => {
  const root = await mkdtemp(join(tmpdir(), 'cv-localstore-'));
  return { store: new LocalDirStore(root), cleanup: () => rm(root, { recursive: true, force: true }) };
});

describe('LocalDirStore specifics', () => {
  it('leaves no temporary file behind and sweeps stale ones', async () => {
    const root = await mkdtemp(join(tmpdir(), 'cv-localstore-'));
    try {
      const store = new LocalDirStore(root);
      await store.put('a/b', pattern(100));
      await store.put('a/b', pattern(100), { ifNoneMatch: '*' }).catch(() => undefined);
      expect(await readdir(join(root, '.tmp'))).toEqual([]);
      await writeFile(join(root, '.tmp', 'crashed.tmp'), 'x');
      expect(await store.sweepTemporary(-1)).toBe(1);
      const keys = [];
      for await (const e of store.list('')) keys.push(e.key);
      expect(keys).toEqual(['a/b']);
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });
});
