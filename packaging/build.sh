#!/usr/bin/env bash
# Builds connlogd's packages from a checkout, in one command:
#
#   packaging/build.sh
#
# writes, under dist/ (or $DIST):
#   connlogd                          the static binary (CGO off), for the image
#   connlogd_<version>_amd64.deb      Debian and derivatives
#   connlogd-<version>.x86_64.rpm     Fedora, RHEL and derivatives
#   VERSION, image-tag                the version, and the image's tag
#
# The version comes from git: a tag vX.Y.Z on HEAD gives X.Y.Z; any other
# commit is a commit build and says so: X.Y.Z+gitN.HASH (N commits after
# the tag vX.Y.Z), or 0.0.0+gitN.HASH before the first tag, with .dirty
# when tracked files have uncommitted changes. $CONNLOGD_VERSION
# overrides it (a source tarball without .git). `build.sh --print-version`
# prints it and builds nothing.
#
# The tools (nfpm, go-md2man) are pinned in packaging/tools/go.mod and
# built from that module, so they need only Go and the module proxy. Two
# runs on the same commit give the same packages, byte for byte: file
# times are the commit's (SOURCE_DATE_EPOCH).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
export PATH="$PATH:/usr/local/go/bin"
dist=${DIST:-$root/dist}
mkdir -p "$dist"
dist=$(cd "$dist" && pwd)

# The version and the commit.
commit=unknown
if git rev-parse --verify -q HEAD >/dev/null 2>&1; then
	commit=$(git rev-parse HEAD)
	git diff --quiet HEAD -- 2>/dev/null || commit+=-dirty
fi
if [[ -n ${CONNLOGD_VERSION:-} ]]; then
	version=$CONNLOGD_VERSION
elif [[ $commit != unknown ]]; then
	short=$(git rev-parse --short=7 HEAD)
	if desc=$(git describe --tags --match 'v[0-9]*' --long HEAD 2>/dev/null); then
		# vX.Y.Z-N-gHASH
		tag=${desc%-*-g*}
		n=${desc#"$tag"-}
		n=${n%%-*}
		base=${tag#v}
		if [[ $n == 0 ]]; then version=$base; else version=$base+git$n.$short; fi
	else
		version=0.0.0+git$(git rev-list --count HEAD).$short
	fi
	[[ $commit != *-dirty ]] || version+=.dirty
else
	echo "build.sh: no git history and no CONNLOGD_VERSION: cannot stamp a version" >&2
	exit 1
fi
if [[ ! $version =~ ^[0-9][0-9A-Za-z.+~]*$ ]]; then
	echo "build.sh: version $version: want a digit first, then only letters, digits and . + ~" >&2
	exit 1
fi
if [[ ${1:-} == --print-version ]]; then
	echo "$version"
	exit 0
fi
# Reproducible timestamps: the commit's time, in the files and the pages.
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}
date=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%d)
echo "connlogd $version (commit $commit)"

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT

# The binary: static, trimmed paths, stripped (-s -w), version stamped.
# grpcnotrace leaves out gRPC's request tracing (golang.org/x/net/trace,
# html/template), which connlogd never turns on: 2.9 MB less.
pkg=github.com/connlogd/connlogd/internal/version
CGO_ENABLED=0 GOOS=linux GOARCH=amd64 go build -trimpath -buildvcs=false -tags grpcnotrace \
	-ldflags "-s -w -X $pkg.version=$version -X $pkg.commit=$commit" \
	-o "$stage/connlogd" ./cmd/connlogd

# Manual pages, generated from the README, config.example.yaml and the
# binary's own -h (packaging/mangen says which part comes from where).
"$stage/connlogd" -h 2>"$stage/usage.txt"
go run ./packaging/mangen -readme README.md -config config.example.yaml \
	-usage "$stage/usage.txt" -version "$version" -date "$date" -out "$stage"
for page in connlogd.8 connlogd.yaml.5; do
	(cd packaging/tools && go tool go-md2man -in "$stage/$page.md" -out "$stage/$page")
	gzip -9n "$stage/$page"
done

# The copyright file: connlogd's, then each module linked into the binary
# with its license, read from the module cache.
go run ./packaging/copyright -bin "$stage/connlogd" -out "$stage/copyright"

# The changelog, in nfpm's format: this build's entry, for the package
# version (release 1, as in packaging/nfpm.yaml).
cat >"$stage/changelog.yaml" <<YAML
- semver: "$version-1"
  deb:
    urgency: low
    distributions: [unstable]
  date: "$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%dT%H:%M:%SZ)"
  packager: connlogd maintainers <maintainers@users.noreply.github.com>
  changes:
    - note: |-
        Built from commit ${commit:0:12}; its history:
    - note: |-
        https://github.com/connlogd/connlogd/commits/${commit:0:12}
YAML

# The unit, adjusted to the packaged binary's path.
sed 's#/usr/local/bin/connlogd#/usr/sbin/connlogd#g' systemd/connlogd.service >"$stage/connlogd.service"
if grep -q /usr/local "$stage/connlogd.service"; then
	echo "build.sh: the packaged unit still names /usr/local" >&2
	exit 1
fi

# Documentation shipped in /usr/share/doc/connlogd.
mkdir -p "$stage/doc"
install -m 0644 README.md docs/*.md "$stage/doc/"
install -m 0644 packaging/lintian-overrides "$stage/lintian-overrides"

# The packages.
tools=$root/packaging/tools
sed -e "s#\${STAGE}#$stage#g" -e "s#\${VERSION}#$version#g" packaging/nfpm.yaml >"$stage/nfpm.yaml"
for f in "$stage"/doc/*; do
	for packager in deb rpm; do
		type=file
		[[ $packager == deb ]] || type=doc
		printf '  - {src: %s, dst: /usr/share/doc/connlogd/%s, type: %s, packager: %s, file_info: {mode: 0644}}\n' \
			"$f" "${f##*/}" "$type" "$packager" >>"$stage/nfpm.yaml"
	done
done
rm -f "$dist/connlogd_${version}_amd64.deb" "$dist/connlogd-${version}.x86_64.rpm"
(cd "$tools" && go build -o "$stage/nfpm" github.com/goreleaser/nfpm/v2/cmd/nfpm)
"$stage/nfpm" package --config "$stage/nfpm.yaml" --packager deb --target "$dist/connlogd_${version}_amd64.deb"
"$stage/nfpm" package --config "$stage/nfpm.yaml" --packager rpm --target "$dist/connlogd-${version}.x86_64.rpm"
install -m 0755 "$stage/connlogd" "$dist/connlogd"
echo "$version" >"$dist/VERSION"
# The image's tag: the version, with "-" for the "+" docker refuses.
echo "${version//+/-}" >"$dist/image-tag"
ls -l "$dist"
