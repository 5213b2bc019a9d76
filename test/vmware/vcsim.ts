/**
 * The real vSphere simulator for tests: govmomi's `simulator` library (Debian's
 * golang-github-vmware-govmomi-dev) behind our launcher in tools/vcsim, built offline
 * on first use. Readiness without sleeps: the launcher prints one JSON line with its
 * URL and datastore directories once it accepts connections. It stops when we close
 * its stdin (and on SIGTERM), removing its datastore directories.
 *
 * Missing go or govmomi: under CI (`CI=true`) the suite fails; elsewhere it is skipped.
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { describe, it } from 'vitest';
import { ROOT } from '../helpers/cli.js';
import { findBinary } from '../fixtures/peers.js';

const GOVMOMI = '/usr/share/gocode/src/github.com/vmware/govmomi/simulator';
const INSTALL = 'apt-get install -y golang-go golang-github-vmware-govmomi-dev';
const LAUNCHER = join(ROOT, 'tools', 'vcsim', 'bin', 'vcsim-launcher');

function missing(binaries: readonly string[]): string[] {
  const out = binaries.filter((b) => findBinary(b) === null);
  if (findBinary('go') === null) out.push('go');
  if (!existsSync(GOVMOMI)) out.push('govmomi simulator sources');
  return out;
}

/** `describe` that needs go + govmomi (and `binaries`): fails under CI when missing, else skips. */
export function describeWithVcsim(title: string, body: () => void, binaries: readonly string[] = []): void {
  const lacking = missing(binaries);
  if (lacking.length === 0) describe(title, body);
  else if (process.env['CI'] === 'true') {
    describe(title, () => {
      it('has go and the govmomi simulator', () => {
        throw new Error(`missing: ${lacking.join(', ')} (${INSTALL}${binaries.length > 0 ? ' qemu-utils' : ''})`);
      });
    });
  } else {
    console.warn(`skipping "${title}": missing ${lacking.join(', ')} (${INSTALL})`);
    describe.skip(title, body);
  }
}

/** Builds tools/vcsim/bin/vcsim-launcher when it is missing or older than main.go. */
export function buildLauncher(): string {
  const src = join(ROOT, 'tools', 'vcsim', 'main.go');
  if (!existsSync(LAUNCHER) || statSync(LAUNCHER).mtimeMs < statSync(src).mtimeMs) {
    execFileSync(join(ROOT, 'tools', 'vcsim', 'build.sh'), { stdio: 'inherit' });
  }
  return LAUNCHER;
}

export interface Vcsim {
  /** `http(s)://127.0.0.1:PORT` (no credentials, no /sdk). */
  readonly base: string;
  readonly port: number;
  /** Datastore name -> its directory. */
  readonly datastores: Readonly<Record<string, string>>;
  stop(): Promise<void>;
}

/** Starts the simulator on 127.0.0.1 (https with a self-signed certificate when `tls`) and resolves when it printed its URL. */
export async function startVcsim(o: { tls?: boolean } = {}): Promise<Vcsim> {
  const child: ChildProcess = spawn(buildLauncher(), ['-listen', '127.0.0.1:0', ...(o.tls ? ['-tls'] : [])], { stdio: ['pipe', 'pipe', 'inherit'] });
  const line = await new Promise<string>((resolve, reject) => {
    const rl = createInterface({ input: child.stdout! });
    rl.once('line', (l) => {
      rl.close();
      resolve(l);
    });
    child.once('exit', (code) => reject(new Error(`vcsim exited with ${code} before it was ready`)));
    child.once('error', reject);
  });
  const info = JSON.parse(line) as { url: string; datastores: Record<string, string> };
  const url = new URL(info.url);
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  return {
    base: `${url.protocol}//127.0.0.1:${url.port}`,
    port: Number(url.port),
    datastores: info.datastores,
    stop: async () => {
      child.stdin!.end();
      await exited;
    },
  };
}
