/**
 * API tokens of the media agent (docs/media-agent.md "Tokens").
 *
 * A token is `cvt_<id>_<secret>`: `id` is 8 public hex chars naming the record, the
 * secret is 32 random bytes (base64url), shown once at creation. The store keeps only
 * SHA-256 of the secret (a 256-bit random secret needs no slow hash), with the tenant,
 * the scopes and the revocation time, in `<repo>/agent/tokens.json` written tmp +
 * fsync + rename. The server re-reads the file when it changes, so a revocation
 * takes effect on the next request.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { ChunkvaultError } from '../../engine/index.js';

export const SCOPES = ['backup', 'restore', 'admin'] as const;
export type Scope = (typeof SCOPES)[number];

/** Tenant names: lower-case letters, digits, `_` and `-` (never `:`, the namespace separator). */
export const TENANT_RE = /^[a-z0-9][a-z0-9_-]{0,39}$/;

export interface TokenRecord {
  readonly id: string;
  readonly name: string;
  readonly tenant: string;
  readonly scopes: readonly Scope[];
  /** Hex SHA-256 of the secret. */
  readonly hash: string;
  readonly created: string;
  readonly revoked: string | null;
}

/** What a request authenticated as. */
export interface Principal {
  readonly tokenId: string;
  readonly tenant: string;
  readonly scopes: ReadonlySet<Scope>;
}

interface TokenFile {
  readonly version: 1;
  readonly tokens: TokenRecord[];
}

const TOKEN_RE = /^cvt_([0-9a-f]{8})_([A-Za-z0-9_-]{43})$/;

function hashSecret(secret: string): Buffer {
  return createHash('sha256').update(secret, 'utf8').digest();
}

export function agentDir(repoDir: string): string {
  return join(repoDir, 'agent');
}

/** Parses `backup,restore` into scopes (INVALID_ARGUMENT on unknown ones). */
export function parseScopes(text: string): Scope[] {
  const out = [...new Set(text.split(',').map((s) => s.trim()).filter(Boolean))];
  if (out.length === 0) throw new ChunkvaultError('INVALID_ARGUMENT', 'give at least one scope: backup, restore, admin');
  for (const s of out) if (!(SCOPES as readonly string[]).includes(s)) throw new ChunkvaultError('INVALID_ARGUMENT', `unknown scope "${s}": use backup, restore, admin`);
  return out as Scope[];
}

export class TokenStore {
  private readonly path: string;
  private cache: { key: string; records: TokenRecord[] } | undefined;

  constructor(private readonly repoDir: string) {
    this.path = join(agentDir(repoDir), 'tokens.json');
  }

  async list(): Promise<TokenRecord[]> {
    return (await this.load()).slice();
  }

  /**
   * Runs a read-modify-write of the file under `agent/tokens.lock` (O_EXCL), so two
   * `token` commands at once never lose an update. A lock older than 10 s is stale.
   */
  private async locked<T>(fn: () => Promise<T>): Promise<T> {
    const lock = join(agentDir(this.repoDir), 'tokens.lock');
    await fsp.mkdir(agentDir(this.repoDir), { recursive: true, mode: 0o700 });
    for (let i = 0; ; i++) {
      try {
        await (await fsp.open(lock, 'wx', 0o600)).close();
        break;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
        const st = await fsp.stat(lock).catch(() => undefined);
        if (st && Date.now() - st.mtimeMs > 10_000) await fsp.rm(lock, { force: true });
        else if (i >= 200) throw new ChunkvaultError('REPO_LOCKED', 'another token command holds agent/tokens.lock');
        else await new Promise((r) => setTimeout(r, 25));
      }
    }
    try {
      this.cache = undefined;
      return await fn();
    } finally {
      await fsp.rm(lock, { force: true });
    }
  }

  /** Creates a token; returns the record and the token string (shown once). */
  async create(o: { tenant: string; scopes: readonly Scope[]; name?: string }): Promise<{ record: TokenRecord; token: string }> {
    return this.locked(() => this.createLocked(o));
  }

  private async createLocked(o: { tenant: string; scopes: readonly Scope[]; name?: string }): Promise<{ record: TokenRecord; token: string }> {
    if (!TENANT_RE.test(o.tenant)) throw new ChunkvaultError('INVALID_ARGUMENT', `invalid tenant "${o.tenant}": use 1-40 of a-z 0-9 _ - (starting with a letter or digit)`);
    const name = o.name ?? '';
    if (name.length > 100 || /[\u0000-\u001f]/.test(name)) throw new ChunkvaultError('INVALID_ARGUMENT', 'a token name has at most 100 printable characters');
    const records = await this.load();
    let id: string;
    do id = randomBytes(4).toString('hex');
    while (records.some((r) => r.id === id));
    const secret = randomBytes(32).toString('base64url');
    const record: TokenRecord = { id, name, tenant: o.tenant, scopes: [...o.scopes], hash: hashSecret(secret).toString('hex'), created: new Date().toISOString(), revoked: null };
    await this.save([...records, record]);
    return { record, token: `cvt_${id}_${secret}` };
  }

  /** Revokes a token by id (INVALID_ARGUMENT when unknown). */
  async revoke(id: string): Promise<TokenRecord> {
    return this.locked(() => this.revokeLocked(id));
  }

  private async revokeLocked(id: string): Promise<TokenRecord> {
    const records = (await this.load()).slice();
    const i = records.findIndex((r) => r.id === id);
    if (i < 0) throw new ChunkvaultError('INVALID_ARGUMENT', `no token ${id}`, { details: { token: id } });
    const record = { ...records[i]!, revoked: records[i]!.revoked ?? new Date().toISOString() };
    records[i] = record;
    await this.save(records);
    return record;
  }

  /**
   * The principal of a bearer token, or AUTH_FAILED (the same answer for an unknown,
   * malformed, wrong or revoked token). The hash comparison is constant-time.
   */
  async authenticate(token: string): Promise<Principal> {
    const m = TOKEN_RE.exec(token);
    const records = await this.load();
    const record = m ? records.find((r) => r.id === m[1]) : undefined;
    const given = hashSecret(m?.[2] ?? token);
    const stored = record ? Buffer.from(record.hash, 'hex') : Buffer.alloc(32);
    const equal = stored.length === 32 && timingSafeEqual(given, stored);
    if (!record || !equal || record.revoked) throw new ChunkvaultError('AUTH_FAILED', 'the API token is not valid');
    return { tokenId: record.id, tenant: record.tenant, scopes: new Set(record.scopes) };
  }

  /** Reads the file again only when it changed (size, mtime or inode). */
  private async load(): Promise<TokenRecord[]> {
    const st = await fsp.stat(this.path).catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return undefined;
      throw err;
    });
    if (!st) return [];
    const key = `${st.ino}:${st.size}:${st.mtimeMs}`;
    if (this.cache?.key === key) return this.cache.records;
    let parsed: TokenFile;
    try {
      parsed = JSON.parse(await fsp.readFile(this.path, 'utf8')) as TokenFile;
    } catch (err) {
      throw new ChunkvaultError('REPO_CONFIG_INVALID', `${this.path} is not valid JSON`, { cause: err });
    }
    if (parsed.version !== 1 || !Array.isArray(parsed.tokens)) throw new ChunkvaultError('REPO_CONFIG_INVALID', `${this.path}: unsupported token file`);
    this.cache = { key, records: parsed.tokens };
    return parsed.tokens;
  }

  private async save(records: TokenRecord[]): Promise<void> {
    const dir = agentDir(this.repoDir);
    await fsp.mkdir(dir, { recursive: true, mode: 0o700 });
    const tmp = join(dir, `tokens.json.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
    const file: TokenFile = { version: 1, tokens: records };
    const fh = await fsp.open(tmp, 'w', 0o600);
    try {
      await fh.writeFile(JSON.stringify(file, null, 2) + '\n');
      await fh.datasync();
    } finally {
      await fh.close();
    }
    await fsp.rename(tmp, this.path);
    const d = await fsp.open(dir, 'r');
    await d.sync().finally(() => d.close());
    this.cache = undefined;
  }
}
