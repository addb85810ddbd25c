{
  "targets": [
    {
      "target_name": "buildfleet_native",
      "sources": ["module.c", "addon.c", "layer_extract.c", "layer_fields.c", "layer_tree.c"],
      "cflags": ["-O2", "-Wall", "-Wextra", "-fvisibility=hidden"],
      "libraries": ["-ldeflate", "-lz"]
    }
  ]
}
