/** Raw image files and block devices (the SAN / hot-add transport). */
export { FileSource } from './file-source.js';
