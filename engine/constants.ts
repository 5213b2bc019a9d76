/**
 * Every magic number, header size and limit of repository format v1 (engine/FORMAT.md).
 *
 * DO NOT CHANGE any value here without a new format version: they are written to disk.
 * `constants.test.ts` pins them.
 */

/** Highest repository format version this program reads and writes. */
export const FORMAT_VERSION = 2;

export const KIB = 1024;
export const MIB = 1024 * KIB;
export const GIB = 1024 * MIB;

export const MIN_CHUNK_SIZE = 64 * KIB;
export const MAX_CHUNK_SIZE = 4 * MIB;
/**
 * Chosen by measurement (bench/RESULTS.md, "chunk size"): against 1 MiB, 256 KiB stores
 * 25-52% less over a month of daily incrementals for about 5% more CPU.
 */
export const DEFAULT_CHUNK_SIZE = 256 * KIB;
export const DEFAULT_CONTAINER_TARGET_BYTES = 32 * MIB;
export const MAX_RECORDS_PER_CONTAINER = 65536;

export const DIGEST_BYTES = 32;
export const CHECK_HASH_BYTES = 8;

/** `CVCTR\0\0\1` */
export const CONTAINER_MAGIC = Uint8Array.from([0x43, 0x56, 0x43, 0x54, 0x52, 0x00, 0x00, 0x01]);
export const CONTAINER_HEADER_BYTES = 32;
/** `CVR1` */
export const RECORD_MAGIC = Uint8Array.from([0x43, 0x56, 0x52, 0x31]);
export const RECORD_HEADER_BYTES = 64;
export const FOOTER_ENTRY_BYTES = 64;
/** `CVFTR\0\0\1` */
export const TRAILER_MAGIC = Uint8Array.from([0x43, 0x56, 0x46, 0x54, 0x52, 0x00, 0x00, 0x01]);
export const TRAILER_BYTES = 32;

/** `CVMAP\0\0\1` */
export const MAP_MAGIC = Uint8Array.from([0x43, 0x56, 0x4d, 0x41, 0x50, 0x00, 0x00, 0x01]);
export const MAP_HEADER_BYTES = 64;
export const MAP_TRAILER_BYTES = 32;

export const INDEX_VALUE_BYTES = 45;
export const CONTAINER_ID_BYTES = 16;

/** Codec ids as stored in records, footers and the index. */
export const CODEC_IDS = { none: 0, lz4: 1, zstd: 2 } as const;
export type CodecName = keyof typeof CODEC_IDS;
export type CodecId = (typeof CODEC_IDS)[CodecName];

/** A chunk is stored compressed only when that saves at least 1/32 of its size. */
export const MIN_COMPRESSION_SAVING_SHIFT = 5;

export const DEFAULT_ZSTD_LEVEL = 3;
/** LZ4 acceleration of bare `lz4` (1 is LZ4's default; bench/RESULTS.md has the choice). */
export const DEFAULT_LZ4_ACCELERATION = 4;
/** LZ4's own limit (LZ4_ACCELERATION_MAX). */
export const MAX_LZ4_ACCELERATION = 65537;
export const MAX_ZSTD_LEVEL = 19;
export const MIN_ZSTD_LEVEL = 1;

/** Largest safe integer we accept from a u64 field. */
export const MAX_U64_AS_NUMBER = Number.MAX_SAFE_INTEGER;
