/* The addon's entry: each part registers its functions (addon.c, layer_extract.c). */
#include "native.h"

static napi_value init(napi_env env, napi_value exports) {
  register_addon(env, exports);
  register_layer_extract(env, exports);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
