/**
 * The estimate for a configuration matches what a real backup with that configuration
 * stores: `init --chunk-size X --compression C` + `backup` of each source + `stats
 * --json`, compared on unique raw bytes and stored payload bytes (within 1 %).
 */
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { compressionText, parseCompression } from '../../engine/index.js';
import { backupOk, checkRepo, cliOk, ensureBuilt, initRepo, makeImage, makeTempDir, makeTextImage, MiB, removeTempDir } from '../helpers/cli.js';

let dir: string;

beforeAll(async () => {
  ensureBuilt();
  dir = await makeTempDir('estimate-vs-backup');
});

afterAll(async () => {
  await removeTempDir(dir);
});

const CONFIGS: { chunk: string; codec: string }[] = [
  { chunk: '256K', codec: 'zstd:1' },
  { chunk: '64K', codec: 'lz4' },
  { chunk: '1M', codec: 'zstd:3' },
];

describe('estimate vs backup', () => {
  it('predicts unique and stored bytes of real backups within 1%', async () => {
    const disk1 = join(dir, 'disk1.img');
    const disk2 = join(dir, 'disk2.img');
    const disk3 = join(dir, 'disk3.img');
    await makeImage(disk1, 24 * MiB + 12345, 'est-1');
    await fsp.copyFile(disk1, disk2);
    // A clone with a few writes of text: cross-source dedup with differences.
    const text = join(dir, 'text.img');
    await makeTextImage(text, 3 * MiB, 'est-text');
    const fh = await fsp.open(disk2, 'r+');
    await fh.write(await fsp.readFile(text), 0, 3 * MiB, 5 * MiB + 4096);
    await fh.close();
    await makeTextImage(disk3, 8 * MiB + 1, 'est-3');
    const sources = [disk1, disk2, disk3];
    const est = await cliOk(['estimate', ...sources, '--chunk-sizes', CONFIGS.map((c) => c.chunk).join(','), '--codecs', 'zstd:1,lz4,zstd:3', '--json']);
    for (const [i, c] of CONFIGS.entries()) {
      const repo = join(dir, `repo-${i}`);
      await initRepo(repo, ['--chunk-size', c.chunk, '--compression', c.codec]);
      for (const [k, s] of sources.entries()) await backupOk(repo, s, `vm${k}`);
      const stats = (await cliOk(['stats', '--repo', repo, '--json'])).json as { uniqueRawBytes: number; storedPayloadBytes: number; zeroBytes: number; uniqueChunks: number };
      const scheme = (est.json.schemes as { chunkSize: number; uniqueBytes: number; zeroBytes: number; uniqueChunks: number; codecs: { codec: string; storedBytes: number }[] }[]).find(
        (s) => s.chunkSize === { '64K': 65536, '256K': 262144, '1M': MiB }[c.chunk],
      )!;
      // The estimate labels a codec as it is stored: bare `lz4` is the default acceleration.
      const stored = scheme.codecs.find((x) => x.codec === compressionText(parseCompression(c.codec, 3)))!.storedBytes;
      const what = `${c.chunk} ${c.codec}: estimate ${JSON.stringify({ unique: scheme.uniqueBytes, stored })} vs stats ${JSON.stringify(stats)}`;
      expect(Math.abs(scheme.uniqueBytes - stats.uniqueRawBytes) / stats.uniqueRawBytes, what).toBeLessThan(0.01);
      expect(Math.abs(stored - stats.storedPayloadBytes) / stats.storedPayloadBytes, what).toBeLessThan(0.01);
      // In fact both use the same chunking and codec calls: they agree exactly.
      expect(scheme.uniqueBytes, what).toBe(stats.uniqueRawBytes);
      expect(scheme.uniqueChunks, what).toBe(stats.uniqueChunks);
      expect(scheme.zeroBytes, what).toBe(stats.zeroBytes);
      await checkRepo(repo);
    }
  });
});
