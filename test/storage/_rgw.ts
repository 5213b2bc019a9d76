/**
 * The real Ceph RGW for integration tests and benchmarks, through tools/ceph-rgw.sh.
 *
 * `CHUNKVAULT_CEPH_DIR=DIR` reuses a cluster started by hand (`tools/ceph-rgw.sh start
 * DIR`), which saves its 10 s build on every run; it is then left running. Otherwise a
 * fresh cluster is built in a temp directory and stopped (by PID) at the end.
 */
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const execFileAsync = promisify(execFile);
const SCRIPT = fileURLToPath(new URL('../../tools/ceph-rgw.sh', import.meta.url));

export const CEPH_BINARIES = ['ceph-mon', 'ceph-mgr', 'ceph-osd', 'radosgw', 'radosgw-admin', 'rados', 'uuidgen'] as const;
export const CEPH_INSTALL = 'apt-get install -y --no-install-recommends ceph-mon ceph-mgr ceph-osd radosgw uuid-runtime';

export interface RgwEnv {
  readonly endpoint: string;
  readonly accessKeyId: string;
  readonly secretAccessKey: string;
  readonly region: string;
  readonly cephConf: string;
}

export interface RgwCluster {
  readonly dir: string;
  readonly env: RgwEnv;
  /** Stops radosgw only (by PID), as if the gateway crashed or was restarted. */
  stopGateway(): Promise<void>;
  /** Starts whatever is stopped and waits until S3 answers. */
  start(): Promise<void>;
  /** Stops everything unless the cluster was reused. */
  stop(): Promise<void>;
  /** Runs a Ceph command-line tool against this cluster. */
  tool(command: string, args: readonly string[]): Promise<string>;
}

async function script(command: string, dir: string): Promise<void> {
  await execFileAsync(SCRIPT, [command, dir], { env: { ...process.env, CEPH_RGW_QUIET: '1' }, timeout: 180_000 });
}

export async function readEnvFile(dir: string): Promise<RgwEnv> {
  const vars = new Map<string, string>();
  for (const line of (await readFile(join(dir, 'env'), 'utf8')).split('\n')) {
    const at = line.indexOf('=');
    if (at > 0) vars.set(line.slice(0, at), line.slice(at + 1));
  }
  const get = (name: string): string => {
    const value = vars.get(name);
    if (value === undefined) throw new Error(`${dir}/env lacks ${name}`);
    return value;
  };
  return {
    endpoint: get('AWS_ENDPOINT_URL'),
    accessKeyId: get('AWS_ACCESS_KEY_ID'),
    secretAccessKey: get('AWS_SECRET_ACCESS_KEY'),
    region: get('AWS_REGION'),
    cephConf: get('CEPH_CONF'),
  };
}

export async function startRgw(): Promise<RgwCluster> {
  const reused = process.env['CHUNKVAULT_CEPH_DIR'];
  const dir = reused ?? (await mkdtemp(join(tmpdir(), 'cv-ceph-')));
  await script('start', dir);
  const env = await readEnvFile(dir);
  return {
    dir,
    env,
    stopGateway: () => script('stop-rgw', dir),
    start: () => script('start', dir),
    stop: async () => {
      if (reused) return;
      await script('stop', dir);
      await rm(dir, { recursive: true, force: true });
    },
    tool: async (command, args) => {
      const { stdout } = await execFileAsync(command, [...args], {
        env: { ...process.env, CEPH_CONF: env.cephConf },
        encoding: 'buffer',
        maxBuffer: 256 * 1024 * 1024,
        timeout: 60_000,
      });
      return stdout.toString('latin1');
    },
  };
}
