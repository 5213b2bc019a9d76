/**
 * The storage engine's public surface. Everything else in engine/ is internal.
 * The engine knows nothing about hypervisors: adapters hand it a `BlockSource`
 * and, for incrementals, the changed extents.
 */
export { ChunkvaultError, ERROR_CODES, isChunkvaultError, toChunkvaultError } from './errors.js';
export type { ErrorCode, ErrorDetails } from './errors.js';
export type { BlockSource, Extent, PreadAccess } from './source.js';
export { Repository } from './repository.js';
export type { OpenOptions } from './repository.js';
export type { RepoConfig, InitOptions } from './repo-config.js';
export { DEFAULT_COMPRESSION, validateChunkSize } from './repo-config.js';
export { compressionText, parseCompression } from './codecs.js';
export type { CompressionSetting } from './codecs.js';
export { newJobId, validateName } from './catalog.js';
export type { PointRecord, PointStats, VmBackupRecord } from './catalog.js';
export { backup, planSlots } from './backup.js';
export type { BackupRequest, BackupProgress } from './backup.js';
export { discardJob } from './vm-backup.js';
export { PointIngest, PointReader, INGEST_SECTOR } from './ingest.js';
export type { IngestOptions, PutResult } from './ingest.js';
export { restore } from './restore.js';
export { alignedShared } from './aligned-memory.js';
export { DirectWriter } from './direct-io.js';
export type { RestoreTarget, RestoreOptions } from './restore.js';
export { verify } from './verify.js';
export type { VerifyReport, VerifyProblem, VerifyOptions } from './verify.js';
export { repoStats } from './stats.js';
export type { RepoStats, PointSpace, VmSpace } from './stats.js';
export { rebuildIndex } from './rebuild-index.js';
export { applyRetention, formatDuration, parseDuration, parseKeepCount, validatePolicy } from './retention.js';
export type { KeptPoint, RetentionGroup, RetentionPoint, RetentionPolicy } from './retention.js';
export { forget, planForget } from './forget.js';
export type { ForgetGroup, ForgetRequest, ForgetResult } from './forget.js';
export type { RebuildReport } from './rebuild-index.js';
export { normalizeExtents, parseExtentsJson, validateExtents } from './extents.js';
export { DEFAULT_CHUNK_SIZE, FORMAT_VERSION, MAX_CHUNK_SIZE, MIN_CHUNK_SIZE } from './constants.js';
/** The CPU pool and chunk-buffer pool, for tools that scan disks without a repository (estimate). */
export { WorkerPool } from './worker-pool.js';
export type { WorkerPoolOptions } from './worker-pool.js';
export { BufferPool } from './_buffer-pool.js';
export type { CdcCandidates, CdcMaskBits, ScanGroupResult } from './_worker.js';
export { DIGEST_BYTES, INDEX_VALUE_BYTES, MAP_HEADER_BYTES, MAP_TRAILER_BYTES } from './constants.js';
export { gc } from './gc/index.js';
export type { GcOptions, GcProgress, GcReport } from './gc/index.js';
