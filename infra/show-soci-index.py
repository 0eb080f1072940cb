#!/usr/bin/env python3
"""Prints the SOCI indexes a registry holds for an image: what index-on-push (or `soci-indexer create`)
pushed. Reads the OCI distribution API only (basic auth), standard library only.

    infra/show-soci-index.py --registry http://127.0.0.1:5000 --repository demo/app --tag v1 \
        [--tag-suffix -soci] [--user U --password P]

v2: the `<tag><suffix>` image index, its image manifests and the SOCI index each one binds
(`com.amazon.soci.index-digest`), and every zTOC of every SOCI index (with the layer it belongs to).
v1: the SOCI index manifests that refer to each platform manifest, through the `sha256-<hex>` tag
schema (the fallback that registries without the referrers API get). Exit status 1 when none is found.
"""

import argparse
import base64
import json
import sys
import urllib.error
import urllib.request

MANIFEST_TYPES = ",".join(
    [
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    ]
)
SOCI_INDEX_TYPES = ("application/vnd.amazon.soci.index.v2+json", "application/vnd.amazon.soci.index.v1+json")
INDEX_DIGEST = "com.amazon.soci.index-digest"
LAYER_DIGEST = "com.amazon.soci.image-layer-digest"
LAYER_MEDIA_TYPE = "com.amazon.soci.image-layer-mediaType"
SPAN_SIZE = "com.amazon.soci.span-size"
BUILD_TOOL = "com.amazon.soci.build-tool-identifier"


class Registry:
    def __init__(self, base, repository, user, password):
        self.base = base.rstrip("/")
        self.repository = repository
        self.auth = None
        if user is not None:
            self.auth = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    def get(self, path, accept=MANIFEST_TYPES):
        request = urllib.request.Request(f"{self.base}/v2/{self.repository}/{path}", headers={"Accept": accept})
        if self.auth:
            request.add_header("Authorization", self.auth)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.read(), response.headers.get("Docker-Content-Digest")
        except urllib.error.HTTPError as error:
            if error.code == 404:
                return None, None
            raise

    def manifest(self, reference):
        body, digest = self.get(f"manifests/{reference}")
        return (json.loads(body), digest) if body is not None else (None, None)


def short(digest):
    return digest if len(digest) < 30 else digest[:19] + "…" + digest[-6:]


def show_soci_index(registry, digest, indent):
    index, _ = registry.manifest(digest)
    if index is None:
        print(f"{indent}SOCI index {digest}: NOT FOUND")
        return []
    kind = index.get("artifactType") or index.get("config", {}).get("mediaType")
    print(f"{indent}SOCI index {digest}  ({kind})")
    for layer in index.get("layers", []):
        notes = layer.get("annotations", {})
        print(
            f"{indent}  zTOC {layer['digest']}  {layer['size']:>8} B  for layer {short(notes.get(LAYER_DIGEST, '?'))}"
            f"  span {notes.get(SPAN_SIZE, '?')}"
        )
    tool = index.get("annotations", {}).get(BUILD_TOOL)
    if tool:
        print(f"{indent}  build tool: {tool}")
    return [layer["digest"] for layer in index.get("layers", [])]


def platform_of(entry):
    p = entry.get("platform") or {}
    return "/".join(x for x in (p.get("os"), p.get("architecture"), p.get("variant")) if x) or "-"


def show_v2(registry, tag, suffix):
    soci_tag = f"{tag}{suffix}"
    index, digest = registry.manifest(soci_tag)
    if index is None:
        return False
    print(f"{registry.repository}:{soci_tag}  {digest}  ({index.get('mediaType')})")
    ztocs = []
    for entry in index.get("manifests", []):
        notes = entry.get("annotations", {})
        if entry.get("artifactType") in SOCI_INDEX_TYPES:
            print(f"  SOCI index entry {entry['digest']}")
            continue
        print(f"  image manifest {entry['digest']}  {platform_of(entry)}")
        if INDEX_DIGEST in notes:
            ztocs += show_soci_index(registry, notes[INDEX_DIGEST], "    ")
        else:
            print("    (no SOCI index: not indexed)")
    print(f"  {len(ztocs)} zTOCs ({len(set(ztocs))} distinct blobs)")
    return True


def show_v1(registry, tag):
    root, root_digest = registry.manifest(tag)
    if root is None:
        print(f"{registry.repository}:{tag} not found", file=sys.stderr)
        return False
    entries = root.get("manifests") or [{"digest": root_digest, "platform": {}}]
    found = False
    for entry in entries:
        digest = entry["digest"]
        fallback = "sha256-" + digest.split(":", 1)[1]
        referrers, _ = registry.manifest(fallback)
        if referrers is None:
            continue
        for ref in referrers.get("manifests", []):
            if ref.get("artifactType") in SOCI_INDEX_TYPES:
                if not found:
                    print(f"{registry.repository}:{tag}  v1 SOCI indexes (referrers tag schema)")
                found = True
                print(f"  image manifest {digest}  {platform_of(entry)}")
                show_soci_index(registry, ref["digest"], "    ")
    return found


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--registry", required=True, help="base URL, e.g. http://127.0.0.1:5000")
    parser.add_argument("--repository", required=True)
    parser.add_argument("--tag", required=True, help="the tag that was pushed (not the -soci one)")
    parser.add_argument("--tag-suffix", default="-soci")
    parser.add_argument("--user")
    parser.add_argument("--password")
    args = parser.parse_args()
    registry = Registry(args.registry, args.repository, args.user, args.password)
    tags, _ = registry.get("tags/list", accept="application/json")
    if tags is not None:
        print(f"tags of {args.repository}: {', '.join(sorted(json.loads(tags).get('tags') or []))}")
    if show_v2(registry, args.tag, args.tag_suffix) or show_v1(registry, args.tag):
        return 0
    print(f"no SOCI index found for {args.repository}:{args.tag}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
