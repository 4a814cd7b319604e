"""`make oci`: the .wasm as an OCI image layout in target/oci (the Wasm artifact media types
Istio's WasmPlugin and Envoy Gateway pull). Push it with a tool of your choice, e.g.
`skopeo copy oci:target/oci:0.1.0 docker://REGISTRY/llm-gateway:0.1.0` or
`oras cp --from-oci-layout target/oci:0.1.0 REGISTRY/llm-gateway:0.1.0`."""

import hashlib
import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WASM = ROOT / "target" / "wasm32-wasip1" / "release" / "llm_gateway.wasm"
OUT = ROOT / "target" / "oci"
TAG = sys.argv[1] if len(sys.argv) > 1 else "0.1.0"


def blob(data, media_type):
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    path = OUT / "blobs" / "sha256" / digest.split(":")[1]
    path.write_bytes(data)
    return {"mediaType": media_type, "digest": digest, "size": len(data)}


def main():
    shutil.rmtree(OUT, ignore_errors=True)
    (OUT / "blobs" / "sha256").mkdir(parents=True)
    (OUT / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    layer = blob(WASM.read_bytes(), "application/vnd.module.wasm.content.layer.v1+wasm")
    layer["annotations"] = {"org.opencontainers.image.title": "plugin.wasm"}
    config = blob(json.dumps({}).encode(), "application/vnd.module.wasm.config.v1+json")
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": config, "layers": [layer]}, separators=(",", ":")).encode()
    entry = blob(manifest, "application/vnd.oci.image.manifest.v1+json")
    entry["annotations"] = {"org.opencontainers.image.ref.name": TAG}
    (OUT / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [entry]}))
    print(f"OCI image layout in {OUT} (tag {TAG}, wasm layer {layer['digest']})")


if __name__ == "__main__":
    main()
