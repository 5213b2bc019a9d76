/**
 * The two back ends the object-storage tier runs on: a local directory and an s3://
 * repository on a real Ceph RGW (test/storage/_rgw.ts). The CLI children reach RGW
 * through the environment, as a user's shell would: AWS_ACCESS_KEY_ID,
 * AWS_SECRET_ACCESS_KEY, AWS_REGION, CHUNKVAULT_S3_ENDPOINT, and XDG_CACHE_HOME for the
 * default cache ($XDG_CACHE_HOME/chunkvault/<repo id>).
 */
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { createBucket, S3Store } from '../../engine/storage/index.js';
import { startRgw, type RgwCluster } from '../storage/_rgw.js';

export interface Backend {
  readonly name: string;
  /** A new, empty repository location named by `label`. */
  repo(label: string): string;
  /** Flags that make a command run as on another machine (its own, initially empty cache). */
  machine(label: string): string[];
}

export function localBackend(dir: () => string): Backend {
  return { name: 'local directory', repo: (label) => join(dir(), `${label}-repo`), machine: () => [] };
}

const SAVED = ['AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY', 'AWS_REGION', 'CHUNKVAULT_S3_ENDPOINT', 'CHUNKVAULT_CACHE', 'XDG_CACHE_HOME', 'AWS_ENDPOINT_URL'] as const;

export interface RgwBackend extends Backend {
  readonly cluster: RgwCluster;
  readonly bucket: string;
  /** A store on the test bucket (close it). */
  store(): S3Store;
  stop(): Promise<void>;
}

/** Starts RGW, creates a bucket and points the environment at it (default caches under `dir`). */
export async function rgwBackend(dir: string): Promise<RgwBackend> {
  const cluster = await startRgw();
  const bucket = `cv-objstore-${randomBytes(4).toString('hex')}`;
  const saved = new Map(SAVED.map((k) => [k, process.env[k]]));
  const e = cluster.env;
  Object.assign(process.env, {
    AWS_ACCESS_KEY_ID: e.accessKeyId,
    AWS_SECRET_ACCESS_KEY: e.secretAccessKey,
    AWS_REGION: e.region,
    CHUNKVAULT_S3_ENDPOINT: e.endpoint,
    XDG_CACHE_HOME: join(dir, 'xdg-main'),
  });
  delete process.env['AWS_ENDPOINT_URL'];
  delete process.env['CHUNKVAULT_CACHE'];
  const store = (): S3Store =>
    new S3Store({ bucket, endpoint: e.endpoint, region: e.region, credentials: { accessKeyId: e.accessKeyId, secretAccessKey: e.secretAccessKey } });
  await createBucket({ bucket, endpoint: e.endpoint, region: e.region, credentials: { accessKeyId: e.accessKeyId, secretAccessKey: e.secretAccessKey } });
  return {
    name: 'Ceph RGW (s3://)',
    cluster,
    bucket,
    store,
    repo: (label) => `s3://${bucket}/${label}`,
    machine: (label) => ['--cache', join(dir, `cache-${label}`)],
    stop: async () => {
      for (const [k, v] of saved) {
        if (v === undefined) delete process.env[k];
        else process.env[k] = v;
      }
      await cluster.stop();
    },
  };
}
