#!/usr/bin/env bash
# Builds the dermaga image without a Docker daemon: image/rootfs.sh's file system packed by
# umoci (Debian package umoci) into an OCI image layout, one layer, with the Dockerfile's
# configuration (user 65532:65532, entrypoint /dermaga, port 10254). Everything is dated
# SOURCE_DATE_EPOCH (default 0), so the same binary gives the same digest.
#
#   image/build.sh [BINARY [LAYOUT]]    default target/release/dermaga, target/image/oci
#
# Prints the manifest's digest (sha256:...) on its last line. Push the layout with skopeo:
#   skopeo copy oci:target/image/oci:dermaga docker://<registry>/dermaga:<tag>
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
binary=${1:-target/release/dermaga}
layout=${2:-target/image/oci}
tag=dermaga
command -v umoci >/dev/null || { echo "image: umoci is missing (apt-get install umoci)" >&2; exit 1; }
epoch=${SOURCE_DATE_EPOCH:-0}
created=$(date -u -d "@$epoch" +%Y-%m-%dT%H:%M:%SZ)
[[ -f $binary && -x $binary ]] || { echo "image: $binary is not an executable file (cargo build --release --locked --bin dermaga)" >&2; exit 1; }
version=$("$binary" --version 2>/dev/null | awk '{print $2}' || true)
architecture=$(dpkg --print-architecture)

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
SOURCE_DATE_EPOCH=$epoch bash "$here/rootfs.sh" "$binary" "$work/rootfs"

rm -rf "$layout"
mkdir -p "$(dirname "$layout")"
umoci init --layout "$layout"
umoci new --image "$layout:$tag"
# Every file is root's in the image, whoever builds it.
owner=()
if [[ $(id -u) != 0 ]]; then
  owner=(--rootless --uid-map "0:$(id -u):1" --gid-map "0:$(id -g):1")
fi
umoci insert "${owner[@]}" --image "$layout:$tag" --history.created "$created" \
  --history.created_by "image/rootfs.sh" --history.comment "dermaga ${version:-}" \
  "$work/rootfs" /
umoci config --image "$layout:$tag" --created "$created" --author "dermaga" \
  --history.created "$created" --history.created_by "image/build.sh" \
  --config.user 65532:65532 --config.entrypoint /dermaga --config.exposedports 10254/tcp \
  --config.label "org.opencontainers.image.title=dermaga" \
  --config.label "org.opencontainers.image.version=${version:-unknown}" \
  --os linux --architecture "$architecture"
# umoci keeps the superseded manifests and configs as blobs: drop them.
umoci gc --layout "$layout"
digest=$(grep -o '"digest":"sha256:[0-9a-f]*"' "$layout/index.json" | head -1 | cut -d\" -f4)
echo "image: $layout:$tag"
echo "$digest"
