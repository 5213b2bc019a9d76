/**
 * Security of the media agent: every refused request gets the documented status and
 * stable code, and changes nothing in the repository. Covers missing, wrong and
 * revoked tokens, scopes, tenant isolation (listing, reading, parents, sessions and
 * the "which digests do you need" answer), body and header limits, malformed extents,
 * path-like names and the per-token session cap.
 */
import { createHash, randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ROUTES } from '../../src/server/routes.js';
import { checkRepo, cliOk, ROOT, ensureBuilt, initRepo, makeImage, makeTempDir, removeTempDir } from '../helpers/cli.js';
import { call, dataSnapshot, makeToken, sendUntilClosed, startAgent, type Agent, type Reply } from './_agent.js';

const CHUNK = 64 * 1024;
const SIZE = 1024 * 1024;

describe('media agent security', () => {
  let dir: string;
  let repo: string;
  let agent: Agent;
  let image: Buffer;
  const tok: Record<string, string> = {};
  let acmePoint: string;
  let before: Record<string, number>;

  const api = (who: string | undefined, method: string, path: string, body?: Buffer | object | string, headers: Record<string, string> = {}) =>
    call(agent.url, method, path, { ...(who ? { token: tok[who] ?? who } : {}), headers, ...(body === undefined ? {} : { body }) });

  function refused(r: Reply, status: number, code: string): void {
    expect(r.status, r.body.toString()).toBe(status);
    expect(r.json?.error?.code, r.body.toString()).toBe(code);
    expect(typeof r.json?.error?.message).toBe('string');
  }

  async function openSession(who: string, body: object = { vm: 'web', disk: 'sda', sizeBytes: SIZE, parent: null }): Promise<string> {
    const r = await api(who, 'POST', '/v1/sessions', body);
    expect(r.status, r.body.toString()).toBe(201);
    return r.json.session as string;
  }

  beforeAll(async () => {
    ensureBuilt();
    dir = await makeTempDir('agent-sec');
    repo = join(dir, 'repo');
    await initRepo(repo, ['--chunk-size', '64K']);
    for (const [name, tenant, scopes] of [['acmeBackup', 'acme', 'backup'], ['acmeRead', 'acme', 'restore'], ['acme2', 'acme', 'backup,restore'], ['globex', 'globex', 'backup,restore'], ['admin', 'ops', 'admin']] as const) {
      tok[name] = (await makeToken(repo, tenant, scopes)).token;
    }
    agent = await startAgent(repo, ['--max-body', '256K', '--max-sessions', '3']);
    await makeImage(join(dir, 'disk.img'), SIZE, 'agent-sec');
    image = await readFile(join(dir, 'disk.img'));
    const sid = await openSession('acmeBackup');
    expect((await api('acmeBackup', 'PUT', `/v1/sessions/${sid}/extents/0`, image.subarray(0, 256 * 1024))).status).toBe(200);
    expect((await api('acmeBackup', 'PUT', `/v1/sessions/${sid}/extents/${256 * 1024}`, image.subarray(256 * 1024, 512 * 1024))).status).toBe(200);
    for (let at = 512 * 1024; at < SIZE; at += CHUNK) expect((await api('acmeBackup', 'PUT', `/v1/sessions/${sid}/chunks/${at / CHUNK}`, image.subarray(at, at + CHUNK))).status).toBe(200);
    const c = await api('acmeBackup', 'POST', `/v1/sessions/${sid}/commit`);
    expect(c.status, c.body.toString()).toBe(200);
    acmePoint = c.json.point.id;
    before = await dataSnapshot(repo);
  });

  afterAll(async () => {
    agent?.run.child.kill('SIGKILL');
    await removeTempDir(dir);
  });

  it('refuses requests without a valid token', async () => {
    refused(await api(undefined, 'GET', '/v1/points'), 401, 'AUTH_REQUIRED');
    refused(await api(undefined, 'POST', '/v1/sessions', { vm: 'x', disk: 'y', sizeBytes: 1 }), 401, 'AUTH_REQUIRED');
    refused(await api(undefined, 'GET', `/v1/points/${acmePoint}/data`), 401, 'AUTH_REQUIRED');
    refused(await api('not-a-token', 'GET', '/v1/points'), 401, 'AUTH_FAILED');
    const id = tok['acmeRead']!.slice(4, 12);
    refused(await api(`cvt_${id}_${randomBytes(32).toString('base64url')}`, 'GET', '/v1/points'), 401, 'AUTH_FAILED');
    refused(await api('acmeRead', 'GET', '/v1/points', undefined, { authorization: `Basic ${Buffer.from('a:b').toString('base64')}` }), 401, 'AUTH_FAILED');
    // Revocation takes effect on the running server.
    const t = await makeToken(repo, 'acme', 'restore');
    expect((await api(t.token, 'GET', '/v1/points')).status).toBe(200);
    await cliOk(['token', 'revoke', t.id, '--repo', repo]);
    refused(await api(t.token, 'GET', '/v1/points'), 401, 'AUTH_FAILED');
    const listed = await cliOk(['token', 'list', '--repo', repo, '--json']);
    expect(JSON.stringify(listed.json)).not.toContain('hash');
    expect(listed.json.find((r: { id: string }) => r.id === t.id).revoked).toEqual(expect.any(String));
  });

  it('keeps a backup token write-only and a restore token read-only', async () => {
    refused(await api('acmeBackup', 'GET', `/v1/points/${acmePoint}/data`), 403, 'FORBIDDEN');
    refused(await api('acmeBackup', 'GET', `/v1/points/${acmePoint}/data`, undefined, { range: 'bytes=0-99' }), 403, 'FORBIDDEN');
    refused(await api('acmeBackup', 'GET', '/v1/stats'), 403, 'FORBIDDEN');
    refused(await api('acmeBackup', 'GET', '/metrics'), 403, 'FORBIDDEN');
    refused(await api('acmeRead', 'POST', '/v1/sessions', { vm: 'web', disk: 'sda', sizeBytes: SIZE }), 403, 'FORBIDDEN');
    const ok = await api('acmeRead', 'GET', `/v1/points/${acmePoint}/data`);
    expect(ok.body.equals(image)).toBe(true);
    expect((await api('admin', 'GET', '/metrics')).body.toString()).toContain('chunkvault_agent_bytes_ingested_total');
  });

  it('isolates tenants: no listing, reading, parenting or probing of another tenant', async () => {
    expect((await api('globex', 'GET', '/v1/points')).json.points).toEqual([]);
    expect((await api('globex', 'GET', '/v1/points?vm=web')).json.points).toEqual([]);
    const theirs = await api('globex', 'GET', `/v1/points/${acmePoint}`);
    const none = await api('globex', 'GET', '/v1/points/0123456789abcdef');
    refused(theirs, 404, 'POINT_NOT_FOUND');
    expect({ ...theirs.json.error, details: {}, message: '' }).toEqual({ ...none.json.error, details: {}, message: '' });
    refused(await api('globex', 'GET', `/v1/points/${acmePoint}/data`), 404, 'POINT_NOT_FOUND');
    refused(await api('globex', 'GET', `/v1/points/${acmePoint}/data`, undefined, { range: 'bytes=0-10' }), 404, 'POINT_NOT_FOUND');
    refused(await api('globex', 'POST', '/v1/sessions', { vm: 'web', disk: 'sda', sizeBytes: SIZE, parent: acmePoint }), 404, 'POINT_NOT_FOUND');
    expect((await api('globex', 'GET', '/v1/stats')).json).toMatchObject({ points: 0, logicalBytes: 0, uniqueChunks: 0 });
    // Probing: acme's digests are all "needed" from globex, exactly like digests nobody holds.
    const sid = await openSession('globex');
    const digests = (bytes: (slot: number) => Buffer) => Array.from({ length: SIZE / CHUNK }, (_, slot) => ({ slot, digest: createHash('sha256').update(bytes(slot)).digest('hex') }));
    const known = await api('globex', 'POST', `/v1/sessions/${sid}/digests`, { slots: digests((s) => image.subarray(s * CHUNK, (s + 1) * CHUNK)) });
    const unknown = await api('globex', 'POST', `/v1/sessions/${sid}/digests`, { slots: digests(() => randomBytes(CHUNK)) });
    expect(known.status).toBe(200);
    expect(known.json).toEqual(unknown.json);
    expect(known.json.needed).toHaveLength(SIZE / CHUNK);
    // Uploading a chunk acme holds answers exactly like a new one.
    const dup = await api('globex', 'PUT', `/v1/sessions/${sid}/chunks/0`, image.subarray(0, CHUNK));
    const fresh = await api('globex', 'PUT', `/v1/sessions/${sid}/chunks/1`, randomBytes(CHUNK));
    expect(Object.keys(dup.json).sort()).toEqual(Object.keys(fresh.json).sort());
    expect(dup.headers['content-length']).toBe(fresh.headers['content-length']);
    // Another token's session does not exist for you, even in the same tenant.
    for (const who of ['acmeBackup', 'acme2']) {
      refused(await api(who, 'GET', `/v1/sessions/${sid}`), 404, 'SESSION_NOT_FOUND');
      refused(await api(who, 'PUT', `/v1/sessions/${sid}/chunks/2`, randomBytes(CHUNK)), 404, 'SESSION_NOT_FOUND');
      refused(await api(who, 'POST', `/v1/sessions/${sid}/commit`), 404, 'SESSION_NOT_FOUND');
      refused(await api(who, 'DELETE', `/v1/sessions/${sid}`), 404, 'SESSION_NOT_FOUND');
    }
    expect((await api('globex', 'DELETE', `/v1/sessions/${sid}`)).status).toBe(204);
    refused(await api('globex', 'POST', `/v1/sessions/${sid}/commit`), 404, 'SESSION_NOT_FOUND');
  });

  it('refuses oversized bodies and headers, malformed extents and path-like names', async () => {
    const sid = await openSession('acmeBackup');
    refused(await api('acmeBackup', 'PUT', `/v1/sessions/${sid}/extents/0`, Buffer.alloc(256 * 1024 + 512, 1)), 413, 'BODY_TOO_LARGE');
    refused(await api('acmeBackup', 'PUT', `/v1/sessions/${sid}/chunks/0`, Buffer.alloc(CHUNK + 1, 1)), 413, 'BODY_TOO_LARGE');
    refused(await api('acmeBackup', 'POST', `/v1/sessions/${sid}/digests`, `{"slots":[${'0,'.repeat(1_100_000)}0]}`), 413, 'BODY_TOO_LARGE');
    // Chunked, so the limit is found while reading: the client still gets the 413.
    const chunked = await call(agent.url, 'PUT', `/v1/sessions/${sid}/extents/0`, { token: tok.acmeBackup, body: Buffer.alloc(256 * 1024 + 512, 1), chunked: true });
    refused(chunked, 413, 'BODY_TOO_LARGE');
    const big = await api('acmeBackup', 'GET', '/v1/points', undefined, { 'x-padding': 'a'.repeat(40 * 1024) });
    expect(big.status).toBe(431);
    refused(await api('acmeBackup', 'PUT', `/v1/sessions/${sid}/extents/100`, Buffer.alloc(512, 1)), 400, 'EXTENTS_INVALID');
    refused(await api('acmeBackup', 'PUT', `/v1/sessions/${sid}/extents/0`, Buffer.alloc(1000, 1)), 400, 'EXTENTS_INVALID');
    refused(await api('acmeBackup', 'PUT', `/v1/sessions/${sid}/extents/${SIZE - 512}`, Buffer.alloc(1024, 1)), 400, 'EXTENTS_INVALID');
    refused(await api('acmeBackup', 'PUT', `/v1/sessions/${sid}/chunks/${SIZE / CHUNK}`, Buffer.alloc(CHUNK, 1)), 400, 'EXTENTS_INVALID');
    refused(await api('acmeBackup', 'PUT', `/v1/sessions/${sid}/chunks/0`, Buffer.alloc(100, 1)), 400, 'EXTENTS_INVALID');
    refused(await api('acmeBackup', 'PUT', `/v1/sessions/${sid}/chunks/0`, Buffer.alloc(CHUNK, 1), { 'x-chunk-digest': 'ab'.repeat(32) }), 400, 'INVALID_ARGUMENT');
    refused(await api('acmeBackup', 'POST', `/v1/sessions/${sid}/digests`, { slots: [{ slot: 0, digest: 'xyz' }] }), 400, 'INVALID_ARGUMENT');
    refused(await api('acmeBackup', 'POST', `/v1/sessions/${sid}/digests`, { slots: [{ slot: -1, digest: 'ab'.repeat(32) }] }), 400, 'INVALID_ARGUMENT');
    refused(await api('acmeBackup', 'POST', `/v1/sessions/${sid}/digests`, '{not json'), 400, 'INVALID_ARGUMENT');
    for (const [vm, disk] of [['../etc', 'sda'], ['a/b', 'sda'], ['..', 'sda'], ['web', '..'], ['web', '../../config.json'], ['', 'sda'], ['x'.repeat(200), 'sda']]) {
      refused(await api('acmeBackup', 'POST', '/v1/sessions', { vm, disk, sizeBytes: SIZE, parent: null }), 400, 'INVALID_ARGUMENT');
    }
    refused(await api('acmeBackup', 'POST', '/v1/sessions', { vm: 'web', disk: 'sda', sizeBytes: -1 }), 400, 'INVALID_ARGUMENT');
    refused(await api('acmeBackup', 'POST', '/v1/sessions', { vm: 'web', disk: 'sda', sizeBytes: SIZE, parent: '../../x' }), 400, 'INVALID_ARGUMENT');
    for (const path of ['/v1/points/../sessions', `/v1/points/${acmePoint}/../../config.json`, '/v1/points/..%2f..%2fconfig.json/data', '/v1/points/abc/data', '/config.json']) {
      refused(await api('acmeRead', 'GET', path), 404, 'NOT_FOUND');
    }
    expect((await api('acmeBackup', 'DELETE', `/v1/sessions/${sid}`)).status).toBe(204);
  });

  it('answers 413 to a client still sending a refused body, then closes its connection', async () => {
    const sid = await openSession('acmeBackup');
    const reply = await sendUntilClosed(agent.url, `/v1/sessions/${sid}/extents/0`, tok.acmeBackup!, 1024 ** 3);
    expect(reply.startsWith('HTTP/1.1 413'), reply).toBe(true);
    expect(reply).toContain('BODY_TOO_LARGE');
    expect((await api('acmeBackup', 'DELETE', `/v1/sessions/${sid}`)).status).toBe(204);
  });

  it('caps concurrent sessions per token', async () => {
    const open = [await openSession('acme2'), await openSession('acme2'), await openSession('acme2')];
    refused(await api('acme2', 'POST', '/v1/sessions', { vm: 'web', disk: 'sda', sizeBytes: SIZE }), 429, 'TOO_MANY_SESSIONS');
    // The cap is per token: another token of the tenant still opens one.
    await api('acmeBackup', 'DELETE', `/v1/sessions/${await openSession('acmeBackup')}`);
    for (const sid of open) expect((await api('acme2', 'DELETE', `/v1/sessions/${sid}`)).status).toBe(204);
  });

  it('serves its OpenAPI document (docs/openapi.json), covering every route, without a token', async () => {
    const served = await api(undefined, 'GET', '/v1/openapi.json');
    expect(served.status).toBe(200);
    expect(served.json).toEqual(JSON.parse(await readFile(join(ROOT, 'docs', 'openapi.json'), 'utf8')));
    for (const r of ROUTES) expect(served.json.paths[r.name]?.[r.method.toLowerCase()], `${r.method} ${r.name}`).toBeDefined();
  });

  it('changed nothing in the repository', async () => {
    expect(await dataSnapshot(repo)).toEqual(before);
    const points = await api('acme2', 'GET', '/v1/points');
    expect(points.json.points.map((p: { id: string }) => p.id)).toEqual([acmePoint]);
    await agent.stop();
    await checkRepo(repo);
  });
});
