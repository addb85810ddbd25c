export { squashImage, squashedConfig, SOURCE_LABEL, type SquashOptions, type SquashReport, type SquashProgress } from './squash.js';
export { squashOptionsFrom, type SquashSettings } from './options.js';
export { mergeLayers, type IndexedEntry, type MergeResult, type MergedNode } from './merge.js';
export { planSquash, stepsAt, stepHeader, type SquashPlan, type LayerWrites, type EmitStep } from './plan.js';
