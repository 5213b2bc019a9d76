/**
 * The media agent's HTTP client (`--repo https://host:port`): `RemoteAgent` for raw
 * calls, `remoteBackup`/`remoteRestore` for the client-side-hashing backup and the
 * streamed restore.
 */
export { RemoteAgent, remoteCredentials } from './client.js';
export { isRemoteRepo, remoteRepoOf } from './url.js';
export type { RemoteOptions, Reply } from './client.js';
export { listRemotePoints, remoteBackup, remoteRestore, resolveRemotePoint } from './commands.js';
export type { RemoteBackupOptions, RemoteBackupResult, RemotePoint } from './commands.js';
export { cmdRemoteBackup, cmdRemotePoints, cmdRemoteRestore, cmdRemoteStats } from './cli.js';
