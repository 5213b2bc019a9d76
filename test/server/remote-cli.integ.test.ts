/**
 * The CLI as a media-agent client (`--repo http(s)://...`): a chain of backups with
 * client-side hashing, the bytes on the wire counted by a TCP proxy (only new chunks
 * cross the network, and a tenant uploads data another tenant holds all the same),
 * 8 concurrent backups of different VMs, a client killed mid-upload (no partial
 * point, no leftovers once its session expires, the next backup exact), and HTTPS with
 * the token and CA from a config file.
 */
import { promises as fsp } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeTestPki } from '../fixtures/tls.js';
import { checkRepo, cliOk, ensureBuilt, initRepo, leftoverTemporaries, listFiles, makeImage, makeRandomImage, makeTempDir, mutateImage, removeTempDir, sha256File, startCli, waitFor, writeJson, MiB } from '../helpers/cli.js';
import { call, CountingProxy, makeToken, startAgent, type Agent } from './_agent.js';

const CHUNK = 256 * 1024;

async function containerBytes(repo: string): Promise<number> {
  let n = 0;
  for (const [p, size] of await listFiles(join(repo, 'containers'))) if (!p.startsWith('tmp/')) n += size;
  return n;
}

describe('CLI against a media agent', () => {
  let dir: string;
  let repo: string;
  let agent: Agent;
  let proxy: CountingProxy;
  let remote: string;
  const tok: Record<string, string> = {};

  const run = (who: string, args: string[], extraEnv: Record<string, string> = {}) => cliOk([...args, '--repo', remote, '--json'], { env: { CHUNKVAULT_TOKEN: tok[who], CHUNKVAULT_CONFIG: join(dir, 'none.json'), ...extraEnv } });

  async function restoreSha(who: string, ref: string, flags: string[] = []): Promise<string> {
    const out = join(dir, `r-${Math.random().toString(16).slice(2)}.img`);
    await run(who, ['restore', ref, '--output', out, ...flags]);
    const sha = await sha256File(out);
    await fsp.rm(out);
    return sha;
  }

  beforeAll(async () => {
    ensureBuilt();
    dir = await makeTempDir('agent-cli');
    repo = join(dir, 'repo');
    await initRepo(repo);
    for (const [name, tenant, scopes] of [['acme', 'acme', 'backup,restore'], ['globex', 'globex', 'backup,restore'], ['ops', 'ops', 'admin']] as const) tok[name] = (await makeToken(repo, tenant, scopes)).token;
    agent = await startAgent(repo, ['--session-timeout', '3']);
    proxy = new CountingProxy(agent.port);
    remote = await proxy.start();
  });

  afterAll(async () => {
    agent?.run.child.kill('SIGKILL');
    await proxy?.close();
    await removeTempDir(dir);
  });

  it('backs up a chain sending only new chunks, and restores it', async () => {
    const img = join(dir, 'web.img');
    await makeImage(img, 32 * MiB, 'agent-cli');
    const expected = new Map<string, string>();
    proxy.reset();
    const full = (await run('acme', ['backup', img, '--vm', 'web', '--disk', 'sda'])).json;
    expected.set(full.point, await sha256File(img));
    const sent = full.bytesUploaded as number;
    expect(full.chunksUploaded).toBeGreaterThan(0);
    // On the wire: the uploaded chunks plus digests and HTTP framing (a few %).
    expect(proxy.up).toBeGreaterThanOrEqual(sent);
    expect(proxy.up).toBeLessThan(sent * 1.05 + 200_000);
    // The same data again: digests only.
    proxy.reset();
    const again = (await run('acme', ['backup', img, '--vm', 'web', '--disk', 'sda'])).json;
    expect(again.chunksUploaded).toBe(0);
    expect(proxy.up).toBeLessThan(200_000);
    expected.set(again.point, await sha256File(img));
    // An incremental from a changed-extents list: only the chunks those extents touch.
    const { extents, sha } = await mutateImage(img, { seed: 'agent-cli-1', writes: 10, maxLength: 100_000 });
    const touched = new Set(extents.flatMap((e) => Array.from({ length: Math.floor((e.offset + e.length - 1) / CHUNK) - Math.floor(e.offset / CHUNK) + 1 }, (_, i) => Math.floor(e.offset / CHUNK) + i)));
    proxy.reset();
    const inc = (await run('acme', ['backup', img, '--vm', 'web', '--disk', 'sda', '--changed-extents', await writeJson(join(dir, 'ext.json'), extents)])).json;
    expect(inc.mode).toBe('incremental');
    expect(inc.parent).toBe(again.point);
    expect(inc.chunksRead).toBe(touched.size);
    expect(proxy.up).toBeLessThan(touched.size * CHUNK + 100_000);
    expected.set(inc.point, sha);
    for (const [id, s] of expected) expect(await restoreSha('acme', id), `restore of ${id}`).toBe(s);
    const points = (await run('acme', ['points'])).json;
    expect(points.map((p: { id: string }) => p.id)).toEqual([...expected.keys()]);
    const stats = (await run('acme', ['stats'])).json;
    expect(stats.points).toBe(3);
    // Another tenant with the same data uploads all of it (nothing tells it acme has it), but storage does not grow.
    const stored = await containerBytes(repo);
    proxy.reset();
    const other = (await run('globex', ['backup', img, '--vm', 'web', '--disk', 'sda'])).json;
    expect(other.chunksUploaded).toBe(other.chunksRead - other.chunksZero);
    expect(proxy.up).toBeGreaterThanOrEqual(other.bytesUploaded);
    expect(await containerBytes(repo)).toBeLessThan(stored * 1.01 + 100_000);
    expect(await restoreSha('globex', 'latest')).toBe(sha);
    expect((await run('globex', ['points'])).json).toHaveLength(1);
  });

  it('runs 8 concurrent backups of different VMs', async () => {
    const images = await Promise.all(Array.from({ length: 8 }, async (_, i) => {
      const path = join(dir, `vm${i}.img`);
      return { path, vm: `vm-${i}`, sha: await makeImage(path, 6 * MiB + i * 4096, `agent-cli-vm${i}`) };
    }));
    const runs = images.map((im) => startCli(['backup', im.path, '--repo', remote, '--vm', im.vm, '--json'], { env: { CHUNKVAULT_TOKEN: tok['acme'] } }).result);
    const results = await Promise.all(runs);
    for (const r of results) expect(r.code, r.stderr).toBe(0);
    for (const im of images) expect(await restoreSha('acme', 'latest', ['--vm', im.vm])).toBe(im.sha);
  });

  it('leaves no partial point when a client is killed mid-upload; the next backup is exact', async () => {
    const img = join(dir, 'big.img');
    const sha = await makeRandomImage(img, 96 * MiB, 'agent-cli-big');
    const before = (await run('acme', ['points', '--vm', 'big'])).json;
    proxy.reset();
    const killed = startCli(['backup', img, '--repo', remote, '--vm', 'big', '--json'], { env: { CHUNKVAULT_TOKEN: tok['acme'] } });
    await waitFor(() => proxy.up > 8 * MiB || killed.child.exitCode !== null, 60_000);
    killed.child.kill('SIGKILL');
    await killed.result;
    const metrics = async () => (await call(agent.url, 'GET', '/metrics', { token: tok['ops']! })).body.toString();
    await waitFor(async () => /chunkvault_agent_sessions_open 0\b/.test(await metrics()), 30_000, 200);
    expect(await metrics()).toMatch(/chunkvault_agent_sessions_total\{outcome="expired"\} [1-9]/);
    expect((await run('acme', ['points', '--vm', 'big'])).json).toEqual(before);
    expect(await leftoverTemporaries(repo)).toEqual([]);
    const r = (await run('acme', ['backup', img, '--vm', 'big'])).json;
    expect(await restoreSha('acme', r.point)).toBe(sha);
  });

  it('works over HTTPS with the token and CA from a config file', async () => {
    const pki = await makeTestPki(join(dir, 'pki'));
    const tlsAgent = await startAgent(repo, ['--tls-cert', join(pki.dir, 'server-cert.pem'), '--tls-key', join(pki.dir, 'server-key.pem')]);
    try {
      const config = await writeJson(join(dir, 'remotes.json'), { [tlsAgent.url]: { token: tok['globex'], ca: pki.caFile } });
      const env = { CHUNKVAULT_CONFIG: config, CHUNKVAULT_TOKEN: undefined } as unknown as Record<string, string>;
      const img = join(dir, 'tls.img');
      const sha = await makeImage(img, 3 * MiB, 'agent-cli-tls');
      const b = await cliOk(['backup', img, '--repo', tlsAgent.url, '--vm', 'tls', '--json'], { env });
      const out = join(dir, 'tls-restored.img');
      await cliOk(['restore', b.json.point, '--repo', tlsAgent.url, '--output', out], { env });
      expect(await sha256File(out)).toBe(sha);
      // Without the CA the certificate is refused.
      const bad = await startCli(['points', '--repo', tlsAgent.url], { env: { CHUNKVAULT_TOKEN: tok['globex'], CHUNKVAULT_CONFIG: join(dir, 'none.json') } }).result;
      expect(bad.stderr).toMatch(/TLS_FAILED/);
    } finally {
      await tlsAgent.stop();
    }
    await agent.stop();
    await checkRepo(repo);
    expect(await readFile(join(repo, 'agent', 'tokens.json'), 'utf8')).not.toContain(tok['acme']!.slice(13));
  });
});
