export { copyImage, planLayers, buildManifest, ensureBlob, type CopyOptions, type CopyResult, type LayerPlan, type LayerAction } from './copy.js';
export { inspectImage, type ImageSummary } from './inspect.js';
export { compressor, decompressor, recompress } from './codecs.js';
