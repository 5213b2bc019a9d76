/**
 * `chunkvault token create|list|revoke`: the media agent's API tokens, managed
 * locally on the repository (docs/media-agent.md "Tokens").
 */
import type { Command } from 'commander';
import { Repository } from '../../engine/index.js';
import type { TokenStore } from '../server/index.js';
import { repoDir } from './commands.js';
import { printJson, table } from './output.js';

/** The server's token store, loaded only by these commands. */
const server = () => import('../server/index.js');

interface TokenCliOptions {
  repo?: string;
  json?: boolean;
}

async function store(o: TokenCliOptions): Promise<TokenStore> {
  const repo = await Repository.open(repoDir(o));
  return new (await server()).TokenStore(repo.dir);
}

export async function cmdTokenCreate(o: TokenCliOptions & { tenant: string; scopes: string; name?: string }): Promise<number> {
  const { record, token } = await (await store(o)).create({ tenant: o.tenant, scopes: (await server()).parseScopes(o.scopes), ...(o.name !== undefined ? { name: o.name } : {}) });
  if (o.json) printJson({ id: record.id, tenant: record.tenant, scopes: record.scopes, name: record.name, created: record.created, token });
  else process.stdout.write(`token ${record.id} for tenant ${record.tenant} (${record.scopes.join(',')}); shown once, keep it secret:\n${token}\n`);
  return 0;
}

export async function cmdTokenList(o: TokenCliOptions): Promise<number> {
  const records = await (await store(o)).list();
  const shown = records.map(({ hash: _hash, ...r }) => r);
  if (o.json) printJson(shown);
  else process.stdout.write(table(['ID', 'TENANT', 'SCOPES', 'NAME', 'CREATED', 'REVOKED'], shown.map((r) => [r.id, r.tenant, r.scopes.join(','), r.name, r.created.slice(0, 19), r.revoked?.slice(0, 19) ?? '-'])) + '\n');
  return 0;
}

export async function cmdTokenRevoke(id: string, o: TokenCliOptions): Promise<number> {
  const { hash: _hash, ...r } = await (await store(o)).revoke(id);
  if (o.json) printJson(r);
  else process.stdout.write(`token ${r.id} revoked\n`);
  return 0;
}

/** Adds `token create|list|revoke` to the program. */
export function registerTokenCommands(program: Command, action: <A extends unknown[]>(fn: (...args: A) => Promise<number>) => (...args: A) => Promise<void>): void {
  const token = program.command('token').description('API tokens of the media agent (chunkvault serve)');
  token
    .command('create')
    .description('create a token (the secret is printed once)')
    .option('--repo <repo>', 'repository directory (default: $CHUNKVAULT_REPO)')
    .requiredOption('--tenant <tenant>', 'the namespace the token acts in (a-z 0-9 _ -)')
    .requiredOption('--scopes <list>', 'backup (write only), restore (read), admin; comma-separated')
    .option('--name <name>', 'a label')
    .option('--json', 'print machine-readable JSON on stdout')
    .action(action(cmdTokenCreate));
  token.command('list').description('list tokens (never their secrets)').option('--repo <repo>', 'repository directory').option('--json', 'JSON output').action(action(cmdTokenList));
  token.command('revoke <id>').description('revoke a token').option('--repo <repo>', 'repository directory').option('--json', 'JSON output').action(action(cmdTokenRevoke));
}
