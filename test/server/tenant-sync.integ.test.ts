/**
 * Source-side dedup answers follow the tenant's own points: a digest is "held" once a
 * point of the tenant references it, and no longer once that point is forgotten
 * (outside the agent), even while another tenant still holds the same chunk.
 */
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { checkRepo, cliOk, ensureBuilt, initRepo, makeImage, makeTempDir, removeTempDir, waitFor } from '../helpers/cli.js';
import { call, makeToken, startAgent, type Agent } from './_agent.js';

const CHUNK = 64 * 1024;
const SIZE = 2 * 1024 * 1024;

describe('tenant digest sets', () => {
  let dir: string;
  let repo: string;
  let agent: Agent;
  let image: Buffer;
  const tok: Record<string, string> = {};

  const api = (who: string, method: string, path: string, body?: Buffer | object) => call(agent.url, method, path, { token: tok[who]!, ...(body === undefined ? {} : { body }) });
  const digests = () => ({ slots: Array.from({ length: SIZE / CHUNK }, (_, slot) => ({ slot, digest: createHash('sha256').update(image.subarray(slot * CHUNK, (slot + 1) * CHUNK)).digest('hex') })) });

  async function backupImage(who: string, disk: string): Promise<string> {
    const open = await api(who, 'POST', '/v1/sessions', { vm: 'web', disk, sizeBytes: SIZE, parent: null });
    const sid = open.json.session as string;
    const { needed } = (await api(who, 'POST', `/v1/sessions/${sid}/digests`, digests())).json as { needed: number[] };
    for (const slot of needed) expect((await api(who, 'PUT', `/v1/sessions/${sid}/chunks/${slot}`, image.subarray(slot * CHUNK, (slot + 1) * CHUNK))).status).toBe(200);
    const c = await api(who, 'POST', `/v1/sessions/${sid}/commit`);
    expect(c.status, c.body.toString()).toBe(200);
    return c.json.point.id as string;
  }

  async function neededCount(who: string): Promise<number> {
    const sid = (await api(who, 'POST', '/v1/sessions', { vm: 'web', disk: 'probe', sizeBytes: SIZE, parent: null })).json.session as string;
    const r = await api(who, 'POST', `/v1/sessions/${sid}/digests`, digests());
    await api(who, 'DELETE', `/v1/sessions/${sid}`);
    return (r.json.needed as number[]).length;
  }

  beforeAll(async () => {
    ensureBuilt();
    dir = await makeTempDir('agent-sync');
    repo = join(dir, 'repo');
    await initRepo(repo, ['--chunk-size', '64K']);
    tok['acme'] = (await makeToken(repo, 'acme', 'backup,restore')).token;
    tok['globex'] = (await makeToken(repo, 'globex', 'backup,restore')).token;
    await makeImage(join(dir, 'disk.img'), SIZE, 'agent-sync');
    image = await readFile(join(dir, 'disk.img'));
    agent = await startAgent(repo, ['--tenant-sync', '0.2']);
  });

  afterAll(async () => {
    agent?.run.child.kill('SIGKILL');
    await removeTempDir(dir);
  });

  it('forgets what a tenant held once its point is forgotten', async () => {
    const total = SIZE / CHUNK;
    await waitFor(async () => (await neededCount('acme')) === total, 10_000, 100);
    const acmePoint = await backupImage('acme', 'sda');
    await backupImage('acme', 'sdb');
    await backupImage('globex', 'sda');
    expect(await neededCount('acme')).toBe(0);
    // Forgetting one of two points that hold the data keeps it held.
    await cliOk(['forget', acmePoint, '--repo', repo]);
    await new Promise((r) => setTimeout(r, 1000));
    expect(await neededCount('acme')).toBe(0);
    const other = (await api('acme', 'GET', '/v1/points?disk=sdb')).json.points[0].id as string;
    await cliOk(['forget', other, '--repo', repo]);
    // globex still holds every chunk, but acme no longer does: all of it is asked for again.
    await waitFor(async () => (await neededCount('acme')) === total, 10_000, 200);
    expect(await neededCount('globex')).toBe(0);
    await agent.stop();
    await checkRepo(repo);
  });
});
