/**
 * The media agent's HTTP API end to end over HTTPS (certificates made at test time):
 * a chain of backups uploaded as raw extents at 512-aligned offsets (partial chunks
 * merged with the parent's data, retried uploads), each point streamed back and read
 * at random ranges over HTTP/1.1 and HTTP/2, byte-identical to the image it was made
 * from; then restored by the local CLI and the repository checked.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeTestPki, type TestPki } from '../fixtures/tls.js';
import { checkRepo, ensureBuilt, expectRestores, initRepo, makeImage, makeTempDir, mutateImage, prng, removeTempDir, sha256 } from '../helpers/cli.js';
import { call, callH2, makeToken, startAgent, type Agent } from './_agent.js';

const SIZE = 6 * 1024 * 1024 + 12345;

describe('media agent API over HTTPS', () => {
  let dir: string;
  let repo: string;
  let pki: TestPki;
  let ca: Buffer;
  let agent: Agent;
  let token: string;

  beforeAll(async () => {
    ensureBuilt();
    dir = await makeTempDir('agent-api');
    repo = join(dir, 'repo');
    await initRepo(repo, ['--chunk-size', '64K']);
    pki = await makeTestPki(join(dir, 'pki'));
    ca = await readFile(pki.caFile);
    token = (await makeToken(repo, 'acme', 'backup,restore')).token;
    agent = await startAgent(repo, ['--tls-cert', join(pki.dir, 'server-cert.pem'), '--tls-key', join(pki.dir, 'server-key.pem')]);
  });

  afterAll(async () => {
    await agent?.run.child.kill('SIGKILL');
    await removeTempDir(dir);
  });

  const api = (method: string, path: string, body?: Buffer | object, headers: Record<string, string> = {}) => call(agent.url, method, path, { token, ca, headers, ...(body === undefined ? {} : { body }) });

  async function uploadPoint(image: Buffer, extents: { offset: number; length: number }[], parent: string | null): Promise<string> {
    const open = await api('POST', '/v1/sessions', { vm: 'web-01', disk: 'sda', sizeBytes: image.length, parent });
    expect(open.status, open.body.toString()).toBe(201);
    const sid = open.json.session as string;
    for (const e of extents) {
      const r = await api('PUT', `/v1/sessions/${sid}/extents/${e.offset}`, image.subarray(e.offset, e.offset + e.length));
      expect(r.status, r.body.toString()).toBe(200);
    }
    // A retried upload (the client did not see the first answer) changes nothing.
    const again = extents[Math.floor(extents.length / 2)]!;
    expect((await api('PUT', `/v1/sessions/${sid}/extents/${again.offset}`, image.subarray(again.offset, again.offset + again.length))).status).toBe(200);
    const commit = await api('POST', `/v1/sessions/${sid}/commit`);
    expect(commit.status, commit.body.toString()).toBe(200);
    // So does a retried commit.
    const retry = await api('POST', `/v1/sessions/${sid}/commit`);
    expect(retry.json.point.id).toBe(commit.json.point.id);
    return commit.json.point.id as string;
  }

  /** The changed extents aligned outward to 512 bytes (the disk end stays as it is). */
  function sectorAligned(extents: { offset: number; length: number }[], size: number): { offset: number; length: number }[] {
    return extents.map((e) => {
      const start = Math.floor(e.offset / 512) * 512;
      const end = Math.min(size, Math.ceil((e.offset + e.length) / 512) * 512);
      return { offset: start, length: end - start };
    });
  }

  it('restores a chain of backups byte-identically, streamed and by ranges', async () => {
    const path = join(dir, 'disk.img');
    await makeImage(path, SIZE, 'agent-api');
    const expected = new Map<string, string>();
    const images = new Map<string, Buffer>();
    let image = await readFile(path);
    // Full: 1 MiB extents (whole chunks) and the odd-sized tail.
    const full: { offset: number; length: number }[] = [];
    for (let at = 0; at < SIZE; at += 1024 * 1024) full.push({ offset: at, length: Math.min(1024 * 1024, SIZE - at) });
    let parent = await uploadPoint(image, full, null);
    expected.set(parent, sha256(image));
    images.set(parent, image);
    for (let i = 0; i < 3; i++) {
      const { extents } = await mutateImage(path, { seed: `agent-api-${i}`, writes: 12, maxLength: 150_000 });
      image = await readFile(path);
      parent = await uploadPoint(image, sectorAligned(extents, SIZE), parent);
      expected.set(parent, sha256(image));
      images.set(parent, image);
    }
    const rnd = prng(7);
    for (const [id, img] of images) {
      const whole = await api('GET', `/v1/points/${id}/data`);
      expect(whole.status).toBe(200);
      expect(sha256(whole.body), `stream of ${id}`).toBe(expected.get(id));
      for (let k = 0; k < 6; k++) {
        const start = Math.floor(rnd() * SIZE);
        const end = Math.min(SIZE - 1, start + Math.floor(rnd() * 300_000));
        const r = await api('GET', `/v1/points/${id}/data`, undefined, { range: `bytes=${start}-${end}` });
        expect(r.status).toBe(206);
        expect(r.headers['content-range']).toBe(`bytes ${start}-${end}/${SIZE}`);
        expect(r.body.equals(img.subarray(start, end + 1)), `range ${start}-${end} of ${id}`).toBe(true);
        const h2 = await callH2(agent.url, `/v1/points/${id}/data`, token, ca, { range: `bytes=${start}-${end}` });
        expect(h2.protocol).toBe('h2');
        expect(h2.status).toBe(206);
        expect(h2.body.equals(img.subarray(start, end + 1)), `HTTP/2 range ${start}-${end} of ${id}`).toBe(true);
      }
      const tail = await api('GET', `/v1/points/${id}/data`, undefined, { range: 'bytes=-1000' });
      expect(tail.body.equals(img.subarray(SIZE - 1000))).toBe(true);
      expect((await api('GET', `/v1/points/${id}/data`, undefined, { range: `bytes=${SIZE}-` })).status).toBe(416);
    }
    const listed = await api('GET', '/v1/points');
    expect(listed.json.points.map((p: { id: string }) => p.id)).toEqual([...expected.keys()]);
    expect(listed.json.points.every((p: { vm: string }) => p.vm === 'web-01')).toBe(true);
    await agent.stop();
    await expectRestores(repo, expected, dir);
    await checkRepo(repo);
  });
});

