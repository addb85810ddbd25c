export { buildManifest, manifestFormatFor } from './manifest.js';
export { configBlob, replaceLayers, withCreated, withLabels, type AddedLayer } from './config.js';
export { imageTime, sourceDateEpoch } from './time.js';
