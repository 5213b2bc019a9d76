/**
 * TLS to the real vSphere simulator started with a self-signed certificate (`-tls`):
 * verification is on by default (TLS_FAILED), `insecure` skips it, and a pinned SHA-256
 * thumbprint is checked before anything (the password) is sent: the right one logs in,
 * a wrong one is TLS_FAILED.
 */
import { connect } from 'node:tls';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { VimClient, type VimEndpoint } from '../../adapters/vmware/index.js';
import { isChunkvaultError } from '../../engine/index.js';
import { startVcsim, describeWithVcsim, type Vcsim } from './vcsim.js';

function fingerprint(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = connect({ host: '127.0.0.1', port, rejectUnauthorized: false }, () => {
      resolve(s.getPeerCertificate().fingerprint256);
      s.destroy();
    });
    s.once('error', reject);
  });
}

describeWithVcsim('vmware: TLS verification and thumbprint pinning (vSphere simulator with -tls)', () => {
  let sim: Vcsim;
  const ep = (extra: Partial<VimEndpoint>): VimEndpoint => ({ protocol: 'https:', host: '127.0.0.1', port: sim.port, ...extra });
  const login = (extra: Partial<VimEndpoint>): Promise<VimClient> => VimClient.login({ endpoint: ep(extra), user: 'user', password: 'pass' });
  const code = (p: Promise<unknown>): Promise<unknown> =>
    p.then(
      () => 'ok',
      (e: unknown) => (isChunkvaultError(e) ? e.code : e),
    );

  beforeAll(async () => {
    sim = await startVcsim({ tls: true });
    expect(sim.base.startsWith('https:')).toBe(true);
  });

  afterAll(async () => {
    await sim?.stop();
  });

  it('verifies certificates by default: a self-signed host is TLS_FAILED', async () => {
    expect(await code(login({}))).toBe('TLS_FAILED');
  });

  it('insecure skips verification', async () => {
    const vim = await login({ insecure: true });
    expect(vim.sessionCookie).not.toBeNull();
    await vim.logout();
  });

  it('the pinned thumbprint logs in; a wrong one is TLS_FAILED before the login is sent', async () => {
    const right = await fingerprint(sim.port);
    const vim = await login({ thumbprint: right });
    expect(vim.logins).toBe(1);
    await vim.logout();
    expect(await code(login({ thumbprint: 'AB'.repeat(32) }))).toBe('TLS_FAILED');
  });
});
