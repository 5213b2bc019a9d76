/**
 * ContainerWriter end to end on the local filesystem: records of odd sizes that fill
 * several 8 MiB stages (each stage's partial last block carried into the next one),
 * write-behind, and the same records with direct I/O and without. Every record
 * is read back through ContainerReader and checked against what was appended.
 */
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, promises as fsp } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ContainerReader, ContainerWriter, containerPath, containerTmpPath } from './container.js';
import { initHashing, xxh64 } from './hashing.js';
import type { RecordHeader } from './container-format.js';

let dir: string;
beforeAll(async () => {
  await initHashing();
  dir = await fsp.mkdtemp(join(tmpdir(), 'cv-container-'));
  await fsp.mkdir(join(dir, 'containers', 'tmp'), { recursive: true });
});
afterAll(() => fsp.rm(dir, { recursive: true, force: true }));

function record(payload: Uint8Array): RecordHeader {
  return {
    codec: 0,
    rawLength: payload.length,
    storedLength: payload.length,
    digest: createHash('sha256').update(payload).digest(),
    checkHash: xxh64(payload),
    payloadHash: xxh64(payload),
  };
}

/** Payload sizes (at most a chunk, 4 MiB) that leave a different partial block at every stage boundary. */
const SIZES = [1, 4095, 4097, 700_001, 3 * 1024 * 1024 + 3, 4 * 1024 * 1024, 65_536, 2_500_000, 1_048_575, 4_000_003, 12, 3_999_999, 4_194_303];

async function writeContainer(direct: boolean): Promise<{ id: string; payloads: Buffer[]; directBytes: number }> {
  const w = await ContainerWriter.create(dir, { direct });
  const payloads = SIZES.map((n) => randomBytes(n));
  for (const p of payloads) await w.append(record(p), p);
  await w.seal();
  return { id: w.id, payloads, directBytes: w.directBytes };
}

async function readBack(id: string, payloads: readonly Buffer[]): Promise<number> {
  const r = await ContainerReader.open(dir, id);
  try {
    const entries = await r.readFooter();
    expect(entries.map((e) => e.storedLength)).toEqual(SIZES);
    for (const [k, e] of entries.entries()) {
      const rec = await r.readRecord(e.offset, e.storedLength, e.digest);
      expect(Buffer.from(rec.payload).equals(payloads[k]!), `record ${k}`).toBe(true);
    }
  } finally {
    await r.close();
  }
  return (await fsp.stat(containerPath(dir, id))).size;
}

describe('ContainerWriter', () => {
  it('writes every whole block with direct I/O, carrying partial blocks across stages, and reads back exactly', async () => {
    const { id, payloads, directBytes } = await writeContainer(true);
    const size = await readBack(id, payloads);
    // Everything but the file's last partial block went direct.
    expect(directBytes).toBe(size - (size % 4096));
    expect(existsSync(containerTmpPath(dir, id))).toBe(false);
  });

  it('writes the same records through the page cache when direct I/O is off', async () => {
    const { id, payloads, directBytes } = await writeContainer(false);
    expect(directBytes).toBe(0);
    await readBack(id, payloads);
  });

  it('removes the unsealed file on abort after direct writes', async () => {
    const w = await ContainerWriter.create(dir);
    for (let k = 0; k < 3; k++) {
      const p = randomBytes(4 * 1024 * 1024 - k);
      await w.append(record(p), p);
    }
    expect(w.directBytes).toBeGreaterThan(0);
    await w.abort();
    expect(existsSync(containerTmpPath(dir, w.id))).toBe(false);
    expect(existsSync(containerPath(dir, w.id))).toBe(false);
  });
});
