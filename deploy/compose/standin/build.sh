#!/usr/bin/env bash
# Builds the compose stand-in images (issue 19): the base image (base.sh), then every folder of
# deploy/compose/standin that has a Dockerfile, in dependency order, each tagged exactly as
# deploy/compose/.env or deploy/docker/Dockerfile pins the official image it stands in for. Test fixture
# only: users pull the public images.
#
#   build.sh [--force] [name...]   build all folders (or the named ones and what they need)
#   build.sh --list                print "folder image" per stand-in, in build order
#
# A folder <name>/ holds:
#   Dockerfile   built with the legacy builder and `--network host` (apt inside works; a bridge network
#                has no way out with dockerd --iptables=false). FROM shopmesh-standin/debian:bookworm,
#                scratch, or another stand-in's tag (built first).
#   prepare.sh   optional: `bash prepare.sh CONTEXT` puts the ingredients cached under ~/.cache/shopmesh
#                (Go-built binaries, jars, toolchains; building or fetching them there first when
#                missing) into CONTEXT, a scratch copy of the folder that is the build context.
# The image: golang -> golang:$GO_VERSION-bookworm (.env); distroless -> the runtime FROM of
# deploy/docker/Dockerfile; dockerfile -> its `# syntax=` frontend; any other folder -> ${NAME}_IMAGE of
# deploy/compose/.env (postgres -> POSTGRES_IMAGE...). build.sh adds the labels org.shopmesh.standin=true,
# org.shopmesh.standin.of=<image> and org.shopmesh.standin.hash=<hash of the build context and of the
# images it is FROM>: an image whose hash label matches is skipped, so a warm run takes seconds.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$SCRIPT_DIR/../../.." && pwd)
CACHE=${SHOPMESH_CACHE:-$HOME/.cache/shopmesh}
ENV_FILE=$REPO/deploy/compose/.env
APP_DOCKERFILE=$REPO/deploy/docker/Dockerfile
BASE_IMAGE=shopmesh-standin/debian:bookworm
LOCK=${DOCKER_BUILD_LOCK:-/tmp/docker-build.lock}

log() { printf '[standin] %s\n' "$*" >&2; }
die() {
	printf '[standin] ERROR: %s\n' "$*" >&2
	exit 1
}

env_value() { sed -n "s/^$1=//p" "$ENV_FILE" | tail -n1; }

# image_of FOLDER: the tag the stand-in in FOLDER gets.
image_of() {
	local name=$1 v
	case "$name" in
	golang)
		v=$(env_value GO_VERSION)
		[[ -n $v ]] || die "no GO_VERSION in $ENV_FILE"
		echo "golang:$v-bookworm"
		;;
	distroless)
		v=$(awk 'toupper($1) == "FROM" && $2 ~ /distroless/ {print $2}' "$APP_DOCKERFILE" | tail -n1)
		[[ -n $v ]] || die "no distroless FROM in $APP_DOCKERFILE"
		echo "$v"
		;;
	dockerfile)
		v=$(sed -n '1s/^#[[:space:]]*syntax=//p' "$APP_DOCKERFILE")
		[[ -n $v ]] || die "no '# syntax=' line in $APP_DOCKERFILE"
		echo "$v"
		;;
	*)
		v=$(env_value "$(tr '[:lower:]-' '[:upper:]_' <<<"$name")_IMAGE")
		[[ -n $v ]] || die "no image for stand-in folder $name: add ${name^^}_IMAGE to $ENV_FILE or a case to build.sh"
		echo "$v"
		;;
	esac
}

# from_images FOLDER: the images its Dockerfile is FROM (stage names and scratch left out).
from_images() {
	awk 'toupper($1) == "FROM" {
		img = ""; for (i = 2; i <= NF; i++) { if ($i ~ /^--/) continue; img = $i; break }
		if (tolower($(NF-1)) == "as") stages[tolower($NF)] = 1
		if (img != "" && img != "scratch" && !(tolower(img) in stages)) print img
	}' "$SCRIPT_DIR/$1/Dockerfile"
}

declare -A TAG=() FOLDER_OF=() STATE=()
ORDER=()
FOLDERS=()
for d in "$SCRIPT_DIR"/*/; do
	name=$(basename "$d")
	[[ -f $d/Dockerfile ]] || continue
	FOLDERS+=("$name")
	TAG[$name]=$(image_of "$name")
	FOLDER_OF[${TAG[$name]}]=$name
done

# visit FOLDER: depth-first, dependencies (FROM another stand-in) first.
visit() {
	local name=$1 img
	case "${STATE[$name]:-}" in
	finished) return ;;
	active) die "stand-ins FROM each other in a cycle at $name" ;;
	esac
	STATE[$name]=active
	while read -r img; do
		[[ -n ${FOLDER_OF[$img]:-} ]] && visit "${FOLDER_OF[$img]}"
	done < <(from_images "$name")
	STATE[$name]=finished
	ORDER+=("$name")
}

force=0
list=0
wanted=()
for a in "$@"; do
	case "$a" in
	--force) force=1 ;;
	--list) list=1 ;;
	-*) die "unknown option $a" ;;
	*)
		[[ -n ${TAG[$a]:-} ]] || die "no stand-in folder $a (with a Dockerfile) in $SCRIPT_DIR"
		wanted+=("$a")
		;;
	esac
done
((${#wanted[@]})) || wanted=("${FOLDERS[@]}")
for name in "${wanted[@]}"; do visit "$name"; done

if ((list)); then
	for name in "${ORDER[@]}"; do echo "$name ${TAG[$name]}"; done
	exit 0
fi

docker info >/dev/null 2>&1 || die "no Docker engine answers: run deploy/compose/standin/engine.sh up"

total_started=$SECONDS
summary=()
started=$SECONDS
if ((force)); then bash "$SCRIPT_DIR/base.sh" --force; else bash "$SCRIPT_DIR/base.sh"; fi
summary+=("$(printf '%-12s %-45s %4ss' base "$BASE_IMAGE" $((SECONDS - started)))")

WORK=$(mktemp -d "${TMPDIR:-/tmp}/standin-build.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

for name in "${ORDER[@]}"; do
	tag=${TAG[$name]}
	started=$SECONDS
	ctx=$WORK/$name
	cp -R "$SCRIPT_DIR/$name" "$ctx"
	rm -f "$ctx/prepare.sh"
	if [[ -f $SCRIPT_DIR/$name/prepare.sh ]]; then
		SHOPMESH_CACHE=$CACHE bash "$SCRIPT_DIR/$name/prepare.sh" "$ctx" ||
			die "$name/prepare.sh failed"
	fi
	# The hash: every file of the context (names, modes, contents) and the ids of the images it is FROM.
	hash=$(
		cd "$ctx"
		find . -type f -printf '%p %m\n' | LC_ALL=C sort
		find . -type f -print0 | LC_ALL=C sort -z | xargs -0r sha256sum
		while read -r img; do docker image inspect -f '{{.Id}}' "$img" 2>/dev/null || echo "$img missing"; done < <(from_images "$name")
	)
	hash=$(sha256sum <<<"$hash" | cut -c1-16)
	have=$(docker image inspect -f '{{index .Config.Labels "org.shopmesh.standin.hash"}}' "$tag" 2>/dev/null || true)
	if ((!force)) && [[ $have == "$hash" ]]; then
		log "$tag present (hash $hash)"
		rm -rf "$ctx"
		summary+=("$(printf '%-12s %-45s %4ss (present)' "$name" "$tag" $((SECONDS - started)))")
		continue
	fi
	log "building $tag from $name/ (log $CACHE/standin/$name.build.log)"
	mkdir -p "$CACHE/standin"
	if ! flock "$LOCK" env DOCKER_BUILDKIT=0 docker build --network host \
		--label org.shopmesh.standin=true --label "org.shopmesh.standin.of=$tag" \
		--label "org.shopmesh.standin.hash=$hash" -t "$tag" "$ctx" >"$CACHE/standin/$name.build.log" 2>&1; then
		tail -n 30 "$CACHE/standin/$name.build.log" >&2
		die "docker build of $tag failed: see $CACHE/standin/$name.build.log"
	fi
	rm -rf "$ctx"
	log "$tag built in $((SECONDS - started))s"
	summary+=("$(printf '%-12s %-45s %4ss' "$name" "$tag" $((SECONDS - started)))")
done

# The images a rebuild untagged (a container still using one keeps it).
docker image prune -f --filter label=org.shopmesh.standin=true >/dev/null || true
printf '%s\n' "${summary[@]}" >&2
log "all stand-ins ready in $((SECONDS - total_started))s"
