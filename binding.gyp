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
        "native/src/core/proxy_worker.cc",
        "native/src/core/pipe_pool.cc",
        "native/src/bpf/bpf_loader.cc",
        "native/src/bpf/bpf_napi.cc",
        "native/src/dns/dns_wire.cc",
        "native/src/dns/dns_table.cc",
        "native/src/dns/dns_responder.cc",
        "native/src/dns/dns_napi.cc",
        "native/src/tunnel/sealed_codec.cc",
        "native/src/tunnel/pump_engine.cc",
        "native/src/tunnel/pump_napi.cc"
      ],
      "include_dirs": [
        "<!(node -p \"require('node-addon-api').include_dir\")",
        "native/src"
      ],
      "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions"],
      "cflags_cc": ["-std=c++17", "-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"],
      "variables": {
        "edgemesh_have_libbpf": "<!(pkg-config --exists libbpf && echo 1 || echo 0)"
      },
      "conditions": [
        ["edgemesh_have_libbpf==1", {
          "defines": ["EDGEMESH_HAVE_LIBBPF"],
          "libraries": ["<!(pkg-config --libs libbpf)"]
        }]
      ]
    },
    {
      "target_name": "edgemesh_bpf",
      "type": "none",
      "actions": [
        {
          "action_name": "compile_bpf",
          "inputs": [
            "native/bpf/build.sh",
            "native/bpf/maps.h",
            "native/bpf/lb.h",
            "native/bpf/sock_connect4.bpf.c",
            "native/bpf/sockops.bpf.c",
            "native/bpf/sockopt.bpf.c",
            "native/bpf/sk_msg.bpf.c",
            "native/bpf/sk_lookup.bpf.c"
          ],
          "outputs": ["<(PRODUCT_DIR)/bpf/.stamp"],
          "action": ["sh", "native/bpf/build.sh", "<(PRODUCT_DIR)/bpf"]
        }
      ]
    }
  ]
}
