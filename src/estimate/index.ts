/**
 * What-if estimates (`chunkvault estimate`): dedup and compression per chunk size,
 * chunking scheme and codec, from one read of each source, without a repository.
 */
export { estimate, planRegions } from './estimator.js';
export type { EstimateOptions, OpenedSource } from './estimator.js';
export type { CodecEstimate, EstimateReport, SchemeEstimate, SourceEstimate } from './tally.js';
export { cdcParams, CdcCutter } from './cdc.js';
export type { CdcParams, CdcUnit } from './cdc.js';
export { estimateTotal, seededRandom } from './sampling.js';
export type { Interval } from './sampling.js';
