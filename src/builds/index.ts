export {
  BuildManager,
  type BuildEvent,
  type BuildManagerOptions,
  type BuildView,
  type CatalogView,
  type CreateBuildInput,
} from './manager.js';
export { DIFF_EXCLUDES, INTERMEDIATE_REGISTRY, LAYER_MEDIA_TYPE } from './engine.js';
export { buildGolden, goldenSteps, mmdebstrapArgs } from './golden.js';
