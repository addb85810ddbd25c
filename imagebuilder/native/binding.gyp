{
  "targets": [
    {
      "target_name": "buildfleet_native",
      "sources": ["addon.c"],
      "cflags": ["-O2", "-Wall", "-Wextra"],
      "libraries": ["-ldeflate"]
    }
  ]
}
