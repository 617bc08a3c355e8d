{
  "targets": [
    {
      "target_name": "edgemesh_native",
      "sources": [
        "native/src/addon.cc",
        "native/src/core/splice_copy.cc",
        "native/src/core/original_dst.cc",
        "native/src/core/murmur3.cc",
        "native/src/core/routing_table.cc",
        "native/src/core/proxy_plane.cc",
        "native/src/core/proxy_worker.cc"
      ],
      "include_dirs": [
        "<!(node -p \"require('node-addon-api').include_dir\")",
        "native/src"
      ],
      "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions"],
      "cflags_cc": ["-std=c++17", "-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"]
    }
  ]
}
