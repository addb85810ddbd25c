export { copyImage, planLayers, type CopyOptions, type CopyResult, type LayerPlan, type LayerAction } from './copy.js';
export { inspectImage, type ImageSummary } from './inspect.js';
