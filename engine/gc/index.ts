/** Garbage collection: the public surface of engine/gc. */
export { gc } from './gc.js';
export type { GcOptions, GcProgress, GcReport } from './gc.js';
