#!/usr/bin/env bash
# The base image of the compose stand-ins (issue 19): a Debian bookworm root filesystem made here with
# `debootstrap --variant=minbase` (no registry is reachable, so debian:bookworm cannot be pulled),
# imported as shopmesh-standin/debian:bookworm. Test fixture only.
#
#   base.sh          make the image unless it is present with this recipe's hash (label)
#   base.sh --force  remake the root filesystem tarball and the image
#
# The tarball is cached in ~/.cache/shopmesh/standin (debootstrap takes a few minutes; the import seconds).
# Dockerfiles FROM it install Debian packages with `docker build --network host` (a bridge network has
# no way out with dockerd --iptables=false): apt is set up as in the official debian image (deb822
# sources for bookworm, bookworm-updates and bookworm-security; apt's caches cleaned after each install).
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE=${SHOPMESH_CACHE:-$HOME/.cache/shopmesh}
DIR=$CACHE/standin
IMAGE=shopmesh-standin/debian:bookworm
SUITE=bookworm
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
TARBALL=$DIR/debian-$SUITE-minbase.tar

log() { printf '[base] %s\n' "$*" >&2; }
die() {
	printf '[base] ERROR: %s\n' "$*" >&2
	exit 1
}

force=0
[[ ${1:-} == --force ]] && force=1

# The recipe is this script: a change to it remakes the tarball and the image.
hash=$(sha256sum "$SCRIPT_DIR/base.sh" | cut -c1-16)

if ((!force)) && [[ $(docker image inspect -f '{{index .Config.Labels "org.shopmesh.standin.hash"}}' "$IMAGE" 2>/dev/null) == "$hash" ]]; then
	log "$IMAGE present (hash $hash)"
	exit 0
fi

mkdir -p "$DIR"
if ((force)) || [[ ! -s $TARBALL ]] || [[ $(cat "$TARBALL.hash" 2>/dev/null) != "$hash" ]]; then
	[[ $(id -u) == 0 ]] || die "debootstrap needs root"
	if ! command -v debootstrap >/dev/null 2>&1; then
		log "installing debootstrap"
		DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends debootstrap >/dev/null
	fi
	rootfs=$(mktemp -d "$DIR/rootfs.XXXXXX")
	# debootstrap mounts proc and sys inside the root filesystem while it runs: unmount whatever a failed
	# run left there before deleting it.
	cleanup() {
		local m
		while read -r _ m _; do
			[[ $m == "$rootfs"/* ]] && umount -l "$m" 2>/dev/null
		done < <(tac /proc/mounts)
		rm -rf "${rootfs:?}"
	}
	trap cleanup EXIT
	log "debootstrap --variant=minbase $SUITE from $MIRROR (a few minutes; log $DIR/debootstrap.log)"
	started=$SECONDS
	debootstrap --variant=minbase "$SUITE" "$rootfs" "$MIRROR" >"$DIR/debootstrap.log" 2>&1 ||
		die "debootstrap failed: see $DIR/debootstrap.log"
	# As the official image: deb822 sources, no downloaded .debs or lists kept in layers.
	rm -f "$rootfs/etc/apt/sources.list"
	cat >"$rootfs/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $MIRROR
Suites: $SUITE $SUITE-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $SECURITY_MIRROR
Suites: $SUITE-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
	cat >"$rootfs/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
	echo 'Acquire::Languages "none";' >"$rootfs/etc/apt/apt.conf.d/docker-no-languages"
	if grep -q " ${rootfs}/" /proc/mounts; then die "something is still mounted under $rootfs"; fi
	rm -rf "${rootfs:?}"/var/lib/apt/lists/* "${rootfs:?}"/var/cache/apt/archives/*.deb "${rootfs:?}"/var/log/*.log \
		"${rootfs:?}"/dev/* "${rootfs:?}"/run/*
	: >"$rootfs/etc/hostname"
	: >"$rootfs/etc/resolv.conf"
	tar --numeric-owner --xattrs -C "$rootfs" -cf "$TARBALL.tmp" .
	mv "$TARBALL.tmp" "$TARBALL"
	echo "$hash" >"$TARBALL.hash"
	log "root filesystem in $((SECONDS - started))s: $TARBALL ($(du -h "$TARBALL" | cut -f1))"
fi

log "docker import $TARBALL as $IMAGE"
docker import \
	--change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
	--change 'CMD ["bash"]' \
	--change 'LABEL org.shopmesh.standin=true' \
	--change 'LABEL org.shopmesh.standin.of=debian:bookworm' \
	--change "LABEL org.shopmesh.standin.hash=$hash" \
	"$TARBALL" "$IMAGE" >/dev/null
log "$IMAGE imported"
