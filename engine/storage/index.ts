/**
 * Storage back ends: the `ObjectStore` seam the engine writes its repository through,
 * a local-directory implementation and an S3 one (Ceph RGW, AWS, others). Design and
 * mapping of the repository onto objects: docs/object-storage.md.
 */
export type {
  ListOptions,
  ObjectEntry,
  ObjectReader,
  ObjectStore,
  ObjectWriter,
  PutBody,
  PutOptions,
  StoreSupports,
  StreamBody,
} from './object-store.js';
export { checkKey } from './object-store.js';
export { LocalDirStore, type LocalDirStoreOptions } from './local-dir-store.js';
export { S3Store, type S3StoreOptions, createBucket, expectedEtag } from './s3-store.js';
export { DEFAULT_RETRY, type RetryPolicy } from './_retry.js';
